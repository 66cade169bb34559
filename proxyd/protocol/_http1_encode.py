"""HTTP/1.1 heads out: requests for the origin, responses for the client, proxyd's own answers.

API::

    encode_request_for_origin(req, *, via=None) -> bytes      origin-form head for the server
    encode_response_for_client(resp, *, keep_alive) -> bytes  head for the client
    error_response(status, text, *, extra_headers=()) -> bytes   plain text, Connection: close
    simple_response(status, body, *, content_type, keep_alive=False, extra_headers=()) -> bytes
    HOP_BY_HOP, FRAMING_FIELDS   lowercase field names: never forwarded / the body's framing

Encoders strip hop-by-hop fields (Connection and the fields it names, Keep-Alive,
Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, TE, Trailer, Upgrade) but never
Host, Content-Length or Transfer-Encoding, even when Connection names them: bodies are
forwarded verbatim, so their framing must travel with them. The request keeps the client's
version so an HTTP/1.0 client never gets a chunked answer it cannot read.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

from proxyd.protocol._http1 import TCHAR, BodyKind, Request, Response, field_tokens

__all__ = [
    "FRAMING_FIELDS",
    "HOP_BY_HOP",
    "encode_request_for_origin",
    "encode_response_for_client",
    "error_response",
    "simple_response",
]

# Hop-by-hop fields (RFC 9110 7.6.1 and the Proxy-* ones) never cross a proxy; the mirror
# client and answer build their own drop lists from these too.
HOP_BY_HOP = frozenset(
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
FRAMING_FIELDS = frozenset(("host", "content-length", "transfer-encoding"))


def _forwarded_lines(
    headers: tuple[tuple[str, str], ...], *, keep_upgrade: bool, host_line: str | None
) -> list[str]:
    """Field lines minus hop-by-hop ones, one Content-Length, Host first when ``host_line``."""
    keys = "\n".join([name for name, _ in headers]).lower().split("\n") if headers else []
    drop = HOP_BY_HOP
    if "connection" in keys:
        named = ",".join([v for k, (_, v) in zip(keys, headers, strict=True) if k == "connection"])
        drop = drop | (field_tokens(named) - FRAMING_FIELDS)
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
        bad_name = not name or name.encode("latin-1").translate(None, TCHAR)
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
