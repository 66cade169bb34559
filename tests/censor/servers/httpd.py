"""HTTP servers of the censorship lab, run inside a namespace by netlab.py.

    httpd.py --log FILE [--cert PEM --key PEM] [--slow ADDR --slow-delay S]
             [--origin ADDR ...] [--block-page ADDR] [--redirect ADDR]

- ``--origin ADDR``: an origin on ADDR:80 (and ADDR:443 with ``--cert``/``--key``) that
  answers ``origin HOST PATH``; on a ``--slow`` address only after ``--slow-delay``.
- ``--block-page ADDR``: ADDR:80 answers every request with the ISP's block page.
- ``--redirect ADDR``: ADDR:80 answers every request with a 302 to the block page.

Every request is appended to ``--log`` as one JSON object per line, written before the
answer: role, peer, local, scheme, method, host (without port), path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lab_sites import BLOCK_PAGE_TEXT, REDIRECT_LOCATION

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
        return web.Response(text=f"origin {host} {request.raw_path}\n")

    return answer


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
    parser.add_argument("--slow", action="append", default=[])
    parser.add_argument("--slow-delay", type=float, default=0.8)
    parser.add_argument("--block-page")
    parser.add_argument("--redirect")
    args = parser.parse_args()
    with Path(args.log).open("a") as log:
        asyncio.run(serve(args, log))


if __name__ == "__main__":
    main()
