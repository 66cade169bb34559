"""Stats counters and their Prometheus exposition (no sockets: the collector is pure)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxyd.learning._detect import Reason
from proxyd.learning._stats import LATENCY_BUCKETS, Histogram, NullStats, Stats, UpstreamHealth
from proxyd.learning._table import DomainState, LearningTable
from proxyd.ops._metrics import build_registry, exposition


@dataclass
class Upstream:
    name: str
    up: bool
    latency: float | None
    last_error: str | None = None


@dataclass
class Sources:
    stats: Stats = field(default_factory=Stats)
    table: LearningTable = field(default_factory=LearningTable)
    upstreams: list[Upstream] = field(default_factory=list)

    def learned_entries(self) -> Sequence[DomainState]:
        return self.table.snapshot()

    def learning_paused(self) -> bool:
        return self.table.is_paused(0.0)

    def upstream_health(self) -> Sequence[UpstreamHealth]:
        return self.upstreams


def samples(src: Sources) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(build_registry(src)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_histogram_puts_a_value_on_a_bound_into_that_bucket() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 7.0):
        hist.observe(value)
    assert hist.counts == [1, 2, 1]
    assert hist.cumulative() == [1, 3, 4]
    assert hist.count == 4
    assert hist.sum == pytest.approx(8.6)


def test_request_counter_is_labelled_by_protocol_route_and_outcome() -> None:
    src = Sources()
    for _ in range(3):
        src.stats.request_done("http", "direct", "ok")
    src.stats.request_done("connect", "tor", "dial_error")
    src.stats.request_done("socks5", "reject", "rejected")
    got = samples(src)
    key = (("outcome", "ok"), ("protocol", "http"), ("route", "direct"))
    assert got["proxyd_requests_total", key] == 3
    key = (("outcome", "dial_error"), ("protocol", "connect"), ("route", "tor"))
    assert got["proxyd_requests_total", key] == 1
    assert src.stats.requests == 5
    assert src.stats.rejected == 1


def test_connections_count_open_and_total_per_protocol() -> None:
    src = Sources()
    src.stats.connection_opened("http")
    src.stats.connection_opened("socks5")
    src.stats.connection_closed("http")
    src.stats.connection_refused("limit")
    got = samples(src)
    assert got["proxyd_connections_total", (("protocol", "http"),)] == 1
    assert got["proxyd_connections_active", (("protocol", "http"),)] == 0
    assert got["proxyd_connections_active", (("protocol", "socks5"),)] == 1
    assert got["proxyd_connections_refused_total", (("reason", "limit"),)] == 1
    assert (src.stats.connections, src.stats.active_connections) == (2, 1)


def test_tunnels_are_gauged_and_bytes_counted_by_route_and_direction() -> None:
    src = Sources()
    src.stats.tunnel_opened("tor")
    assert samples(src)["proxyd_tunnels_active", (("route", "tor"),)] == 1
    src.stats.tunnel_closed("tor")
    src.stats.add_bytes("tor", 100, 5000)
    src.stats.add_bytes("direct", 7, 9)
    got = samples(src)
    assert got["proxyd_tunnels_active", (("route", "tor"),)] == 0
    assert got["proxyd_relayed_bytes_total", (("direction", "up"), ("route", "tor"))] == 100
    assert got["proxyd_relayed_bytes_total", (("direction", "down"), ("route", "tor"))] == 5000
    assert got["proxyd_relayed_bytes_total", (("direction", "down"), ("route", "direct"))] == 9


def test_only_successful_dials_enter_the_connect_latency_histogram() -> None:
    src = Sources()
    src.stats.dial_done("direct", "ok", 0.004)
    src.stats.dial_done("direct", "connect_timeout", 10.0)
    src.stats.first_byte("tor", 0.7)
    got = samples(src)
    le = (("le", "0.005"), ("route", "direct"))
    assert got["proxyd_connect_latency_seconds_bucket", le] == 1
    assert got["proxyd_connect_latency_seconds_count", (("route", "direct"),)] == 1
    assert got["proxyd_dials_total", (("outcome", "connect_timeout"), ("route", "direct"))] == 1
    assert got["proxyd_first_byte_latency_seconds_bucket", (("le", "0.5"), ("route", "tor"))] == 0
    assert got["proxyd_first_byte_latency_seconds_bucket", (("le", "1.0"), ("route", "tor"))] == 1
    assert got["proxyd_first_byte_latency_seconds_bucket", (("le", "+Inf"), ("route", "tor"))] == 1
    assert src.stats.dial_failures == 1
    assert len(LATENCY_BUCKETS) == len({*LATENCY_BUCKETS}) == len(sorted(LATENCY_BUCKETS))


def test_learned_domains_are_counted_by_state_and_source_at_scrape_time() -> None:
    src = Sources()
    src.table.force("blocked.example", "tor", 0.0)
    src.table.force("works.example", "direct", 0.0)
    src.table.confirm_blocked("censored.example", Reason.CONNECTION_RESET, "tor", 0.0)
    got = samples(src)
    assert got["proxyd_learned_domains", (("source", "forced"), ("state", "blocked"))] == 1
    assert got["proxyd_learned_domains", (("source", "forced"), ("state", "direct"))] == 1
    assert got["proxyd_learned_domains", (("source", "learned"), ("state", "blocked"))] == 1
    assert got["proxyd_learned_domains", (("source", "list"), ("state", "blocked"))] == 0
    assert got["proxyd_learning_paused", ()] == 0


def test_upstream_health_is_read_live_and_unknown_latency_is_left_out() -> None:
    src = Sources(upstreams=[Upstream("tor", True, 0.25), Upstream("backup", False, None)])
    got = samples(src)
    assert got["proxyd_upstream_up", (("upstream", "tor"),)] == 1
    assert got["proxyd_upstream_up", (("upstream", "backup"),)] == 0
    assert got["proxyd_upstream_handshake_latency_seconds", (("upstream", "tor"),)] == 0.25
    assert ("proxyd_upstream_handshake_latency_seconds", (("upstream", "backup"),)) not in got
    src.upstreams[1].up = True
    assert samples(src)["proxyd_upstream_up", (("upstream", "backup"),)] == 1


def test_state_saves_and_config_reloads_count_failures_separately() -> None:
    src = Sources()
    got = samples(src)
    assert got["proxyd_state_last_save_successful", ()] == 1  # nothing has failed yet
    src.stats.state_saved(True)
    src.stats.state_saved(False)
    src.stats.config_reloaded(False)
    src.stats.detection(Reason.TLS_INJECTED)
    src.stats.retest_done("blocked")
    got = samples(src)
    assert got["proxyd_state_saves_total", ()] == 2
    assert got["proxyd_state_save_failures_total", ()] == 1
    assert got["proxyd_state_last_save_successful", ()] == 0
    assert got["proxyd_config_reload_failures_total", ()] == 1
    assert got["proxyd_config_last_reload_successful", ()] == 0
    assert got["proxyd_detections_total", (("reason", "tls_injected"),)] == 1
    assert got["proxyd_retests_total", (("result", "blocked"),)] == 1


def test_registry_includes_build_info_and_process_metrics() -> None:
    got = samples(Sources())
    assert any(name == "proxyd_build_info" for name, _ in got)
    assert any(name == "process_resident_memory_bytes" for name, _ in got)
    assert any(name == "python_info" for name, _ in got)


def test_exposition_passes_promtool_lint() -> None:
    src = Sources(upstreams=[Upstream("tor", True, 0.1)])
    src.stats.connection_opened("socks5")
    src.stats.request_done("socks5", "tor", "ok")
    src.stats.dial_done("tor", "ok", 0.3)
    src.stats.first_byte("tor", 0.4)
    src.stats.tunnel_opened("tor")
    src.table.force("blocked.example", "tor", 0.0)
    out = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition(build_registry(src)),
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == b"" and out.stderr == b""


def test_null_stats_count_nothing_per_request_but_keep_housekeeping() -> None:
    src = Sources(stats=NullStats())
    src.stats.connection_opened("http")
    src.stats.request_done("http", "direct", "ok")
    src.stats.dial_done("direct", "connect_timeout", 10.0)
    src.stats.tunnel_opened("direct")
    src.stats.add_bytes("direct", 1, 2)
    src.stats.detection(Reason.TLS_INJECTED)
    src.stats.state_saved(False)
    got = samples(src)
    assert not [name for name, _ in got if name.startswith(("proxyd_requests", "proxyd_dials"))]
    assert (src.stats.connections, src.stats.dial_failures, src.stats.active_tunnels) == (0, 0, 0)
    assert got["proxyd_state_save_failures_total", ()] == 1
    assert src.stats.last_state_save_ok is False
