"""Sans-IO HTTP/1.1 proxy framing: request and response heads in, typed events out, bytes back.

The daemon reads a client's head with ``loop.sock_recv`` into one growing buffer and calls
``parse_request`` on it after every read; bodies are forwarded verbatim while a ``BodyScanner``
says where they end. Nothing here touches a socket or a clock.

API::

    parse_request(buf, *, max_head=65536, max_headers=100, max_line=8192)
        -> (Request, head_len) | None          None: need more bytes; buf[head_len:] is body
    parse_response(buf, *, request_method, max_head=65536, max_headers=100)
        -> (Response, head_len) | None
    encode_request_for_origin(req, *, via=None) -> bytes      origin-form head for the server
    encode_response_for_client(resp, *, keep_alive) -> bytes  head for the client
    BodyScanner(framing).feed(data) -> int    bytes of data that belong to the body; .done
    error_response(status, text, *, extra_headers=()) -> bytes   plain text, Connection: close
    simple_response(status, body, *, content_type, keep_alive=False, extra_headers=()) -> bytes
    HttpError(status, reason)   .status is the answer the client should get

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
  writes ``encode_response_for_client`` of it plus every byte after its head to the client,
  stops parsing both directions and relays them raw until either side closes; any other
  answer is an ordinary response.
- ``expect_continue``: the caller may forward a ``100 Continue`` (an interim ``Response``) or
  answer the final status before reading the body.

Responses: the same syntax rules, but every failure raises ``HttpError(502)`` (that is what
the client should see). Body: HEAD, 1xx, 204, 304 and 2xx to CONNECT -> NONE; chunked as the
final coding -> CHUNKED; other codings -> UNTIL_CLOSE; else Content-Length; else UNTIL_CLOSE.
``Response.interim`` marks 1xx other than 101: forward it and parse the next head (never send
one to an HTTP/1.0 client, RFC 9110 15.2).

Encoders strip hop-by-hop fields (Connection and the fields it names, Keep-Alive,
Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, TE, Trailer, Upgrade) but never
Host, Content-Length or Transfer-Encoding, even when Connection names them: bodies are
forwarded verbatim, so their framing must travel with them. The request keeps the client's
version so an HTTP/1.0 client never gets a chunked answer it cannot read.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import ClassVar

from proxyd.errors import ProxydError

__all__ = [
    "BodyKind",
    "BodyScanner",
    "Framing",
    "HttpError",
    "Request",
    "Response",
    "encode_request_for_origin",
    "encode_response_for_client",
    "error_response",
    "parse_request",
    "parse_response",
    "simple_response",
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


_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VCHAR = bytes(range(0x21, 0x7F))
# Field bytes minus HT/SP/VCHAR/obs-text leaves only controls; CR/LF are checked separately.
_FIELD_BYTES = bytes(range(0x20, 0x7F)) + b"\t\r\n" + bytes(range(0x80, 0x100))
_VERSIONS = frozenset((b"HTTP/1.1", b"HTTP/1.0"))
_VERSION_SHAPE = re.compile(rb"HTTP/[0-9]\.[0-9]")
_REG_NAME = re.compile(r"[a-z0-9._-]+")
_IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
_KNOWN_CODINGS = frozenset(("gzip", "x-gzip", "deflate", "compress", "x-compress", "identity"))
_HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    )
)
_FRAMING_FIELDS = frozenset(("host", "content-length", "transfer-encoding"))
_UNIQUE_REQUEST_FIELDS = frozenset(("host", "proxy-authorization"))
_TCHAR_OR_NL = _TCHAR + b"\n"


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
    if not method or method.translate(None, _TCHAR):
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


def _tokens(value: str | None) -> set[str]:
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
        if not coding or coding.encode("latin-1").translate(None, _TCHAR):
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
    conn = _tokens(by_name.get("connection")) | _tokens(by_name.get("proxy-connection"))
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
        "100-continue" in _tokens(by_name.get("expect")),
        method in _IDEMPOTENT,
        method == "GET" and "upgrade" in conn and "websocket" in _tokens(by_name.get("upgrade")),
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
    conn = _tokens(by_name.get("connection"))
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


def _forwarded_lines(
    headers: tuple[tuple[str, str], ...], *, keep_upgrade: bool, host_line: str | None
) -> list[str]:
    """Field lines minus hop-by-hop ones, one Content-Length, Host first when ``host_line``."""
    keys = "\n".join([name for name, _ in headers]).lower().split("\n") if headers else []
    drop = _HOP_BY_HOP
    if "connection" in keys:
        named = ",".join([v for k, (_, v) in zip(keys, headers, strict=True) if k == "connection"])
        drop = drop | (_tokens(named) - _FRAMING_FIELDS)
    if keep_upgrade:
        drop = drop - {"upgrade"}
    lines = [] if host_line is None else [host_line]
    length_seen = False
    for key, (name, value) in zip(keys, headers, strict=True):
        if key in drop or (key == "host" and host_line is not None):
            continue
        if key == "content-length":
            if length_seen:
                continue
            length_seen = True
            value = value.split(",")[0].strip(" \t")
        lines.append(f"{name}: {value}")
    return lines


def encode_request_for_origin(req: Request, *, via: str | None = None) -> bytes:
    if req.is_connect:
        raise ValueError("CONNECT is tunnelled, not forwarded")
    host_line = None
    if not req.origin_form:  # the target's authority wins over Host, RFC 9112 3.2.2
        host = f"[{req.host}]" if ":" in req.host else req.host
        host_line = f"Host: {host}" if req.port == 80 else f"Host: {host}:{req.port}"
    lines = [f"{req.method} {req.path} {req.version}"]
    lines += _forwarded_lines(req.headers, keep_upgrade=req.upgrade, host_line=host_line)
    if req.upgrade:
        lines.append("Connection: upgrade")
    if via:
        lines.append(f"Via: {req.version[5:]} {via}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def encode_response_for_client(resp: Response, *, keep_alive: bool) -> bytes:
    switching = resp.status == 101
    lines = [f"HTTP/1.1 {resp.status} {resp.reason}"]
    lines += _forwarded_lines(resp.headers, keep_upgrade=switching, host_line=None)
    if switching:
        lines.append("Connection: upgrade")
    elif resp.interim:
        pass  # interim responses carry no framing of their own
    elif keep_alive and resp.body.kind is not BodyKind.UNTIL_CLOSE:
        # HTTP/1.0 clients only keep the connection when told so; 1.1 clients ignore it.
        lines.append("Connection: keep-alive")
    else:
        lines.append("Connection: close")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def simple_response(
    status: int,
    body: bytes,
    *,
    content_type: str,
    keep_alive: bool = False,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive" if keep_alive else "Connection: close",
    ]
    for name, value in extra_headers:
        bad_name = not name or name.encode("latin-1").translate(None, _TCHAR)
        if bad_name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} would break the response head")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1") + body


def error_response(
    status: int, text: str, *, extra_headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    body = (text + "\n").encode()
    content_type = "text/plain; charset=utf-8"
    return simple_response(status, body, content_type=content_type, extra_headers=extra_headers)


_CHUNK_LINE_LIMIT = 8192
_TRAILER_LIMIT = 65536
_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:[ \t]*;[ \t]*[-!#$%&'*+.^_`|~0-9A-Za-z]+"
    rb"(?:[ \t]*=[ \t]*(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+"
    rb'|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))?)*\r\n'
)
_TRAILER_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t \x21-\x7e\x80-\xff]*\r\n")
_SIZE, _DATA, _DATA_CR, _DATA_LF, _TRAILER = range(5)


class BodyScanner:
    """Finds the end of a body whose bytes are forwarded verbatim.

    Chunk data is skipped by arithmetic; only size lines and trailers are looked at, so a
    large chunk costs the same as a small one. Malformed chunked framing -> HttpError(400).
    """

    __slots__ = ("_kind", "_line", "_remaining", "_state", "_trailer_bytes", "done")

    def __init__(self, framing: Framing) -> None:
        self._kind = framing.kind
        self._remaining = framing.length
        self._state = _SIZE
        self._line = b""
        self._trailer_bytes = 0
        self.done = framing.kind is BodyKind.NONE or (
            framing.kind is BodyKind.LENGTH and framing.length == 0
        )

    def feed(self, data: memoryview | bytes | bytearray) -> int:
        if self.done:
            return 0
        if self._kind is BodyKind.LENGTH:
            taken = min(len(data), self._remaining)
            self._remaining -= taken
            self.done = self._remaining == 0
            return taken
        if self._kind is BodyKind.UNTIL_CLOSE:
            return len(data)
        return self._feed_chunked(data)

    def _feed_chunked(self, data: memoryview | bytes | bytearray) -> int:
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == _DATA:
                taken = min(self._remaining, n - i)
                i += taken
                self._remaining -= taken
                if not self._remaining:
                    self._state = _DATA_CR
            elif state == _DATA_CR:
                if data[i : i + 2] == b"\r\n":  # the usual case, one step instead of two
                    i += 2
                    self._state = _SIZE
                    continue
                if data[i] != 13:
                    raise HttpError(400, "chunk data not followed by CRLF")
                i += 1
                self._state = _DATA_LF
            elif state == _DATA_LF:
                if data[i] != 10:
                    raise HttpError(400, "chunk data not followed by CRLF")
                i += 1
                self._state = _SIZE
            else:
                # A small window: size lines are short, and copying more would cost per chunk.
                window = bytes(data[i : i + 256])
                if state == _SIZE and not self._line:
                    whole_line = _SIZE_LINE.match(window)
                    if whole_line:  # fast path; anything unusual takes the general one below
                        i += whole_line.end()
                        self._remaining = int(whole_line[1], 16)
                        self._state = _DATA if self._remaining else _TRAILER
                        continue
                lf = window.find(b"\n")
                if lf < 0:
                    self._line += window
                    i += len(window)
                    if len(self._line) > _CHUNK_LINE_LIMIT:
                        raise HttpError(400, "chunk size or trailer line too long")
                    continue
                i += lf + 1
                line, self._line = self._line + window[: lf + 1], b""
                if len(line) > _CHUNK_LINE_LIMIT:
                    raise HttpError(400, "chunk size or trailer line too long")
                if state == _SIZE:
                    self._chunk_size_line(line)
                elif line == b"\r\n":
                    self.done = True
                    return i
                else:
                    self._trailer_line(line)
        return i

    def _chunk_size_line(self, line: bytes) -> None:
        match = _SIZE_LINE.fullmatch(line)
        if match is None:
            raise HttpError(400, "malformed chunk size line")
        self._remaining = int(match[1], 16)
        self._state = _DATA if self._remaining else _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        self._trailer_bytes += len(line)
        if self._trailer_bytes > _TRAILER_LIMIT:
            raise HttpError(400, "trailer section too large")
        if not _TRAILER_LINE.fullmatch(line):
            raise HttpError(400, "malformed trailer field")
