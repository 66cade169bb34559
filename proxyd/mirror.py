"""Mirror routes: a blocked plain-HTTP site served from its mirror (DESIGN §4 "Mirror").

- ``MirrorRoute(config)``: one ``[[mirror]]``. Its ``name`` is the route label
  ``mirror:<name>`` (metrics, learning, logs); ``hosts`` is its ``HostMap``; ``up`` and
  ``last_error`` its health as last seen (None: not tried yet).
  ``await answer(rt, req, body=None) -> MirrorAnswer`` answers one plain-HTTP request
  for a host it covers (``body``: a ``RequestBody`` streaming a Content-Length body; a
  chunked one is not forwarded), or raises ``AttemptFailed`` carrying a ``MirrorError``
  so that the next route takes over:
  - ``redirect``: a 302 (307 for methods that must keep their body) to the same path on
    the mirror, once the mirror was seen reachable on its own route;
  - ``proxy``: the request is sent to the mirror with the aiohttp client and the answer
    is streamed back under the original host (``proxyd.mirror_rewrite`` says what is
    rewritten). A connect error or a 5xx is a failure.
  The mirror is reached by its own route: proxyd's plan for the mirror host (direct
  first, or its upstreams when the mirror is learned blocked, or a rule's route), each
  through a keep-alive pool of its own, trying the next when one cannot connect or the
  connection is reset before an answer.
- ``MirrorAnswer`` (from ``proxyd.mirror_answer``): ``await deliver(sock, version=,
  keep_alive=, timeout=) -> bool`` (whether the client connection may carry another
  request), ``close()``.
- ``MirrorSet(configs)``: ``covering(host)``, ``get(name)``, ``routes``,
  ``reconfigure(configs)`` (keeps the pools of unchanged mirrors), ``await close()``,
  ``status(upstream_names) -> [MirrorStatus]`` for the admin API and status page.

Only plain HTTP can be rewritten: routing never offers a mirror to a CONNECT or SOCKS
tunnel (``MirrorRoute.dial`` refuses, should one ever try).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from proxyd import http1
from proxyd.config import MirrorConfig
from proxyd.detect import Reason
from proxyd.dialers import Connection, Dialer
from proxyd.errors import DialError, MirrorError
from proxyd.mirror_answer import MirrorAnswer, ProxiedAnswer, RedirectAnswer
from proxyd.mirror_rewrite import HostMap
from proxyd.race import AttemptFailed, spawn

if TYPE_CHECKING:
    from proxyd.http1 import Request
    from proxyd.runtime import Runtime

log = logging.getLogger("proxyd.mirror")

# A redirect is only as good as the mirror it sends the browser to: it is checked with a
# connection on the mirror's route, and a success is trusted for this long.
REACHABLE_FOR = 30.0
_DROP_REQUEST = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
        "transfer-encoding",
        "accept-encoding",
    )
)
_CODINGS_WE_DECODE = ("gzip", "x-gzip", "deflate", "identity")
_SKIP_AUTO = ("Accept", "Accept-Encoding", "User-Agent")


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


class _RouteConnector(aiohttp.TCPConnector):
    """aiohttp connections opened by a proxyd dialer (direct or an upstream), so the mirror
    gets proxyd's destination checks, upstream handshakes and typed errors."""

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


