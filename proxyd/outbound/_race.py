"""Run attempts over a plan's routes: in order, failing over, racing after silence.

An attempt is an async function of its route. The first attempt starts at once; the
next starts when the running ones failed, or when ``race_after`` passed with no progress
(a leg reports progress, e.g. "connected", to restart that clock). The first attempt to
succeed wins and the others are cancelled. A direct leg that is still dialing when it
loses is left to finish in the background: its outcome is evidence (a blackholed
address only shows itself as a connect timeout), handed to ``on_lingering_dial``.

A route with ``needs_direct_evidence`` (the desync ladder) waits, in a plan that has a
direct route, for direct's verdict: it starts only once direct failed on its first
packet (``RESHAPING_HELPS``), and is dropped when direct failed any other way. Routes
behind it (the upstreams) do not wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from proxyd.errors import DialError
from proxyd.learning import Reason, Strength
from proxyd.outbound._dialers import Connection, Dialer

T = TypeVar("T")

DIRECT = "direct"
# Direct failures that reshaping the first bytes may get past: a filter reacted to them.
# A poisoned name, a timeout or a refusal say nothing of the kind.
RESHAPING_HELPS = frozenset(reason for reason in Reason if reason.strength is Strength.STRONG) - {
    Reason.DNS_POISON
}


class AttemptFailed(Exception):
    """One route failed for this request; ``reason`` says how (an evidence label).

    ``answer`` is set when the route did answer, but with something that looks like
    censorship (a block page, a cross-domain redirect, a TLS alert): if every route
    answers like that, it is the site's real answer and is delivered after all.
    """

    def __init__(
        self, reason: Reason, error: DialError | None = None, answer: object | None = None
    ) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.error = error
        self.answer = answer


@dataclass(frozen=True, slots=True)
class Failure:
    route: str
    reason: Reason
    error: DialError | None
    answer: object | None = None


@dataclass(eq=False)
class Leg:
    route: Dialer
    progress: asyncio.Event
    dial_task: asyncio.Task[Connection] | None = None
    connected: bool = False

    def mark_connected(self) -> None:
        self.connected = True
        self.progress.set()


@dataclass
class RaceResult(Generic[T]):
    winner: Dialer | None = None
    value: T | None = None
    failures: list[Failure] = field(default_factory=list)
    lingering: list[Leg] = field(default_factory=list)


async def run_race(
    routes: tuple[Dialer, ...],
    attempt: Callable[[Leg], Awaitable[T]],
    *,
    race_after: float | None,
    may_race: Callable[[], bool] = lambda: True,
    discard: Callable[[T], None] = lambda _value: None,
) -> RaceResult[T]:
    """Run ``attempt`` per route as described above.

    Exceptions other than ``AttemptFailed`` (the client went away) cancel everything and
    propagate. ``discard`` disposes of a result that completed after another won.
    """
    result: RaceResult[T] = RaceResult()
    progress = asyncio.Event()
    legs: dict[asyncio.Task[T], Leg] = {}
    waiting = list(routes)
    gated = any(route.name == DIRECT for route in routes)

    def next_route() -> Dialer | None:
        verdict = _direct_verdict(result) if gated else True
        if verdict is False:
            waiting[:] = [r for r in waiting if not getattr(r, "needs_direct_evidence", False)]
        for route in waiting:
            if verdict is None and getattr(route, "needs_direct_evidence", False):
                continue  # until direct's verdict
            return route
        return None

    def start_next() -> None:
        route = next_route()
        assert route is not None
        waiting.remove(route)
        leg = Leg(route, progress)
        legs[asyncio.ensure_future(attempt(leg))] = leg

    start_next()
    won_or_exhausted = False
    try:
        while legs:
            progress.clear()
            can_start = next_route() is not None and race_after is not None and may_race()
            waiter = asyncio.ensure_future(progress.wait())
            try:
                done, _ = await asyncio.wait(
                    {*legs, waiter},
                    timeout=race_after if can_start else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                waiter.cancel()
            finished = [task for task in done if task is not waiter]
            if not done and can_start:
                start_next()  # silence for race_after: race the next route
                continue
            unblocked = False
            for task in finished:
                leg = legs.pop(task)
                exc = task.exception()
                if exc is None:
                    result.winner, result.value = leg.route, task.result()
                    won_or_exhausted = True
                    return result
                if not isinstance(exc, AttemptFailed):
                    raise exc
                result.failures.append(Failure(leg.route.name, exc.reason, exc.error, exc.answer))
                unblocked = unblocked or (gated and leg.route.name == DIRECT)
            if finished and (not legs or unblocked) and next_route() is not None:
                start_next()
        won_or_exhausted = True
        return result
    finally:
        await _settle(legs, result, discard, keep_direct_dials=won_or_exhausted)


def _direct_verdict(result: RaceResult[T]) -> bool | None:
    """Did direct fail on its first packet? None while it has not failed."""
    for failure in result.failures:
        if failure.route == DIRECT:
            return failure.reason in RESHAPING_HELPS
    return None


async def _settle(
    legs: dict[asyncio.Task[T], Leg],
    result: RaceResult[T],
    discard: Callable[[T], None],
    *,
    keep_direct_dials: bool,
) -> None:
    for task, leg in legs.items():
        dial = leg.dial_task
        if dial is not None and not leg.connected:
            if keep_direct_dials and leg.route.name == "direct":
                result.lingering.append(leg)
            else:
                dial.cancel()
                dial.add_done_callback(_close_dialed)
        task.cancel()
    for task in legs:
        with contextlib.suppress(BaseException):
            discard(await task)


_background: set[asyncio.Task[object]] = set()


def spawn(work: Awaitable[object]) -> None:
    """Run ``work`` in the background, keeping a reference until it ends."""
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _close_dialed(dial: asyncio.Task[Connection]) -> None:
    if not dial.cancelled() and dial.exception() is None:
        dial.result().sock.close()


async def dial_in_leg(leg: Leg, dialing: Awaitable[Connection]) -> Connection:
    """Dial as a separate task so a losing direct leg can finish dialing as evidence."""
    from proxyd.learning import classify_dial_error

    leg.dial_task = asyncio.ensure_future(dialing)
    try:
        conn = await asyncio.shield(leg.dial_task)
    except DialError as err:
        raise AttemptFailed(classify_dial_error(err), err) from None
    leg.mark_connected()
    return conn


def take_answer(result: RaceResult[T], discard: Callable[[T], None]) -> T | None:
    """What to deliver: the winner's value, else the first real answer a route gave."""
    answers: list[T] = [f.answer for f in result.failures if f.answer is not None]  # type: ignore[misc]
    chosen = result.value if result.winner is not None else (answers[0] if answers else None)
    for answer in answers:
        if answer is not chosen:
            discard(answer)
    return chosen
