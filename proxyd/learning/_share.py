"""Sharing what was learned: blocked entries as a list another box (or another tool) reads.

Sans-IO: entries in, text out; text in, ``SharedEntry`` values out. The lists are the
formats ``proxyd.learning._lists`` parses (hostlist, gfwlist, v2fly), so anything
exported reads back with proxyd's own list parser, and other tools (zapret, the
AutoProxy extensions, v2ray) read them too.

Every entry is preceded by one comment line that carries what a list line cannot:
the route that worked, the evidence reason and its date, as ``key=value`` words::

    # proxyd: example.com route=tor reason=tls_reset since=2024-05-01

Only destination names are written. Nothing a learned entry holds names a client, and
address keys (an upstream reached by IP, a learned address) are left out too: a list
names domains, and an address on someone's network is not worth sharing.

Public API: ``SHARE_FORMATS``, ``SharedEntry``, ``shareable(entries)``,
``comment_fields(entry)``, ``render_shared(entries, fmt, now)``,
``read_shared(text, fmt=None) -> list[SharedEntry]``, ``guess_format(text)``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from proxyd.learning._domains import parse_ip, registrable_domain
from proxyd.learning._lists import ListError, parse_list
from proxyd.learning._table import DomainState, State

SHARE_FORMATS = ("hostlist", "gfwlist", "v2fly")
_COMMENT = {"hostlist": "#", "gfwlist": "!", "v2fly": "#"}
_TAG = re.compile(r"^[#!]\s*proxyd:\s+(\S+)((?:\s+[a-z_]+=\S+)*)\s*$")
_FIELD = re.compile(r"([a-z_]+)=(\S+)")


@dataclass(frozen=True)
class SharedEntry:
    key: str  # a registrable domain covers its subdomains, another name only itself
    route: str | None  # None when the file does not say (a list from elsewhere)


def shareable(entries: Iterable[DomainState]) -> list[DomainState]:
    return [e for e in entries if e.state is State.BLOCKED and parse_ip(e.key) is None]


def _date(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def comment_fields(entry: DomainState) -> str:
    """``route=... reason=... since=...``: why the entry exists, for humans and import."""
    reason = entry.evidence[-1].reason.value if entry.evidence else entry.source.value
    at = entry.evidence[-1].at if entry.evidence else entry.since
    return f"route={entry.route} reason={reason} since={_date(at)}"


def _line(entry: DomainState, fmt: str) -> str:
    whole = registrable_domain(entry.key) == entry.key
    if fmt == "hostlist":
        return entry.key  # a hostlist name always covers its subdomains
    if fmt == "gfwlist":
        return f"||{entry.key}" if whole else f"|https://{entry.key}"
    return f"domain:{entry.key}" if whole else f"full:{entry.key}"


def render_shared(entries: Sequence[DomainState], fmt: str, now: float) -> str:
    if fmt not in SHARE_FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(SHARE_FORMATS)})")
    mark = _COMMENT[fmt]
    chosen = shareable(entries)
    out = ["[AutoProxy 0.2.9]"] if fmt == "gfwlist" else []
    out.append(f"{mark} proxyd learned routes, {len(chosen)} blocked, exported {_date(now)}")
    for entry in chosen:
        out.append(f"{mark} proxyd: {entry.key} {comment_fields(entry)}")
        out.append(_line(entry, fmt))
    return "\n".join(out) + "\n"


def guess_format(text: str) -> str:
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("[AutoProxy", "!", "||", "|", "@@")):
            return "gfwlist"
        if re.match(r"(domain|full|keyword|regexp):", line):
            return "v2fly"
        return "hostlist"
    return "hostlist"


def _routes_in_comments(text: str) -> dict[str, str]:
    routes = {}
    for raw in text.splitlines():
        match = _TAG.match(raw.strip())
        if match:
            fields = dict(_FIELD.findall(match.group(2)))
            if "route" in fields:
                routes[match.group(1)] = fields["route"]
    return routes


def read_shared(text: str, fmt: str | None = None) -> list[SharedEntry]:
    """The names a list blocks, with the route its proxyd comments give; raises ListError.

    Keyword and regex entries cannot seed a table of names and are refused, as are
    exceptions: a list from elsewhere with those is a list to configure, not to import.
    """
    fmt = fmt or guess_format(text)
    parsed = parse_list(text, fmt)
    if parsed.listed.keywords or parsed.listed.regexes or len(parsed.exceptions):
        raise ListError(None, "keyword, regex and exception entries cannot be imported")
    routes = _routes_in_comments(text)
    names = parsed.listed.suffixes | parsed.listed.exact
    return [SharedEntry(k, routes.get(k)) for k in sorted(names)]
