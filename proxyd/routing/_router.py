"""Route decision for one destination: which routes to try, in what order, and why.

Precedence (DESIGN §4): user rules > learned state > default (``auto``: direct first,
upstreams as the transparent fallback). Every plan carries a one-line explanation, so
``/api/explain`` and logs can say which rule or which learned evidence chose it.

Mirrors (``[[mirror]]``) only ever carry plain HTTP (``plan(..., plain_http=True)``):
``when = "always"`` puts the mirror before the usual routes; ``when = "blocked"`` puts it
right after direct on a first visit (before any upstream) and first once the domain is
learned blocked, and leaves a domain that works direct alone. A tunnel (CONNECT, SOCKS)
to a host whose mirror is in use takes the upstreams, and with none configured is refused
with ``MirrorHttpsUnavailable``, whose text says why.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from proxyd.config import Config, RuleConfig
from proxyd.errors import DialError, Forbidden, UpstreamUnavailable
from proxyd.learning import (
    DIRECT,
    Reason,
    Source,
    State,
    is_local_destination,
    normalise_host,
    parse_ip,
    registrable_domain,
)
from proxyd.outbound import DOH_ROUTE, DesyncDialer, Dialer, DirectDialer
from proxyd.protocol import desync

if TYPE_CHECKING:
    from proxyd.config import MirrorConfig
    from proxyd.outbound import UpstreamSet
    from proxyd.routing._learned import LearnedRoutes

log = logging.getLogger("proxyd.routing")


class MirrorRoute(Dialer, Protocol):
    """What the router needs of one ``[[mirror]]`` route (``mirror.MirrorRoute``): the
    mirror package sits above routing, so routing names it by shape, not by import."""

    label: str

    @property
    def config(self) -> MirrorConfig: ...


class MirrorSet(Protocol):
    """What the router needs of ``mirror.MirrorSet``."""

    def covering(self, host: str) -> MirrorRoute | None: ...

    def get(self, name: str) -> MirrorRoute | None: ...


REJECT = "reject"
AUTO = "auto"


class MirrorHttpsUnavailable(UpstreamUnavailable):
    """A tunnel to a mirrored host with no upstream to carry it."""


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Routes to try in order. ``learn``: failures of the first are evidence and the rest
    are its transparent fallback (the first visit); otherwise the rest are failover only.
    ``stall_control``: direct tunnels froze or were cut after some data; an upstream
    tunnel that carries more than the freeze or the cut let through confirms the block."""

    routes: tuple[Dialer, ...]
    why: str
    learn: bool = False
    isolation: str | None = None
    stall_control: bool = False

    @property
    def first(self) -> Dialer:
        return self.routes[0]


def rule_matches(rule: RuleConfig, host: str, port: int) -> bool:
    if rule.port is not None and rule.port != port:
        return False
    if rule.host is not None and rule.host != host:
        return False
    if rule.domain is not None and host != rule.domain and not host.endswith("." + rule.domain):
        return False
    if rule.regex is not None and rule.regex.fullmatch(host) is None:
        return False
    if rule.cidr is not None:
        ip = parse_ip(host)
        if ip is None or ip.version != rule.cidr.version or ip not in rule.cidr:
            return False
    return True


