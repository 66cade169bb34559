"""Heads of the common shape, read and rewritten by compiled regexes (validated in C).

The data plane reads every request and answer head here first. Each regex accepts only a
strict subset of what ``http1`` accepts: token field names directly followed by a colon,
values of HT, SP, visible ASCII or obs-text, every line ended by CRLF. So obs-fold, bare CR
or LF, NUL and other controls, whitespace before a colon never match, and neither does
anything unusual that changes the meaning (a body, an upgrade, a duplicate Host, a
Connection field naming other fields, a Transfer-Encoding other than ``chunked``).
``None`` means "not this shape": the caller then asks ``http1``'s strict parser, which
either raises the ``HttpError`` the client must get or returns the objects the control
plane works with. Every smuggling defence is therefore ``http1``'s, with its tests.

API::

    read_request(buf, end, via) -> SimpleRequest | None   buf[:end]: the head up to CRLFCRLF;
                                                        via: add proxyd's Via field
    read_answer(buf, end, method) -> SimpleAnswer | None
    answer_head_for_client(buf, answer, keep_alive) -> bytes
    LENGTH, CHUNKED, NONE      framing kinds of SimpleAnswer

SimpleRequest = (method, host, port, keep_alive, proxy_authorization, head for the origin)
SimpleAnswer = (status, framing kind, length, keep_alive, end of the status line, fields)
"""

from __future__ import annotations

import re

