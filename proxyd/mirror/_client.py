"""Reaching a mirror: the aiohttp client over proxyd's own routes to the mirror host.

Private to ``proxyd.mirror._route`` (loaded only when a ``[[mirror]]`` is configured).

- ``MirrorClient()``: one per mirror; a keep-alive pool (an aiohttp session) per route
  and isolation key, opened through proxyd's dialers (``RouteConnector``), so the mirror
  gets the destination checks, upstream handshakes and typed errors of any route.
  ``await fetch(rt, host, port, method, url, headers, body) -> ClientResponse`` (``body``:
  a ``RequestBody``, streamed, or None) follows
  proxyd's plan for the mirror host: direct first (or its upstreams once the mirror is
  learned blocked too), the next route when one cannot connect, is reset before an
  answer or answers with a block page. On a first visit this is evidence like any
  other: direct failing and another route working teaches proxyd that the mirror host is
  blocked (the control rule). Raises ``MirrorUnreachable`` naming each route's failure.
  ``await reachable(rt, host, port)``: one connection on that plan (redirect mode).
  ``await close()``.
- ``request_headers(headers, hosts)``: the client's fields for the mirror.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from proxyd.errors import DialError
from proxyd.learning import Reason, classify_dial_error
from proxyd.mirror._rewrite import HostMap
from proxyd.outbound import Dialer, spawn
from proxyd.protocol import FRAMING_FIELDS, HOP_BY_HOP
from proxyd.routing import RoutePlan

if TYPE_CHECKING:
    from proxyd.runtime import Runtime

# aiohttp writes framing and Host itself; Accept-Encoding only names what we can decode.
_DROP_REQUEST = HOP_BY_HOP | FRAMING_FIELDS | {"accept-encoding"}
_CODINGS_WE_DECODE = ("gzip", "x-gzip", "deflate", "identity")
_SKIP_AUTO = ("Accept", "Accept-Encoding", "User-Agent")


class MirrorUnreachable(Exception):
    """No route to the mirror gave an answer; the text says what each one did."""


class _AsIs(AbstractResolver):
    """Hands the name to the dialer: resolving is the route's job (remote DNS upstream)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {"hostname": host, "host": host, "port": port, "family": family, "proto": 0, "flags": 0}
        ]

    async def close(self) -> None:
        return None


class RouteConnector(aiohttp.TCPConnector):
    """aiohttp connections opened by a proxyd dialer (direct or an upstream)."""

    def __init__(self, dialer: Dialer, *, connect_timeout: float, isolation: str | None) -> None:
        super().__init__(resolver=_AsIs(), keepalive_timeout=30.0)
        self.dialer = dialer
        self._connect_timeout = connect_timeout
        self._isolation = isolation

    async def _wrap_create_connection(
        self, *args: Any, addr_infos: Sequence[Any], **kwargs: Any
    ) -> tuple[asyncio.Transport, aiohttp.client_proto.ResponseHandler]:
        host, port = addr_infos[0][4][:2]
        conn = await self.dialer.dial(
            host, port, timeout=self._connect_timeout, isolation=self._isolation
        )
        for name in ("req", "timeout", "client_error"):
            kwargs.pop(name, None)
        try:
            return await self._loop.create_connection(*args, sock=conn.sock, **kwargs)
        except BaseException:
            conn.sock.close()
            raise


