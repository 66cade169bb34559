"""One ``[[mirror]]`` route: the aiohttp-backed half of ``proxyd.mirror._mirror``.

Imported only through ``mirror.MirrorSet`` when a mirror is configured: this module loads
aiohttp (via ``mirror_client`` and ``mirror_answer``), which a daemon without mirrors
never needs. ``proxyd.mirror._mirror``'s docstring describes ``MirrorRoute``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from proxyd.config import MirrorConfig
from proxyd.errors import MirrorError
from proxyd.learning import Reason
from proxyd.mirror._answer import MirrorAnswer, ProxiedAnswer, RedirectAnswer
from proxyd.mirror._client import MirrorClient, MirrorUnreachable, RequestBody, request_headers
from proxyd.mirror._plain_route import PlainHttpRoute
from proxyd.mirror._rewrite import HostMap
from proxyd.outbound import AttemptFailed, Connection
from proxyd.protocol import http1

if TYPE_CHECKING:
    from proxyd.protocol import Request
    from proxyd.runtime import Runtime

log = logging.getLogger("proxyd.mirror")

# A redirect is only as good as the mirror it sends the browser to: it is checked with a
# connection on the mirror's route, and a success is trusted for this long.
REACHABLE_FOR = 30.0


class MirrorRoute(PlainHttpRoute):
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
