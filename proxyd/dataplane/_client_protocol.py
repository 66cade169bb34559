# Over 400 lines: both sides of a kept-alive exchange, one state machine read as a whole.
"""The data plane of plain HTTP: a client connection served from the loop's C callbacks.

A connection accepted by ``loop.create_server`` gets a ``ClientProtocol``. As long as its
requests are of the common shape (``fasthead``) and go to a destination whose route is
decided (a rule, a learned domain, a local address) over a pooled ``OriginLink``, they are
served here: no task, no coroutine and no future per request, one timer per connection
re-armed lazily from a deadline (DESIGN §8). The answer is forwarded as it arrives, its
head rewritten by one regex substitution, its body (Content-Length up to
``MAX_COPIED_BODY`` still to come, or chunked, which a long poll or server-sent events may
keep open) written to the client transport as each piece comes, with the client's flow
control pausing the origin.

Anything else is handed to the coroutine control plane (``ProxyServer.take_over``) with
the bytes already read: the first bytes of a SOCKS client, a client outside ``allow``,
failed credentials, a first visit, a request with a body, an upgrade, CONNECT, a pool
miss (the control plane dials), an answer with a large body (spliced), one that ends at
close, or any head ``fasthead`` does not take (``http1``'s strict parser then decides:
an error status and a closed connection, or the control plane). A handover happens
before a byte of the request is sent, or once the answer head is parsed and before any
of it is forwarded, so each request is carried by exactly one of the two planes. The
control plane gives the connection back when it is done (``ProxyServer`` wraps it again).

The data plane keeps the books of what it serves: a request it answered, or that failed
in its hands, is counted here; one it hands over is counted by the control plane.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, cast

from proxyd.dataplane._accounting import NO_ROUTE, RequestRecord, finish
from proxyd.errors import DialError
from proxyd.outbound import OriginLink, PoolKey, detach, is_desync, isolation_scope
from proxyd.protocol import (
    BodyScanner,
    Framing,
    HttpError,
    Request,
    Response,
    fasthead,
    http1,
    http1_encode,
)

if TYPE_CHECKING:
    import socket

    from proxyd.outbound import Connection
    from proxyd.runtime import Runtime

# Answers with more body than this still to come after the head go to the control plane,
# which splices them: copying through Python only pays off for small bodies.
MAX_COPIED_BODY = 64 * 1024
MAX_ANSWER_HEAD = 65536
# What the client gets when the connection's timer expires: nothing (the connection just
# closes), 408 for a head that did not complete, 504 for an answer that did not start;
# nothing either for a new connection that never sent a byte (counted as a head timeout).
_QUIET, _HEAD, _ANSWER, _SILENT = 0, 1, 2, 3
# Where the request in flight is: none, waiting for the answer head, forwarding its body.
_IDLE, _ANSWER_HEAD, _BODY = 0, 1, 2
_SOCKS_FIRST_BYTES = (4, 5)


class Handoff:
    """What the control plane gets with a connection's raw socket."""

    __slots__ = (
        "answer",
        "buf",
        "first",
        "head_len",
        "key",
        "origin",
        "rbuf",
        "record",
        "refused",
        "req",
    )

    def __init__(self) -> None:
        self.buf = b""  # client bytes past the head (the first bytes when ``first``)
        self.first = False  # the connection's first bytes, not sniffed as HTTP by the plane
        self.refused = False  # over a connection limit: nothing read yet
        self.req: Request | None = None
        self.head_len = 0
        self.answer: Response | None = None
        self.rbuf = b""
        self.origin: Connection | None = None
        self.key: PoolKey | None = None
        self.record: RequestRecord | None = None


class Host(Protocol):
    """What a client protocol needs of the server that accepted it."""

    rt: Runtime

    def admit(self, client: ClientProtocol) -> bool: ...

    def take_over(self, client: ClientProtocol, sock: socket.socket, handoff: Handoff) -> None: ...

    def released(self, client: ClientProtocol) -> None: ...


