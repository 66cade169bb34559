"""The first visit of a tunnel (CONNECT or SOCKS): tentative until the server's first byte.

The client is told "connected" as soon as any route connected (so a site that is down on
every route still gets a proper 502/504), then its first bytes (the TLS ClientHello) are
kept and sent; a reset, an EOF, an injected or block-page answer, or silence makes the
next route take over with the same bytes, so the browser never sees the failure. Once a
route answered, the tunnel is committed to the splice data plane and nothing here
touches its bytes again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any, Protocol

from proxyd.dataplane import outcome_for
from proxyd.errors import AnswerTimeout, ClientGone, DialError, MirrorError, UpstreamError
from proxyd.learning import Reason, Strength, classify_dial_error
from proxyd.outbound import (
    DOH_ROUTE,
    AttemptFailed,
    Connection,
    Dialer,
    Leg,
    RaceResult,
    dial_in_leg,
    is_desync,
    run_race,
    send_first,
    spawn,
    take_answer,
)
from proxyd.protocol import HANDSHAKE, RECORD_HEADER, desync
from proxyd.routing import RoutePlan

if TYPE_CHECKING:
    from proxyd.runtime import Runtime

log = logging.getLogger("proxyd.firstvisit")

# Failures that still carry the server's answer (delivered if every route says the same).
ANSWERS = frozenset(
    {
        Reason.TLS_INJECTED,
        Reason.TLS_ALERT_AFTER_HELLO,
        Reason.TLS_UNEXPECTED_RESPONSE,
        Reason.BLOCKPAGE_REDIRECT,
        Reason.BLOCKPAGE_FINGERPRINT,
        Reason.HTTP_451,
    }
)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _close_answer(value: tuple[Connection, bytes]) -> None:
    value[0].sock.close()


class TunnelReply(Protocol):
    """How the inbound protocol tells its client that the tunnel is up or failed."""

    async def success(self, conn: Connection) -> None: ...

    async def failure(self, err: DialError) -> None: ...


def best_error(rt: Runtime, result: RaceResult[object], host: str, port: int) -> DialError:
    """The failure to report when every route failed: what the destination said, or,
    when only the upstreams themselves failed, all of them by name."""
    errors = [f.error for f in result.failures if f.error is not None]
    for err in errors:
        if isinstance(err, MirrorError):
            return err  # the mirror was the way around the block: say why it failed
    for err in errors:
        if not isinstance(err, UpstreamError):
            return err
    if errors:
        return rt.upstreams.unavailable_error(host, port)
    if result.failures and all(f.reason is Reason.FIRST_BYTE_TIMEOUT for f in result.failures):
        return AnswerTimeout(host, port, "connected, but no route's server answered in time")
    return DialError(host, port, "no route answered")


def note_dial(rt: Runtime, route: Dialer, conn: Connection) -> None:
    """A route connected: count it, feed the direct RTT estimate or the upstream's health."""
    rt.stats.dial_done(route.name, "ok", conn.connect_seconds)
    if route.name == "direct":
        if rt.learned is not None:
            rt.learned.observe_direct_rtt(conn.connect_seconds)
    else:
        rt.upstreams.report_success(route.name, conn.connect_seconds)


def note_dial_failure(rt: Runtime, route: str, err: DialError) -> None:
    rt.stats.dial_done(route, err.reason, 0.0)


