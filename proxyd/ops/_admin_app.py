"""The admin listener's aiohttp app: the routes ``proxyd.ops._admin`` describes.

Imported by ``admin.AdminServer`` on the first connection to the admin port, never at
start: aiohttp and prometheus-client (``proxyd.ops._metrics``) are about half of an idle
daemon's memory, and a router's proxyd may never be asked.

Public API: ``make_app(ctx) -> web.Application`` for an ``admin.AdminContext``.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proxyd.learning import (
    DomainState,
    State,
    is_local_destination,
    normalise_host,
    parse_ip,
)
from proxyd.ops import _admin_page as admin_page
from proxyd.ops import _export as export
from proxyd.ops import _metrics as metrics
from proxyd.ops import _pac as pac
from proxyd.ops._admin_context import AdminContext, health_problems

log = logging.getLogger("proxyd.admin")

# One limit for the app (aiohttp's is per app): an import of a shared table of some
# 100,000 domains; every other body is a few bytes of JSON.
MAX_BODY = 16 * 1024 * 1024
_STATES = {s.value for s in State}
_PAGE_HEADERS = {
    # The page has no script and loads nothing: forbid everything but its inline style.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Frame-Options": "DENY",
}
_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def entry_json(entry: DomainState) -> dict[str, Any]:
    return dataclasses.asdict(entry)  # StrEnum values serialise as their strings


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=1))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _acceptable_host(host_header: str) -> bool:
    """Names an attacker's web page cannot make a browser send here via DNS rebinding."""
    name = host_header.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return bool(name) and (parse_ip(name) is not None or is_local_destination(name))


def _valid_key(raw: str) -> str | None:
    key = normalise_host(raw)
    return key if parse_ip(key) is not None or pac.DOMAIN_PATTERN.fullmatch(key) else None


