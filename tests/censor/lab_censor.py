"""The censor: iptables rules in the ISP namespace plus the poisoning resolver.

``Censor(isp_netns, resolver)`` after ``install()``:

- ``block_sni(name)``: RST every TLS (port 443) packet whose bytes contain ``name``;
  substring matching, so it also hits every subdomain.
- ``block_host_header(name)``: RST every port-80 packet containing ``Host: name``.
- ``blackhole(target)``: DROP every packet to a site's address (or to an IP in
  198.18.0.0/15, e.g. a SOCKS server's).
- ``poison_dns(name, address=BLOCK_PAGE_IP)``: the ISP resolver answers ``address``.
- ``redirect_http(name)``: DNAT the site's port 80 to the 302 responder.
- ``freeze(name)``: let each HTTPS connection of the site carry ``FREEZE_AFTER`` bytes
  from the server, then drop the rest, FIN included (conntrack's byte counter).
- ``cut(name)``: reset each HTTPS and plain-HTTP connection of the site once the site has
  sent ``CUT_AFTER`` bytes on it (the mid-stream reset of a download).
- ``dpi(name, kind)``: DNAT the site's port 443 to the ISP's DPI relay of that kind
  (``Censorship.DPI_FIRST_RECORD`` or ``DPI_REASSEMBLE``, servers/dpi.py).
- ``unblock(target)``: lift everything applied to ``target``;
  ``apply(wanted)`` / ``restore_defaults()`` bring the rule set to a given state.
- Counters (ints, packets since the rule was added): ``hits(target)`` for the censor's
  own rules (for DNS poisoning: the client's queries for the name while poisoned);
  ``direct_syns(name_or_ip)``: TCP SYNs (retransmissions included) from the client to an
  address, counted before any censor rule or NAT sees them; ``dns_queries(name)``: the
  client's queries for the name or its subdomains.

RST uses REJECT, which answers the sender only and drops the packet, so the server never
sees the request; its half-open connection just idles.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from lab_dns import IspResolver
from lab_netns import LabError, Netns
from lab_sites import (
    BLOCK_PAGE_IP,
    CLIENT_IP,
    CUT_AFTER,
    DPI_PORTS,
    FREEZE_AFTER,
    ISP_CLIENT_SIDE,
    REDIRECT_IP,
    SITES,
    Censorship,
    site_named,
)

_LAB_NETWORK = ipaddress.ip_network("198.18.0.0/15")
_COUNTER_LINE = re.compile(r"^\s*(\d+)\s+\d+\s.*/\* (.+?) \*/")
_RESET = ["-j", "REJECT", "--reject-with", "tcp-reset"]


@dataclass(frozen=True)
class _Rule:
    table: str
    chain: str
    spec: tuple[str, ...]

    def argv(self, action: str) -> list[str]:
        return ["-t", self.table, action, self.chain, *self.spec]


def _dns_wire_name(name: str) -> str:
    """``|03646e73...00|``: the name as DNS labels, so ``many.example`` cannot match
    ``notmany.example`` (the length byte anchors the label) but does match ``a.many.example``.
    """
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return f"|{wire.hex()}|"


def _address_of(target: str) -> str:
    try:
        return site_named(target).address
    except KeyError:
        pass
    if ipaddress.ip_address(target) not in _LAB_NETWORK:
        raise LabError(f"{target} is outside the lab's 198.18.0.0/15")
    return target


def _counted_addresses() -> list[str]:
    return sorted({site.address for site in SITES} | {BLOCK_PAGE_IP, REDIRECT_IP})


def default_censorship() -> set[tuple[Censorship, str]]:
    return {(kind, site.name) for site in SITES for kind in site.censorship}


class Censor:
    def __init__(self, netns: Netns, resolver: IspResolver) -> None:
        self._netns = netns
        self._resolver = resolver
        self._active: dict[tuple[Censorship, str], _Rule] = {}

    def install(self) -> None:
        """Create the chains and the always-on counters; no censorship yet."""
        syn_rules = [
            f"-A direct-syn -s {CLIENT_IP} -d {address} -p tcp --syn"
            f' -m comment --comment "syn {address}"'
            for address in _counted_addresses()
        ]
        names = sorted({name for site in SITES for name in site.names})
        query_rules = [
            f"-A dns-queries -s {CLIENT_IP} -p udp --dport 53 -m string --algo bm --icase"
            f' --hex-string "{_dns_wire_name(name)}" -m comment --comment "dns {name}"'
            for name in names
        ]
        self._netns.iptables_restore(
            "\n".join(
                [
                    "*raw",
                    ":direct-syn - [0:0]",
                    "-A PREROUTING -j direct-syn",
                    *syn_rules,
                    "COMMIT",
                    "*nat",
                    ":censor-nat - [0:0]",
                    "-A PREROUTING -j censor-nat",
                    "COMMIT",
                    "*filter",
                    ":censor - [0:0]",
                    ":censor-dns - [0:0]",
                    ":dns-queries - [0:0]",
                    "-A FORWARD -j censor",
                    "-A INPUT -j dns-queries",
                    "-A INPUT -j censor-dns",
                    *query_rules,
                    "COMMIT",
                    "",
                ]
            )
        )

    # -- primitives -------------------------------------------------------------------

    def block_sni(self, name: str) -> None:
        match = ("-p", "tcp", "--dport", "443", "-m", "string", "--algo", "bm", "--string", name)
        self._add(Censorship.SNI, name, "filter", "censor", match, _RESET)

    def block_host_header(self, name: str) -> None:
        needle = f"Host: {name}"
        match = ("-p", "tcp", "--dport", "80", "-m", "string", "--algo", "bm", "--string", needle)
        self._add(Censorship.HOST_HEADER, name, "filter", "censor", match, _RESET)

    def blackhole(self, target: str) -> None:
        match = ("-d", _address_of(target))
        self._add(Censorship.BLACKHOLE, target, "filter", "censor", match, ["-j", "DROP"])

    def redirect_http(self, name: str) -> None:
        match = ("-p", "tcp", "-d", _address_of(name), "--dport", "80")
        jump = ["-j", "DNAT", "--to-destination", f"{REDIRECT_IP}:80"]
        self._add(Censorship.REDIRECT, name, "nat", "censor-nat", match, jump)

    def freeze(self, name: str) -> None:
        match = ("-p", "tcp", "-s", _address_of(name), "--sport", "443", "-m", "connbytes")
        match += ("--connbytes", f"{FREEZE_AFTER}:", "--connbytes-dir", "reply")
        match += ("--connbytes-mode", "bytes")
        self._add(Censorship.FREEZE, name, "filter", "censor", match, ["-j", "DROP"])

    def cut(self, name: str) -> None:
        # Matched on the client's packets of a connection past the byte count: REJECT
        # answers the sender only, so this is what resets the client (an RST to the server
        # would leave the client waiting in silence). The data already on its way passes.
        match = ("-p", "tcp", "-s", CLIENT_IP, "-d", _address_of(name))
        match += ("-m", "multiport", "--dports", "80,443", "-m", "connbytes")
        match += ("--connbytes", f"{CUT_AFTER}:", "--connbytes-dir", "reply")
        match += ("--connbytes-mode", "bytes")
        self._add(Censorship.CUT, name, "filter", "censor", match, _RESET)

    def dpi(self, name: str, kind: Censorship) -> None:
        match = ("-p", "tcp", "-d", _address_of(name), "--dport", "443")
        jump = ["-j", "DNAT", "--to-destination", f"{ISP_CLIENT_SIDE}:{DPI_PORTS[kind]}"]
        self._add(kind, name, "nat", "censor-nat", match, jump)

    def poison_dns(self, name: str, address: str = BLOCK_PAGE_IP) -> None:
        # The resolver does the poisoning; this rule only counts the queries it answers.
        match: tuple[str, ...] = ("-s", CLIENT_IP, "-p", "udp", "--dport", "53")
        match += ("-m", "string", "--algo", "bm", "--icase", "--hex-string", _dns_wire_name(name))
        self._add(Censorship.DNS_POISON, name, "filter", "censor-dns", match, [])
        self._resolver.poison(name, _address_of(address))

    def unblock(self, target: str) -> None:
        for kind, key in list(self._active):
            if key == target:
                self._remove(kind, key)

    def active(self) -> set[tuple[Censorship, str]]:
        return set(self._active)

    def apply(self, wanted: set[tuple[Censorship, str]]) -> None:
        """Make the active censorship exactly ``wanted`` (poisoning to the block page)."""
        for kind, key in self.active() - wanted:
            self._remove(kind, key)
        for kind, key in wanted - self.active():
            self._apply_one(kind, key)

    def restore_defaults(self) -> None:
        self.apply(default_censorship())

    # -- counters ---------------------------------------------------------------------

    def hits(self, target: str) -> int:
        chains = [("filter", "censor"), ("nat", "censor-nat"), ("filter", "censor-dns")]
        keys = {f"{kind.value} {target}" for kind in Censorship}
        return sum(self._counters(table, chain, keys) for table, chain in chains)

    def direct_syns(self, name_or_ip: str) -> int:
        return self._counters("raw", "direct-syn", {f"syn {_address_of(name_or_ip)}"})

    def dns_queries(self, name: str) -> int:
        return self._counters("filter", "dns-queries", {f"dns {name}"})

    # -- internals --------------------------------------------------------------------

    def _apply_one(self, kind: Censorship, key: str) -> None:
        {
            Censorship.SNI: self.block_sni,
            Censorship.HOST_HEADER: self.block_host_header,
            Censorship.BLACKHOLE: self.blackhole,
            Censorship.DNS_POISON: self.poison_dns,
            Censorship.REDIRECT: self.redirect_http,
            Censorship.FREEZE: self.freeze,
            Censorship.CUT: self.cut,
            Censorship.DPI_FIRST_RECORD: lambda name: self.dpi(name, kind),
            Censorship.DPI_REASSEMBLE: lambda name: self.dpi(name, kind),
        }[kind](key)

    def _add(
        self,
        kind: Censorship,
        key: str,
        table: str,
        chain: str,
        match: tuple[str, ...],
        jump: list[str],
    ) -> None:
        if (kind, key) in self._active:
            return
        comment = ("-m", "comment", "--comment", f"{kind.value} {key}")
        rule = _Rule(table, chain, (*match, *comment, *jump))
        self._netns.iptables(*rule.argv("-A"))
        self._active[(kind, key)] = rule

    def _remove(self, kind: Censorship, key: str) -> None:
        rule = self._active.pop((kind, key))
        self._netns.iptables(*rule.argv("-D"))
        if kind is Censorship.DNS_POISON:
            self._resolver.unpoison(key)

    def _counters(self, table: str, chain: str, comments: set[str]) -> int:
        listing = self._netns.iptables("-t", table, "-L", chain, "-v", "-x", "-n")
        total = 0
        for line in listing.splitlines():
            match = _COUNTER_LINE.match(line)
            if match is not None and match.group(2) in comments:
                total += int(match.group(1))
        return total
