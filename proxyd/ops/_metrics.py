"""Every Prometheus metric proxyd exports, defined once and read from ``Stats`` at scrape time.

Nothing is observed through prometheus-client on the request path: ``Stats`` keeps plain
ints, and ``ProxydCollector.collect`` turns them into metric families when Prometheus
asks. Labels are bounded (route, upstream, protocol, outcome, reason, direction, state,
source, result, limit); no metric carries a domain or a client address.

Public API:

- ``ProxydCollector(sources)``: the custom collector; ``sources`` is a
  ``stats.MetricSources`` (``admin.AdminContext`` in the daemon).

Only ``admin_app`` imports this module, on the first admin request, so that an idle
daemon never loads prometheus-client.
- ``build_registry(sources) -> CollectorRegistry``: proxyd's metrics plus process and
  platform metrics, in a registry of its own (never the global default one).
- ``exposition(registry) -> bytes`` and ``CONTENT_TYPE``: the text format 0.0.4.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from proxyd import __version__
from proxyd.learning import Histogram, MetricSources, Source, State
from proxyd.ops._admin_context import AdminContext
from proxyd.resolver import Resolver

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def _counter(
    name: str,
    doc: str,
    labels: Sequence[str],
    values: Iterable[tuple[str | tuple[str, ...], int]],
) -> CounterMetricFamily:
    """``values`` are (label value or tuple of label values, count) pairs."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _gauge(
    name: str, doc: str, labels: Sequence[str], values: Mapping[str, int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _histogram(name: str, doc: str, by_route: Mapping[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["route"])
    for route, hist in sorted(by_route.items()):
        bounds = [*(_float_text(b) for b in hist.bounds), "+Inf"]
        family.add_metric([route], list(zip(bounds, hist.cumulative(), strict=True)), hist.sum)
    return family


def _float_text(value: float) -> str:
    return repr(float(value))  # what Prometheus' own clients write: "0.005", "1.0", "30.0"


def _flag(name: str, doc: str, value: bool | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=1 if value in (None, True) else 0)


class ProxydCollector:
    def __init__(self, sources: MetricSources) -> None:
        self._sources = sources

    def describe(self) -> Iterable[Metric]:
        return ()  # register without running a scrape: the sources may not be ready yet

    def collect(self) -> Iterable[Metric]:
        src = self._sources
        s = src.stats
        info = GaugeMetricFamily(
            "proxyd_build_info",
            "proxyd version and Python implementation; always 1",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        yield _counter(
            "proxyd_connections",
            "Client connections, by the inbound protocol their first byte chose",
            ["protocol"],
            s.connections_by_protocol.items(),
        )
        yield _gauge(
            "proxyd_connections_active",
            "Client connections open now",
            ["protocol"],
            s.active_by_protocol,
        )
        yield _counter(
            "proxyd_connections_refused",
            "Client connections turned away (limit, not_allowed, auth)",
            ["reason"],
            s.refused_by_reason.items(),
        )
        yield _counter(
            "proxyd_limit_hits",
            "Times a configured limit stopped a client, by the limit's config key",
            ["limit"],
            s.limit_hits.items(),
        )
        yield _counter(
            "proxyd_requests",
            "Requests finished (HTTP requests, CONNECT and SOCKS tunnels)",
            ["protocol", "route", "outcome"],
            s.requests_by_label.items(),
        )
        yield _gauge(
            "proxyd_tunnels_active",
            "Tunnels committed to the data plane and open now",
            ["route"],
            s.tunnels_by_route,
        )
        relayed: dict[tuple[str, ...], int] = {}
        for route, count in s.bytes_up.items():
            relayed[route, "up"] = count
        for route, count in s.bytes_down.items():
            relayed[route, "down"] = count
        yield _counter(
            "proxyd_relayed_bytes",
            "Bytes relayed (up: client to server, down: server to client), counted at close",
            ["route", "direction"],
            relayed.items(),
        )
        yield _counter(
            "proxyd_dials",
            'Connection attempts by route and outcome ("ok" or the failure reason)',
            ["route", "outcome"],
            s.dials_by_label.items(),
        )
        yield _histogram(
            "proxyd_connect_latency_seconds",
            "Time to open a connection on a route (successful attempts only)",
            s.connect_latency,
        )
        yield _histogram(
            "proxyd_first_byte_latency_seconds",
            "Time from sending the client's first bytes to the server's first byte",
            s.first_byte_latency,
        )
        yield _counter(
            "proxyd_detections", "Evidence of blocking, by reason", ["reason"], s.detections.items()
        )
        yield _counter(
            "proxyd_retests",
            "Direct re-tests of blocked domains, by result",
            ["result"],
            s.retests.items(),
        )
        yield _counter(
            "proxyd_outage_checks",
            "Outage gate decisions: censorship (the canary or a direct success answered), "
            "outage (the canary failed too), no_canary (paused with none to ask)",
            ["result"],
            s.outage_checks.items(),
        )
        yield CounterMetricFamily("proxyd_state_saves", "State file writes", value=s.state_saves)
        yield CounterMetricFamily(
            "proxyd_state_save_failures",
            "State file writes that failed",
            value=s.state_save_failures,
        )
        yield _flag(
            "proxyd_state_last_save_successful",
            "Whether the last state file write succeeded (1 before the first one)",
            s.last_state_save_ok,
        )
        yield CounterMetricFamily(
            "proxyd_config_reloads", "Configuration reloads (SIGHUP)", value=s.config_reloads
        )
        yield CounterMetricFamily(
            "proxyd_config_reload_failures",
            "Configuration reloads rejected (the previous config was kept)",
            value=s.config_reload_failures,
        )
        yield _flag(
            "proxyd_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1 before the first one)",
            s.last_config_reload_ok,
        )
        yield from self._learning(src)
        yield from self._upstreams(src)
        if isinstance(src, AdminContext):
            resolver = src.resolver()
            if resolver is not None:
                yield from _dns(resolver)
        yield from _tasks()

    @staticmethod
    def _learning(src: MetricSources) -> Iterable[Metric]:
        counts = {(state.value, source.value): 0 for state in State for source in Source}
        for entry in src.learned_entries():
            counts[entry.state.value, entry.source.value] += 1
        learned = GaugeMetricFamily(
            "proxyd_learned_domains",
            "Entries in the learned table, by state and by where they came from",
            labels=["state", "source"],
        )
        for (state, source), count in sorted(counts.items()):
            learned.add_metric([state, source], count)
        yield learned
        yield GaugeMetricFamily(
            "proxyd_learning_paused",
            "1 while learning is paused because the network itself looks down",
            value=int(src.learning_paused()),
        )

    @staticmethod
    def _upstreams(src: MetricSources) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "proxyd_upstream_up", "1 if the upstream is usable", labels=["upstream"]
        )
        latency = GaugeMetricFamily(
            "proxyd_upstream_handshake_latency_seconds",
            "Duration of the last successful handshake with the upstream",
            labels=["upstream"],
        )
        for health in src.upstream_health():
            up.add_metric([health.name], int(bool(health.up)))
            if health.latency is not None:
                latency.add_metric([health.name], health.latency)
        yield up
        yield latency


def _dns(resolver: Resolver) -> Iterable[Metric]:
    resolutions = {
        ("system", "answered"): resolver.system_answers,
        ("system", "suspect"): resolver.system_suspect,
    }
    resolutions.update(resolver.resolutions)
    yield _counter(
        "proxyd_dns_resolutions",
        "Name resolutions by source (system, doh) and result",
        ["source", "result"],
        resolutions.items(),
    )
    yield _counter(
        "proxyd_dns_poison_detections",
        "Forged-answer signals: poison_set, bogon, shared_address, block_page_address, "
        "disagreement (the honest source differed after a failed connection)",
        ["signal"],
        resolver.detections.items(),
    )
    yield CounterMetricFamily(
        "proxyd_dns_cache_hits", "Honest answers served from the cache", value=resolver.cache_hits
    )
    up = GaugeMetricFamily(
        "proxyd_dns_provider_up", "1 unless the DoH provider failed lately", labels=["provider"]
    )
    for name, ok in sorted(resolver.provider_up().items()):
        up.add_metric([name], int(ok))
    yield up


def _tasks() -> Iterable[Metric]:
    # Scrapes run on the event loop; a task count that never returns to its baseline after
    # load is a leak the soak benchmark watches for from outside.
    try:
        count = len(asyncio.all_tasks())
    except RuntimeError:
        return
    yield GaugeMetricFamily("proxyd_asyncio_tasks", "asyncio tasks alive now", value=count)


def build_registry(sources: MetricSources) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxydCollector(sources))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
