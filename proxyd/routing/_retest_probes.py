"""The direct re-tests of a blocked domain: does direct work again?

Each probe connects direct and says how it failed (a ``detect.Reason``), or None when it
saw no sign of censorship. No user data is sent: a handshake, a ``HEAD /``, or, for a
domain learned from freezes, a ``GET /`` read past where a freeze stops.

API::

    await probe_tls(direct, host, timeout, classify) -> Reason | None
    await probe_tls_transfer(direct, host, timeout, stall_after) -> Reason | None
    await probe_http(direct, host, timeout, classify) -> Reason | None
    Classifier = (client bytes, server bytes) -> Reason | None   (LearnedRoutes.classify)
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from proxyd.errors import DialError
from proxyd.learning import STALL_MAX_BYTES, Reason, Strength, classify_dial_error
from proxyd.outbound import DirectDialer
from proxyd.protocol import http1

PROBE_READ = 4096

Classifier = Callable[[bytes, bytes], Reason | None]


async def _probe(
    direct: DirectDialer,
    host: str,
    port: int,
    timeout: float,
    exchange: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[Reason | None]],
) -> Reason | None:
    """Connect direct and run ``exchange``; None means no sign of censorship.

    A refused or unreachable port is not censorship (the site may not serve it), so
    only evidence-grade failures count against the domain.
    """
    try:
        conn = await direct.dial(host, port, timeout=timeout)
    except DialError as err:
        reason = classify_dial_error(err)
        return (
            reason
            if reason.strength is Strength.STRONG or reason is Reason.CONNECT_TIMEOUT
            else None
        )
    try:
        reader, writer = await asyncio.open_connection(sock=conn.sock)
    except OSError:
        conn.sock.close()
        return Reason.CONNECTION_RESET
    try:
        async with asyncio.timeout(timeout):
            return await exchange(reader, writer)
    except TimeoutError:
        return Reason.FIRST_BYTE_TIMEOUT
    except (ConnectionResetError, BrokenPipeError):
        return Reason.CONNECTION_RESET
    except OSError:
        return None
    finally:
        writer.close()


async def _tls_handshake(writer: asyncio.StreamWriter, host: str) -> Reason | None:
    """The handshake with the real SNI; certificates are not verified: the question is
    whether the handshake gets through, not whether to trust the server."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        await writer.start_tls(context, server_hostname=host)
    except ssl.SSLError:
        return Reason.TLS_ALERT_AFTER_HELLO
    except asyncio.IncompleteReadError:
        return Reason.EOF_BEFORE_RESPONSE
    return None


async def probe_tls(
    direct: DirectDialer, host: str, timeout: float, classify: Classifier
) -> Reason | None:
    """A TLS handshake with the real SNI and no user data: what SNI filters react to."""

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Reason | None:
        return await _tls_handshake(writer, host)

    return await _probe(direct, host, 443, timeout, exchange)


async def probe_tls_transfer(
    direct: DirectDialer, host: str, timeout: float, stall_after: float
) -> Reason | None:
    """``GET /`` over TLS, read until more arrived than a freeze lets through.

    A freeze lets the handshake through, so only a transfer can show it lifted. A front
    page too small to pass the freeze proves nothing and counts as still frozen: better
    a domain kept on its upstream than one sent back to break twice more.
    """
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    ).encode()

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Reason | None:
        failure = await _tls_handshake(writer, host)
        if failure is not None:
            return failure
        writer.write(request)
        await writer.drain()
        received = 0
        while received <= STALL_MAX_BYTES:
            try:
                async with asyncio.timeout(stall_after):
                    chunk = await reader.read(STALL_MAX_BYTES)
            except TimeoutError:
                return Reason.STALL_AFTER_DATA
            if not chunk:
                return Reason.STALL_AFTER_DATA
            received += len(chunk)
        return None

    return await _probe(direct, host, 443, timeout + stall_after, exchange)


async def probe_http(
    direct: DirectDialer, host: str, timeout: float, classify: Classifier
) -> Reason | None:
    """``HEAD /`` with the real Host header: what Host-header filters and block pages hit."""
    request = f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Reason | None:
        writer.write(request)
        await writer.drain()
        answer = await reader.read(PROBE_READ)
        if not answer:
            return Reason.EOF_BEFORE_RESPONSE
        try:
            http1.parse_response(answer, request_method="HEAD")
        except http1.HttpError:
            return None  # not HTTP on port 80: nothing to judge
        return classify(request, answer)

    return await _probe(direct, host, 80, timeout, exchange)
