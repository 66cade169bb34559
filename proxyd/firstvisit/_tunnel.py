"""Open a route for a CONNECT or SOCKS client and hand both sockets to the data plane."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from proxyd.dataplane import RequestRecord, SpliceTunnel, outcome_for
from proxyd.errors import ClientGone, DialError, UpstreamError
from proxyd.firstvisit._freeze import freeze_watch
from proxyd.firstvisit._retry import TunnelReply, TunnelVisit, note_dial, note_dial_failure
from proxyd.outbound import Connection, is_desync, send_first
from proxyd.runtime import Runtime


async def run_tunnel(
    rt: Runtime,
    client: socket.socket,
    host: str,
    port: int,
    *,
    reply: TunnelReply,
    client_ip: str,
    record: RequestRecord,
    client_bytes: bytes = b"",
) -> None:
    """Pick the route for ``host:port``, answer the client, then relay until both sides end.

    ``client_bytes`` is what the client already sent past its request (e.g. a TLS
    ClientHello that arrived with the CONNECT head); it is forwarded first, never dropped.
    The client socket belongs to the tunnel from here on. ``record`` learns the route,
    the outcome and the bytes; the caller finishes it.
    """
    loop = asyncio.get_running_loop()
    try:
        plan = rt.router.plan(host, port)
    except DialError as err:
        record.outcome = outcome_for(err)
        await reply.failure(err)
        return
    record.route = plan.first.name
    if len(plan.routes) == 1 and not is_desync(plan.first.name):
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
            note_dial_failure(rt, plan.first.name, err)
            if isinstance(err, UpstreamError):
                rt.upstreams.report_failure(plan.first.name, err)
            record.outcome = outcome_for(err)
            await reply.failure(err)
            return
        note_dial(rt, plan.first, conn)
        record.connect_seconds = conn.connect_seconds
        try:
            await reply.success(conn)
            if client_bytes:
                await send_first(loop, conn, client_bytes)
        except OSError:
            conn.sock.close()
            return
        record.up += len(client_bytes)
        await relay(rt, client, conn, record)
        return
    visit = TunnelVisit(rt, client, host, port, plan, reply, client_ip, client_bytes)
    try:
        committed = await visit.run()
    except ClientGone:
        return
    if committed is None:
        record.outcome = visit.failure_outcome
        return
    conn, server_bytes = committed
    record.route = conn.route
    record.connect_seconds = conn.connect_seconds
    record.first_byte_seconds = visit.first_byte_seconds
    try:
        await loop.sock_sendall(client, server_bytes)
    except OSError:
        conn.sock.close()
        return
    record.up += len(visit.first_bytes)
    record.down += len(server_bytes)
    watch = freeze_watch(rt, host, plan, conn.route, record)
    await relay(rt, client, conn, record, on_client_done=watch)
    # The control of a suspected freeze or cut: an upstream carried more than it let through.
    if plan.stall_control and rt.learned is not None:
        rt.learned.control_carried(host, conn.route, record.down)


async def relay(
    rt: Runtime,
    client: socket.socket,
    conn: Connection,
    record: RequestRecord,
    *,
    on_client_done: Callable[[SpliceTunnel], bool] | None = None,
) -> None:
    """Splice until the tunnel ends; the request counts as "ok" from its start."""
    tunnel = SpliceTunnel(
        client,
        conn.sock,
        idle_timeout=rt.config.limits.idle_timeout,
        on_client_done=on_client_done,
    )
    stats = rt.stats
    stats.tunnel_opened(conn.route)
    record.outcome = "ok"
    try:
        await asyncio.shield(tunnel.start())
    except asyncio.CancelledError:
        tunnel.abort()
        raise
    finally:
        # abort() settles the counts at once, so they are final here on every path.
        stats.tunnel_closed(conn.route)
        record.up += tunnel.up.moved
        record.down += tunnel.down.moved
        if tunnel.timed_out:
            stats.limit_hit("idle_timeout")