class ClientProtocol(asyncio.Protocol):
    __slots__ = (
        "allowed",
        "auth_ok",
        "buf",
        "deadline",
        "expiry",
        "gone",
        "host",
        "http_opened",
        "idle",
        "ip",
        "keep_alive",
        "key",
        "link",
        "loop",
        "method",
        "pending",
        "rbuf",
        "reading",
        "record",
        "remaining",
        "req_head",
        "reusable",
        "rt",
        "scanner",
        "sent_at",
        "state",
        "timer",
        "transport",
        "v11",
    )

    def __init__(
        self,
        host: Host,
        *,
        ip: str = "",
        buf: bytes = b"",
        allowed: bool | None = None,
    ) -> None:
        self.host = host
        self.rt = host.rt
        self.loop = asyncio.get_running_loop()
        self.ip = ip
        self.buf = buf
        self.allowed = allowed  # None until the first bytes
        self.http_opened = allowed is not None
        self.transport: asyncio.Transport | None = None
        self.gone = False
        self.idle = True
        self.reading = True
        self.pending: Handoff | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.expiry = _QUIET
        self.state = _IDLE
        self.link: OriginLink | None = None
        self.key: PoolKey | None = None
        self.method = ""
        self.v11 = True
        self.req_head = b""
        self.keep_alive = False
        self.rbuf = b""
        self.remaining = 0
        self.scanner: BodyScanner | None = None
        self.reusable = True
        self.record: RequestRecord | None = None
        self.sent_at = 0.0
        self.auth_ok: tuple[object, str] | None = None

    # -- transport events ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its interface.
        self.transport = cast(asyncio.Transport, transport)
        if not self.ip:
            peer = transport.get_extra_info("peername")
            self.ip = str(peer[0]) if peer else ""
        if self.allowed is not None:  # given back by the control plane
            self._serve_buffer(self.loop.time())
        elif not self.host.admit(self):
            handoff = Handoff()
            handoff.refused = True
            self._hand_over(handoff)
        else:
            self._arm(self.loop.time() + self.rt.config.limits.head_timeout, _SILENT)

    def data_received(self, data: bytes) -> None:
        if self.gone:
            return
        if self.allowed is None:
            if data[0] in _SOCKS_FIRST_BYTES:
                self.buf = data
                handoff = Handoff()
                handoff.first = True
                self._hand_over(handoff)
                return
            self.allowed = self.rt.access.client_allowed(self.ip)
            self.http_opened = True
            self.rt.stats.connection_opened("http")
        if self.state != _IDLE or self.pending is not None:
            # A pipelined request while one is in flight: it waits in the buffer, and the
            # socket is not read again until the current answer is out.
            self.buf += data
            self._pause_reading()
            return
        self.buf = self.buf + data if self.buf else data
        self._serve_buffer(self.loop.time())

    def eof_received(self) -> bool:
        if self.state == _IDLE and not self.gone:
            self._close()
        return False  # half-closed: the answer in flight still goes out, then we close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.gone:
            return
        self.gone = True
        self.transport = None
        self._cancel_timer()
        self._drop_link("aborted")
        self.host.released(self)

    def pause_writing(self) -> None:
        link = self.link
        if link is not None and link.transport is not None:
            link.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.pending is not None:
            handoff, self.pending = self.pending, None
            self._hand_over(handoff)
            return
        link = self.link
        if link is not None and link.transport is not None:
            link.transport.resume_reading()

    # -- the connection's one timer --------------------------------------------------------

    def _arm(self, deadline: float, expiry: int) -> None:
        self.deadline = deadline
        self.expiry = expiry
        timer = self.timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        if self.gone:
            return
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        self.timer = None
        stats = self.rt.stats
        if self.expiry == _HEAD:
            stats.limit_hit("head_timeout")
            stats.request_done("http", NO_ROUTE, "client_error")
            self._error(HttpError(408, "request head not received in time"))
        elif self.expiry == _ANSWER:
            timeout = self.rt.config.limits.idle_timeout
            self._drop_link("dial_error")
            self._error(HttpError(504, f"origin sent no answer within {timeout:g}s"))
        elif self.expiry == _SILENT:
            stats.limit_hit("head_timeout")
            self._close()
        else:
            if self.idle:
                stats.limit_hit("idle_timeout")
            self._drop_link("aborted")
            self._close()

    # -- requests --------------------------------------------------------------------------

    def _serve_buffer(self, now: float) -> None:
        """Serve whatever complete requests the buffer holds; arm the timer."""
        limits = self.rt.config.limits
        while self.state == _IDLE and self.pending is None and not self.gone:
            buf = self.buf
            if not buf:
                self.idle = True
                self._arm(now + limits.idle_timeout, _QUIET)
                self._resume_reading()
                return
            end = buf.find(b"\r\n\r\n", 0, limits.max_head_bytes)
            simple = None
            if end >= 0:
                end += 4
                if (
                    buf.find(b"\r\n") <= limits.max_line
                    and buf.count(b"\r\n", 0, end) - 2 <= limits.max_headers
                ):
                    simple = fasthead.read_request(buf, end, self.rt.config.via)
            if simple is None:
                self._serve_unusual(now)
                return
            self.idle = False
            self.buf = buf[end:]
            if not self._send(simple, buf[:end], now):
                self._hand_over_request(buf[:end])
                return

    def _serve_unusual(self, now: float) -> None:
        """A head ``fasthead`` did not take, or an incomplete one: ``http1`` decides."""
        limits = self.rt.config.limits
        try:
            parsed = http1.parse_request(
                self.buf,
                max_head=limits.max_head_bytes,
                max_headers=limits.max_headers,
                max_line=limits.max_line,
            )
        except HttpError as err:
            if err.limit is not None:
                self.rt.stats.limit_hit(err.limit)
            self.rt.stats.request_done("http", NO_ROUTE, "client_error")
            self._error(err)
            return
        if parsed is None:
            # Once a head has started it must complete in head_timeout (slowloris).
            if self.idle:
                self.idle = False
                self._arm(now + limits.head_timeout, _HEAD)
            return
        self.idle = False
        req, head_len = parsed
        self.buf = self.buf[head_len:]
        handoff = Handoff()
        handoff.req, handoff.head_len = req, head_len
        self._hand_over(handoff)

    def _send(self, simple: fasthead.SimpleRequest, raw_head: bytes, now: float) -> bool:
        """Send to a pooled link of the request's decided route; False: not ours."""
        method, host, port, keep_alive, authorization, head = simple
        rt = self.rt
        if not self.allowed or rt.draining:
            return False
        if rt.access.auth_required and not self._authenticated(authorization, now):
            return False
        try:
            plan = rt.router.plan(host, port, plain_http=True)
        except DialError:
            return False
        route = plan.first
        if plan.learn or is_desync(route.name):
            # A first visit is the control plane's to watch; a desync head must be split.
            return False
        # A mirror first (never a pool key) misses the pool below and goes to the coroutine.
        key: PoolKey = (route.name, isolation_scope(route, plan.isolation, self.ip), host, port)
        link = rt.pool.take(key)
        if link is None:
            return False
        transport = link.transport
        assert transport is not None
        link.owner = self
        transport.write(head)
        self.record = RequestRecord("http", self.ip, host, port, route=key[0], up=len(raw_head))
        self.link, self.key = link, key
        self.method, self.v11 = method, raw_head[raw_head.index(b"\r\n") - 1] == 49  # "1"
        self.req_head = raw_head
        self.keep_alive = keep_alive
        self.state = _ANSWER_HEAD
        self.rbuf = b""
        self.reusable = True
        self.sent_at = now
        self._arm(now + rt.config.limits.idle_timeout, _ANSWER)
        return True

    def _authenticated(self, authorization: str | None, now: float) -> bool:
        """Credentials that pass; anything else, throttling included, is the coroutine's."""
        access = self.rt.access
        if access.throttle.blocked(self.ip, now=now):
            return False
        if authorization is not None and self.auth_ok == (access, authorization):
            return True
        if not access.check_basic(authorization):
            return False
        self.auth_ok = (access, authorization or "")
        return True

    # -- answers ---------------------------------------------------------------------------

    def origin_data(self, data: bytes) -> None:
        if self.gone:
            return
        if self.state == _BODY:
            self._body(data)
        elif self.state == _ANSWER_HEAD:
            try:
                self._answer_head(data)
            except HttpError as err:
                self._drop_link("dial_error")
                self._error(err)

    def origin_lost(self) -> None:
        self.link = None
        if self.gone:
            return
        if self.state == _ANSWER_HEAD:
            if not self.rbuf:
                # A pooled connection the origin closed while idle: it never saw the
                # request, so the control plane may send it again (and counts it).
                self.record = None
                self.state = _IDLE
                self._hand_over_request(self.req_head)
                return
            self._close_record("dial_error")
            self._error(HttpError(502, "origin closed the connection without an answer"))
        elif self.state == _BODY:
            self._close_record("aborted")
            self._close()

    def _answer_head(self, data: bytes) -> None:
        rbuf = self.rbuf + data if self.rbuf else data
        if not data:
            if not rbuf:
                link = self.link
                self.link = None
                if link is not None:
                    link.close()
                self.origin_lost()
                return
            raise HttpError(502, "origin closed the connection without an answer")
        while True:
            end = rbuf.find(b"\r\n\r\n", 0, MAX_ANSWER_HEAD)
            if end < 0:
                # Bare CR/LF or an oversized head: http1's checks on the partial head.
                http1.parse_response(rbuf, request_method=self.method)
                self.rbuf = rbuf
                return
            end += 4
            answer = fasthead.read_answer(rbuf, end, self.method)
            if answer is None:
                self._unusual_answer(rbuf)
                return
            if answer[0] >= 200:
                break
            if self.v11:  # never an interim answer to an HTTP/1.0 client (RFC 9110 15.2)
                self._write(rbuf[:end])
            rbuf = rbuf[end:]
        record = self.record
        assert record is not None
        now = self.loop.time()
        record.first_byte_seconds = now - self.sent_at
        self.rt.stats.first_byte(record.route, record.first_byte_seconds)
        _, kind, length, reusable, _, _ = answer
        body = rbuf[end:]
        if kind == fasthead.LENGTH:
            remaining = length - len(body)
            if remaining > MAX_COPIED_BODY:
                self._unusual_answer(rbuf)
                return
        self.rbuf = b""
        keep_alive = self.keep_alive and not self.rt.draining
        self.keep_alive = keep_alive
        head = fasthead.answer_head_for_client(rbuf, answer, keep_alive)
        self.reusable = reusable
        self.state = _BODY
        self.expiry = _QUIET  # the answer has started: a stall now can only close
        self.deadline = now + self.rt.config.limits.idle_timeout
        if kind == fasthead.NONE:
            self.reusable = reusable and not body
            record.down = len(head)
            self._write(head)
            self._answer_done()
        elif kind == fasthead.LENGTH:
            if remaining < 0:
                # Bytes past the declared length: the connection cannot be trusted again.
                body = body[:length]
                self.reusable = False
                remaining = 0
            record.down = len(head) + length
            self.remaining = remaining
            self.scanner = None
            self._write(head + body if body else head)
            if not remaining:
                self._answer_done()
        else:
            scanner = self.scanner = BodyScanner(Framing.CHUNKED)
            used = scanner.feed(body)
            record.down = len(head) + used
            self._write(head + body[:used])
            if scanner.done:
                self.reusable = reusable and used == len(body)
                self._answer_done()

    def _body(self, data: bytes) -> None:
        if not data:
            self._close_record("aborted")
            self._drop_link("aborted")
            self._close()
            return
        self.deadline = self.loop.time() + self.rt.config.limits.idle_timeout
        scanner = self.scanner
        if scanner is None:
            if len(data) > self.remaining:
                data = data[: self.remaining]
                self.reusable = False
            self.remaining -= len(data)
            self._write(data)
            if not self.remaining:
                self._answer_done()
            return
        try:
            used = scanner.feed(data)
        except HttpError:
            # The head is out: a broken chunked body can only end the connection.
            self._drop_link("dial_error")
            self._close()
            return
        assert self.record is not None
        self.record.down += used
        self._write(data[:used] if used < len(data) else data)
        if scanner.done:
            self.reusable = self.reusable and used == len(data)
            self._answer_done()

    def _unusual_answer(self, rbuf: bytes) -> None:
        """An answer head ``fasthead`` did not take: ``http1`` reads it, the control plane
        forwards it (a large body to splice, one that ends at close, 101...)."""
        parsed = http1.parse_response(rbuf, request_method=self.method)
        assert parsed is not None
        resp, head_len = parsed
        if resp.interim:
            if self.v11:
                self._write(rbuf[:head_len])
            self.rbuf = b""
            if len(rbuf) > head_len:
                self._answer_head(rbuf[head_len:])
            return
        link, key = self.link, self.key
        assert link is not None and key is not None and link.transport is not None
        transport, link.transport = link.transport, None
        link.owner = None
        transport.pause_reading()
        origin = link.conn
        origin.sock = detach(transport)
        self.link = None
        parsed_req = http1.parse_request(self.req_head)
        assert parsed_req is not None
        handoff = Handoff()
        handoff.req, handoff.head_len = parsed_req
        handoff.answer, handoff.rbuf = resp, rbuf[head_len:]
        handoff.origin, handoff.key = origin, key
        handoff.record, self.record = self.record, None
        self.state = _IDLE
        self._hand_over(handoff)

    def _answer_done(self) -> None:
        link, key = self.link, self.key
        self.link = None
        self.state = _IDLE
        self._close_record("ok")
        if link is not None:
            if self.reusable and key is not None:
                self.rt.pool.put(key, link)
            else:
                link.close()
        if not self.keep_alive:
            self._close()
            return
        self._serve_buffer(self.loop.time())

    # -- helpers -----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(data)

    def _pause_reading(self) -> None:
        if self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self.reading and self.transport is not None:
            self.reading = True
            self.transport.resume_reading()

    def _close_record(self, outcome: str) -> None:
        record = self.record
        if record is not None:
            self.record = None
            record.outcome = outcome
            finish(self.rt, record)

    def _drop_link(self, outcome: str) -> None:
        """Give up the request in flight (counted ``outcome`` unless already closed)."""
        self._close_record(outcome)
        link = self.link
        if link is not None:
            self.link = None
            link.close()
        self.state = _IDLE

    def _error(self, err: HttpError) -> None:
        """Answer a status of proxyd's own and close: nothing more is read."""
        if self.transport is not None and not self.gone:
            self._pause_reading()
            self.transport.write(http1_encode.error_response(err.status, f"proxyd: {err.reason}"))
        self._close()

    def _close(self) -> None:
        transport = self.transport
        if transport is not None and not self.gone:
            transport.close()  # what is written still goes out first

    def close_if_idle(self) -> None:
        """On drain: a connection between requests closes now, the others after their answer."""
        if self.idle and self.state == _IDLE and not self.gone:
            self._close()

    def _hand_over_request(self, raw_head: bytes) -> None:
        parsed = http1.parse_request(raw_head)
        assert parsed is not None
        handoff = Handoff()
        handoff.req, handoff.head_len = parsed
        self._hand_over(handoff)

    def _hand_over(self, handoff: Handoff) -> None:
        transport = self.transport
        if transport is None or self.gone:
            return
        self._pause_reading()
        if transport.get_write_buffer_size():
            # Answers still on their way out would be lost with the transport: hand over
            # once they are (resume_writing with a zero low-water mark says when).
            self.pending = handoff
            transport.set_write_buffer_limits(high=0, low=0)
            return
        self.gone = True
        self._cancel_timer()
        self.transport = None
        handoff.buf, self.buf = self.buf, b""
        sock = detach(transport)
        self.host.take_over(self, sock, handoff)
