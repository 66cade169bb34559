"""Listeners, accept, protocol sniffing, connection limits, reload and drain.

The inbound socket stays raw: the first bytes are read with ``loop.sock_recv`` and decide
the protocol (0x05 SOCKS5, 0x04 SOCKS4/4a, anything else HTTP), so a tunnel can later be
spliced without ever having been wrapped in a transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections import Counter
from dataclasses import dataclass

from proxyd.access import AccessPolicy, AuthThrottle
from proxyd.config import Config, ListenAddress
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
ACCEPTS_PER_WAKEUP = 64
LISTEN_BACKLOG = 1024
POOL_SWEEP_SECONDS = 15.0
# SOCKS5 "general failure" (no method negotiated yet, so no richer code is possible).
_SOCKS5_REFUSAL = b"\x05\xff"
_SOCKS4_REFUSAL = b"\x00\x5b\x00\x00\x00\x00\x00\x00"
_PROTOCOLS = {5: "socks5", 4: "socks4"}  # by first byte; anything else is HTTP


class StartupError(Exception):
    """The daemon cannot start (address in use, permission); the message says why."""


@dataclass(slots=True)
class _Client:
    sock: socket.socket
    ip: str
    http: HttpClient | None = None
    sniffing: bool = True

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
        self._clients: dict[asyncio.Task[None], _Client] = {}
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
        for sock in self._listeners.values():
            loop.add_reader(sock.fileno(), self._accept, sock)
        self._refresh_endpoints()
        self._sweeper = loop.call_later(POOL_SWEEP_SECONDS, self._sweep)

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
        loop = asyncio.get_running_loop()
        wanted = set(config.listen)
        added = [a for a in config.listen if a not in self._listeners]
        opened = {addr: bind_listener(addr) for addr in added}  # may raise: nothing changed yet
        for addr in [a for a in self._listeners if a not in wanted]:
            sock = self._listeners.pop(addr)
            loop.remove_reader(sock.fileno())
            sock.close()
        for addr, sock in opened.items():
            self._listeners[addr] = sock
            loop.add_reader(sock.fileno(), self._accept, sock)
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
        loop = asyncio.get_running_loop()
        for sock in self._listeners.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._listeners.clear()

    async def drain(self, grace: float) -> None:
        """Stop accepting, close idle clients, give tunnels ``grace`` seconds, then cut."""
        self.rt.draining = True
        self.close_listeners()
        for task, client in list(self._clients.items()):
            if client.idle:
                task.cancel()
        if self._clients:
            _done, pending = await asyncio.wait(list(self._clients), timeout=grace)
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
        return len(self._clients)

    # -- accept and sniff ----------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        limits = self.rt.config.limits
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept failed: %s (connection limit of the system)", exc)
                    return
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client_ip = str(peer[0])
            over_limit = None
            if len(self._clients) >= limits.max_connections:
                over_limit = "max_connections"
            elif self._per_client[client_ip] >= limits.max_connections_per_client:
                over_limit = "max_connections_per_client"
            client = _Client(sock, client_ip)
            if over_limit is None:
                handler = self._handle(client)
            else:
                self.rt.stats.limit_hit(over_limit)
                handler = self._refuse(client)
            task = asyncio.ensure_future(handler)
            self._clients[task] = client
            self._per_client[client_ip] += 1
            task.add_done_callback(self._client_done)

    def _client_done(self, task: asyncio.Task[None]) -> None:
        client = self._clients.pop(task)
        self._per_client[client.ip] -= 1
        if not self._per_client[client.ip]:
            del self._per_client[client.ip]
        client.sock.close()

    async def _read_first(self, client: _Client) -> bytes:
        # Clients send right after connecting, so by the time the accept is handled the
        # bytes are often there already: one recv then saves a timer and a future.
        try:
            first = client.sock.recv(FIRST_READ)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return b""
        else:
            return first
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.rt.config.limits.head_timeout):
                return await loop.sock_recv(client.sock, FIRST_READ)
        except TimeoutError:
            self.rt.stats.limit_hit("head_timeout")
            return b""
        except OSError:
            return b""

    async def _refuse(self, client: _Client) -> None:
        """Over a connection limit: answer in the client's protocol, then close."""
        self.rt.stats.connection_refused("limit")
        first = await self._read_first(client)
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
            await asyncio.get_running_loop().sock_sendall(client.sock, answer)

    async def _handle(self, client: _Client) -> None:
        try:
            first = await self._read_first(client)
            if not first:
                return
            client.sniffing = False
            allowed = self.rt.access.client_allowed(client.ip)
            protocol = _PROTOCOLS.get(first[0], "http")
            stats = self.rt.stats
            stats.connection_opened(protocol)
            try:
                if protocol != "http":
                    await serve_socks(self.rt, client.sock, client.ip, first, allowed=allowed)
                else:
                    client.http = HttpClient(self.rt, client.sock, client.ip, first)
                    await client.http.serve(allowed=allowed)
            finally:
                stats.connection_closed(protocol)
        except (OSError, TimeoutError):
            pass  # the client went away or stalled; there is nobody left to answer
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_unexpected(exc, client.ip)
