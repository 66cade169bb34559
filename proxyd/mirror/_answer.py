"""What a mirror answered, streamed to the client under the original host.

Private to ``proxyd.mirror._route``, which builds these; ``inbound_http`` only sees
``MirrorAnswer``: ``await deliver(sock, version=, keep_alive=, timeout=) -> bool``
(whether the client connection may carry another request) and ``close()``.

- ``RedirectAnswer(req, location)``: 302 (307 for methods that keep their body).
- ``ProxiedAnswer(route, rt, req, resp)``: the mirror's aiohttp response, its head
  rewritten (``Location``, ``Set-Cookie``, hop-by-hop fields dropped) and its body
  streamed per ``mirror_rewrite.body_plan``: as is (with the mirror's Content-Length when
  known), or rewritten, chunked to an HTTP/1.1 client and close-delimited to HTTP/1.0.
  A body that breaks mid-way (the mirror resets, gzip does not decode) cuts the client
  connection: a truncated answer is honest, corrupt bytes are not.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import aiohttp

from proxyd.mirror._rewrite import (
    BodyDecoder,
    BodyPlan,
    DecodeError,
    HostMap,
    LinkRewriter,
    body_plan,
    rewrite_set_cookie,
    rewrite_url,
)
from proxyd.protocol import HOP_BY_HOP, http1

if TYPE_CHECKING:
    from proxyd.protocol import Request
    from proxyd.runtime import Runtime

log = logging.getLogger("proxyd.mirror")

_KEEPS_BODY = frozenset(("GET", "HEAD"))
# The body is re-framed for the client; over plain HTTP to the browser HSTS and Alt-Svc
# would name the mirror's HTTPS endpoints.
_DROP_RESPONSE = HOP_BY_HOP | {
    "transfer-encoding",
    "content-length",
    "strict-transport-security",
    "alt-svc",
}
_URL_HEADERS = frozenset(("location", "content-location", "refresh"))


class MirrorRouteInfo(Protocol):
    """What an answer needs of its mirror route."""

    name: str
    label: str
    hosts: HostMap


class MirrorAnswer(abc.ABC):
    """What a mirror answered, ready to be streamed to the client."""

    @abc.abstractmethod
    async def deliver(
        self, sock: socket.socket, *, version: str, keep_alive: bool, timeout: float
    ) -> bool: ...

    def close(self) -> None:
        return None


class RedirectAnswer(MirrorAnswer):
    def __init__(self, req: Request, location: str) -> None:
        self._req = req
        self._location = location

    async def deliver(
        self, sock: socket.socket, *, version: str, keep_alive: bool, timeout: float
    ) -> bool:
        req = self._req
        # An unread request body would be taken for the next request: close instead.
        keep_alive = keep_alive and req.body.kind is http1.BodyKind.NONE
        status, phrase = (
            (302, "Found") if req.method in _KEEPS_BODY else (307, "Temporary Redirect")
        )
        body = f"proxyd: this site is served from its mirror at {self._location}\n".encode()
        head = "\r\n".join(
            [
                f"HTTP/1.1 {status} {phrase}",
                f"Location: {self._location}",
                "Content-Type: text/plain; charset=utf-8",
                f"Content-Length: {len(body)}",
                "Connection: keep-alive" if keep_alive else "Connection: close",
                "\r\n",
            ]
        ).encode("latin-1")
        await asyncio.get_running_loop().sock_sendall(
            sock, head if req.method == "HEAD" else head + body
        )
        return keep_alive


class ProxiedAnswer(MirrorAnswer):
    def __init__(
        self, via: MirrorRouteInfo, rt: Runtime, req: Request, resp: aiohttp.ClientResponse
    ) -> None:
        self._route = via
        self._rt = rt
        self._req = req
        self._resp = resp

    def close(self) -> None:
        self._resp.close()

    async def deliver(
        self, sock: socket.socket, *, version: str, keep_alive: bool, timeout: float
    ) -> bool:
        resp, req = self._resp, self._req
        hosts = self._route.hosts
        plan = body_plan(resp.headers.get("Content-Type"), resp.headers.get("Content-Encoding"))
        no_body = req.method == "HEAD" or resp.status in (204, 304) or resp.status < 200
        lines = [f"HTTP/1.1 {resp.status} {resp.reason or ''}"]
        for name, value in _response_headers(resp.raw_headers, hosts, plan):
            lines.append(f"{name}: {value}")
        length = resp.content_length
        chunked = False
        if no_body:
            if length is not None and plan is BodyPlan.PASS:
                lines.append(f"Content-Length: {length}")
        elif length is not None and plan is BodyPlan.PASS:
            lines.append(f"Content-Length: {length}")
        elif version == "HTTP/1.1":
            lines.append("Transfer-Encoding: chunked")
            chunked = True
        else:
            keep_alive = False  # an HTTP/1.0 client learns the end by the close
        keep_alive = keep_alive and not self._rt.draining
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        loop = asyncio.get_running_loop()
        sent = 0
        try:
            await loop.sock_sendall(sock, head)
            if not no_body:
                sent = await self._stream(sock, plan, chunked=chunked, timeout=timeout)
        except (DecodeError, aiohttp.ClientError) as err:
            # Mid-body: the only honest answer left is a cut connection, never bad bytes.
            log.info("mirror %s: answer for %s cut short: %s", self._route.label, req.host, err)
            resp.close()
            return False
        except BaseException:
            resp.close()
            raise
        finally:
            self._rt.stats.add_bytes(self._route.name, 0, sent)
        resp.release()
        return keep_alive

    async def _stream(
        self, sock: socket.socket, plan: BodyPlan, *, chunked: bool, timeout: float
    ) -> int:
        loop = asyncio.get_running_loop()
        resp = self._resp
        decoder = (
            BodyDecoder(resp.headers.get("Content-Encoding", "").strip().lower())
            if plan is BodyPlan.DECODE_REWRITE
            else None
        )
        rewriter = LinkRewriter(self._route.hosts) if plan is not BodyPlan.PASS else None
        sent = 0

        async def send(data: bytes) -> None:
            nonlocal sent
            if not data:
                return
            sent += len(data)
            if chunked:
                data = b"%x\r\n%b\r\n" % (len(data), data)
            await loop.sock_sendall(sock, data)

        while True:
            async with asyncio.timeout(timeout):
                data = await resp.content.readany()
            if not data:
                break
            pieces: Iterable[bytes] = decoder.feed(data) if decoder is not None else (data,)
            for piece in pieces:
                await send(rewriter.feed(piece) if rewriter is not None else piece)
        if decoder is not None:
            decoder.finish()
        if rewriter is not None:
            await send(rewriter.finish())
        if chunked:
            await loop.sock_sendall(sock, b"0\r\n\r\n")
        return sent


def _response_headers(
    raw: Iterable[tuple[bytes, bytes]], hosts: HostMap, plan: BodyPlan
) -> list[tuple[str, str]]:
    out = []
    for raw_name, raw_value in raw:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        key = name.lower()
        if key in _DROP_RESPONSE or (key == "content-encoding" and plan is BodyPlan.DECODE_REWRITE):
            continue
        if key in _URL_HEADERS:
            value = rewrite_url(value, hosts)
        elif key == "set-cookie":
            value = rewrite_set_cookie(value, hosts)
        out.append((name, value))
    return out
