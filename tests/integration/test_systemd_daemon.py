"""The daemon under a stand-in for systemd: a real NOTIFY_SOCKET, real passed sockets.

systemd is not PID 1 here, so the test plays its part exactly as sd_notify(3) and
sd_listen_fds(3) describe it: it binds the unix datagram socket it names in
NOTIFY_SOCKET (with WATCHDOG_USEC as WatchdogSec= would set it), and for socket
activation it binds the listening sockets and hands them over as fds 3 and 4 with
LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES, as systemd does between fork and exec.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.origin import OriginServer
from tests.support.proc import Proxyd
from tests.support.required import installed, is_root, require

REPO_ROOT = Path(__file__).resolve().parents[2]
WATCHDOG_SECONDS = 0.6


class NotifySocket:
    """systemd's side of sd_notify: every datagram, with the time it arrived."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            with self._cond:
                self.messages.append((time.monotonic(), fields))
                self._cond.notify_all()

    def wait_for(
        self, key: str, after: int = 0, timeout: float = 15.0
    ) -> tuple[int, dict[str, str]]:
        """The first message from index ``after`` on that sets ``key``, and its index."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(after, len(self.messages)):
                    if key in self.messages[index][1]:
                        return index, self.messages[index][1]
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no {key} after message {after}: {self.messages}"
                self._cond.wait(remaining)

    def count(self) -> int:
        with self._cond:
            return len(self.messages)

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # pytest's tmp_path can exceed the 108-byte limit of AF_UNIX paths.
    with tempfile.TemporaryDirectory(prefix="sdnotify-") as directory:
        receiver = NotifySocket(os.path.join(directory, "notify"))
        yield receiver
        receiver.close()


def test_daemon_reports_ready_watchdog_reloading_and_stopping(
    notify_socket: NotifySocket, tmp_path: Path
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": str(int(WATCHDOG_SECONDS * 1e6))}
    proc = Proxyd(config='log_level = "info"\n', tmp_path=tmp_path, env=env)
    try:
        ready_at, ready = notify_socket.wait_for("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith(f"serving {proc.host}:{proc.port}; 0 clients;")

        # The watchdog: pinged at half of WatchdogSec, never letting it run out.
        pings: list[float] = []
        index = ready_at
        while len(pings) < 6:
            index, _ = notify_socket.wait_for("WATCHDOG", after=index + 1)
            pings.append(notify_socket.messages[index][0])
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < WATCHDOG_SECONDS, gaps
        assert sum(gaps) / len(gaps) > WATCHDOG_SECONDS / 3, gaps  # not a busy loop

        # STATUS follows what the daemon is doing.
        with socket.create_connection(proc.address, timeout=10):
            _, status = notify_socket.wait_for("STATUS", after=notify_socket.count())
            assert "; 1 clients;" in status["STATUS"]

        # SIGHUP: RELOADING=1 with the monotonic time of the reload, then READY=1 again.
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        mark = notify_socket.count()
        proc.signal(signal.SIGHUP)
        reload_at, reloading = notify_socket.wait_for("RELOADING", after=mark)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert reloading["RELOADING"] == "1"
        assert before <= int(reloading["MONOTONIC_USEC"]) <= after
        _, ready = notify_socket.wait_for("READY", after=reload_at + 1)
        assert ready["STATUS"].startswith("serving ")
        proc.wait_for_log("configuration reloaded")

        # SIGTERM: STOPPING=1 before the drain.
        mark = notify_socket.count()
        assert proc.stop() == 0
        _, stopping = notify_socket.wait_for("STOPPING", after=mark)
        assert stopping["STOPPING"] == "1"
        assert stopping["STATUS"].startswith("draining ")
    finally:
        proc.stop()
    proc.assert_clean_log()


def test_failed_reload_is_reported_to_systemd_and_the_old_config_kept(
    notify_socket: NotifySocket, tmp_path: Path, origin: OriginServer
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.path}
    proc = Proxyd(config='log_level = "info"\n', tmp_path=tmp_path, env=env)
    try:
        notify_socket.wait_for("READY")
        assert proc.config_path is not None
        proc.config_path.write_text('log_level = "loud"\n')
        mark = notify_socket.count()
        proc.signal(signal.SIGHUP)
        reload_at, _ = notify_socket.wait_for("RELOADING", after=mark)
        _, ready = notify_socket.wait_for("READY", after=reload_at + 1)
        assert ready["STATUS"].startswith("reload failed: ")
        assert "log_level" in ready["STATUS"]
        with socket.create_connection(proc.address, timeout=10) as sock:
            sock.sendall(f"GET {origin.url}/x HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        assert proc.stop() == 0


# systemd forks, moves the listening sockets to fds 3.., sets LISTEN_PID to the forked pid
# and execs the service. LAUNCHER does the same between fork and proxyd.
LAUNCHER = r"""
import fcntl, os, sys
sources = [int(fd) for fd in sys.argv[1].split(",")]
parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in sources]
for fd in sources:
    os.close(fd)
for target, fd in enumerate(parked, start=3):
    os.dup2(fd, target)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(parked))
