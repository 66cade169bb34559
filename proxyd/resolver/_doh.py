"""One DNS-over-HTTPS provider: a kept-alive TLS connection, one query at a time.

The connection is opened to the provider's bootstrap addresses (never a name the system
resolver would be asked for) or through the connector its ``via`` names, with the
provider's host as SNI and certificate name. Queries are few (first visits, cache
misses), so one connection per provider with queries in turn is enough; a kept-alive
connection the provider closed in between is reopened once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable

from proxyd.config import DohProviderConfig
from proxyd.resolver._wire import (
    DnsAnswer,
    WireError,
    decode_answer,
    doh_request,
    encode_query,
    parse_doh_response,
)

Connector = Callable[[str, int, float], Awaitable[socket.socket]]
"""``connect(host, port, timeout)`` -> a connected non-blocking socket, or ``OSError``."""

RECV_SIZE = 16384


class DohError(Exception):
    """The provider gave no usable answer (unreachable, TLS, HTTP status, garbage)."""


async def connect_bootstrap(addresses: tuple[str, ...], port: int, timeout: float) -> socket.socket:
    """The first bootstrap address that accepts, in order."""
    loop = asyncio.get_running_loop()
    last: OSError = OSError("no bootstrap address")
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (address, port))
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else OSError(f"{address}: timed out")
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise last


class DohProvider:
    def __init__(
        self, config: DohProviderConfig, connector: Connector | None, tls: ssl.SSLContext
    ) -> None:
        self.config = config
        self.name = config.name
        self._connector = connector
        self._tls = tls
        self._lock = asyncio.Lock()
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._buffer = b""

    async def query(self, name: str, qtype: int, timeout: float) -> DnsAnswer:
        """Raises ``DohError`` (timeouts included)."""
        request = doh_request(self.config.host, self.config.path, encode_query(name, qtype))
        async with self._lock:
            try:
                async with asyncio.timeout(timeout):
                    body = await self._exchange(request, timeout)
            except TimeoutError:
                self._drop()
                raise DohError(f"{self.name}: no answer within {timeout:g}s") from None
            except (OSError, ssl.SSLError, WireError, EOFError) as exc:
                self._drop()
                raise DohError(f"{self.name}: {exc}") from None
        try:
            return decode_answer(body, name, qtype)
        except WireError as exc:
            raise DohError(f"{self.name}: {exc}") from None

    async def _exchange(self, request: bytes, timeout: float) -> bytes:
        reused = self._stream is not None
        try:
            return await self._send(request, timeout)
        except (OSError, EOFError):
            if not reused:
                raise
            self._drop()  # closed while idle: the provider never saw this query
            return await self._send(request, timeout)

    async def _send(self, request: bytes, timeout: float) -> bytes:
        if self._stream is None:
            self._stream = await self._open(timeout)
        reader, writer = self._stream
        writer.write(request)
        await writer.drain()
        while True:
            parsed = parse_doh_response(self._buffer)
            if parsed is not None:
                status, body, used = parsed
                self._buffer = self._buffer[used:]
                if status != 200:
                    raise WireError(f"HTTP status {status}")
                return body
            data = await reader.read(RECV_SIZE)
            if not data:
                raise EOFError("connection closed")
            self._buffer += data

    async def _open(self, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        config = self.config
        if self._connector is None:
            sock = await connect_bootstrap(config.bootstrap, config.port, timeout)
        else:
            sock = await self._connector(config.bootstrap[0], config.port, timeout)
        self._buffer = b""
        try:
            return await asyncio.open_connection(
                sock=sock, ssl=self._tls, server_hostname=config.host
            )
        except BaseException:
            sock.close()
            raise

    def _drop(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream[1].close()
        self._stream = None
        self._buffer = b""

    def close(self) -> None:
        self._drop()
