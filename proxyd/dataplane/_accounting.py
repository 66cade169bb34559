"""One record per client request, filled in as it goes and finished exactly once.

Finishing feeds ``Stats`` (the request counter by protocol, route and outcome, and the
bytes relayed for it, tunnels included) and, when ``access_log = true``, writes one line on the
``proxyd.access._policy`` logger. Nothing here runs per chunk: a tunnel's byte counts arrive
once, when it closes.

Public API:

- ``RequestRecord(protocol, client_ip, host="-", port=0)``: ``route``, ``outcome``
  (one of ``stats.OUTCOMES``; "aborted" until someone says otherwise), ``up``/``down``
  bytes seen from the client's side, ``connect_seconds`` and ``first_byte_seconds`` of
  the route that carried it; ``started`` is taken at creation.
- ``NO_ROUTE``: the route label of a request that never got one.
- ``outcome_for(err) -> str``: the outcome of a request that failed with ``err``.
- ``finish(rt, record)``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxyd.errors import DialError, Forbidden, UpstreamError, UpstreamUnavailable

if TYPE_CHECKING:
    from proxyd.runtime import Runtime

access_log = logging.getLogger("proxyd.access")

NO_ROUTE = "none"


@dataclass(slots=True)
class RequestRecord:
    protocol: str
    client_ip: str
    host: str = "-"
    port: int = 0
    route: str = NO_ROUTE
    outcome: str = "aborted"
    up: int = 0
    down: int = 0
    connect_seconds: float | None = None
    first_byte_seconds: float | None = None
    started: float = field(default_factory=time.monotonic)


def outcome_for(err: DialError) -> str:
    if isinstance(err, Forbidden):
        return "rejected"
    if isinstance(err, UpstreamError | UpstreamUnavailable):
        return "upstream_error"
    return "dial_error"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def finish(rt: Runtime, record: RequestRecord) -> None:
    stats = rt.stats
    stats.request_done(record.protocol, record.route, record.outcome)
    if record.up or record.down:
        stats.add_bytes(record.route, record.up, record.down)
    if rt.config.access_log:
        r = record
        access_log.info(
            "%s %s %s:%d route=%s outcome=%s up=%d down=%d connect=%s first_byte=%s total=%s",
            r.client_ip,
            r.protocol,
            r.host,
            r.port,
            r.route,
            r.outcome,
            r.up,
            r.down,
            _ms(r.connect_seconds),
            _ms(r.first_byte_seconds),
            _ms(time.monotonic() - r.started),
        )
