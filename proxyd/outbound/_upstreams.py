"""Dial through one upstream proxy (SOCKS5, SOCKS4, HTTP CONNECT); the set of upstreams
with their health is ``proxyd.outbound._upstream_set``.

Public API::

    UpstreamDialer(config)            # a proxyd.outbound._dialers.Dialer; .name is the route label
        await dial(host, port, *, timeout, client_ip="", isolation=None) -> Connection
        await probe(*, timeout) -> float      # handshake-only proof of life, seconds
        .config, .label ("upstream tor (127.0.0.1:9050)"), .isolates
        scope(isolation, client_ip) -> str | None   # what one isolation credential covers
    isolation_scope(route, isolation, client_ip) -> str   # for pool keys, any route

Dialing. ``dial`` returns after the upstream's reply and not before, so the caller sends
the client's (replayed) bytes only then: some SOCKS servers (microsocks) drop bytes sent
ahead of their reply. Bytes the destination sends right after the reply are left in the
socket. The socket comes back non-blocking with TCP_NODELAY; ``Connection.peer`` is the
upstream's address.

- socks5h, socks4a, http: the host name goes to the upstream, never to a local resolver
  (Tor and .onion need it, and it keeps a poisoned local DNS out of the path).
- socks5, socks4: resolved here first (IPv4 preferred: the upstream's own connectivity is
  unknown and IPv4 works everywhere); a failure is ``DnsLookupError``.
- Credentials come from the URL.
- Stream isolation, when ``config.isolate`` (on by default for ``tor = true``) and the
  caller passes an ``isolation`` key (the destination's registrable domain): SOCKS5 sends
  the key as the username and the configured password, or "proxyd", as the password;
  SOCKS4 sends it as the user id; HTTP sends ``X-Tor-Stream-Isolation``. Tor's
  IsolateSOCKSAuth (on by default) then builds separate circuits per key, so an exit
  cannot link visits to different sites. A configured username is replaced by the key.
  Keys over 255 bytes are hashed. Pool connections by key as well as by route.
  With ``isolate_clients`` the key also names the LAN client's address, so two people
  in one household visiting the same site do not share a circuit either.

Errors are ``DialError`` subclasses, never python-socks or OSError:

- the upstream itself failed (its host does not resolve, TCP refused/reset/timed out,
  wrong protocol, credentials refused, no answer to the greeting) -> ``UpstreamError``,
  detail "upstream NAME (HOST:PORT): what happened";
- the upstream reports the destination failed -> the mapped class (see
  ``proxyd.protocol._upstream_handshake``), e.g. SOCKS5 0x05 -> ``ConnectionRefused``, 0x06 ->
  ``ConnectTimeout``, Tor 0xF0-0xF7 -> ``OnionServiceError``, HTTP 403/404/504 ->
  ``Forbidden``/``HostUnreachable``/``ConnectTimeout``, 407 -> ``UpstreamError``;
- ``timeout`` bounds the whole dial: running out before the upstream accepted TCP or
  answered the greeting is ``UpstreamError``; after the request went out it is
  ``ConnectTimeout`` (the destination, or Tor's circuit, is slow).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

from proxyd.config import UpstreamConfig
from proxyd.errors import DialError, DnsLookupError, UpstreamError
from proxyd.outbound._dialers import Address, Connection, Dialer, happy_eyeballs, resolve
from proxyd.protocol import (
    ClientHandshake,
    HttpConnectHandshake,
    Socks4Handshake,
    Socks5Handshake,
    Target,
    upstream_label,
)

log = logging.getLogger("proxyd.upstream")

ISOLATION_PASSWORD = "proxyd"  # Tor ignores the value; some password must be sent
_PEEK_SIZE = 4096
_LOCAL_DNS = frozenset({"socks5", "socks4"})


class UpstreamDialer:
    def __init__(self, config: UpstreamConfig) -> None:
        self.name = config.name
        self.config = config
        self.label = upstream_label(config.name, config.host, config.port)

    @property
    def isolates(self) -> bool:
        return self.config.isolate

    def scope(self, isolation: str | None, client_ip: str) -> str | None:
        """What one isolation credential covers: a domain, or a domain for one client."""
        if self.config.isolate_clients and isolation and client_ip:
            return f"{isolation} {client_ip}"
        return isolation

    async def dial(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        client_ip: str = "",
        isolation: str | None = None,
    ) -> Connection:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sock: socket.socket | None = None
        handshake: ClientHandshake | None = None
        try:
            async with asyncio.timeout(timeout):
                address, resolved = await self._wire_address(host, port)
                target = Target(host, port, address, self.label)
                handshake = self._handshake(target, self.scope(isolation, client_ip))
                sock, peer = await self._connect_upstream(host, port)
                await _run_handshake(sock, handshake)
        except TimeoutError:
            _close(sock)
            if handshake is None:
                raise DnsLookupError(
                    host, port, f"cannot resolve {host}: no answer within {timeout:g}s"
                ) from None
            if sock is None:
                raise UpstreamError(
                    host, port, f"{self.label}: did not accept a connection within {timeout:g}s"
                ) from None
            raise handshake.timeout_error(timeout) from None
        except BaseException:
            _close(sock)
            raise
        return Connection(
            sock=sock,
            route=self.name,
            resolved=resolved,
            peer=peer,
            connect_seconds=loop.time() - started,
        )

    async def probe(self, *, timeout: float) -> float:
        """Connect and handshake without a destination; seconds taken, or ``UpstreamError``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        host, port = self.config.host, self.config.port
        handshake = self._probe_handshake(Target(host, port, host, self.label))
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(timeout):
                sock, _peer = await self._connect_upstream(host, port)
                await _run_handshake(sock, handshake)
        except TimeoutError:
            what = "accept a connection" if sock is None else "answer the handshake"
            raise UpstreamError(
                host, port, f"{self.label}: did not {what} within {timeout:g}s"
            ) from None
        finally:
            _close(sock)
        return loop.time() - started

    async def _wire_address(self, host: str, port: int) -> tuple[str, tuple[str, ...]]:
        if self.config.scheme not in _LOCAL_DNS or _parse_ip(host) is not None:
            return host, ()
        addresses = await resolve(host, port)
        ips = [ip for _family, (ip, _port) in addresses]
        ipv4 = [ip for ip in ips if ":" not in ip]
        if self.config.scheme == "socks4" and not ipv4:
            raise DnsLookupError(host, port, f"{host} has no IPv4 address, which SOCKS4 needs")
        return (ipv4 or ips)[0], tuple(ips)

    async def _connect_upstream(self, host: str, port: int) -> tuple[socket.socket, Address]:
        """TCP to the upstream; errors name the upstream, host/port stay the destination's."""
        try:
            addresses = await resolve(self.config.host, self.config.port)
            return await happy_eyeballs(addresses, self.config.host, self.config.port)
        except DialError as err:
            raise UpstreamError(host, port, f"{self.label}: {err.detail}") from None

    def _handshake(self, target: Target, isolation: str | None) -> ClientHandshake:
        scheme = self.config.scheme
        key = _isolation_key(isolation) if self.config.isolate else None
        if scheme in ("socks5", "socks5h"):
            credentials = self._credentials()
            if key:
                credentials = (key, self.config.password or ISOLATION_PASSWORD)
            return Socks5Handshake(target, credentials=credentials)
        if scheme in ("socks4", "socks4a"):
            return Socks4Handshake(target, userid=key or self.config.username or "")
        return HttpConnectHandshake(
            target, credentials=self._credentials(), isolation=key, tor=self.config.tor
        )

    def _probe_handshake(self, target: Target) -> ClientHandshake:
        scheme = self.config.scheme
        if scheme in ("socks5", "socks5h"):
            return Socks5Handshake(target, credentials=self._credentials(), probe=True)
        if scheme in ("socks4", "socks4a"):
            return Socks4Handshake(target, userid=self.config.username or "", probe=True)
        return HttpConnectHandshake(target, credentials=self._credentials(), probe=True)

    def _credentials(self) -> tuple[str, str] | None:
        if self.config.username is None:
            return None
        return self.config.username, self.config.password or ""


