"""What every connection handler shares: config, policy, router, pools and counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxyd.access._policy import AccessPolicy
from proxyd.config._config import Config
from proxyd.learning._stats import Stats
from proxyd.outbound._pool import OriginPool
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.routing._learned import LearnedRoutes
from proxyd.routing._router import Router


@dataclass(slots=True)
class Runtime:
    config: Config
    access: AccessPolicy
    router: Router
    pool: OriginPool
    upstreams: UpstreamSet
    learned: LearnedRoutes | None
    stats: Stats = field(default_factory=Stats)
    draining: bool = False
