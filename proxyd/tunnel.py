"""Open a route for a CONNECT or SOCKS client and hand both sockets to the data plane."""

from __future__ import annotations

import asyncio
import socket

from proxyd.desync import send_first
from proxyd.dialers import Connection
from proxyd.errors import ClientGone, DialError, UpstreamError
from proxyd.firstvisit import TunnelReply, TunnelVisit, note_dial
from proxyd.relay import SpliceTunnel
from proxyd.runtime import Runtime


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
    """Pick the route for ``host:port``, answer the client, then relay until both sides end.

    ``client_bytes`` is what the client already sent past its request (e.g. a TLS
    ClientHello that arrived with the CONNECT head); it is forwarded first, never dropped.
    The client socket belongs to the tunnel from here on.
    """
    loop = asyncio.get_running_loop()
    try:
        plan = rt.router.plan(host, port)
    except DialError as err:
        await reply.failure(err)
        return
    if len(plan.routes) == 1:
        # One possible route: nothing to fall back to, so no first bytes to keep.
        try:
            conn = await plan.first.dial(
                host,
                port,
                timeout=rt.config.limits.connect_timeout,
                client_ip=client_ip,
                isolation=plan.isolation,
            )
        except DialError as err:
            rt.stats.dial_failures += 1
            if isinstance(err, UpstreamError):
                rt.upstreams.report_failure(plan.first.name, err)
            await reply.failure(err)
            return
        note_dial(rt, plan.first, conn)
        try:
            await reply.success(conn)
            if client_bytes:
                await send_first(loop, conn, client_bytes)
        except OSError:
            conn.sock.close()
            return
        await relay(rt, client, conn)
        return
    visit = TunnelVisit(rt, client, host, port, plan, reply, client_ip, client_bytes)
    try:
        committed = await visit.run()
    except ClientGone:
        return
    if committed is None:
        rt.stats.dial_failures += 1
        return
    conn, server_bytes = committed
    try:
        await loop.sock_sendall(client, server_bytes)
    except OSError:
        conn.sock.close()
        return
    await relay(rt, client, conn)


async def relay(rt: Runtime, client: socket.socket, conn: Connection) -> None:
    tunnel = SpliceTunnel(client, conn.sock, idle_timeout=rt.config.limits.idle_timeout)
    rt.stats.tunnel_opened(conn.route)
    try:
        await asyncio.shield(tunnel.start())
    except asyncio.CancelledError:
        tunnel.abort()
        raise
    finally:
        # abort() settles the counts at once, so they are final here on every path.
        rt.stats.tunnel_closed(conn.route, tunnel.up.moved, tunnel.down.moved)
        if tunnel.timed_out:
            rt.stats.limit_hit("idle_timeout")
