from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxyd.routing._statefile import (
    SaveScheduler,
    StateLoadError,
    StateSaveError,
    default_state_dir,
    load_state,
    save_state,
)

REPO = Path(__file__).resolve().parents[3]
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


# --- location --------------------------------------------------------------------------


def test_state_dir_is_systemds_first_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/proxyd:/var/lib/other")
    monkeypatch.setenv("XDG_STATE_HOME", "/home/u/.state")
    assert default_state_dir() == Path("/var/lib/proxyd")


def test_state_dir_falls_back_to_xdg_then_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", "/home/u/.state")
    assert default_state_dir() == Path("/home/u/.state/proxyd")
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", "/home/u")
    assert default_state_dir() == Path("/home/u/.local/state/proxyd")


# --- load and save ---------------------------------------------------------------------


def test_missing_state_file_loads_as_nothing(tmp_path: Path) -> None:
    assert load_state(tmp_path / "state.json") is None


def test_saved_state_loads_back_private_and_without_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "state.json"
    save_state(path, {"version": 1, "entries": [{"key": "news.example"}]})
    save_state(path, {"version": 1, "entries": []})
    assert load_state(path) == {"version": 1, "entries": []}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_corrupt_state_file_is_quarantined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b'{"version": 1, "entries": [')
    with caplog.at_level(logging.WARNING, logger="proxyd.state"):
        assert load_state(path, now=NOW) is None
    quarantined = tmp_path / "state.json.corrupt-20231114T221320"
    assert quarantined.read_bytes() == b'{"version": 1, "entries": ['
    assert not path.exists()
    assert "corrupt" in caplog.text and str(quarantined) in caplog.text


@pytest.mark.parametrize("content", [b"[1, 2]", b"\xff\xfe garbage", b""])
def test_state_file_that_is_not_a_json_object_is_quarantined(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    assert load_state(path, now=NOW) is None
    assert (tmp_path / "state.json.corrupt-20231114T221320").exists()


def test_unreadable_state_file_raises_instead_of_being_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()
    with pytest.raises(StateLoadError):
        load_state(path)
    assert path.is_dir()


def test_failed_save_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    blocker = tmp_path / "state.json"
    blocker.mkdir()  # rename onto a directory fails after the temp file was written
    with pytest.raises(StateSaveError) as raised:
        save_state(blocker, {"version": 1})
    assert isinstance(raised.value.__cause__, OSError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def _can_mount_private_tmpfs() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


needs_mount_namespace = pytest.mark.skipif(
    not _can_mount_private_tmpfs(), reason="needs root and unshare -m for a private tmpfs"
)


def save_on_private_tmpfs(tmp_path: Path, mount_options: str, payload_size: int) -> dict[str, str]:
    """Run save_state on a tmpfs mounted in a private mount namespace; report what happened."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    script = textwrap.dedent(
        f"""
        import json, os
        from proxyd.routing._statefile import StateSaveError, save_state
        path = os.path.join({str(mountpoint)!r}, "state.json")
        result = {{}}
        if os.path.exists(path):
            result["before"] = open(path).read()
        try:
            save_state(path, {{"pad": "x" * {payload_size}}})
            result["outcome"] = "saved"
        except StateSaveError as err:
            result["outcome"] = type(err.__cause__).__name__ + ":" + str(err.__cause__.errno)
        result["files"] = ",".join(sorted(os.listdir({str(mountpoint)!r})))
        if os.path.exists(path):
            result["after"] = open(path).read()
        print(json.dumps(result))
        """
    )
    seed = f"echo '{{\"old\": true}}' > {mountpoint}/state.json; "
    if "ro" in mount_options.split(","):
        # Seed the file on a writable mount, then make it read-only.
        mount = (
            f"mount -t tmpfs -o size=64k tmpfs {mountpoint} && {seed}"
            f"mount -o remount,{mount_options} {mountpoint}"
        )
    else:
        mount = f"mount -t tmpfs -o {mount_options} tmpfs {mountpoint} && {seed}true"
    completed = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'{mount} && exec "$0" -c "$1"',
            sys.executable,
            script,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, str] = json.loads(completed.stdout)
    return result


@needs_mount_namespace
def test_save_to_read_only_filesystem_raises_typed_error(tmp_path: Path) -> None:
    result = save_on_private_tmpfs(tmp_path, "ro", payload_size=10)
    assert result["outcome"] == "OSError:30"  # EROFS
    assert result["after"] == result["before"]


@needs_mount_namespace
def test_save_to_full_filesystem_raises_typed_error_and_keeps_old_file(tmp_path: Path) -> None:
    result = save_on_private_tmpfs(tmp_path, "size=16k", payload_size=200_000)
    assert result["outcome"] == "OSError:28"  # ENOSPC
    assert result["after"] == result["before"] == '{"old": true}\n'
    assert result["files"] == "state.json"  # the partial temp file was removed


# --- save scheduling -------------------------------------------------------------------


def test_scheduler_writes_once_changes_settle() -> None:
    scheduler = SaveScheduler(debounce=5.0, max_delay=30.0)
    assert scheduler.deadline() is None and not scheduler.due(100.0)
    scheduler.changed(100.0)
    scheduler.changed(102.0)
    assert scheduler.deadline() == 107.0
    assert not scheduler.due(106.9)
    assert scheduler.due(107.0)
    scheduler.saved(107.0)
    assert scheduler.deadline() is None


def test_scheduler_never_delays_a_write_past_max_delay() -> None:
    scheduler = SaveScheduler(debounce=5.0, max_delay=30.0)
    for second in range(100, 200, 2):  # a table that never settles
        scheduler.changed(float(second))
        if scheduler.due(float(second)):
            break
    assert second == 130


def test_changes_made_while_saving_stay_pending() -> None:
    scheduler = SaveScheduler(debounce=5.0, max_delay=30.0)
    scheduler.changed(100.0)
    scheduler.changed(106.0)  # arrives while the snapshot taken at 105.0 is being written
    scheduler.saved(105.0)
    assert scheduler.deadline() == 111.0


def test_failed_save_is_retried_after_max_delay_not_at_once() -> None:
    scheduler = SaveScheduler(debounce=5.0, max_delay=30.0)
    scheduler.changed(100.0)
    scheduler.failed(105.0)
    assert not scheduler.due(106.0)
    assert scheduler.deadline() == 135.0
    scheduler.saved(135.0)
    assert scheduler.deadline() is None
