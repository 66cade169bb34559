"""Answers as a browser needs them, on a kept-alive connection the data plane serves: bodyless
answers (1xx, 204, 304, HEAD) framed right with the next request still working, and a
chunked stream (server-sent events, long poll) reaching the client chunk by chunk."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import IO

import pytest

from tests.support.proc import Proxyd

_ANSWERS = {
    b"/warm": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm",
    b"/nocontent": b"HTTP/1.1 204 No Content\r\nX-Seen: yes\r\n\r\n",
    # A 304 may announce the length of the representation it stands for: it has no body.
    b"/notmod": b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1024\r\n\r\n',
    b"/head": b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
    b"/early": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    ),
}


class _ScriptedOrigin:
    """Keep-alive origin answering each path as scripted; ``/stream`` sends one chunk, then
    the rest only once the test says the first one arrived through the proxy."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.first_chunk_seen = threading.Event()
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                self.connections += 1
                threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
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
                if path == b"/stream":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n"
                    )
                    if not self.first_chunk_seen.wait(10):
                        return
                    conn.sendall(b"9\r\ndata: 2\n\n\r\n0\r\n\r\n")
                else:
                    conn.sendall(_ANSWERS[path])

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[_ScriptedOrigin]:
    server = _ScriptedOrigin()
    yield server
    server.close()


def _read_answer(
    reader: IO[bytes], *, bodyless: bool = False
) -> tuple[bytes, dict[str, str], bytes]:
    status = reader.readline()
    fields: dict[str, str] = {}
    while (line := reader.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        fields[name.lower()] = value.strip()
    length = 0 if bodyless else int(fields.get("content-length", "0"))
    return status, fields, reader.read(length)


def test_bodyless_and_interim_answers_keep_the_connection_usable(
    proxyd: Proxyd, scripted: _ScriptedOrigin
) -> None:
    base = f"http://127.0.0.1:{scripted.port}"
    with socket.create_connection(proxyd.address, timeout=10) as sock:
        reader = sock.makefile("rb")

        def ask(path: str, method: str = "GET") -> None:
            sock.sendall(f"{method} {base}{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

        ask("/warm")  # fills the pool: what follows is served by the data plane
        assert _read_answer(reader)[2] == b"warm"
        ask("/nocontent")
        status, fields, _ = _read_answer(reader, bodyless=True)
        assert status.startswith(b"HTTP/1.1 204") and fields["x-seen"] == "yes"
        ask("/notmod")
        status, fields, _ = _read_answer(reader, bodyless=True)
        assert status.startswith(b"HTTP/1.1 304") and fields["etag"] == '"v1"'
        ask("/head", method="HEAD")
        status, fields, _ = _read_answer(reader, bodyless=True)
        assert status.startswith(b"HTTP/1.1 200") and fields["content-length"] == "5000"
        ask("/early")
        status, fields, _ = _read_answer(reader, bodyless=True)
        assert status.startswith(b"HTTP/1.1 103") and "preload" in fields["link"]
        status, _, body = _read_answer(reader)
        assert status.startswith(b"HTTP/1.1 200") and body == b"hello"
        ask("/warm")
        assert _read_answer(reader)[2] == b"warm"
    # Every answer came over the one origin connection: none was misframed into a reset.
    assert scripted.connections == 1


def test_chunked_stream_reaches_the_client_chunk_by_chunk(
    proxyd: Proxyd, scripted: _ScriptedOrigin
) -> None:
    base = f"http://127.0.0.1:{scripted.port}"
    with socket.create_connection(proxyd.address, timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(f"GET {base}/warm HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert _read_answer(reader)[2] == b"warm"
        sock.sendall(f"GET {base}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, fields, _ = _read_answer(reader, bodyless=True)
        assert status.startswith(b"HTTP/1.1 200") and fields["transfer-encoding"] == "chunked"
        # The origin holds the rest back until this first event has come through.
        assert reader.readline() == b"9\r\n"
        assert reader.read(11) == b"data: 1\n\n\r\n"
        scripted.first_chunk_seen.set()
        assert reader.read(19) == b"9\r\ndata: 2\n\n\r\n0\r\n\r\n"
        sock.sendall(f"GET {base}/warm HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert _read_answer(reader)[2] == b"warm"
