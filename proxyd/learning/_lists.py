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
from array import array
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


class NameTable:
    """A set of names as their 64-bit hashes in one open-addressed array.

    A million names as ``str`` in a ``set`` take about 95 MB; as hashes here, 16 MB.
    A membership test is one hash and, at load factor 1/2 or less, about two slot reads.
    Two names with the same 64-bit hash would alias; at a million names the chance a
    given lookup hits one is about 1 in 10^13. The hashes are this process's own
    (``hash()``), so nothing outside can aim at a collision it cannot compute.
    """

    __slots__ = ("_count", "_mask", "_slots")

    def __init__(self, names: Iterable[str]) -> None:
        unique = set(names)
        size = 8
        while size < 2 * len(unique):
            size *= 2
        slots = array("q", bytes(8 * size))
        mask = size - 1
        for name in unique:
            h = hash(name) or 1  # 0 marks an empty slot
            i = h & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = h
        self._slots, self._mask, self._count = slots, mask, len(unique)

    def __contains__(self, name: str) -> bool:
        h = hash(name) or 1
        slots, mask = self._slots, self._mask
        i = h & mask
        while True:
            found = slots[i]
            if found == h:
                return True
            if not found:
                return False
            i = (i + 1) & mask

    def __len__(self) -> int:
        return self._count


@dataclass(slots=True)
class _Patterns:
    suffixes: set[str] = field(default_factory=set)  # the domain and its subdomains
    exact: set[str] = field(default_factory=set)
    keywords: list[str] = field(default_factory=list)
    regexes: list[re.Pattern[str]] = field(default_factory=list)
    # Set by compact(): what matches() reads once the list is loaded for routing.
    _suffix_table: NameTable | set[str] | None = None
    _exact_table: NameTable | set[str] | None = None
    _slow: re.Pattern[str] | None = None  # keywords and regexes, one pass

    def compact(self) -> None:
        """Trade the name sets for hash tables and fold keywords and regexes into one
        regex, consulted only when no name decided the host."""
        self._suffix_table = NameTable(self.suffixes)
        self._exact_table = NameTable(self.exact)
        parts = [re.escape(k) for k in self.keywords] + [f"(?:{r.pattern})" for r in self.regexes]
        self._slow = re.compile("|".join(parts), re.IGNORECASE) if parts else None
        self.suffixes, self.exact = set(), set()

    def matches(self, host: str) -> bool:
        suffixes = self.suffixes if self._suffix_table is None else self._suffix_table
        exact = self.exact if self._exact_table is None else self._exact_table
        if host in exact:
            return True
        name = host
        while True:
            if name in suffixes:
                return True
            dot = name.find(".")
            if dot < 0:
                break
            name = name[dot + 1 :]
        if self._suffix_table is not None:
            return self._slow is not None and self._slow.search(host) is not None
        return any(k in host for k in self.keywords) or any(r.search(host) for r in self.regexes)

    def __len__(self) -> int:
        names = len(self.suffixes) + len(self.exact)
        if self._suffix_table is not None and self._exact_table is not None:
            names = len(self._suffix_table) + len(self._exact_table)
        return names + len(self.keywords) + len(self.regexes)


@dataclass(slots=True)
class DomainList:
    """Hosts a list names, minus its exceptions."""

    listed: _Patterns = field(default_factory=_Patterns)
    exceptions: _Patterns = field(default_factory=_Patterns)

    def matches(self, host: str) -> bool:
        return self.listed.matches(host) and not self.exceptions.matches(host)

    def compact(self) -> DomainList:
        self.listed.compact()
        self.exceptions.compact()
        return self

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
    return parse_list(data.decode("utf-8", errors="replace"), fmt).compact()


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


_PLAIN_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)+")


def _parse_hostlist(text: str, into: DomainList) -> None:
    # A million-line list is almost all plain lowercase names: take those with one
    # regex each, and only the rest (comments, capitals, IDN, errors) line by line.
    plain = _PLAIN_NAME.fullmatch
    lines = text.splitlines()
    into.listed.suffixes.update(line for line in lines if plain(line))
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if line and not line.startswith("#") and not plain(raw):
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
