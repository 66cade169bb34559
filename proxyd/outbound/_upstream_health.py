"""Health of one upstream: up/down state and when to check it next, without IO or clocks.

Every method takes ``now`` from the caller (``UpstreamSet`` passes its clock), so tests
move time by passing numbers.

API::

    health = UpstreamHealth(interval=30.0, now=t)
    health.check_due(now)            -> bool: start a handshake check now?
    health.next_wakeup(now)          -> float: when check_due may next become true
    health.checked(now, latency=s)   -> Transition | None   (a check succeeded)
    health.check_failed(now, reason) -> Transition | None
    health.dial_failed(now, reason)  -> Transition | None   (the router saw UpstreamError)
    health.dial_succeeded(now, seconds) -> Transition | None
    health.up / latency / last_check / last_error

A ``Transition`` is returned exactly when ``up`` changes (unknown -> up counts: the first
check's result is worth one log line); the caller logs it.

Policy (DESIGN §4: checked lazily, and at once after failures):

- Unknown state (never checked) is due at once.
- An upstream that is up is checked every ``interval`` while in use: a dial was reported
  within ``idle_after`` (ten intervals, at least five minutes; creation counts as a use,
  so the daemon's first minutes are covered). An idle healthy upstream is left alone:
  poking Tor every 30 s for nothing would be noise on a router.
- A down upstream is checked every ``interval`` whether used or not, since nothing else
  would ever bring it back (``dialers()`` skips it).
- A failed dial marks the upstream down at once and makes a check due immediately, but
  checks never start closer than ``min_gap`` (a second, or the interval if shorter)
  after the previous one: a burst of failing dials triggers one check, not a storm.
"""

from __future__ import annotations

from dataclasses import dataclass

IDLE_AFTER_MIN = 300.0
IDLE_AFTER_INTERVALS = 10
MIN_GAP = 1.0


@dataclass(frozen=True, slots=True)
class Transition:
    up: bool
    reason: str | None  # why it went down
    latency: float | None  # how long the proof of life took, when it came up


class UpstreamHealth:
    def __init__(self, *, interval: float, now: float) -> None:
        self.interval = interval
        self.idle_after = max(IDLE_AFTER_MIN, IDLE_AFTER_INTERVALS * interval)
        self.min_gap = min(MIN_GAP, interval)
        self.up: bool | None = None
        self.latency: float | None = None
        self.last_check: float | None = None
        self.last_error: str | None = None
        self._next_check = now
        self._last_used = now

    def _in_use(self, now: float) -> bool:
        return now - self._last_used <= self.idle_after

    def check_due(self, now: float) -> bool:
        if now < self._next_check:
            return False
        return self.up is not True or self._in_use(now)

    def next_wakeup(self, now: float) -> float:
        if self.up is True and not self._in_use(now):
            # Nothing to do until a dial makes it in use: look again an interval later.
            return now + self.interval
        return self._next_check

    def checked(self, now: float, *, latency: float) -> Transition | None:
        self.latency = latency
        self.last_check = now
        self.last_error = None
        self._next_check = now + self.interval
        return self._set(True, None, latency)

    def check_failed(self, now: float, reason: str) -> Transition | None:
        self.last_check = now
        self.last_error = reason
        self._next_check = now + self.interval
        return self._set(False, reason, None)

    def dial_failed(self, now: float, reason: str) -> Transition | None:
        self._last_used = now
        self.last_error = reason
        earliest = now if self.last_check is None else self.last_check + self.min_gap
        self._next_check = min(self._next_check, max(now, earliest))
        return self._set(False, reason, None)

    def dial_succeeded(self, now: float, seconds: float) -> Transition | None:
        self._last_used = now
        if self.up is not True:
            self.last_error = None
        return self._set(True, None, seconds)

    def _set(self, up: bool, reason: str | None, latency: float | None) -> Transition | None:
        if self.up is up:
            return None
        self.up = up
        return Transition(up=up, reason=reason, latency=latency)