class Outcome:
    """Turn a race's result into evidence, following the control rule (DESIGN §4)."""

    def __init__(self, rt: Runtime, host: str, port: int, plan: RoutePlan) -> None:
        self.rt = rt
        self.host = host
        self.port = port
        self.plan = plan

    def record(self, result: RaceResult[object]) -> None:
        rt = self.rt
        for failure in result.failures:
            if failure.error is not None:  # only a failed dial carries its DialError
                note_dial_failure(rt, failure.route, failure.error)
            if isinstance(failure.error, UpstreamError):
                rt.upstreams.report_failure(failure.route, failure.error)
        learned = rt.learned
        if learned is None or not self.plan.learn:
            return
        direct_failure = next((f for f in result.failures if f.route == "direct"), None)
        if direct_failure is not None:
            learned.direct_failed(self.host, direct_failure.reason)
        winner = result.winner
        if winner is None:
            return  # every route failed: the site is down, not blocked
        if winner.name == "direct":
            learned.direct_worked(self.host)
            return
        if direct_failure is not None:
            # The honest answer differed from the system's and worked: DNS was the block.
            reason = Reason.DNS_POISON if winner.name == DOH_ROUTE else direct_failure.reason
            learned.confirm(self.host, reason, winner.name)
        for leg in result.lingering:
            spawn(self._judge_lingering_direct(leg, winner.name))

    async def _judge_lingering_direct(self, leg: Leg, working_route: str) -> None:
        """A direct dial that lost the race: finishing late is fine, never finishing is
        a blackhole. A timeout is weak evidence, so it is confirmed by one more dial."""
        assert leg.dial_task is not None and self.rt.learned is not None
        learned = self.rt.learned
        try:
            conn = await leg.dial_task
        except DialError as err:
            note_dial_failure(self.rt, leg.route.name, err)
            reason = classify_dial_error(err)
        except asyncio.CancelledError:
            return
        else:
            conn.sock.close()
            return
        if reason.strength is Strength.NONE:
            return
        learned.direct_failed(self.host, reason)
        if (
            reason.strength is Strength.WEAK
            and learned.confirm(self.host, reason, working_route) is None
        ):
            try:
                conn = await self.rt.router.direct.dial(
                    self.host, self.port, timeout=self.rt.config.limits.connect_timeout
                )
            except DialError as err:
                learned.direct_failed(self.host, classify_dial_error(err))
            else:
                conn.sock.close()
                return
        learned.confirm(self.host, reason, working_route)


