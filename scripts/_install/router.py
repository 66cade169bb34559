"""``scripts/install-router``: proxyd as a systemd service from this checkout, in one command.

Installs /opt/proxyd (a venv), /etc/proxyd/proxyd.toml (only if absent), the units of
systemd/ in /etc/systemd/system with a drop-in that runs the venv's proxyd, and the
/usr/local/bin/proxyd command; then enables and starts the service where systemd runs.
Every step compares before it writes, so a second run changes nothing and says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from _install.commented_config import commented_config
from _install.source import CHECKOUT
from _install.venv import InstallError, Outcome, ensure_venv

VENV = Path("opt/proxyd")
CONFIG = Path("etc/proxyd/proxyd.toml")
UNIT_DIR = Path("etc/systemd/system")
COMMAND_LINK = Path("usr/local/bin/proxyd")
# DynamicUser=yes keeps StateDirectory= in /var/lib/private, reached through /var/lib/proxyd.
STATE = (Path("var/lib/proxyd"), Path("var/lib/private/proxyd"))
UNIT_SUFFIXES = (".service", ".socket", ".target", ".timer", ".path")
MAIN_SERVICE = "proxyd.service"
CHECKS = (
    "systemctl status proxyd",
    "journalctl -u proxyd",
    "proxyd why example.org",
    "the status page: http://127.0.0.1:9477/",
)


class Report:
    def __init__(self) -> None:
        self.changes = 0

    def change(self, verb: str, what: object) -> None:
        self.changes += 1
        print(f"  {verb:<8} {what}", flush=True)

    def note(self, text: str) -> None:
        print(f"  {text}", flush=True)


def shipped_units() -> list[Path]:
    return sorted(p for p in (CHECKOUT / "systemd").iterdir() if p.suffix in UNIT_SUFFIXES)


def venv_dropin(unit_text: str) -> str | None:
    """A drop-in running the venv's proxyd, which is not on systemd's fixed search path where
    the unit looks for a bare `proxyd`; None if the unit runs no bare `proxyd`."""
    by_key: dict[str, list[str]] = {}
    for line in unit_text.splitlines():
        key, _, command = line.partition("=")
        if key.startswith("Exec"):
            by_key.setdefault(key, []).append(command)
    lines = []
    for key, commands in by_key.items():
        if not any(c.startswith("proxyd ") for c in commands):
            continue
        # The empty assignment first: Exec settings accumulate across drop-ins.
        lines.append(f"{key}=")
        for command in commands:
            if command.startswith("proxyd "):
                command = f"{Path('/', VENV)}/bin/{command}"
            lines.append(f"{key}={command}")
    if not lines:
        return None
    header = "# Written by scripts/install-router: run the proxyd of the venv.\n[Service]\n"
    return header + "\n".join(lines) + "\n"


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o7777) == mode:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    staged.chmod(mode)
    staged.replace(path)
    return True


def systemd_booted(root: Path) -> bool:
    # sd_booted(): systemd is PID 1 exactly when this directory exists.
    return root == Path("/") and Path("/run/systemd/system").is_dir()


def systemctl(report: Report, *args: str) -> bool:
    done = subprocess.run(["systemctl", *args], check=False)
    report.change("ran", "systemctl " + " ".join(args))
    return done.returncode == 0


def install_units(root: Path, report: Report) -> bool:
    changed = False
    for unit in shipped_units():
        text = unit.read_text()
        target = root / UNIT_DIR / unit.name
        if write_if_changed(target, text):
            report.change("wrote", target)
            changed = True
        dropin = venv_dropin(text)
        if dropin is not None:
            target = root / UNIT_DIR / f"{unit.name}.d" / "venv.conf"
            if write_if_changed(target, dropin):
                report.change("wrote", target)
                changed = True
    return changed


def link_command(root: Path, report: Report) -> None:
    link, target = root / COMMAND_LINK, Path("/", VENV, "bin", "proxyd")
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    if link.exists() or link.is_symlink():
        report.note(f"left alone: {link} is not a link to {target} (the service runs {target})")
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    report.change("linked", f"{link} -> {target}")


def tor_hint(root: Path, report: Report) -> None:
    if not any((root / d / "tor").exists() for d in ("usr/bin", "usr/sbin")):
        report.note(
            "tor is not installed; the default upstream is Tor's SocksPort "
            "(socks5h://127.0.0.1:9050): sudo apt-get install tor"
        )


def install(root: Path, python: str, report: Report) -> None:
    outcome = ensure_venv(root / VENV, python, CHECKOUT, installed_at=Path("/", VENV))
    if outcome is not Outcome.UNCHANGED:
        report.change(outcome.value, f"{root / VENV} (venv of {python}, proxyd from {CHECKOUT})")
    config = root / CONFIG
    if not config.exists():
        write_if_changed(config, commented_config((CHECKOUT / "config/proxyd.toml").read_text()))
        report.change("wrote", f"{config} (every setting commented out, at its default)")
    units_changed = install_units(root, report)
    link_command(root, report)
    tor_hint(root, report)
    if systemd_booted(root):
        if units_changed:
            systemctl(report, "daemon-reload")
        enabled = subprocess.run(["systemctl", "is-enabled", "--quiet", MAIN_SERVICE], check=False)
        if enabled.returncode != 0:
            systemctl(report, "enable", "--now", MAIN_SERVICE)
        elif units_changed or outcome is not Outcome.UNCHANGED:
            systemctl(report, "try-restart", MAIN_SERVICE)
    elif report.changes:
        where = (
            "on the target system"
            if root != Path("/")
            else "systemd is not PID 1 here; where it is"
        )
        report.note(
            f"{where}, run: systemctl daemon-reload && systemctl enable --now {MAIN_SERVICE}"
        )
    if report.changes:
        report.note("then check: " + "; ".join(CHECKS))


def _remove(path: Path, root: Path, report: Report) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        return
    report.change("removed", path)
    # In a staging root, directories left empty were the installer's own; on a live system
    # /opt or /etc/systemd/system are not, whatever they hold.
    parent = path.parent
    while root != Path("/") and parent != root and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def uninstall(root: Path, purge: bool, report: Report) -> None:
    units = [root / UNIT_DIR / unit.name for unit in shipped_units()]
    if systemd_booted(root) and any(u.exists() for u in units):
        systemctl(report, "disable", "--now", *(u.name for u in units if u.exists()))
    for unit in units:
        _remove(root / UNIT_DIR / f"{unit.name}.d" / "venv.conf", root, report)
        _remove(unit, root, report)
    link = root / COMMAND_LINK
    if link.is_symlink() and os.readlink(link) == str(Path("/", VENV, "bin", "proxyd")):
        _remove(link, root, report)
    _remove(root / VENV, root, report)
    if systemd_booted(root) and report.changes:
        systemctl(report, "daemon-reload")
    kept = [root / CONFIG.parent, *(root / s for s in STATE)]
    if purge:
        for path in kept:
            _remove(path, root, report)
    elif any(p.exists() or p.is_symlink() for p in kept):
        report.note(
            f"kept the configuration and the learned state ({root / CONFIG.parent}, "
            f"{root / STATE[0]}); --purge removes them"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/install-router", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="install into this staging root (image builds, tests)",
    )
    default_python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    parser.add_argument(
        "--python", default=default_python, help=f"the venv's Python (default {default_python})"
    )
    parser.add_argument(
        "--uninstall",
        action="store_true",
        help="remove all but the configuration and the learned state",
    )
    parser.add_argument("--purge", action="store_true", help="with --uninstall: remove those too")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    root = args.root.resolve()
    if root == Path("/") and os.geteuid() != 0:
        print(
            "scripts/install-router: run it as root (sudo), or stage with --root DIR",
            file=sys.stderr,
        )
        return 2
    # The service's dynamic user must read the venv and the config whatever root's umask is.
    os.umask(0o022)
    report = Report()
    removing = args.uninstall or args.purge
    print(
        f"{'uninstalling proxyd from' if removing else 'installing proxyd into'} {root}", flush=True
    )
    try:
        if removing:
            uninstall(root, args.purge, report)
        else:
            install(root, args.python, report)
    except InstallError as err:
        print(f"scripts/install-router: {err}", file=sys.stderr)
        return 1
    if not report.changes:
        print(
            "no change: "
            + (
                "nothing of proxyd is installed"
                if removing
                else "everything is installed and up to date"
            )
        )
    return 0
