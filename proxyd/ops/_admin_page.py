"""The admin status page: server-rendered HTML with a little inline CSS, no script.

Pure: data in, a string out. Every value that reaches the page goes through
``html.escape`` (domains in the learned table come from the network, so they are
attacker-controlled). The page loads nothing from anywhere, so it works offline and
under the strict Content-Security-Policy the admin app sends with it.

Public API: ``render_status_page(*, now, started_at, stats, proxy_addresses, upstreams,
entries, problems, mirrors=()) -> str``; ``MAX_ROWS``, the bound on learned-table rows shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from html import escape

from proxyd.learning import DomainState, State, Stats, UpstreamHealth
from proxyd.mirror import MirrorStatus

MAX_ROWS = 500

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 72em;
       padding: 0 1em; color: #1d232a; background: #fbfbfa; }
h1 { font-size: 1.4em; margin-bottom: .2em; }
h2 { font-size: 1.1em; margin-top: 1.6em; border-bottom: 1px solid #d4d7da; }
.ok { color: #1a7f37; } .bad { color: #b42318; }
.problems { background: #fdecea; border: 1px solid #f5b7b1; padding: .5em 1em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1.5em; }
dt { color: #5b6670; } dd { margin: 0; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #e6e8ea; }
th { background: #f0f2f4; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #5b6670; }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _when(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))
    delta = epoch - now
    relative = f"in {_duration(delta)}" if delta >= 0 else f"{_duration(-delta)} ago"
    return f"{stamp} ({relative})"


def _rows(cells: Iterable[Sequence[str]]) -> str:
    return "\n".join("<tr>" + "".join(cells_) + "</tr>" for cells_ in cells)


def _td(value: object, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{_e(value)}</td>"


def _summary(now: float, started_at: float, stats: Stats, proxy: Sequence[tuple[str, int]]) -> str:
    listening = ", ".join(f"{h}:{p}" for h, p in proxy) or "not listening"
    items = [("Proxy", listening), ("Uptime", _duration(now - started_at))]
    if stats.enabled:
        items += [
            ("Connections", f"{stats.active_connections} open, {stats.connections} in total"),
            ("Requests", f"{stats.requests} ({stats.rejected} rejected)"),
            ("Tunnels open", f"{stats.active_tunnels}"),
            ("Failed dials", f"{stats.dial_failures}"),
        ]
    else:
        items.append(("Counters", "off (metrics = false)"))
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"


def _traffic(stats: Stats) -> str:
    routes = sorted(set(stats.bytes_up) | set(stats.bytes_down))
    if not stats.enabled:
        return '<p class="muted">Traffic is not counted (metrics = false).</p>'
    if not routes:
        return '<p class="muted">No traffic yet.</p>'
    body = _rows(
        (_td(r), _td(_bytes(stats.bytes_up[r]), "num"), _td(_bytes(stats.bytes_down[r]), "num"))
        for r in routes
    )
    head = '<tr><th>Route</th><th class="num">Up</th><th class="num">Down</th></tr>'
    return f"<table>{head}\n{body}\n</table>"


def _upstreams(upstreams: Sequence[UpstreamHealth]) -> str:
    if not upstreams:
        return '<p class="muted">No upstreams configured.</p>'
    body = _rows(
        (
            _td(u.name),
            _td("up" if u.up else "down", "ok" if u.up else "bad"),
            _td("-" if u.latency is None else f"{u.latency * 1000:.0f} ms", "num"),
            _td(u.last_error or ""),
        )
        for u in upstreams
    )
    head = (
        '<tr><th>Upstream</th><th>State</th><th class="num">Last handshake</th>'
        "<th>Last error</th></tr>"
    )
    return f"<table>{head}\n{body}\n</table>"


def _mirrors(mirrors: Sequence[MirrorStatus]) -> str:
    if not mirrors:
        return ""
    body = _rows(
        (
            _td(m.name),
            _td(f"{m.from_host} -> {m.to_host}"),
            _td(f"{m.mode}, {m.when}"),
            _td(
                "unused" if m.up is None else ("up" if m.up else "down"),
                "muted" if m.up is None else ("ok" if m.up else "bad"),
            ),
            _td(m.last_error or ""),
            _td(m.https),
        )
        for m in mirrors
    )
    head = (
        "<tr><th>Mirror</th><th>Hosts</th><th>Mode</th><th>State</th><th>Last error</th>"
        "<th>HTTPS to these hosts</th></tr>"
    )
    return f"<h2>Mirrors</h2>\n<table>{head}\n{body}\n</table>"


def _learned(entries: Sequence[DomainState], now: float) -> str:
    if not entries:
        return '<p class="muted">Nothing learned yet: every site has worked direct.</p>'
    # Blocked entries first: they are the ones whose routing differs from the default.
    ordered = sorted(entries, key=lambda e: (e.state is not State.BLOCKED, e.key))
    shown = ordered[:MAX_ROWS]
    body = _rows(
        (
            _td(e.key),
            _td(e.state.value, "bad" if e.state is State.BLOCKED else "ok"),
            _td(e.route),
            _td(e.source.value),
            _td(", ".join(sorted({ev.reason.value for ev in e.evidence})) or "-"),
            _td(_when(e.since, now)),
            _td(_when(e.next_retest, now)),
        )
        for e in shown
    )
    head = (
        "<tr><th>Domain</th><th>State</th><th>Route</th><th>Source</th><th>Evidence</th>"
        "<th>Since</th><th>Next re-test</th></tr>"
    )
    more = len(ordered) - len(shown)
    note = f'<p class="muted">{more} more entries: see /api/routes.</p>' if more > 0 else ""
    return f"<table>{head}\n{body}\n</table>{note}"


def render_status_page(
    *,
    now: float,
    started_at: float,
    stats: Stats,
    proxy_addresses: Sequence[tuple[str, int]],
    upstreams: Sequence[UpstreamHealth],
    entries: Sequence[DomainState],
    problems: Sequence[str],
    mirrors: Sequence[MirrorStatus] = (),
) -> str:
    if problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in problems)
        health = (
            f'<div class="problems"><strong class="bad">Unhealthy</strong><ul>{items}</ul></div>'
        )
    else:
        health = '<p><strong class="ok">Healthy</strong></p>'
    blocked = sum(e.state is State.BLOCKED for e in entries)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>proxyd status</title>
<link rel="icon" href="data:,">
<style>{_CSS}</style>
</head>
<body>
<h1>proxyd</h1>
{health}
{_summary(now, started_at, stats, proxy_addresses)}
<h2>Traffic by route</h2>
{_traffic(stats)}
<h2>Upstreams</h2>
{_upstreams(upstreams)}
{_mirrors(mirrors)}
<h2>Learned routes ({len(entries)}, {blocked} blocked)</h2>
{_learned(entries, now)}
<p class="muted">Machine-readable: <a href="/metrics">/metrics</a>, <a href="/healthz">/healthz</a>,
<a href="/api/routes">/api/routes</a>, <a href="/proxy.pac">/proxy.pac</a>.</p>
</body>
</html>
"""
