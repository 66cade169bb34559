"""Transparent listeners: the LAN's web traffic, redirected by the router's firewall.

The device thinks it is connected to the site (the router answered its SYN), so there is
no request to parse and nothing to answer. The name comes from the first bytes (TLS SNI,
HTTP Host: ``protocol.read_name``) and the connection then runs exactly as a CONNECT to
that name, through ``run_tunnel()``: rules, learning, desync, the first-visit retry,
upstreams and per-client Tor isolation. The name wins over the address the device
connected to: its resolver may be the ISP's, which answers block-page addresses, while
proxyd resolves (or lets the upstream resolve) the name itself.

A connection without a name goes to its original address untouched, or is refused
(``transparent.nameless``). One whose original address is this machine (a client that
connected to the listener itself, or to the router's own services) is closed: going
"direct" there would loop back into proxyd or reach the router's own services.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from collections import Counter

from proxyd.access import is_own_address
from proxyd.config import ListenAddress
from proxyd.dataplane import RequestRecord, finish, outcome_for
from proxyd.errors import DialError
from proxyd.firstvisit import note_dial, relay, run_tunnel
from proxyd.inbound._http import log_unexpected
from proxyd.inbound._original_dst import original_destination
from proxyd.inbound._server import LISTEN_BACKLOG, StartupError
from proxyd.learning import parse_ip
from proxyd.outbound import Address, Connection, DirectDialer, send_first
from proxyd.protocol import MAX_FIRST_BYTES, NEED_MORE, Named, Nameless, read_name
from proxyd.runtime import Runtime

log = logging.getLogger("proxyd.transparent")

PROTOCOL = "transparent"  # the inbound label in metrics and the access log
_IP_TRANSPARENT = 19  # linux/in.h; IPV6_TRANSPARENT is 75
_IPV6_TRANSPARENT = 75
_LINGER_RESET = struct.pack("ii", 1, 0)
# A burst of connections is taken in one wake-up, but one listener never starves the loop.
ACCEPTS_PER_WAKEUP = 64


def bind_transparent(addr: ListenAddress, mode: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if mode == "tproxy":
            # TPROXY delivers connections to any address; accepting them needs
            # IP_TRANSPARENT, which needs CAP_NET_ADMIN.
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_TRANSPARENT, 1)
            else:
                sock.setsockopt(socket.SOL_IP, _IP_TRANSPARENT, 1)
        sock.bind((addr.host, addr.port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        need = " (tproxy mode needs CAP_NET_ADMIN)" if exc.errno == errno.EPERM else ""
        raise StartupError(
            f"cannot listen on transparent {addr}: {exc.strerror or exc}{need}"
        ) from None
    return sock


class _AlreadyConnected:
    """The device's SYN was answered by the router, so success needs no answer; a failure
    becomes a reset, the nearest thing to the connection failing that it can see."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def success(self, conn: Connection) -> None:
        return None

    async def failure(self, err: DialError) -> None:
        reset(self._sock)


