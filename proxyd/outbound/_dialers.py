"""Open a connection for a route and hand back a plain connected, non-blocking socket.

A dialer is the seam between route selection and IO: the direct route resolves and
connects itself (happy eyeballs), upstream routes go through a SOCKS or HTTP CONNECT
proxy. Either way the caller gets a raw socket it can splice, or a typed ``DialError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from proxyd.access import is_own_address
from proxyd.errors import (
    ConnectionRefused,
    ConnectionReset,
    ConnectTimeout,
    DialError,
    DnsLookupError,
    Forbidden,
    HostUnreachable,
    NetworkUnreachable,
)

# RFC 8305 recommends 250 ms between attempts of different address families.
HAPPY_EYEBALLS_DELAY = 0.25

Address = tuple[str, int]


@dataclass(slots=True)
class Connection:
    """A connected socket plus what the route learned while opening it."""

    sock: socket.socket
    route: str
    resolved: tuple[str, ...] = ()
    peer: Address | None = None
    connect_seconds: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


class Dialer(Protocol):
    name: str

    async def dial(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        client_ip: str = "",
        isolation: str | None = None,
    ) -> Connection: ...


DestinationCheck = Callable[[str, str, int], None]
"""``check(client_ip, ip, port)`` raises ``Forbidden`` for a destination it must not reach."""

AnswerCheck = Callable[[str, tuple[str, ...]], None]
"""``check(host, addresses)`` raises ``DnsPoisoned`` for a forged resolver answer."""

UnreachableNote = Callable[[str, tuple[str, ...]], None]
"""``note(host, addresses)``: no connection to the resolver's answer could be made."""


def _no_check(client_ip: str, ip: str, port: int) -> None:
    return None


def prepare_socket(sock: socket.socket) -> None:
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def error_for_oserror(exc: OSError, host: str, port: int) -> DialError:
    code = exc.errno
    text = exc.strerror or str(exc)
    if code == errno.ECONNREFUSED:
        return ConnectionRefused(host, port, "connection refused")
    if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return ConnectionReset(host, port, "connection reset")
    if code in (errno.EHOSTUNREACH, errno.EHOSTDOWN):
        return HostUnreachable(host, port, "host unreachable")
    if code == errno.ENETUNREACH:
        return NetworkUnreachable(host, port, "network unreachable")
    if code == errno.ETIMEDOUT:
        return ConnectTimeout(host, port, "connect timed out")
    return DialError(host, port, text)


def interleave_families(infos: Sequence[Address], family_of: Sequence[int]) -> list[Address]:
    """Alternate address families, first family first (RFC 8305 §4)."""
    first: list[Address] = []
    rest: list[Address] = []
    first_family = family_of[0] if family_of else socket.AF_INET
    for addr, fam in zip(infos, family_of, strict=True):
        (first if fam == first_family else rest).append(addr)
    ordered: list[Address] = []
    for i in range(max(len(first), len(rest))):
        if i < len(first):
            ordered.append(first[i])
        if i < len(rest):
            ordered.append(rest[i])
    return ordered


async def resolve(host: str, port: int) -> list[tuple[int, Address]]:
    """Resolve with the loop's resolver; literal addresses skip the lookup."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [(fam, (str(ip), port))]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DnsLookupError(host, port, f"cannot resolve {host}: {exc.strerror}") from None
    except UnicodeError:
        raise DnsLookupError(host, port, f"cannot resolve {host}: invalid name") from None
    seen: set[Address] = set()
    out: list[tuple[int, Address]] = []
    for fam, _type, _proto, _canon, sockaddr in infos:
        addr = (str(sockaddr[0]), int(sockaddr[1]))
        if addr not in seen:
            seen.add(addr)
            out.append((fam, addr))
    if not out:
        raise DnsLookupError(host, port, f"cannot resolve {host}: no addresses")
    return out


async def _connect_one(fam: int, addr: Address) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        prepare_socket(sock)
        await loop.sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    return sock


async def happy_eyeballs(
    addresses: Sequence[tuple[int, Address]], host: str, port: int
) -> tuple[socket.socket, Address]:
    """Start attempts staggered by HAPPY_EYEBALLS_DELAY; the first to connect wins."""
    ordered = interleave_families([a for _f, a in addresses], [f for f, _a in addresses])
    family = {a: f for f, a in addresses}
    pending: dict[asyncio.Task[socket.socket], Address] = {}
    errors: list[OSError] = []
    winner: tuple[socket.socket, Address] | None = None
    try:
        for i, addr in enumerate(ordered):
            pending[asyncio.ensure_future(_connect_one(family[addr], addr))] = addr
            more_to_start = i + 1 < len(ordered)
            while pending:
                done, _ = await asyncio.wait(
                    pending,
                    timeout=HAPPY_EYEBALLS_DELAY if more_to_start else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    break  # stagger elapsed: start the next address in parallel
                for task in done:
                    done_addr = pending.pop(task)
                    exc = task.exception()
                    if exc is None:
                        winner = (task.result(), done_addr)
                        return winner
                    if isinstance(exc, OSError):
                        errors.append(exc)
                    else:
                        raise exc
                if more_to_start:
                    break  # a failure starts the next attempt at once
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                sock = await task
                sock.close()
    if errors:
        raise error_for_oserror(errors[-1], host, port)
    raise DialError(host, port, "no address to connect to")


class DirectDialer:
    """Resolve with the system resolver and connect straight to the destination."""

    name = "direct"

    def __init__(
        self,
        check_destination: DestinationCheck = _no_check,
        check_answer: AnswerCheck | None = None,
        note_unreachable: UnreachableNote | None = None,
    ) -> None:
        self._check = check_destination
        self.check_answer = check_answer
        self.note_unreachable = note_unreachable

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
        addresses: list[tuple[int, Address]] = []
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve(host, port)
                for _fam, (ip, p) in addresses:
                    self._check(client_ip, ip, p)
                if self.check_answer is not None:
                    self.check_answer(host, tuple(ip for _f, (ip, _p) in addresses))
                sock, peer = await happy_eyeballs(addresses, host, port)
        except TimeoutError:
            self._unreachable(host, addresses)
            raise ConnectTimeout(host, port, f"no answer within {timeout:g}s") from None
        except (ConnectionRefused, HostUnreachable, ConnectTimeout):
            self._unreachable(host, addresses)
            raise
        return Connection(
            sock=sock,
            route=self.name,
            resolved=tuple(ip for _f, (ip, _p) in addresses),
            peer=peer,
            connect_seconds=loop.time() - started,
        )

    def _unreachable(self, host: str, addresses: list[tuple[int, Address]]) -> None:
        if self.note_unreachable is not None and addresses:
            self.note_unreachable(host, tuple(ip for _f, (ip, _p) in addresses))


def forbid_endpoints(endpoints: Callable[[], Sequence[Address]]) -> Callable[[str, int], None]:
    """Refuse destinations that are proxyd's own listeners (a request loop)."""

    def check(ip: str, port: int) -> None:
        addr = ipaddress.ip_address(ip)
        for own_ip, own_port in endpoints():
            if own_port != port:
                continue
            own = ipaddress.ip_address(own_ip)
            if own == addr or (own.is_unspecified and (addr.is_loopback or is_own_address(addr))):
                raise Forbidden(ip, port, "destination is proxyd itself (request loop)")

    return check
