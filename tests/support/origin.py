"""Real origin servers on loopback, each in its own thread with its own event loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import threading
from pathlib import Path

from aiohttp import web


def _origin_app(name: str) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from {name} {request.path_qs}\n")

    async def whoami(request: web.Request) -> web.Response:
        return web.Response(text=name)

    async def echo(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        total = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            total += len(chunk)
        return web.Response(text=f"{total} {digest.hexdigest()}")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(int(request.query.get("n", "50"))):
            await resp.write(f"chunk {i}\n".encode())
        await resp.write_eof()
        return resp

    async def peer(request: web.Request) -> web.Response:
        # The proxy's side of this connection: equal ports mean a reused connection.
        peername = request.transport.get_extra_info("peername") if request.transport else None
        return web.Response(text=str(peername[1] if peername else ""))

    async def headers(request: web.Request) -> web.Response:
        return web.json_response({k: v for k, v in request.headers.items()})

    async def stream(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        block = b"x" * 65536
        while size:
            n = min(size, len(block))
            await resp.write(block[:n])
            size -= n
        return resp

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/whoami", whoami)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/headers", headers)
    app.router.add_get("/peer", peer)
    app.router.add_get("/stream", stream)
    app.router.add_route("*", "/{tail:.*}", hello)
    return app


class OriginServer:
    """An aiohttp origin on 127.0.0.1:<free port>, optionally TLS, in a background thread."""

    def __init__(self, name: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.name = name
        self._ssl = ssl_context
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("origin did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(_origin_app(self.name), access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._ssl)
        self._loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class SendfileOrigin:
    """Answers every request with ``size`` bytes of a sparse file via sendfile (bulk tests).

    aiohttp would spend more CPU producing a GiB than the proxy spends relaying it.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.size = size
        with open(path, "wb") as f:
            f.truncate(size)
        self._path = path
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, open(self._path, "rb") as f:
            try:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {self.size}\r\n"
                conn.sendall((head + "Connection: close\r\n\r\n").encode())
                offset = 0
                while offset < self.size:
                    offset += os.sendfile(conn.fileno(), f.fileno(), offset, self.size - offset)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass
            except OSError:
                return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._sock.close()


class EchoServer:
    """A TCP echo server (threads): a tunnel target whose end the test controls."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                return

    def stop(self) -> None:
        self._sock.close()
