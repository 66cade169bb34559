"""The upstream health state machine and its check schedule, with time passed in."""

from __future__ import annotations

from proxyd.outbound._upstream_health import Transition, UpstreamHealth

T0 = 1000.0


def test_a_new_upstream_is_checked_at_once_and_its_first_result_is_a_transition() -> None:
    health = UpstreamHealth(interval=30.0, now=T0)
    assert health.up is None
    assert health.check_due(T0)
    assert health.checked(T0, latency=0.004) == Transition(up=True, reason=None, latency=0.004)
    assert health.up is True
    assert health.latency == 0.004
    assert health.last_check == T0


def test_only_changes_of_state_are_transitions() -> None:
    health = UpstreamHealth(interval=30.0, now=T0)
    health.checked(T0, latency=0.01)
    assert health.checked(T0 + 30, latency=0.01) is None
    down = health.check_failed(T0 + 60, "connection refused")
    assert down == Transition(up=False, reason="connection refused", latency=None)
    assert health.check_failed(T0 + 90, "connection refused") is None
    assert health.last_error == "connection refused"
    assert health.checked(T0 + 120, latency=0.02) == Transition(True, None, 0.02)
    assert health.last_error is None


def test_an_upstream_in_use_is_checked_every_interval() -> None:
    health = UpstreamHealth(interval=30.0, now=T0)
    health.checked(T0, latency=0.01)
    assert not health.check_due(T0 + 29.9)
    assert health.next_wakeup(T0 + 1) == T0 + 30
    health.dial_succeeded(T0 + 10, 0.2)
    assert health.check_due(T0 + 30)


def test_an_idle_healthy_upstream_is_not_checked_until_used_again() -> None:
    health = UpstreamHealth(interval=30.0, now=T0)
    health.checked(T0, latency=0.01)
    later = T0 + health.idle_after + 31
    assert not health.check_due(later)
    assert health.next_wakeup(later) == later + 30  # look again later, no busy loop
    health.dial_succeeded(later, 0.3)
    assert health.check_due(later)


def test_a_down_upstream_keeps_being_checked_even_when_unused() -> None:
    health = UpstreamHealth(interval=30.0, now=T0)
    health.check_failed(T0, "connection refused")
    much_later = T0 + 10 * health.idle_after
    assert health.check_due(much_later)
    assert health.next_wakeup(much_later) == T0 + 30


def test_a_failed_dial_marks_down_at_once_and_makes_a_check_due() -> None:
    health = UpstreamHealth(interval=30.0, now=T0)
    health.checked(T0, latency=0.01)
    transition = health.dial_failed(T0 + 5, "connection reset")
    assert transition == Transition(up=False, reason="connection reset", latency=None)
    assert health.up is False
    assert health.check_due(T0 + 5)


def test_a_burst_of_failed_dials_right_after_a_check_waits_for_the_minimum_gap() -> None:
    health = UpstreamHealth(interval=30.0, now=T0)
    health.check_failed(T0, "connection refused")
    for i in range(20):
        assert health.dial_failed(T0 + 0.01 * i, "connection refused") is None
    assert not health.check_due(T0 + 0.5)
    assert health.check_due(T0 + health.min_gap)


def test_a_failed_dial_never_postpones_a_check_already_due_sooner() -> None:
    health = UpstreamHealth(interval=30.0, now=T0)
    health.checked(T0, latency=0.01)
    health.dial_failed(T0 + 29.5, "connection refused")
    assert health.check_due(T0 + 29.5)


def test_a_successful_dial_brings_a_down_upstream_back_up() -> None:
    health = UpstreamHealth(interval=30.0, now=T0)
    health.check_failed(T0, "connection refused")
    assert health.dial_succeeded(T0 + 1, 0.25) == Transition(up=True, reason=None, latency=0.25)
    assert health.last_error is None
    assert health.dial_succeeded(T0 + 2, 0.25) is None


def test_short_intervals_shrink_the_minimum_gap() -> None:
    health = UpstreamHealth(interval=0.2, now=T0)
    assert health.min_gap == 0.2
    assert health.idle_after == 300.0