class _Handlers:
    def __init__(self, ctx: AdminContext) -> None:
        self.ctx = ctx
        self.registry = metrics.build_registry(ctx)

    @web.middleware
    async def guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not peer or not self.ctx.client_allowed(str(peer[0])):
            return web.Response(status=403, text="proxyd: client not allowed\n")
        if not _acceptable_host(request.host):
            return web.Response(status=421, text="proxyd: use an IP address or a local name\n")
        token = self.ctx.token()
        if (
            token is not None
            and request.path != "/healthz"
            and not self._authorised(request, token)
        ):
            return web.Response(
                status=401,
                text="proxyd: admin token required\n",
                headers={"WWW-Authenticate": 'Bearer realm="proxyd"'},
            )
        response = await handler(request)
        response.headers.update(_COMMON_HEADERS)
        return response

    @staticmethod
    def _authorised(request: web.Request, token: str) -> bool:
        # The query form is for what cannot send headers: a browser's PAC URL setting.
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = request.query.get("token", "")
        return hmac.compare_digest(given.strip().encode(), token.encode())

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.ctx.stats.enabled:
            return web.Response(status=404, text="proxyd: metrics are off (metrics = false)\n")
        body = metrics.exposition(self.registry)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        problems = health_problems(self.ctx)
        if not problems:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="".join(f"{p}\n" for p in problems))

    async def list_routes(self, request: web.Request) -> web.Response:
        state = request.query.get("state", "")
        if state and state not in _STATES:
            return _error(400, f"state must be one of {', '.join(sorted(_STATES))}")
        needle = request.query.get("q", "").strip().lower()
        entries = [
            entry_json(e)
            for e in self.ctx.learned_entries()
            if (not state or e.state.value == state) and needle in e.key
        ]
        return _json({"entries": entries, "learning_paused": self.ctx.learning_paused()})

    async def set_route(self, request: web.Request) -> web.Response:
        learning, key = self.ctx.learning, _valid_key(request.match_info["domain"])
        if learning is None:
            return _error(503, "learning is not running")
        if key is None:
            return _error(400, "not a domain name or IP address")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 'the body must be JSON like {"route": "direct"}')
        route = body.get("route") if isinstance(body, dict) else None
        names = self.ctx.route_names()
        if not isinstance(route, str) or route not in names:
            return _error(400, f"route must be one of {', '.join(sorted(names))}")
        entry = learning.force(key, route)
        log.info("admin: %s forced to %s", entry.key, route)
        return _json(entry_json(entry))

    async def forget_route(self, request: web.Request) -> web.Response:
        learning, key = self.ctx.learning, _valid_key(request.match_info["domain"])
        if learning is None:
            return _error(503, "learning is not running")
        if key is None:
            return _error(400, "not a domain name or IP address")
        if not learning.forget(key):
            return _error(404, f"{key} is not in the learned table")
        log.info("admin: %s forgotten", key)
        return _json({"forgotten": key})

    async def learned_list(self, request: web.Request) -> web.Response:
        fmt = request.query.get("format", "hostlist")
        if fmt not in export.EXPORT_FORMATS:
            return _error(400, f"format must be one of {', '.join(export.EXPORT_FORMATS)}")
        proxy = pac.pac_proxy_endpoint(request.host, self.ctx.proxy_addresses())
        text = export.render_export(
            self.ctx.learned_entries(), fmt, self.ctx.clock(), proxy or ("127.0.0.1", 8080)
        )
        content_type = pac.CONTENT_TYPE if fmt == "pac" else "text/plain"
        return web.Response(text=text, headers={"Content-Type": f"{content_type}; charset=utf-8"})

    async def import_routes(self, request: web.Request) -> web.Response:
        learning = self.ctx.learning
        if learning is None:
            return _error(503, "learning is not running")
        try:
            body = await request.json()
            raw = body["entries"]
            pairs = [(str(e["key"]), e.get("route")) for e in raw]
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, 'the body must be JSON like {"entries": [{"key": "a.example"}]}')
        names, upstreams = self.ctx.route_names(), list(self.ctx.upstream_names())
        fallback = upstreams[0] if upstreams else None
        imported, kept, refused = [], [], []
        for raw_key, route in pairs:
            key = _valid_key(raw_key)
            chosen = route if isinstance(route, str) and route in names else fallback
            if key is None or parse_ip(key) is not None or chosen is None:
                refused.append(raw_key)
            elif learning.seed(key, chosen) is None:
                kept.append(key)
            else:
                imported.append(key)
        log.info("admin: imported %d routes (%d already known)", len(imported), len(kept))
        return _json({"imported": imported, "kept": kept, "refused": refused})

    async def upstreams(self, request: web.Request) -> web.Response:
        return _json(
            {
                "upstreams": [
                    {"name": u.name, "up": bool(u.up), "latency": u.latency, "error": u.last_error}
                    for u in self.ctx.upstream_health()
                ]
            }
        )

    async def mirrors(self, request: web.Request) -> web.Response:
        return _json({"mirrors": [dataclasses.asdict(m) for m in self.ctx.mirror_status()]})

    async def explain(self, request: web.Request) -> web.Response:
        if self.ctx.explain is None:
            return _error(503, "route explanations are not available")
        host = request.query.get("host", "").strip()
        if not host or len(host) > 253:
            return _error(400, "give ?host=NAME")
        port = request.query.get("port", "443")
        if not port.isdigit() or not 0 < int(port) < 65536:
            return _error(400, "give ?port= as a number from 1 to 65535")
        try:
            return _json(dict(self.ctx.explain(host, int(port))))
        except ValueError as err:
            return _error(400, str(err))

    async def proxy_pac(self, request: web.Request) -> web.Response:
        proxy = pac.pac_proxy_endpoint(request.host, self.ctx.proxy_addresses())
        if proxy is None:
            return web.Response(status=503, text="proxyd: the proxy is not listening\n")
        direct = [e.key for e in self.ctx.learned_entries() if e.state is State.DIRECT]
        return web.Response(
            text=pac.render_pac(proxy, direct), headers={"Content-Type": pac.CONTENT_TYPE}
        )

    async def status_page(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        page = admin_page.render_status_page(
            now=ctx.clock(),
            started_at=ctx.started_at,
            stats=ctx.stats,
            proxy_addresses=ctx.proxy_addresses(),
            upstreams=ctx.upstream_health(),
            entries=ctx.learned_entries(),
            problems=health_problems(ctx),
            mirrors=ctx.mirror_status(),
        )
        headers = {"Content-Type": "text/html; charset=utf-8", **_PAGE_HEADERS}
        return web.Response(text=page, headers=headers)


def make_app(ctx: AdminContext) -> web.Application:
    h = _Handlers(ctx)
    app = web.Application(middlewares=[h.guard], client_max_size=MAX_BODY)
    app.router.add_get("/", h.status_page)
    app.router.add_get("/metrics", h.metrics)
    app.router.add_get("/healthz", h.healthz)
    app.router.add_get("/proxy.pac", h.proxy_pac)
    app.router.add_get("/api/routes", h.list_routes)
    app.router.add_put("/api/routes/{domain}", h.set_route)
    app.router.add_delete("/api/routes/{domain}", h.forget_route)
    app.router.add_post("/api/routes/import", h.import_routes)
    app.router.add_get("/api/lists/learned.txt", h.learned_list)
    app.router.add_get("/api/upstreams", h.upstreams)
    app.router.add_get("/api/explain", h.explain)
    app.router.add_get("/api/mirrors", h.mirrors)
    return app
