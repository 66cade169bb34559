"""The LAN DNS listener (``dns_listen``): UDP and TCP, answered from the honest source.

A router's dnsmasq (``server=``) or the devices themselves can ask it instead of the
ISP's resolver. It answers A and AAAA queries (other types get NOTIMP), from the DoH
providers and their cache when any is configured, else from the system resolver. The
proxy's access control applies: a client outside ``allow`` gets REFUSED, and ``.onion``
is NXDOMAIN without any resolver being asked (Tor resolves those, nobody else may).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import cast

from proxyd.access import AccessPolicy
from proxyd.config import ListenAddress
from proxyd.errors import DnsLookupError
from proxyd.resolver._resolver import Resolver
from proxyd.resolver._wire import (
    AAAA,
    NOERROR,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    A,
    Question,
    WireError,
    encode_reply,
    parse_question,
)

log = logging.getLogger("proxyd.dns")

NOTIMP = 4
TCP_TIMEOUT = 10.0
UDP_SIZE = 512  # without EDNS0, which the listener does not offer


class DnsListener:
    def __init__(
        self, resolver: Callable[[], Resolver], access: Callable[[], AccessPolicy]
    ) -> None:
        """Both are callables: a reload replaces the resolver and the access policy."""
        self._resolver = resolver
        self._access = access
        self._transports: list[asyncio.DatagramTransport] = []
        self._servers: list[asyncio.Server] = []
        self.answered: dict[str, int] = {"ok": 0, "refused": 0, "error": 0}

    async def start(self, addresses: tuple[ListenAddress, ...]) -> None:
        loop = asyncio.get_running_loop()
        for address in addresses:
            host = "127.0.0.1" if address.host == "localhost" else address.host
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(host, address.port), family=family
            )
            self._transports.append(transport)
            self._servers.append(
                await asyncio.start_server(self._serve_tcp, host, address.port, family=family)
            )

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [t.get_extra_info("sockname")[:2] for t in self._transports]

    def close(self) -> None:
        for transport in self._transports:
            transport.close()
        for server in self._servers:
            server.close()
        self._transports.clear()
        self._servers.clear()

    async def answer(self, wire: bytes, client_ip: str, max_size: int = 65535) -> bytes | None:
        try:
            question = parse_question(wire)
        except WireError:
            return None  # not DNS: say nothing, as a resolver would
        if not self._access().client_allowed(client_ip):
            self.answered["refused"] += 1
            return encode_reply(question, REFUSED)
        try:
            reply = await self._resolve(question)
        except DnsLookupError as exc:
            log.debug("dns listener: %s", exc.detail)
            self.answered["error"] += 1
            return encode_reply(question, SERVFAIL)
        self.answered["ok"] += 1
        if len(reply) > max_size:  # RFC 1035 §4.2.1: TC set, the client asks over TCP
            empty = bytearray(encode_reply(question, NOERROR))
            empty[2] |= 0x02
            return bytes(empty)
        return reply

    async def _resolve(self, question: Question) -> bytes:
        name = question.name
        if name == "onion" or name.endswith(".onion"):
            return encode_reply(question, NXDOMAIN)
        if question.qtype not in (A, AAAA):
            return encode_reply(question, NOTIMP)
        resolver = self._resolver()
        if resolver.has_honest_source:
            addresses, ttl = await resolver.lookup(name, question.qtype)
        else:
            addresses, ttl = await _system(name, question.qtype), resolver.cache.min_ttl
        return encode_reply(question, NOERROR, addresses, ttl)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client_ip = str(writer.get_extra_info("peername")[0])
        try:
            while True:
                async with asyncio.timeout(TCP_TIMEOUT):
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    wire = await reader.readexactly(length)
                reply = await self.answer(wire, client_ip)
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, listener: DnsListener) -> None:
        self._listener = listener
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport has the interface without the base class
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        task = asyncio.ensure_future(self._reply(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        reply = await self._listener.answer(data, str(addr[0]), max_size=UDP_SIZE)
        if reply is not None and self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(reply, addr)


async def _system(name: str, qtype: int) -> tuple[str, ...]:
    family = socket.AF_INET if qtype == A else socket.AF_INET6
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, None, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return ()
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))
