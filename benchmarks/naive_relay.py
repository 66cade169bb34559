"""A deliberately naive HTTP proxy, kept as a reference point — not how proxyd works.

``python -m benchmarks.naive_relay --listen 127.0.0.1:PORT``

It reads the first request head, connects to the host it names and from then on pipes the
connection blindly with the common ``StreamReader.read(65536)`` / ``write`` / ``drain`` loop
(the pattern of pproxy and mitmproxy that DESIGN §8 measures at 1.5-1.9 CPU s/GB):

- ``CONNECT host:port``: answers ``200`` and pipes;
- absolute-form ``GET http://host:port/path``: rewrites that first request line to origin-form
  and pipes. Every later request on the same client connection goes to the *first* origin,
  whatever host it names — the two-origins workload shows that as mismatches.

Uses uvloop when installed (as the "naive uvloop relay" figures in the issue did).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from urllib.parse import urlsplit

_HEAD_LIMIT = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


def _target(request_line: bytes) -> tuple[str, int, bytes] | None:
    """Return (host, port, first line to send upstream; empty for CONNECT) or None if unusable."""
    parts = request_line.split()
    if len(parts) != 3:
        return None
    method, target, version = parts
    if method == b"CONNECT":
        host, _, port = target.decode().rpartition(":")
        return host.strip("[]"), int(port), b""
    split = urlsplit(target.decode())
    if split.scheme != "http" or not split.hostname:
        return None
    path = split.path or "/"
    if split.query:
        path += "?" + split.query
    origin_line = b" ".join((method, path.encode(), version)) + b"\r\n"
    return split.hostname, split.port or 80, origin_line


async def _serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    try:
        head = await client_r.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        client_w.close()
        return
    first_line, _, rest = head.partition(b"\r\n")
    target = _target(first_line)
    if target is None:
        client_w.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        client_w.close()
        return
    host, port, origin_line = target
    try:
        server_r, server_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        client_w.close()
        return
    if origin_line:
        server_w.write(origin_line + rest)
    else:
        client_w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))


async def _main(host: str, port: int) -> None:
    server = await asyncio.start_server(_serve, host, port, limit=_HEAD_LIMIT, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(host, int(port)))
    else:
        uvloop.run(_main(host, int(port)))


if __name__ == "__main__":
    main()
