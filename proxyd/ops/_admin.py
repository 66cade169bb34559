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

Public API:

- ``AdminContext``: everything the app reads, as values and zero-argument callables so
  that a reload (new allow-list, upstreams, listeners) is seen at once; implements
  ``stats.MetricSources``. Built by the daemon with ``daemon_context``, or directly in
  tests.
- ``LearningService``: what the app needs of ``learned.LearnedRoutes`` (``table``,
  ``force(key, route)``, ``forget(key)``).
- ``health_problems(ctx) -> list[str]``: why the daemon is unhealthy (empty if it is not).
- ``AdminServer(ctx)``: ``await start(sock)`` on a bound listening socket (logs
  "admin listening on HOST:PORT" at once; the app starts with the first connection),
  ``addresses``, ``await stop()``.
- ``daemon_context(server, learned) -> AdminContext``: the running daemon's context.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from proxyd.access._policy import AccessPolicy
from proxyd.learning._stats import Stats, UpstreamHealth
from proxyd.learning._table import DIRECT, DomainState, LearningTable
from proxyd.mirror._mirror import MirrorStatus
from proxyd.outbound._desync import ROUTE as DESYNC

if TYPE_CHECKING:
    from aiohttp import web

    from proxyd.inbound._server import ProxyServer
    from proxyd.routing._learned import LearnedRoutes

log = logging.getLogger("proxyd.admin")

Address = tuple[str, int]


class LearningService(Protocol):
    @property
    def table(self) -> LearningTable: ...

    def force(self, key: str, route: str) -> DomainState: ...

    def forget(self, key: str) -> bool: ...


_loopback_only = AccessPolicy((), {}).client_allowed


def _nothing() -> list[UpstreamHealth]:
    return []


@dataclass
class AdminContext:
    stats: Stats
    proxy_addresses: Callable[[], Sequence[Address]]
    started_at: float = field(default_factory=time.time)
    client_allowed: Callable[[str], bool] = _loopback_only
    learning: LearningService | None = None
    upstream_status: Callable[[], Iterable[UpstreamHealth]] = _nothing
    mirror_status: Callable[[], Sequence[MirrorStatus]] = list
    route_names: Callable[[], Collection[str]] = lambda: (DIRECT,)  # valid for PUT
    explain: Callable[[str, int], Mapping[str, Any]] | None = None
    health: Callable[[], Iterable[str]] | None = None  # the daemon's own problems
    token: Callable[[], str | None] = lambda: None
    clock: Callable[[], float] = time.time
    admin_addresses: list[Address] = field(default_factory=list)  # set by AdminServer

    # -- stats.MetricSources --------------------------------------------------------------

    def learned_entries(self) -> Sequence[DomainState]:
        return self.learning.table.snapshot() if self.learning is not None else []

    def learning_paused(self) -> bool:
        return self.learning is not None and self.learning.table.is_paused(self.clock())

    def upstream_health(self) -> Sequence[UpstreamHealth]:
        return list(self.upstream_status())


def health_problems(ctx: AdminContext) -> list[str]:
    problems = [] if ctx.proxy_addresses() else ["the proxy is not listening"]
    upstreams = ctx.upstream_health()
    if upstreams and not any(u.up for u in upstreams):
        problems.append("every upstream is down: " + ", ".join(u.name for u in upstreams))
    if ctx.stats.last_state_save_ok is False:
        problems.append("the last state save failed")
    if ctx.learning_paused():
        problems.append("learning paused: the network looks down")
    if ctx.health is not None:
        problems.extend(ctx.health())
    return problems


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


def daemon_context(server: ProxyServer, learned: LearnedRoutes | None) -> AdminContext:
    """The context of the running daemon: every callable reads the live runtime.

    Explanations are for port 443, where browsers send almost everything.
    """
    rt = server.rt

    return AdminContext(
        stats=rt.stats,
        proxy_addresses=lambda: server.proxy_addresses,
        client_allowed=lambda ip: rt.access.client_allowed(ip),
        learning=learned,
        upstream_status=lambda: rt.upstreams.status(),
        mirror_status=lambda: server.mirrors.status([u.name for u in rt.upstreams.dialers()]),
        route_names=lambda: {DIRECT, DESYNC, *(u.name for u in rt.config.upstreams)},
        explain=lambda host, port: rt.router.explain(host, port),
        token=lambda: rt.config.admin_token,
    )
