"""SOCKS5 / SOCKS4a clients: drive the sans-IO handshake over the raw socket, then tunnel."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from proxyd.dataplane import NO_ROUTE, RequestRecord, finish
from proxyd.errors import DialError
from proxyd.firstvisit import run_tunnel
from proxyd.outbound import Connection
from proxyd.protocol import ConnectRequest, HandshakeFailed, SendBytes, SocksHandshake
from proxyd.runtime import Runtime

_RULESET_REFUSAL = 0x02
_AUTH_FAILURES = frozenset({"bad_credentials", "credentials_required"})


class _SocksReply:
    def __init__(self, sock: socket.socket, handshake: SocksHandshake) -> None:
        self._sock = sock
        self._handshake = handshake

    async def success(self, conn: Connection) -> None:
        try:
            bound_host, bound_port = conn.sock.getsockname()[:2]
        except OSError:
            bound_host, bound_port = "0.0.0.0", 0
        reply = self._handshake.success_reply(bound_host, bound_port)
        await asyncio.get_running_loop().sock_sendall(self._sock, reply)

    async def failure(self, err: DialError) -> None:
        reply = self._handshake.failure_reply(err.socks5_reply)
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().sock_sendall(self._sock, reply)


async def serve_socks(
    rt: Runtime, sock: socket.socket, client_ip: str, first_bytes: bytes, *, allowed: bool
) -> None:
    """Run one SOCKS client from its first bytes to the end of its tunnel."""
    loop = asyncio.get_running_loop()
    protocol = "socks5" if first_bytes[0] == 5 else "socks4"
    access = rt.access

    def check_credentials(username: str, password: str) -> bool:
        throttle, now = access.throttle, loop.time()
        if throttle.blocked(client_ip, now=now):
            rt.stats.limit_hit("auth_failures")
            return False  # refused without looking: guessing right must not help
        if access.check_credentials(username, password):
            return True
        throttle.failed(client_ip, now=now)
        return False

    handshake = SocksHandshake(
        check_credentials=check_credentials if access.auth_required else None
    )
    try:
        request = await _handshake(rt, sock, handshake, first_bytes, protocol)
    except TimeoutError:
        rt.stats.limit_hit("head_timeout")
        return
    if request is None:
        return
    reply = _SocksReply(sock, handshake)
    if not allowed:
        rt.stats.connection_refused("not_allowed")
        await loop.sock_sendall(sock, handshake.failure_reply(_RULESET_REFUSAL))
        return
    record = RequestRecord(protocol, client_ip, request.host, request.port)
    try:
        await run_tunnel(
            rt,
            sock,
            request.host,
            request.port,
            reply=reply,
            client_ip=client_ip,
            record=record,
            client_bytes=handshake.leftover,
        )
    finally:
        finish(rt, record)


async def _handshake(
    rt: Runtime, sock: socket.socket, handshake: SocksHandshake, data: bytes, protocol: str
) -> ConnectRequest | None:
    """The client's CONNECT request, or None when the handshake ended without one."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(rt.config.limits.head_timeout):
        while True:
            for event in handshake.receive_data(data):
                if isinstance(event, SendBytes):
                    await loop.sock_sendall(sock, event.data)
                elif isinstance(event, HandshakeFailed):
                    if event.reason in _AUTH_FAILURES:
                        rt.stats.connection_refused("auth")
                    else:
                        rt.stats.request_done(protocol, NO_ROUTE, "client_error")
                    await loop.sock_sendall(sock, event.reply)
                    return None
                elif isinstance(event, ConnectRequest):
                    return event
            data = await loop.sock_recv(sock, 4096)
            if not data:
                return None
