"""One plain-HTTP request tried on the routes of its plan: the first visit's retry and race.

``inbound_http`` runs ``run_race`` over the plan's routes with ``Exchange.attempt``. Each try
takes a pooled connection to the origin or dials one, sends the head (and streams the body,
which can happen once only), and returns the final answer's head with the bytes read past it;
evidence of a block (a reset, no answer, a block page) raises ``AttemptFailed`` so the race
moves on. A mirror route answers through its own HTTP client instead.

API::

    Exchange(client, req, plan, timeout)
        .attempt(leg) -> Answer | MirrorAnswer   the race's attempt; AttemptFailed on evidence
        .replayable     an idempotent request without a body: may be sent again, or raced
        .timings        route -> (connect seconds, None when pooled; first-byte seconds)
    Answer = (origin connection, pool key, Response, bytes read past its head)
    close_answer(answer)    the race's discard for answers nobody takes
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Protocol

from proxyd.errors import ClientGone, DialError
from proxyd.firstvisit import note_dial
from proxyd.learning import Reason, classify_dial_error
from proxyd.mirror import PlainHttpRoute
from proxyd.outbound import (
    AttemptFailed,
    Connection,
    Dialer,
    Leg,
    PoolKey,
    dial_in_leg,
    is_desync,
    isolation_scope,
    send_first,
)
from proxyd.protocol import (
    BodyKind,
    BodyScanner,
    HttpError,
    Request,
    Response,
    desync,
    http1,
    http1_encode,
)
from proxyd.routing import RoutePlan

if TYPE_CHECKING:
    import socket

    from proxyd.dataplane import RequestRecord

    # Not at run time: it loads aiohttp, needed only once a [[mirror]] is configured.
    from proxyd.mirror import MirrorAnswer
    from proxyd.runtime import Runtime


class HttpClient(Protocol):
    """What an exchange uses of the client connection it serves (``_http.HttpClient``),
    named by shape so that the two modules do not import each other."""

    rt: Runtime
    sock: socket.socket
    client_ip: str
    buf: bytearray
    loop: asyncio.AbstractEventLoop
    record: RequestRecord

    async def send(self, data: bytes) -> None: ...

    async def copy_exact(
        self, src: socket.socket, dst: socket.socket, count: int, timeout: float
    ) -> None: ...


RECV_SIZE = 256 * 1024
# How much of a response body the block-page fingerprints look at.
CLASSIFY_BODY = 4096


class _StaleOrigin(Exception):
    """The origin closed before sending any byte of the answer."""


Answer = tuple[Connection, PoolKey, Response, bytearray]


def close_answer(answer: Answer | MirrorAnswer) -> None:
    if isinstance(answer, tuple):
        answer[0].sock.close()
    else:
        answer.close()


class _ClientBody:
    """A Content-Length request body streamed from the client as a mirror reads it."""

    def __init__(self, client: HttpClient, req: Request) -> None:
        self.client = client
        self.req = req
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        client = self.client
        self.started = True
        rest = self.req.body.length
        if self.req.expect_continue and not client.buf:
            await client.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        have = min(len(client.buf), rest)
        if have:
            chunk = bytes(client.buf[:have])
            del client.buf[:have]
            rest -= have
            yield chunk
        while rest:
            data = await client.loop.sock_recv(client.sock, min(rest, RECV_SIZE))
            if not data:
                raise ClientGone
            rest -= len(data)
            yield data


class Exchange:
    """One request tried on its plan's routes; each try: pooled or new connection, request, head."""

    def __init__(self, client: HttpClient, req: Request, plan: RoutePlan, timeout: float) -> None:
        self.client = client
        self.req = req
        self.plan = plan
        self.timeout = timeout
        rt = client.rt
        self.head = http1_encode.encode_request_for_origin(
            req, via="1.1 proxyd" if rt.config.via else None
        )
        # Replaying needs the whole request in hand; a body would have to be buffered.
        self.replayable = req.idempotent and req.body.kind is BodyKind.NONE
        self.sent = False
        # Interim answers go to the client, unless the answer has started (a resume).
        self.forward_interim = True
        # route -> (connect seconds, None for a pooled connection; first-byte seconds)
        self.timings: dict[str, tuple[float | None, float]] = {}

    async def attempt(self, leg: Leg) -> Answer | MirrorAnswer:
        client, req, rt = self.client, self.req, self.client.rt
        if self.sent and not self.replayable:
            raise HttpError(502, "the origin failed and this request cannot be replayed safely")
        if isinstance(leg.route, PlainHttpRoute):
            body = _ClientBody(client, req) if req.body.kind is BodyKind.LENGTH else None
            try:
                return await leg.route.answer(rt, req, body)
            finally:
                self.sent = self.sent or (body is not None and body.started)
        scope = isolation_scope(leg.route, self.plan.isolation, client.client_ip)
        key: PoolKey = (leg.route.name, scope, req.host, req.port)
        origin = rt.pool.checkout(key)
        reused = origin is not None
        if origin is None:
            origin = await dial_in_leg(leg, self._dial(leg.route))
            note_dial(rt, leg.route, origin)
        else:
            leg.mark_connected()
        while True:
            self.sent = True
            sent_at = client.loop.time()
            try:
                resp, raw_head, rbuf = await self._exchange(origin)
                break
            except _StaleOrigin:
                origin.sock.close()
                if not reused:
                    raise AttemptFailed(Reason.EOF_BEFORE_RESPONSE) from None
                # A pooled connection the origin closed while idle: it never saw this
                # request, so one fresh connection is safe.
                reused = False
                try:
                    origin = await self._dial(leg.route)
                except DialError as err:
                    raise AttemptFailed(classify_dial_error(err), err) from None
                note_dial(rt, leg.route, origin)
            except HttpError as err:
                origin.sock.close()
                if err.status == 504:
                    raise AttemptFailed(Reason.FIRST_BYTE_TIMEOUT) from None
                raise
            except OSError:
                origin.sock.close()
                raise AttemptFailed(Reason.CONNECTION_RESET) from None
        # Up to the answer's head: the body may be a long stream.
        first_byte = client.loop.time() - sent_at
        rt.stats.first_byte(leg.route.name, first_byte)
        self.timings[leg.route.name] = (None if reused else origin.connect_seconds, first_byte)
        answer = (origin, key, resp, rbuf)
        learned = rt.learned
        if is_desync(leg.route.name) and desync.rejected(raw_head):
            origin.sock.close()  # the breakage guard
            if learned is not None:
                learned.mark_desync_broken(req.host, leg.route.name)
            raise AttemptFailed(Reason.DESYNC_REJECTED)
        if self.plan.learn and learned is not None:
            answer_bytes = raw_head + bytes(rbuf[:CLASSIFY_BODY])
            reason = learned.classify(self.head, answer_bytes, host=req.host, conn=origin)
            if reason is not None:
                raise AttemptFailed(reason, answer=answer)
        return answer

    async def _exchange(self, origin: Connection) -> tuple[Response, bytes, bytearray]:
        """Send head and body, return the final response head and bytes read past it."""
        upload: asyncio.Task[None] | None = None
        try:
            try:
                await send_first(self.client.loop, origin, self.head)
            except OSError:
                raise _StaleOrigin from None
            if self.req.body.kind is not BodyKind.NONE:
                # Concurrent so that ``Expect: 100-continue`` and early answers work.
                upload = asyncio.ensure_future(self._upload(origin))
            return await self._read_response(origin, upload)
        except BaseException:
            if upload is not None:
                upload.cancel()
            raise

    async def _read_response(
        self, origin: Connection, upload: asyncio.Task[None] | None
    ) -> tuple[Response, bytes, bytearray]:
        try:
            return await self._read_response_head(origin, upload)
        except TimeoutError:
            raise HttpError(504, f"origin sent no answer within {self.timeout:g}s") from None

    async def _read_response_head(
        self, origin: Connection, upload: asyncio.Task[None] | None
    ) -> tuple[Response, bytes, bytearray]:
        client, req = self.client, self.req
        rbuf = bytearray()
        got_any = False
        async with asyncio.timeout(self.timeout):
            while True:
                parsed = http1.parse_response(rbuf, request_method=req.method)
                if parsed is not None:
                    resp, head_len = parsed
                    if resp.interim:
                        if req.version == "HTTP/1.1" and self.forward_interim:
                            await client.send(bytes(rbuf[:head_len]))
                        del rbuf[:head_len]
                        continue
                    raw_head = bytes(rbuf[:head_len])
                    del rbuf[:head_len]
                    if upload is not None and not upload.done():
                        # The origin answered before the body was sent: finish the upload
                        # only if the answer is success; otherwise stop and close after it.
                        if 200 <= resp.status < 300:
                            await upload
                        else:
                            upload.cancel()
                    elif upload is not None:
                        upload.result()
                    return resp, raw_head, rbuf
                try:
                    data = await client.loop.sock_recv(origin.sock, RECV_SIZE)
                except ConnectionError:
                    data = b""
                if not data:
                    if not got_any and req.body.kind is BodyKind.NONE:
                        raise _StaleOrigin
                    raise HttpError(502, "origin closed the connection without an answer")
                got_any = True
                rbuf += data

    async def _upload(self, origin: Connection) -> None:
        client, req, timeout = self.client, self.req, self.timeout
        if req.body.kind is BodyKind.LENGTH:
            have = min(len(client.buf), req.body.length)
            if have:
                await client.loop.sock_sendall(origin.sock, client.buf[:have])
                del client.buf[:have]
            rest = req.body.length - have
            if rest:
                await client.copy_exact(client.sock, origin.sock, rest, timeout)
            client.record.up += req.body.length
            return
        scanner = BodyScanner(req.body)
        data = bytes(client.buf)
        client.buf.clear()
        async with asyncio.timeout(timeout) as deadline:
            while True:
                used = scanner.feed(data)
                if used:
                    await client.loop.sock_sendall(origin.sock, data[:used])
                    client.record.up += used
                if scanner.done:
                    client.buf += data[used:]
                    return
                data = await client.loop.sock_recv(client.sock, RECV_SIZE)
                if not data:
                    raise ClientGone
                deadline.reschedule(client.loop.time() + timeout)

    def _dial(self, route: Dialer) -> Awaitable[Connection]:
        return route.dial(
            self.req.host,
            self.req.port,
            timeout=self.client.rt.config.limits.connect_timeout,
            client_ip=self.client.client_ip,
            isolation=self.plan.isolation,
        )
