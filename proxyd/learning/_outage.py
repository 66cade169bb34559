"""The outage gate: is the network down, or is this a burst of censorship?

Pure: no IO and no clock (``now`` from the caller). Direct failures that an outage of
our own uplink could cause (``Reason.is_outage_symptom``) on ``domains`` unrelated
registrable domains within ``window`` seconds, with no direct success between them, look
like a dead uplink. They also look like a news page that embeds six blocked domains. So
before pausing learning the gate asks a canary: a host that worked direct within
``canary_fresh`` seconds (not one of the failing domains), else a configured one. The
caller probes it direct and reports with ``canary_answered``.

States (``GateState``): OPEN (learning), CHECKING (a canary is being asked; the learning
table holds the confirmations that arrive meanwhile), PAUSED (the canary failed too, or
none was known: today's network-down rule). A direct success opens the gate from any
state: the network works.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import StrEnum

CANARY_FRESH = 300.0  # "worked direct within the last minutes"
_REMEMBERED = 64  # domains that worked direct, most recent last


class GateState(StrEnum):
    OPEN = "open"
    CHECKING = "checking"
    PAUSED = "paused"


class OutageGate:
    def __init__(
        self,
        *,
        domains: int,
        window: float,
        canaries: tuple[str, ...] = (),
        canary_fresh: float = CANARY_FRESH,
    ) -> None:
        self.state = GateState.OPEN
        self.canary: str | None = None  # the host asked (CHECKING) or that failed (PAUSED)
        self._domains = domains
        self._window = window
        self._canaries = canaries
        self._canary_fresh = canary_fresh
        self._failures: dict[str, float] = {}  # domain -> its latest outage-like failure
        self._worked: OrderedDict[str, tuple[str, float]] = OrderedDict()  # domain -> host, at

    @property
    def failing_domains(self) -> frozenset[str]:
        return frozenset(self._failures)

    def direct_worked(self, host: str, domain: str, now: float) -> GateState:
        """A direct connection worked; returns the state the gate was in."""
        before = self.state
        self._worked.pop(domain, None)
        self._worked[domain] = (host, now)
        while len(self._worked) > _REMEMBERED:
            self._worked.popitem(last=False)
        self._open()
        return before

    def symptom(self, domain: str, now: float) -> GateState:
        """An outage-like direct failure of ``domain``; returns the state after it.

        Reaching the threshold while OPEN moves to CHECKING with ``canary`` set, or to
        PAUSED when no canary is known."""
        horizon = now - self._window
        self._failures = {d: t for d, t in self._failures.items() if t >= horizon}
        self._failures[domain] = now
        self._worked.pop(domain, None)  # it fails now: no canary any more
        if self.state is not GateState.OPEN or len(self._failures) < self._domains:
            return self.state
        self.canary = self._pick_canary(now)
        self.state = GateState.PAUSED if self.canary is None else GateState.CHECKING
        return self.state

    def canary_answered(self, ok: bool, now: float) -> GateState:
        """The canary's answer to a check; ignored unless CHECKING. Returns the state."""
        if self.state is not GateState.CHECKING:
            return self.state
        if ok:
            self._open()
        else:
            self.state = GateState.PAUSED
        return self.state

    def _open(self) -> None:
        self.state = GateState.OPEN
        self.canary = None
        self._failures.clear()

    def _pick_canary(self, now: float) -> str | None:
        for domain, (host, at) in reversed(self._worked.items()):
            if now - at <= self._canary_fresh and domain not in self._failures:
                return host
        for host in self._canaries:
            if not any(host == d or host.endswith("." + d) for d in self._failures):
                return host
        return None
