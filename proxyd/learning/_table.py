# Over 400 lines: one state machine (evidence, control rule, stalls, outage gate) read as a whole.
"""What proxyd has learned about destinations: which ones are blocked, why, and when to re-test.

Pure: no IO and no clock. Every call takes ``now`` as wall-clock epoch seconds (entries
outlive restarts), and jitter comes from an injectable ``random.Random``.

Public API:

- ``Evidence(reason, route, at)``, ``DomainState`` (frozen snapshots), ``State``,
  ``Source``, ``Scope``, ``DIRECT`` (the route name of going direct).
- ``LearningTable(...)``:
  ``lookup(host, now)``; ``record_direct_success(host, now)``;
  ``record_failure(host, route, reason, now)``;
  ``record_stall(host, now) -> bool``, ``stall_suspected(host, now)``;
  ``record_cut(host, server_bytes, now) -> bool``, ``cut_point(host, now)``;
  ``confirm_blocked(host, reason, working_route, now) -> DomainState | None``;
  ``due_retests(now)``, ``record_retest(key, ok, now)``, ``next_timer(now)``;
  ``force(key, route, now)``, ``forget(key)``, ``adopt_list_entry(host, route, now)``,
  ``seed(key, route, now)``;
  ``is_paused(now)``, ``gate_state``, ``canary_wanted()``, ``canary_answered(ok, now)``,
  ``snapshot()``, ``to_json()``, ``from_json(data)``, ``generation``.
- ``StateFormatError``: the saved table has an unknown schema version or a malformed
  entry; the caller quarantines the file (``proxyd.routing._statefile.quarantine_state``).

The rules:

- Keys are registrable domains ("example.com"), or single hosts for per-host
  exceptions. ``lookup`` tries the exact host, then its registrable domain.
- Control rule: the first-visit logic calls ``record_failure`` for the failed direct
  attempt and, only if an alternative route then succeeded for the same request,
  ``confirm_blocked``. Strong reasons block at once; weak ones only once
  ``weak_threshold`` weak direct failures of the domain fell within ``weak_window``.
- Stalls (the "16 KB freeze") cannot be rescued on their own connection, and every
  frozen connection did get its first byte (a direct success), so they are kept apart
  from other failures. One stall makes the domain suspected for ``STALL_SUSPECT_FOR``
  (the caller has already checked that the server stopped acknowledging, so an idle
  keep-alive connection the browser dropped never gets here); routing then sends its next
  tunnels through an upstream as the control, and one that carries more server data
  than a freeze allows confirms the block (``confirm_blocked`` with
  ``Reason.STALL_AFTER_DATA``). A suspicion no control confirms lapses.
- Cuts after data (a direct tunnel reset or gone silent mid-transfer) are kept the same
  way, with the number of server bytes the cut let through: one makes the domain
  suspected for ``STALL_SUSPECT_FOR``, and an upstream tunnel that carries more than
  that cut point (``cut_point``) confirms it with ``Reason.CUT_AFTER_DATA``.
- Per-host exceptions: if another host of the same registrable domain succeeded direct
  recently (remembered in memory only, not persisted: that would be a browsing log), only
  the failing host is blocked; a whole-domain block would send working hosts through an
  upstream for a day. Otherwise the whole registrable domain is blocked, since censors
  mostly list domains and the next subdomain would just fail again.
- Network-down gate (``OutageGate``): outage-like direct failures (timeouts, resets,
  unreachable, DNS errors; ``Reason.is_outage_symptom``) on ``network_down_domains``
  distinct domains within ``network_down_window`` with no direct success in between ask
  a canary first (``canary_wanted``; the caller probes it and calls ``canary_answered``).
  Confirmations arriving meanwhile are held, not lost. A canary that answers means
  censorship: the held confirmations are learned. One that fails, or none known, pauses
  learning until the next direct success and withdraws the entries learned from those
  failures.
- Re-tests: a blocked entry is re-tested direct after ``retest_initial`` (±10 %); each
  failure doubles the interval up to ``retest_max``; ``retest_successes`` consecutive
  successes move it back to direct (the entry is dropped, or kept as learned "direct"
  when it came from a list so the list does not re-block it). Forced entries are never
  re-tested. The caller tracks which re-tests are in flight.
- ``generation`` grows on every change to the persisted entries (debounced saving).
"""

from __future__ import annotations

import dataclasses
import random
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from proxyd.errors import ProxydError
from proxyd.learning._detect import Reason, Strength
from proxyd.learning._domains import is_local_destination, normalise_host, registrable_domain
from proxyd.learning._outage import GateState, OutageGate

