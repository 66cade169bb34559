"""Every answer a user can get for bad input or a failing destination, and that the daemon
keeps serving afterwards."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.origin import OriginServer
from tests.support.proc import Proxyd


def exchange(
    proxy: Proxyd, data: bytes, *, read_timeout: float = 10.0, half_close: bool = False
) -> bytes:
    """Send raw bytes, return everything the proxy answers until it closes.

    ``half_close`` ends the client's side after the bytes, so a kept-alive connection ends
    after its answer instead of waiting for a next request.
    """
    with socket.create_connection(proxy.address, timeout=read_timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def still_serves(proxy: Proxyd, origin: OriginServer) -> None:
    req = f"GET {origin.url}/alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = exchange(proxy, req.encode())
    assert status_of(answer) == 200
    assert answer.endswith(b"hello from origin-a /alive\n")


@pytest.fixture
def short_timeouts(tmp_path: Path) -> Iterator[Proxyd]:
    config = '[limits]\nhead_timeout = "500ms"\nconnect_timeout = "700ms"\n'
    proc = Proxyd(config=config, tmp_path=tmp_path)
    yield proc
    proc.stop()
    proc.assert_clean_log()


@pytest.mark.parametrize(
    "head",
    [
        b"GARBAGE\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET http://x/ HTTP/1.1\nHost: x\n\n",
        b"CONNECT example.org HTTP/1.1\r\n\r\n",
    ],
    ids=["no-version", "header-without-colon", "cl-and-te", "bare-lf", "connect-without-port"],
)
def test_malformed_request_gets_400_and_close(
    proxyd: Proxyd, origin: OriginServer, head: bytes
) -> None:
    assert status_of(exchange(proxyd, head)) == 400
    still_serves(proxyd, origin)


def test_oversized_head_gets_431(proxyd: Proxyd, origin: OriginServer) -> None:
    head = b"GET http://x/ HTTP/1.1\r\n" + b"X-Fill: " + b"a" * 70_000 + b"\r\n\r\n"
    assert status_of(exchange(proxyd, head)) == 431
    still_serves(proxyd, origin)


def test_slow_head_gets_408(short_timeouts: Proxyd, origin: OriginServer) -> None:
    # A slowloris client: one partial line and then nothing.
    answer = exchange(short_timeouts, b"GET http://x/ HTTP/1.1\r\nHost")
    assert status_of(answer) == 408
    still_serves(short_timeouts, origin)


def test_dns_failure_gets_502_naming_the_host(proxyd: Proxyd, origin: OriginServer) -> None:
    answer = exchange(proxyd, b"GET http://no-such-host.invalid/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 502
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert body.count(b"\n") == 1
    assert b"no-such-host.invalid" in body
    still_serves(proxyd, origin)


def test_connect_refused_gets_502(proxyd: Proxyd, origin: OriginServer) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    answer = exchange(proxyd, f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n".encode())
    assert status_of(answer) == 502
    assert b"refused" in answer
    still_serves(proxyd, origin)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose SYNs are dropped: a listener with a full accept queue never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


def test_connect_timeout_gets_504(
    short_timeouts: Proxyd, origin: OriginServer, unanswered_port: int
) -> None:
    req = f"GET http://127.0.0.1:{unanswered_port}/ HTTP/1.1\r\n\r\n".encode()
    assert status_of(exchange(short_timeouts, req)) == 504
    connect = f"CONNECT 127.0.0.1:{unanswered_port} HTTP/1.1\r\n\r\n".encode()
    assert status_of(exchange(short_timeouts, connect)) == 504
    still_serves(short_timeouts, origin)


def socks5_connect(proxy: Proxyd, host: bytes, port: int) -> bytes:
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(b"\x05\x01\x00")
        assert sock.recv(2) == b"\x05\x00"
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack("!H", port))
        return sock.recv(10)


def test_socks5_errors_get_their_reply_codes(proxyd: Proxyd, origin: OriginServer) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert socks5_connect(proxyd, b"127.0.0.1", port)[1] == 0x05  # connection refused
    assert socks5_connect(proxyd, b"no-such-host.invalid", 80)[1] == 0x04  # host unreachable
    with socket.create_connection(proxyd.address, timeout=10) as sock:
        sock.sendall(b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50")  # BIND
        assert sock.recv(2) == b"\x05\x00"
        assert sock.recv(10)[1] == 0x07  # command not supported
    still_serves(proxyd, origin)


def test_socks4_failure_gets_rejected_reply(proxyd: Proxyd, origin: OriginServer) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with socket.create_connection(proxyd.address, timeout=10) as sock:
        sock.sendall(b"\x04\x01" + struct.pack("!H", port) + bytes([127, 0, 0, 1]) + b"u\0")
        assert sock.recv(8)[1] == 0x5B
    still_serves(proxyd, origin)


REQUEST = (
    b"GET http://127.0.0.1:{port}/fuzz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"User-Agent: fuzz\r\nAccept: */*\r\nConnection: close\r\n\r\n"
)


@st.composite
def mutated_heads(draw: st.DrawFn) -> bytes:
    base = bytearray(REQUEST)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(base) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            base[pos] = draw(st.integers(0, 255))
        elif action == "insert":
            base[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del base[pos]
    return bytes(base)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxyd]:
    config = '[limits]\nhead_timeout = "300ms"\nconnect_timeout = "1s"\n'
    proc = Proxyd(config=config, tmp_path=tmp_path_factory.mktemp("fuzz"))
    yield proc
    proc.stop()
    proc.assert_clean_log()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(head=st.one_of(mutated_heads(), st.binary(min_size=1, max_size=300)))
def test_daemon_answers_random_and_mutated_heads_with_4xx_or_forwarding(
    fuzz_target: Proxyd, origin: OriginServer, head: bytes
) -> None:
    head = head.replace(b"{port}", str(origin.port).encode())
    if head[:1] in (b"\x04", b"\x05"):
        head = b"X" + head  # SOCKS has its own fuzzers; keep this one on the HTTP path
    answer = exchange(fuzz_target, head, read_timeout=15, half_close=True)
    if answer:
        status = status_of(answer)
        assert 400 <= status < 600 or status == 200, answer[:200]
    assert "internal error" not in fuzz_target.log_text()
