"""An origin connection driven by the event loop's C transport, and moving sockets between
the data plane (transports) and the control plane (raw sockets it splices and reads itself).

API::

    OriginLink(conn)            asyncio.Protocol; .transport, .conn (the route's Connection)
        .owner                  who gets its bytes: a data-plane client, or None when pooled
        .on_idle_event          what the pool runs when a pooled link closes or talks
    adopt(conn) -> OriginLink   (coroutine) a dialed raw socket under a transport
    detach(transport) -> socket the transport's connection as a raw socket; the transport
                                is gone (its buffered writes must have been flushed)
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol as TypingProtocol
from typing import cast

from proxyd.outbound._dialers import Connection


class LinkOwner(TypingProtocol):
    def origin_data(self, data: bytes) -> None: ...

    def origin_lost(self) -> None: ...


class OriginLink(asyncio.Protocol):
    __slots__ = ("conn", "on_idle_event", "owner", "transport")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.owner: LinkOwner | None = None
        self.on_idle_event: Callable[[OriginLink], None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its interface.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.origin_data(data)
            return
        # Bytes nobody asked for on an idle connection: it cannot carry a request again.
        self.close()

    def eof_received(self) -> bool:
        owner = self.owner
        if owner is not None:
            owner.origin_data(b"")
        else:
            self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        transport, self.transport = self.transport, None
        if transport is None:
            return  # detached, or already closed by us
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.origin_lost()
        elif self.on_idle_event is not None:
            self.on_idle_event(self)

    def close(self) -> None:
        transport, self.transport = self.transport, None
        self.owner = None
        if transport is not None:
            transport.abort()
            if self.on_idle_event is not None:
                self.on_idle_event(self)


async def adopt(conn: Connection) -> OriginLink:
    loop = asyncio.get_running_loop()
    link = OriginLink(conn)
    await loop.create_connection(lambda: link, sock=conn.sock)
    return link


def detach(transport: asyncio.Transport) -> socket.socket:
    """Take the connection out of ``transport`` as a raw non-blocking socket."""
    fd = transport.get_extra_info("socket").fileno()
    sock = socket.socket(fileno=socket.dup(fd))
    sock.setblocking(False)
    # Only this process's descriptor closes: no FIN while the duplicate is open.
    transport.abort()
    return sock
