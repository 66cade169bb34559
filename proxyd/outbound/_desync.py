"""Desync: reach a DPI-filtered site directly by reshaping the bytes the filter matches on.

Many filters inspect one packet at a time (so does iptables' ``-m string``), others
reassemble TCP but parse only the first TLS record. The ``desync:<strategy>`` routes are
the direct route with the client's first bytes reshaped by a sans-IO strategy
(``proxyd.protocol.desync``: a TCP split inside the name, the ClientHello re-framed as
two TLS records, both, the Host header's name in mixed case), while the server sees a
valid stream. They are tried after direct and before any upstream, cheapest first, and
only once direct failed on its first packet (``needs_direct_evidence``): a timeout or a
poisoned name is not something reshaping can get past. When one works, a blocked site
stays on the fast, private direct path instead of going through Tor (DESIGN §4, "the
cheapest route that worked"). Filters that reassemble everything are not fooled; the
upstreams remain behind.

``send_first`` is the one place a strategy's chunks reach a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct

from proxyd.outbound._dialers import Connection, DirectDialer
from proxyd.protocol import desync

# The route name rules and old state files use for the TCP split.
ROUTE = desync.LEGACY_ROUTE
# Linux: bytes in the send queue not yet sent (linux/sockios.h).
_SIOCOUTQNSD = 0x894B
# How long to wait for a chunk to leave as its own segment before sending the next.
_FLUSH_POLLS = 20
_FLUSH_POLL_SECONDS = 0.001


def is_desync(route: str) -> bool:
    return desync.strategy_of(route) is not None


async def send_first(loop: asyncio.AbstractEventLoop, conn: Connection, data: bytes) -> None:
    """Send a client's first bytes (or a request head) on ``conn``, reshaped for desync."""
    strategy = desync.strategy_of(conn.route)
    parts = desync.chunks(strategy, data) if strategy is not None else None
    if parts is None:
        await loop.sock_sendall(conn.sock, data)
        return
    for index, part in enumerate(parts):
        if index:
            # TCP_NODELAY sends the previous chunk at once unless the window holds it
            # back; while it is still queued, the kernel would append this one to it.
            for _ in range(_FLUSH_POLLS):
                if _unsent(conn.sock) == 0:
                    break
                await asyncio.sleep(_FLUSH_POLL_SECONDS)
        await loop.sock_sendall(conn.sock, part)


def _unsent(sock: socket.socket) -> int:
    with contextlib.suppress(OSError):
        raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQNSD, b"\0\0\0\0")
        return int(struct.unpack("i", raw)[0])
    return 0


class DesyncDialer:
    """The direct route under a strategy's name, so learning can tell them apart."""

    # The race starts this route only once direct failed on its first packet.
    needs_direct_evidence = True

    def __init__(self, direct: DirectDialer, strategy: desync.Strategy) -> None:
        self._direct = direct
        self.strategy = strategy
        self.name = strategy.route

    async def dial(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        client_ip: str = "",
        isolation: str | None = None,
    ) -> Connection:
        conn = await self._direct.dial(host, port, timeout=timeout, client_ip=client_ip)
        conn.route = self.name
        return conn
