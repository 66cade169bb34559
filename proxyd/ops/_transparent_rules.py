"""The router's firewall rules for transparent mode, as text: pure functions of the config.

``rule_set(config, interfaces=, owner=)`` gathers what the rules depend on (or raises
``RulesError`` naming what is missing); ``apply_script(rules, backend)`` and
``remove_script(rules, backend)`` return a POSIX shell script for "nft" or "iptables",
which ``proxyd transparent rules`` prints and ``proxyd transparent apply|remove`` runs.

What the rules do, in both backends:

- New TCP connections from the LAN (``transparent.interfaces``, else the ``allow``
  networks) to ``transparent.ports`` go to proxyd's transparent listener: NAT
  REDIRECT, or TPROXY plus a policy route for its mark (``mode``).
- Never redirected: destinations on this router (``fib daddr type local`` / addrtype
  LOCAL), LAN-local and reserved networks (private, loopback, link-local, multicast,
  the allow networks themselves: traffic between LAN hosts), and the upstreams' IP
  addresses (a Tor relay or SOCKS server on the LAN or outside it is reached as is).
- proxyd's own connections leave through OUTPUT, which the redirect never hooks; with
  ``transparent.owner`` they are also marked there (conntrack mark) and the redirect
  skips that mark first, so even one looping back through PREROUTING is left alone.
- UDP 443 (QUIC) from the LAN is rejected with ICMP port unreachable, not dropped: a
  browser falls back to TCP at once instead of after a timeout.

Applying is idempotent (the old rules go first) and removing leaves nothing behind: one
nft table ``inet proxyd``; for iptables chains ``PROXYD_*`` and one jump each from a
built-in chain, and for TPROXY one ``ip rule`` and one route table.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from proxyd.config import Config, ListenAddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

BACKENDS = ("nft", "iptables")
NFT_TABLE = "proxyd"
# Marks and the route table TPROXY needs; "px" in ASCII, unlikely to clash with others.
OWN_MARK = 0x7078
TPROXY_MARK = 0x7079
TPROXY_TABLE = 7079
_CHAIN = "PROXYD_TRANSPARENT"
_QUIC_CHAIN = "PROXYD_QUIC"
_OWN_CHAIN = "PROXYD_OWN"

_RESERVED4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT: the ISP's side, never a website
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_RESERVED6 = tuple(
    ipaddress.IPv6Network(n) for n in ("::/127", "fc00::/7", "fe80::/10", "ff00::/8")
)


class RulesError(Exception):
    """The config cannot be turned into rules; the message says what to set."""


@dataclass(frozen=True, slots=True)
class RuleSet:
    mode: str  # redirect | tproxy
    ports: tuple[int, ...]
    port4: int | None  # the IPv4 listener's port; None: IPv4 is not redirected
    port6: int | None
    interfaces: tuple[str, ...]
    clients4: tuple[ipaddress.IPv4Network, ...]  # used when there are no interfaces
    clients6: tuple[ipaddress.IPv6Network, ...]
    bypass4: tuple[ipaddress.IPv4Network, ...]
    bypass6: tuple[ipaddress.IPv6Network, ...]
    owner: str


def rule_set(
    config: Config, *, interfaces: tuple[str, ...] | None = None, owner: str | None = None
) -> RuleSet:
    transparent = config.transparent
    if not transparent.listen:
        raise RulesError('transparent.listen is empty: set e.g. listen = ["0.0.0.0:8081"]')
    port4 = _port(transparent.listen, 4, transparent.mode)
    port6 = _port(transparent.listen, 6, transparent.mode)
    lan = list(transparent.interfaces if interfaces is None else interfaces)
    clients = [net for net in config.allow if not net.is_loopback]
    if not lan and not clients:
        raise RulesError(
            "no LAN to redirect: set transparent.interfaces (or --lan IFACE), "
            "or allow = [...] to the LAN's networks"
        )
    upstreams = [_literal(u.host) for u in config.upstreams]
    bypass = [*clients, *(ipaddress.ip_network(ip) for ip in upstreams if ip is not None)]
    return RuleSet(
        mode=transparent.mode,
        ports=tuple(sorted(set(transparent.ports))),
        port4=port4,
        port6=port6,
        interfaces=tuple(lan),
        clients4=tuple(n for n in clients if isinstance(n, ipaddress.IPv4Network)),
        clients6=tuple(n for n in clients if isinstance(n, ipaddress.IPv6Network)),
        bypass4=_collapse4(bypass),
        bypass6=_collapse6(bypass),
        owner=transparent.owner if owner is None else owner,
    )


def _port(listen: tuple[ListenAddress, ...], version: int, mode: str) -> int | None:
    for address in listen:
        ip = ipaddress.ip_address(address.host)
        if ip.version != version:
            continue
        if ip.is_loopback and mode == "redirect":
            # REDIRECT sends to the LAN interface's own address, which a loopback
            # listener never sees.
            raise RulesError(
                f"transparent.listen {address}: REDIRECT delivers to the LAN interface's "
                "address; listen on 0.0.0.0 (or [::]) or that address"
            )
        return address.port
    return None


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None  # a name: its address is only known when proxyd resolves it


def _collapse4(extra: list[Network]) -> tuple[ipaddress.IPv4Network, ...]:
    nets = [*_RESERVED4, *(n for n in extra if isinstance(n, ipaddress.IPv4Network))]
    return tuple(ipaddress.collapse_addresses(nets))


def _collapse6(extra: list[Network]) -> tuple[ipaddress.IPv6Network, ...]:
    nets = [*_RESERVED6, *(n for n in extra if isinstance(n, ipaddress.IPv6Network))]
    return tuple(ipaddress.collapse_addresses(nets))


# -- scripts -----------------------------------------------------------------------------


def apply_script(rules: RuleSet, backend: str) -> str:
    body = _nft_apply(rules) if backend == "nft" else _iptables_apply(rules)
    routes = _policy_routes(rules, "add") if rules.mode == "tproxy" else []
    head = [
        "#!/bin/sh",
        f"# proxyd transparent mode ({rules.mode}, {backend}): "
        f"`proxyd transparent rules --{backend}`",
        "set -e",
        *(_quiet(line) for line in _remove_lines(rules, backend)),
    ]
    return "\n".join([*head, *body, *routes]) + "\n"


def remove_script(rules: RuleSet, backend: str) -> str:
    lines = ["#!/bin/sh", f"# remove proxyd's transparent-mode rules ({backend})"]
    return "\n".join([*lines, *(_quiet(line) for line in _remove_lines(rules, backend))]) + "\n"


def _quiet(line: str) -> str:
    # Removing what is not there is not an error: apply starts clean, remove is repeatable.
    return f"{line} 2>/dev/null || true"


def _remove_lines(rules: RuleSet, backend: str) -> list[str]:
    lines = []
    if backend == "nft":
        lines.append(f"nft delete table inet {NFT_TABLE}")
    else:
        for tool, _family in _iptables_families(rules):
            for table, builtin, chain in _iptables_chains(rules):
                lines.append(f"{tool} -w -t {table} -D {builtin} -j {chain}")
                lines.append(f"{tool} -w -t {table} -F {chain}")
                lines.append(f"{tool} -w -t {table} -X {chain}")
    if rules.mode == "tproxy":
        lines += _policy_routes(rules, "del")
    return lines


def _policy_routes(rules: RuleSet, action: str) -> list[str]:
    """TPROXY marks a packet; this routes marked packets to the local stack (RFC-free
    Linux lore: netfilter's tproxy.txt)."""
    lines = []
    for family, port, default in ((4, rules.port4, "0.0.0.0/0"), (6, rules.port6, "::/0")):
        if port is None:
            continue
        ip = f"ip -{family}"
        lines.append(f"{ip} rule {action} fwmark {TPROXY_MARK:#x} lookup {TPROXY_TABLE}")
        lines.append(f"{ip} route {action} local {default} dev lo table {TPROXY_TABLE}")
    return lines


def _elements(nets: tuple[Network, ...]) -> str:
    return ", ".join(str(n) for n in nets)


def _nft_apply(rules: RuleSet) -> list[str]:
    ports = ", ".join(str(p) for p in rules.ports)
    lan = _nft_lan_matches(rules)
    lines = [
        "nft -f - <<'EOF'",
        f"table inet {NFT_TABLE} {{",
        "\tset bypass4 {",
        "\t\ttype ipv4_addr; flags interval",
        f"\t\telements = {{ {_elements(rules.bypass4)} }}",
        "\t}",
        "\tset bypass6 {",
        "\t\ttype ipv6_addr; flags interval",
        f"\t\telements = {{ {_elements(rules.bypass6)} }}",
        "\t}",
    ]
    if rules.owner:
        lines += [
            "\tchain own {",
            "\t\ttype route hook output priority mangle; policy accept;",
            f"\t\tmeta skuid {rules.owner} ct mark set {OWN_MARK:#x}",
            "\t}",
        ]
    if rules.mode == "redirect":
        hook = "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    else:
        hook = "\t\ttype filter hook prerouting priority mangle; policy accept;"
    lines += ["\tchain prerouting {", hook, *(f"\t\t{m} jump lan" for m in lan), "\t}"]
    lines += ["\tchain lan {"]
    if rules.owner:
        lines.append(f"\t\tct mark {OWN_MARK:#x} return")
    lines += [
        "\t\tfib daddr type local return",
        "\t\tip daddr @bypass4 return",
        "\t\tip6 daddr @bypass6 return",
    ]
    for family, port in (("ip", rules.port4), ("ip6", rules.port6)):
        if port is None:
            continue
        nfproto = "ipv4" if family == "ip" else "ipv6"
        match = f"meta nfproto {nfproto} tcp dport {{ {ports} }}"
        if rules.mode == "redirect":
            lines.append(f"\t\t{match} redirect to :{port}")
        else:
            lines.append(
                f"\t\t{match} tproxy {family} to :{port} meta mark set {TPROXY_MARK:#x} accept"
            )
    lines += [
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        *(f"\t\t{m} udp dport 443 reject" for m in lan),
        "\t}",
        "}",
        "EOF",
    ]
    return lines


def _nft_lan_matches(rules: RuleSet) -> list[str]:
    if rules.interfaces:
        names = ", ".join(f'"{name}"' for name in rules.interfaces)
        return [f"iifname {{ {names} }}"]
    matches = []
    if rules.clients4:
        matches.append(f"ip saddr {{ {_elements(rules.clients4)} }}")
    if rules.clients6:
        matches.append(f"ip6 saddr {{ {_elements(rules.clients6)} }}")
    return matches


def _iptables_families(rules: RuleSet) -> list[tuple[str, int]]:
    families = [("iptables", 4)]
    if rules.port6 is not None:
        families.append(("ip6tables", 6))
    return families


def _iptables_chains(rules: RuleSet) -> list[tuple[str, str, str]]:
    """(table, built-in chain, proxyd's chain) for every jump the rules add."""
    chains = [("nat" if rules.mode == "redirect" else "mangle", "PREROUTING", _CHAIN)]
    chains.append(("filter", "FORWARD", _QUIC_CHAIN))
    if rules.owner:
        chains.append(("mangle", "OUTPUT", _OWN_CHAIN))
    return chains


def _iptables_apply(rules: RuleSet) -> list[str]:
    lines: list[str] = []
    for tool, family in _iptables_families(rules):
        lines += [f"{tool}-restore -w --noflush <<'EOF'", *_iptables_tables(rules, family), "EOF"]
    return lines


def _iptables_tables(rules: RuleSet, family: int) -> list[str]:
    """iptables-restore input: per table, proxyd's chains declared, then their rules."""
    port = rules.port4 if family == 4 else rules.port6
    bypass: tuple[Network, ...] = rules.bypass4 if family == 4 else rules.bypass6
    lan = _iptables_lan_matches(rules, family)
    ports = ",".join(str(p) for p in rules.ports)
    tables: dict[str, tuple[list[str], list[str]]] = {}
    for table, builtin, chain in _iptables_chains(rules):
        declared, added = tables.setdefault(table, ([], []))
        declared.append(f":{chain} - [0:0]")
        added.append(f"-A {builtin} -j {chain}")
    redirect = tables["nat" if rules.mode == "redirect" else "mangle"][1]
    if rules.owner:
        redirect.append(f"-A {_CHAIN} -m connmark --mark {OWN_MARK:#x} -j RETURN")
        tables["mangle"][1].append(
            f"-A {_OWN_CHAIN} -m owner --uid-owner {rules.owner}"
            f" -j CONNMARK --set-mark {OWN_MARK:#x}"
        )
    redirect.append(f"-A {_CHAIN} -m addrtype --dst-type LOCAL -j RETURN")
    redirect += [f"-A {_CHAIN} -d {net} -j RETURN" for net in bypass]
    if rules.mode == "redirect":
        target = f"REDIRECT --to-ports {port}"
    else:
        target = f"TPROXY --on-port {port} --tproxy-mark {TPROXY_MARK:#x}/{TPROXY_MARK:#x}"
    redirect += [f"-A {_CHAIN} {m} -p tcp -m multiport --dports {ports} -j {target}" for m in lan]
    unreachable = "icmp-port-unreachable" if family == 4 else "icmp6-port-unreachable"
    tables["filter"][1].extend(
        f"-A {_QUIC_CHAIN} {m} -p udp --dport 443 -j REJECT --reject-with {unreachable}"
        for m in lan
    )
    lines = []
    for table, (declared, added) in tables.items():
        lines += [f"*{table}", *declared, *added, "COMMIT"]
    return lines


def _iptables_lan_matches(rules: RuleSet, family: int) -> list[str]:
    if rules.interfaces:
        return [f"-i {name}" for name in rules.interfaces]
    clients: tuple[Network, ...] = rules.clients4 if family == 4 else rules.clients6
    return [f"-s {net}" for net in clients]
