"""Keep-alive pool of idle origin connections for plain HTTP, keyed by route and target.

Every idle connection in the pool has a reader registered with the event loop: an idle
origin connection only becomes readable when the origin closes it (or sends bytes nobody
asked for), and either way the pool drops it at once, with no timer per socket and no
probe before each use.

The hot path (``hotlane``) takes connections with ``checkout_armed``, which only points
the registered reader at its own callback; ``checkin`` points it back. With uvloop that
swap costs no system call, where removing and re-adding a reader costs several epoll
changes per request. The coroutine path takes them with ``checkout`` (reader removed:
it reads with ``sock_recv``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable

from proxyd.outbound._dialers import Connection

# (route, isolation credential, host, port): connections never cross Tor isolation.
PoolKey = tuple[str, str, str, int]


class OriginPool:
    """Idle connections, most recently used first."""

    def __init__(self, *, max_idle_per_key: int = 256, idle_seconds: float = 60.0) -> None:
        self._idle: dict[PoolKey, deque[tuple[Connection, float]]] = {}
        # 256, not a browser's 6: one household proxy carries every client's requests to
        # a popular origin, and a pool smaller than the concurrency closes and redials.
        self._max_idle = max_idle_per_key
        self._idle_seconds = idle_seconds

    def _take(self, key: PoolKey) -> Connection | None:
        conns = self._idle.get(key)
        if not conns:
            return None
        conn, since = conns.pop()
        if not conns:
            del self._idle[key]
        if time.monotonic() - since >= self._idle_seconds:
            _forget(conn)  # the sweep has not run yet; an origin may have timed it out
            return self._take(key)
        return conn

    def checkout(self, key: PoolKey) -> Connection | None:
        """An idle connection with no reader registered, or None."""
        conn = self._take(key)
        if conn is not None:
            asyncio.get_running_loop().remove_reader(conn.sock.fileno())
        return conn

    def checkout_armed(
        self, key: PoolKey, on_readable: Callable[[Connection], None]
    ) -> Connection | None:
        """An idle connection whose reader now calls ``on_readable(conn)``, or None."""
        conn = self._take(key)
        if conn is not None:
            asyncio.get_running_loop().add_reader(conn.sock.fileno(), on_readable, conn)
        return conn

    def checkin(self, key: PoolKey, conn: Connection) -> None:
        """Keep ``conn`` (its reader registered or not) for the next request to ``key``."""
        conns = self._idle.setdefault(key, deque())
        if len(conns) >= self._max_idle:
            _forget(conns.popleft()[0])
        conns.append((conn, time.monotonic()))
        asyncio.get_running_loop().add_reader(conn.sock.fileno(), self._on_idle_readable, key, conn)

    def _on_idle_readable(self, key: PoolKey, conn: Connection) -> None:
        conns = self._idle.get(key)
        if conns:
            for entry in conns:
                if entry[0] is conn:
                    conns.remove(entry)
                    break
            if not conns:
                del self._idle[key]
        _forget(conn)

    def sweep(self) -> None:
        """Close connections idle for too long (called from a periodic timer)."""
        cutoff = time.monotonic() - self._idle_seconds
        for key in list(self._idle):
            conns = self._idle[key]
            while conns and conns[0][1] < cutoff:
                _forget(conns.popleft()[0])
            if not conns:
                del self._idle[key]

    def close(self) -> None:
        for conns in self._idle.values():
            for conn, _ in conns:
                _forget(conn)
        self._idle.clear()

    def __len__(self) -> int:
        return sum(len(c) for c in self._idle.values())


def _forget(conn: Connection) -> None:
    sock: socket.socket = conn.sock
    if sock.fileno() >= 0:
        asyncio.get_running_loop().remove_reader(sock.fileno())
    sock.close()
