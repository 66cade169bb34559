"""Fuzz targets for the sans-IO parsers: each takes arbitrary bytes and raises
``AssertionError`` (or any unexpected exception) only when a parser breaks its contract.

The contracts, shared by the coverage-guided fuzzer (``tests/fuzz/run.py``) and the corpus
replay in the normal test run:

- ``http1_request``: ``parse_request`` returns None, a ``Request`` whose fields are safe to
  forward, or raises ``HttpError`` with a 4xx/5xx status; the verdict is the same however
  the bytes arrive; the body that follows is delimited the same whole or byte by byte.
- ``http1_response``: likewise for ``parse_response`` (errors are always 502).
- ``socks``: ``SocksHandshake`` yields only ``SendBytes`` then a ``ConnectRequest`` or a
  ``HandshakeFailed``, with or without required credentials, however the bytes arrive.

The input's length picks variants (split points, request method, credentials), so every
byte stays payload (the corpus files are plain captures) and the fuzzer explores them too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from proxyd.protocol._http1 import Framing, HttpError, Request, parse_request, parse_response
from proxyd.protocol._http1_body import BodyScanner
from proxyd.protocol._socks import ConnectRequest, Event, HandshakeFailed, SendBytes, SocksHandshake

LIMITS = {"max_head": 4096, "max_headers": 32, "max_line": 1024}
_FIELD_NAME = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _request_verdict(buf: bytes) -> tuple[str, object, int]:
    try:
        parsed = parse_request(buf, **LIMITS)
    except HttpError as error:
        assert 400 <= error.status <= 599 and error.reason, error
        return ("error", error.status, 0)
    if parsed is None:
        return ("incomplete", None, 0)
    request, head_len = parsed
    assert isinstance(request, Request) and 0 < head_len <= len(buf)
    for name, value in request.headers:
        assert name and set(name) <= _FIELD_NAME, name
        assert all(c == "\t" or " " <= c != "\x7f" for c in value), value
        assert value == value.strip(" \t")
    assert request.path.startswith("/") or request.is_connect or request.path == "*"
    if request.is_connect:
        assert 1 <= request.port <= 65535 and request.host
    return ("request", request, head_len)


def _growing(verdict: Callable[[bytes], tuple[str, object, int]], buf: bytes, step: int) -> object:
    for end in [*range(step, len(buf), step), len(buf)]:
        result = verdict(buf[:end])
        if result[0] != "incomplete":
            return result
    return verdict(buf)


def _scan(framing: Framing, pieces: list[bytes]) -> tuple[str, int, bool]:
    scanner = BodyScanner(framing)
    consumed = 0
    try:
        for piece in pieces:
            taken = scanner.feed(piece)
            assert 0 <= taken <= len(piece)
            consumed += taken
            if scanner.done:
                break
    except HttpError as error:
        assert error.status == 400
        return ("error", 0, False)
    return ("ok", consumed, scanner.done)


def http1_request(data: bytes) -> None:
    step, buf = len(data) % 16 + 1, data
    result = _request_verdict(buf)
    assert _growing(_request_verdict, buf, step) == result
    if result[0] == "request":
        request = result[1]
        assert isinstance(request, Request)
        rest = buf[result[2] :]
        whole = _scan(request.body, [rest])
        assert _scan(request.body, [rest[i : i + step] for i in range(0, len(rest), step)]) == whole


def http1_response(data: bytes) -> None:
    method, buf = ("GET", "HEAD", "CONNECT", "POST")[len(data) % 4], data

    def verdict(part: bytes) -> tuple[str, object, int]:
        try:
            parsed = parse_response(part, request_method=method, max_head=4096, max_headers=32)
        except HttpError as error:
            assert error.status == 502, error
            return ("error", error.status, 0)
        if parsed is None:
            return ("incomplete", None, 0)
        response, head_len = parsed
        assert 100 <= response.status <= 999 and 0 < head_len <= len(part)
        return ("response", response, head_len)

    assert _growing(verdict, buf, len(data) % 7 + 1) == verdict(buf)


def _only_alice(username: str, password: str) -> bool:
    return username == "alice" and password == "secret"


def _handshake(chunks: list[bytes], require_credentials: bool) -> tuple[list[Event], bytes]:
    hs = SocksHandshake(check_credentials=_only_alice if require_credentials else None)
    events: list[Event] = []
    for chunk in chunks:
        events += hs.receive_data(chunk)
    for event in events[:-1]:
        assert isinstance(event, SendBytes), events
    if events and isinstance(events[-1], ConnectRequest):
        request = events[-1]
        assert 1 <= request.port <= 0xFFFF
        assert request.host and request.host.isascii() and request.host.isprintable()
        if request.address_type != "domain":
            assert str(ipaddress.ip_address(request.host)) == request.host
        assert hs.failure_reply(1)[0] == (5 if request.version == 5 else 0)
    if events and isinstance(events[-1], HandshakeFailed):
        assert events[-1].reason
    return events, hs.leftover


def socks(data: bytes) -> None:
    require_credentials, step, buf = len(data) % 2 == 1, len(data) % 16 + 1, data
    whole = _handshake([buf], require_credentials)
    pieces = [buf[i : i + step] for i in range(0, len(buf), step)]
    assert _handshake(pieces, require_credentials) == whole


TARGETS: dict[str, Callable[[bytes], None]] = {
    "http1": http1_request,
    "http1_response": http1_response,
    "socks": socks,
}
