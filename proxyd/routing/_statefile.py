"""The state file: where it lives, reading it safely, writing it atomically, and when.

Public API:

- ``default_state_dir() -> Path``: ``$STATE_DIRECTORY`` (systemd; the first of a
  colon-separated list), else ``$XDG_STATE_HOME/proxyd``, else ``~/.local/state/proxyd``.
- ``load_state(path, *, now=None) -> dict | None``: None when the file is missing; an
  unparseable file is quarantined (``quarantine_state``), logged as a warning on the
  ``proxyd.state`` logger, and None returned. Unreadable files raise ``StateLoadError``:
  starting empty and saving later would destroy them.
- ``quarantine_state(path, *, now=None) -> Path``: rename to
  ``<path>.corrupt-<UTC yyyymmddTHHMMSS>``; also for files that parse but do not load
  (``proxyd.learning._table.StateFormatError``).
- ``save_state(path, data)``: JSON, atomically (temp file in the same directory, write,
  fsync, rename, fsync the directory), mode 0600 since it reveals browsing; raises
  ``StateSaveError`` with the OS error as ``__cause__``.
- ``SaveScheduler(debounce=5.0, max_delay=30.0)``: the debounce policy, pure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from proxyd.errors import ProxydError

STATE_FILE_NAME = "state.json"
log = logging.getLogger("proxyd.state")


class StateError(ProxydError):
    def __init__(self, path: Path | str, cause: BaseException) -> None:
        self.path = Path(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class StateLoadError(StateError):
    """The state file exists but cannot be read."""


class StateSaveError(StateError):
    """The state file could not be written (read-only or full file system, permissions)."""


def default_state_dir() -> Path:
    systemd_dirs = os.environ.get("STATE_DIRECTORY", "")
    if systemd_dirs:
        return Path(systemd_dirs.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore relative paths
        return Path(xdg) / "proxyd"
    return Path.home() / ".local" / "state" / "proxyd"


def quarantine_state(path: Path | str, *, now: float | None = None) -> Path:
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, target)
    return target


def load_state(path: Path | str, *, now: float | None = None) -> dict[str, Any] | None:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateLoadError(path, err) from err
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"top level is {type(data).__name__}, not an object")
    except ValueError as err:  # includes JSONDecodeError and UnicodeDecodeError
        target = quarantine_state(path, now=now)
        log.warning("state file %s is corrupt (%s); moved to %s, starting empty", path, err, target)
        return None
    return data


def save_state(path: Path | str, data: dict[str, Any]) -> None:
    path = Path(path)
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    temp_name: str | None = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as temp:
            temp.write(payload)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
        temp_name = None
        # The rename is only durable once the directory entry is on disk too.
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        raise StateSaveError(path, err) from err
    finally:
        if temp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)


class SaveScheduler:
    """When to write: after ``debounce`` s without changes, at most ``max_delay`` s late.

    Bursts of learning (a page with many blocked third parties) become one write, and a
    table that never settles is still written every ``max_delay`` seconds: flash on a
    router wears out. The daemon calls ``changed`` when ``LearningTable.generation``
    moves, arms a timer for ``deadline()``, saves when ``due``, then ``saved`` with the
    time the saved data was captured, or ``failed`` to retry after ``max_delay``.
    """

    def __init__(self, debounce: float = 5.0, max_delay: float = 30.0) -> None:
        self._debounce = debounce
        self._max_delay = max_delay
        self._first_change: float | None = None
        self._last_change = 0.0
        self._retry_at = 0.0

    def changed(self, now: float) -> None:
        if self._first_change is None:
            self._first_change = now
        self._last_change = max(self._last_change, now)

    def deadline(self) -> float | None:
        if self._first_change is None:
            return None
        settled = min(self._last_change + self._debounce, self._first_change + self._max_delay)
        return max(settled, self._retry_at)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def saved(self, now: float) -> None:
        """The data as of ``now`` is on disk; changes after ``now`` stay pending."""
        self._retry_at = 0.0
        self._first_change = now if self._last_change > now else None

    def failed(self, now: float) -> None:
        """The save failed: keep the changes pending and try again ``max_delay`` later."""
        self._retry_at = now + self._max_delay
