"""Reaching a destination: dialers (direct, desync, upstreams), the upstream set and its
health, the origin connection pool and the race of tentative attempts.
"""

from proxyd.outbound._desync import ROUTE, DesyncDialer, is_desync, send_first
from proxyd.outbound._dialers import Address, Connection, Dialer, DirectDialer, forbid_endpoints
from proxyd.outbound._doh_direct import ROUTE as DOH_ROUTE
from proxyd.outbound._doh_direct import HonestDirectDialer
from proxyd.outbound._origin_link import OriginLink, detach
from proxyd.outbound._pool import OriginPool, PoolKey
from proxyd.outbound._race import (
    AttemptFailed,
    Leg,
    RaceResult,
    dial_in_leg,
    run_race,
    spawn,
    take_answer,
)
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.outbound._upstreams import isolation_scope

__all__ = [
    "DOH_ROUTE",
    "ROUTE",
    "Address",
    "AttemptFailed",
    "Connection",
    "DesyncDialer",
    "Dialer",
    "DirectDialer",
    "HonestDirectDialer",
    "Leg",
    "OriginLink",
    "OriginPool",
    "PoolKey",
    "RaceResult",
    "UpstreamSet",
    "detach",
    "dial_in_leg",
    "forbid_endpoints",
    "is_desync",
    "isolation_scope",
    "run_race",
    "send_first",
    "spawn",
    "take_answer",
]
