"""Counters the control plane bumps: plain ints and dicts, read by ``metrics`` at scrape time.

Nothing here is touched per chunk of relayed data: the data plane reports its byte counts
once, when a tunnel closes, and a plain HTTP request once, when it ends. Each call is a
dict update or two (a histogram observation is a bisect and two additions), so keeping
statistics costs the same with or without a Prometheus server scraping them.

Public API (every label value must come from a small fixed set, never a domain or a
client address: ``route`` is "direct", an upstream or mirror name, or "none" when no
route was chosen):

- ``Stats()`` with these methods:
  - ``connection_opened(protocol)`` / ``connection_closed(protocol)``: a client connection
    whose first byte chose ``protocol`` ("http", "socks5", "socks4") started or ended.
  - ``connection_refused(reason)``: a client was turned away ("limit": a connection
    limit, "not_allowed": outside ``allow``, "auth": no or wrong proxy credentials).
  - ``limit_hit(limit)``: a configured limit stopped a client; ``limit`` is the name of
    its config key ("max_connections", "max_connections_per_client", "max_head_bytes",
    "max_headers", "max_line", "head_timeout", "idle_timeout") or "auth_failures".
  - ``request_done(protocol, route, outcome)``: one request finished (a tunnel when it
    closes); ``protocol`` is "http" (absolute-form), "connect", "socks5" or "socks4";
    ``outcome`` is one of ``OUTCOMES``.
  - ``tunnel_opened(route)`` / ``tunnel_closed(route)``: a tunnel was committed to the
    data plane / ended.
  - ``add_bytes(route, up, down)``: bytes relayed for one request (up: client to server,
    down: server to client), reported once when it ends.
  - ``dial_done(route, outcome, seconds)``: a connection attempt for ``route`` ended;
    ``outcome`` is "ok" or a ``DialError.reason``; only successful attempts enter the
    connect latency histogram (timeouts would only measure the timeout setting).
  - ``first_byte(route, seconds)``: time from sending the client's first bytes to the
    server's first answer byte.
  - ``detection(reason)``: evidence of blocking (a ``detect.Reason`` value).
  - ``retest_done(result)``: an out-of-band re-test ended ("ok" or "blocked").
  - ``outage_check(result)``: the outage gate settled ("censorship": a canary or a direct
    success said the network works; "outage": the canary failed too; "no_canary":
    paused with none to ask).
  - ``state_saved(ok)``, ``config_reloaded(ok)``.
- ``NullStats()``: the same interface for ``metrics = false``; the per-connection and
  per-request methods do nothing (the rare housekeeping ones still count, health
  checks read them). ``enabled`` is False.
- Read-only totals kept by those methods, for the status page and health checks:
  ``connections``, ``active_connections``, ``active_tunnels``, ``requests``,
  ``dial_failures``, ``rejected``, ``bytes_up`` / ``bytes_down`` (per route),
  ``last_state_save_ok`` and ``last_config_reload_ok`` (None before the first attempt).
- ``OUTCOMES``: "ok"; "rejected" (policy: a reject rule, a forbidden destination);
  "client_error" (a malformed or oversized request); "dial_error" (no route reached the
  destination, or it answered with garbage); "upstream_error" (the upstream proxies
  themselves failed); "aborted" (a side went away mid-exchange).
- ``Histogram``: fixed buckets (``bounds``, per-bucket ``counts`` with a final +Inf
  bucket, ``sum``, ``count``); ``observe(value)``, ``cumulative()``.
- ``LATENCY_BUCKETS``: the bucket bounds of both latency histograms, in seconds.
- ``MetricSources``: what a scrape reads: ``stats`` plus live views of the learned table
  (``learned_entries()``, ``learning_paused()``) and of upstream health
  (``upstream_health()``). ``admin.AdminContext`` implements it. Defined here rather than
  in ``metrics`` so that the daemon can name it without loading prometheus-client, which
  only a first admin request does.
- ``UpstreamHealth``: one upstream's health as a scrape and the status page read it
  (``name``, ``up``, ``latency`` in seconds or None, ``last_error``), the shape of
  ``upstream_set.UpstreamStatus`` (duck-typed).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxyd.learning._table import DomainState

OUTCOMES = ("ok", "rejected", "client_error", "dial_error", "upstream_error", "aborted")

# From a loopback connect (~0.1 ms) to a Tor circuit being built (tens of seconds).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last bucket is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left puts a value equal to a bound in that bound's bucket: Prometheus'
        # buckets are "less than or equal".
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[int]:
        """Counts per bucket including every lower bucket, as Prometheus exposes them."""
        running, out = 0, []
        for count in self.counts:
            running += count
            out.append(running)
        return out


def _histograms() -> defaultdict[str, Histogram]:
    return defaultdict(Histogram)


def _counts() -> defaultdict[str, int]:
    return defaultdict(int)


def _labelled_counts() -> defaultdict[tuple[str, ...], int]:
    return defaultdict(int)


@dataclass(slots=True)
class Stats:
    # Totals (see the module docstring): maintained by the methods below.
    connections: int = 0
    active_connections: int = 0
    active_tunnels: int = 0
    requests: int = 0
    dial_failures: int = 0
    rejected: int = 0
    bytes_up: defaultdict[str, int] = field(default_factory=_counts)
    bytes_down: defaultdict[str, int] = field(default_factory=_counts)
    last_state_save_ok: bool | None = None
    last_config_reload_ok: bool | None = None
    # Labelled series, read by ``metrics``; keys are label values in the metric's order.
    connections_by_protocol: defaultdict[str, int] = field(default_factory=_counts)
    active_by_protocol: defaultdict[str, int] = field(default_factory=_counts)
    refused_by_reason: defaultdict[str, int] = field(default_factory=_counts)
    requests_by_label: defaultdict[tuple[str, ...], int] = field(default_factory=_labelled_counts)
    tunnels_by_route: defaultdict[str, int] = field(default_factory=_counts)
    dials_by_label: defaultdict[tuple[str, ...], int] = field(default_factory=_labelled_counts)
    connect_latency: defaultdict[str, Histogram] = field(default_factory=_histograms)
    first_byte_latency: defaultdict[str, Histogram] = field(default_factory=_histograms)
    detections: defaultdict[str, int] = field(default_factory=_counts)
    retests: defaultdict[str, int] = field(default_factory=_counts)
    outage_checks: defaultdict[str, int] = field(default_factory=_counts)
    limit_hits: defaultdict[str, int] = field(default_factory=_counts)
    state_saves: int = 0
    state_save_failures: int = 0
    config_reloads: int = 0
    config_reload_failures: int = 0
    enabled: bool = True

    # -- connections ---------------------------------------------------------------------

    def connection_opened(self, protocol: str) -> None:
        self.connections += 1
        self.active_connections += 1
        self.connections_by_protocol[protocol] += 1
        self.active_by_protocol[protocol] += 1

    def connection_closed(self, protocol: str) -> None:
        self.active_connections -= 1
        self.active_by_protocol[protocol] -= 1

    def connection_refused(self, reason: str) -> None:
        self.rejected += 1
        self.refused_by_reason[reason] += 1

    def limit_hit(self, limit: str) -> None:
        self.limit_hits[limit] += 1

    # -- requests and tunnels --------------------------------------------------------------

    def request_done(self, protocol: str, route: str, outcome: str) -> None:
        self.requests += 1
        if outcome == "rejected":
            self.rejected += 1
        self.requests_by_label[protocol, route, outcome] += 1

    def tunnel_opened(self, route: str) -> None:
        self.active_tunnels += 1
        self.tunnels_by_route[route] += 1

    def tunnel_closed(self, route: str) -> None:
        self.active_tunnels -= 1
        self.tunnels_by_route[route] -= 1

    def add_bytes(self, route: str, up: int, down: int) -> None:
        self.bytes_up[route] += up
        self.bytes_down[route] += down

    # -- latency ---------------------------------------------------------------------------

    def dial_done(self, route: str, outcome: str, seconds: float) -> None:
        self.dials_by_label[route, outcome] += 1
        if outcome == "ok":
            self.connect_latency[route].observe(seconds)
        else:
            self.dial_failures += 1

    def first_byte(self, route: str, seconds: float) -> None:
        self.first_byte_latency[route].observe(seconds)

    # -- learning and housekeeping ---------------------------------------------------------

    def detection(self, reason: str) -> None:
        self.detections[reason] += 1

    def retest_done(self, result: str) -> None:
        self.retests[result] += 1

    def outage_check(self, result: str) -> None:
        self.outage_checks[result] += 1

    def state_saved(self, ok: bool) -> None:
        self.state_saves += 1
        self.state_save_failures += not ok
        self.last_state_save_ok = ok

    def config_reloaded(self, ok: bool) -> None:
        self.config_reloads += 1
        self.config_reload_failures += not ok
        self.last_config_reload_ok = ok


class NullStats(Stats):
    """``metrics = false``: nothing is counted per connection, request, dial or tunnel."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(enabled=False)

    def connection_opened(self, protocol: str) -> None:
        pass

    def connection_closed(self, protocol: str) -> None:
        pass

    def connection_refused(self, reason: str) -> None:
        pass

    def request_done(self, protocol: str, route: str, outcome: str) -> None:
        pass

    def tunnel_opened(self, route: str) -> None:
        pass

    def tunnel_closed(self, route: str) -> None:
        pass

    def add_bytes(self, route: str, up: int, down: int) -> None:
        pass

    def dial_done(self, route: str, outcome: str, seconds: float) -> None:
        pass

    def first_byte(self, route: str, seconds: float) -> None:
        pass

    def detection(self, reason: str) -> None:
        pass

    def retest_done(self, result: str) -> None:
        pass


class UpstreamHealth(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def up(self) -> bool: ...

    @property
    def latency(self) -> float | None: ...

    @property
    def last_error(self) -> str | None: ...


class MetricSources(Protocol):
    @property
    def stats(self) -> Stats: ...

    def learned_entries(self) -> Sequence[DomainState]: ...

    def learning_paused(self) -> bool: ...

    def upstream_health(self) -> Sequence[UpstreamHealth]: ...
