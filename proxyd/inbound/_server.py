"""Listeners, accept, protocol sniffing, connection limits, reload and drain.

Listeners are served by the event loop's C accept loop (``loop.create_server``): each
connection starts on the data plane, a ``ClientProtocol`` (``http_protocol``), with no task.
Its first bytes decide the protocol (0x05 SOCKS5, 0x04 SOCKS4/4a, anything else HTTP).
Whatever the data plane does not serve is handed here with its raw socket and the bytes
already read (``take_over``), and a task runs the control plane for it: SOCKS, CONNECT
tunnels (spliced), first visits, bodies, refusals. A plain-HTTP connection the control
plane is done with goes back to the data plane (``_hand_back``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from dataclasses import dataclass

from proxyd.access import AccessPolicy, AuthThrottle
from proxyd.config import Config, ListenAddress
from proxyd.dataplane import ClientProtocol, Handoff
from proxyd.errors import DialError, DnsPoisoned
from proxyd.inbound._http import HttpClient, log_unexpected
from proxyd.inbound._socks import serve_socks
from proxyd.learning import Stats
from proxyd.mirror import MirrorSet
from proxyd.outbound import (
    Address,
    DirectDialer,
    HonestDirectDialer,
    OriginPool,
    UpstreamSet,
    forbid_endpoints,
)
from proxyd.protocol import http1_encode
from proxyd.resolver import Connector, DnsListener, Resolver
from proxyd.routing import LearnedRoutes, Router
from proxyd.runtime import Runtime

log = logging.getLogger("proxyd")

FIRST_READ = 256 * 1024
LISTEN_BACKLOG = 1024
POOL_SWEEP_SECONDS = 15.0
# SOCKS5 "general failure" (no method negotiated yet, so no richer code is possible).
_SOCKS5_REFUSAL = b"\x05\xff"
_SOCKS4_REFUSAL = b"\x00\x5b\x00\x00\x00\x00\x00\x00"
_PROTOCOLS = {5: "socks5", 4: "socks4"}  # by first byte; anything else is HTTP


class StartupError(Exception):
    """The daemon cannot start (address in use, permission); the message says why."""


@dataclass(slots=True)
class _Handed:
    """A connection in the control plane's hands (a task), with what the data plane knew."""

    sock: socket.socket
    ip: str
    allowed: bool | None
    http_opened: bool
    http: HttpClient | None = None
    sniffing: bool = False
    handed_back: bool = False

    @property
    def idle(self) -> bool:
        return self.sniffing or (self.http is not None and self.http.idle)


