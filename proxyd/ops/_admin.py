"""The admin listener: metrics, health, the learned table, the PAC file and a status page.

An aiohttp app (``proxyd.ops._admin_app``) on its own listener (default 127.0.0.1:9477),
made on the first connection: until someone asks, the daemon does not load aiohttp or
prometheus-client, about half of its idle memory. It reveals browsing history, so it
answers only clients the proxy itself would serve (loopback or the ``allow`` networks),
optionally only with a bearer token, and only under Host names that cannot be a
DNS-rebinding attack (IP literals and local names such as ``router.lan``).

Routes: ``GET /metrics``, ``GET /healthz`` (200 "ok", or 503 with one reason per line),
``GET /api/routes?state=&q=``, ``PUT /api/routes/{domain}`` with ``{"route": NAME}``
(force), ``DELETE /api/routes/{domain}`` (forget), ``GET /api/upstreams``,
``GET /api/explain?host=[&port=]``, ``GET /api/mirrors`` (each mirror, its health and
what happens to HTTPS for its hosts), ``GET /proxy.pac``, ``GET /`` (status page).

Public API (``AdminContext`` and ``daemon_context`` are in ``_admin_context``):

- ``AdminServer(ctx)``: ``await start(sock)`` on a bound listening socket (logs
  "admin listening on HOST:PORT" at once; the app starts with the first connection),
  ``addresses``, ``await stop()``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from proxyd.ops._admin_context import AdminContext

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("proxyd.admin")

Address = tuple[str, int]


class AdminServer:
    """The admin listener, whose aiohttp app is made on its first connection.

    Until then the bound socket only waits in the loop's reader set: a connection stays
    in the listen backlog while ``admin_app`` is imported and the app started on the same
    socket, then is served like any other.
    """

    def __init__(self, ctx: AdminContext) -> None:
        self._ctx = ctx
        self._sock: socket.socket | None = None
        self._starting: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock``, a bound listening socket (ours or systemd's); takes it over."""
        sock.setblocking(False)
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self._ctx.admin_addresses[:] = [(str(host), int(port))]
        asyncio.get_running_loop().add_reader(sock.fileno(), self._first_connection)
        log.info("admin listening on %s:%d", host, port)

    def _first_connection(self) -> None:
        # Called by the loop while a connection waits; removing the reader first means
        # connections arriving together start the app once.
        assert self._sock is not None
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._starting = asyncio.ensure_future(self._start_app(self._sock))

    async def _start_app(self, sock: socket.socket) -> None:
        try:
            from aiohttp import web

            from proxyd.ops._admin_app import make_app

            runner = web.AppRunner(make_app(self._ctx), access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            self._runner = runner
            await web.SockSite(runner, sock).start()
            log.info("admin app started by its first connection")
        except Exception:
            log.exception("admin listener failed to start; closing it")
            sock.close()

    @property
    def addresses(self) -> list[Address]:
        return list(self._ctx.admin_addresses)

    async def stop(self) -> None:
        if self._sock is None:
            return
        if self._starting is None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        else:
            await self._starting
        if self._runner is not None:
            await self._runner.cleanup()  # closes the socket with the site
        self._sock.close()
        self._sock = None
