"""Every configured limit gives a clean answer when hit, is counted in the metrics, and the
daemon keeps serving afterwards (real daemon, real sockets)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_admin import ADMIN_LISTENING, wait_until
from tests.integration.test_errors import exchange, status_of, still_serves
from tests.support.origin import OriginServer
from tests.support.proc import Proxyd
from tests.support.scrape import limit_hits


class Limited:
    def __init__(self, proc: Proxyd) -> None:
        self.proc = proc
        match = proc.wait_for_log(ADMIN_LISTENING)
        self.admin = f"http://{match.group(1)}:{match.group(2)}"

    def hits(self, limit: str) -> float:
        return limit_hits(self.admin, limit)


def start(tmp_path: Path, limits: str, args: tuple[str, ...] = ()) -> Limited:
    config = "[limits]\n" + limits
    return Limited(Proxyd(["--admin", "127.0.0.1:0", *args], config=config, tmp_path=tmp_path))


@pytest.fixture
def small_heads(tmp_path: Path) -> Iterator[Limited]:
    daemon = start(
        tmp_path,
        'max_line = 200\nmax_headers = 10\nmax_head_bytes = 2048\nhead_timeout = "300ms"\n',
    )
    yield daemon
    daemon.proc.stop()
    daemon.proc.assert_clean_log()


def test_over_long_request_line_is_414_and_counted(
    small_heads: Limited, origin: OriginServer
) -> None:
    head = b"GET http://x/" + b"a" * 300 + b" HTTP/1.1\r\n\r\n"
    assert status_of(exchange(small_heads.proc, head)) == 414
    assert small_heads.hits("max_line") == 1
    still_serves(small_heads.proc, origin)


def test_absurd_header_count_is_431_and_counted(small_heads: Limited, origin: OriginServer) -> None:
    head = b"GET http://x/ HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(50)) + b"\r\n"
    assert status_of(exchange(small_heads.proc, head)) == 431
    assert small_heads.hits("max_headers") == 1
    still_serves(small_heads.proc, origin)


def test_oversized_head_is_431_and_counted(small_heads: Limited, origin: OriginServer) -> None:
    head = b"GET http://x/ HTTP/1.1\r\nCookie: " + b"c" * 4000 + b"\r\n\r\n"
    assert status_of(exchange(small_heads.proc, head)) == 431
    assert small_heads.hits("max_head_bytes") == 1
    still_serves(small_heads.proc, origin)


def test_slow_http_head_and_slow_socks_handshake_are_cut_and_counted(
    small_heads: Limited, origin: OriginServer
) -> None:
    assert status_of(exchange(small_heads.proc, b"GET http://x/ HTTP/1.1\r\nHo")) == 408
    # A SOCKS5 greeting that promises two methods and sends one: closed, no answer.
    assert exchange(small_heads.proc, b"\x05\x02\x00") == b""
    # A connection that never sends a byte at all.
    assert exchange(small_heads.proc, b"") == b""
    assert small_heads.hits("head_timeout") == 3
    still_serves(small_heads.proc, origin)


def connect_tunnel(proc: Proxyd, origin: OriginServer, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(proc.address, timeout=10, source_address=(source, 0))
    sock.sendall(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    return sock


def test_idle_tunnel_and_idle_kept_alive_connection_are_closed_and_counted(
    tmp_path: Path, origin: OriginServer
) -> None:
    daemon = start(tmp_path, 'idle_timeout = "400ms"\n')
    try:
        tunnel = connect_tunnel(daemon.proc, origin)
        with tunnel:
            assert tunnel.recv(1) == b""  # closed by proxyd, not by the test
        with socket.create_connection(daemon.proc.address, timeout=10) as kept:
            kept.sendall(f"GET {origin.url}/a HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer = b""
            while not answer.endswith(b"hello from origin-a /a\n"):
                answer += kept.recv(4096)
            assert kept.recv(1) == b""
        wait_until(lambda: daemon.hits("idle_timeout") == 2, what="two idle closes counted")
        still_serves(daemon.proc, origin)
    finally:
        daemon.proc.stop()
    daemon.proc.assert_clean_log()


def test_connection_caps_refuse_in_each_protocol_and_the_others_keep_working(
    tmp_path: Path, origin: OriginServer
) -> None:
    daemon = start(tmp_path, "max_connections = 6\nmax_connections_per_client = 4\n")
    try:
        held = [connect_tunnel(daemon.proc, origin) for _ in range(4)]
        # 127.0.0.1 has its 4: HTTP gets 503, SOCKS5 a refusal, SOCKS4 "rejected".
        answer = exchange(daemon.proc, b"GET http://x/ HTTP/1.1\r\n\r\n")
        assert status_of(answer) == 503
        assert exchange(daemon.proc, b"\x05\x01\x00") == b"\x05\xff"
        socks4 = b"\x04\x01" + struct.pack("!H", origin.port) + bytes([127, 0, 0, 1]) + b"\0"
        assert exchange(daemon.proc, socks4)[:2] == b"\x00\x5b"
        assert daemon.hits("max_connections_per_client") == 3
        # Another client address still has room until the total of 6 is reached.
        held += [connect_tunnel(daemon.proc, origin, source="127.0.0.2") for _ in range(2)]
        with socket.create_connection(
            daemon.proc.address, timeout=10, source_address=("127.0.0.2", 0)
        ) as extra:
            extra.sendall(b"GET http://x/ HTTP/1.1\r\n\r\n")
            assert extra.recv(4096).startswith(b"HTTP/1.1 503 ")
        assert daemon.hits("max_connections") == 1
        for sock in held:  # every held tunnel still carries bytes
            sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            sock.close()
        wait_until(lambda: b"200" in exchange(daemon.proc, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        still_serves(daemon.proc, origin)
    finally:
        daemon.proc.stop()
    daemon.proc.assert_clean_log()


def get_from(proc: Proxyd, origin: OriginServer, source: str) -> bytes:
    """A plain-HTTP request through proxyd from ``source``: the whole answer."""
    with socket.create_connection(proc.address, timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(f"GET {origin.url}/capped HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def socks5_greeting_from(proc: Proxyd, source: str) -> bytes:
    """proxyd's whole answer to a SOCKS5 greeting (no authentication) from ``source``."""
    with socket.create_connection(proc.address, timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(b"\x05\x01\x00")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"".join(chunks) == b"\x05\x00":
                break  # accepted: the handshake would go on
    return b"".join(chunks)


def socks5_tunnel(proc: Proxyd, origin: OriginServer, source: str) -> socket.socket:
    sock = socket.create_connection(proc.address, timeout=10, source_address=(source, 0))
    sock.sendall(b"\x05\x01\x00")
    assert sock.recv(2) == b"\x05\x00"
    sock.sendall(b"\x05\x01\x00\x01" + bytes([127, 0, 0, 1]) + struct.pack("!H", origin.port))
    reply = sock.recv(10)
    assert reply[:2] == b"\x05\x00", reply
    return sock


def test_per_client_cap_answers_an_http_client_over_it_with_503_and_only_that_client(
    tmp_path: Path, origin: OriginServer
) -> None:
    daemon = start(tmp_path, "max_connections = 100\nmax_connections_per_client = 2\n")
    try:
        held = [connect_tunnel(daemon.proc, origin) for _ in range(2)]
        assert status_of(get_from(daemon.proc, origin, "127.0.0.1")) == 503
        assert daemon.hits("max_connections_per_client") == 1
        assert daemon.hits("max_connections") == 0
        # The cap counts per client address: another one is served meanwhile.
        assert status_of(get_from(daemon.proc, origin, "127.0.0.2")) == 200
        held.pop().close()
        wait_until(
            lambda: status_of(get_from(daemon.proc, origin, "127.0.0.1")) == 200,
            what="a freed slot serving 127.0.0.1 again",
        )
        for sock in held:
            sock.close()
    finally:
        daemon.proc.stop()
    daemon.proc.assert_clean_log()


def test_per_client_cap_refuses_a_socks5_client_over_it_and_only_that_client(
    tmp_path: Path, origin: OriginServer
) -> None:
    daemon = start(tmp_path, "max_connections = 100\nmax_connections_per_client = 2\n")
    try:
        held = [socks5_tunnel(daemon.proc, origin, "127.0.0.1") for _ in range(2)]
        # RFC 1928: "no acceptable methods", then the close.
        assert socks5_greeting_from(daemon.proc, "127.0.0.1") == b"\x05\xff"
        assert daemon.hits("max_connections_per_client") == 1
        assert daemon.hits("max_connections") == 0
        other = socks5_tunnel(daemon.proc, origin, "127.0.0.2")
        other.sendall(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert other.recv(4096).startswith(b"HTTP/1.1 200 ")
        other.close()
        held.pop().close()
        wait_until(
            lambda: socks5_greeting_from(daemon.proc, "127.0.0.1") == b"\x05\x00",
            what="a freed slot serving 127.0.0.1 again",
        )
        for sock in held:
            sock.close()
    finally:
        daemon.proc.stop()
    daemon.proc.assert_clean_log()


def test_open_file_limit_is_raised_to_the_hard_limit_at_start(tmp_path: Path) -> None:
    hard = int(Path("/proc/self/limits").read_text().split("Max open files")[1].split()[1])
    proc = Proxyd(tmp_path=tmp_path, wrap=["prlimit", f"--nofile=256:{hard}", "--"])
    try:
        limits = Path(f"/proc/{proc.proc.pid}/limits").read_text()
        soft_now, hard_now = limits.split("Max open files")[1].split()[:2]
        assert (int(soft_now), int(hard_now)) == (hard, hard)
    finally:
        proc.stop()
    proc.assert_clean_log()
