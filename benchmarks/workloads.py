"""The workloads: each measures one target (direct or a proxy) and returns metric values.

``WORKLOADS`` lists them in run order; ``Workload.measure(ctx, target)`` returns
``{metric_key: value}`` plus optional details for the JSON, or raises ``MeasureError``.
Workloads with ``direct=False`` have no direct baseline (memory, proxy CPU).

Keys (see ``report.METRICS`` for labels and units):
idlerss -> idle_rss_mb; tunnels -> tunnel_kb, tunnels_held; keepalive -> keepalive_rps,
keepalive_p99_ms, keepalive_cpu_us; newconn -> newconn_rps, newconn_cpu_us; twoorigins ->
twoorigins_rps, twoorigins_mismatch;
connect1 / connect8 -> connect{1,8}_mbps, connect{1,8}_cpu; plainbulk -> plain_mbps, plain_cpu;
socksttfb -> socks_ttfb_ms.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.loadgen import IdleTunnels, MeasureError, curl_bulk, ttfb_ms, wrk
from benchmarks.origin import Origin, url
from benchmarks.peers import Peer, start_peer

KEEPALIVE_CONNECTIONS = 64
WRK_THREADS = 2


@dataclass
class Context:
    origin: Origin
    workdir: Path
    quick: bool
    socks_port: int | None = None

    @property
    def wrk_seconds(self) -> float:
        return 3.0 if self.quick else 10.0

    @property
    def bulk_max_seconds(self) -> float:
        return 6.0 if self.quick else 12.0

    @property
    def tunnel_steps(self) -> list[int]:
        return [1000, 2000] if self.quick else [5000, 10000]

    @property
    def ttfb_count(self) -> int:
        return 50 if self.quick else 200


@dataclass
class Target:
    name: str
    port: int | None = None  # None: direct, straight at the origin
    started: procs.Started | None = None
    peer: Peer | None = None

    def connect_port(self, origin: Origin) -> int:
        return origin.port_a if self.port is None else self.port

    def require_alive(self) -> None:
        if self.started is not None and not self.started.alive():
            raise MeasureError(f"proxy died earlier ({self.started.exit_reason()})")


@dataclass
class Measured:
    values: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


def _one_k(port: int) -> str:
    return url(port, f"/1k?o={port}")


def _idle_rss(ctx: Context, t: Target) -> Measured:
    assert t.started is not None
    return Measured({"idle_rss_mb": procs.rss_kib(t.started.pid) / 1024})


def _tunnels(ctx: Context, t: Target) -> Measured:
    assert t.started is not None and t.port is not None
    pid = t.started.pid
    before = procs.rss_kib(pid)
    steps = ctx.tunnel_steps
    client = IdleTunnels(t.port, f"127.0.0.1:{ctx.origin.port_a}", steps, deadline_s=15.0)
    try:
        first = client.next_step()
        grown = procs.rss_kib(pid) - before
        client.resume()
        last = client.next_step()
    finally:
        client.close()
    t.require_alive()
    values = {"tunnels_held": float(last["held"])}
    if first["held"]:
        values["tunnel_kb"] = grown / first["held"]
    return Measured(values, {"steps": [first, last], "rss_growth_kib": grown})


def _cpu_us_per_request(t: Target, before: float, requests: int) -> float | None:
    """Proxy CPU per request: steadier than req/s when other work shares the machine."""
    if t.started is None or not requests:
        return None
    return (procs.cpu_seconds(t.started.pid) - before) / requests * 1e6


def _keepalive(ctx: Context, t: Target) -> Measured:
    urls = [_one_k(ctx.origin.port_a)]
    before = procs.cpu_seconds(t.started.pid) if t.started else 0.0
    r = wrk(t.connect_port(ctx.origin), urls, KEEPALIVE_CONNECTIONS, WRK_THREADS, ctx.wrk_seconds)
    values = {"keepalive_rps": r["rps"], "keepalive_p99_ms": r["p99_us"] / 1000}
    us = _cpu_us_per_request(t, before, r["requests"])
    if us is not None:
        values["keepalive_cpu_us"] = us
    return Measured(values, {"wrk": r})


def _newconn(ctx: Context, t: Target) -> Measured:
    urls = [_one_k(ctx.origin.port_a)]
    port = t.connect_port(ctx.origin)
    before = procs.cpu_seconds(t.started.pid) if t.started else 0.0
    r = wrk(port, urls, KEEPALIVE_CONNECTIONS, WRK_THREADS, ctx.wrk_seconds, close=True)
    values = {"newconn_rps": r["rps"]}
    us = _cpu_us_per_request(t, before, r["requests"])
    if us is not None:
        values["newconn_cpu_us"] = us
    return Measured(values, {"wrk": r})


def _two_origins(ctx: Context, t: Target) -> Measured:
    a, b = ctx.origin.port_a, ctx.origin.port_b
    # Direct has one origin per port, so its baseline asks port A twice: the same Lua work
    # per response, and mismatches must be 0.
    ports = [a, a] if t.port is None else [a, b]
    urls = [_one_k(p) for p in ports]
    port = t.connect_port(ctx.origin)
    r = wrk(port, urls, KEEPALIVE_CONNECTIONS, WRK_THREADS, ctx.wrk_seconds, check=True)
    values = {"twoorigins_rps": r["rps"], "twoorigins_mismatch": float(r["mismatches"])}
    return Measured(values, {"wrk": r})


def _bulk(ctx: Context, t: Target, key: str, tunnel: bool, streams: int) -> Measured:
    resident = ctx.origin.warm_bulk()
    before = procs.cpu_seconds(t.started.pid) if t.started else 0.0
    bulk = curl_bulk(url(ctx.origin.port_a, "/1g"), t.port, tunnel, streams, ctx.bulk_max_seconds)
    values = {f"{key}_mbps": bulk.mb_per_s}
    if t.started is not None:
        values[f"{key}_cpu"] = (procs.cpu_seconds(t.started.pid) - before) / (bulk.bytes / 1e9)
    details = {"bytes": bulk.bytes, "seconds": round(bulk.seconds, 3), "cached": resident}
    return Measured(values, details)


def _socks_ttfb(ctx: Context, t: Target) -> Measured:
    target_url = _one_k(ctx.origin.port_a)
    if t.peer is None:
        samples = ttfb_ms(ctx.origin.port_a, target_url, ctx.ttfb_count)
    else:
        if ctx.socks_port is None:
            raise MeasureError("microsocks not running")
        chained, port = start_peer(t.peer, ctx.workdir, socks_port=ctx.socks_port)
        try:
            samples = ttfb_ms(port, target_url, ctx.ttfb_count)
        finally:
            procs.stop(chained)
    return Measured({"socks_ttfb_ms": statistics.median(samples)}, {"requests": len(samples)})


@dataclass(frozen=True)
class Workload:
    name: str
    measure: Callable[[Context, Target], Measured]
    metrics: tuple[str, ...]
    direct: bool = True
    # Direct measured again after the proxies, the better of the two kept: one depressed
    # baseline sample (a quick run has no median to absorb it) must not flatter every proxy.
    bracket_direct: bool = False


def _connect1(ctx: Context, t: Target) -> Measured:
    return _bulk(ctx, t, "connect1", tunnel=True, streams=1)


def _connect8(ctx: Context, t: Target) -> Measured:
    return _bulk(ctx, t, "connect8", tunnel=True, streams=8)


def _plain_bulk(ctx: Context, t: Target) -> Measured:
    return _bulk(ctx, t, "plain", tunnel=False, streams=1)


WORKLOADS: list[Workload] = [
    Workload("idlerss", _idle_rss, ("idle_rss_mb",), direct=False),
    Workload("tunnels", _tunnels, ("tunnel_kb", "tunnels_held"), direct=False),
    Workload("keepalive", _keepalive, ("keepalive_rps", "keepalive_p99_ms", "keepalive_cpu_us")),
    Workload("newconn", _newconn, ("newconn_rps", "newconn_cpu_us")),
    Workload("twoorigins", _two_origins, ("twoorigins_rps", "twoorigins_mismatch")),
    Workload("connect1", _connect1, ("connect1_mbps", "connect1_cpu"), bracket_direct=True),
    Workload("connect8", _connect8, ("connect8_mbps", "connect8_cpu"), bracket_direct=True),
    Workload("plainbulk", _plain_bulk, ("plain_mbps", "plain_cpu"), bracket_direct=True),
    Workload("socksttfb", _socks_ttfb, ("socks_ttfb_ms",)),
]
# "latency" is measured by the keep-alive run (wrk's p99 at that load).
ALIASES = {"latency": "keepalive"}
