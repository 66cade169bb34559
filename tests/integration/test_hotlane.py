"""The plain-HTTP hot path on kept-alive connections: what it hands over, what it keeps."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import IO

import pytest

from tests.support.origin import OriginServer
from tests.support.proc import Proxyd


def _read_answer(reader: IO[bytes]) -> tuple[bytes, bytes]:
    """Status line and body of one Content-Length answer from a ``makefile('rb')``."""
    status = reader.readline()
    length = 0
    while (line := reader.readline()) != b"\r\n":
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, reader.read(length)


def test_pipelined_requests_are_answered_in_order(
    proxyd: Proxyd, origin: OriginServer, origin_b: OriginServer
) -> None:
    heads = b"".join(
        f"GET {target.url}/whoami HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for target in (origin, origin_b, origin, origin_b)
    )
    with socket.create_connection(proxyd.address, timeout=10) as sock:
        sock.sendall(heads)
        reader = sock.makefile("rb")
        bodies = [_read_answer(reader)[1] for _ in range(4)]
    assert bodies == [b"origin-a", b"origin-b", b"origin-a", b"origin-b"]


def test_large_body_then_small_one_on_the_same_connection(
    proxyd: Proxyd, origin: OriginServer
) -> None:
    # 1 MiB is past what the hot path copies itself: the coroutine splices it, then the
    # connection comes back to the hot path for the next request.
    size = 1 << 20
    with socket.create_connection(proxyd.address, timeout=10) as sock:
        reader = sock.makefile("rb")
        for path, want in ((f"/stream?size={size}", b"x" * size), ("/whoami", b"origin-a")):
            sock.sendall(f"GET {origin.url}{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, body = _read_answer(reader)
            assert status.startswith(b"HTTP/1.1 200"), status
            assert body == want


class _OneShotOrigin:
    """Answers each connection's first request with keep-alive, then closes it anyway,
    as origins do when their idle keep-alive timeout expires."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                self.connections += 1
                with conn:
                    buf = b""
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    body = f"answer {self.connections}".encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def one_shot_origin() -> Iterator[_OneShotOrigin]:
    server = _OneShotOrigin()
    yield server
    server.close()


def test_origin_closing_a_kept_connection_costs_the_client_nothing(
    proxyd: Proxyd, one_shot_origin: _OneShotOrigin
) -> None:
    url = f"http://127.0.0.1:{one_shot_origin.port}/"
    with socket.create_connection(proxyd.address, timeout=10) as sock:
        reader = sock.makefile("rb")
        for i in range(1, 6):
            sock.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, body = _read_answer(reader)
            assert status.startswith(b"HTTP/1.1 200"), status
            assert body == f"answer {i}".encode()
    assert one_shot_origin.connections == 5