def isolation_scope(route: Dialer, isolation: str | None, client_ip: str) -> str:
    """The isolation part of a pool key: connections isolated apart must never be shared."""
    if isinstance(route, UpstreamDialer):
        return route.scope(isolation, client_ip) or ""
    return isolation or ""


async def _run_handshake(sock: socket.socket, handshake: ClientHandshake) -> None:
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, handshake.start())
        while not handshake.established:
            data = await _peek(loop, sock)
            if not data:
                raise handshake.closed_error()
            _discard(sock, handshake.receive_data(data))
            if outgoing := handshake.data_to_send():
                await loop.sock_sendall(sock, outgoing)
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        raise handshake.closed_error("reset the connection") from None
    except OSError as exc:
        raise handshake.closed_error(f"failed ({exc.strerror or exc})") from None


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """What has arrived, left in the kernel: the handshake takes only its own bytes."""
    while True:
        try:
            return sock.recv(_PEEK_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            pass
        readable: asyncio.Future[None] = loop.create_future()
        fd = sock.fileno()
        loop.add_reader(fd, _set_done, readable)
        try:
            await readable
        finally:
            loop.remove_reader(fd)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _discard(sock: socket.socket, count: int) -> None:
    while count > 0:  # already peeked, so recv cannot block
        chunk = sock.recv(count)
        if not chunk:
            return
        count -= len(chunk)


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _isolation_key(isolation: str | None) -> str | None:
    if not isolation:
        return None
    if len(isolation.encode()) > 255:  # the SOCKS5 username limit
        import hashlib  # long isolation keys are rare; see access.check_credentials

        return hashlib.sha256(isolation.encode()).hexdigest()
    return isolation