DIRECT = "direct"
SCHEMA_VERSION = 1
EVIDENCE_KEPT = 5
_MEMORY_DOMAINS = 4096  # bound on the in-memory (unpersisted) per-domain bookkeeping
_SIBLINGS_KEPT = 4
# How long a domain whose direct tunnels froze stays routed through upstreams while a
# tunnel there gets the chance to prove the block (in memory only).
STALL_SUSPECT_FOR = 600.0


class State(StrEnum):
    DIRECT = "direct"
    BLOCKED = "blocked"


class Source(StrEnum):
    LEARNED = "learned"
    FORCED = "forced"
    LIST = "list"


class Scope(StrEnum):
    DOMAIN = "domain"  # the key is a registrable domain and covers all its hosts
    HOST = "host"  # the key is one host name only


class StateFormatError(ProxydError):
    """The saved learning table cannot be loaded."""


@dataclass(frozen=True)
class Evidence:
    reason: Reason
    route: str  # the route that failed
    at: float


@dataclass(frozen=True)
class DomainState:
    key: str
    scope: Scope
    state: State
    route: str  # the route that worked (DIRECT for direct entries)
    probe_host: str  # the host a re-test connects to (the one that failed)
    since: float
    source: Source
    evidence: tuple[Evidence, ...] = ()
    next_retest: float | None = None
    retest_interval: float = 0.0
    consecutive_successes: int = 0


