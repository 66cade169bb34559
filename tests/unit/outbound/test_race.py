"""The attempt orchestrator: failover, racing after silence, lingering direct dials.

Attempts here are plain coroutines that succeed or fail on cue, so each rule of the race
is a short transcript; the real dialers are exercised by the integration suites.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from proxyd.errors import ConnectTimeout
from proxyd.learning._detect import Reason
from proxyd.outbound._dialers import Connection
from proxyd.outbound._race import AttemptFailed, Leg, dial_in_leg, run_race, take_answer


@dataclass
class Route:
    name: str

    async def dial(self, host: str, port: int, **_kw: object) -> Connection:
        raise NotImplementedError


DIRECT, TOR, BACKUP = Route("direct"), Route("tor"), Route("backup")


async def test_first_success_wins_without_starting_fallbacks() -> None:
    started: list[str] = []

    async def attempt(leg: Leg) -> str:
        started.append(leg.route.name)
        return leg.route.name

    result = await run_race((DIRECT, TOR), attempt, race_after=1.0)  # type: ignore[arg-type]
    assert result.winner is DIRECT and result.value == "direct"
    assert started == ["direct"]


async def test_failure_moves_to_the_next_route_and_is_recorded() -> None:
    async def attempt(leg: Leg) -> str:
        if leg.route is DIRECT:
            raise AttemptFailed(Reason.CONNECTION_RESET)
        return "via " + leg.route.name

    result = await run_race((DIRECT, TOR), attempt, race_after=None)  # type: ignore[arg-type]
    assert result.value == "via tor"
    assert [(f.route, f.reason) for f in result.failures] == [("direct", Reason.CONNECTION_RESET)]


async def test_silence_starts_the_next_route_in_parallel_and_the_first_answer_wins() -> None:
    direct_cancelled = asyncio.Event()

    async def attempt(leg: Leg) -> str:
        if leg.route is DIRECT:
            try:
                await asyncio.Event().wait()  # never answers
            finally:
                direct_cancelled.set()
        return leg.route.name

    result = await run_race((DIRECT, TOR), attempt, race_after=0.01)  # type: ignore[arg-type]
    assert result.value == "tor"
    assert result.failures == []  # losing a race is not a failure
    assert direct_cancelled.is_set()


async def test_progress_restarts_the_race_clock() -> None:
    async def attempt(leg: Leg) -> str:
        if leg.route is DIRECT:
            for _ in range(5):
                await asyncio.sleep(0.02)
                leg.mark_connected()  # progress every 20 ms, race_after is 50 ms
            return "direct"
        return "tor"

    result = await run_race((DIRECT, TOR), attempt, race_after=0.05)  # type: ignore[arg-type]
    assert result.value == "direct"


async def test_no_racing_when_the_request_cannot_be_replayed() -> None:
    async def attempt(leg: Leg) -> str:
        if leg.route is DIRECT:
            await asyncio.sleep(0.05)
        return leg.route.name

    result = await run_race(
        (DIRECT, TOR),
        attempt,  # type: ignore[arg-type]
        race_after=0.001,
        may_race=lambda: False,
    )
    assert result.value == "direct"


async def test_all_routes_failing_gives_no_winner_and_every_failure() -> None:
    async def attempt(leg: Leg) -> str:
        raise AttemptFailed(Reason.CONNECT_TIMEOUT)

    result = await run_race((DIRECT, TOR, BACKUP), attempt, race_after=None)  # type: ignore[arg-type]
    assert result.winner is None
    assert [f.route for f in result.failures] == ["direct", "tor", "backup"]


async def test_a_client_that_leaves_cancels_every_attempt() -> None:
    class Gone(Exception):
        pass

    cancelled = asyncio.Event()

    async def attempt(leg: Leg) -> str:
        if leg.route is DIRECT:
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.set()
        raise Gone

    with pytest.raises(Gone):
        await run_race((DIRECT, TOR), attempt, race_after=0.01)  # type: ignore[arg-type]
    assert cancelled.is_set()


async def test_losing_direct_dial_lingers_as_evidence() -> None:
    never = asyncio.Event()

    async def slow_dial() -> Connection:
        await never.wait()
        raise ConnectTimeout("blackholed.example", 443)

    async def attempt(leg: Leg) -> str:
        if leg.route is DIRECT:
            await dial_in_leg(leg, slow_dial())
        return leg.route.name

    result = await run_race((DIRECT, TOR), attempt, race_after=0.01)  # type: ignore[arg-type]
    assert result.value == "tor"
    [leg] = result.lingering
    assert leg.dial_task is not None and not leg.dial_task.done()
    never.set()
    with pytest.raises(ConnectTimeout):
        await leg.dial_task


async def test_when_every_route_answers_like_a_block_page_the_first_answer_is_delivered() -> None:
    discarded: list[str] = []

    async def attempt(leg: Leg) -> str:
        raise AttemptFailed(Reason.BLOCKPAGE_REDIRECT, answer=f"302 from {leg.route.name}")

    result = await run_race((DIRECT, TOR), attempt, race_after=None)  # type: ignore[arg-type]
    assert take_answer(result, discarded.append) == "302 from direct"
    assert discarded == ["302 from tor"]
