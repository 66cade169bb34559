"""Imported block lists: the domains other people already found blocked (DESIGN §4 "Lists").

A list pre-marks domains as blocked, so their first visit goes straight to an upstream;
it is a prior, not a verdict: a listed domain that was visited is re-tested like a
learned one, and a successful re-test overturns the list for that domain.

Parsing is sans-IO (text in, ``DomainList`` out); ``read_list`` is the one function
that touches the file system. Formats:

- ``hostlist``: one domain per line (zapret's hostlists); ``#`` comments. A domain covers
  its subdomains.
- ``gfwlist``: AutoProxy rules, plain or base64 as published. ``||d`` and ``.d`` cover
  ``d`` and its subdomains, ``|http://d/...`` the host ``d``, ``/re/`` a regex, a bare
  word a substring (AutoProxy matches URLs; only the host is known for a tunnel, so
  path parts are dropped). ``@@`` marks an exception, ``!`` and ``[...]`` comments.
- ``v2fly``: ``domain:``, ``full:``, ``keyword:``, ``regexp:`` (a bare name is
  ``domain:``); ``@attributes`` are ignored; ``include:`` is refused (a file names no
  other files here).
- ``csv``: the z-i register dump: ``addresses;domain;...`` rows; ``*.d`` covers the
  subdomains of ``d``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from proxyd.learning._domains import normalise_host

FORMATS = ("hostlist", "gfwlist", "v2fly", "csv")
_HOST_CHARS = re.compile(r"[a-z0-9._-]+")


class ListError(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(slots=True)
class _Patterns:
    suffixes: set[str] = field(default_factory=set)  # the domain and its subdomains
    exact: set[str] = field(default_factory=set)
    keywords: list[str] = field(default_factory=list)
    regexes: list[re.Pattern[str]] = field(default_factory=list)

    def matches(self, host: str) -> bool:
        if host in self.exact:
            return True
        name = host
        while True:
            if name in self.suffixes:
                return True
            dot = name.find(".")
            if dot < 0:
                break
            name = name[dot + 1 :]
        return any(k in host for k in self.keywords) or any(r.search(host) for r in self.regexes)

    def __len__(self) -> int:
        return len(self.suffixes) + len(self.exact) + len(self.keywords) + len(self.regexes)


@dataclass(slots=True)
class DomainList:
    """Hosts a list names, minus its exceptions."""

    listed: _Patterns = field(default_factory=_Patterns)
    exceptions: _Patterns = field(default_factory=_Patterns)

    def matches(self, host: str) -> bool:
        return self.listed.matches(host) and not self.exceptions.matches(host)

    def __len__(self) -> int:
        return len(self.listed)


def parse_list(text: str, fmt: str) -> DomainList:
    """Raises ``ListError`` naming the line of the first entry that cannot be read."""
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise ListError(None, f"unknown list format {fmt!r} (one of {', '.join(FORMATS)})")
    result = DomainList()
    parser(text, result)
    return result


def read_list(path: Path, fmt: str) -> DomainList:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ListError(None, f"cannot read: {exc.strerror or exc}") from None
    return parse_list(data.decode("utf-8", errors="replace"), fmt)


def _lines(text: str, comment: str) -> Iterable[tuple[int, str]]:
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith(comment):
            yield number, line


def _domain(text: str, line: int) -> str:
    host = normalise_host(text.strip().strip("."))
    if not host or not _HOST_CHARS.fullmatch(host):
        raise ListError(line, f"not a domain: {text!r}")
    return host


def _regex(text: str, line: int) -> re.Pattern[str]:
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise ListError(line, f"bad regular expression {text!r}: {exc}") from None


def _parse_hostlist(text: str, into: DomainList) -> None:
    for number, line in _lines(text, "#"):
        into.listed.suffixes.add(_domain(line.split("#", 1)[0], number))


def _parse_v2fly(text: str, into: DomainList) -> None:
    for number, line in _lines(text, "#"):
        entry = line.split("#", 1)[0].split(" @", 1)[0].strip()
        kind, _, value = entry.rpartition(":") if ":" in entry else ("domain", "", entry)
        if kind == "domain":
            into.listed.suffixes.add(_domain(value, number))
        elif kind == "full":
            into.listed.exact.add(_domain(value, number))
        elif kind == "keyword":
            into.listed.keywords.append(value.lower())
        elif kind == "regexp":
            into.listed.regexes.append(_regex(value, number))
        else:
            raise ListError(number, f"unsupported v2fly entry {kind + ':'!r}")


def _parse_csv(text: str, into: DomainList) -> None:
    for number, line in _lines(text, "#"):
        fields = line.split(";")
        if len(fields) < 2:
            if number == 1:
                continue  # the dump's "Updated: <date>" header
            raise ListError(number, "expected addresses;domain;... fields")
        name = fields[1].strip()
        if not name:
            continue  # an address-only entry: nothing for a name-based router
        if name.startswith("*."):
            into.listed.suffixes.add(_domain(name[2:], number))
        else:
            into.listed.exact.add(_domain(name, number))


def _maybe_base64(text: str) -> str:
    compact = "".join(text.split())
    if "." in compact or not compact:
        return text  # plain rules always name a domain
    try:
        return base64.b64decode(compact, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return text


def _parse_gfwlist(text: str, into: DomainList) -> None:
    for number, line in _lines(_maybe_base64(text), "!"):
        if line.startswith("["):
            continue  # "[AutoProxy 0.2.9]" header
        patterns = into.listed
        if line.startswith("@@"):
            patterns, line = into.exceptions, line[2:]
        if len(line) > 2 and line.startswith("/") and line.endswith("/"):
            patterns.regexes.append(_regex(line[1:-1], number))
        elif line.startswith("||"):
            patterns.suffixes.add(_domain(_host_part(line[2:]), number))
        elif line.startswith("|"):
            patterns.exact.add(_domain(_host_part(line[1:].split("://", 1)[-1]), number))
        elif line.startswith("."):
            patterns.suffixes.add(_domain(_host_part(line[1:]), number))
        else:
            keyword = _host_part(line)
            if keyword:
                patterns.keywords.append(keyword.lower())


def _host_part(rule: str) -> str:
    for stop in "/*^:?":
        rule = rule.split(stop, 1)[0]
    return rule


_PARSERS = {
    "hostlist": _parse_hostlist,
    "gfwlist": _parse_gfwlist,
    "v2fly": _parse_v2fly,
    "csv": _parse_csv,
}