class LearningTable:
    def __init__(
        self,
        *,
        retest_initial: float = 3600.0,
        retest_max: float = 86400.0,
        retest_successes: int = 1,
        weak_threshold: int = 2,
        weak_window: float = 60.0,
        network_down_domains: int = 5,
        network_down_window: float = 10.0,
        canaries: tuple[str, ...] = (),
        rng: random.Random | None = None,
    ) -> None:
        self._retest_initial = retest_initial
        self._retest_max = retest_max
        self._retest_successes = retest_successes
        self._weak_threshold = weak_threshold
        self._weak_window = weak_window
        self._network_down_domains = network_down_domains
        self._network_down_window = network_down_window
        self._rng = rng or random.Random()
        self._entries: dict[str, DomainState] = {}
        self._recent_failures: OrderedDict[str, deque[Evidence]] = OrderedDict()
        self._direct_ok_hosts: OrderedDict[str, deque[str]] = OrderedDict()
        self._gate = OutageGate(
            domains=network_down_domains, window=network_down_window, canaries=canaries
        )
        self._canary_asked = False
        self._held: list[tuple[str, Reason, str, float]] = []  # while a canary is asked
        self._stalls: OrderedDict[str, deque[float]] = OrderedDict()
        self._cuts: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()
        self.generation = 0

    # --- queries ---------------------------------------------------------------------

    def lookup(self, host: str, now: float) -> DomainState | None:
        """The entry that decides ``host``; entries do not expire, ``now`` is for symmetry."""
        name = normalise_host(host)
        entry = self._entries.get(name)
        if entry is not None:
            return entry
        entry = self._entries.get(registrable_domain(name))
        return entry if entry is not None and entry.scope is Scope.DOMAIN else None

    def is_paused(self, now: float) -> bool:
        """Whether the network-down gate holds learning (until the next direct success)."""
        return self._gate.state is GateState.PAUSED

    @property
    def gate_state(self) -> GateState:
        return self._gate.state

    @property
    def canary(self) -> str | None:
        """The host the gate asks (checking) or that failed too (paused)."""
        return self._gate.canary

    def canary_wanted(self) -> str | None:
        """The canary to probe direct, once per check; None when no check waits for one."""
        if self._gate.state is not GateState.CHECKING or self._canary_asked:
            return None
        self._canary_asked = True
        return self._gate.canary

    def stall_suspected(self, host: str, now: float) -> bool:
        """Whether a direct tunnel to ``host``'s domain froze recently enough."""
        stalls = self._stalls.get(registrable_domain(host))
        return stalls is not None and len(stalls) > 0 and now - stalls[-1] <= STALL_SUSPECT_FOR

    def cut_point(self, host: str, now: float) -> int | None:
        """The most server data a recent direct cut of ``host``'s domain let through, or
        None when no cut is recent enough to suspect the domain."""
        cuts = self._cuts.get(registrable_domain(host))
        recent = [size for at, size in cuts or () if now - at <= STALL_SUSPECT_FOR]
        return max(recent) if recent else None

    def snapshot(self) -> list[DomainState]:
        return sorted(self._entries.values(), key=lambda entry: entry.key)

    def due_retests(self, now: float) -> list[str]:
        due = [e for e in self._entries.values() if e.next_retest is not None]
        return [e.key for e in sorted(due, key=_retest_time) if _retest_time(e) <= now]

    def next_timer(self, now: float) -> float | None:
        """When the earliest re-test is due (never before ``now``), or None if none is."""
        times = [e.next_retest for e in self._entries.values() if e.next_retest is not None]
        return max(min(times), now) if times else None

    # --- observations ----------------------------------------------------------------

    def record_direct_success(self, host: str, now: float) -> list[DomainState]:
        """Returns the entries learned from confirmations a canary check held."""
        name, domain = normalise_host(host), registrable_domain(host)
        held = self._gate.direct_worked(name, domain, now) is GateState.CHECKING
        # A success between two weak failures means a flaky path, not a filter.
        self._recent_failures.pop(domain, None)
        hosts = self._direct_ok_hosts.pop(domain, deque(maxlen=_SIBLINGS_KEPT))
        if name not in hosts:
            hosts.append(name)
        self._direct_ok_hosts[domain] = hosts
        _trim(self._direct_ok_hosts)
        return self._release_held() if held else []

    def canary_answered(self, ok: bool, now: float) -> list[DomainState]:
        """The canary's answer; returns the entries learned from the held confirmations
        (the canary worked: censorship), none when it failed (the network is down)."""
        if self._gate.state is not GateState.CHECKING:
            return []
        if self._gate.canary_answered(ok, now) is GateState.OPEN:
            return self._release_held()
        self._held.clear()
        self._withdraw(now)
        return []

    def record_failure(self, host: str, route: str, reason: Reason, now: float) -> None:
        if is_local_destination(host):
            return
        evidence = Evidence(reason, route, now)
        entry = self.lookup(host, now)
        if entry is not None:
            kept = (*entry.evidence, evidence)[-EVIDENCE_KEPT:]
            self._put(dataclasses.replace(entry, evidence=kept))
        if route != DIRECT:
            return  # an upstream failing says nothing about the destination's filtering
        domain = registrable_domain(host)
        failures = self._recent_failures.pop(domain, deque(maxlen=EVIDENCE_KEPT))
        failures.append(evidence)
        self._recent_failures[domain] = failures
        _trim(self._recent_failures)
        if reason.is_outage_symptom:
            self._note_outage_symptom(domain, now)

    def record_stall(self, host: str, now: float) -> bool:
        """A direct tunnel to ``host`` froze after some data; True if that makes it suspected."""
        if self.is_paused(now) or is_local_destination(host):
            return False
        domain = registrable_domain(host)
        stalls = self._stalls.pop(domain, deque(maxlen=EVIDENCE_KEPT))
        stalls.append(now)
        self._stalls[domain] = stalls
        _trim(self._stalls)
        return self.stall_suspected(host, now)

    def record_cut(self, host: str, server_bytes: int, now: float) -> bool:
        """A direct tunnel to ``host`` was cut after ``server_bytes``; True if that makes
        the domain suspected."""
        if self.is_paused(now) or is_local_destination(host):
            return False
        domain = registrable_domain(host)
        cuts = self._cuts.pop(domain, deque(maxlen=EVIDENCE_KEPT))
        cuts.append((now, server_bytes))
        self._cuts[domain] = cuts
        _trim(self._cuts)
        return self.cut_point(host, now) is not None

    def confirm_blocked(
        self, host: str, reason: Reason, working_route: str, now: float
    ) -> DomainState | None:
        """Mark ``host`` blocked after ``working_route`` succeeded where direct failed.

        Returns the new or updated entry, or None when nothing was learned: paused,
        a local destination, a reason that is not evidence, too little weak evidence,
        or an entry forced by the user.
        """
        if self.is_paused(now) or reason.strength is Strength.NONE or is_local_destination(host):
            return None
        if self._gate.state is GateState.CHECKING:
            self._held.append((host, reason, working_route, now))
            return None
        name, domain = normalise_host(host), registrable_domain(host)
        if reason is Reason.STALL_AFTER_DATA:
            if not self.stall_suspected(name, now):
                return None
            recent = [Evidence(reason, DIRECT, at) for at in self._stalls[domain]]
        elif reason is Reason.CUT_AFTER_DATA:
            if self.cut_point(name, now) is None:
                return None
            recent = [Evidence(reason, DIRECT, at) for at, _ in self._cuts[domain]]
        else:
            recent = [
                e for e in self._recent_failures.get(domain, ()) if now - e.at <= self._weak_window
            ]
            weak_count = sum(e.reason.strength is Strength.WEAK for e in recent)
            if reason.strength is Strength.WEAK and weak_count < self._weak_threshold:
                return None
            if not any(e.reason is reason for e in recent):
                recent.append(Evidence(reason, DIRECT, now))
        existing = self.lookup(name, now)
        if existing is not None and existing.source is Source.FORCED:
            return None
        self._recent_failures.pop(domain, None)
        self._stalls.pop(domain, None)
        self._cuts.pop(domain, None)
        if existing is not None and existing.state is State.BLOCKED:
            updated = dataclasses.replace(
                existing,
                route=working_route,
                evidence=(*existing.evidence, *recent)[-EVIDENCE_KEPT:],
            )
            return self._put(updated)
        siblings_direct = any(h != name for h in self._direct_ok_hosts.get(domain, ()))
        scope = Scope.HOST if siblings_direct else Scope.DOMAIN
        return self._put(
            DomainState(
                key=name if siblings_direct else domain,
                scope=scope,
                state=State.BLOCKED,
                route=working_route,
                probe_host=name,
                since=now,
                source=existing.source if existing is not None else Source.LEARNED,
                evidence=tuple(recent[-EVIDENCE_KEPT:]),
                next_retest=now + self._jitter(self._retest_initial),
                retest_interval=self._retest_initial,
            )
        )

    # --- re-tests --------------------------------------------------------------------

    def record_retest(self, key: str, ok: bool, now: float) -> DomainState | None:
        """Apply a direct re-test's outcome; returns the entry left behind, if any."""
        entry = self._entries.get(normalise_host(key))
        if entry is None or entry.next_retest is None:
            return entry
        if not ok:
            interval = min(entry.retest_interval * 2, self._retest_max)
            return self._put(
                dataclasses.replace(
                    entry,
                    retest_interval=interval,
                    next_retest=now + self._jitter(interval),
                    consecutive_successes=0,
                )
            )
        successes = entry.consecutive_successes + 1
        if successes < self._retest_successes:
            # Confirm soon rather than after the long back-off that the failures built up.
            return self._put(
                dataclasses.replace(
                    entry,
                    consecutive_successes=successes,
                    next_retest=now + self._jitter(self._retest_initial),
                )
            )
        if entry.source is Source.LIST:
            return self._put(self._direct_entry(entry.key, entry.probe_host, Source.LEARNED, now))
        self._remove(entry.key)
        return None

    # --- administration --------------------------------------------------------------

    def force(self, key: str, route: str, now: float) -> DomainState:
        """Pin ``key`` (a registrable domain or a single host) to ``route``; never re-tested."""
        name = normalise_host(key)
        if route == DIRECT:
            return self._put(self._direct_entry(name, name, Source.FORCED, now))
        return self._put(
            DomainState(
                key=name,
                scope=_scope_of(name),
                state=State.BLOCKED,
                route=route,
                probe_host=name,
                since=now,
                source=Source.FORCED,
            )
        )

    def forget(self, key: str) -> bool:
        name = normalise_host(key)
        self._recent_failures.pop(name, None)
        return self._remove(name)

    def adopt_list_entry(self, host: str, route: str, now: float) -> DomainState | None:
        """Track a list-blocked domain the router used, so re-tests can overturn the list.

        Lists stay in the routing layer (they can be huge); only domains actually
        visited get an entry. An existing entry wins and None is returned.
        """
        if self.lookup(host, now) is not None:
            return None
        domain = registrable_domain(host)
        return self._put(
            DomainState(
                key=domain,
                scope=Scope.DOMAIN,
                state=State.BLOCKED,
                route=route,
                probe_host=normalise_host(host),
                since=now,
                source=Source.LIST,
                next_retest=now + self._jitter(self._retest_initial),
                retest_interval=self._retest_initial,
            )
        )

    def seed(self, key: str, route: str, now: float) -> DomainState | None:
        """Take a blocked entry another box shared; re-tested like a list entry, so a
        share that does not hold here is overturned. An existing entry wins (None)."""
        name = normalise_host(key)
        if name in self._entries:
            return None
        return self._put(
            DomainState(
                key=name,
                scope=_scope_of(name),
                state=State.BLOCKED,
                route=route,
                probe_host=name,
                since=now,
                source=Source.LIST,
                next_retest=now + self._jitter(self._retest_initial),
                retest_interval=self._retest_initial,
            )
        )

    # --- persistence -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "entries": [_entry_to_json(entry) for entry in self.snapshot()],
        }

    def from_json(self, data: Mapping[str, Any]) -> None:
        """Replace all entries with those in ``data``; raises StateFormatError."""
        if not isinstance(data, Mapping) or data.get("version") != SCHEMA_VERSION:
            version = data.get("version") if isinstance(data, Mapping) else None
            raise StateFormatError(f"unsupported state schema version {version!r}")
        raw_entries = data.get("entries")
        if not isinstance(raw_entries, list):
            raise StateFormatError("'entries' is not a list")
        entries = {}
        for index, raw in enumerate(raw_entries):
            try:
                entry = _entry_from_json(raw)
            except (KeyError, TypeError, ValueError) as err:
                raise StateFormatError(f"entry {index}: {err!r}") from err
            entries[entry.key] = entry
        self._entries = entries
        self.generation += 1

    # --- internals -------------------------------------------------------------------

    def _note_outage_symptom(self, domain: str, now: float) -> None:
        before = self._gate.state
        after = self._gate.symptom(domain, now)
        if after is GateState.CHECKING and before is not GateState.CHECKING:
            self._canary_asked = False
        if after is GateState.PAUSED and before is not GateState.PAUSED:
            self._withdraw(now)

    def _withdraw(self, now: float) -> None:
        """The network is down: take back what its failures taught."""
        failing = self._gate.failing_domains
        horizon = now - self._network_down_window
        # The entries learned in the window were most likely the first victims of the
        # same outage: take them back rather than route working sites through upstreams.
        for entry in list(self._entries.values()):
            if (
                entry.source is Source.LEARNED
                and entry.state is State.BLOCKED
                and entry.since >= horizon
                and registrable_domain(entry.key) in failing
            ):
                self._remove(entry.key)
        for failed_domain in failing:
            self._recent_failures.pop(failed_domain, None)

    def _release_held(self) -> list[DomainState]:
        held, self._held = self._held, []
        learned = []
        for host, reason, route, at in held:
            entry = self.confirm_blocked(host, reason, route, at)
            if entry is not None:
                learned.append(entry)
        return learned

    def _direct_entry(self, key: str, probe_host: str, source: Source, now: float) -> DomainState:
        return DomainState(
            key=key,
            scope=_scope_of(key),
            state=State.DIRECT,
            route=DIRECT,
            probe_host=probe_host,
            since=now,
            source=source,
        )

    def _jitter(self, interval: float) -> float:
        return interval * self._rng.uniform(0.9, 1.1)

    def _put(self, entry: DomainState) -> DomainState:
        self._entries[entry.key] = entry
        self.generation += 1
        return entry

    def _remove(self, key: str) -> bool:
        if self._entries.pop(key, None) is None:
            return False
        self.generation += 1
        return True


