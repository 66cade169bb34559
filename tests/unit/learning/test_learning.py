"""The learning table as transcripts: a plain number is the clock, nothing sleeps."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from proxyd.learning._detect import Reason
from proxyd.learning._table import (
    DIRECT,
    LearningTable,
    Scope,
    Source,
    State,
    StateFormatError,
)

HOUR = 3600.0
T0 = 1_700_000_000.0  # wall-clock epoch seconds, as the daemon passes them


def make_table(**overrides: Any) -> LearningTable:
    return LearningTable(rng=random.Random(7), **overrides)


def direct_fails_then_tor_works(
    table: LearningTable, host: str, reason: Reason, now: float
) -> object:
    """What the first-visit logic does: record the direct failure, then the control."""
    table.record_failure(host, DIRECT, reason, now)
    return table.confirm_blocked(host, reason, "tor", now + 0.2)


# --- learning --------------------------------------------------------------------------


def test_reset_then_upstream_success_marks_domain_blocked() -> None:
    table = make_table()
    entry = direct_fails_then_tor_works(table, "www.news.example", Reason.CONNECTION_RESET, T0)
    assert entry is not None
    found = table.lookup("static.news.example", T0 + 1)
    assert found is not None
    assert (found.key, found.scope, found.state) == ("news.example", Scope.DOMAIN, State.BLOCKED)
    assert found.route == "tor"
    assert found.probe_host == "www.news.example"
    assert [e.reason for e in found.evidence] == [Reason.CONNECTION_RESET]


def test_failure_without_a_successful_alternative_learns_nothing() -> None:
    table = make_table()
    table.record_failure("www.down.example", DIRECT, Reason.CONNECTION_RESET, T0)
    table.record_failure("www.down.example", "tor", Reason.UPSTREAM_FAILED, T0 + 1)
    assert table.lookup("www.down.example", T0 + 2) is None
    assert table.snapshot() == []


def test_single_connect_timeout_does_not_mark_blocked() -> None:
    table = make_table()
    assert direct_fails_then_tor_works(table, "slow.example", Reason.CONNECT_TIMEOUT, T0) is None
    assert table.lookup("slow.example", T0 + 1) is None


def test_second_timeout_within_the_window_marks_blocked() -> None:
    table = make_table(weak_window=60.0)
    direct_fails_then_tor_works(table, "www.slow.example", Reason.CONNECT_TIMEOUT, T0)
    entry = direct_fails_then_tor_works(
        table, "img.slow.example", Reason.FIRST_BYTE_TIMEOUT, T0 + 30
    )
    assert entry is not None and entry.key == "slow.example"
    assert len(entry.evidence) == 2


def test_weak_failures_further_apart_than_the_window_do_not_add_up() -> None:
    table = make_table(weak_window=60.0)
    direct_fails_then_tor_works(table, "slow.example", Reason.CONNECT_TIMEOUT, T0)
    assert direct_fails_then_tor_works(table, "slow.example", Reason.CONNECT_TIMEOUT, T0 + 61) is (
        None
    )


def test_direct_success_between_weak_failures_resets_the_count() -> None:
    table = make_table()
    direct_fails_then_tor_works(table, "flaky.example", Reason.CONNECT_TIMEOUT, T0)
    table.record_direct_success("flaky.example", T0 + 5)
    assert direct_fails_then_tor_works(table, "flaky.example", Reason.CONNECT_TIMEOUT, T0 + 10) is (
        None
    )


def test_unreachable_is_never_evidence() -> None:
    table = make_table()
    for step in range(3):
        assert (
            direct_fails_then_tor_works(table, "x.example", Reason.HOST_UNREACHABLE, T0 + step)
            is None
        )


def test_local_destinations_are_never_learned() -> None:
    table = make_table()
    assert direct_fails_then_tor_works(table, "192.168.1.1", Reason.CONNECTION_RESET, T0) is None
    assert direct_fails_then_tor_works(table, "nas.local", Reason.CONNECTION_RESET, T0) is None
    assert table.snapshot() == []


def test_blocked_host_of_a_domain_whose_other_hosts_work_gets_a_host_exception() -> None:
    table = make_table()
    table.record_direct_success("www.mixed.example", T0)
    entry = direct_fails_then_tor_works(table, "video.mixed.example", Reason.TLS_INJECTED, T0 + 10)
    assert entry is not None
    assert (entry.key, entry.scope) == ("video.mixed.example", Scope.HOST)
    assert table.lookup("www.mixed.example", T0 + 11) is None
    assert table.lookup("other.mixed.example", T0 + 11) is None
    found = table.lookup("video.mixed.example", T0 + 11)
    assert found is not None and found.route == "tor"


def test_blocked_apex_with_working_siblings_does_not_cover_the_siblings() -> None:
    table = make_table()
    table.record_direct_success("www.apex.example", T0)
    entry = direct_fails_then_tor_works(table, "apex.example", Reason.CONNECTION_RESET, T0 + 1)
    assert entry is not None and entry.scope is Scope.HOST
    assert table.lookup("apex.example", T0 + 2) == entry
    assert table.lookup("www.apex.example", T0 + 2) is None


def test_learning_pauses_when_many_unrelated_domains_fail_at_once() -> None:
    table = make_table(network_down_domains=5, network_down_window=10.0)
    learned = [
        direct_fails_then_tor_works(table, f"site{n}.example", Reason.CONNECT_TIMEOUT, T0 + n)
        for n in range(2)
    ]
    assert learned == [None, None]  # weak, not repeated: nothing yet
    for n in range(2, 4):
        assert direct_fails_then_tor_works(
            table, f"site{n}.example", Reason.CONNECTION_RESET, T0 + n
        )
    assert len(table.snapshot()) == 2
    assert direct_fails_then_tor_works(table, "site4.example", Reason.CONNECTION_RESET, T0 + 4) is (
        None
    )
    assert table.is_paused(T0 + 4)
    # The two learned during the outage are withdrawn: they were its first victims.
    assert table.snapshot() == []
    table.record_direct_success("working.example", T0 + 20)
    assert not table.is_paused(T0 + 20)
    assert direct_fails_then_tor_works(table, "site9.example", Reason.CONNECTION_RESET, T0 + 21)


def test_block_pages_do_not_count_towards_network_down() -> None:
    table = make_table(network_down_domains=3)
    for n in range(5):
        assert direct_fails_then_tor_works(table, f"bp{n}.example", Reason.HTTP_451, T0 + n)
    assert not table.is_paused(T0 + 5)
    assert len(table.snapshot()) == 5


def test_failures_spread_beyond_the_network_down_window_do_not_pause() -> None:
    table = make_table(network_down_domains=3, network_down_window=10.0)
    for n in range(6):
        direct_fails_then_tor_works(table, f"s{n}.example", Reason.CONNECTION_RESET, T0 + 6 * n)
    assert not table.is_paused(T0 + 40)
    assert len(table.snapshot()) == 6


# --- re-tests --------------------------------------------------------------------------


def test_retest_is_scheduled_after_the_initial_interval_with_jitter() -> None:
    table = make_table(retest_initial=HOUR)
    entry = direct_fails_then_tor_works(table, "news.example", Reason.CONNECTION_RESET, T0)
    assert entry is not None and entry.next_retest is not None
    assert T0 + 0.9 * HOUR <= entry.next_retest <= T0 + 1.1 * HOUR
    assert table.next_timer(T0) == entry.next_retest
    assert table.due_retests(T0 + 0.5 * HOUR) == []
    assert table.due_retests(T0 + 1.2 * HOUR) == ["news.example"]
    assert table.next_timer(T0 + 2 * HOUR) == T0 + 2 * HOUR  # overdue: at once


def test_retest_success_moves_domain_back_to_direct() -> None:
    table = make_table()
    direct_fails_then_tor_works(table, "news.example", Reason.CONNECTION_RESET, T0)
    assert table.record_retest("news.example", True, T0 + 2 * HOUR) is None
    assert table.lookup("news.example", T0 + 2 * HOUR) is None
    assert table.next_timer(T0 + 2 * HOUR) is None


def test_retest_failures_double_the_interval_up_to_the_maximum() -> None:
    table = make_table(retest_initial=HOUR, retest_max=4 * HOUR)
    direct_fails_then_tor_works(table, "news.example", Reason.CONNECTION_RESET, T0)
    now, intervals = T0, []
    for _ in range(4):
        now += 5 * HOUR
        entry = table.record_retest("news.example", False, now)
        assert entry is not None and entry.next_retest is not None
        assert 0.9 * entry.retest_interval <= entry.next_retest - now <= 1.1 * entry.retest_interval
        intervals.append(entry.retest_interval)
    assert intervals == [2 * HOUR, 4 * HOUR, 4 * HOUR, 4 * HOUR]


def test_retest_needs_the_configured_consecutive_successes() -> None:
    table = make_table(retest_successes=2)
    direct_fails_then_tor_works(table, "news.example", Reason.CONNECTION_RESET, T0)
    table.record_retest("news.example", True, T0 + HOUR)
    table.record_retest("news.example", False, T0 + 2 * HOUR)
    table.record_retest("news.example", True, T0 + 6 * HOUR)
    assert table.lookup("news.example", T0 + 6 * HOUR) is not None
    table.record_retest("news.example", True, T0 + 7 * HOUR)
    assert table.lookup("news.example", T0 + 7 * HOUR) is None


def test_list_entry_overturned_by_retest_stays_direct() -> None:
    table = make_table()
    entry = table.adopt_list_entry("www.listed.example", "tor", T0)
    assert entry is not None and entry.source is Source.LIST and entry.key == "listed.example"
    after = table.record_retest("listed.example", True, T0 + 2 * HOUR)
    assert after is not None and (after.state, after.route) == (State.DIRECT, DIRECT)
    assert table.lookup("www.listed.example", T0 + 2 * HOUR) == after
    assert table.adopt_list_entry("www.listed.example", "tor", T0 + 3 * HOUR) is None


# --- administration --------------------------------------------------------------------


def test_forced_entry_is_not_retested_nor_overridden_by_learning() -> None:
    table = make_table()
    forced = table.force("www.pinned.example", "direct", T0)
    assert forced.scope is Scope.HOST and forced.next_retest is None
    assert direct_fails_then_tor_works(table, "www.pinned.example", Reason.TLS_INJECTED, T0) is None
    found = table.lookup("www.pinned.example", T0)
    assert found is not None
    assert (found.state, found.route, found.source) == (State.DIRECT, DIRECT, Source.FORCED)
    assert table.due_retests(T0 + 100 * HOUR) == []


def test_forget_removes_an_entry_and_bumps_the_generation() -> None:
    table = make_table()
    table.force("pinned.example", "tor", T0)
    generation = table.generation
    assert table.forget("PINNED.example.")
    assert table.generation > generation
    assert table.lookup("pinned.example", T0) is None
    assert not table.forget("pinned.example")


def test_generation_moves_only_when_entries_change() -> None:
    table = make_table()
    start = table.generation
    table.record_direct_success("a.example", T0)
    table.lookup("a.example", T0)
    table.record_failure("b.example", DIRECT, Reason.CONNECT_TIMEOUT, T0)
    assert table.generation == start
    direct_fails_then_tor_works(table, "c.example", Reason.CONNECTION_RESET, T0)
    assert table.generation > start


# --- persistence -----------------------------------------------------------------------


def test_table_survives_a_json_round_trip() -> None:
    table = make_table()
    direct_fails_then_tor_works(table, "news.example", Reason.CONNECTION_RESET, T0)
    table.force("cdn.mixed.example", "direct", T0)
    table.adopt_list_entry("listed.example", "tor", T0)
    text = json.dumps(table.to_json())
    restored = make_table()
    restored.from_json(json.loads(text))
    assert restored.snapshot() == table.snapshot()
    assert restored.due_retests(T0 + 2 * HOUR) == table.due_retests(T0 + 2 * HOUR)


@pytest.mark.parametrize(
    "data",
    [
        {"version": 99, "entries": []},
        {"entries": []},
        {"version": 1, "entries": {}},
        {"version": 1, "entries": [{"key": "x.example"}]},
        {"version": 1, "entries": ["x.example"]},
    ],
)
def test_unknown_version_or_malformed_entries_raise_a_typed_error(data: dict[str, Any]) -> None:
    with pytest.raises(StateFormatError):
        make_table().from_json(data)


def test_entry_with_a_wrong_field_type_is_rejected() -> None:
    table = make_table()
    direct_fails_then_tor_works(table, "news.example", Reason.CONNECTION_RESET, T0)
    data = table.to_json()
    data["entries"][0]["since"] = "yesterday"
    with pytest.raises(StateFormatError, match="entry 0"):
        make_table().from_json(data)
    data["entries"][0]["since"] = T0
    data["entries"][0]["evidence"][0]["reason"] = "not_a_reason"
    with pytest.raises(StateFormatError):
        make_table().from_json(data)
