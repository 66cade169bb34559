"""Open a route for a CONNECT or SOCKS client and hand both sockets to the data plane."""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

from proxyd.dialers import Connection
from proxyd.errors import DialError
from proxyd.relay import SpliceTunnel
from proxyd.runtime import Runtime


class TunnelReply(Protocol):
    """How the inbound protocol tells its client that the tunnel is up or failed."""

    async def success(self, conn: Connection) -> None: ...

    async def failure(self, err: DialError) -> None: ...


async def run_tunnel(
    rt: Runtime,
    client: socket.socket,
    host: str,
    port: int,
    *,
    reply: TunnelReply,
    client_ip: str,
    client_bytes: bytes = b"",
) -> None:
    """Dial ``host:port`` on its route, answer the client, then relay until both sides end.

    ``client_bytes`` is what the client already sent past its request (e.g. a TLS
    ClientHello that arrived with the CONNECT head); it is forwarded first, never dropped.
    The client socket belongs to the tunnel from here on.
    """
    plan = rt.router.plan(host, port)
    try:
        conn = await plan.first.dial(
            host, port, timeout=rt.config.limits.connect_timeout, client_ip=client_ip
        )
    except DialError as err:
        rt.stats.dial_failures += 1
        await reply.failure(err)
        return
    try:
        await reply.success(conn)
        if client_bytes:
            await asyncio.get_running_loop().sock_sendall(conn.sock, client_bytes)
    except OSError:
        conn.sock.close()
        return
    await relay(rt, client, conn)


async def relay(rt: Runtime, client: socket.socket, conn: Connection) -> None:
    tunnel = SpliceTunnel(client, conn.sock, idle_timeout=rt.config.limits.idle_timeout)
    rt.stats.active_tunnels += 1
    try:
        up, down = await asyncio.shield(tunnel.start())
    except asyncio.CancelledError:
        tunnel.abort()
        raise
    finally:
        rt.stats.active_tunnels -= 1
    rt.stats.add_bytes(conn.route, up, down)
