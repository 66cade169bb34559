"""Installing proxyd as a person would, with the commands the README gives.

The quick start runs verbatim as an unprivileged user with Debian's own ``/usr/bin/python3``
(externally managed: PEP 668) first on PATH, a fresh HOME and a fresh copy of the checkout,
and must leave a daemon that forwards a request. The router installer runs into a staging
root (``--root``) holding this host's systemd units, which stand for the system it would
be installed on; systemd is not PID 1 here, so ``systemctl`` itself cannot run.

Both build a real venv and pip-install the real dependencies from the index the machine's
pip is configured for: once per test module (about 15 s each), then copies of the staged tree.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.origin import OriginServer

CHECKOUT = Path(__file__).resolve().parents[2]
README = CHECKOUT / "README.md"
DEBIAN_PYTHON = Path("/usr/bin/python3")
SHIPPED_UNITS = sorted(p.name for p in (CHECKOUT / "systemd").iterdir())
# What a copy of the checkout leaves out: history, caches, build and run litter.
NOT_CHECKOUT = shutil.ignore_patterns(
    ".git", "__pycache__", ".*_cache", ".hypothesis", "*.egg-info", "build", "dist",
    "artifacts", "results", "fuzz-crashes",
)  # fmt: skip
LISTENING = re.compile(r"proxyd listening on 127\.0\.0\.1:8080")
# Building a venv and installing the dependencies into it, on a shared 2-core machine.
INSTALL_DEADLINE = 300.0


def readme_section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def sh_blocks(section: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def quick_start_command() -> str:
    command = sh_blocks(readme_section("Quick start"))[0].strip()
    assert "\n" not in command, f"the quick start is one command, not {command!r}"
    return command


def router_command() -> list[str]:
    """The README's installer line, without its `sudo` (the tests run as root)."""
    (line,) = [
        line
        for block in sh_blocks(readme_section("Running it as a service on a router"))
        for line in block.splitlines()
        if "install-router" in line
    ]
    argv = shlex.split(line.split("#")[0])
    return argv[1:] if argv[0] == "sudo" else argv


def machine_pip_environment() -> dict[str, str]:
    """This machine's pip configuration (global, user and environment) as PIP_* variables.

    The test user has a fresh HOME, so it would not see root's own pip.conf; a person's
    account would carry the machine's settings, whichever index they name."""
    listed = subprocess.run(
        [str(DEBIAN_PYTHON), "-m", "pip", "config", "list"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if listed.returncode != 0:  # Debian's python3 without python3-pip: ask any pip
        listed = subprocess.run(
            ["python3", "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
        )
    env = {name: value for name, value in os.environ.items() if name.startswith("PIP_")}
    for line in listed.stdout.splitlines():
        match = re.fullmatch(r"(global|install|:env:)\.([\w-]+)='(.*)'", line)
        if match:
            env.setdefault("PIP_" + match.group(2).upper().replace("-", "_"), match.group(3))
    return env


def assert_port_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            pytest.fail(f"127.0.0.1:{port} is taken ({err}): the quick start listens there")


class Daemon:
    """A process in a session of its own, whose merged output is collected line by line."""

    def __init__(self, argv: list[str], **popen: object) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, **popen,  # type: ignore[call-overload]
        )  # fmt: skip
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(pattern.search(line) for line in self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"no {pattern.pattern!r} in:\n" + "\n".join(self.lines))
                self._cond.wait(remaining)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Whatever the command left behind (a shell that did not exec, a stray child).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._reader.join(5)
        return self.proc.returncode


@pytest.fixture
def unprivileged_checkout() -> Iterator[tuple[pwd.struct_passwd, Path, Path]]:
    """A copy of the checkout and an empty HOME, both owned by `nobody`, in a directory that
    user can reach (pytest's own temporary directories are root's alone)."""
    if os.geteuid() != 0:
        pytest.fail("the quick-start test switches to user nobody: run the tests as root")
    user = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="proxyd-quickstart-"))
    try:
        checkout, home = top / "proxyd", top / "home"
        shutil.copytree(CHECKOUT, checkout, ignore=NOT_CHECKOUT, symlinks=True)
        home.mkdir()
        for path in [top, *top.rglob("*")]:
            os.lchown(path, user.pw_uid, user.pw_gid)
        yield user, checkout, home
    finally:
        shutil.rmtree(top)