def reset(sock: socket.socket) -> None:
    """Make the coming close send RST instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


class TransparentServer:
    """The ``[transparent]`` listeners, beside ``ProxyServer`` and sharing its ``Runtime``
    (config reloads, router, learning and counters are the same objects)."""

    def __init__(self, rt: Runtime, direct: DirectDialer) -> None:
        self.rt = rt
        self._direct = direct
        self._mode = rt.config.transparent.mode
        self._listeners: list[socket.socket] = []
        self._clients: dict[asyncio.Task[None], tuple[socket.socket, str]] = {}
        self._per_client: Counter[str] = Counter()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for addr in self.rt.config.transparent.listen:
                self._listeners.append(bind_transparent(addr, self._mode))
        except StartupError:
            self.close_listeners()
            raise
        for sock in self._listeners:
            loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def addresses(self) -> list[Address]:
        return [(str(a[0]), int(a[1])) for a in (s.getsockname() for s in self._listeners)]

    @property
    def active_clients(self) -> int:
        return len(self._clients)

    def close_listeners(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._listeners:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            sock.close()
        self._listeners.clear()

    async def drain(self, grace: float) -> None:
        self.close_listeners()
        if self._clients:
            _done, pending = await asyncio.wait(list(self._clients), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    # -- accept ----------------------------------------------------------------------------

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
            client_ip = _unmapped(str(peer[0]))
            over_limit = None
            if len(self._clients) >= limits.max_connections:
                over_limit = "max_connections"
            elif self._per_client[client_ip] >= limits.max_connections_per_client:
                over_limit = "max_connections_per_client"
            if over_limit is not None:
                # Nothing to answer in: the device gets a reset, as from a full server.
                self.rt.stats.limit_hit(over_limit)
                self.rt.stats.connection_refused("limit")
                reset(sock)
                sock.close()
                continue
            task = asyncio.ensure_future(self._handle(sock, client_ip))
            self._clients[task] = (sock, client_ip)
            self._per_client[client_ip] += 1
            task.add_done_callback(self._client_done)

    def _client_done(self, task: asyncio.Task[None]) -> None:
        sock, client_ip = self._clients.pop(task)
        self._per_client[client_ip] -= 1
        if not self._per_client[client_ip]:
            del self._per_client[client_ip]
        sock.close()

    async def _handle(self, sock: socket.socket, client_ip: str) -> None:
        stats = self.rt.stats
        try:
            if not self.rt.access.client_allowed(client_ip):
                stats.connection_refused("not_allowed")
                reset(sock)
                return
            try:
                dest = original_destination(sock, self._mode)
            except OSError:
                dest = None
            if dest is None or _is_this_machine(dest[0]):
                # Straight to the listener, or to the router itself: never loop back.
                stats.connection_refused("not_redirected")
                reset(sock)
                return
            stats.connection_opened(PROTOCOL)
            try:
                await self._serve(sock, client_ip, dest)
            finally:
                stats.connection_closed(PROTOCOL)
        except (OSError, TimeoutError):
            pass  # the device went away; there is nobody left to answer
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_unexpected(exc, client_ip)

    async def _serve(self, sock: socket.socket, client_ip: str, dest: Address) -> None:
        first, name = await self._read_name(sock)
        if first is None:
            return  # the device closed before sending anything
        ip, port = dest
        if name is None:
            await self._nameless(sock, client_ip, dest, first)
            return
        if self._blockpage_address(ip):
            log.info(
                "%s asked for %s at %s, a block-page address: going by the name",
                client_ip,
                name,
                ip,
            )
        record = RequestRecord(PROTOCOL, client_ip, name, port)
        try:
            await run_tunnel(
                self.rt,
                sock,
                name,
                port,
                reply=_AlreadyConnected(sock),
                client_ip=client_ip,
                record=record,
                client_bytes=first,
            )
        finally:
            finish(self.rt, record)

    async def _read_name(self, sock: socket.socket) -> tuple[bytes | None, str | None]:
        """(the first bytes, the name they carry); (None, None) if the device left."""
        loop = asyncio.get_running_loop()
        data = b""
        try:
            async with asyncio.timeout(self.rt.config.transparent.name_timeout):
                while True:
                    found = read_name(data)
                    if isinstance(found, Named):
                        return data, found.name
                    if isinstance(found, Nameless):
                        return data, None
                    assert found is NEED_MORE
                    more = await loop.sock_recv(sock, MAX_FIRST_BYTES - len(data))
                    if not more:
                        return (data or None), None
                    data += more
        except TimeoutError:
            # Silent (the server speaks first, as in SMTP) or a head that never ends.
            return data, None

    async def _nameless(
        self, sock: socket.socket, client_ip: str, dest: Address, first: bytes
    ) -> None:
        ip, port = dest
        record = RequestRecord(PROTOCOL, client_ip, ip, port)
        try:
            if self.rt.config.transparent.nameless == "refuse":
                record.outcome = "rejected"
                reset(sock)
                return
            record.route = self._direct.name
            try:
                conn = await self._direct.dial(
                    ip, port, timeout=self.rt.config.limits.connect_timeout, client_ip=client_ip
                )
            except DialError as err:
                record.outcome = outcome_for(err)
                reset(sock)
                return
            note_dial(self.rt, self._direct, conn)
            record.connect_seconds = conn.connect_seconds
            if first:
                try:
                    await send_first(asyncio.get_running_loop(), conn, first)
                except OSError:
                    conn.sock.close()
                    return
                record.up += len(first)
            await relay(self.rt, sock, conn, record)
        finally:
            finish(self.rt, record)

    def _blockpage_address(self, ip: str) -> bool:
        address = parse_ip(ip)
        networks = self.rt.config.learning.blockpage_networks
        return address is not None and any(address in net for net in networks)


def _is_this_machine(ip: str) -> bool:
    address = parse_ip(ip)
    if address is None:
        return True
    return address.is_loopback or address.is_unspecified or is_own_address(address)


def _unmapped(host: str) -> str:
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return host