class MirrorRoute:
    def __init__(self, config: MirrorConfig) -> None:
        self.config = config
        self.name = f"mirror:{config.name}"
        self.label = f"{config.name} ({config.to_host.removeprefix('*.')})"
        self.hosts = HostMap(config.from_host, config.to_host)
        self.up: bool | None = None
        self.last_error: str | None = None
        self._sessions: dict[tuple[str, str], aiohttp.ClientSession] = {}
        self._reachable_until = 0.0

    def covers(self, host: str) -> bool:
        return self.hosts.to_mirror(host) is not None

    async def dial(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        client_ip: str = "",
        isolation: str | None = None,
    ) -> Connection:
        raise MirrorError(host, port, f"mirror {self.label} carries plain HTTP only")

    async def answer(
        self, rt: Runtime, req: Request, body: RequestBody | None = None
    ) -> MirrorAnswer:
        mirror_host = self.hosts.to_mirror(req.host)
        if mirror_host is None:
            raise self._failed(req, "does not cover this host")
        scheme = self.config.scheme
        url = f"{scheme}://{mirror_host}{req.path}"
        if self.config.mode == "redirect":
            await self._check_reachable(rt, req, mirror_host)
            return RedirectAnswer(req, url)
        if req.body.kind is not http1.BodyKind.NONE and (
            body is None or req.body.kind is not http1.BodyKind.LENGTH
        ):
            raise self._failed(req, "proxy mode forwards request bodies with a length only")
        headers = _request_headers(req.headers, self.hosts)
        if body is not None:
            headers.append(("Content-Length", str(req.body.length)))
        port = 443 if scheme == "https" else 80
        errors = []
        for dialer, isolation in self._routes(rt, req, mirror_host, port):
            if body is not None and body.started:
                break  # the body went to a route that failed: it cannot be sent again
            session = self._session(rt, dialer, isolation)
            try:
                resp = await session.request(
                    req.method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    skip_auto_headers=_SKIP_AUTO,
                )
            except DialError as err:
                errors.append(f"{dialer.name}: {err.detail or err.reason}")
                continue
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                errors.append(f"{dialer.name}: {_describe(err)}")
                continue
            if resp.status >= 500:
                resp.release()
                raise self._failed(req, f"answered {resp.status} {resp.reason or ''}".strip())
            self._mark(up=True)
            return ProxiedAnswer(self, rt, req, resp)
        raise self._failed(req, "; ".join(errors) or "no route to the mirror")

    async def _check_reachable(self, rt: Runtime, req: Request, mirror_host: str) -> None:
        now = time.monotonic()
        if now < self._reachable_until:
            return
        port = 443 if self.config.scheme == "https" else 80
        errors = []
        for dialer, isolation in self._routes(rt, req, mirror_host, port):
            try:
                conn = await dialer.dial(
                    mirror_host,
                    port,
                    timeout=rt.config.limits.connect_timeout,
                    isolation=isolation,
                )
            except DialError as err:
                errors.append(f"{dialer.name}: {err.detail or err.reason}")
                continue
            conn.sock.close()
            self._reachable_until = now + REACHABLE_FOR
            self._mark(up=True)
            return
        raise self._failed(req, "; ".join(errors) or "no route to the mirror")

    def _routes(
        self, rt: Runtime, req: Request, mirror_host: str, port: int
    ) -> list[tuple[Dialer, str | None]]:
        try:
            plan = rt.router.plan(mirror_host, port)
        except DialError as err:
            raise self._failed(req, err.describe()) from None
        return [(dialer, plan.isolation) for dialer in plan.routes]

    def _session(self, rt: Runtime, dialer: Dialer, isolation: str | None) -> aiohttp.ClientSession:
        key = (dialer.name, isolation or "")
        session = self._sessions.get(key)
        connector = session.connector if session is not None else None
        if session is None or session.closed or getattr(connector, "dialer", None) is not dialer:
            limits = rt.config.limits
            session = aiohttp.ClientSession(
                connector=_RouteConnector(
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
            old = self._sessions.get(key)
            if old is not None:
                spawn(old.close())
            self._sessions[key] = session
        return session

    def _failed(self, req: Request, why: str) -> AttemptFailed:
        self._mark(up=False, error=why)
        err = MirrorError(req.host, req.port, f"mirror {self.label} failed: {why}")
        return AttemptFailed(Reason.MIRROR_FAILED, err)

    def _mark(self, *, up: bool, error: str | None = None) -> None:
        if up != self.up:
            if up:
                log.info("mirror %s up", self.label)
            else:
                log.warning("mirror %s down: %s", self.label, error)
        self.up = up
        self.last_error = error

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def _request_headers(headers: Iterable[tuple[str, str]], hosts: HostMap) -> list[tuple[str, str]]:
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


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    """One mirror as the admin API and status page show it."""

    name: str  # the route label, "mirror:NAME"
    from_host: str
    to_host: str
    mode: str
    when: str
    up: bool | None  # None: not used yet
    last_error: str | None
    https: str  # what happens to HTTPS (CONNECT/SOCKS) to these hosts, and why


class MirrorSet:
    def __init__(self, configs: Sequence[MirrorConfig]) -> None:
        self.routes: list[MirrorRoute] = [MirrorRoute(c) for c in configs]

    def covering(self, host: str) -> MirrorRoute | None:
        return next((m for m in self.routes if m.covers(host)), None)

    def get(self, name: str) -> MirrorRoute | None:
        return next((m for m in self.routes if m.config.name == name), None)

    def reconfigure(self, configs: Sequence[MirrorConfig]) -> None:
        old: dict[MirrorConfig, MirrorRoute] = {m.config: m for m in self.routes}
        self.routes = [old.pop(c) if c in old else MirrorRoute(c) for c in configs]
        for gone in old.values():
            spawn(gone.close())

    def status(self, upstream_names: Sequence[str]) -> list[MirrorStatus]:
        if upstream_names:
            https = "through the upstreams (" + ", ".join(upstream_names) + ")"
        else:
            https = (
                "refused while the mirror is in use: HTTPS cannot be rewritten without "
                "interception, and no upstream is configured"
            )
        return [
            MirrorStatus(
                name=m.name,
                from_host=m.config.from_host,
                to_host=m.config.to_host,
                mode=m.config.mode,
                when=m.config.when,
                up=m.up,
                last_error=m.last_error,
                https=https,
            )
            for m in self.routes
        ]

    async def close(self) -> None:
        for route in self.routes:
            await route.close()
