"""What every connection handler shares: config, policy, router, pools and counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxyd.access import AccessPolicy
from proxyd.config import Config
from proxyd.learning import Stats
from proxyd.outbound import OriginPool, UpstreamSet
from proxyd.resolver import Resolver
from proxyd.routing import LearnedRoutes, Router


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
    resolver: Resolver | None = None
