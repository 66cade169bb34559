"""An answer cut mid-body on a route with nowhere to resume it (a local origin: decided
direct, no upstream): the client gets the head and the bytes that came, then a closed
connection. Its Content-Length tells it the answer is short; proxyd never appends an
error page or anything else to it. A small body is the data plane's (it forwards as bytes
come), a large one the control plane's (it splices, then asks for a resume and finds no
route)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from tests.support.proc import Proxyd

LENGTH_SMALL, CUT_SMALL = 20_000, 7_000
LENGTH_LARGE, CUT_LARGE = 1_000_000, 300_000


def _body(length: int) -> bytes:
    return (b"0123456789abcdef" * (length // 16 + 1))[:length]


class _CuttingOrigin:
    """A keep-alive origin: ``/warm`` is a whole answer; ``/LENGTH/CUT`` has a
    Content-Length of LENGTH and an ETag, sends CUT bytes of the body, then resets."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                self.connections += 1
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        buf = b""
        with conn, contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                path = head.split(b" ")[1]
                if path == b"/warm":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm")
                    continue
                _, length, cut = path.split(b"/")
                head = f'HTTP/1.1 200 OK\r\nContent-Length: {int(length)}\r\nETag: "v1"\r\n\r\n'
                conn.sendall(head.encode() + _body(int(length))[: int(cut)])
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def cutting() -> Iterator[_CuttingOrigin]:
    server = _CuttingOrigin()
    yield server
    server.close()


def _fetch_after_warm(proxyd: Proxyd, base: str, path: str) -> bytes:
    """On one client connection: a whole answer (its origin connection is pooled, so the
    data plane serves the next request), then ``path``; what follows the first answer,
    until proxyd closes the connection."""
    warm = b"HTTP/1.1 200 OK\r\n"
    got = b""
    with socket.create_connection(proxyd.address, timeout=10) as sock:
        sock.sendall(f"GET {base}/warm HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        while not got.endswith(b"warm"):
            data = sock.recv(4096)
            assert data
            got += data
        assert got.startswith(warm)
        got = b""
        sock.sendall(f"GET {base}{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                got += data
    return got


@pytest.mark.parametrize(("length", "cut"), [(LENGTH_SMALL, CUT_SMALL), (LENGTH_LARGE, CUT_LARGE)])
def test_a_cut_answer_with_nowhere_to_resume_ends_with_a_clean_close(
    proxyd: Proxyd, cutting: _CuttingOrigin, length: int, cut: int
) -> None:
    answer = _fetch_after_warm(proxyd, f"http://127.0.0.1:{cutting.port}", f"/{length}/{cut}")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {length}".encode() in head
    assert body == _body(length)[: len(body)]  # a prefix of the answer, nothing more
    assert 0 < len(body) <= cut
    assert cutting.connections == 1  # both answers on the pooled origin connection
    if length > 64 * 1024:  # handed to the control plane, which found no route to resume on
        proxyd.wait_for_log(f"an answer cut at byte {len(body)} of {length} closes: no route left")
