"""Starting, refusing to start, reloading and draining: the daemon as a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.origin import EchoServer, OriginServer
from tests.support.proc import Proxyd


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


def get_status(proxy: Proxyd, origin: OriginServer, extra: str = "") -> int:
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(f"GET {origin.url}/x HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        return int(sock.recv(65536)[9:12])


def open_tunnel(proxy: Proxyd, port: int) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=10)
    sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.sendall(b"ping")
    assert sock.recv(4) == b"ping"
    return sock


def test_no_arguments_listens_on_loopback_8080(tmp_path: Path, origin: OriginServer) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path))
    proc = Proxyd([], tmp_path=tmp_path, env=env, raw_argv=True)
    try:
        assert proc.address == ("127.0.0.1", 8080)
        assert get_status(proc, origin) == 200
    finally:
        assert proc.stop() == 0


def test_non_loopback_listen_without_allow_refuses_to_start(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "proxyd", "--listen", "0.0.0.0:8080"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "open proxy" in out.stderr
    assert "allow" in out.stderr


def test_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('listen = ["127.0.0.1:8080"]\n\n[limits]\nhead_timeout = "soon"\n')
    out = subprocess.run(
        [sys.executable, "-m", "proxyd", "check", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert f"{bad}:4: limits.head_timeout:" in out.stderr


def test_printed_config_round_trips_through_tomllib(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "proxyd", "config", "--listen", "127.0.0.1:3128"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    data = tomllib.loads(out.stdout)
    assert data["listen"] == ["127.0.0.1:3128"]
    again = tmp_path / "again.toml"
    again.write_text(out.stdout)
    check = subprocess.run(
        [sys.executable, "-m", "proxyd", "config", "-c", str(again)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert check.stdout == out.stdout


def test_sighup_applies_a_good_config_and_keeps_the_old_one_when_broken(
    tmp_path: Path, origin: OriginServer
) -> None:
    proc = Proxyd(config="[limits]\nmax_headers = 100\n", tmp_path=tmp_path)
    try:
        assert proc.config_path is not None
        assert get_status(proc, origin) == 200
        proc.config_path.write_text('[auth]\nusers = { alice = "secret" }\n')
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("configuration reloaded")
        assert get_status(proc, origin) == 407
        proc.config_path.write_text("[auth\nusers = ")
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("reload failed, keeping the previous configuration")
        assert get_status(proc, origin) == 407
        auth = "Proxy-Authorization: Basic YWxpY2U6c2VjcmV0\r\n"  # alice:secret
        assert get_status(proc, origin, auth) == 200
    finally:
        assert proc.stop() == 0


def test_sigterm_waits_for_an_active_tunnel_then_exits_zero(
    tmp_path: Path, echo: EchoServer
) -> None:
    proc = Proxyd(tmp_path=tmp_path)
    tunnel = open_tunnel(proc, echo.port)
    proc.signal(signal.SIGTERM)
    proc.wait_for_log("draining")
    # The tunnel keeps working during the drain; new clients are no longer accepted.
    tunnel.sendall(b"still here")
    assert tunnel.recv(64) == b"still here"
    with pytest.raises(OSError):
        socket.create_connection(proc.address, timeout=5).close()
    assert proc.proc.poll() is None
    tunnel.close()
    assert proc.proc.wait(20) == 0


def test_sigterm_cuts_tunnels_after_the_grace_period(tmp_path: Path, echo: EchoServer) -> None:
    proc = Proxyd(config='[limits]\ndrain_grace = "1s"\n', tmp_path=tmp_path)
    tunnel = open_tunnel(proc, echo.port)
    proc.signal(signal.SIGTERM)
    assert proc.proc.wait(20) == 0
    assert tunnel.recv(64) == b""  # the daemon closed it when the grace period ended
    tunnel.close()
