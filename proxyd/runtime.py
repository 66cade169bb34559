"""What every connection handler shares: config, policy, router, pools and counters."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from proxyd.access import AccessPolicy
from proxyd.config import Config
from proxyd.pool import OriginPool
from proxyd.routing import Router


@dataclass(slots=True)
class Stats:
    """Plain ints bumped by the control plane; exported in batches, never per chunk."""

    connections: int = 0
    active_connections: int = 0
    active_tunnels: int = 0
    requests: int = 0
    dial_failures: int = 0
    rejected: int = 0
    bytes_up: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_down: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add_bytes(self, route: str, up: int, down: int) -> None:
        self.bytes_up[route] += up
        self.bytes_down[route] += down


@dataclass(slots=True)
class Runtime:
    config: Config
    access: AccessPolicy
    router: Router
    pool: OriginPool
    stats: Stats = field(default_factory=Stats)
    draining: bool = False
