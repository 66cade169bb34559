"""Keep-alive pool of idle origin connections for plain HTTP, keyed by route and target."""

from __future__ import annotations

import socket
import time
from collections import deque

from proxyd.dialers import Connection

# (route, isolation credential, host, port): connections never cross Tor isolation.
PoolKey = tuple[str, str, str, int]


class OriginPool:
    """Idle connections, most recently used first; stale ones are dropped on checkout.

    An idle socket that is readable has either been closed by the origin or sent bytes
    nobody asked for: both make it unusable, and a non-blocking peek tells them apart
    from a live idle connection without any timer per socket.
    """

    def __init__(self, *, max_idle_per_key: int = 256, idle_seconds: float = 60.0) -> None:
        self._idle: dict[PoolKey, deque[tuple[Connection, float]]] = {}
        self._max_idle = max_idle_per_key
        self._idle_seconds = idle_seconds

    def checkout(self, key: PoolKey) -> Connection | None:
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            conn, since = conns.pop()
            if now - since < self._idle_seconds and _still_idle(conn.sock):
                if not conns:
                    del self._idle[key]
                return conn
            conn.sock.close()
        self._idle.pop(key, None)
        return None

    def checkin(self, key: PoolKey, conn: Connection) -> None:
        conns = self._idle.setdefault(key, deque())
        if len(conns) >= self._max_idle:
            oldest, _ = conns.popleft()
            oldest.sock.close()
        conns.append((conn, time.monotonic()))

    def sweep(self) -> None:
        """Close connections idle for too long (called from a periodic timer)."""
        cutoff = time.monotonic() - self._idle_seconds
        for key in list(self._idle):
            conns = self._idle[key]
            while conns and conns[0][1] < cutoff:
                conns.popleft()[0].sock.close()
            if not conns:
                del self._idle[key]

    def close(self) -> None:
        for conns in self._idle.values():
            for conn, _ in conns:
                conn.sock.close()
        self._idle.clear()

    def __len__(self) -> int:
        return sum(len(c) for c in self._idle.values())


def _still_idle(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # EOF or bytes nobody asked for
