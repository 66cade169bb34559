"""The data plane: move bytes between two connected sockets with as little Python as possible.

Once a route is committed, a tunnel's bytes go socket -> pipe -> socket with ``os.splice``
driven by ``add_reader``/``add_writer`` on the raw non-blocking sockets, so payload never
enters Python memory (DESIGN §8: ~0.2 CPU s/GB against ~1.5-1.9 for a StreamReader loop).
Per wake-up the only Python work is the splice calls and an int add; the idle timer is
re-armed lazily from a flag instead of once per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import Callable

# How much one splice call may move; the pipe's capacity bounds it anyway.
SPLICE_CHUNK = 1 << 20
# A larger pipe lets one wake-up move more; pages are only allocated while data is in flight,
# but the kernel's ring of buffer slots is allocated at once (40 bytes per 4 KiB), so a
# tunnel's pipe only grows to this once it has filled the default 64 KiB one (bulk). With
# 1 MiB instead of 256 KiB a 1 GiB CONNECT download took ~0.1 s/GB less CPU here.
PIPE_SIZE = 1024 * 1024
DEFAULT_PIPE_SIZE = 64 * 1024
# Wake-ups handle several splices before yielding so one busy tunnel cannot starve others.
SPLICES_PER_WAKEUP = 8

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _new_pipe(size: int = PIPE_SIZE) -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    if size != DEFAULT_PIPE_SIZE:
        _grow_pipe(w, size)
    return r, w


def _grow_pipe(w: int, size: int) -> None:
    with contextlib.suppress(OSError):  # unprivileged limits may refuse; 64 KiB still works
        fcntl.fcntl(w, _F_SETPIPE_SZ, size)


class _Pump:
    """One direction: src socket -> pipe -> dst socket.

    The pipe is made on the first readable event: an idle tunnel holds two sockets, not
    two sockets and four pipe ends (10,000 idle tunnels must fit in the fd limit).
    """

    __slots__ = (
        "_tunnel",
        "dst",
        "dst_fd",
        "eof",
        "grown",
        "in_pipe",
        "last_read",
        "moved",
        "pipe_r",
        "pipe_w",
        "src",
        "src_fd",
        "writer_armed",
    )

    def __init__(self, tunnel: SpliceTunnel, src: socket.socket, dst: socket.socket) -> None:
        self._tunnel = tunnel
        self.src = src
        self.dst = dst
        self.src_fd = src.fileno()
        self.dst_fd = dst.fileno()
        self.pipe_r = self.pipe_w = -1
        self.grown = False
        self.in_pipe = 0
        self.moved = 0
        self.eof = False
        self.writer_armed = False
        # When src last woke us: learning tells a frozen tunnel by its final silence.
        self.last_read = tunnel.loop.time()

    def on_readable(self) -> None:
        tunnel = self._tunnel
        tunnel.active = True
        last_read, self.last_read = self.last_read, tunnel.loop.time()
        if self.pipe_w < 0:
            try:
                self.pipe_r, self.pipe_w = _new_pipe(DEFAULT_PIPE_SIZE)
            except OSError as exc:
                # Out of fds (EMFILE): closing this tunnel is the only way to make room,
                # and it must close, or its EOF would call back here for ever.
                tunnel.abort(exc)
                return
        for _ in range(SPLICES_PER_WAKEUP):
            try:
                n = os.splice(self.src_fd, self.pipe_w, SPLICE_CHUNK, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                return
            except OSError as exc:
                if self is tunnel.down:
                    # Learning asks how long the server had been quiet when it was reset.
                    self.last_read = last_read
                    tunnel.server_reset = True
                tunnel.abort(exc)
                return
            if n == 0:
                self.eof = True
                tunnel.loop.remove_reader(self.src_fd)
                self._finish_if_drained()
                return
            self.in_pipe += n
            if n >= DEFAULT_PIPE_SIZE and not self.grown:
                self.grown = True
                _grow_pipe(self.pipe_w, PIPE_SIZE)
            if not self._flush():
                return

    def on_writable(self) -> None:
        self._tunnel.active = True
        if self._flush():
            self.writer_armed = False
            self._tunnel.loop.remove_writer(self.dst_fd)
            if self.eof:
                self._finish_if_drained()
            else:
                self._tunnel.loop.add_reader(self.src_fd, self.on_readable)

    def _flush(self) -> bool:
        """Drain the pipe into dst; False when dst is full and the pump had to park."""
        while self.in_pipe:
            try:
                n = os.splice(self.pipe_r, self.dst_fd, self.in_pipe, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                if not self.writer_armed:
                    self.writer_armed = True
                    loop = self._tunnel.loop
                    loop.remove_reader(self.src_fd)
                    loop.add_writer(self.dst_fd, self.on_writable)
                return False
            except OSError as exc:
                if self is self._tunnel.up:
                    self._tunnel.server_reset = True
                self._tunnel.abort(exc)
                return False
            self.in_pipe -= n
            self.moved += n
        return True

    def _finish_if_drained(self) -> None:
        if self.in_pipe:
            return
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)
        self._tunnel.direction_finished(self)

    def close_pipe(self) -> None:
        if self.pipe_w >= 0:
            os.close(self.pipe_r)
            os.close(self.pipe_w)


class SpliceTunnel:
    """Relay two sockets until both directions reach EOF, an error, or idleness.

    ``done`` resolves to ``(client_to_server_bytes, server_to_client_bytes)``. The tunnel
    owns both sockets from start() on and closes them when it ends.

    ``on_client_done(tunnel)`` is called when the client has finished sending (EOF) while
    the server has not, and, failing that, as the tunnel ends; ``server_silence`` is then
    how long the server had said nothing. Returning True ends the tunnel at once: a
    server that will never speak again (a frozen tunnel) would otherwise hold it until
    the idle timeout. ``server_reset``: the tunnel ended because the server's side
    failed (a reset), not the client's.
    """

    __slots__ = (
        "_closed",
        "_finished_directions",
        "_idle_handle",
        "_idle_timeout",
        "_on_client_done",
        "active",
        "client",
        "done",
        "down",
        "ended_at",
        "loop",
        "server",
        "server_reset",
        "timed_out",
        "up",
    )

    def __init__(
        self,
        client: socket.socket,
        server: socket.socket,
        *,
        idle_timeout: float,
        on_client_done: Callable[[SpliceTunnel], bool] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.client = client
        self.server = server
        self.ended_at = 0.0
        self.up = _Pump(self, client, server)
        self.down = _Pump(self, server, client)
        self.done: asyncio.Future[tuple[int, int]] = self.loop.create_future()
        self.active = False
        self.timed_out = False
        self.server_reset = False
        self._idle_timeout = idle_timeout
        self._idle_handle: asyncio.TimerHandle | None = None
        self._finished_directions = 0
        self._closed = False
        self._on_client_done = on_client_done

    def start(self) -> asyncio.Future[tuple[int, int]]:
        self.loop.add_reader(self.up.src_fd, self.up.on_readable)
        self.loop.add_reader(self.down.src_fd, self.down.on_readable)
        if self._idle_timeout > 0:
            self._idle_handle = self.loop.call_later(self._idle_timeout, self._check_idle)
        return self.done

    def _check_idle(self) -> None:
        if not self.active:
            self.timed_out = True
            self.abort(TimeoutError("tunnel idle"))
            return
        self.active = False
        self._idle_handle = self.loop.call_later(self._idle_timeout, self._check_idle)

    @property
    def server_silence(self) -> float:
        """Seconds from the server's last bytes (or the start) to now or the tunnel's end."""
        return (self.ended_at or self.loop.time()) - self.down.last_read

    def direction_finished(self, pump: _Pump) -> None:
        self._finished_directions += 1
        # Only the client finishing first asks whether the server's silence is for good.
        if self._finished_directions == 2 or (pump is self.up and self._client_done()):
            self._close()

    def _client_done(self) -> bool:
        callback, self._on_client_done = self._on_client_done, None
        return callback is not None and callback(self)

    def abort(self, exc: BaseException | None = None) -> None:
        """End the tunnel at once (reset, idle, drain); ``exc`` is only the cause."""
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = self.loop
        self.ended_at = loop.time()
        self._client_done()
        for pump in (self.up, self.down):
            loop.remove_reader(pump.src_fd)
            loop.remove_writer(pump.dst_fd)
            pump.close_pipe()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        self.client.close()
        self.server.close()
        if not self.done.done():
            self.done.set_result((self.up.moved, self.down.moved))


class SourceEnded(ConnectionResetError):
    """The source of an exact copy ended or was reset before the count: ``moved`` bytes
    had reached the destination (all that was read), so the rest may be asked elsewhere."""

    def __init__(self, moved: int, why: str) -> None:
        super().__init__(why)
        self.moved = moved


class BodyPipe:
    """A reusable pipe for copying exact byte counts between sockets (bodies, uploads).

    One per client connection, created on first use: small bodies never need it.
    """

    __slots__ = ("_r", "_w")

    def __init__(self) -> None:
        self._r, self._w = _new_pipe()

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)

    async def copy_exact(
        self, src: socket.socket, dst: socket.socket, count: int, *, timeout: float
    ) -> None:
        """Move exactly ``count`` bytes from src to dst; src ending or failing first is
        ``SourceEnded`` (a ``ConnectionResetError``) with how many bytes reached dst.

        ``timeout`` bounds each wait for either socket, not the whole body.
        """
        await _BodyCopy(self, src, dst, count, timeout).future

    async def copy_until_eof(
        self, src: socket.socket, dst: socket.socket, *, timeout: float
    ) -> int:
        """Move bytes until src reaches EOF (bodies delimited by close); returns the count."""
        return await _BodyCopy(self, src, dst, None, timeout).future


class _BodyCopy:
    """One body through a ``BodyPipe``, driven by reader/writer callbacks like ``_Pump``.

    A coroutine that awaited a future per EAGAIN, with an ``asyncio.timeout`` rescheduled
    after each, cost an extra loop iteration and a few allocations per wake-up; here a
    wake-up is the splice calls, and the timeout is one timer re-armed lazily from a flag.
    """

    __slots__ = (
        "_active",
        "_left",
        "_loop",
        "_pipe_r",
        "_pipe_w",
        "_timeout",
        "_timer",
        "dst_fd",
        "future",
        "in_pipe",
        "src_fd",
        "total",
        "waiting",
    )

    def __init__(
        self,
        pipe: BodyPipe,
        src: socket.socket,
        dst: socket.socket,
        count: int | None,
        timeout: float,
    ) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._pipe_r, self._pipe_w = pipe._r, pipe._w
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self._left = count  # None: until EOF
        self._timeout = timeout
        self._active = False
        self.in_pipe = self.total = 0
        self.waiting: str | None = None  # "read" or "write": which callback is registered
        self.future: asyncio.Future[int] = loop.create_future()
        self.future.add_done_callback(self._cleanup)
        self._timer: asyncio.TimerHandle | None = loop.call_later(timeout, self._check_idle)
        self._step()

    def _step(self) -> None:
        self._active = True
        while True:
            while self.in_pipe:
                try:
                    n = os.splice(self._pipe_r, self.dst_fd, self.in_pipe, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    self._wait("write")
                    return
                except OSError as exc:
                    self._fail(exc)
                    return
                self.in_pipe -= n
            left = self._left
            if left == 0:
                self._finish()
                return
            want = SPLICE_CHUNK if left is None else min(left, SPLICE_CHUNK)
            try:
                n = os.splice(self.src_fd, self._pipe_w, want, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                self._wait("read")
                return
            except OSError as exc:
                # The pipe is empty here: everything read so far reached dst.
                self._fail(exc if left is None else SourceEnded(self.total, str(exc)))
                return
            if n == 0:
                if left is None:
                    self._finish()
                else:
                    self._fail(SourceEnded(self.total, "peer closed before the body ended"))
                return
            self.in_pipe += n
            self.total += n
            if left is not None:
                self._left = left - n

    def _wait(self, what: str) -> None:
        if self.waiting == what:
            return
        self._unregister()
        if what == "read":
            self._loop.add_reader(self.src_fd, self._step)
        else:
            self._loop.add_writer(self.dst_fd, self._step)
        self.waiting = what

    def _unregister(self) -> None:
        if self.waiting == "read":
            self._loop.remove_reader(self.src_fd)
        elif self.waiting == "write":
            self._loop.remove_writer(self.dst_fd)
        self.waiting = None

    def _check_idle(self) -> None:
        if not self._active:
            self._timer = None
            self._fail(TimeoutError("body idle"))
            return
        self._active = False
        self._timer = self._loop.call_later(self._timeout, self._check_idle)

    def _finish(self) -> None:
        self._cleanup(self.future)
        if not self.future.done():
            self.future.set_result(self.total)

    def _fail(self, exc: BaseException) -> None:
        self._cleanup(self.future)
        if not self.future.done():
            self.future.set_exception(exc)

    def _cleanup(self, _future: asyncio.Future[int]) -> None:
        # Also on cancellation: the awaiting coroutine gave up, the callbacks must go.
        self._unregister()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
