"""Network namespaces and the processes the lab runs inside them.

- ``Netns(name)``: ``create()``, ``delete()``, ``ip(...)``, ``iptables(...)``,
  ``iptables_restore(text)``, ``run(argv)``, ``popen(argv)`` and ``write_etc(file, text)``
  (files under /etc/netns/NAME/ that ``ip netns exec`` bind-mounts over /etc/FILE).
- ``LabProcess``: a server started in a namespace, stopped by its own PID only.
- ``wait_listening(proc, proto, endpoints)``: block until the namespace of a ``LabProcess``
  or a ``Popen`` (e.g. proxyd started with ``NetLab.popen_client``) has those sockets.
- ``lab_prefix()`` names a new lab, ``lab_workdir(prefix)`` its files;
  ``remove_stale_labs()`` deletes what labs of dead processes left behind (namespaces,
  /etc/netns files, work dirs).
- ``LabError``: a lab command failed; ``LabUnavailable``: this machine cannot run labs.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"
_NETNS_ETC = Path("/etc/netns")
# pxd<owner pid>n<sequence><role>, role c(lient), r(outer/censor), i(nternet), and the
# LAN behind the client: l (the device), m (its neighbour)
_LAB_NETNS = re.compile(r"^pxd(\d+)n\d+[criml]$")
_LAB_WORKDIR = re.compile(r"^pxd(\d+)n\d+-netlab$")
_lab_sequence = itertools.count()
_PR_SET_PDEATHSIG = 1
# Looked up now: loading a library between fork and exec can deadlock.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
# Proxy settings of whoever runs the tests must never send lab traffic elsewhere.
_PROXY_ENV = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}


class LabError(RuntimeError):
    """A command building or driving the lab failed."""


class LabUnavailable(LabError):
    """This machine cannot run the lab (not root, missing tools, no netns support)."""


def tool(name: str) -> str:
    """Absolute path of a system tool; sbin is searched even if PATH lacks it."""
    path = os.environ.get("PATH", "") + ":" + _SBIN_PATH
    found = shutil.which(name, path=path)
    if found is None:
        raise LabUnavailable(f"{name} is not installed")
    return found


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_ENV}
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":" + _SBIN_PATH
    env.update(extra or {})
    return env


def die_with_parent() -> None:
    """preexec_fn: servers die with the test process even if it is SIGKILLed.

    PDEATHSIG follows the thread that forked, so start labs from the main thread.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run(argv: Sequence[str], *, input_text: str | None = None) -> str:
    result = subprocess.run(
        argv, input=input_text, capture_output=True, text=True, env=clean_env(), check=False
    )
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)} -> exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def create(self) -> None:
        run([tool("ip"), "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")

    def delete(self) -> None:
        with contextlib.suppress(LabError):
            run([tool("ip"), "netns", "delete", self.name])
        shutil.rmtree(_NETNS_ETC / self.name, ignore_errors=True)

    def ip(self, *args: str) -> str:
        return run([tool("ip"), "-n", self.name, *args])

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return [tool("ip"), "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, input_text: str | None = None) -> str:
        return run(self.exec_argv(argv), input_text=input_text)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("env", clean_env())
        kwargs.setdefault("preexec_fn", die_with_parent)
        return subprocess.Popen(self.exec_argv(argv), **kwargs)

    def iptables(self, *args: str) -> str:
        return self.run([tool("iptables"), "-w", *args])

    def iptables_restore(self, rules: str) -> None:
        self.run([tool("iptables-restore"), "-w", "--noflush"], input_text=rules)

    def write_etc(self, filename: str, text: str) -> None:
        directory = _NETNS_ETC / self.name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / filename).write_text(text)

    def pids(self) -> list[int]:
        out = run([tool("ip"), "netns", "pids", self.name])
        return [int(pid) for pid in out.split()]


class LabProcess:
    """A server in a namespace, output in ``log_path``, stopped by its PID alone."""

    def __init__(self, name: str, netns: Netns, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.netns = netns
        self.argv = list(argv)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise LabError(f"{self.name} is not running")
        return self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running():
            return
        self._log = self.log_path.open("ab")
        self._proc = self.netns.popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self, grace: float = 2.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def failure(self, why: str) -> LabError:
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        return LabError(f"{self.name} ({' '.join(self.argv)}): {why}\n{tail}")


def _hex_endpoint(ip: str, port: int) -> str:
    # /proc/net/{tcp,udp} print IPv4 addresses as the raw little-endian 32-bit word.
    octets = [int(part) for part in ip.split(".")]
    return "".join(f"{octet:02X}" for octet in reversed(octets)) + f":{port:04X}"


def _bound(pid: int, proto: str) -> set[str]:
    """Endpoints bound (TCP: listening) in the network namespace of ``pid``."""
    bound: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if proto == "udp" or fields[3] == "0A":  # 0A is TCP_LISTEN
                bound.add(fields[1])
    return bound


def wait_listening(
    proc: LabProcess | subprocess.Popen[Any],
    proto: str,
    endpoints: Iterable[tuple[str, int]],
    timeout: float = 10.0,
) -> None:
    """Block until the process's namespace has every endpoint bound (TCP: listening).

    Raises ``LabError`` (with the log's tail for a ``LabProcess``) if the process exits
    first or the deadline passes.
    """
    wanted = {_hex_endpoint(ip, port) for ip, port in endpoints}
    deadline = time.monotonic() + timeout
    while True:
        alive = proc.running() if isinstance(proc, LabProcess) else proc.poll() is None
        missing = wanted - _bound(proc.pid, proto) if alive else wanted
        if not missing:
            return
        why = "exited during start-up" if not alive else ""
        if not why and time.monotonic() > deadline:
            why = f"not listening on {sorted(missing)} after {timeout}s"
        if why:
            if isinstance(proc, LabProcess):
                raise proc.failure(why)
            raise LabError(f"pid {proc.pid} ({proc.args!r}): {why}")
        time.sleep(0.02)


def lab_prefix() -> str:
    return f"pxd{os.getpid()}n{next(_lab_sequence)}"


def lab_workdir(prefix: str) -> Path:
    """Where a lab keeps its configs, certificates and logs (created by ``start``)."""
    return Path(tempfile.gettempdir()) / f"{prefix}-netlab"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_labs() -> list[str]:
    """Delete namespaces and files of labs whose owning process is gone; return their names.

    Only names of this lab's own scheme are considered, and only when the PID encoded in
    the name is dead, so a lab running in a parallel test process is never touched.
    Processes still inside such a namespace were started by that dead lab.
    """
    removed: list[str] = []
    for line in run([tool("ip"), "netns", "list"]).splitlines():
        name = line.split(" ", 1)[0]
        match = _LAB_NETNS.match(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        netns = Netns(name)
        for pid in netns.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        netns.delete()
        removed.append(name)
    if _NETNS_ETC.is_dir():
        for directory in _NETNS_ETC.iterdir():
            match = _LAB_NETNS.match(directory.name)
            if match is not None and not _pid_alive(int(match.group(1))):
                shutil.rmtree(directory, ignore_errors=True)
    for directory in Path(tempfile.gettempdir()).iterdir():
        match = _LAB_WORKDIR.match(directory.name)
        if match is not None and not _pid_alive(int(match.group(1))):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory.name)
    return removed
