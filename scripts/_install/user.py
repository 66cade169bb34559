"""``scripts/run``: install proxyd for the current user and start it, no root needed.

Debian 12 and Ubuntu 23.04+ mark the system Python externally managed (PEP 668), so
``pip install .`` is refused there; a venv under the user's data directory is what pipx
would make, without needing pipx.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from _install.source import CHECKOUT
from _install.venv import InstallError, Outcome, clean_env, ensure_venv


def data_home() -> Path:
    # XDG Base Directory: a relative $XDG_DATA_HOME is invalid and must be ignored.
    configured = os.environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(configured):
        return Path(configured)
    return Path.home() / ".local" / "share"


def _say(message: str) -> None:
    print(f"scripts/run: {message}", file=sys.stderr, flush=True)


def link_command(target: Path) -> None:
    """~/.local/bin/proxyd, so that `proxyd why HOST` works from a shell (where pipx puts it);
    anything already there that is not this link is left alone."""
    link = Path.home() / ".local" / "bin" / "proxyd"
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    if link.exists() or link.is_symlink():
        _say(f"{link} exists and is not a link to {target}: left alone")
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    _say(f"linked {link} -> {target}")


def main(argv: Sequence[str]) -> int:
    venv = data_home() / "proxyd" / "venv"
    try:
        outcome = ensure_venv(venv, sys.executable, CHECKOUT)
    except InstallError as err:
        _say(str(err))
        return 1
    proxyd = venv / "bin" / "proxyd"
    if outcome is not Outcome.UNCHANGED:
        _say(f"{outcome.value} {venv} from {CHECKOUT}")
        link_command(proxyd)
    # exec: the daemon gets this process's signals and exit status, as if run directly.
    os.execve(proxyd, ["proxyd", *argv], clean_env())
