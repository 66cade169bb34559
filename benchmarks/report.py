"""Collect per-run samples, then print the side-by-side table and write the JSON.

- ``METRICS``: every row of the table, in order: key, label, unit, and whether a ratio to
  direct is shown (``25.9k (0.50x)``). Labels may name the tunnel steps as {step1}/{step2}.
- ``Results``: ``add(metric, target, value)`` / ``fail(metric, target, reason)`` per run,
  ``detail(...)`` for JSON-only context; ``median(metric, target)``.
- ``table(results, targets, steps, footer)`` renders a Markdown table (paste-able into the
  README) with reasons for "n/a" cells as numbered notes under it, then the ``footer`` lines;
  ``to_json(...)`` the full record.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    ratio: bool = True


METRICS: list[Metric] = [
    Metric("keepalive_rps", "keep-alive req/s, 64 conns, 1 KiB GET (absolute-form)", "req/s"),
    Metric("newconn_rps", "new connection per request req/s", "req/s"),
    Metric("connect1_mbps", "CONNECT bulk 1 stream MB/s", "MB/s"),
    Metric("connect8_mbps", "CONNECT bulk 8 streams MB/s (aggregate)", "MB/s"),
    Metric("plain_mbps", "plain-HTTP GET bulk MB/s", "MB/s"),
    Metric("keepalive_cpu_us", "proxy CPU per keep-alive request", "us", ratio=False),
    Metric("newconn_cpu_us", "proxy CPU per new-connection request", "us", ratio=False),
    Metric("connect1_cpu", "proxy CPU s/GB, CONNECT 1 stream", "s/GB", ratio=False),
    Metric("connect8_cpu", "proxy CPU s/GB, CONNECT 8 streams", "s/GB", ratio=False),
    Metric("plain_cpu", "proxy CPU s/GB, plain-HTTP GET", "s/GB", ratio=False),
    Metric("idle_rss_mb", "idle RSS after start", "MB", ratio=False),
    Metric("tunnel_kb", "RSS per idle tunnel ({step1} open)", "KB", ratio=False),
    Metric("tunnels_held", "idle tunnels held (of {step2})", "count", ratio=False),
    Metric("keepalive_p99_ms", "p99 latency at the keep-alive load", "ms"),
    Metric("twoorigins_rps", "two origins alternating per keep-alive conn, req/s", "req/s"),
    Metric("twoorigins_mismatch", "two origins: responses from the wrong origin", "count", False),
    Metric("socks_ttfb_ms", "TTFB via SOCKS5 upstream (microsocks), median", "ms"),
]
_BY_KEY = {m.key: m for m in METRICS}


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    details: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    def add(self, metric: str, target: str, value: float) -> None:
        self.samples.setdefault(metric, {}).setdefault(target, []).append(value)

    def keep_better(self, metric: str, target: str, value: float) -> None:
        """A second sample of the same run: keep the higher of it and the run's last one."""
        values = self.samples.setdefault(metric, {}).setdefault(target, [])
        if values:
            values[-1] = max(values[-1], value)
        else:
            values.append(value)

    def fail(self, metric: str, target: str, reason: str) -> None:
        self.errors.setdefault(metric, {}).setdefault(target, []).append(reason)

    def detail(self, workload: str, target: str, info: Any) -> None:
        self.details.setdefault(workload, {}).setdefault(target, []).append(info)

    def median(self, metric: str, target: str) -> float | None:
        values = self.samples.get(metric, {}).get(target)
        return statistics.median(values) if values else None

    def error(self, metric: str, target: str) -> str | None:
        reasons = self.errors.get(metric, {}).get(target)
        return reasons[0] if reasons else None


def fmt(value: float, unit: str) -> str:
    if unit == "req/s":
        return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"
    if unit == "MB/s":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "KB":
        return f"{value:.1f} KB"
    if unit == "us":
        return f"{value:.0f} us"
    if unit == "s/GB":
        return f"{value:.2f}"
    return f"{value:,.0f}"


def _cell(results: Results, metric: Metric, target: str, notes: list[str]) -> str:
    value = results.median(metric.key, target)
    if value is None:
        reason = results.error(metric.key, target)
        if reason is None:
            return "-"
        if reason not in notes:
            notes.append(reason)
        return f"n/a [{notes.index(reason) + 1}]"
    text = fmt(value, metric.unit)
    direct = results.median(metric.key, "direct")
    if metric.ratio and target != "direct" and direct:
        ratio = value / direct
        text += f" ({ratio:.2f}x)" if ratio < 10 else f" ({ratio:.0f}x)"
    return text


def table(results: Results, targets: list[str], steps: list[int], footer: list[str]) -> str:
    header = ["workload", *targets]
    rows = [header, ["---"] * len(header)]
    notes: list[str] = []
    for metric in METRICS:
        if metric.key not in results.samples and metric.key not in results.errors:
            continue
        label = metric.label.format(step1=f"{steps[0]:,}", step2=f"{steps[-1]:,}")
        rows.append([label, *(_cell(results, metric, t, notes) for t in targets)])
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines += [f"[{i}] {reason}" for i, reason in enumerate(notes, 1)]
    lines += _overhead(results, targets) + footer
    return "\n".join(lines)


def _overhead(results: Results, targets: list[str]) -> list[str]:
    """What a feature costs: proxyd against a variant with it off, where both ran."""
    lines = []
    for baseline, feature in (("proxyd-bare", "learning+metrics"), ("proxyd-nometrics", "metrics")):
        if "proxyd" not in targets or baseline not in targets:
            continue
        parts = []
        for key in ("keepalive_rps", "newconn_rps", "connect1_mbps", "plain_mbps"):
            full, base = results.median(key, "proxyd"), results.median(key, baseline)
            if full and base:
                label = _BY_KEY[key].label.split(",")[0]
                parts.append(f"{label}: {(1 - full / base) * 100:+.1f} %")
        for key in ("keepalive_cpu_us", "newconn_cpu_us", "connect1_cpu", "plain_cpu"):
            full, base = results.median(key, "proxyd"), results.median(key, baseline)
            if full and base:
                parts.append(f"{_BY_KEY[key].label}: {(full / base - 1) * 100:+.1f} %")
        if parts:
            title = f"{feature} overhead (proxyd vs {baseline}; + is slower): "
            lines.append(title + "; ".join(parts))
    return lines


def to_json(results: Results, targets: list[str], meta: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for metric in METRICS:
        per_target: dict[str, dict[str, Any]] = {}
        for t in targets:
            runs = results.samples.get(metric.key, {}).get(t, [])
            errors = results.errors.get(metric.key, {}).get(t, [])
            if runs or errors:
                per_target[t] = {"runs": runs, "median": results.median(metric.key, t)}
                if errors:
                    per_target[t]["errors"] = errors
        if per_target:
            metrics[metric.key] = {"label": metric.label, "unit": metric.unit, "by": per_target}
    return {**meta, "targets": targets, "metrics": metrics, "details": results.details}
