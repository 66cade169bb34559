"""Desync strategies, sans-IO: a client's first bytes in, the chunks to send out.

Each chunk after the first is meant to leave as its own TCP segment. Every strategy keeps
the stream valid for the server; they differ in what a filter sees:

- ``split``: the bytes cut inside the TLS server_name or the HTTP Host value, over two
  segments. Fools filters that match one packet at a time (iptables ``-m string``).
- ``tlsrec``: the ClientHello re-framed as two TLS records, cut inside the server_name
  (RFC 8446 §5.1 lets a handshake message span records; OpenSSL, BoringSSL and NSS
  reassemble it). Fools per-packet filters (the name is interrupted by a record header)
  and DPI that reassembles TCP but parses only the first record. One segment: no wait.
- ``both``: ``tlsrec``, with the second record in its own segment.
- ``hostcase``: the HTTP header name written ``hOSt`` (RFC 9110 §5.1: field names are
  case-insensitive). Fools filters matching ``Host: name`` case-sensitively. One segment.

``chunks(strategy, data)`` returns None when the strategy does not apply to ``data``
(``tlsrec`` to plain HTTP, anything to bytes that name no host).
"""

from __future__ import annotations

from enum import StrEnum

from proxyd.protocol._tls_hello import HANDSHAKE, RECORD_HEADER, sni_from_client_hello

PREFIX = "desync:"


class Strategy(StrEnum):
    SPLIT = "split"
    TLSREC = "tlsrec"
    BOTH = "both"
    HOSTCASE = "hostcase"

    @property
    def route(self) -> str:
        return PREFIX + self.value

    @property
    def waits(self) -> bool:
        """Whether sending it waits for a segment to leave (costs a little time)."""
        return self in (Strategy.SPLIT, Strategy.BOTH)


# The ladders, cheapest first: no wait before a wait, one trick before two.
TLS_LADDER = (Strategy.TLSREC, Strategy.SPLIT, Strategy.BOTH)
HTTP_LADDER = (Strategy.HOSTCASE, Strategy.SPLIT)
# What the route was called before there was a ladder (state files, rules).
LEGACY_ROUTE = "desync"

DESCRIPTIONS = {
    Strategy.SPLIT: "direct, with the name cut across two TCP segments",
    Strategy.TLSREC: "direct, with the ClientHello as two TLS records cut inside the name",
    Strategy.BOTH: "direct, with the ClientHello as two TLS records in two TCP segments",
    Strategy.HOSTCASE: "direct, with the HTTP Host header's name in mixed case",
}


def strategy_of(route: str) -> Strategy | None:
    """The strategy a route name stands for; None for routes that are not desync."""
    if route == LEGACY_ROUTE:
        return Strategy.SPLIT
    if not route.startswith(PREFIX):
        return None
    try:
        return Strategy(route[len(PREFIX) :])
    except ValueError:
        return None


def _is_tls(data: bytes) -> bool:
    return data[:1] == bytes([HANDSHAKE])


def _sni_cut(data: bytes) -> int | None:
    name = sni_from_client_hello(data)
    start = data.find(name.encode("ascii")) if name else -1
    return start + max(1, len(name) // 2) if name and start >= 0 else None


def _host_value(data: bytes) -> tuple[int, int] | None:
    """(start, end) of the Host header's value in an HTTP head."""
    lower = data[:8192].lower()
    at = lower.find(b"\r\nhost:")
    if at < 0:
        return None
    start = at + len(b"\r\nhost:")
    end = lower.find(b"\r\n", start)
    value = lower[start : end if end >= 0 else len(lower)].strip()
    if not value:
        return None
    first = lower.index(value, start)
    return first, first + len(value)


def split_point(data: bytes) -> int | None:
    """Where to cut ``data`` so no segment holds the whole destination name; None when
    ``data`` names no host (nothing a filter could match on)."""
    if _is_tls(data):
        return _sni_cut(data)
    value = _host_value(data)
    if value is None:
        return None
    start, end = value
    return start + max(1, (end - start) // 2)


def _tls_records(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The first record re-framed as two, cut inside the server_name: (first record,
    second record, the bytes after the original record)."""
    cut = _sni_cut(data)
    if cut is None or len(data) < RECORD_HEADER:
        return None
    length = int.from_bytes(data[3:5], "big")
    end = RECORD_HEADER + length
    if len(data) < end or not RECORD_HEADER < cut < end:
        return None
    header, fragment = data[:3], data[RECORD_HEADER:end]
    k = cut - RECORD_HEADER
    first = header + k.to_bytes(2, "big") + fragment[:k]
    second = header + (length - k).to_bytes(2, "big") + fragment[k:]
    return first, second, data[end:]


def _hostcase(data: bytes) -> bytes | None:
    at = data[:8192].lower().find(b"\r\nhost:")
    if at < 0:
        return None
    return data[: at + 2] + b"hOSt:" + data[at + 7 :]


def chunks(strategy: Strategy, data: bytes) -> list[bytes] | None:
    """``data`` as ``strategy`` sends it, one chunk per TCP segment; None if it does not
    apply (nothing it could hide, or the wrong protocol)."""
    if strategy is Strategy.SPLIT:
        cut = split_point(data)
        return None if cut is None else [data[:cut], data[cut:]]
    if strategy is Strategy.HOSTCASE:
        if _is_tls(data):
            return None
        changed = _hostcase(data)
        return None if changed is None else [changed]
    if not _is_tls(data):
        return None
    records = _tls_records(data)
    if records is None:
        return None
    first, second, rest = records
    if strategy is Strategy.TLSREC:
        return [first + second + rest]
    return [first, second + rest]


def rejected(answer: bytes) -> bool:
    """Did the server refuse what a strategy made of the request? A TLS alert or an
    HTTP 400 as the first answer: the breakage guard marks the strategy broken for the
    domain, since a middlebox or server that mishandles it would do so every time."""
    if answer[:1] == b"\x15" and answer[1:2] == b"\x03":
        return True
    return answer.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400"))
