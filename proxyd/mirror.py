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
  The mirror is reached by its own route (``proxyd.mirror_client``): proxyd's plan for
  the mirror host (direct first, or its upstreams once the mirror is learned blocked
  too, or a rule's route), each through a keep-alive pool of its own, trying the next
  when one cannot connect, is reset before an answer or answers with a block page.
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

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxyd import http1
from proxyd.config import MirrorConfig
from proxyd.detect import Reason
from proxyd.dialers import Connection
from proxyd.errors import MirrorError
from proxyd.mirror_answer import MirrorAnswer, ProxiedAnswer, RedirectAnswer
from proxyd.mirror_client import MirrorClient, MirrorUnreachable, RequestBody, request_headers
from proxyd.mirror_rewrite import HostMap
from proxyd.race import AttemptFailed, spawn

if TYPE_CHECKING:
    from proxyd.http1 import Request
    from proxyd.runtime import Runtime

log = logging.getLogger("proxyd.mirror")

# A redirect is only as good as the mirror it sends the browser to: it is checked with a
# connection on the mirror's route, and a success is trusted for this long.
REACHABLE_FOR = 30.0


class MirrorRoute:
    def __init__(self, config: MirrorConfig) -> None:
        self.config = config
        self.name = f"mirror:{config.name}"
        self.label = f"{config.name} ({config.to_host.removeprefix('*.')})"
        self.hosts = HostMap(config.from_host, config.to_host)
        self.up: bool | None = None
        self.last_error: str | None = None
        self._client = MirrorClient()
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
        if req.body.kind is not http1.BodyKind.NONE and (
            body is None or req.body.kind is not http1.BodyKind.LENGTH
        ):
            raise self._failed(req, "proxy mode forwards request bodies with a length only")
        scheme = self.config.scheme
        port = 443 if scheme == "https" else 80
        url = f"{scheme}://{mirror_host}{req.path}"
        try:
            if self.config.mode == "redirect":
                now = time.monotonic()
                if now >= self._reachable_until:
                    await self._client.reachable(rt, mirror_host, port)
                    self._reachable_until = now + REACHABLE_FOR
                self._mark(up=True)
                return RedirectAnswer(req, url)
            headers = request_headers(req.headers, self.hosts)
            if body is not None:
                headers.append(("Content-Length", str(req.body.length)))
            resp = await self._client.fetch(rt, mirror_host, port, req.method, url, headers, body)
        except MirrorUnreachable as err:
            raise self._failed(req, str(err)) from None
        if resp.status >= 500:
            resp.release()
            raise self._failed(req, f"answered {resp.status} {resp.reason or ''}".strip())
        self._mark(up=True)
        return ProxiedAnswer(self, rt, req, resp)

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
        await self._client.close()


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