def bind_listener(addr: ListenAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr.host, addr.port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
    return sock


class ProxyServer:
    def __init__(
        self, config: Config, learned: LearnedRoutes | None, stats: Stats | None = None
    ) -> None:
        self._listeners: dict[ListenAddress, socket.socket] = {}
        self._servers: dict[ListenAddress, asyncio.Task[asyncio.AbstractServer]] = {}
        self._clients: dict[asyncio.Task[None], _Handed] = {}
        self._fast: set[ClientProtocol] = set()
        self._fast_gone: asyncio.Future[None] | None = None
        self._per_client: Counter[str] = Counter()
        self._sweeper: asyncio.TimerHandle | None = None
        self._auth_throttle = AuthThrottle(config.auth.max_failures, config.auth.failure_window)
        self._own_endpoints: list[Address] = []
        self._loop_check = forbid_endpoints(lambda: self._own_endpoints)
        self.direct = DirectDialer(
            self._destination_check,
            self._check_answer if learned is not None else None,
            self._note_unreachable,
        )
        upstreams = UpstreamSet(config.upstreams)
        self.mirrors = MirrorSet(config.mirrors)
        self.resolver = self._resolver_for(config, upstreams)
        self._resolver_inputs = (config.dns, config.learning.blockpage_networks)
        self.dns_listener: DnsListener | None = None
        if learned is not None:
            learned.resolver = self.resolver
        self.rt = Runtime(
            config=config,
            access=self._access_for(config),
            router=self._router_for(config, upstreams, learned),
            pool=OriginPool(),
            upstreams=upstreams,
            learned=learned,
            stats=stats if stats is not None else Stats(),
            resolver=self.resolver,
        )

    def _check_answer(self, host: str, addresses: tuple[str, ...]) -> None:
        signal = self.resolver.judge_system_answer(host, addresses)
        if signal is not None:
            raise DnsPoisoned(
                host,
                0,
                f"the resolver's answer {', '.join(addresses)} looks forged ({signal.value})",
            )

    def _note_unreachable(self, host: str, addresses: tuple[str, ...]) -> None:
        self.resolver.note_unreachable(host, addresses)

    def _resolver_for(self, config: Config, upstreams: UpstreamSet) -> Resolver:
        def via(name: str) -> Connector:
            async def connect(host: str, port: int, timeout: float) -> socket.socket:
                dialer = upstreams.get(name)
                if dialer is None:
                    raise OSError(f"no upstream named {name}")
                try:
                    return (await dialer.dial(host, port, timeout=timeout)).sock
                except DialError as err:
                    raise OSError(err.describe()) from None

            return connect

        return Resolver(
            config.dns,
            extra_bogons=config.learning.blockpage_networks,
            connectors={upstream.name: via(upstream.name) for upstream in config.upstreams},
        )

    def _router_for(
        self, config: Config, upstreams: UpstreamSet, learned: LearnedRoutes | None
    ) -> Router:
        honest = None
        if self.resolver.has_honest_source:
            honest = (
                HonestDirectDialer(self.resolver, self._destination_check, gated=True),
                HonestDirectDialer(self.resolver, self._destination_check, gated=False),
            )
        return Router(config, self.direct, upstreams, learned, self.mirrors, honest)

    def _access_for(self, config: Config) -> AccessPolicy:
        # One throttle across reloads: a reload must not forgive a password guesser.
        self._auth_throttle.max_failures = config.auth.max_failures
        self._auth_throttle.window = config.auth.failure_window
        return AccessPolicy(
            config.allow,
            dict(config.auth.users),
            protect_local=config.protect_local,
            throttle=self._auth_throttle,
        )

    def _destination_check(self, client_ip: str, ip: str, port: int) -> None:
        self._loop_check(ip, port)
        self.rt.access.check_destination(client_ip, ip, port)

    @property
    def addresses(self) -> list[Address]:
        return list(self._own_endpoints)

    @property
    def proxy_addresses(self) -> list[Address]:
        """Where the proxy itself listens (``addresses`` also holds the admin endpoint)."""
        return self._listener_endpoints()

    def add_own_endpoint(self, addr: Address) -> None:
        """Endpoints of proxyd's other listeners (admin) that the proxy must refuse."""
        self._own_endpoints.append(addr)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, inherited: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        if inherited:
            for sock in inherited:
                sock.setblocking(False)
                host, port = sock.getsockname()[:2]
                self._listeners[ListenAddress(host, port)] = sock
        else:
            for addr in self.rt.config.listen:
                self._listeners[addr] = bind_listener(addr)
        for addr, sock in self._listeners.items():
            self._serve_listener(addr, sock)
        self._refresh_endpoints()
        self._sweeper = loop.call_later(POOL_SWEEP_SECONDS, self._sweep)

    def _serve_listener(self, addr: ListenAddress, sock: socket.socket) -> None:
        # Until the loop has attached it, connections wait in the listening socket's backlog.
        loop = asyncio.get_running_loop()
        self._servers[addr] = asyncio.ensure_future(
            loop.create_server(lambda: ClientProtocol(self), sock=sock, backlog=LISTEN_BACKLOG)
        )

    def _stop_listener(self, addr: ListenAddress) -> None:
        sock = self._listeners.pop(addr)
        task = self._servers.pop(addr)
        if task.done() and task.exception() is None:
            task.result().close()  # closes the listening socket too
        else:
            task.cancel()
            sock.close()

    def _refresh_endpoints(self) -> None:
        own = [ep for ep in self._own_endpoints if ep not in self._listener_endpoints()]
        self._own_endpoints[:] = own + self._listener_endpoints()

    def _listener_endpoints(self) -> list[Address]:
        return [(str(a[0]), int(a[1])) for a in (s.getsockname() for s in self._listeners.values())]

    def _sweep(self) -> None:
        self.rt.pool.sweep()
        self._sweeper = asyncio.get_running_loop().call_later(POOL_SWEEP_SECONDS, self._sweep)

    def apply_config(self, config: Config) -> None:
        """Switch to a validated config: new requests see it, live connections keep going."""
        wanted = set(config.listen)
        added = [a for a in config.listen if a not in self._listeners]
        opened = {addr: bind_listener(addr) for addr in added}  # may raise: nothing changed yet
        for addr in [a for a in self._listeners if a not in wanted]:
            self._stop_listener(addr)
        for addr, sock in opened.items():
            self._listeners[addr] = sock
            self._serve_listener(addr, sock)
        self.rt.config = config
        self.rt.access = self._access_for(config)
        self.rt.upstreams.reconfigure(config.upstreams)
        self.mirrors.reconfigure(config.mirrors)
        if (config.dns, config.learning.blockpage_networks) != self._resolver_inputs:
            self.resolver.close()
            self.resolver = self._resolver_for(config, self.rt.upstreams)
            self._resolver_inputs = (config.dns, config.learning.blockpage_networks)
            if self.rt.learned is not None:
                self.rt.learned.resolver = self.resolver
            self.rt.resolver = self.resolver
        self.rt.router = self._router_for(config, self.rt.upstreams, self.rt.learned)
        if self.rt.learned is not None:
            self.rt.learned.reconfigure(config.learning)
        self._refresh_endpoints()

    async def start_dns_listener(self) -> None:
        """The LAN DNS listener of ``dns_listen``, if any (a change needs a restart)."""
        if not self.rt.config.dns_listen:
            return
        self.dns_listener = DnsListener(lambda: self.resolver, lambda: self.rt.access)
        try:
            await self.dns_listener.start(self.rt.config.dns_listen)
        except OSError as exc:
            self.dns_listener.close()
            raise StartupError(f"cannot listen for DNS: {exc.strerror or exc}") from None

    def close_listeners(self) -> None:
        if self.dns_listener is not None:
            self.dns_listener.close()
        for addr in list(self._listeners):
            self._stop_listener(addr)

    async def drain(self, grace: float) -> None:
        """Stop accepting, close idle clients, give tunnels ``grace`` seconds, then cut."""
        self.rt.draining = True
        self.close_listeners()
        loop = asyncio.get_running_loop()
        for client in list(self._fast):
            client.close_if_idle()
        for task, handed in list(self._clients.items()):
            if handed.idle:
                task.cancel()
        deadline = loop.time() + grace
        if self._fast:
            self._fast_gone = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._fast_gone), grace)
            for client in list(self._fast):
                if client.transport is not None:
                    client.transport.abort()
        if self._clients:
            left = max(0.0, deadline - loop.time())
            _done, pending = await asyncio.wait(list(self._clients), timeout=left)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.rt.pool.close()
        self.resolver.close()
        await self.mirrors.close()

    @property
    def active_clients(self) -> int:
        return len(self._clients) + len(self._fast)

    # -- the data plane's connections ----------------------------------------------------

    def admit(self, client: ClientProtocol) -> bool:
        """Count a new connection; False: over a connection limit (it is refused)."""
        limits = self.rt.config.limits
        over_limit = None
        if len(self._clients) + len(self._fast) >= limits.max_connections:
            over_limit = "max_connections"
        elif self._per_client[client.ip] >= limits.max_connections_per_client:
            over_limit = "max_connections_per_client"
        self._fast.add(client)
        self._per_client[client.ip] += 1
        if over_limit is None:
            return True
        self.rt.stats.limit_hit(over_limit)
        return False

    def released(self, client: ClientProtocol) -> None:
        """A data-plane connection closed for good."""
        self._fast.discard(client)
        self._uncount(client.ip, client.http_opened)
        if not self._fast and self._fast_gone is not None and not self._fast_gone.done():
            self._fast_gone.set_result(None)

    def _uncount(self, ip: str, http_opened: bool) -> None:
        self._per_client[ip] -= 1
        if not self._per_client[ip]:
            del self._per_client[ip]
        if http_opened:
            self.rt.stats.connection_closed("http")

    def take_over(self, client: ClientProtocol, sock: socket.socket, handoff: Handoff) -> None:
        """The control plane takes a connection the data plane cannot serve."""
        self._fast.discard(client)
        if not self._fast and self._fast_gone is not None and not self._fast_gone.done():
            self._fast_gone.set_result(None)
        handed = _Handed(sock, client.ip, client.allowed, client.http_opened)
        if handoff.refused:
            handler = self._refuse(handed)
        elif handoff.first:
            handler = self._sniffed(handed, handoff.buf)
        else:
            handler = self._control(handed, handoff)
        task = asyncio.ensure_future(handler)
        self._clients[task] = handed
        task.add_done_callback(self._client_done)

    def _client_done(self, task: asyncio.Task[None]) -> None:
        handed = self._clients.pop(task)
        if handed.handed_back:
            return  # the data plane has it again, and counts it
        self._uncount(handed.ip, handed.http_opened)
        if handed.sock is not None:
            handed.sock.close()

    async def _hand_back(self, handed: _Handed, http: HttpClient) -> None:
        """A plain-HTTP connection the control plane is done with goes to the data plane."""
        client = ClientProtocol(self, ip=handed.ip, buf=bytes(http.buf), allowed=handed.allowed)
        self._fast.add(client)
        handed.handed_back = True
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: client, http.sock)
        except BaseException:
            handed.handed_back = False
            self._fast.discard(client)
            raise

    async def _read_first(self, handed: _Handed) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.rt.config.limits.head_timeout):
                return await loop.sock_recv(handed.sock, FIRST_READ)
        except TimeoutError:
            self.rt.stats.limit_hit("head_timeout")
            return b""
        except OSError:
            return b""

    async def _refuse(self, handed: _Handed) -> None:
        """Over a connection limit: answer in the client's protocol, then close."""
        self.rt.stats.connection_refused("limit")
        handed.sniffing = True
        first = await self._read_first(handed)
        if not first:
            return
        if first[0] == 5:
            answer = _SOCKS5_REFUSAL
        elif first[0] == 4:
            answer = _SOCKS4_REFUSAL
        else:
            answer = http1_encode.error_response(
                503, "proxyd: too many connections, try again later"
            )
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().sock_sendall(handed.sock, answer)

    async def _sniffed(self, handed: _Handed, first: bytes) -> None:
        """A SOCKS client: its first bytes chose the protocol."""
        try:
            allowed = self.rt.access.client_allowed(handed.ip)
            protocol = _PROTOCOLS[first[0]]
            stats = self.rt.stats
            stats.connection_opened(protocol)
            try:
                await serve_socks(self.rt, handed.sock, handed.ip, first, allowed=allowed)
            finally:
                stats.connection_closed(protocol)
        except (OSError, TimeoutError):
            pass  # the client went away or stalled; there is nobody left to answer
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_unexpected(exc, handed.ip)

    async def _control(self, handed: _Handed, handoff: Handoff) -> None:
        """One plain-HTTP request (or its answer) the data plane handed over."""
        try:
            http = handed.http = HttpClient(self.rt, handed.sock, handed.ip, handoff.buf)
            back = await http.serve(handoff, allowed=bool(handed.allowed))
            if back and not self.rt.draining and http.sock is not None:
                handed.sock = http.sock
                await self._hand_back(handed, http)
        except (OSError, TimeoutError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_unexpected(exc, handed.ip)
