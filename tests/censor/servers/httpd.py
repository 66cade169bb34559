"""HTTP servers of the censorship lab, run inside a namespace by netlab.py.

    httpd.py --log FILE [--cert PEM --key PEM] [--slow ADDR --slow-delay S]
             [--origin ADDR ...] [--mirror ADDR ...] [--block-page ADDR] [--redirect ADDR]

- ``--origin ADDR``: an origin on ADDR:80 (and ADDR:443 with ``--cert``/``--key``) that
  answers ``origin HOST PATH`` (``/bytes/N``: N bytes of a repeated 0-9a-f pattern, as is
  freeze.example's front page, 64 KiB; ``/ranged/N`` the same with an ETag, honouring
  ``Range``; ``/alt-svc/...`` also advertises HTTP/3 on port
  443); on a ``--slow`` address only after ``--slow-delay``.
- ``--mirror ADDR``: a mirror site on ADDR:80 (and 443), see ``_mirror``.
- ``--block-page ADDR``: ADDR:80 answers every request with the ISP's block page.
- ``--redirect ADDR``: ADDR:80 answers every request with a 302 to the block page.

Every request is appended to ``--log`` as one JSON object per line, written before the
answer: role, peer, local, scheme, method, host (without port), path.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lab_mirror import BIG_BLOCK, BIG_BLOCKS, MIRROR_CSS, mirror_page
from lab_sites import BLOCK_PAGE_TEXT, REDIRECT_LOCATION

FREEZE_HOST = "freeze.example"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _logged(role: str, log: TextIO, answer: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        local = transport.get_extra_info("sockname") if transport else None
        record = {
            "role": role,
            "peer": peer[0] if peer else "",
            "local": local[0] if local else "",
            "scheme": request.scheme,
            "method": request.method,
            "host": request.host.rsplit(":", 1)[0] if request.host else "",
            "path": request.raw_path,
        }
        log.write(json.dumps(record) + "\n")
        log.flush()
        return await answer(request)

    return handle


def _origin(slow_addresses: set[str], slow_delay: float) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname and sockname[0] in slow_addresses:
            await asyncio.sleep(slow_delay)
        host = request.host.rsplit(":", 1)[0]
        size = request.path.removeprefix("/bytes/")
        if size != request.path and size.isdigit():
            return web.Response(body=_pattern(int(size)), content_type="application/octet-stream")
        size = request.path.removeprefix("/ranged/")
        if size != request.path and size.isdigit():
            return _ranged(request, _pattern(int(size)))
        if host == FREEZE_HOST and request.path == "/":
            # A front page big enough that a re-test's GET / shows whether a freeze is on.
            return web.Response(body=_pattern(64 * 1024), content_type="text/plain")
        # /alt-svc/...: advertise HTTP/3 on 443, so a browser tries QUIC on its next visit.
        alt_svc = {"Alt-Svc": 'h3=":443"; ma=86400'} if request.path.startswith("/alt-svc/") else {}
        return web.Response(text=f"origin {host} {request.raw_path}\n", headers=alt_svc)

    return answer


def _ranged(request: web.Request, body: bytes) -> web.Response:
    """``/ranged/N``: the pattern with a validator, honouring ``Range: bytes=A-`` (and
    ``If-Range``: a different validator gets the whole body, RFC 9110 13.1.5); the
    validator changes with ``?v=...`` so a test can make it differ between requests."""
    etag = f'"{len(body)}-{request.query.get("v", "1")}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Last-Modified": _LAST_MODIFIED}
    wanted = request.headers.get("Range", "")
    if_range = request.headers.get("If-Range")
    start = wanted.removeprefix("bytes=").removesuffix("-")
    if wanted.startswith("bytes=") and start.isdigit() and if_range in (None, etag):
        first = int(start)
        if first >= len(body):
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
        headers["Content-Range"] = f"bytes {first}-{len(body) - 1}/{len(body)}"
        rest = body[first:]
        return web.Response(status=206, body=rest, headers=headers, content_type="text/plain")
    return web.Response(body=body, headers=headers, content_type="text/plain")


_LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"


def _pattern(size: int) -> bytes:
    """``/bytes/N``: N bytes a client can check without the server's help."""
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


async def _mirror(request: web.Request) -> web.StreamResponse:
    """``/page.html`` (links), ``/style.css``, ``/gzip.html`` (the page, gzip-encoded
    whatever the client accepts), ``/big.html`` (BIG_BLOCKS * BIG_BLOCK streamed,
    chunked), ``/moved`` (302 to the mirror's /page.html), ``/cookie`` (Set-Cookie for
    the mirror's domain), ``/echo`` (the method, length and SHA-256 of the request
    body), ``/fail`` (503); anything else what an origin answers."""
    host = request.host.rsplit(":", 1)[0]
    path = request.path
    if path == "/page.html":
        return web.Response(text=mirror_page(host, path), content_type="text/html")
    if path == "/style.css":
        return web.Response(text=MIRROR_CSS, content_type="text/css")
    if path == "/gzip.html":
        body = gzip.compress(mirror_page(host, path).encode())
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/html; charset=utf-8"}
        return web.Response(body=body, headers=headers)
    if path == "/big.html":
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(BIG_BLOCKS):
            await response.write(BIG_BLOCK)
        await response.write_eof()
        return response
    if path == "/moved":
        return web.Response(status=302, headers={"Location": f"http://{host}/page.html"})
    if path == "/cookie":
        cookie = "session=1; Domain=.blog-mirror.example; Path=/; HttpOnly"
        return web.Response(text="cookie\n", headers={"Set-Cookie": cookie})
    if path == "/echo":
        body = await request.read()
        digest = hashlib.sha256(body).hexdigest()
        return web.Response(text=f"{request.method} {len(body)} {digest}\n")
    if path == "/fail":
        return web.Response(status=503, text="mirror overloaded\n")
    return web.Response(text=f"origin {host} {request.raw_path}\n")


async def _block_page(request: web.Request) -> web.StreamResponse:
    return web.Response(text=f"<html><body><h1>{BLOCK_PAGE_TEXT}</h1></body></html>\n")


async def _redirect(request: web.Request) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": REDIRECT_LOCATION})


def _app(handler: Handler) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def serve(args: argparse.Namespace, log: TextIO) -> None:
    tls: ssl.SSLContext | None = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    origin = _origin(set(args.slow), args.slow_delay)
    sites: list[tuple[Handler, str, int, ssl.SSLContext | None]] = []
    for address in args.origin:
        sites.append((_logged("origin", log, origin), address, 80, None))
        if tls is not None:
            sites.append((_logged("origin", log, origin), address, 443, tls))
    for address in args.mirror:
        sites.append((_logged("mirror", log, _mirror), address, 80, None))
        if tls is not None:
            sites.append((_logged("mirror", log, _mirror), address, 443, tls))
    if args.block_page:
        sites.append((_logged("block-page", log, _block_page), args.block_page, 80, None))
    if args.redirect:
        sites.append((_logged("redirect", log, _redirect), args.redirect, 80, None))
    for handler, address, port, context in sites:
        runner = web.AppRunner(_app(handler), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, address, port, ssl_context=context).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--origin", action="append", default=[])
    parser.add_argument("--mirror", action="append", default=[])
    parser.add_argument("--slow", action="append", default=[])
    parser.add_argument("--slow-delay", type=float, default=0.8)
    parser.add_argument("--block-page")
    parser.add_argument("--redirect")
    args = parser.parse_args()
    with Path(args.log).open("a") as log:
        asyncio.run(serve(args, log))


if __name__ == "__main__":
    main()
