"""The upstreams in priority order, with their health: which to try, and what to say
when none works.

Public API::

    UpstreamSet(configs, *, clock=time.time, monotonic=time.monotonic)
        dialers() get(name) tor report_failure(name, err) report_success(name, seconds)
        status() -> [UpstreamStatus]  unavailable_error(host, port)
        await run_health_checks()     reconfigure(configs)
    UpstreamStatus    one upstream as the admin API and status page show it

Health (policy in ``proxyd.outbound._upstream_health``). ``run_health_checks`` is a background task
(cancel it to stop) that probes each upstream every ``health_interval`` while in use or
down: SOCKS5 greeting plus authentication, SOCKS4 a request for 0.0.0.0:0 that any server
refuses at once, HTTP ``OPTIONS *`` (any status but 407 proves life). It logs one line per
transition on the "proxyd.upstream" logger: "upstream NAME down: REASON" (warning) and
"upstream NAME up (X ms)" (info). ``report_failure`` (the router saw ``UpstreamError``)
marks the upstream down at once and starts a check right away; ``report_success`` marks
it in use (and up).

``dialers()`` lists upstreams not known to be down, in priority order; when all are
known down it lists all of them, so a stale "down" never blocks a first try. Unchecked
upstreams count as usable. ``reconfigure`` (SIGHUP) keeps the dialer and health of every
upstream whose config is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from proxyd.config import UpstreamConfig
from proxyd.errors import DialError, UpstreamUnavailable
from proxyd.outbound._upstream_health import Transition, UpstreamHealth
from proxyd.outbound._upstreams import UpstreamDialer

log = logging.getLogger("proxyd.upstream")

HEALTH_CHECK_TIMEOUT = 5.0


@dataclass(frozen=True)
class UpstreamStatus:
    name: str
    url_redacted: str
    up: bool
    latency: float | None  # seconds the last successful handshake check took
    last_check: float | None  # wall clock
    last_error: str | None
    tor: bool


@dataclass(eq=False)
class _Entry:
    dialer: UpstreamDialer
    health: UpstreamHealth


class UpstreamSet:
    def __init__(
        self,
        configs: Sequence[UpstreamConfig],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # Schedules run on the monotonic clock: a router without an RTC jumps its wall
        # clock at boot, which must not stall the checks. ``clock`` only dates status.
        self._clock = clock
        self._monotonic = monotonic
        self._entries = {config.name: self._new_entry(config) for config in configs}
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    def _new_entry(self, config: UpstreamConfig) -> _Entry:
        health = UpstreamHealth(interval=config.health_interval, now=self._monotonic())
        return _Entry(UpstreamDialer(config), health)

    def dialers(self) -> list[UpstreamDialer]:
        usable = [e.dialer for e in self._entries.values() if e.health.up is not False]
        return usable or [e.dialer for e in self._entries.values()]

    def get(self, name: str) -> UpstreamDialer | None:
        entry = self._entries.get(name)
        return None if entry is None else entry.dialer

    @property
    def tor(self) -> UpstreamDialer | None:
        return next((e.dialer for e in self._entries.values() if e.dialer.config.tor), None)

    def report_failure(self, name: str, err: DialError) -> None:
        entry = self._entries.get(name)
        if entry is None:
            return
        self._log(name, entry.health.dial_failed(self._monotonic(), _short_reason(entry, err)))
        self._wake.set()

    def report_success(self, name: str, seconds: float) -> None:
        entry = self._entries.get(name)
        if entry is not None:
            self._log(name, entry.health.dial_succeeded(self._monotonic(), seconds))

    def status(self) -> list[UpstreamStatus]:
        offset = self._clock() - self._monotonic()
        return [
            UpstreamStatus(
                name=name,
                url_redacted=_redacted_url(entry.dialer.config),
                up=entry.health.up is True,
                latency=entry.health.latency,
                last_check=None
                if entry.health.last_check is None
                else entry.health.last_check + offset,
                last_error=entry.health.last_error,
                tor=entry.dialer.config.tor,
            )
            for name, entry in self._entries.items()
        ]

    def unavailable_error(self, host: str, port: int) -> UpstreamUnavailable:
        if not self._entries:
            return UpstreamUnavailable(host, port, "no upstream configured")
        parts = []
        for entry in self._entries.values():
            health = entry.health
            state = (
                health.last_error or {None: "not checked yet", True: "up", False: "down"}[health.up]
            )
            where = entry.dialer.label.removeprefix("upstream ")
            parts.append(f"{where}: {state}")
        return UpstreamUnavailable(host, port, "no upstream available: " + "; ".join(parts))

    async def run_health_checks(self) -> None:
        try:
            while True:
                self._wake.clear()
                now = self._monotonic()
                for name, entry in self._entries.items():
                    if name not in self._checks and entry.health.check_due(now):
                        self._checks[name] = asyncio.create_task(self._check(name, entry))
                wakeups = [
                    entry.health.next_wakeup(now)
                    for name, entry in self._entries.items()
                    if name not in self._checks
                ]
                delay = max(0.01, min(wakeups) - now) if wakeups else None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            checks = list(self._checks.values())
            for task in checks:
                task.cancel()
            await asyncio.gather(*checks, return_exceptions=True)

    def reconfigure(self, configs: Sequence[UpstreamConfig]) -> None:
        old = self._entries
        new: dict[str, _Entry] = {}
        for config in configs:
            kept = old.get(config.name)
            new[config.name] = (
                kept if kept and kept.dialer.config == config else self._new_entry(config)
            )
        for name, task in self._checks.items():
            if new.get(name) is not old.get(name):
                task.cancel()
        self._entries = new
        self._wake.set()

    async def _check(self, name: str, entry: _Entry) -> None:
        try:
            try:
                latency = await entry.dialer.probe(timeout=HEALTH_CHECK_TIMEOUT)
            except DialError as err:
                reason = _short_reason(entry, err)
                transition = entry.health.check_failed(self._monotonic(), reason)
            else:
                transition = entry.health.checked(self._monotonic(), latency=latency)
            if self._entries.get(name) is entry:
                self._log(name, transition)
        except Exception:
            log.exception("internal error checking upstream %s", name)
        finally:
            if self._checks.get(name) is asyncio.current_task():
                del self._checks[name]
            self._wake.set()

    @staticmethod
    def _log(name: str, transition: Transition | None) -> None:
        if transition is None:
            return
        if transition.up:
            ms = (transition.latency or 0.0) * 1000
            log.info("upstream %s up (%.0f ms)", name, ms)
        else:
            log.warning("upstream %s down: %s", name, transition.reason)


def _short_reason(entry: _Entry, err: DialError) -> str:
    return err.detail.removeprefix(entry.dialer.label + ": ") or err.reason.replace("_", " ")


def _redacted_url(config: UpstreamConfig) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    userinfo = ""
    if config.username is not None:
        userinfo = config.username + (":***" if config.password else "") + "@"
    return f"{config.scheme}://{userinfo}{host}:{config.port}"
