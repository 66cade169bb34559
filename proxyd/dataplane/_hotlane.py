# Over 400 lines: the callbacks of both sockets of one kept-alive exchange, read as a whole.
"""The plain-HTTP hot path: kept-alive requests served from event-loop callbacks.

A client connection spends most of its life waiting for the next request head, and most
requests go to a destination whose route is already decided (a rule, a learned domain, a
local address) over a pooled origin connection. ``HotLane`` handles exactly that case
without a coroutine, a task or a future per request: the raw client socket has a reader
callback, the head is parsed as soon as it is complete, the request goes to the pooled
origin, and the origin's reader callback forwards the answer. One timer per connection,
re-armed lazily from a deadline, replaces a timeout context per read (DESIGN §8).

Origin connections come from the pool with their reader already registered
(``OriginPool.checkout_armed``) and go back the same way, so a request costs no epoll
change on the origin side.

Anything else is handed back to ``HttpClient``'s coroutine (the control plane), which has
the whole toolbox: first visits with racing and replay, dialing, request bodies, upgrades,
spliced large bodies, chunked or close-delimited answers. ``HotLane.next()`` returns:

- ``None``: the client closed, or stayed idle past ``limits.idle_timeout``;
- a ``Request`` the lane did not serve (its head already consumed from the buffer, its
  length in ``head_len``);
- an ``AnswerHead`` — request sent, answer head parsed but not forwarded — whose body the
  coroutine relays, and whose ``record`` it finishes;
- or raises ``HttpError`` for a head the client must get an error answer to.

The lane keeps the books of what it serves (``accounting``): a request it answered, or
that failed in its hands, is counted here; one it hands back is counted by the coroutine.

Handing over is decided before a byte is sent or after the answer head is parsed, never
in between, so each request is carried by exactly one of the two paths.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from proxyd.dataplane._accounting import NO_ROUTE, RequestRecord, finish
from proxyd.errors import DialError
from proxyd.outbound import Connection, PoolKey, is_desync, isolation_scope
from proxyd.protocol import BodyKind, HttpError, Request, Response, http1, http1_encode

if TYPE_CHECKING:
    from proxyd.runtime import Runtime


class HttpClient(Protocol):
    """What the lane uses of the inbound connection it serves (``inbound.HttpClient``)."""

    rt: Runtime
    sock: socket.socket
    client_ip: str
    buf: bytearray
    loop: asyncio.AbstractEventLoop
    idle: bool


RECV_SIZE = 256 * 1024
# Answers with more body than this still to come after the head go to the coroutine,
# which splices them: copying through Python only pays off for small bodies.
MAX_COPIED_BODY = 64 * 1024
# What the client gets when the connection's timer expires: nothing (the connection just
# closes), 408 for a head that did not complete, 504 for an answer that did not start.
_QUIET, _HEAD, _ANSWER = 0, 1, 2


@dataclass(frozen=True, slots=True)
class AnswerHead:
    req: Request
    resp: Response
    rbuf: bytearray
    origin: Connection
    key: PoolKey
    record: RequestRecord


Handoff = Request | AnswerHead | None


class _Stale(Exception):
    """A pooled origin connection turned out closed before it answered."""


class HotLane:
    __slots__ = (
        "_allowed",
        "_client",
        "_deadline",
        "_done",
        "_expiry",
        "_fd",
        "_keep_alive",
        "_key",
        "_loop",
        "_origin",
        "_out",
        "_rbuf",
        "_reading",
        "_record",
        "_remaining",
        "_req",
        "_resp",
        "_sent_at",
        "_timer",
        "_writing",
        "head_len",
    )

    def __init__(self, client: HttpClient, *, allowed: bool) -> None:
        self._client = client
        self._allowed = allowed
        self._loop = client.loop
        self._fd = client.sock.fileno()
        self._done: asyncio.Future[Handoff] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._expiry = _QUIET
        self._reading = False
        self._writing = False
        self._out = bytearray()
        self._req: Request | None = None
        self._resp: Response | None = None
        self._origin: Connection | None = None
        self._key: PoolKey | None = None
        self._rbuf = bytearray()
        self._remaining = 0
        self._keep_alive = False
        self._record: RequestRecord | None = None
        self._sent_at = 0.0
        self.head_len = 0

    # -- the coroutine's side ------------------------------------------------------------

    async def next(self) -> Handoff:
        """Serve requests until one needs the coroutine, the client leaves, or time runs out."""
        self._done = self._loop.create_future()
        self._client.idle = True
        self._wait_for_head(self._loop.time())
        if not self._done.done() and self._req is None:
            self._start_reading()
        try:
            return await self._done
        finally:
            self._stop_reading()
            self._stop_writing()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._drop_origin()  # only set when cancelled mid-request

    def _finish(self, result: Handoff) -> None:
        done = self._done
        if done is not None and not done.done():
            done.set_result(result)

    def _fail(self, exc: BaseException) -> None:
        done = self._done
        if done is not None and not done.done():
            done.set_exception(exc)

    # -- timer: one per connection, moved forward by assigning a deadline ------------------

    def _arm(self, deadline: float, expiry: int) -> None:
        """Expire at ``deadline``; ``expiry`` says what the client gets then."""
        self._deadline = deadline
        self._expiry = expiry
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        self._timer = None
        rt = self._client.rt
        if self._expiry == _HEAD:
            rt.stats.limit_hit("head_timeout")
            rt.stats.request_done("http", NO_ROUTE, "client_error")
            self._fail(HttpError(408, "request head not received in time"))
        elif self._expiry == _ANSWER:
            timeout = rt.config.limits.idle_timeout
            self._close_record("dial_error")
            self._fail(HttpError(504, f"origin sent no answer within {timeout:g}s"))
        else:
            if self._client.idle:
                rt.stats.limit_hit("idle_timeout")
            self._finish(None)

    # -- client side -----------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_client_readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_client_readable(self) -> None:
        try:
            data = self._client.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._finish(None)
            return
        self._client.buf += data
        if self._req is None:
            self._wait_for_head(self._loop.time())
        else:
            # A pipelined request while one is in flight: it waits in the buffer, and the
            # socket is not read again until the current answer is out.
            self._stop_reading()

    def _wait_for_head(self, now: float) -> None:
        """Parse and serve whatever complete requests the buffer holds; arm the timer."""
        client = self._client
        limits = client.rt.config.limits
        while True:
            buf = client.buf
            if not buf:
                client.idle = True
                self._arm(now + limits.idle_timeout, _QUIET)
                return
            try:
                parsed = http1.parse_request(
                    buf,
                    max_head=limits.max_head_bytes,
                    max_headers=limits.max_headers,
                    max_line=limits.max_line,
                )
            except HttpError as err:
                if err.limit is not None:
                    client.rt.stats.limit_hit(err.limit)
                client.rt.stats.request_done("http", NO_ROUTE, "client_error")
                self._fail(err)
                return
            if parsed is None:
                # Once a head has started it must complete in head_timeout (slowloris).
                if client.idle:
                    client.idle = False
                    self._arm(now + limits.head_timeout, _HEAD)
                return
            client.idle = False
            req, head_len = parsed
            del buf[:head_len]
            self.head_len = head_len
            if not self._send_request(req, now):
                self._finish(req)
                return
            if self._req is not None:
                return  # in flight; the origin's callback carries on

    def _send_request(self, req: Request, now: float) -> bool:
        """Send ``req`` to a pooled connection of its decided route; False: not ours."""
        client = self._client
        rt = client.rt
        if (
            not self._allowed
            or req.is_connect
            or req.origin_form
            or req.upgrade
            or not req.idempotent
            or req.body.kind is not BodyKind.NONE
            or rt.draining
            or (rt.access.auth_required and not self._authenticated(req, now))
        ):
            return False
        try:
            plan = rt.router.plan(req.host, req.port, plain_http=True)
        except DialError:
            return False
        if plan.learn or is_desync(plan.first.name):
            # A first visit is the control plane's to watch; a desync head must be split.
            return False
        # A mirror first (never a pool key) misses the pool below and goes to the coroutine.
        scope = isolation_scope(plan.first, plan.isolation, client.client_ip)
        key: PoolKey = (plan.first.name, scope, req.host, req.port)
        origin = rt.pool.checkout_armed(key, self._on_origin_readable)
        if origin is None:
            return False
        head = http1_encode.encode_request_for_origin(
            req, via="1.1 proxyd" if rt.config.via else None
        )
        try:
            sent = origin.sock.send(head)
        except OSError:
            sent = 0
        if sent != len(head):
            # An idle pooled socket takes a head whole; if not, it is broken, and the
            # origin never got a complete request, so the coroutine may send it again.
            self._close_origin(origin)
            return False
        self._record = RequestRecord(
            "http", client.client_ip, req.host, req.port, route=key[0], up=self.head_len
        )
        self._sent_at = now
        self._req, self._origin, self._key = req, origin, key
        self._resp = None
        self._rbuf = bytearray()
        self._arm(now + rt.config.limits.idle_timeout, _ANSWER)
        return True

    def _authenticated(self, req: Request, now: float) -> bool:
        """Credentials that pass; anything else, throttling included, is the coroutine's."""
        access = self._client.rt.access
        if access.throttle.blocked(self._client.client_ip, now=now):
            return False
        return access.check_basic(req.proxy_authorization)

    # -- origin side -----------------------------------------------------------------------

    def _on_origin_readable(self, origin: Connection) -> None:
        assert origin is self._origin and self._req is not None
        try:
            data = origin.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        try:
            if self._resp is None:
                self._on_answer_head_bytes(data)
            else:
                self._on_body_bytes(data)
        except _Stale:
            req = self._req
            self._record = None  # the coroutine sends it again, and counts it
            self._drop_origin()
            self._finish(req)
        except HttpError as err:
            self._close_record("dial_error")
            self._drop_origin()
            self._fail(err)
        except OSError:
            self._drop_origin()
            self._finish(None)

    def _on_answer_head_bytes(self, data: bytes) -> None:
        req, rbuf = self._req, self._rbuf
        assert req is not None
        if not data:
            if not rbuf:
                raise _Stale
            raise HttpError(502, "origin closed the connection without an answer")
        rbuf += data
        while True:
            parsed = http1.parse_response(rbuf, request_method=req.method)
            if parsed is None:
                return
            resp, head_len = parsed
            if not resp.interim:
                break
            if req.version == "HTTP/1.1":
                self._write(bytes(rbuf[:head_len]))
            del rbuf[:head_len]
        del rbuf[:head_len]
        record = self._record
        assert record is not None
        record.first_byte_seconds = self._loop.time() - self._sent_at
        self._client.rt.stats.first_byte(record.route, record.first_byte_seconds)
        framing = resp.body
        if framing.kind is BodyKind.NONE:
            remaining = 0
        elif framing.kind is BodyKind.LENGTH:
            remaining = framing.length - len(rbuf)
        else:
            remaining = -1
        if remaining < 0 or remaining > MAX_COPIED_BODY or resp.status == 101:
            self._hand_over_answer(resp)
            return
        rt = self._client.rt
        self._resp = resp
        self._remaining = remaining
        self._keep_alive = req.keep_alive and not rt.draining
        head = http1_encode.encode_response_for_client(resp, keep_alive=self._keep_alive)
        record.down = len(head) + len(rbuf) + remaining
        self._write(head + rbuf if rbuf else head)
        rbuf.clear()
        self._expiry = _QUIET  # the answer has started: a stall now can only close
        if not remaining:
            self._answer_done()

    def _hand_over_answer(self, resp: Response) -> None:
        origin, req, key = self._origin, self._req, self._key
        assert origin is not None and req is not None and key is not None
        self._loop.remove_reader(origin.sock.fileno())
        record = self._record
        assert record is not None
        self._origin = None
        self._req = None
        self._record = None
        self._finish(AnswerHead(req, resp, self._rbuf, origin, key, record))

    def _on_body_bytes(self, data: bytes) -> None:
        if not data:
            raise ConnectionResetError("origin closed in the middle of a body")
        if len(data) > self._remaining:
            # Bytes past the declared length: the connection cannot be trusted again.
            assert self._resp is not None
            self._resp = dataclasses.replace(self._resp, keep_alive=False)
            data = data[: self._remaining]
        self._remaining -= len(data)
        self._write(data)
        if not self._remaining:
            self._answer_done()

    def _answer_done(self) -> None:
        origin, key, resp = self._origin, self._key, self._resp
        assert origin is not None and key is not None and resp is not None
        self._origin = None
        self._req = None
        self._close_record("ok")
        if resp.keep_alive:
            self._client.rt.pool.checkin(key, origin)
        else:
            self._close_origin(origin)
        if self._writing:
            return  # _on_client_writable carries on once the answer is out
        self._after_answer()

    def _after_answer(self) -> None:
        if not self._keep_alive or self._client.rt.draining:
            self._finish(None)
            return
        self._wait_for_head(self._loop.time())
        if self._req is None and not (self._done is None or self._done.done()):
            self._start_reading()

    def _close_record(self, outcome: str) -> None:
        record = self._record
        if record is not None:
            self._record = None
            record.outcome = outcome
            finish(self._client.rt, record)

    def _drop_origin(self) -> None:
        """Give up the request in flight (counted "aborted" unless already closed)."""
        self._close_record("aborted")
        origin = self._origin
        if origin is not None:
            self._close_origin(origin)
            self._origin = None
        self._req = None

    def _close_origin(self, origin: Connection) -> None:
        self._loop.remove_reader(origin.sock.fileno())
        origin.sock.close()

    # -- writing to the client -------------------------------------------------------------

    def _write(self, data: bytes | bytearray) -> None:
        if self._writing:
            self._out += data
            return
        try:
            sent = self._client.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            # Bounded: an answer is only copied here when its body is small.
            self._out += memoryview(data)[sent:]
            self._writing = True
            self._loop.add_writer(self._fd, self._on_client_writable)

    def _on_client_writable(self) -> None:
        try:
            sent = self._client.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop_origin()
            self._finish(None)
            return
        del self._out[:sent]
        if self._out:
            return
        self._stop_writing()
        if self._req is None:
            self._after_answer()

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
            self._out.clear()