__all__ = [
    "CHUNKED",
    "LENGTH",
    "NONE",
    "SimpleAnswer",
    "SimpleRequest",
    "answer_head_for_client",
    "read_answer",
    "read_request",
]

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_FIELDS = rb"((?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
# Methods without a body that the data plane forwards; the others go to the control plane.
_REQUEST = re.compile(
    rb"(GET|HEAD|OPTIONS|DELETE|TRACE) http://([a-z0-9._-]+)(?::([0-9]{1,5}))?"
    rb"(/[\x21\x22\x24-\x7e]*) HTTP/1\.([01])\r\n" + _FIELDS
)
_REQUEST_NOTABLE = re.compile(
    rb"^(host|connection|proxy-connection|proxy-authorization|content-length|"
    rb"transfer-encoding|upgrade|expect):[ \t]*([^\r]*?)[ \t]*\r\n",
    re.IGNORECASE | re.MULTILINE,
)
_HOP = (
    rb"connection|keep-alive|proxy-connection|proxy-authorization|proxy-authenticate|"
    rb"te|trailer|upgrade"
)
_REQUEST_DROP = re.compile(rb"^(?:host|" + _HOP + rb"):[^\r]*\r\n", re.IGNORECASE | re.MULTILINE)
# "Connection: close" names a field "close" too, which must then not be forwarded.
_REQUEST_DROP_CLOSE = re.compile(
    rb"^(?:host|close|" + _HOP + rb"):[^\r]*\r\n", re.IGNORECASE | re.MULTILINE
)
_ANSWER = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*\r\n" + _FIELDS)
_ANSWER_NOTABLE = re.compile(
    rb"^(content-length|transfer-encoding|connection):[ \t]*([^\r]*?)[ \t]*\r\n",
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER_DROP = re.compile(rb"^(?:" + _HOP + rb"):[^\r]*\r\n", re.IGNORECASE | re.MULTILINE)
_ANSWER_DROP_CLOSE = re.compile(
    rb"^(?:close|" + _HOP + rb"):[^\r]*\r\n", re.IGNORECASE | re.MULTILINE
)
_DIGITS = re.compile(rb"[0-9]{1,19}")
_CONNECTION_TOKENS = frozenset((b"", b"keep-alive", b"close"))

NONE, LENGTH, CHUNKED = 0, 1, 2

SimpleRequest = tuple[str, str, int, bool, "str | None", bytes]
SimpleAnswer = tuple[int, int, int, bool, int, bytes]


def _connection_tokens(value: bytes) -> set[bytes] | None:
    """Tokens of Connection (lowercase); None when one names a field other than these two."""
    tokens = {t.strip(b" \t") for t in value.lower().split(b",")}
    if not tokens <= _CONNECTION_TOKENS:
        return None
    return tokens


def read_request(buf: bytes, end: int, via: bool) -> SimpleRequest | None:
    """A body-less absolute-form request of the common shape, or None (ask ``http1``)."""
    m = _REQUEST.match(buf, 0, end)
    if m is None or m.end() != end:
        return None
    method, host, port_text, path, minor, block = m.groups()
    port = 80
    if port_text is not None:
        port = int(port_text)
        if not 0 < port < 65536:
            return None
    connection = b""
    authorization = None
    host_seen = False
    for name, value in _REQUEST_NOTABLE.findall(block):
        name = name.lower()
        if name == b"connection" or name == b"proxy-connection":
            connection += b"," + value
        elif name == b"host":
            if host_seen:
                return None
            host_seen = True
        elif name == b"proxy-authorization":
            if authorization is not None:
                return None
            authorization = value.decode("latin-1")
        else:
            return None  # a body, an upgrade or an expectation: the control plane's
    tokens = _connection_tokens(connection)
    if tokens is None:
        return None
    if b"close" in tokens:
        keep_alive = False
        block = _REQUEST_DROP_CLOSE.sub(b"", block)
    else:
        keep_alive = minor == b"1" or b"keep-alive" in tokens
        block = _REQUEST_DROP.sub(b"", block)
    authority = host if port == 80 else b"%s:%d" % (host, port)
    head = b"%s %s HTTP/1.%s\r\nHost: %s\r\n%s%s\r\n" % (
        method,
        path,
        minor,
        authority,
        block,
        b"Via: 1.%s 1.1 proxyd\r\n" % minor if via else b"",
    )
    return method.decode(), host.decode(), port, keep_alive, authorization, head


def read_answer(buf: bytes | bytearray, end: int, method: str) -> SimpleAnswer | None:
    """A final or interim answer of the common shape, or None (ask ``http1``).

    Framing as RFC 9112 6.3 says; answers that end when the origin closes, 101, and unusual
    framing fields are left to ``http1`` and the control plane.
    """
    m = _ANSWER.match(buf, 0, end)
    if m is None or m.end() != end:
        return None
    minor, code, block = m.groups()
    status = int(code)
    if status == 101:
        return None
    length = -1
    chunked = False
    connection = b""
    for name, value in _ANSWER_NOTABLE.findall(block):
        name = name.lower()
        if name == b"connection":
            connection += b"," + value
        elif name == b"content-length":
            if length >= 0 or not _DIGITS.fullmatch(value):
                return None
            length = int(value)
        elif chunked or minor == b"0" or value.lower() != b"chunked":
            return None
        else:
            chunked = True
    tokens = _connection_tokens(connection)
    if tokens is None or (chunked and length >= 0):
        return None
    if method == "HEAD" or status < 200 or status == 204 or status == 304:
        kind = NONE
    elif chunked:
        kind = CHUNKED
    elif length >= 0:
        kind = LENGTH
    else:
        return None  # until the origin closes
    keep_alive = b"close" not in tokens and (minor == b"1" or b"keep-alive" in tokens)
    drop = _ANSWER_DROP_CLOSE if b"close" in tokens else _ANSWER_DROP
    return status, kind, length, keep_alive, buf.index(b"\n") + 1, drop.sub(b"", block)


def answer_head_for_client(buf: bytes | bytearray, answer: SimpleAnswer, keep_alive: bool) -> bytes:
    """The head the client gets: HTTP/1.1, hop-by-hop fields dropped, our Connection field."""
    line_end, fields = answer[4], answer[5]
    connection = b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n"
    return b"HTTP/1.1" + bytes(buf[8:line_end]) + fields + connection
