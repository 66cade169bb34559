"""Mirror routes: a blocked plain-HTTP site served from its mirror (DESIGN §4 "Mirror").

- ``MirrorRoute(config)`` (in ``proxyd.mirror._route``, made only by ``MirrorSet``, as that
  module loads aiohttp): one ``[[mirror]]``, a ``PlainHttpRoute``. Its ``name`` is the route label
  ``mirror:<name>`` (metrics, learning, logs); ``hosts`` is its ``HostMap``; ``up`` and
  ``last_error`` its health as last seen (None: not tried yet).
  ``await answer(rt, req, body=None) -> MirrorAnswer`` answers one plain-HTTP request
  for a host it covers (``body``: a ``RequestBody`` streaming a Content-Length body; a
  chunked one is not forwarded), or raises ``AttemptFailed`` carrying a ``MirrorError``
  so that the next route takes over:
  - ``redirect``: a 302 (307 for methods that must keep their body) to the same path on
    the mirror, once the mirror was seen reachable on its own route;
  - ``proxy``: the request is sent to the mirror with the aiohttp client and the answer
    is streamed back under the original host (``proxyd.mirror._rewrite`` says what is
    rewritten). A connect error or a 5xx is a failure.
  The mirror is reached by its own route (``proxyd.mirror._client``): proxyd's plan for
  the mirror host (direct first, or its upstreams once the mirror is learned blocked
  too, or a rule's route), each through a keep-alive pool of its own, trying the next
  when one cannot connect, is reset before an answer or answers with a block page.
- ``MirrorAnswer`` (from ``proxyd.mirror._answer``): ``await deliver(sock, version=,
  keep_alive=, timeout=) -> bool`` (whether the client connection may carry another
  request), ``close()``.
- ``MirrorSet(configs)``: ``covering(host)``, ``get(name)``, ``routes``,
  ``reconfigure(configs)`` (keeps the pools of unchanged mirrors), ``await close()``,
  ``status(upstream_names) -> [MirrorStatus]`` for the admin API and status page.
- ``PlainHttpRoute`` (``proxyd.mirror._plain_route``): the abstract ``answer`` of a
  ``MirrorRoute``; what ``inbound._http_attempt`` tests a route for.

This module stays free of aiohttp so that a daemon with no ``[[mirror]]`` never loads it.

Only plain HTTP can be rewritten: routing never offers a mirror to a CONNECT or SOCKS
tunnel (``MirrorRoute.dial`` refuses, should one ever try).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxyd.config import MirrorConfig
from proxyd.outbound import spawn

if TYPE_CHECKING:
    from proxyd.mirror._route import MirrorRoute


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
        self.routes: list[MirrorRoute] = [_new_route(c) for c in configs]

    def covering(self, host: str) -> MirrorRoute | None:
        return next((m for m in self.routes if m.covers(host)), None)

    def get(self, name: str) -> MirrorRoute | None:
        return next((m for m in self.routes if m.config.name == name), None)

    def reconfigure(self, configs: Sequence[MirrorConfig]) -> None:
        old: dict[MirrorConfig, MirrorRoute] = {m.config: m for m in self.routes}
        self.routes = [old.pop(c) if c in old else _new_route(c) for c in configs]
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


def _new_route(config: MirrorConfig) -> MirrorRoute:
    # The one place a mirror route is made, and the only import of aiohttp on the proxy
    # side: a daemon without [[mirror]] never loads it (about 13 MB of RSS on a router).
    from proxyd.mirror._route import MirrorRoute

    return MirrorRoute(config)
