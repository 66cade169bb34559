"""What every connection handler shares: config, policy, router, pools and counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxyd.access import AccessPolicy
from proxyd.config import Config
from proxyd.learned import LearnedRoutes
from proxyd.pool import OriginPool
from proxyd.routing import Router
from proxyd.stats import Stats
from proxyd.upstream_set import UpstreamSet


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
