"""The resolver: the system's answer judged, and an honest source for when it lies.

``Resolver(config)``:

- ``judge_system_answer(host, addresses)``: runs the detectors (``_poison``) on the
  system resolver's answer; a signal marks the host *suspect* and is returned. Cheap: it
  runs on every direct dial.
- ``note_unreachable(host, addresses)`` / ``note_block_page(host, address)``: a direct
  connection to the system's answer failed, or that address served a block page; both
  mark the host suspect and count as block evidence for the shared-address detector.
- ``suspect(host)``: the latest signal and the system answer it was about, for a while.
- ``honest(host)``: addresses from the DoH providers (cache first, then each provider in
  order, a failed one skipped for ``PROVIDER_BACKOFF``); raises ``DnsLookupError``.
- ``lookup(name, qtype)``: one record type from the honest source, for the LAN listener.
- Counters read by ``/metrics``: resolutions by source and result, detections by signal,
  cache hits, provider health. No names anywhere in them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from proxyd.config import DnsConfig
from proxyd.errors import DnsLookupError
from proxyd.learning import registrable_domain
from proxyd.resolver._cache import AnswerCache
from proxyd.resolver._doh import Connector, DohError, DohProvider
from proxyd.resolver._poison import (
    DEFAULT_BOGONS,
    IPNetwork,
    Signal,
    bogon_for_public_name,
    in_poison_set,
    served_block_page,
    shared_by_blocked_names,
)
from proxyd.resolver._wire import AAAA, NOERROR, NXDOMAIN, A

log = logging.getLogger("proxyd.dns")

SUSPECT_SECONDS = 60.0  # a direct failure explains the next attempts for this long
PROVIDER_BACKOFF = 30.0
MAX_TRACKED = 4096


class Resolver:
    def __init__(
        self,
        config: DnsConfig,
        *,
        extra_bogons: tuple[IPNetwork, ...] = (),
        connectors: Mapping[str, Connector] | None = None,
        clock: Callable[[], float] = time.monotonic,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        connectors = connectors or {}
        # Loading the system's CA store costs memory: only with a provider to verify.
        if tls is None and config.doh:
            tls = ssl.create_default_context()
        self._tls = tls
        self.providers = [
            DohProvider(p, None if p.via == "direct" else connectors.get(p.via), tls)
            for p in config.doh
            if tls is not None
        ]
        self.cache = AnswerCache(
            min_ttl=config.cache_min_ttl, max_ttl=config.cache_max_ttl, size=config.cache_size
        )
        self._poison = frozenset(config.poison_addresses + config.poison_from_csv)
        bogons = DEFAULT_BOGONS if config.bogon_networks is None else config.bogon_networks
        self._bogons = bogons + extra_bogons
        self._block_pages: OrderedDict[str, None] = OrderedDict()
        self._blocked_by_address: OrderedDict[str, set[str]] = OrderedDict()
        self._suspects: OrderedDict[str, tuple[Signal, tuple[str, ...], float]] = OrderedDict()
        self._down_until: dict[str, float] = {}
        self._in_flight: dict[tuple[str, int], asyncio.Future[tuple[tuple[str, ...], float]]] = {}
        self.resolutions: Counter[tuple[str, str]] = Counter()  # (source, result)
        self.detections: Counter[str] = Counter()  # signal label
        self.cache_hits = 0
        self.system_answers = 0  # plain ints: judge_system_answer runs on every direct dial
        self.system_suspect = 0

    @property
    def has_honest_source(self) -> bool:
        return bool(self.providers)

    def provider_up(self) -> dict[str, bool]:
        now = self._clock()
        return {p.name: self._down_until.get(p.name, 0.0) <= now for p in self.providers}

    # -- the system's answer ------------------------------------------------------------

    def judge_system_answer(self, host: str, addresses: tuple[str, ...]) -> Signal | None:
        self.system_answers += 1
        signal = (
            in_poison_set(addresses, self._poison)
            or bogon_for_public_name(host, addresses, self._bogons)
            or (served_block_page(addresses, self._block_pages) if self._block_pages else None)
            or (
                shared_by_blocked_names(
                    registrable_domain(host),
                    addresses,
                    self._blocked_by_address,
                    self.config.shared_address_threshold,
                )
                if self._blocked_by_address
                else None
            )
        )
        if signal is not None:
            self.system_suspect += 1
            self.detections[signal.value] += 1
            self._suspect(host, signal, addresses)
        return signal

    def note_unreachable(self, host: str, addresses: tuple[str, ...]) -> None:
        self._suspect(host, Signal.CONNECT_FAILED, addresses)
        self._note_blocked(host, addresses)

    def note_block_page(self, host: str, address: str) -> None:
        self._block_pages[address] = None
        self._block_pages.move_to_end(address)
        _trim(self._block_pages)
        self._suspect(host, Signal.BLOCK_PAGE_ADDRESS, (address,))
        self._note_blocked(host, (address,))

    def suspect(self, host: str) -> tuple[Signal, tuple[str, ...]] | None:
        entry = self._suspects.get(host)
        if entry is None:
            return None
        signal, addresses, at = entry
        if self._clock() - at > SUSPECT_SECONDS:
            del self._suspects[host]
            return None
        return signal, addresses

    def note_disagreement(self) -> None:
        self.detections[Signal.DISAGREEMENT.value] += 1

    def _suspect(self, host: str, signal: Signal, addresses: tuple[str, ...]) -> None:
        self._suspects[host] = (signal, addresses, self._clock())
        self._suspects.move_to_end(host)
        _trim(self._suspects)

    def _note_blocked(self, host: str, addresses: tuple[str, ...]) -> None:
        domain = registrable_domain(host)
        for address in addresses:
            domains = self._blocked_by_address.pop(address, set())
            domains.add(domain)
            self._blocked_by_address[address] = domains
        _trim(self._blocked_by_address)

    # -- the honest source --------------------------------------------------------------

    async def honest(self, host: str) -> tuple[str, ...]:
        """IPv4 then IPv6 addresses of ``host`` from the honest source."""
        # In turn, not together: a provider's connection carries one query at a time
        # anyway, and AAAA then starts with what A found out about dead providers.
        addresses: tuple[str, ...] = ()
        error: DnsLookupError | None = None
        for qtype in (A, AAAA):
            try:
                addresses += (await self.lookup(host, qtype))[0]
            except DnsLookupError as exc:
                error = exc
        if addresses:
            return addresses
        if error is not None:
            raise error
        raise DnsLookupError(host, 0, f"the DoH providers know no address for {host}")

    async def lookup(self, name: str, qtype: int) -> tuple[tuple[str, ...], float]:
        """``(addresses, ttl left)``; an empty tuple is a name without such records."""
        now = self._clock()
        cached = self.cache.get(name, qtype, now)
        if cached is not None:
            self.cache_hits += 1
            return cached
        key = (name, qtype)
        pending = self._in_flight.get(key)
        if pending is not None:  # one query per name, however many connections wait on it
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[tuple[str, ...], float]]
        future = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result = await self._ask_providers(name, qtype)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters, if any, re-raise it
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._in_flight[key]

    async def _ask_providers(self, name: str, qtype: int) -> tuple[tuple[str, ...], float]:
        if not self.providers:
            raise DnsLookupError(name, 0, "no DoH provider is configured")
        errors = []
        untried = list(self.providers)
        while untried:
            # Providers that failed lately go last, still asked when nothing else answers.
            # Chosen afresh each time: a concurrent query (A beside AAAA) may just have
            # found one down, and must not make this one wait out the same timeout.
            now = self._clock()
            provider = next(
                (p for p in untried if self._down_until.get(p.name, 0.0) <= now), untried[0]
            )
            untried.remove(provider)
            try:
                answer = await provider.query(name, qtype, self.config.timeout)
            except DohError as exc:
                self.resolutions[("doh", "error")] += 1
                if self._down_until.get(provider.name, 0.0) <= now:
                    log.warning("DoH provider %s failed: %s", provider.name, exc)
                self._down_until[provider.name] = self._clock() + PROVIDER_BACKOFF
                errors.append(str(exc))
                continue
            self._down_until.pop(provider.name, None)
            if answer.rcode not in (NOERROR, NXDOMAIN):
                self.resolutions[("doh", "error")] += 1
                errors.append(f"{provider.name}: rcode {answer.rcode}")
                continue
            self.resolutions[("doh", "ok" if answer.addresses else "no_address")] += 1
            self.cache.put(name, qtype, answer.addresses, answer.ttl, self._clock())
            left = self.cache.get(name, qtype, self._clock())
            return answer.addresses, left[1] if left is not None else 0.0
        raise DnsLookupError(name, 0, "no DoH provider answered: " + "; ".join(errors))

    def close(self) -> None:
        for provider in self.providers:
            provider.close()


def _trim(table: OrderedDict[str, Any]) -> None:
    while len(table) > MAX_TRACKED:
        table.popitem(last=False)