class Router:
    def __init__(
        self,
        config: Config,
        direct: DirectDialer,
        upstreams: UpstreamSet,
        learned: LearnedRoutes | None,
        mirrors: MirrorSet | None = None,
        honest: tuple[Dialer, Dialer] | None = None,
    ) -> None:
        """``honest``: route ``direct+doh`` as (first-visit gated form, learned form),
        when a DoH provider is configured."""
        self.config = config
        self.direct = direct
        self.honest_first: tuple[Dialer, ...] = () if honest is None else (honest[0],)
        self.honest = None if honest is None else honest[1]
        self.desync = {s.route: DesyncDialer(direct, s) for s in desync.Strategy}
        self.upstreams = upstreams
        self.learned = learned
        self.mirrors = mirrors
        self._direct_only = RoutePlan((direct,), "local destination: always direct")
        self._refusals_logged: set[str] = set()

    def plan(self, host: str, port: int, *, plain_http: bool = False) -> RoutePlan:
        """Raises ``Forbidden`` for rejected destinations and ``UpstreamUnavailable`` when
        a destination may only use upstreams and none is configured. ``plain_http``: the
        request is an absolute-form HTTP request, which a mirror can carry."""
        host = normalise_host(host)
        for index, rule in enumerate(self.config.rules):
            if rule_matches(rule, host, port):
                why = f"rule {index + 1} ({_describe(rule)})"
                if rule.route == AUTO:
                    return self._learned_or_default(host, port, why + " -> auto; ", plain_http)
                mirror = self.mirrors.get(rule.route) if self.mirrors is not None else None
                if mirror is not None:
                    return self._mirror_first(host, port, mirror, plain_http, why)
                return self._fixed(host, port, rule.route, why)
        if host.endswith(".onion"):
            tor = self.upstreams.tor
            if tor is None:
                raise Forbidden(host, port, "no upstream with tor = true for .onion addresses")
            return RoutePlan((tor,), ".onion: the tor upstream", isolation=self._isolation(host))
        if is_local_destination(host):
            return self._direct_only
        return self._learned_or_default(host, port, "", plain_http)

    def _fixed(self, host: str, port: int, route: str, why: str) -> RoutePlan:
        if route == REJECT:
            raise Forbidden(host, port, f"rejected by {why}")
        if route == DIRECT:
            return RoutePlan((self.direct,), f"{why} -> direct")
        strategy = desync.strategy_of(route)
        if strategy is not None:
            return RoutePlan((self.desync[strategy.route],), f"{why} -> {strategy.route}")
        upstream = self.upstreams.get(route)
        if upstream is None:
            raise self.upstreams.unavailable_error(host, port)
        return RoutePlan((upstream,), f"{why} -> {route}", isolation=self._isolation(host))

    def _learned_or_default(self, host: str, port: int, prefix: str, plain_http: bool) -> RoutePlan:
        upstreams = tuple(self.upstreams.dialers())
        mirror = self.mirrors.covering(host) if self.mirrors is not None else None
        always = mirror if mirror is not None and mirror.config.when == "always" else None
        learned = self.learned
        if learned is None or not learned.config.enabled:
            listed = self._listed(host)
            if listed is not None:
                why = prefix + listed[1]
                return self._via_upstreams(host, port, listed[0], why, mirror, plain_http)
            plan = RoutePlan((self.direct,), prefix + "learning off: direct")
            return self._unless_always(host, port, always, plain_http, plan)
        entry = learned.lookup(host)
        if entry is None:
            listed = self._listed(host)
            if listed is not None:
                # Visited list entries join the learned table, so re-tests can overturn them.
                entry = learned.adopt_list_entry(host, listed[0] or _first_name(upstreams))
        overridable = entry is None or (
            entry.state is State.DIRECT and entry.source is not Source.FORCED
        )
        suspicion = None
        if overridable and upstreams and not plain_http:
            if learned.cut_suspected(host):
                suspicion = "were cut after some data (cut_after_data)"
            elif learned.stall_suspected(host):
                suspicion = "froze after some data"
        if suspicion is not None:
            return RoutePlan(
                (*upstreams, self.direct),
                f"{prefix}direct tunnels {suspicion}: upstreams first, to confirm",
                isolation=self._isolation(host),
                stall_control=True,
            )
        if entry is not None and entry.state is State.BLOCKED:
            evidence = ", ".join(sorted({e.reason.value for e in entry.evidence})) or entry.source
            why = f"{prefix}learned: {entry.key} blocked ({evidence}) since {_utc(entry.since)}"
            if entry.route == DOH_ROUTE and self.honest is not None:
                why += ": only its DNS is, so direct to the DoH answer, upstreams if that fails"
            elif any(e.reason is Reason.CUT_AFTER_DATA for e in entry.evidence):
                why += ": direct transfers were reset mid-way, and the upstream carried them whole"
            return self._via_upstreams(host, port, entry.route, why, mirror, plain_http)
        if entry is not None:
            plan = RoutePlan((self.direct,), f"{prefix}learned: {entry.key} works direct")
            return (
                plan if always is None else self._mirror_first(host, port, always, plain_http, plan)
            )
        desync = self._ladder(host, port, plain_http) if learned.config.desync else ()
        fallbacks = self.honest_first + desync + upstreams
        if always is not None:
            plan = RoutePlan(
                (self.direct, *fallbacks),
                prefix + "unknown",
                learn=True,
                isolation=self._isolation(host),
            )
            return self._mirror_first(host, port, always, plain_http, plan)
        if mirror is not None and plain_http:
            # The transparent retry tries the mirror before any upstream.
            return RoutePlan(
                (self.direct, *self.honest_first, *desync, mirror, *upstreams),
                prefix + f"unknown: direct first, then {mirror.name}, then upstreams",
                learn=True,
                isolation=self._isolation(host),
            )
        behind = "/".join(r.name for r in fallbacks) or "nothing"
        return RoutePlan(
            (self.direct, *fallbacks),
            f"{prefix}unknown: direct first, {behind} as fallback",
            learn=bool(fallbacks),
            isolation=self._isolation(host),
        )

    def _via_upstreams(
        self,
        host: str,
        port: int,
        preferred_name: str | None,
        why: str,
        mirror: MirrorRoute | None = None,
        plain_http: bool = False,
    ) -> RoutePlan:
        """The upstream that worked (or a list names) first, the others as failover;
        the domain's mirror, if any, before them."""
        upstreams: tuple[Dialer, ...] = tuple(self.upstreams.dialers())
        preferred: Dialer | None = None
        strategy = desync.strategy_of(preferred_name or "")
        if strategy is not None:
            preferred = self.desync[strategy.route]
            why += f"; {strategy.route} = {desync.DESCRIPTIONS[strategy]}"
        elif preferred_name == DOH_ROUTE:
            preferred = self.honest
        elif preferred_name:
            preferred = self.upstreams.get(preferred_name)
        ordered = ((preferred,) if preferred is not None else ()) + tuple(
            u for u in upstreams if u is not preferred
        )
        plan = RoutePlan(ordered, why, isolation=self._isolation(host))
        if mirror is not None:
            return self._mirror_first(host, port, mirror, plain_http, plan)
        if not ordered:
            raise UpstreamUnavailable(host, port, "blocked, and no upstream is configured")
        return plan

    def _ladder(self, host: str, port: int, plain_http: bool) -> tuple[Dialer, ...]:
        """The desync strategies worth trying for this destination, cheapest first,
        less those that broke the handshake with this domain."""
        ladder = desync.HTTP_LADDER if plain_http or port == 80 else desync.TLS_LADDER
        broken = self.learned.desync_broken(host) if self.learned is not None else frozenset()
        return tuple(self.desync[s.route] for s in ladder if s.route not in broken)

    def _listed(self, host: str) -> tuple[str | None, str] | None:
        """(the list's route, why) for the first imported list naming ``host``."""
        for block_list in self.config.lists:
            if block_list.domains.matches(host):
                return block_list.route, f"listed in {block_list.path} ({block_list.format})"
        return None

    def _unless_always(
        self, host: str, port: int, mirror: MirrorRoute | None, plain_http: bool, plan: RoutePlan
    ) -> RoutePlan:
        return plan if mirror is None else self._mirror_first(host, port, mirror, plain_http, plan)

    def _mirror_first(
        self,
        host: str,
        port: int,
        mirror: MirrorRoute,
        plain_http: bool,
        rest: RoutePlan | str,
    ) -> RoutePlan:
        """The mirror, then ``rest`` (a plan, or the reason and the upstreams) as its
        fallback; a tunnel cannot use the mirror and takes the upstreams instead."""
        if isinstance(rest, str):
            rest = RoutePlan(tuple(self.upstreams.dialers()), rest, isolation=self._isolation(host))
        if plain_http:
            why = f"{rest.why} -> {mirror.name} ({mirror.config.when})"
            return dataclasses.replace(rest, routes=(mirror, *rest.routes), why=why)
        upstreams = tuple(r for r in rest.routes if r is not self.direct) or tuple(
            self.upstreams.dialers()
        )
        if upstreams:
            why = f"{rest.why}; mirror {mirror.label} carries plain HTTP only: upstreams"
            return RoutePlan(upstreams, why, isolation=self._isolation(host))
        err = MirrorHttpsUnavailable(
            host,
            port,
            f"served by mirror {mirror.label}, which carries plain HTTP only (HTTPS cannot "
            "be rewritten without interception), and no upstream is configured",
        )
        if host not in self._refusals_logged and len(self._refusals_logged) < 1024:
            self._refusals_logged.add(host)
            log.warning("refusing tunnels to %s: %s", host, err.detail)
        raise err

    def _isolation(self, host: str) -> str:
        return registrable_domain(host)

    def explain(self, host: str, port: int = 443) -> dict[str, object]:
        """Which routes ``host:port`` would get and why (``/api/explain``, ``proxyd why``)."""
        try:
            plan = self.plan(host, port)
        except DialError as err:
            return {"host": host, "port": port, "routes": [], "why": err.describe()}
        explained: dict[str, object] = {
            "host": host,
            "port": port,
            "routes": [r.name for r in plan.routes],
            "why": plan.why,
            "learning": plan.learn,
        }
        gate = self.learned.gate_summary() if self.learned is not None else None
        if gate is not None:
            explained["gate"] = gate
        return explained


def _describe(rule: RuleConfig) -> str:
    parts = []
    if rule.host is not None:
        parts.append(f"host {rule.host}")
    if rule.domain is not None:
        parts.append(f"domain {rule.domain}")
    if rule.regex is not None:
        parts.append(f"regex {rule.regex.pattern}")
    if rule.cidr is not None:
        parts.append(f"cidr {ipaddress.ip_network(rule.cidr)}")
    if rule.port is not None:
        parts.append(f"port {rule.port}")
    return ", ".join(parts)


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _first_name(upstreams: tuple[Dialer, ...]) -> str:
    return upstreams[0].name if upstreams else ""
