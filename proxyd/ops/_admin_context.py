"""What the admin app reads of the daemon, and what makes the daemon unhealthy.

- ``AdminContext``: everything the app reads, as values and zero-argument callables so
  that a reload (new allow-list, upstreams, listeners) is seen at once; implements
  ``learning.MetricSources``. Built by the daemon with ``daemon_context``, or directly in
  tests.
- ``LearningService``: what the app needs of ``routing.LearnedRoutes`` (``table``,
  ``force(key, route)``, ``forget(key)``).
- ``health_problems(ctx) -> list[str]``: why the daemon is unhealthy (empty if it is not).
- ``daemon_context(server, learned) -> AdminContext``: the running daemon's context.

Apart from ``_admin`` (the listener) so that the lazily loaded app and the listener both
import it and not each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from proxyd.access import AccessPolicy
from proxyd.learning import DIRECT, DomainState, LearningTable, Stats, UpstreamHealth
from proxyd.mirror import MirrorStatus
from proxyd.outbound import DOH_ROUTE
from proxyd.outbound import ROUTE as DESYNC
from proxyd.resolver import Resolver

if TYPE_CHECKING:
    from proxyd.inbound import ProxyServer
    from proxyd.routing import LearnedRoutes

Address = tuple[str, int]


class LearningService(Protocol):
    @property
    def table(self) -> LearningTable: ...

    def force(self, key: str, route: str) -> DomainState: ...

    def forget(self, key: str) -> bool: ...

    def seed(self, key: str, route: str) -> DomainState | None: ...


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
    upstream_names: Callable[[], Sequence[str]] = tuple  # in order: imports fall back to the first
    explain: Callable[[str, int], Mapping[str, Any]] | None = None
    health: Callable[[], Iterable[str]] | None = None  # the daemon's own problems
    token: Callable[[], str | None] = lambda: None
    clock: Callable[[], float] = time.time
    admin_addresses: list[Address] = field(default_factory=list)  # set by AdminServer
    resolver: Callable[[], Resolver | None] = lambda: None  # replaced on reload: read live

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
        route_names=lambda: {DIRECT, DESYNC, DOH_ROUTE, *(u.name for u in rt.config.upstreams)},
        upstream_names=lambda: [u.name for u in rt.config.upstreams],
        explain=lambda host, port: rt.router.explain(host, port),
        token=lambda: rt.config.admin_token,
        resolver=lambda: server.resolver,
    )