class RequestBody(Protocol):
    """The client's request body, read as the mirror takes it; ``started`` once the
    first byte was taken (from then on the request cannot go to another route)."""

    started: bool

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class MirrorClient:
    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str], aiohttp.ClientSession] = {}

    async def fetch(
        self,
        rt: Runtime,
        host: str,
        port: int,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: RequestBody | None,
    ) -> aiohttp.ClientResponse:
        plan = _plan(rt, host, port)
        learned = rt.learned if plan.learn else None
        failures: list[str] = []
        direct_failure: Reason | None = None
        for dialer in plan.routes:
            if body is not None and body.started:
                break  # the body went to a route that failed: it cannot be sent again
            session = self._session(rt, dialer, plan.isolation)
            reason: Reason | None
            try:
                resp = await session.request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    skip_auto_headers=_SKIP_AUTO,
                )
            except DialError as err:
                failures.append(f"{dialer.name}: {err.detail or err.reason}")
                reason = classify_dial_error(err)
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                failures.append(f"{dialer.name}: {_describe(err)}")
                timeout = isinstance(err, TimeoutError)
                reason = Reason.FIRST_BYTE_TIMEOUT if timeout else Reason.CONNECTION_RESET
            else:
                reason = None
                if learned is not None:
                    reason = learned.classify(_request_head(method, url, host), _head_of(resp))
                if reason is None:
                    if learned is not None and dialer is rt.router.direct:
                        learned.direct_worked(host)
                    elif learned is not None and direct_failure is not None:
                        learned.confirm(host, direct_failure, dialer.name)
                    return resp
                resp.release()
                failures.append(f"{dialer.name}: answered with a block page ({reason})")
            if learned is not None and dialer is rt.router.direct:
                learned.direct_failed(host, reason)
                direct_failure = reason
        raise MirrorUnreachable("; ".join(failures) or "no route to the mirror")

    async def reachable(self, rt: Runtime, host: str, port: int) -> None:
        plan = _plan(rt, host, port)
        failures = []
        for dialer in plan.routes:
            try:
                conn = await dialer.dial(
                    host, port, timeout=rt.config.limits.connect_timeout, isolation=plan.isolation
                )
            except DialError as err:
                failures.append(f"{dialer.name}: {err.detail or err.reason}")
                continue
            conn.sock.close()
            return
        raise MirrorUnreachable("; ".join(failures) or "no route to the mirror")

    def _session(self, rt: Runtime, dialer: Dialer, isolation: str | None) -> aiohttp.ClientSession:
        key = (dialer.name, isolation or "")
        session = self._sessions.get(key)
        connector = session.connector if session is not None else None
        if session is None or session.closed or getattr(connector, "dialer", None) is not dialer:
            if session is not None:
                spawn(session.close())  # its route was reconfigured
            limits = rt.config.limits
            session = aiohttp.ClientSession(
                connector=RouteConnector(
                    dialer, connect_timeout=limits.connect_timeout, isolation=isolation
                ),
                # The mirror's cookies belong to the browser, never to proxyd.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=limits.connect_timeout, sock_read=limits.idle_timeout
                ),
            )
            self._sessions[key] = session
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def _plan(rt: Runtime, host: str, port: int) -> RoutePlan:
    try:
        return rt.router.plan(host, port)
    except DialError as err:
        raise MirrorUnreachable(err.describe()) from None


def _request_head(method: str, url: str, host: str) -> bytes:
    path = "/" + url.split("://", 1)[-1].partition("/")[2]
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("latin-1", "replace")


def _head_of(resp: aiohttp.ClientResponse) -> bytes:
    """The answer head as it came, for the block-page check (which reads the head only:
    the body is the client's to stream)."""
    lines = [f"HTTP/1.1 {resp.status} {resp.reason or ''}".encode("latin-1", "replace")]
    lines += [name + b": " + value for name, value in resp.raw_headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def request_headers(headers: Iterable[tuple[str, str]], hosts: HostMap) -> list[tuple[str, str]]:
    out = []
    for name, value in headers:
        key = name.lower()
        if key in _DROP_REQUEST:
            if key == "accept-encoding":
                # Only codings proxyd can decode, so every HTML/CSS body can be rewritten.
                codings = [c.strip() for c in value.split(",")]
                kept = [c for c in codings if c.split(";")[0].strip().lower() in _CODINGS_WE_DECODE]
                if kept:
                    out.append((name, ", ".join(kept)))
            continue
        if key in ("referer", "origin"):
            value = _to_mirror_url(value, hosts)
        out.append((name, value))
    return out


def _to_mirror_url(value: str, hosts: HostMap) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    authority, slash, path = rest.partition("/")
    host, colon, port = authority.partition(":")
    mirror = hosts.to_mirror(host)
    if mirror is None:
        return value
    return f"{scheme}://{mirror}{colon}{port}{slash}{path}"


def _describe(err: BaseException) -> str:
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "connection closed before an answer"
    if isinstance(err, TimeoutError):
        return "no answer in time"
    text = str(err) or type(err).__name__
    return text.replace("\n", " ")
