"""Route decision for one destination: which routes to try, in what order, and why.

Precedence (DESIGN §4): user rules > learned state > default (``auto``: direct first,
upstreams as the transparent fallback). Every plan carries a one-line explanation, so
``/api/explain`` and logs can say which rule or which learned evidence chose it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxyd.config import Config, RuleConfig
from proxyd.desync import DesyncDialer
from proxyd.dialers import Dialer, DirectDialer
from proxyd.domains import is_local_destination, normalise_host, parse_ip, registrable_domain
from proxyd.errors import Forbidden, UpstreamUnavailable
from proxyd.learning import DIRECT, State

if TYPE_CHECKING:
    from proxyd.learned import LearnedRoutes
    from proxyd.upstreams import UpstreamSet

REJECT = "reject"
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Routes to try in order. ``learn``: failures of the first are evidence and the rest
    are its transparent fallback (the first visit); otherwise the rest are failover only."""

    routes: tuple[Dialer, ...]
    why: str
    learn: bool = False
    isolation: str | None = None

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
    ) -> None:
        self.config = config
        self.direct = direct
        self.desync = DesyncDialer(direct)
        self.upstreams = upstreams
        self.learned = learned
        self._direct_only = RoutePlan((direct,), "local destination: always direct")

    def plan(self, host: str, port: int) -> RoutePlan:
        """Raises ``Forbidden`` for rejected destinations and ``UpstreamUnavailable`` when
        a destination may only use upstreams and none is configured."""
        host = normalise_host(host)
        for index, rule in enumerate(self.config.rules):
            if rule_matches(rule, host, port):
                why = f"rule {index + 1} ({_describe(rule)})"
                if rule.route == AUTO:
                    return self._learned_or_default(host, port, why + " -> auto; ")
                return self._fixed(host, port, rule.route, why)
        if host.endswith(".onion"):
            tor = self.upstreams.tor
            if tor is None:
                raise Forbidden(host, port, "no upstream with tor = true for .onion addresses")
            return RoutePlan((tor,), ".onion: the tor upstream", isolation=self._isolation(host))
        if is_local_destination(host):
            return self._direct_only
        return self._learned_or_default(host, port, "")

    def _fixed(self, host: str, port: int, route: str, why: str) -> RoutePlan:
        if route == REJECT:
            raise Forbidden(host, port, f"rejected by {why}")
        if route == DIRECT:
            return RoutePlan((self.direct,), f"{why} -> direct")
        if route == self.desync.name:
            return RoutePlan((self.desync,), f"{why} -> {route}")
        upstream = self.upstreams.get(route)
        if upstream is None:
            raise self.upstreams.unavailable_error(host, port)
        return RoutePlan((upstream,), f"{why} -> {route}", isolation=self._isolation(host))

    def _learned_or_default(self, host: str, port: int, prefix: str) -> RoutePlan:
        upstreams = tuple(self.upstreams.dialers())
        learned = self.learned
        if learned is None or not learned.config.enabled:
            listed = self._listed(host)
            if listed is not None:
                return self._via_upstreams(host, port, listed[0], prefix + listed[1])
            return RoutePlan((self.direct,), prefix + "learning off: direct")
        entry = learned.lookup(host)
        if entry is None:
            listed = self._listed(host)
            if listed is not None:
                # Visited list entries join the learned table, so re-tests can overturn them.
                entry = learned.adopt_list_entry(host, listed[0] or _first_name(upstreams))
        if entry is not None and entry.state is State.BLOCKED:
            evidence = ", ".join(sorted({e.reason.value for e in entry.evidence})) or entry.source
            why = f"{prefix}learned: {entry.key} blocked ({evidence}) since {entry.since:.0f}"
            return self._via_upstreams(host, port, entry.route, why)
        if entry is not None:
            return RoutePlan((self.direct,), f"{prefix}learned: {entry.key} works direct")
        fallbacks = ((self.desync,) if learned.config.desync else ()) + upstreams
        return RoutePlan(
            (self.direct, *fallbacks),
            prefix
            + "unknown: direct first, "
            + "/".join(r.name for r in fallbacks)
            + " as fallback",
            learn=bool(fallbacks),
            isolation=self._isolation(host),
        )

    def _via_upstreams(
        self, host: str, port: int, preferred_name: str | None, why: str
    ) -> RoutePlan:
        """The upstream that worked (or a list names) first, the others as failover."""
        upstreams: tuple[Dialer, ...] = tuple(self.upstreams.dialers())
        preferred: Dialer | None = None
        if preferred_name == self.desync.name:
            preferred = self.desync
        elif preferred_name:
            preferred = self.upstreams.get(preferred_name)
        ordered = ((preferred,) if preferred is not None else ()) + tuple(
            u for u in upstreams if u is not preferred
        )
        if not ordered:
            raise UpstreamUnavailable(host, port, "blocked, and no upstream is configured")
        return RoutePlan(ordered, why, isolation=self._isolation(host))

    def _listed(self, host: str) -> tuple[str | None, str] | None:
        """(the list's route, why) for the first imported list naming ``host``."""
        for block_list in self.config.lists:
            if block_list.domains.matches(host):
                return block_list.route, f"listed in {block_list.path} ({block_list.format})"
        return None

    def _isolation(self, host: str) -> str:
        return registrable_domain(host)

    def explain(self, host: str, port: int = 443) -> dict[str, object]:
        try:
            plan = self.plan(host, port)
        except (Forbidden, UpstreamUnavailable) as err:
            return {"host": host, "port": port, "routes": [], "why": str(err)}
        return {
            "host": host,
            "port": port,
            "routes": [r.name for r in plan.routes],
            "why": plan.why,
            "learning": plan.learn,
        }


def _first_name(upstreams: tuple[Dialer, ...]) -> str:
    return upstreams[0].name if upstreams else ""


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