@pytest.mark.timeout(INSTALL_DEADLINE + 120)
def test_readme_quick_start_installs_and_runs_proxyd_as_a_user_with_debians_python(
    unprivileged_checkout: tuple[pwd.struct_passwd, Path, Path], origin: OriginServer
) -> None:
    # The premise: this python3 refuses `pip install .` outright.
    assert list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED")), "not a PEP 668 python3"
    user, checkout, home = unprivileged_checkout
    for port in (8080, 9477):
        assert_port_free(port)
    env = {"PATH": f"{DEBIAN_PYTHON.parent}:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    env.update(machine_pip_environment())

    def quick_start() -> Daemon:
        # bash, the login shell a person types it into, execs a lone command in place.
        return Daemon(
            ["bash", "-c", quick_start_command()], cwd=checkout, env=env,
            user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        )  # fmt: skip

    first = quick_start()
    try:
        first.wait_for(LISTENING, INSTALL_DEADLINE)
        pid = first.proc.pid  # bash and scripts/run exec: this is the daemon itself
        status = Path(f"/proc/{pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{user.pw_uid}\s", status, re.M), status
        assert os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(DEBIAN_PYTHON)
        venv = home / ".local/share/proxyd/venv"
        assert str(venv / "bin/proxyd") in Path(f"/proc/{pid}/cmdline").read_text()
        fetched = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "-x", "http://127.0.0.1:8080",
             f"{origin.url}/quick-start"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert (fetched.returncode, fetched.stdout) == (0, "hello from origin-a /quick-start\n")
    finally:
        stopped = first.stop()
    assert stopped == 0, "\n".join(first.lines)
    assert (home / ".local/bin/proxyd").resolve() == venv / "bin/proxyd"
    assert f"created {venv}" in "\n".join(first.lines)

    # Again: the venv is current, so proxyd starts without a reinstall.
    second = quick_start()
    try:
        second.wait_for(LISTENING, 30)
    finally:
        stopped = second.stop()
    assert stopped == 0, "\n".join(second.lines)
    assert not any("scripts/run:" in line for line in second.lines), second.lines


# ---- the router installer, staged with --root ----

STATE_FILE = Path("var/lib/private/proxyd/routes.json")


def host_unit_dir() -> Path:
    for candidate in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (candidate / "sockets.target").exists():
            return candidate
    pytest.fail("no systemd unit directory with sockets.target on this host (package systemd)")


def install_router(root: Path, *args: str, checkout: Path = CHECKOUT) -> str:
    done = subprocess.run(
        [*router_command(), "--root", str(root), *args],
        cwd=checkout, capture_output=True, text=True, timeout=INSTALL_DEADLINE, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under root with what a rewrite would change: mode, size, mtime."""
    return {
        str(p.relative_to(root)): (st.st_mode, st.st_size, st.st_mtime_ns)
        for p in root.rglob("*")
        for st in [p.lstat()]
    }


def add_learned_state(root: Path) -> None:
    """What systemd (DynamicUser + StateDirectory) and a running proxyd leave behind."""
    state = root / STATE_FILE
    state.parent.mkdir(parents=True)
    state.write_text('{"version": 1, "entries": []}\n')
    (root / "var/lib/proxyd").symlink_to("private/proxyd")


def venv_python(root: Path) -> list[str]:
    return [str(root / "opt/proxyd/bin/python")]


def run_installed(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, run by the installed venv's python (its shebang names
    /opt/proxyd, where the tree will be, not the staging root); no PYTHONPATH, so nothing
    of the checkout can be imported instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [*venv_python(root), str(root / "opt/proxyd/bin/proxyd"), *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pristine_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A system root before the install: only the host's own units (the targets the
    shipped units name)."""
    root = tmp_path_factory.mktemp("pristine")
    shutil.copytree(host_unit_dir(), root / "usr/lib/systemd/system", symlinks=True)
    return root


@pytest.fixture(scope="module")
def installed(pristine_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("installed") / "root"
    shutil.copytree(pristine_root, root, symlinks=True)
    return root, install_router(root)


def copy_of(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(root, copy, symlinks=True)
    return copy


@pytest.mark.timeout(INSTALL_DEADLINE + 60)
def test_router_install_stages_the_venv_the_config_and_the_units(
    installed: tuple[Path, str],
) -> None:
    root, output = installed
    assert f"created  {root / 'opt/proxyd'}" in output
    assert f"wrote    {root / 'etc/proxyd/proxyd.toml'}" in output
    for unit in SHIPPED_UNITS:
        assert (root / "etc/systemd/system" / unit).read_bytes() == (
            CHECKOUT / "systemd" / unit
        ).read_bytes()
    dropin = (root / "etc/systemd/system/proxyd.service.d/venv.conf").read_text()
    assert "\nExecStart=\nExecStart=/opt/proxyd/bin/proxyd run -c /etc/proxyd/proxyd.toml\n" in (
        dropin
    )
    assert os.readlink(root / "usr/local/bin/proxyd") == "/opt/proxyd/bin/proxyd"
    # The venv is the distribution's python3, and correct where the tree will be deployed.
    assert "home = /usr/bin\n" in (root / "opt/proxyd/pyvenv.cfg").read_text()
    staged_prefix = str(root).encode()
    mentions = [
        p for p in (root / "opt").rglob("*") if p.is_file() and staged_prefix in p.read_bytes()
    ]
    assert mentions == []
    assert (root / "opt/proxyd/bin/proxyd").read_text().startswith("#!/opt/proxyd/bin/python")
    # No systemd here, and no tor in the root: the installer says what to do instead.
    assert "run: systemctl daemon-reload && systemctl enable --now proxyd.service" in output
    assert "apt-get install tor" in output


def systemd_verify(root: Path) -> tuple[int, str]:
    verify = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", "--generators=no",
         *SHIPPED_UNITS],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return verify.returncode, verify.stdout + verify.stderr


def test_installed_units_pass_systemd_analyze_verify(installed: tuple[Path, str]) -> None:
    # verify exits 0 on unknown keys and on a missing ExecStart binary; only its output tells.
    assert systemd_verify(installed[0]) == (0, "")


def test_installed_service_runs_the_venvs_proxyd_without_the_command_link(
    installed: tuple[Path, str], tmp_path: Path
) -> None:
    """/usr/local/bin/proxyd is for people; the service must not depend on it (another
    proxyd may sit there, or on systemd's search path before it)."""
    root = copy_of(installed[0], tmp_path)
    (root / "usr/local/bin/proxyd").unlink()
    assert systemd_verify(root) == (0, "")
    (root / "opt/proxyd/bin/proxyd").unlink()
    code, output = systemd_verify(root)
    assert "Command /opt/proxyd/bin/proxyd is not executable" in output, (code, output)


def test_installed_proxyd_accepts_the_installed_config_which_changes_no_default(
    installed: tuple[Path, str],
) -> None:
    root, _ = installed
    config = root / "etc/proxyd/proxyd.toml"
    where = subprocess.run(
        [*venv_python(root), "-c", "import proxyd; print(proxyd.__file__)"],
        cwd=root, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(root / "opt/proxyd/lib/"))
    check = run_installed(root, "check", "-c", str(config))
    assert (check.returncode, check.stdout) == (0, f"{config}: OK\n"), check.stderr
    effective = run_installed(root, "config", "-c", str(config))
    embedded = run_installed(root, "config")
    assert effective.returncode == embedded.returncode == 0
    assert effective.stdout == embedded.stdout
    # Every setting of the annotated example is there to uncomment.
    example = (CHECKOUT / "config/proxyd.toml").read_text()
    settings = re.findall(r"^([a-z_]+ = .*)$", example, re.M)
    assert len(settings) > 30
    installed_lines = set(config.read_text().splitlines())
    assert [s for s in settings if f"#{s}" not in installed_lines] == []


def test_second_router_install_reports_no_change_and_rewrites_nothing(
    installed: tuple[Path, str],
) -> None:
    root, _ = installed
    before = tree(root)
    output = install_router(root)
    assert "no change: everything is installed and up to date" in output
    assert tree(root) == before


@pytest.mark.timeout(INSTALL_DEADLINE + 60)
def test_router_upgrade_rebuilds_the_venv_and_keeps_config_and_learned_state(
    installed: tuple[Path, str], tmp_path: Path
) -> None:
    root = copy_of(installed[0], tmp_path)
    config = root / "etc/proxyd/proxyd.toml"
    config.write_text('log_level = "debug"\n' + config.read_text())
    add_learned_state(root)
    kept = {p: (root / p).read_bytes() for p in ("etc/proxyd/proxyd.toml", str(STATE_FILE))}
    newer = tmp_path / "newer-checkout"
    shutil.copytree(CHECKOUT, newer, ignore=NOT_CHECKOUT, symlinks=True)
    with (newer / "proxyd/__init__.py").open("a") as init:
        init.write("# the newer release\n")

    output = install_router(root, checkout=newer)
    assert f"upgraded {root / 'opt/proxyd'}" in output
    assert "wrote" not in output  # neither the config nor the unchanged units
    site = next((root / "opt/proxyd/lib").glob("python3*/site-packages"))
    assert (site / "proxyd/__init__.py").read_text().endswith("# the newer release\n")
    assert {p: (root / p).read_bytes() for p in kept} == kept
    assert "no change" in install_router(root, checkout=newer)


def test_uninstall_keeps_only_config_and_state_and_purge_leaves_nothing(
    installed: tuple[Path, str], pristine_root: Path, tmp_path: Path
) -> None:
    root = copy_of(installed[0], tmp_path)
    add_learned_state(root)
    pristine = set(tree(pristine_root))

    output = install_router(root, "--uninstall")
    assert f"removed  {root / 'opt/proxyd'}" in output
    left = set(tree(root)) - pristine
    assert left == {
        "etc", "etc/proxyd", "etc/proxyd/proxyd.toml",
        "var", "var/lib", "var/lib/proxyd", "var/lib/private", "var/lib/private/proxyd",
        str(STATE_FILE),
    }  # fmt: skip
    assert "no change" in install_router(root, "--uninstall")

    install_router(root, "--purge")
    assert set(tree(root)) == pristine


def test_router_install_says_nothing_of_tor_once_tor_is_installed(
    installed: tuple[Path, str], tmp_path: Path
) -> None:
    root = copy_of(installed[0], tmp_path)
    tor = root / "usr/bin/tor"
    tor.parent.mkdir(parents=True)
    tor.write_text("#!/bin/sh\n")
    tor.chmod(0o755)
    output = install_router(root)
    assert "apt-get install tor" not in output
    assert "no change" in output


def test_router_install_onto_the_live_system_needs_root() -> None:
    nobody = pwd.getpwnam("nobody")
    done = subprocess.run(
        router_command(), cwd=CHECKOUT, user=nobody.pw_uid, group=nobody.pw_gid,
        extra_groups=[], capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "run it as root" in done.stderr
