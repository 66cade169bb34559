"""Start proxyd as a real subprocess and wait for it on real signals (its log, its port)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

LISTENING = re.compile(r"proxyd listening on (\S+):(\d+)")


class Proxyd:
    """A running ``python -m proxyd`` whose stderr is collected line by line."""

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        config: str | None = None,
        tmp_path: Path,
        env: dict[str, str] | None = None,
        netns: str | None = None,
        wrap: Sequence[str] = (),
        wait: bool = True,
        raw_argv: bool = False,
    ) -> None:
        argv = [sys.executable, "-m", "proxyd"] + ([] if raw_argv else ["run"])
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = tmp_path / "proxyd.toml"
            self.config_path.write_text(config)
            argv += ["-c", str(self.config_path)]
        if not raw_argv:
            # Free port, no admin listener, a private state dir: unless the test says so.
            if "--listen" not in args and (config is None or "listen" not in config):
                argv += ["--listen", "127.0.0.1:0"]
            if "--admin" not in args and (config is None or "admin" not in config):
                argv += ["--admin", ""]
            if "--state-dir" not in args and (config is None or "state_dir" not in config):
                argv += ["--state-dir", str(tmp_path / "state")]
        argv += list(args)
        argv = [*wrap, *argv]  # e.g. prlimit or unshare, which exec proxyd in place
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=full_env
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        self.host = ""
        self.port = 0
        if wait:
            match = self.wait_for_log(LISTENING)
            self.host, self.port = match.group(1), int(match.group(2))

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def wait_for_log(self, pattern: re.Pattern[str] | str, timeout: float = 15.0) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"proxyd never logged {regex.pattern!r}; log:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(remaining)

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode

    def rss_kib(self, field: str = "VmRSS") -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"{field} not found")

    def assert_clean_log(self) -> None:
        text = self.log_text()
        assert "Traceback" not in text, text
        assert "internal error" not in text, text
