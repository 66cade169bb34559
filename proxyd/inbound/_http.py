"""HTTP/1.1 proxy clients: CONNECT tunnels and absolute-form requests on kept-alive connections.

Each request on a connection is parsed, checked and routed on its own (different hosts may
take different routes). Bodies stream in both directions and are never buffered whole:
Content-Length bodies are spliced, chunked ones pass through a ``BodyScanner`` verbatim.
Requests of the common shape to pooled origins are served by the data plane
(``http_protocol``), which hands this control plane the others, one at a time, with the
connection's raw socket; the tries of one request on its plan's routes (the first visit's
retry and race) are ``http_attempt``'s.

API::

    HttpClient(rt, sock, client_ip, bytes_after_head).serve(handoff, *, allowed) -> bool
                        serve one handed-over request or answer; True: give the connection
                        back to the data plane (sock and buf say what it is left with)
        .send(data), .copy_exact(src, dst, count, timeout), .sock, .buf, .loop, .record
                        what the attempts use of the connection
    log_unexpected(exc, client_ip)
    CONNECT_ESTABLISHED     the answer to a CONNECT whose tunnel is up
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from proxyd.dataplane import BodyPipe, Handoff, RequestRecord, SourceEnded, finish, outcome_for
from proxyd.errors import ClientGone, DialError
from proxyd.firstvisit import Outcome, best_error, relay, run_tunnel
from proxyd.inbound._http_attempt import RECV_SIZE, Exchange, close_answer
from proxyd.inbound._http_resume import ResumeRefused, ask_rest, resumable, resume_routes
from proxyd.learning import DIRECT
from proxyd.outbound import Connection, PoolKey, run_race, take_answer
from proxyd.protocol import BodyKind, BodyScanner, HttpError, Request, Response, http1, http1_encode
from proxyd.routing import RoutePlan
from proxyd.runtime import Runtime

log = logging.getLogger("proxyd.http")

# Below this many body bytes still to come, recv/send beats setting up a splice.
SPLICE_THRESHOLD = 64 * 1024
CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
PROXY_AUTH_REQUIRED = ("Proxy-Authenticate", 'Basic realm="proxyd"')


class _ConnectReply:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def success(self, conn: Connection) -> None:
        await asyncio.get_running_loop().sock_sendall(self._sock, CONNECT_ESTABLISHED)

    async def failure(self, err: DialError) -> None:
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().sock_sendall(
                self._sock,
                http1_encode.error_response(err.http_status, f"proxyd: {err.describe()}"),
            )


class HttpClient:
    """One client connection speaking HTTP proxy; ``serve`` runs until it should close."""

    def __init__(
        self, rt: Runtime, sock: socket.socket, client_ip: str, first_bytes: bytes
    ) -> None:
        self.rt = rt
        self.sock = sock
        self.client_ip = client_ip
        self.buf = bytearray(first_bytes)
        self.loop = asyncio.get_running_loop()
        self.idle = True  # between requests: may be closed at once on drain
        self._pipe: BodyPipe | None = None
        self.record = RequestRecord("http", client_ip)  # the plain request being served

    @property
    def pipe(self) -> BodyPipe:
        if self._pipe is None:
            self._pipe = BodyPipe()
        return self._pipe

    def close_resources(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    async def serve(self, handoff: Handoff, *, allowed: bool) -> bool:
        """Serve what the data plane handed over; True: give the connection back to it."""
        self.idle = False
        try:
            return await self._serve(handoff, allowed)
        except HttpError as err:
            await self._send_quietly(
                http1_encode.error_response(err.status, f"proxyd: {err.reason}")
            )
        except (ClientGone, OSError, TimeoutError):
            # Mid-response failures cannot be reported any more: closing is the answer.
            pass
        finally:
            self.close_resources()
        return False

    async def _serve(self, handoff: Handoff, allowed: bool) -> bool:
        limits = self.rt.config.limits
        req, head_len = handoff.req, handoff.head_len
        assert req is not None
        if handoff.answer is not None:
            # The data plane sent the request and read the answer's head: its body is ours.
            origin, key, record = handoff.origin, handoff.key, handoff.record
            assert origin is not None and key is not None and record is not None
            self.record = record
            try:
                keep_alive = await self._relay_response(
                    req, handoff.answer, bytearray(handoff.rbuf), origin, key, limits.idle_timeout
                )  # on a decided route: a cut body may be resumed on the plan's failover
                record.outcome = "ok"
            finally:
                finish(self.rt, record)
            return keep_alive and not self.rt.draining
        if not allowed:
            self.rt.stats.connection_refused("not_allowed")
            await self.send(http1_encode.error_response(403, "proxyd: client not allowed"))
            return False
        if not await self._authenticated(req):
            return False
        if req.origin_form:
            await self.send(self._local_answer(req))
            return False
        protocol = "connect" if req.is_connect else "http"
        # A CONNECT head is proxyd's business, not relayed; a request head is forwarded.
        relayed_head = 0 if req.is_connect else head_len
        record = RequestRecord(protocol, self.client_ip, req.host, req.port, up=relayed_head)
        try:
            if req.is_connect:
                # A tunnel may stay open for hours, thousands of them: keep only what
                # it needs.
                host, port, early = req.host, req.port, bytes(self.buf)
                del handoff, req
                self.buf = bytearray()
                await run_tunnel(
                    self.rt,
                    self.sock,
                    host,
                    port,
                    reply=_ConnectReply(self.sock),
                    client_ip=self.client_ip,
                    record=record,
                    client_bytes=early,
                )
                self.sock = None  # type: ignore[assignment]  # the tunnel closed it
                return False
            self.record = record
            if not await self._forward(req, self.rt.config.limits.idle_timeout):
                return False
        except HttpError as err:
            if record.outcome == "aborted":  # proxyd answers instead of the origin
                record.outcome = "client_error" if err.status < 500 else "dial_error"
            raise
        finally:
            finish(self.rt, record)
        return not self.rt.draining

    async def _authenticated(self, req: Request) -> bool:
        access = self.rt.access
        if not access.auth_required:
            return True
        throttle, now = access.throttle, self.loop.time()
        if throttle.blocked(self.client_ip, now=now):
            self.rt.stats.limit_hit("auth_failures")
            await self.send(
                http1_encode.error_response(429, "proxyd: too many failed logins, try again later")
            )
            return False
        if access.check_basic(req.proxy_authorization):
            return True
        self.rt.stats.connection_refused("auth")
        if req.proxy_authorization is not None:
            # A missing header is a browser's first try, not a guess.
            throttle.failed(self.client_ip, now=now)
        await self.send(
            http1_encode.error_response(
                407, "proxyd: proxy authentication required", extra_headers=(PROXY_AUTH_REQUIRED,)
            )
        )
        return False

    def _local_answer(self, req: Request) -> bytes:
        if req.method in ("GET", "HEAD") and req.path == "/":
            return http1_encode.simple_response(
                200,
                b"proxyd is running. Configure it as your HTTP or SOCKS5 proxy.\n",
                content_type="text/plain; charset=utf-8",
            )
        return http1_encode.error_response(
            400, "proxyd: this is a proxy; send absolute-form requests (http://host/path)"
        )

    async def send(self, data: bytes) -> None:
        try:
            await self.loop.sock_sendall(self.sock, data)
        except OSError:
            raise ClientGone from None

    async def _send_quietly(self, data: bytes) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                await self.loop.sock_sendall(self.sock, data)

    async def _forward(self, req: Request, timeout: float) -> bool:
        """Send one request on its route(s) and stream the answer back.

        Unknown hosts get the first visit's transparent retry: a replayable request (an
        idempotent method without a body) that fails direct, or gets a block page, is
        sent again through the next route. Returns True when the client connection may
        carry another request.
        """
        rt, record = self.rt, self.record
        try:
            plan = rt.router.plan(req.host, req.port, plain_http=True)
        except DialError as err:
            record.outcome = outcome_for(err)
            await self.send(
                http1_encode.error_response(err.http_status, f"proxyd: {err.describe()}")
            )
            return False
        record.route = plan.first.name
        exchange = Exchange(self, req, plan, timeout)
        learned = rt.learned
        racing = plan.learn and exchange.replayable and learned is not None
        result = await run_race(
            plan.routes,
            exchange.attempt,
            race_after=learned.race_after if racing and learned is not None else None,
            may_race=lambda: exchange.replayable,
            discard=close_answer,
        )
        Outcome(rt, req.host, req.port, plan).record(result)  # type: ignore[arg-type]
        chosen = take_answer(result, close_answer)
        if chosen is None:
            failure = best_error(rt, result, req.host, req.port)  # type: ignore[arg-type]
            record.outcome = outcome_for(failure)
            await self.send(
                http1_encode.error_response(failure.http_status, f"proxyd: {failure.describe()}")
            )
            return False
        if not isinstance(chosen, tuple):  # a MirrorAnswer
            if result.winner is not None:
                record.route = result.winner.name
            keep_alive = await chosen.deliver(
                self.sock, version=req.version, keep_alive=req.keep_alive, timeout=timeout
            )
            record.outcome = "ok"  # its body bytes are counted by the answer itself
            return keep_alive
        origin, key, resp, rbuf = chosen
        record.route = origin.route
        record.connect_seconds, record.first_byte_seconds = exchange.timings.get(
            origin.route, (None, None)
        )
        keep_alive = await self._relay_response(req, resp, rbuf, origin, key, timeout, plan)
        record.outcome = "ok"
        return keep_alive

    async def copy_exact(
        self, src: socket.socket, dst: socket.socket, count: int, timeout: float
    ) -> None:
        """Move ``count`` bytes; src ending or failing first is ``SourceEnded``."""
        if count >= SPLICE_THRESHOLD:
            await self.pipe.copy_exact(src, dst, count, timeout=timeout)
            return
        moved = 0
        async with asyncio.timeout(timeout):
            while moved < count:
                try:
                    data = await self.loop.sock_recv(src, min(count - moved, RECV_SIZE))
                except OSError as exc:
                    raise SourceEnded(moved, str(exc)) from exc
                if not data:
                    raise SourceEnded(moved, "peer closed before the body ended")
                await self.loop.sock_sendall(dst, data)
                moved += len(data)

    async def _relay_response(
        self,
        req: Request,
        resp: Response,
        rbuf: bytearray,
        origin: Connection,
        key: PoolKey,
        timeout: float,
        plan: RoutePlan | None = None,
    ) -> bool:
        """``plan``: the routes the request had, for resuming a cut body (None: the data
        plane's decided route, whose plan is asked again)."""
        record = self.record
        if resp.status == 101 and req.upgrade:
            switched = http1_encode.encode_response_for_client(resp, keep_alive=True) + rbuf
            await self.send(switched)
            record.down += len(switched)
            if self.buf:
                await self.loop.sock_sendall(origin.sock, self.buf)
                record.up += len(self.buf)
            await relay(self.rt, self.sock, origin, record)
            self.sock = None  # type: ignore[assignment]
            return False
        framing = resp.body
        client_keep_alive = (
            req.keep_alive and framing.kind is not BodyKind.UNTIL_CLOSE and not self.rt.draining
        )
        head = http1_encode.encode_response_for_client(resp, keep_alive=client_keep_alive)
        origin_reusable = resp.keep_alive
        try:
            if framing.kind is BodyKind.NONE:
                await self.send(head)
                record.down += len(head)
                origin_reusable = origin_reusable and not rbuf
            elif framing.kind is BodyKind.LENGTH:
                have = min(len(rbuf), framing.length)
                await self.send(head + rbuf[:have])
                origin_reusable = origin_reusable and len(rbuf) <= framing.length
                rest = framing.length - have
                if rest:
                    try:
                        await self.copy_exact(origin.sock, self.sock, rest, timeout)
                    except SourceEnded as cut:
                        origin.sock.close()
                        delivered = have + cut.moved
                        record.down += len(head) + delivered
                        await self._resume(req, resp, origin.route, delivered, plan, timeout)
                        record.down += framing.length - delivered
                        return client_keep_alive
                record.down += len(head) + framing.length
            elif framing.kind is BodyKind.CHUNKED:
                origin_reusable = await self._relay_chunked(head, rbuf, origin, framing, timeout)
            else:
                await self.send(head + rbuf)
                rest = await self.pipe.copy_until_eof(origin.sock, self.sock, timeout=timeout)
                record.down += len(head) + len(rbuf) + rest
                origin_reusable = False
        except BaseException:
            origin.sock.close()
            raise
        if origin_reusable:
            await self.rt.pool.checkin(key, origin)
        else:
            origin.sock.close()
        return client_keep_alive

    async def _resume(
        self,
        req: Request,
        resp: Response,
        cut_route: str,
        delivered: int,
        plan: RoutePlan | None,
        timeout: float,
    ) -> None:
        """The body was cut after ``delivered`` bytes: splice the rest from the next
        route (``_http_resume``), or raise ``ResumeRefused`` and the connection closes."""
        length = resp.body.length
        validator = resumable(req, resp)
        if validator is None:
            raise ResumeRefused(f"{req.host}: cut at byte {delivered} of {length}, not resumable")
        if plan is None:
            try:
                plan = self.rt.router.plan(req.host, req.port, plain_http=True)
            except DialError as err:
                raise ResumeRefused(f"{req.host}: cut at byte {delivered}: {err}") from None
        routes = resume_routes(plan, cut_route)
        try:
            route = await ask_rest(
                self, req, validator, delivered, length, routes, plan.isolation, timeout
            )
        except ResumeRefused as refused:
            log.info(
                "%s: an answer cut at byte %d of %d closes: %s",
                req.host,
                delivered,
                length,
                refused,
            )
            raise
        log.info(
            "%s: an answer cut on %s at byte %d of %d was resumed through %s",
            req.host,
            cut_route,
            delivered,
            length,
            route,
        )
        learned = self.rt.learned
        if plan.learn and cut_route == DIRECT and learned is not None:
            # The control rule on one request: direct was cut, the route carried past it.
            learned.direct_cut(req.host, delivered, "answer was cut")
            learned.control_carried(req.host, route, length)

    async def _relay_chunked(
        self,
        head: bytes,
        rbuf: bytearray,
        origin: Connection,
        framing: http1.Framing,
        timeout: float,
    ) -> bool:
        scanner = BodyScanner(framing)
        data = bytes(rbuf)
        pending = head
        async with asyncio.timeout(timeout) as deadline:
            while True:
                used = scanner.feed(data)
                await self.send(pending + data[:used] if pending else data[:used])
                self.record.down += len(pending) + used
                pending = b""
                if scanner.done:
                    return used == len(data)
                data = await self.loop.sock_recv(origin.sock, RECV_SIZE)
                if not data:
                    raise ConnectionResetError("origin closed in the middle of a chunked body")
                deadline.reschedule(self.loop.time() + timeout)


def log_unexpected(exc: BaseException, client_ip: str) -> None:
    log.error("internal error serving %s: %s: %s", client_ip, type(exc).__name__, exc)
