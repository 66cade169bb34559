"""Process plumbing for the harness: pinned starts, readiness, memory and CPU readings.

- ``PROXY_CPU`` / ``CLIENT_CPU``: the proxies run on CPU 0; load generators, the origin and the
  harness itself on CPU 1, so a proxy never competes with the load it is measured under.
- ``pinned(cmd, cpu)`` prefixes a command with ``taskset -c``; ``start(...)`` launches it in its
  own session with stdout/stderr to files and returns a ``Started`` handle.
- ``wait_port(...)`` waits for a port to accept a connection (never a sleep); it gives up early
  when the process exits and says why.
- ``tree_pids``, ``rss_kib``, ``cpu_seconds`` read /proc for a process and its descendants.
- ``raise_nofile(n)`` lifts RLIMIT_NOFILE (root may raise the hard limit), inherited by children.
- ``free_port()`` asks the kernel for an unused loopback port.
- ``machine()`` describes the box (nproc, CPU model, kernel) for the report.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PROXY_CPU = 0
CLIENT_CPU = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class StartError(Exception):
    """A process did not become ready; the message is the short reason shown as "n/a (...)"."""


@dataclass
class Started:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:160] if lines else ""

    def exit_reason(self) -> str:
        code = self.proc.poll()
        detail = self.last_log_line()
        return f"exited {code}" + (f": {detail}" if detail else "")


def pinned(cmd: list[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd]


def start(
    name: str,
    cmd: list[str],
    cpu: int,
    workdir: Path,
    env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> Started:
    log_path = workdir / f"{name}.out"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            pinned(cmd, cpu),
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Started(name, proc, log_path)


def wait_port(started: Started, port: int, deadline_s: float = 20.0) -> None:
    """Return once 127.0.0.1:port accepts; raise StartError if the process dies or time runs out."""
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        if not started.alive():
            raise StartError(started.exit_reason())
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        # Polling a port has no event to wait on; a short back-off keeps it from spinning.
        time.sleep(0.02)
    raise StartError(f"port {port} not accepting after {deadline_s:.0f}s")


def stop(started: Started, grace_s: float = 5.0) -> None:
    """Terminate the process group we created (and only it), then reap it."""
    if started.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started.proc.pid, signal.SIGTERM)
        try:
            started.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started.proc.pid, signal.SIGKILL)
            started.proc.wait()


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            kids.extend(int(p) for p in text.split())
    return kids


def tree_pids(pid: int) -> list[int]:
    """The process and all its descendants (taskset execs in place, so pid is the program)."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        todo.extend(_children(current))
    return seen


def rss_kib(pid: int) -> int:
    """VmRSS summed over the process tree (shared pages of forked children count twice)."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    """utime+stime of the process tree (fields 14 and 15 of /proc/PID/stat)."""
    ticks = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{p}/stat").read_text()
            # The command name may contain spaces; fields after its closing paren are fixed.
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLK_TCK


def raise_nofile(limit: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, limit)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def machine() -> dict[str, str | int]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count() or 0,
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