class TunnelVisit:
    def __init__(
        self,
        rt: Runtime,
        client: socket.socket,
        host: str,
        port: int,
        plan: RoutePlan,
        reply: TunnelReply,
        client_ip: str,
        client_bytes: bytes,
    ) -> None:
        self.rt = rt
        self.loop = asyncio.get_running_loop()
        self.client = client
        self.host = host
        self.port = port
        self.plan = plan
        self.reply = reply
        self.client_ip = client_ip
        self.first_bytes = client_bytes
        self._replied = False
        self._client_bytes: asyncio.Future[bytes] = self.loop.create_future()
        if client_bytes:
            self._client_bytes.set_result(client_bytes)
        self._reader: asyncio.Task[None] | None = None
        # For the request's record: the winner's first-byte time, or why every route failed.
        self.first_byte_seconds: float | None = None
        self.failure_outcome = "dial_error"

    async def run(self) -> tuple[Connection, bytes] | None:
        """Race the plan's routes; the winner's connection and its first server bytes."""
        rt = self.rt
        learned = rt.learned
        race_after = learned.race_after if learned is not None and self.plan.learn else None
        try:
            result = await run_race(
                self.plan.routes,
                self._attempt,
                race_after=race_after,
                may_race=self._may_race,
                discard=_close_answer,
            )
        finally:
            if self._reader is not None:
                self._reader.cancel()
        if self._client_bytes.done():
            self._client_bytes.exception()  # retrieved: a client that left is no error
        Outcome(rt, self.host, self.port, self.plan).record(result)  # type: ignore[arg-type]
        chosen = take_answer(result, _close_answer)
        if chosen is None:
            err = best_error(rt, result, self.host, self.port)  # type: ignore[arg-type]
            self.failure_outcome = outcome_for(err)
            if not self._replied:
                await self.reply.failure(err)
        return chosen

    def _may_race(self) -> bool:
        # Replaying a TLS ClientHello is harmless; replaying other protocols' first bytes
        # to a second server while the first may still answer is not.
        if not self._client_bytes.done() or self._client_bytes.exception() is not None:
            return True
        data = self._client_bytes.result()
        return not data or data[0] == HANDSHAKE

    async def _attempt(self, leg: Leg) -> tuple[Connection, bytes]:
        rt = self.rt
        conn = await dial_in_leg(
            leg,
            leg.route.dial(
                self.host,
                self.port,
                timeout=rt.config.limits.connect_timeout,
                client_ip=self.client_ip,
                isolation=self.plan.isolation,
            ),
        )
        try:
            note_dial(rt, leg.route, conn)
            if not self._replied:
                self._replied = True
                await self.reply.success(conn)
                if not self._client_bytes.done():
                    self._reader = asyncio.ensure_future(self._read_client_first())
            server_bytes = await self._exchange(conn, leg.route.name)
        except AttemptFailed as failed:
            if failed.reason in ANSWERS:
                failed.answer = (conn, failed.answer)
            else:
                conn.sock.close()
            raise
        except BaseException:
            conn.sock.close()
            raise
        return conn, server_bytes

    async def _exchange(self, conn: Connection, route: str) -> bytes:
        limits_timeout = (
            self.rt.learned.config.first_byte_timeout
            if self.rt.learned is not None
            else self.rt.config.limits.idle_timeout
        )
        # A reader of our own, removed before this returns: the socket may be closed as soon
        # as the attempt ends, and its fd reused at once by a transport of the data plane.
        server_ready: asyncio.Future[None] = self.loop.create_future()
        fd = conn.sock.fileno()
        self.loop.add_reader(fd, _resolve, server_ready)
        watching = True
        try:
            async with asyncio.timeout(limits_timeout):
                waiting: set[asyncio.Future[Any]] = {server_ready, self._client_bytes}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                self.loop.remove_reader(fd)
                watching = False
                first = b""
                if self._client_bytes.done():
                    first = self._client_bytes.result()  # ClientGone propagates
                    if first and not server_ready.done():
                        await send_first(self.loop, conn, first)
                sent_at = self.loop.time()
                answer = await self.loop.sock_recv(conn.sock, 65536)
        except TimeoutError:
            raise AttemptFailed(Reason.FIRST_BYTE_TIMEOUT) from None
        except ConnectionResetError:
            raise AttemptFailed(Reason.CONNECTION_RESET) from None
        except OSError:
            raise AttemptFailed(Reason.CONNECTION_RESET) from None
        finally:
            if watching:
                self.loop.remove_reader(fd)
            server_ready.cancel()
        if not answer:
            raise AttemptFailed(Reason.EOF_BEFORE_RESPONSE)
        if first and is_desync(route) and desync.rejected(answer):
            if self.rt.learned is not None:
                self.rt.learned.mark_desync_broken(self.host, route)
            raise AttemptFailed(Reason.DESYNC_REJECTED)
        if first and self.rt.learned is not None:
            reason = self.rt.learned.classify(first, answer, host=self.host, conn=conn)
            if reason is not None:
                raise AttemptFailed(reason, answer=answer)
        self.first_byte_seconds = self.loop.time() - sent_at
        self.rt.stats.first_byte(route, self.first_byte_seconds)
        return answer

    async def _read_client_first(self) -> None:
        """Keep the client's first bytes (a whole TLS record if it is one) for replay."""
        limit = self.rt.config.limits.replay_buffer
        data = b""
        try:
            data = await self.loop.sock_recv(self.client, limit)
            if not data:
                raise ClientGone
            if data[0] == HANDSHAKE and len(data) >= RECORD_HEADER:
                record = RECORD_HEADER + int.from_bytes(data[3:5], "big")
                while len(data) < min(record, limit):
                    more = await self.loop.sock_recv(self.client, min(record, limit) - len(data))
                    if not more:
                        raise ClientGone
                    data += more
        except (ClientGone, OSError) as exc:
            if not self._client_bytes.done():
                self._client_bytes.set_exception(ClientGone(str(exc)))
            return
        self.first_bytes = data
        self._client_bytes.set_result(data)
