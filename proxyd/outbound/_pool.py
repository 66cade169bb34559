"""Keep-alive pool of idle origin connections for plain HTTP, keyed by route and target.

Pooled connections stay under their transport with their ``OriginLink`` protocol attached,
so the data plane (``http_protocol``) takes one and sends at once: no system call and no
epoll change to check it out or in. An idle link only hears from the loop when the origin
closes it (or sends bytes nobody asked for), and the pool then drops it; no timer per
connection and no probe before each use.

The control plane reads and splices raw sockets: ``checkout`` detaches a pooled link's
socket for it, and ``checkin`` puts a raw socket it is done with back under a transport
(awaited: the loop attaches it asynchronously).
"""

from __future__ import annotations

import time

from proxyd.outbound._dialers import Connection
from proxyd.outbound._origin_link import OriginLink, adopt, detach

# (route, isolation credential, host, port): connections never cross Tor isolation.
PoolKey = tuple[str, str, str, int]


class OriginPool:
    """Idle links, most recently used last."""

    def __init__(self, *, max_idle_per_key: int = 256, idle_seconds: float = 60.0) -> None:
        self._idle: dict[PoolKey, list[tuple[OriginLink, float]]] = {}
        # 256, not a browser's 6: one household proxy carries every client's requests to
        # a popular origin, and a pool smaller than the concurrency closes and redials.
        self._max_idle = max_idle_per_key
        self._idle_seconds = idle_seconds

    def take(self, key: PoolKey) -> OriginLink | None:
        """An idle link for the data plane (its owner still unset), or None."""
        links = self._idle.get(key)
        while links:
            link, since = links.pop()
            if not links:
                del self._idle[key]
            if time.monotonic() - since < self._idle_seconds:
                link.on_idle_event = None
                return link
            link.on_idle_event = None
            link.close()  # the sweep has not run yet; an origin may have timed it out
        return None

    def put(self, key: PoolKey, link: OriginLink) -> None:
        """Keep a link the data plane is done with (an answer fully read, reusable)."""
        if link.transport is None:
            return
        link.owner = None
        links = self._idle.setdefault(key, [])
        if len(links) >= self._max_idle:
            oldest = links.pop(0)[0]
            oldest.on_idle_event = None
            oldest.close()
        links.append((link, time.monotonic()))
        link.on_idle_event = lambda gone: self._forget(key, gone)

    def _forget(self, key: PoolKey, link: OriginLink) -> None:
        link.on_idle_event = None
        links = self._idle.get(key)
        if links:
            for i, entry in enumerate(links):
                if entry[0] is link:
                    del links[i]
                    break
            if not links:
                del self._idle[key]
        link.close()

    def checkout(self, key: PoolKey) -> Connection | None:
        """An idle connection as a raw socket for the control plane, or None."""
        link = self.take(key)
        if link is None:
            return None
        transport, link.transport = link.transport, None
        assert transport is not None
        conn = link.conn
        conn.sock = detach(transport)
        return conn

    async def checkin(self, key: PoolKey, conn: Connection) -> None:
        """Keep the control plane's ``conn`` for the next request to ``key``.

        Awaited before the client connection goes back to the data plane, so that its next
        request finds this connection pooled."""
        try:
            link = await adopt(conn)
        except OSError:
            conn.sock.close()
            return
        self.put(key, link)

    def sweep(self) -> None:
        """Close connections idle for too long (called from a periodic timer)."""
        cutoff = time.monotonic() - self._idle_seconds
        for key in list(self._idle):
            links = self._idle[key]
            while links and links[0][1] < cutoff:
                link = links.pop(0)[0]
                link.on_idle_event = None
                link.close()
            if not links:
                del self._idle[key]

    def close(self) -> None:
        for links in self._idle.values():
            for link, _ in links:
                link.on_idle_event = None
                link.close()
        self._idle.clear()

    def __len__(self) -> int:
        return sum(len(c) for c in self._idle.values())
