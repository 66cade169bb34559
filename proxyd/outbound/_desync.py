"""Desync: reach a DPI-filtered site directly by cutting the bytes the filter matches on.

Many filters inspect one packet at a time (so does iptables' ``-m string``): a TLS
ClientHello whose server_name is split across two TCP segments, or an HTTP request whose
Host value is, slips past them, while the server reassembles the stream as usual. The
``desync`` route is the direct route plus that split, tried after direct and before any
upstream when ``learning.desync`` is on: when it works, a blocked site stays on the fast,
private direct path instead of going through Tor (DESIGN §4, "the cheapest route that
worked"). Filters that reassemble the stream are not fooled; the upstreams remain behind.

``split_point`` is sans-IO; ``send_first`` is the one place the split reaches a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct

from proxyd.outbound._dialers import Connection, DirectDialer
from proxyd.protocol import HANDSHAKE, sni_from_client_hello

ROUTE = "desync"
# Linux: bytes in the send queue not yet sent (linux/sockios.h).
_SIOCOUTQNSD = 0x894B
# How long to wait for the first part to leave as its own segment before sending the rest.
_FLUSH_POLLS = 20
_FLUSH_POLL_SECONDS = 0.001


def split_point(data: bytes) -> int | None:
    """Where to cut ``data`` so no segment holds the whole destination name; None when
    ``data`` names no host (nothing a filter could match on)."""
    if data[:1] == bytes([HANDSHAKE]):
        name = sni_from_client_hello(data)
        start = data.find(name.encode("ascii")) if name else -1
        return start + max(1, len(name) // 2) if name and start >= 0 else None
    lower = data[:8192].lower()
    at = lower.find(b"\r\nhost:")
    if at < 0:
        return None
    start = at + len(b"\r\nhost:")
    end = lower.find(b"\r\n", start)
    value = lower[start : end if end >= 0 else len(lower)].strip()
    if not value:
        return None
    return lower.index(value, start) + max(1, len(value) // 2)


async def send_first(loop: asyncio.AbstractEventLoop, conn: Connection, data: bytes) -> None:
    """Send a client's first bytes (or a request head) on ``conn``, split for desync."""
    cut = split_point(data) if conn.route == ROUTE else None
    if cut is None:
        await loop.sock_sendall(conn.sock, data)
        return
    await loop.sock_sendall(conn.sock, data[:cut])
    # TCP_NODELAY sends the first part at once unless the window holds it back; while it
    # is still queued, the kernel would append the rest to the same segment.
    for _ in range(_FLUSH_POLLS):
        if _unsent(conn.sock) == 0:
            break
        await asyncio.sleep(_FLUSH_POLL_SECONDS)
    await loop.sock_sendall(conn.sock, data[cut:])


def _unsent(sock: socket.socket) -> int:
    with contextlib.suppress(OSError):
        raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQNSD, b"\0\0\0\0")
        return int(struct.unpack("i", raw)[0])
    return 0


class DesyncDialer:
    """The direct route under another name, so learning can tell them apart."""

    name = ROUTE

    def __init__(self, direct: DirectDialer) -> None:
        self._direct = direct

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
        conn.route = ROUTE
        return conn