def _retest_time(entry: DomainState) -> float:
    return entry.next_retest if entry.next_retest is not None else float("inf")


def _scope_of(name: str) -> Scope:
    return Scope.DOMAIN if registrable_domain(name) == name else Scope.HOST


def _trim(table: OrderedDict[str, Any]) -> None:
    while len(table) > _MEMORY_DOMAINS:
        table.popitem(last=False)


def _entry_to_json(entry: DomainState) -> dict[str, Any]:
    data = dataclasses.asdict(entry)
    data["evidence"] = [dataclasses.asdict(e) for e in entry.evidence]
    return data


def _number(raw: Mapping[str, Any], name: str) -> float:
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} is not a number")
    return float(value)


def _text(raw: Mapping[str, Any], name: str) -> str:
    value = raw[name]
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} is not a non-empty string")
    return value


def _entry_from_json(raw: Any) -> DomainState:
    if not isinstance(raw, Mapping):
        raise TypeError("entry is not an object")
    evidence = raw["evidence"]
    if not isinstance(evidence, list):
        raise TypeError("evidence is not a list")
    successes = raw["consecutive_successes"]
    if isinstance(successes, bool) or not isinstance(successes, int):
        raise TypeError("consecutive_successes is not an integer")
    return DomainState(
        key=_text(raw, "key"),
        scope=Scope(raw["scope"]),
        state=State(raw["state"]),
        route=_text(raw, "route"),
        probe_host=_text(raw, "probe_host"),
        since=_number(raw, "since"),
        source=Source(raw["source"]),
        evidence=tuple(
            Evidence(Reason(_text(e, "reason")), _text(e, "route"), _number(e, "at"))
            for e in evidence
        ),
        next_retest=None if raw["next_retest"] is None else _number(raw, "next_retest"),
        retest_interval=_number(raw, "retest_interval"),
        consecutive_successes=successes,
    )