os.environ["LISTEN_FDNAMES"] = sys.argv[2]
os.execv(sys.executable, [sys.executable, "-m", "proxyd", *sys.argv[3:]])
"""


def test_socket_activation_serves_proxy_and_admin_on_the_passed_sockets(
    tmp_path: Path, origin: OriginServer
) -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as proxy_listener,
        socket.create_server(("127.0.0.1", 0)) as admin_listener,
    ):
        fds = [proxy_listener.fileno(), admin_listener.fileno()]
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), "proxy:admin",
             "run", "--state-dir", str(tmp_path / "state")],
            pass_fds=fds,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            log = []
            for line in proc.stderr:
                log.append(line)
                if "admin listening on" in line:
                    break
            proxy_port = proxy_listener.getsockname()[1]
            admin_port = admin_listener.getsockname()[1]
            text = "".join(log)
            assert f"proxyd listening on 127.0.0.1:{proxy_port}\n" in text, text
            assert f"admin listening on 127.0.0.1:{admin_port}\n" in text, text
            # The test never accepts on these sockets: only proxyd, through fds 3 and 4,
            # can answer.
            with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
                sock.sendall(f"GET {origin.url}/activated HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            assert b"/activated" in answer
            metrics_url = f"http://127.0.0.1:{admin_port}/metrics"
            with urllib.request.urlopen(metrics_url, timeout=10) as response:
                exposition = response.read().decode()
            assert 'proxyd_requests_total{outcome="ok",protocol="http",route="direct"} 1.0' in (
                exposition
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest


# --- a socket handed over on a LAN address ------------------------------------------------

PROXY_SIDE_IP = "198.18.99.1"  # proxyd's LAN address, inside a namespace of the test's own
CLIENT_SIDE_IP = "198.18.99.2"
PROXY_PORT, ORIGIN_PORT = 8080, 8000

# The stand-in for systemd inside the proxy namespace: binds the socket a unit's
# ListenStream=198.18.99.1:8080 would, moves it to fd 3 and execs proxyd with it.
BINDING_LAUNCHER = r"""
import os, socket, sys
fd = socket.create_server((sys.argv[1], int(sys.argv[2]))).detach()
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="proxy")
os.execv(sys.executable, [sys.executable, "-m", "proxyd", *sys.argv[3:]])
"""

# An origin on the client's LAN address that says when it listens.
ORIGIN = r"""
import http.server, sys
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"lan origin {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), Hello)
print("listening", flush=True)
server.serve_forever()
"""


class Lan:
    """Two namespaces joined by a veth pair: proxyd's side and a LAN client's side.

    Nothing in them routes anywhere else, so no byte can leave for a real network.
    """

    def __init__(self) -> None:
        prefix = f"pxd{os.getpid()}sd{time.monotonic_ns() % 100000}"
        self.proxy_side, self.client_side = f"{prefix}p", f"{prefix}c"
        self.procs: list[subprocess.Popen[str]] = []
        self._created: list[str] = []
        try:
            for name in (self.proxy_side, self.client_side):
                subprocess.run(["ip", "netns", "add", name], check=True)
                self._created.append(name)
                self._ip(name, "link set lo up")
            subprocess.run(
                ["ip", "-n", self.proxy_side, "link", "add", "lan0", "type", "veth",
                 "peer", "name", "lan0", "netns", self.client_side],
                check=True,
            )  # fmt: skip
            self._ip(self.proxy_side, f"addr add {PROXY_SIDE_IP}/24 dev lan0", "link set lan0 up")
            self._ip(self.client_side, f"addr add {CLIENT_SIDE_IP}/24 dev lan0", "link set lan0 up")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _ip(netns: str, *commands: str) -> None:
        batch = "".join(f"{command}\n" for command in commands)
        subprocess.run(["ip", "-n", netns, "-batch", "-"], input=batch, text=True, check=True)

    def popen(self, netns: str, argv: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def curl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.client_side, "curl", "-sS", "--max-time", "10", *argv],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.communicate(timeout=30)
        for name in self._created:
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def lan() -> Iterator[Lan]:
    require(is_root() and installed("ip") and installed("curl"), "needs root, iproute2, curl")
    network = Lan()
    yield network
    network.close()


def start_activated(lan: Lan, tmp_path: Path, config: str) -> subprocess.Popen[str]:
    config_path = tmp_path / "proxyd.toml"
    config_path.write_text(config)
    state_dir = str(tmp_path / "state")
    argv = [sys.executable, "-c", BINDING_LAUNCHER, PROXY_SIDE_IP, str(PROXY_PORT),
            "run", "-c", str(config_path), "--admin", "", "--state-dir", state_dir]  # fmt: skip
    return lan.popen(lan.proxy_side, argv)


def test_socket_activation_on_a_lan_address_without_allow_refuses_to_be_an_open_proxy(
    lan: Lan, tmp_path: Path
) -> None:
    proc = start_activated(lan, tmp_path, 'log_level = "info"\n')
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 1, stderr
    assert (
        f"proxyd: refusing to run as an open proxy on inherited socket "
        f"{PROXY_SIDE_IP}:{PROXY_PORT}: set allow = [...] to the client networks"
    ) in stderr
    assert "proxyd listening" not in stderr
    assert "Traceback" not in stderr


def test_socket_activation_on_a_lan_address_with_allow_serves_the_lan(
    lan: Lan, tmp_path: Path
) -> None:
    origin = lan.popen(lan.client_side, [sys.executable, "-c", ORIGIN, CLIENT_SIDE_IP,
                                         str(ORIGIN_PORT)])  # fmt: skip
    assert origin.stdout is not None
    assert origin.stdout.readline() == "listening\n"
    proc = start_activated(lan, tmp_path, 'log_level = "info"\nallow = ["198.18.99.0/24"]\n')
    assert proc.stderr is not None
    log = [proc.stderr.readline()]
    while "proxyd listening on" not in log[-1] and log[-1]:
        log.append(proc.stderr.readline())
    assert log[-1].endswith(f"proxyd listening on {PROXY_SIDE_IP}:{PROXY_PORT}\n"), "".join(log)
    # The test never accepts on that socket: only proxyd, through fd 3, can answer.
    proxy = f"http://{PROXY_SIDE_IP}:{PROXY_PORT}"
    fetched = lan.curl("-x", proxy, f"http://{CLIENT_SIDE_IP}:{ORIGIN_PORT}/activated")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == "lan origin /activated\n"
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest
