"""Faults proxyd must ride out: a server dying or stalling mid-connection, the resolver
down, an unwritable state directory, a config file gone on SIGHUP, SIGKILL in the middle
of saving, and the wall clock jumping. After each, the daemon serves a normal request."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxyd.routing._learned import STATE_FILE
from tests.integration.test_admin import ADMIN_LISTENING, wait_until
from tests.integration.test_errors import exchange, status_of, still_serves
from tests.support.origin import OriginServer
from tests.support.proc import Proxyd
from tests.support.scrape import scrape

ECHO_SERVER = """
import socket, sys
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
mode = sys.argv[1]
held = []
while True:
    conn, _ = listener.accept()
    held.append(conn)
    if mode == "echo":
        while data := conn.recv(65536):
            conn.sendall(data)
"""


class ServerProcess:
    """A TCP server in its own process ("echo" or "stall": accept and never read)."""

    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER, mode], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def echo_process() -> Iterator[ServerProcess]:
    server = ServerProcess("echo")
    yield server
    server.kill()


@pytest.fixture
def stall_process() -> Iterator[ServerProcess]:
    server = ServerProcess("stall")
    yield server
    server.kill()


class AdminDaemon:
    def __init__(self, tmp_path: Path, config: str = "", wrap: tuple[str, ...] = ()) -> None:
        self.proc = Proxyd(["--admin", "127.0.0.1:0"], config=config, tmp_path=tmp_path, wrap=wrap)
        match = self.proc.wait_for_log(ADMIN_LISTENING)
        self.admin = f"http://{match.group(1)}:{match.group(2)}"

    def metric(self, key: str) -> float:
        return scrape(self.admin).get(key, 0.0)

    def health(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.admin}/healthz", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def force_route(self, domain: str, route: str = "direct") -> None:
        request = urllib.request.Request(
            f"{self.admin}/api/routes/{domain}",
            data=json.dumps({"route": route}).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def routes(self) -> list[str]:
        with urllib.request.urlopen(f"{self.admin}/api/routes", timeout=10) as response:
            return [entry["key"] for entry in json.load(response)["entries"]]

    def stop(self) -> None:
        self.proc.stop()
        self.proc.assert_clean_log()


def test_server_dying_mid_tunnel_closes_the_client_cleanly_and_counts_right(
    tmp_path: Path, origin: OriginServer, echo_process: ServerProcess
) -> None:
    daemon = AdminDaemon(tmp_path)
    try:
        with socket.create_connection(daemon.proc.address, timeout=10) as client:
            client.sendall(f"CONNECT 127.0.0.1:{echo_process.port} HTTP/1.1\r\n\r\n".encode())
            assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
            client.sendall(b"x" * 1000)
            got = b""
            while len(got) < 1000:
                got += client.recv(65536)
            assert daemon.metric('proxyd_tunnels_active{route="direct"}') == 1
            echo_process.kill()
            assert client.recv(1) == b""  # an orderly close, not a reset or a hang
        wait_until(
            lambda: daemon.metric('proxyd_tunnels_active{route="direct"}') == 0,
            what="the tunnel to be counted closed",
        )
        bytes_key = 'proxyd_relayed_bytes_total{{direction="{}",route="direct"}}'
        assert daemon.metric(bytes_key.format("up")) == 1000
        assert daemon.metric(bytes_key.format("down")) == 1000
        still_serves(daemon.proc, origin)
    finally:
        daemon.stop()


@pytest.fixture
def upstream_socks(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """microsocks on loopback; only it can resolve ``via-upstream.test`` (to 127.0.0.1)."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost via-upstream.test\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    microsocks = shutil.which("microsocks")
    assert microsocks is not None, "the microsocks Debian package is needed"
    wrap = mount_ns_wrap(f"mount --bind {hosts} /etc/hosts")
    proc = subprocess.Popen([*wrap, microsocks, "-i", "127.0.0.1", "-p", str(port)])
    wait_until(lambda: _accepts(port), what="microsocks to listen")
    yield proc, port
    proc.kill()
    proc.wait()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_upstream_proxy_dying_mid_tunnel_closes_the_client_cleanly_and_counts_right(
    tmp_path: Path,
    origin: OriginServer,
    echo_process: ServerProcess,
    upstream_socks: tuple[subprocess.Popen[bytes], int],
) -> None:
    socks_proc, socks_port = upstream_socks
    config = (
        f'[[upstream]]\nname = "up"\nurl = "socks5h://127.0.0.1:{socks_port}"\n'
        '[[rule]]\ndomain = "via-upstream.test"\nroute = "up"\n'
    )
    daemon = AdminDaemon(tmp_path, config)
    try:
        with socket.create_connection(daemon.proc.address, timeout=10) as client:
            target = f"via-upstream.test:{echo_process.port}"
            client.sendall(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
            assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
            client.sendall(b"y" * 500)
            got = b""
            while len(got) < 500:
                got += client.recv(65536)
            assert daemon.metric('proxyd_tunnels_active{route="up"}') == 1
            socks_proc.kill()
            socks_proc.wait()
            assert client.recv(1) == b""
        wait_until(lambda: daemon.metric('proxyd_tunnels_active{route="up"}') == 0)
        assert daemon.metric('proxyd_relayed_bytes_total{direction="up",route="up"}') == 500
        assert daemon.metric('proxyd_relayed_bytes_total{direction="down",route="up"}') == 500
        still_serves(daemon.proc, origin)
    finally:
        daemon.stop()


def test_stalled_servers_time_out_and_free_their_connection_slots(
    tmp_path: Path, origin: OriginServer, stall_process: ServerProcess
) -> None:
    config = '[limits]\nidle_timeout = "700ms"\nmax_connections = 2\n'
    daemon = AdminDaemon(tmp_path, config)
    try:
        port = stall_process.port
        answers: list[bytes] = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(
                    exchange(daemon.proc, f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n".encode())
                )
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(answers) == 2
        assert all(status_of(a) in (502, 504) and b"127.0.0.1" in a for a in answers), answers
        # A stalled tunnel ends at the idle timeout too.
        with socket.create_connection(daemon.proc.address, timeout=10) as client:
            client.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
            assert client.recv(1) == b""
        # Both slots of max_connections = 2 are free again.
        wait_until(lambda: daemon.metric('proxyd_tunnels_active{route="direct"}') == 0)
        still_serves(daemon.proc, origin)
        still_serves(daemon.proc, origin)
        assert daemon.metric('proxyd_limit_hits_total{limit="max_connections"}') == 0
    finally:
        daemon.stop()


def mount_ns_wrap(script: str) -> tuple[str, ...]:
    # sh -c SCRIPT sh ARGV...: the script runs, then execs proxyd's argv in its place.
    return ("unshare", "-m", "sh", "-ec", script + '\nexec "$@"', "sh")


@pytest.fixture
def dead_resolver(tmp_path: Path) -> Iterator[tuple[str, ...]]:
    """A resolv.conf naming a nameserver that swallows queries (a UDP socket never read)."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nameserver = f"127.53.{os.getpid() % 250}.{random.randrange(1, 250)}"  # parallel runs
    sink.bind((nameserver, 53))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {nameserver}\noptions timeout:2 attempts:1\n")
    yield mount_ns_wrap(f"mount --bind {resolv} /etc/resolv.conf")
    sink.close()


def test_resolver_down_gives_a_clear_502_and_does_not_block_other_requests(
    tmp_path: Path, origin: OriginServer, dead_resolver: tuple[str, ...]
) -> None:
    daemon = AdminDaemon(tmp_path, wrap=dead_resolver)
    try:
        answers: list[bytes] = []
        lookup = threading.Thread(
            target=lambda: answers.append(
                exchange(daemon.proc, b"GET http://resolver-down.example/ HTTP/1.1\r\n\r\n")
            )
        )
        started = time.monotonic()
        lookup.start()
        # While the lookup hangs in the resolver, requests by address are served at once.
        still_serves(daemon.proc, origin)
        assert lookup.is_alive(), "the lookup should still be waiting for the resolver"
        lookup.join(30)
        assert time.monotonic() - started < 15
        assert status_of(answers[0]) in (502, 504)
        assert b"resolver-down.example" in answers[0]
        still_serves(daemon.proc, origin)
    finally:
        daemon.stop()


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_unwritable_state_directory_keeps_serving_and_learning_in_memory(
    tmp_path: Path, origin: OriginServer, fault: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    if fault == "read-only":
        script = f"mount --bind {state} {state}\nmount -o remount,bind,ro {state}"
    else:
        script = (
            f"mount -t tmpfs -o size=16k tmpfs {state}\n"
            f"dd if=/dev/zero of={state}/filler bs=4k 2>/dev/null || true"
        )
    config = '[learning]\nsave_debounce = "50ms"\n'
    daemon = AdminDaemon(tmp_path, config, wrap=mount_ns_wrap(script))
    try:
        daemon.force_route("remembered.example")
        wait_until(lambda: daemon.metric("proxyd_state_save_failures_total") >= 1)
        assert daemon.metric("proxyd_state_last_save_successful") == 0
        status, text = daemon.health()
        assert status == 503 and "state save failed" in text, text
        assert "remembered.example" in daemon.routes()  # kept in memory
        still_serves(daemon.proc, origin)
        daemon.proc.wait_for_log("cannot save learned routes")
    finally:
        daemon.stop()


def test_config_file_removed_or_broken_on_sighup_keeps_the_running_config(
    tmp_path: Path, origin: OriginServer
) -> None:
    daemon = AdminDaemon(tmp_path, '[limits]\nhead_timeout = "5s"\n')
    config_path = daemon.proc.config_path
    assert config_path is not None
    try:
        for damage in ("remove", "break", "empty-dir"):
            if damage == "remove":
                config_path.unlink()
            elif damage == "break":
                config_path.write_text("[limits\nhead_timeout = ")
            else:
                config_path.unlink()
                config_path.mkdir()
            failures = daemon.metric("proxyd_config_reload_failures_total")
            daemon.proc.signal(signal.SIGHUP)
            wait_until(
                lambda f=failures: daemon.metric("proxyd_config_reload_failures_total") == f + 1,
                what=f"the reload after {damage} to fail",
            )
            assert daemon.metric("proxyd_config_last_reload_successful") == 0
            still_serves(daemon.proc, origin)
            if config_path.is_dir():
                config_path.rmdir()
        assert daemon.proc.proc.poll() is None
    finally:
        daemon.stop()


def test_sigkill_at_random_moments_always_leaves_a_parseable_state_file(
    tmp_path: Path, origin: OriginServer
) -> None:
    config = '[learning]\nsave_debounce = "1ms"\n'
    state_file = tmp_path / "state" / STATE_FILE
    rng = random.Random(7)
    saved_once = False
    for round_no in range(6):
        daemon = AdminDaemon(tmp_path, config)
        stop = threading.Event()

        def churn(d: AdminDaemon = daemon, r: int = round_no, stop: threading.Event = stop) -> None:
            i = 0
            while not stop.is_set():
                try:
                    d.force_route(f"churn{r}-{i}.example")
                except OSError:
                    return  # the daemon was killed
                i += 1

        writer = threading.Thread(target=churn)
        writer.start()
        wait_until(lambda d=daemon: d.metric("proxyd_state_saves_total") >= 1)
        time.sleep(rng.uniform(0.0, 0.3))  # the random moment is the point of this test
        daemon.proc.proc.send_signal(signal.SIGKILL)
        daemon.proc.proc.wait()
        stop.set()
        writer.join(10)
        data = json.loads(state_file.read_text())
        assert isinstance(data, dict)
        saved_once = saved_once or any("churn" in json.dumps(e) for e in data.get("entries", []))
    assert saved_once
    daemon = AdminDaemon(tmp_path, config)  # and the last file loads
    try:
        assert any(key.startswith("churn") for key in daemon.routes())
        assert "corrupt" not in daemon.proc.log_text()
        still_serves(daemon.proc, origin)
    finally:
        daemon.stop()


def test_wall_clock_jumps_do_not_fire_or_stall_timers(tmp_path: Path, origin: OriginServer) -> None:
    lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
    assert os.path.exists(lib), "the faketime Debian package is needed (scripts/test installs it)"
    offset_file = tmp_path / "faketime"
    offset_file.write_text("+0s\n")
    env = {
        "LD_PRELOAD": lib,
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    config = '[limits]\nhead_timeout = "1s"\nidle_timeout = "3s"\n'
    proc = Proxyd(config=config, tmp_path=tmp_path, env=env)
    try:
        with socket.create_connection(proc.address, timeout=30) as kept:
            kept.sendall(f"GET {origin.url}/a HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer = b""
            while not answer.endswith(b"hello from origin-a /a\n"):
                answer += kept.recv(4096)
            # A day forward: the kept-alive connection (idle 3 s) must not be cut at once.
            offset_file.write_text("+1d\n")
            kept.sendall(f"GET {origin.url}/b HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer = b""
            while not answer.endswith(b"hello from origin-a /b\n"):
                chunk = kept.recv(4096)
                assert chunk, "kept-alive connection closed after the clock jumped forward"
                answer += chunk
        # An hour back: the head timeout (1 s) still fires after about a second.
        offset_file.write_text("-1h\n")
        started = time.monotonic()
        assert status_of(exchange(proc, b"GET http://x/ HTTP/1.1\r\nHost", read_timeout=30)) == 408
        assert time.monotonic() - started < 10
        still_serves(proc, origin)
    finally:
        proc.stop()
    proc.assert_clean_log()
    # The jumps were real for the daemon: its last log line is stamped an hour back.
    stamp = proc.log_text().splitlines()[-1][:19]
    logged = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S"))
    assert time.time() - logged > 1800, stamp
