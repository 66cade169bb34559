"""The name a transparent connection is for, read from its first bytes, sans-IO.

A device that knows nothing of the proxy still says where it is going: a TLS ClientHello
carries the server name (SNI), a plain HTTP request its Host. ``read_name(data)`` looks
at what arrived so far and answers one of:

- ``NEED_MORE``: the bytes are a prefix of a hello or a request head; read more.
- ``Named(name, kind)``: ``kind`` is "tls" or "http"; ``name`` is lower-case, an IP
  literal when the client used one.
- ``Nameless(kind)``: TLS without SNI ("tls"), a malformed or over-long head, or
  another protocol ("other"); the connection goes to its original address.

Bounded: more than ``max_bytes`` without a whole hello or head is nameless, so a client
cannot make proxyd buffer without end.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from proxyd.protocol._http1 import HttpError, parse_request
from proxyd.protocol._tls_hello import HANDSHAKE, RECORD_HEADER, sni_from_client_hello

# A ClientHello with post-quantum key shares is ~1.8 KB; 16 KiB is the largest record.
MAX_FIRST_BYTES = 32 * 1024
_CLIENT_HELLO = 1
# An HTTP request starts with a method token in capitals (RFC 9110 lists none longer than 7;
# extensions such as PROPPATCH and MKCALENDAR are longer).
_METHOD_PREFIX = re.compile(rb"[A-Z]{1,20}\Z")
_METHOD = re.compile(rb"[A-Z]{1,20} ")


class _NeedMore(enum.Enum):
    NEED_MORE = "need more"


NEED_MORE = _NeedMore.NEED_MORE


@dataclass(frozen=True, slots=True)
class Named:
    name: str
    kind: str  # "tls" | "http"


@dataclass(frozen=True, slots=True)
class Nameless:
    kind: str  # "tls" | "http" | "other"


FirstName = Named | Nameless | _NeedMore


def read_name(data: bytes, *, max_bytes: int = MAX_FIRST_BYTES) -> FirstName:
    if not data:
        return NEED_MORE
    if data[0] == HANDSHAKE:
        return _tls(data, max_bytes)
    if _METHOD.match(data):
        return _http(data, max_bytes)
    if _METHOD_PREFIX.match(data):
        return NEED_MORE
    return Nameless("other")


def _tls(data: bytes, max_bytes: int) -> FirstName:
    complete = _client_hello_complete(data)
    if complete is None:
        return Nameless("other")  # a 0x16 first byte and then no TLS record
    if not complete:
        return NEED_MORE if len(data) < max_bytes else Nameless("tls")
    name = sni_from_client_hello(data)
    return Nameless("tls") if name is None else Named(name, "tls")


def _client_hello_complete(data: bytes) -> bool | None:
    """Whether the handshake records so far hold the whole ClientHello; None: not TLS.

    The hello may span several records (large key shares, or a client's own splitting),
    so it is whole when the joined fragments reach the length its header announces.
    """
    fragments = bytearray()
    pos = 0
    while pos + RECORD_HEADER <= len(data):
        header = data[pos : pos + RECORD_HEADER]
        if header[0] != HANDSHAKE or header[1] != 0x03:
            return None
        length = int.from_bytes(header[3:5], "big")
        fragments += data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if len(fragments) >= 4:
            if fragments[0] != _CLIENT_HELLO:
                return None
            if len(fragments) >= 4 + int.from_bytes(fragments[1:4], "big"):
                return True
    if pos < len(data) and len(data) - pos < RECORD_HEADER and data[pos] != HANDSHAKE:
        return None
    if len(data) >= 2 and data[1] != 0x03:
        return None
    return False


def _http(data: bytes, max_bytes: int) -> FirstName:
    try:
        parsed = parse_request(data, max_head=max_bytes)
    except HttpError:
        return Nameless("http")
    if parsed is None:
        return NEED_MORE if len(data) < max_bytes else Nameless("http")
    request, _ = parsed
    if not request.host:
        return Nameless("http")  # HTTP/1.0 without Host
    return Named(request.host, "http")
