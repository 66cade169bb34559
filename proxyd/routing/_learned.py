"""The learning service: the pure ``LearningTable`` plus its clocks, files and probes.

It owns what needs IO around the table: loading and debounced atomic saving of the state
file, the out-of-band direct re-tests (their probes in ``proxyd.routing._retest_probes``), the
DNS-poison detector and block-page fingerprints, and the direct RTT estimate that racing
derives ``race_after`` from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from proxyd.config import LearningConfig
from proxyd.errors import ConnectionRefused, DialError
from proxyd.learning import (
    DIRECT,
    STALL_MAX_BYTES,
    DnsPoisonDetector,
    DomainState,
    Fingerprints,
    GateState,
    LearningTable,
    Reason,
    StateFormatError,
    Stats,
    Strength,
    classify_first_response,
    registrable_domain,
)
from proxyd.outbound import Connection, DirectDialer, spawn
from proxyd.resolver import Resolver
from proxyd.routing._retest_probes import probe_http, probe_tls, probe_tls_transfer
from proxyd.routing._statefile import (
    SaveScheduler,
    StateLoadError,
    StateSaveError,
    load_state,
    quarantine_state,
    save_state,
)

log = logging.getLogger("proxyd.learning")

STATE_FILE = "routes.json"
# Racing starts after a few direct round trips; before any measurement assume a slow link.
INITIAL_RTT = 0.25
RACE_RTTS = 4.0
RACE_CEILING = 2.0
# A frozen server's ACKs are dropped with its data; a live one acknowledges in one RTT.
FIN_ACK_RTTS = 6.0
FIN_ACK_MIN = 0.3
FIN_ACK_MAX = 2.0
DESYNC_BROKEN_KEPT = 4096
_MID_TRANSFER = frozenset({Reason.STALL_AFTER_DATA, Reason.CUT_AFTER_DATA})
_BLOCK_PAGES = frozenset({Reason.BLOCKPAGE_REDIRECT, Reason.BLOCKPAGE_FINGERPRINT, Reason.HTTP_451})


class LearnedRoutes:
    def __init__(
        self,
        config: LearningConfig,
        state_dir: Path,
        *,
        connect_timeout: float,
        clock: Callable[[], float] = time.time,
        stats: Stats | None = None,
    ) -> None:
        self.config = config
        self.stats = stats if stats is not None else Stats()
        self.path = state_dir / STATE_FILE
        self._clock = clock
        self._connect_timeout = connect_timeout
        self.table = _table_for(config)
        self.poison = DnsPoisonDetector(config.blockpage_networks)
        self.fingerprints = Fingerprints.compile(config.blockpage_fingerprints)
        self._scheduler = SaveScheduler(debounce=config.save_debounce)
        self._saved_generation = 0
        self._save_timer: asyncio.TimerHandle | None = None
        self._retest_task: asyncio.Task[None] | None = None
        self._retest_wakeup = asyncio.Event()
        self._in_flight: set[str] = set()
        self._srtt = INITIAL_RTT
        self._direct: DirectDialer | None = None  # for canaries; set by start_retests
        self._gate_note: str | None = None
        self._desync_broken: OrderedDict[str, frozenset[str]] = OrderedDict()
        self.save_failed: str | None = None
        self.on_saved: Callable[[bool], None] | None = None  # told every save's outcome
        self.resolver: Resolver | None = None  # told which direct addresses served block pages

    # -- configuration -------------------------------------------------------------------

    def reconfigure(self, config: LearningConfig) -> None:
        """Apply new learning settings to future decisions; the learned entries stay."""
        data = self.table.to_json()
        self.table = _table_for(config)
        self.table.from_json(data)
        self.config = config
        self.poison = DnsPoisonDetector(config.blockpage_networks)
        self.fingerprints = Fingerprints.compile(config.blockpage_fingerprints)
        self._retest_wakeup.set()

    @property
    def now(self) -> float:
        return self._clock()

    @property
    def race_after(self) -> float:
        if self.config.race_after is not None:
            return self.config.race_after
        return min(max(RACE_RTTS * self._srtt, self.config.race_min), RACE_CEILING)

    def observe_direct_rtt(self, seconds: float) -> None:
        self._srtt += (seconds - self._srtt) / 8  # RFC 6298's smoothing

    # -- evidence -----------------------------------------------------------------------

    def lookup(self, host: str) -> DomainState | None:
        return self.table.lookup(host, self.now)

    def direct_worked(self, host: str) -> None:
        gate = self.table.gate_state
        if gate is GateState.PAUSED:
            log.warning("learning resumed: %s works direct, the network is back", host)
            self._gate_note = f"learning resumed at {_utc(self.now)}: {host} worked direct"
        released = self.table.record_direct_success(host, self.now)
        if gate is GateState.CHECKING:
            self._check_settled(True, f"{host} worked direct meanwhile", released)

    def direct_failed(self, host: str, reason: Reason) -> None:
        if reason.strength is not Strength.NONE:
            self.stats.detection(reason)
        before = self.table.gate_state
        self.table.record_failure(host, DIRECT, reason, self.now)
        after = self.table.gate_state
        if after is GateState.PAUSED and before is not GateState.PAUSED:
            self.stats.outage_check("no_canary")
            self._gate_note = (
                f"learning paused at {_utc(self.now)}: many unrelated domains failed direct "
                "at once and no canary was known"
            )
            log.warning(
                "learning paused: direct connections to many unrelated domains fail at once "
                "(latest %s: %s) and no canary is known; the network looks down, not censored",
                host,
                reason,
            )
        canary = self.table.canary_wanted()
        if canary is not None:
            self._gate_note = f"outage check since {_utc(self.now)}: asking the canary {canary}"
            log.info(
                "outage check: direct connections to many unrelated domains fail at once "
                "(latest %s: %s); asking the canary %s direct before pausing learning",
                host,
                reason,
                canary,
            )
            spawn(self._ask_canary(canary))
        self._changed()

    async def _ask_canary(self, canary: str) -> None:
        """Probe ``canary`` direct: any answer from its far end (even a refusal) means the
        uplink works, so the failures were censorship."""
        ok = False
        if self._direct is not None:
            try:
                conn = await self._direct.dial(canary, 443, timeout=self._connect_timeout)
            except ConnectionRefused:
                ok = True
            except DialError:
                ok = False
            else:
                conn.sock.close()
                ok = True
        if self.table.gate_state is not GateState.CHECKING:
            return  # a direct success settled it meanwhile
        released = self.table.canary_answered(ok, self.now)
        self._check_settled(
            ok, f"the canary {canary} {'answered' if ok else 'failed too'}", released
        )

    def _check_settled(self, ok: bool, how: str, released: list[DomainState]) -> None:
        self.stats.outage_check("censorship" if ok else "outage")
        verdict = "the failures were censorship, learning went on" if ok else "learning paused"
        self._gate_note = f"outage check at {_utc(self.now)}: {how}; {verdict}"
        if ok:
            log.warning(
                "outage check: %s; the failures are censorship, learning goes on "
                "(%d held confirmations learned)",
                how,
                len(released),
            )
            for entry in released:
                self._log_learned(entry)
        else:
            log.warning(
                "learning paused: %s; the network looks down, not censored (outage check)", how
            )
        self._changed()

    def direct_stalled(self, host: str, server_bytes: int) -> None:
        """A direct tunnel to ``host`` froze after ``server_bytes`` (``detect.is_stall``)
        and the server never acknowledged our FIN (``firstvisit._freeze``)."""
        self.stats.detection(Reason.STALL_AFTER_DATA)
        if self.table.record_stall(host, self.now):
            log.info(
                "%s: a direct tunnel froze after %d bytes of server data; the next ones go "
                "through the upstreams to confirm the block",
                host,
                server_bytes,
            )

    def direct_cut(self, host: str, server_bytes: int, what: str) -> None:
        """A direct connection to ``host`` was cut after ``server_bytes`` of server data
        while the client still read (``detect.is_cut``); ``what`` says how, for the log
        ("tunnel was reset")."""
        self.stats.detection(Reason.CUT_AFTER_DATA)
        if self.table.record_cut(host, server_bytes, self.now):
            log.info(
                "%s: a direct %s after %d bytes of server data; the next tunnels go "
                "through the upstreams to confirm the block",
                host,
                what,
                server_bytes,
            )

    def control_carried(self, host: str, route: str, server_bytes: int) -> None:
        """An upstream tunnel of a suspected domain carried ``server_bytes``: more than a
        freeze or the recorded cut let through confirms the block."""
        if route == DIRECT:
            return
        cut = self.table.cut_point(host, self.now)
        if cut is not None and server_bytes > cut:
            self.confirm(host, Reason.CUT_AFTER_DATA, route)
        elif server_bytes > STALL_MAX_BYTES and self.stall_suspected(host):
            self.confirm(host, Reason.STALL_AFTER_DATA, route)

    def cut_suspected(self, host: str) -> bool:
        return self.table.cut_point(host, self.now) is not None

    @property
    def fin_ack_wait(self) -> float:
        """How long a healthy server may take to acknowledge our FIN: a few round trips."""
        return min(max(FIN_ACK_RTTS * self._srtt, FIN_ACK_MIN), FIN_ACK_MAX)

    def desync_broken(self, host: str) -> frozenset[str]:
        """Desync routes that broke the handshake with ``host``'s domain (in memory)."""
        return self._desync_broken.get(registrable_domain(host), frozenset())

    def mark_desync_broken(self, host: str, route: str) -> None:
        """The breakage guard: ``route`` got a TLS alert or an HTTP 400 right away."""
        domain = registrable_domain(host)
        broken = self._desync_broken.pop(domain, frozenset()) | {route}
        self._desync_broken[domain] = broken
        while len(self._desync_broken) > DESYNC_BROKEN_KEPT:
            self._desync_broken.popitem(last=False)
        self.stats.detection(Reason.DESYNC_REJECTED)
        log.info("%s: %s broke the handshake; not tried there again", domain, route)

    def gate_summary(self) -> str | None:
        """What the outage gate last did, for ``proxyd why``; None if it never acted."""
        if self._gate_note is None:
            return None
        return f"learning {self.table.gate_state.value}; {self._gate_note}"

    def stall_suspected(self, host: str) -> bool:
        return self.table.stall_suspected(host, self.now)

    def confirm(self, host: str, reason: Reason, working_route: str) -> DomainState | None:
        """The control rule: ``working_route`` succeeded for the request direct failed."""
        entry = self.table.confirm_blocked(host, reason, working_route, self.now)
        if entry is not None:
            self._log_learned(entry)
            self._changed()
        elif self.table.gate_state is GateState.CHECKING:
            log.debug("%s: confirmation held until the outage check answers", host)
        return entry

    def _log_learned(self, entry: DomainState) -> None:
        reason = entry.evidence[-1].reason if entry.evidence else "listed"
        log.info("learned %s blocked: %s on direct; %s works", entry.key, reason, entry.route)

    def adopt_list_entry(self, host: str, route: str) -> DomainState | None:
        entry = self.table.adopt_list_entry(host, route, self.now)
        if entry is None:
            return self.lookup(host)
        log.info(
            "%s is listed blocked: routed via %s until a re-test says otherwise", entry.key, route
        )
        self._changed()
        return entry

    def classify(
        self,
        client_bytes: bytes,
        server_bytes: bytes,
        *,
        host: str = "",
        conn: Connection | None = None,
    ) -> Reason | None:
        """``host`` and ``conn``: a block page served on a direct connection tells the
        resolver which address served it (its answer may have been forged)."""
        reason = classify_first_response(client_bytes, server_bytes, fingerprints=self.fingerprints)
        if (
            reason in _BLOCK_PAGES
            and self.resolver is not None
            and conn is not None
            and conn.route == DIRECT
            and conn.peer is not None
        ):
            self.resolver.note_block_page(host, conn.peer[0])
        return reason

    def check_resolved(self, host: str, addresses: tuple[str, ...]) -> Reason | None:
        return self.poison.check(host, addresses, now=self.now)

    # -- administration -----------------------------------------------------------------

    def force(self, key: str, route: str) -> DomainState:
        entry = self.table.force(key, route, self.now)
        self._changed()
        return entry

    def forget(self, key: str) -> bool:
        removed = self.table.forget(key)
        self._changed()
        return removed

    def seed(self, key: str, route: str) -> DomainState | None:
        entry = self.table.seed(key, route, self.now)
        if entry is not None:
            log.info("%s imported blocked: routed via %s until a re-test", key, route)
            self._changed()
        return entry

    # -- persistence ----------------------------------------------------------------------

    def load(self) -> None:
        try:
            data = load_state(self.path)
        except StateLoadError as err:
            log.warning("cannot read learned routes, starting empty in memory: %s", err)
            return
        if data is None:
            return
        try:
            self.table.from_json(data)
        except StateFormatError as err:
            moved = quarantine_state(self.path)
            log.warning("state file %s is not usable (%s); moved to %s", self.path, err, moved)
            return
        self._saved_generation = self.table.generation
        log.info("loaded %d learned routes from %s", len(self.table.snapshot()), self.path)

    def _changed(self) -> None:
        if self.table.generation == self._saved_generation:
            return
        now = time.monotonic()
        self._scheduler.changed(now)
        self._arm_save_timer()
        self._retest_wakeup.set()

    def _arm_save_timer(self) -> None:
        deadline = self._scheduler.deadline()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        if self._save_timer is not None:
            self._save_timer.cancel()
        delay = max(deadline - time.monotonic(), 0.0)
        self._save_timer = loop.call_later(delay, self._save_due)

    def _save_due(self) -> None:
        self._save_timer = None
        if self._scheduler.due(time.monotonic()):
            spawn(self.save())
        else:
            self._arm_save_timer()

    async def save(self) -> bool:
        """Write the table atomically (off the loop: fsync on flash can take a while)."""
        generation = self.table.generation
        captured = time.monotonic()
        data = self.table.to_json()
        try:
            await asyncio.get_running_loop().run_in_executor(None, save_state, self.path, data)
        except StateSaveError as err:
            if self.save_failed is None:
                log.warning("cannot save learned routes (kept in memory): %s", err)
            self.save_failed = str(err)
            self._report_save(ok=False)
            self._scheduler.failed(time.monotonic())
            self._arm_save_timer()
            return False
        if self.save_failed is not None:
            log.info("learned routes saved again to %s", self.path)
        self.save_failed = None
        self._report_save(ok=True)
        self._saved_generation = generation
        self._scheduler.saved(captured)
        log.debug("state saved (%d entries)", len(data.get("entries", ())))
        if self._scheduler.deadline() is not None:
            self._arm_save_timer()
        return True

    def _report_save(self, *, ok: bool) -> None:
        if self.on_saved is not None:
            self.on_saved(ok)

    async def close(self) -> None:
        if self._retest_task is not None:
            self._retest_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retest_task
        if self._save_timer is not None:
            self._save_timer.cancel()
        if self.table.generation != self._saved_generation:
            await self.save()

    # -- re-tests -----------------------------------------------------------------------

    def start_retests(self, direct: DirectDialer) -> None:
        self._direct = direct
        self._retest_task = asyncio.ensure_future(self._retest_loop(direct))

    async def _retest_loop(self, direct: DirectDialer) -> None:
        while True:
            now = self.now
            for key in self.table.due_retests(now):
                if key not in self._in_flight:
                    self._in_flight.add(key)
                    spawn(self._retest(direct, key))
            wake_at = self.table.next_timer(now)
            self._retest_wakeup.clear()
            timeout = None if wake_at is None else max(wake_at - self.now, 0.05)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._retest_wakeup.wait()

    async def _retest(self, direct: DirectDialer, key: str) -> None:
        try:
            entry = self.table.lookup(key, self.now)
            if entry is None:
                return
            host = entry.probe_host
            timeout = self._connect_timeout
            # A handshake passes a freeze or a cut: only a transfer past it tells.
            froze = any(e.reason in _MID_TRANSFER for e in entry.evidence)
            results = await asyncio.gather(
                probe_tls_transfer(direct, host, timeout, self.config.stall_after)
                if froze
                else probe_tls(direct, host, timeout, self.classify),
                probe_http(direct, host, timeout, self.classify),
            )
            failure = next((r for r in results if r is not None), None)
            self.stats.retest_done("ok" if failure is None else "blocked")
            left = self.table.record_retest(key, failure is None, self.now)
            if failure is None and (left is None or left.state.value == DIRECT):
                log.info("retest %s: direct works again", key)
            else:
                log.debug("retest %s: still blocked (%s)", key, failure)
            self._changed()
        finally:
            self._in_flight.discard(key)
            self._retest_wakeup.set()


def _table_for(config: LearningConfig) -> LearningTable:
    return LearningTable(
        retest_initial=config.retest_initial,
        retest_max=config.retest_max,
        retest_successes=config.retest_successes,
        weak_threshold=config.weak_threshold,
        weak_window=config.weak_window,
        canaries=config.canaries,
    )


def _utc(timestamp: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(timestamp))
