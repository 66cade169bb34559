# Over 400 lines: request and answer head parsers share the field-block smuggling checks.
"""Sans-IO HTTP/1.1 proxy framing: request and response heads in, typed events out.

The daemon reads a client's head with ``loop.sock_recv`` into one growing buffer and calls
``parse_request`` on it after every read; bodies are forwarded verbatim while a ``BodyScanner``
(``_http1_body``) says where they end, and heads go out through ``_http1_encode``.
Nothing here touches a socket or a clock.

API::

    parse_request(buf, *, max_head=65536, max_headers=100, max_line=8192)
        -> (Request, head_len) | None          None: need more bytes; buf[head_len:] is body
    parse_response(buf, *, request_method, max_head=65536, max_headers=100)
        -> (Response, head_len) | None
    Request, Response       parsed heads; Framing(kind: BodyKind, length) says how a body ends
    HttpError(status, reason)   .status is the answer the client should get
    field_tokens(value) -> set[str]   lowercase tokens of a comma-separated field value
    TCHAR                   the bytes a token (method, field name, coding) may contain

``buf`` is ``bytes`` or ``bytearray``. Parsing is a pure function of the buffered bytes and
every error a prefix can raise is the one the whole head raises, so feeding byte by byte gives
the outcome of feeding everything at once.

Request decisions (request-smuggling defences first):

- 400: bare CR or LF, any control byte (NUL, DEL, ...) in the head, obs-fold, a header name
  that is not a token or has whitespace before the colon, a method that is not a token, a
  target with anything but visible ASCII, request line not exactly three SP-separated parts.
- Content-Length must be 1..19 digits. Identical duplicates (``5, 5`` or two lines) are
  accepted as RFC 9110 section 8.6 allows, and the encoders then emit one; differing -> 400.
- Transfer-Encoding must be exactly ``chunked`` (case-insensitive): other known codings ->
  501, anything else (empty elements, non-tokens, chunked twice) -> 400; with Content-Length,
  or in an HTTP/1.0 request -> 400. CONNECT with content (chunked or a non-zero length) -> 400.
- Versions: HTTP/1.1 and HTTP/1.0; other ``HTTP/d.d`` (the HTTP/2 preface) -> 505.
- 414 when the request line (without CRLF) exceeds ``max_line``, even before the head ends;
  431 when the head (terminating blank line included) exceeds ``max_head`` or has more than
  ``max_headers`` fields. Empty lines before the request line are skipped (RFC 9112 2.2).
- Targets: absolute-form ``http://host[:port]/path`` (scheme case-insensitive; userinfo,
  fragments, empty host, port 0 or an unbracketed IPv6 -> 400; the Host header is ignored as
  RFC 9112 3.2.2 requires). CONNECT takes authority-form ``host:port`` only. Origin-form
  (``/path``) and ``OPTIONS *`` set ``origin_form``: the request is for the proxy itself and
  host/port come from the Host header. More than one Host or Proxy-Authorization -> 400;
  HTTP/1.1 origin-form without Host -> 400. Hosts are lowercase reg-names of ``[a-z0-9._-]``
  or IP literals; IPv6 is reported without brackets in RFC 5952 form, IPv4-mapped IPv6 as
  the IPv4 address. Numeric oddities such as ``127.1`` pass as reg-names: destination policy
  must judge resolved addresses, not these strings.
- ``headers`` keep the client's order and case, values without surrounding whitespace, decoded
  as latin-1 (obs-text survives a round trip); repeated fields stay repeated.
- ``keep_alive`` is what the client asked for: Connection and Proxy-Connection tokens, 1.1
  defaults on, 1.0 needs ``keep-alive``.
- ``upgrade``: a GET with ``Upgrade: websocket`` and ``Connection: upgrade``. The encoder keeps
  both (other upgrades, h2c included, are stripped). When the server answers 101 the caller
  writes ``http1_encode.encode_response_for_client`` of it plus every byte after its head to
  the client, stops parsing both directions and relays them raw until either side closes; any
  other answer is an ordinary response.
- ``expect_continue``: the caller may forward a ``100 Continue`` (an interim ``Response``) or
  answer the final status before reading the body.

Responses: the same syntax rules, but every failure raises ``HttpError(502)`` (that is what
the client should see). Body: HEAD, 1xx, 204, 304 and 2xx to CONNECT -> NONE; chunked as the
final coding -> CHUNKED; other codings -> UNTIL_CLOSE; else Content-Length; else UNTIL_CLOSE.
``Response.interim`` marks 1xx other than 101: forward it and parse the next head (never send
one to an HTTP/1.0 client, RFC 9110 15.2).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import ClassVar

from proxyd.errors import ProxydError

__all__ = [
    "TCHAR",
    "BodyKind",
    "Framing",
    "HttpError",
    "Request",
    "Response",
    "field_tokens",
    "parse_request",
    "parse_response",
]


class HttpError(ProxydError):
    """A head or body the proxy refuses; ``status`` is the answer the client should get."""

    def __init__(self, status: int, reason: str, *, limit: str | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.limit = limit  # the config key of the limit that was exceeded, if one was


class BodyKind(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until_close"


@dataclass(frozen=True, slots=True)
class Framing:
    """How a message body ends; ``length`` only means something for LENGTH."""

    kind: BodyKind
    length: int = 0

    NONE: ClassVar[Framing]
    CHUNKED: ClassVar[Framing]
    UNTIL_CLOSE: ClassVar[Framing]


Framing.NONE = Framing(BodyKind.NONE)
Framing.CHUNKED = Framing(BodyKind.CHUNKED)
Framing.UNTIL_CLOSE = Framing(BodyKind.UNTIL_CLOSE)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    host: str
    port: int
    path: str
    is_connect: bool
    origin_form: bool
    body: Framing
    keep_alive: bool
    proxy_authorization: str | None
    expect_continue: bool
    idempotent: bool
    upgrade: bool


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: Framing
    keep_alive: bool

    @property
    def interim(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101


TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VCHAR = bytes(range(0x21, 0x7F))
# Field bytes minus HT/SP/VCHAR/obs-text leaves only controls; CR/LF are checked separately.
_FIELD_BYTES = bytes(range(0x20, 0x7F)) + b"\t\r\n" + bytes(range(0x80, 0x100))
_VERSIONS = frozenset((b"HTTP/1.1", b"HTTP/1.0"))
_VERSION_SHAPE = re.compile(rb"HTTP/[0-9]\.[0-9]")
_REG_NAME = re.compile(r"[a-z0-9._-]+")
_IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
_KNOWN_CODINGS = frozenset(("gzip", "x-gzip", "deflate", "compress", "x-compress", "identity"))
_UNIQUE_REQUEST_FIELDS = frozenset(("host", "proxy-authorization"))
_TCHAR_OR_NL = TCHAR + b"\n"


def _check_partial_line_endings(buf: bytes | bytearray, start: int, stop: int, status: int) -> None:
    crlf = buf.count(b"\r\n", start, stop)
    # The CR at the very end of a partial head may still get its LF.
    lone_cr = buf.count(b"\r", start, stop) - crlf - buf.endswith(b"\r", start, stop)
    if buf.count(b"\n", start, stop) != crlf or lone_cr:
        raise HttpError(status, "bare CR or LF in head")


def _skip_empty_lines(buf: bytes | bytearray, limit: int) -> int:
    start = 0
    while buf.startswith(b"\r\n", start) and start < limit:
        start += 2
    return start


def parse_request(
    buf: bytes | bytearray, *, max_head: int = 65536, max_headers: int = 100, max_line: int = 8192
) -> tuple[Request, int] | None:
    start = _skip_empty_lines(buf, max_head)
    end = buf.find(b"\r\n\r\n", start, max_head)
    if end < 0:
        part = bytes(buf[start:max_head])
        nl = part.find(b"\n")
        if nl < 0:
            if len(part) >= max_line + 2:
                raise HttpError(414, "request line too long", limit="max_line")
        else:
            _request_line(part[: nl + 1], max_line)
            _check_partial_line_endings(part, nl + 1, len(part), 400)
        if len(buf) >= max_head:
            raise HttpError(431, "request head too large", limit="max_head_bytes")
        return None
    nl = buf.find(b"\n", start)
    method, target, version = _request_line(bytes(buf[start : nl + 1]), max_line)
    block = bytes(buf[nl + 1 : end])
    fields, by_name = _fields(block, max_headers, 400, 431, _UNIQUE_REQUEST_FIELDS)
    return _request(method, target, version, fields, by_name), end + 4


def _request_line(line: bytes, max_line: int) -> tuple[str, str, str]:
    if len(line) - 2 > max_line:
        raise HttpError(414, "request line too long", limit="max_line")
    if not line.endswith(b"\r\n"):
        raise HttpError(400, "bare LF in request line")
    parts = line[:-2].split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in _VERSIONS:
        if _VERSION_SHAPE.fullmatch(version):
            raise HttpError(505, "HTTP version not supported")
        raise HttpError(400, "malformed HTTP version")
    if not method or method.translate(None, TCHAR):
        raise HttpError(400, "invalid method")
    if not target or target.translate(None, _VCHAR):
        raise HttpError(400, "invalid request target")
    return method.decode(), target.decode(), version.decode()


def _fields(
    block: bytes, max_headers: int, status: int, too_many: int, unique: frozenset[str]
) -> tuple[tuple[tuple[str, str], ...], dict[str, str]]:
    """Header fields in order, and by lowercase name with repeats combined as RFC 9110 5.3."""
    if not block:
        return (), {}
    crlf = block.count(b"\r\n")
    if block.count(b"\r") != crlf or block.count(b"\n") != crlf:
        raise HttpError(status, "bare CR or LF in head")
    if crlf >= max_headers:
        raise HttpError(too_many, "too many header fields", limit="max_headers")
    if block.translate(None, _FIELD_BYTES):
        raise HttpError(status, "control character in header")
    names = []
    values = []
    for line in block.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            raise HttpError(status, _diagnose_names([line]))
        names.append(name)
        values.append(value.strip(" \t"))
    joined = "\n".join(names)
    if "" in names or joined.encode("latin-1").translate(None, _TCHAR_OR_NL):
        raise HttpError(status, _diagnose_names(names))
    keys = joined.lower().split("\n")
    by_name = dict(zip(keys, values, strict=True))
    if len(by_name) < len(keys):
        by_name = {}
        for key, value in zip(keys, values, strict=True):
            if key in by_name:
                if key in unique:
                    raise HttpError(status, f"more than one {key}")
                value = f"{by_name[key]}, {value}"
            by_name[key] = value
    return tuple(zip(names, values, strict=True)), by_name


def _diagnose_names(names: list[str]) -> str:
    for name in names:
        if name[:1] in (" ", "\t"):
            return "obs-fold (line folding) is not allowed"
        if name.rstrip(" \t") != name:
            return "whitespace before colon"
    return "invalid header name or line without colon"


def field_tokens(value: str | None) -> set[str]:
    if not value:
        return set()
    return {t.strip(" \t").lower() for t in value.split(",")} - {""}


def _content_length(value: str, status: int) -> int:
    lengths = {v.strip(" \t") for v in value.split(",")}
    if len(lengths) != 1:
        raise HttpError(status, "conflicting Content-Length")
    (length,) = lengths
    if not (length.isdigit() and length.isascii() and len(length) <= 19):
        raise HttpError(status, "invalid Content-Length")
    return int(length)


def _codings(value: str, status: int) -> list[str]:
    codings = [c.strip(" \t").lower() for c in value.split(",")]
    for coding in codings:
        if not coding or coding.encode("latin-1").translate(None, TCHAR):
            raise HttpError(status, "malformed Transfer-Encoding")
    if codings.count("chunked") > 1:
        raise HttpError(status, "chunked applied twice")
    return codings


def _request_body(by_name: dict[str, str], version: str) -> Framing:
    te = by_name.get("transfer-encoding")
    cl = by_name.get("content-length")
    if te is not None:
        if cl is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if version == "HTTP/1.0":
            raise HttpError(400, "Transfer-Encoding in HTTP/1.0 request")
        codings = _codings(te, 400)
        if codings != ["chunked"]:
            if all(c in _KNOWN_CODINGS or c == "chunked" for c in codings):
                raise HttpError(501, "unsupported Transfer-Encoding")
            raise HttpError(400, "unknown Transfer-Encoding")
        return Framing.CHUNKED
    if cl is not None:
        return Framing(BodyKind.LENGTH, _content_length(cl, 400))
    return Framing.NONE


def _authority(authority: str, default_port: int | None) -> tuple[str, int]:
    if "@" in authority:
        raise HttpError(400, "userinfo in authority")
    if authority.startswith("["):
        close = authority.find("]")
        try:
            address = ipaddress.IPv6Address(authority[1:close] if close > 0 else "-")
        except ValueError:
            raise HttpError(400, "invalid IPv6 literal") from None
        if address.scope_id is not None:
            raise HttpError(400, "zone identifier in IPv6 literal")
        # Reported as IPv4 so loopback and private-address policy sees through the mapping.
        host = str(address.ipv4_mapped or address)
        rest = authority[close + 1 :]
    else:
        host, colon, port_text = authority.rpartition(":")
        if not colon:
            host, port_text = authority, ""
        host = host.lower()
        if ":" in host:
            raise HttpError(400, "IPv6 address must be bracketed")
        if not _REG_NAME.fullmatch(host):
            raise HttpError(400, "invalid host")
        rest = colon + port_text
    if not rest and default_port is not None:
        return host, default_port
    port_text = rest[1:]
    if rest[:1] != ":" or not (port_text.isdigit() and port_text.isascii() and len(port_text) < 6):
        raise HttpError(400, "missing or invalid port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise HttpError(400, "port out of range")
    return host, port


def _request(
    method: str,
    target: str,
    version: str,
    fields: tuple[tuple[str, str], ...],
    by_name: dict[str, str],
) -> Request:
    host_field = by_name.get("host")
    origin_form = False
    if method == "CONNECT":
        host, port = _authority(target, None)
        path = ""
    elif target[:7].lower() == "http://":
        if "#" in target:
            raise HttpError(400, "fragment in request target")
        rest = target[7:]
        authority = rest.split("/", 1)[0].split("?", 1)[0]
        host, port = _authority(authority, 80)
        path = rest[len(authority) :]
        path = path if path.startswith("/") else "/" + path
    elif target.startswith("/") or (target == "*" and method == "OPTIONS"):
        origin_form = True
        if host_field is None and version == "HTTP/1.1":
            raise HttpError(400, "missing Host")
        host, port = _authority(host_field, 80) if host_field is not None else ("", 80)
        path = target
    else:
        raise HttpError(400, "request target must be http:// absolute-form")
    body = _request_body(by_name, version)
    if method == "CONNECT" and (body.kind is BodyKind.CHUNKED or body.length):
        raise HttpError(400, "CONNECT request with content")  # RFC 9110 9.3.6: it has none
    conn = field_tokens(by_name.get("connection")) | field_tokens(by_name.get("proxy-connection"))
    return Request(
        method,
        target,
        version,
        fields,
        host,
        port,
        path,
        method == "CONNECT",
        origin_form,
        body,
        "close" not in conn and (version == "HTTP/1.1" or "keep-alive" in conn),
        by_name.get("proxy-authorization"),
        "100-continue" in field_tokens(by_name.get("expect")),
        method in _IDEMPOTENT,
        method == "GET"
        and "upgrade" in conn
        and "websocket" in field_tokens(by_name.get("upgrade")),
    )


def parse_response(
    buf: bytes | bytearray, *, request_method: str, max_head: int = 65536, max_headers: int = 100
) -> tuple[Response, int] | None:
    end = buf.find(b"\r\n\r\n", 0, max_head)
    if end < 0:
        _check_partial_line_endings(buf, 0, max_head, 502)
        if len(buf) >= max_head:
            raise HttpError(502, "response head too large")
        return None
    nl = buf.find(b"\n")
    line = bytes(buf[: nl + 1])
    if not line.endswith(b"\r\n") or b"\r" in line[:-2] or line.translate(None, _FIELD_BYTES):
        raise HttpError(502, "malformed status line")
    version, _, rest = line[:-2].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in _VERSIONS:
        raise HttpError(502, "unsupported HTTP version from server")
    if not (len(code) == 3 and code.isdigit() and b"100" <= code <= b"599"):
        raise HttpError(502, "invalid status code")
    status = int(code)
    fields, by_name = _fields(bytes(buf[nl + 1 : end]), max_headers, 502, 502, frozenset())
    body = _response_body(by_name, status, request_method, version)
    conn = field_tokens(by_name.get("connection"))
    keep_alive = (
        body.kind is not BodyKind.UNTIL_CLOSE
        and "close" not in conn
        and (version == b"HTTP/1.1" or "keep-alive" in conn)
    )
    response = Response(
        status, reason.decode("latin-1"), version.decode(), fields, body, keep_alive
    )
    return response, end + 4


def _response_body(
    by_name: dict[str, str], status: int, request_method: str, version: bytes
) -> Framing:
    if request_method == "HEAD" or status < 200 or status in (204, 304):
        return Framing.NONE
    if request_method == "CONNECT" and status < 300:
        return Framing.NONE
    te = by_name.get("transfer-encoding")
    cl = by_name.get("content-length")
    if te is not None:
        if cl is not None:
            raise HttpError(502, "both Content-Length and Transfer-Encoding")
        if version == b"HTTP/1.0":
            raise HttpError(502, "Transfer-Encoding in HTTP/1.0 response")
        codings = _codings(te, 502)
        if codings[-1] == "chunked":
            return Framing.CHUNKED
        if "chunked" in codings:
            raise HttpError(502, "chunked is not the final coding")
        return Framing.UNTIL_CLOSE
    if cl is not None:
        return Framing(BodyKind.LENGTH, _content_length(cl, 502))
    return Framing.UNTIL_CLOSE
