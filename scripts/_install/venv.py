"""A virtual environment holding proxyd built from the checkout, rebuilt only when needed.

The venv's pip reads the same configuration as every pip on the machine (``/etc/pip.conf``,
``/etc/xdg/pip/pip.conf``, the user's ``pip.conf``, ``PIP_*`` variables), so it installs the
dependencies from whatever index the machine is set up for; nothing here names one.
"""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _install.source import copy_build_inputs, fingerprint

STAMP = "proxyd-install.json"
# Debian and Ubuntu ship venv's pip bootstrap in a package of its own.
NO_VENV_HINT = "install the venv module first: sudo apt-get install python3-venv"


class InstallError(Exception):
    pass


class Outcome(enum.Enum):
    CREATED = "created"
    UPGRADED = "upgraded"
    UNCHANGED = "unchanged"


def clean_env() -> dict[str, str]:
    """The caller's environment minus what would make the venv's Python import code from
    outside the venv (a PYTHONPATH pointing at a checkout would shadow the installed proxyd)."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    return env


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, env=clean_env(), check=False)
    if done.returncode != 0:
        raise InstallError(f"{what} failed (exit status {done.returncode}): {' '.join(argv)}")


def _runs(python: Path) -> bool:
    """False when the venv is missing or its base interpreter went away (a Python upgrade)."""
    try:
        done = subprocess.run([str(python), "-c", ""], env=clean_env(), check=False)
    except OSError:
        return False
    return done.returncode == 0


def python_identity(python: str) -> str:
    if python == sys.executable:
        version = sys.version.split()[0]
    else:
        probe = "import sys; print(sys.version.split()[0])"
        done = subprocess.run(
            [python, "-c", probe], env=clean_env(), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise InstallError(f"{python} does not run: {done.stderr.strip()}")
        version = done.stdout.strip()
    return f"{os.path.realpath(python)} {version}"


def _read_stamp(stamp: Path) -> dict[str, str]:
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _relocate(venv: Path, installed_at: Path) -> None:
    """Make a venv built at ``venv`` (inside a staging root) correct at ``installed_at``.

    venv and pip write their absolute location into script shebangs, the activate scripts,
    pyvenv.cfg and every .pyc's source path; the staging prefix would break the image."""
    old, new = str(venv).encode(), str(installed_at).encode()
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))
    # -f: ensurepip compiled pip with the staging path already.
    compile_all = [str(venv / "bin" / "python"), "-m", "compileall", "-q", "-f"]
    _run([*compile_all, "-s", str(venv), "-p", str(installed_at), str(venv / "lib")], "compileall")


def ensure_venv(
    venv: Path, python: str, checkout: Path, *, installed_at: Path | None = None
) -> Outcome:
    """Create or update ``venv`` so that it holds proxyd as built from ``checkout``.

    ``installed_at`` is where the venv will live when used, if not where it is built."""
    wanted = {"python": python_identity(python), "source": fingerprint(checkout)}
    recorded = _read_stamp(venv / STAMP)
    vpython = venv / "bin" / "python"
    usable = recorded.get("python") == wanted["python"] and _runs(vpython)
    if usable and recorded == wanted:
        return Outcome.UNCHANGED
    if not usable:
        # --clear: a venv from another Python, or a broken one, is rebuilt from nothing.
        done = subprocess.run(
            [python, "-m", "venv", "--clear", str(venv)], env=clean_env(), check=False
        )
        if done.returncode != 0:
            raise InstallError(f"{python} -m venv {venv} failed; {NO_VENV_HINT}")
    relocating = installed_at is not None and installed_at != venv
    with tempfile.TemporaryDirectory(prefix="proxyd-build-") as tmp:
        source = copy_build_inputs(checkout, Path(tmp) / "proxyd")
        pip = [str(vpython), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run([*pip, *(["--no-compile"] if relocating else []), str(source)], "pip install")
    if relocating:
        assert installed_at is not None
        _relocate(venv, installed_at)
    staged = venv / (STAMP + ".new")
    staged.write_text(json.dumps(wanted, indent=1) + "\n")
    staged.replace(venv / STAMP)
    return Outcome.UPGRADED if recorded else Outcome.CREATED
