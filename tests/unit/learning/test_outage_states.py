"""The outage gate asks a canary before pausing learning: a burst of censorship (a news
page embedding six blocked domains) looks like a dead uplink until a host that just
worked direct is asked again."""

from __future__ import annotations

import random

from proxyd.learning import CANARY_FRESH, GateState, LearningTable, Reason, State
from proxyd.learning._table import DIRECT

T0 = 1_700_000_000.0
BLOCKED = [f"blocked{index}.example" for index in range(6)]


def make_table(canaries: tuple[str, ...] = ()) -> LearningTable:
    return LearningTable(
        rng=random.Random(1), network_down_domains=5, network_down_window=10.0, canaries=canaries
    )


def burst(table: LearningTable, at: float) -> None:
    """Each blocked domain is reset direct and then works through tor."""
    for index, host in enumerate(BLOCKED):
        table.record_failure(host, DIRECT, Reason.CONNECTION_RESET, at + index * 0.5)
        table.confirm_blocked(host, Reason.CONNECTION_RESET, "tor", at + index * 0.5 + 0.1)


def learned_keys(table: LearningTable) -> set[str]:
    return {e.key for e in table.snapshot() if e.state is State.BLOCKED}


def test_a_burst_asks_the_host_that_worked_direct_and_its_answer_keeps_every_entry() -> None:
    table = make_table()
    table.record_direct_success("www.open.example", T0)
    burst(table, T0 + 60)
    assert table.gate_state is GateState.CHECKING
    assert table.canary_wanted() == "www.open.example"
    assert table.canary_wanted() is None  # asked once per check
    held = learned_keys(table)
    assert len(held) == 4  # learned before the fifth domain failed; the rest wait
    released = table.canary_answered(True, T0 + 64)
    assert {e.key for e in released} == set(BLOCKED) - held
    assert learned_keys(table) == set(BLOCKED)
    assert table.gate_state is GateState.OPEN and not table.is_paused(T0 + 64)


def test_a_failing_canary_pauses_learning_withdraws_and_drops_what_was_held() -> None:
    table = make_table()
    table.record_direct_success("open.example", T0)
    burst(table, T0 + 60)
    assert table.canary_answered(False, T0 + 64) == []
    assert table.is_paused(T0 + 64) and table.canary == "open.example"
    assert learned_keys(table) == set()
    assert table.confirm_blocked(BLOCKED[0], Reason.CONNECTION_RESET, "tor", T0 + 65) is None


def test_a_direct_success_during_the_check_settles_it_as_censorship() -> None:
    table = make_table()
    table.record_direct_success("open.example", T0)
    burst(table, T0 + 60)
    released = table.record_direct_success("other.example", T0 + 64)
    assert learned_keys(table) == set(BLOCKED) and released
    assert table.canary_answered(False, T0 + 65) == []  # too late: already settled
    assert table.gate_state is GateState.OPEN


def test_with_no_canary_known_the_old_rule_pauses_at_once() -> None:
    table = make_table()
    burst(table, T0)
    assert table.is_paused(T0 + 3) and table.canary_wanted() is None
    assert learned_keys(table) == set()


def test_a_host_that_worked_direct_too_long_ago_is_no_canary_but_a_configured_one_is() -> None:
    stale = make_table()
    stale.record_direct_success("open.example", T0)
    burst(stale, T0 + CANARY_FRESH + 1)
    assert stale.is_paused(T0 + CANARY_FRESH + 5)
    configured = make_table(canaries=("blocked0.example", "canary.example"))
    configured.record_direct_success("open.example", T0)
    burst(configured, T0 + CANARY_FRESH + 1)
    # a configured canary that is among the failing domains is skipped
    assert configured.canary_wanted() == "canary.example"


def test_a_failing_domain_is_never_its_own_canary() -> None:
    table = make_table()
    table.record_direct_success(BLOCKED[0], T0)
    burst(table, T0 + 1)
    assert table.is_paused(T0 + 5)  # the one host that worked direct fails now
