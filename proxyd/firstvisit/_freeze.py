"""Telling a frozen direct tunnel from an idle one the client dropped.

By its bytes a "16 KB freeze" (``learning.is_stall``: some server data, then silence
until the client gave up) looks exactly like a kept-alive connection the browser closes
after an idle spell: both are encrypted, both end with the client leaving. What differs
is the path. A freeze drops every packet of the server's from the cut on, its ACKs
included, so the FIN we send once the client left is never acknowledged; a live server's
kernel acknowledges it within a round trip whatever its application does. One stall
that passes this check is enough to suspect the domain (the upstream control still has
to confirm it), so the check is what keeps open sites from ever being suspected.

A cut after data (``learning.is_cut``) is the same watch for a larger transfer: a reset
on the server's side while its data still flowed needs no check (the client did not
leave, the path ended it), and a silence past a freeze's size is judged by the FIN as
above. A client that closes first never makes a reset count: the watch is spent then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from proxyd.dataplane import RequestRecord, SpliceTunnel
from proxyd.learning import DIRECT, is_cut, is_stall
from proxyd.outbound import spawn
from proxyd.routing import RoutePlan
from proxyd.runtime import Runtime

log = logging.getLogger("proxyd.firstvisit")

# linux/tcp_states.h: states in which our FIN is still waiting for its ACK.
_TCP_FIN_WAIT1, _TCP_LAST_ACK, _TCP_CLOSING = 4, 9, 11
_FIN_UNACKED = frozenset({_TCP_FIN_WAIT1, _TCP_LAST_ACK, _TCP_CLOSING})
_POLL = 0.02


def fin_unacknowledged(sock: socket.socket) -> bool:
    """Whether the FIN this socket sent (or any byte before it) still awaits its ACK."""
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return False  # closed or reset: the server (or someone) answered
    return state in _FIN_UNACKED


async def server_went_deaf(sock: socket.socket, wait: float) -> bool:
    """Send FIN on ``sock`` (if not sent yet) and watch for ``wait`` seconds whether the
    server acknowledges it; True if it never did. Closes ``sock``."""
    loop = asyncio.get_running_loop()
    try:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        deadline = loop.time() + wait
        while fin_unacknowledged(sock):
            if loop.time() >= deadline:
                return True
            await asyncio.sleep(_POLL)
        return False
    finally:
        sock.close()


def freeze_watch(
    rt: Runtime, host: str, plan: RoutePlan, route: str, record: RequestRecord
) -> Callable[[SpliceTunnel], bool] | None:
    """For a first visit that went direct: did the tunnel freeze? The relay's
    ``on_client_done``: True (end the tunnel now) when it has a freeze's shape; the
    server's silence to our FIN then decides, in the background, whether it was one."""
    learned = rt.learned
    if learned is None or not learned.config.enabled or not plan.learn or route != DIRECT:
        return None

    def client_done(tunnel: SpliceTunnel) -> bool:
        if tunnel.timed_out:
            return False  # nobody gave up: both sides were idle
        server_bytes = record.down + tunnel.down.moved
        silence, stall_after = tunnel.server_silence, learned.config.stall_after
        closed = tunnel.down.eof
        cut = is_cut(
            server_bytes,
            server_reset=tunnel.server_reset,
            server_closed=closed,
            silence=silence,
            stall_after=stall_after,
        )
        if cut and tunnel.server_reset:
            learned.direct_cut(host, server_bytes, "tunnel was reset")
            return True
        stall = is_stall(
            server_bytes, server_closed=closed, silence=silence, stall_after=stall_after
        )
        if not (stall or cut):
            return False
        try:
            # The relay closes its own descriptor at once; the socket lives on in this one.
            probe = tunnel.server.dup()
        except OSError:
            return True
        wait = learned.fin_ack_wait

        async def judge() -> None:
            if not await server_went_deaf(probe, wait):
                log.debug(
                    "%s: a direct tunnel fell silent after %d bytes, but the server "
                    "acknowledged our FIN: not a freeze",
                    host,
                    server_bytes,
                )
            elif stall:
                learned.direct_stalled(host, server_bytes)
            else:
                learned.direct_cut(host, server_bytes, "tunnel fell silent")

        spawn(judge())
        return True

    return client_done
