"""Is the system resolver's answer forged? Pure functions, one per signal.

Each detector looks at one host's answer and returns its ``Signal`` (the label metrics
and logs use) or ``None``:

- ``in_poison_set``: an address known to be forged (configured, or OONI's fingerprints);
- ``bogon_for_public_name``: a private, reserved or documentation address for a public name;
- ``shared_by_blocked_names``: the one address that several unrelated names with block
  evidence were also given (a censor points every blocked name at its block-page server);
- ``served_block_page``: an address that has already served a block page;
- ``disagrees``: the honest source's answer shares no address with the system's, asked
  only after a connection to the system's answer failed.

A signal makes the system answer *suspect*; poisoning is learned only when the honest
answer then worked (the control rule).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Collection, Iterable, Mapping

from proxyd.learning import LOCAL_NETWORKS, is_local_destination, parse_ip

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Answers no public name has: local ranges plus multicast, reserved and documentation
# space. 198.18.0.0/15 is left out on purpose (see proxyd.learning LOCAL_NETWORKS).
DEFAULT_BOGONS: tuple[IPNetwork, ...] = LOCAL_NETWORKS + tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "2001:db8::/32",
        "ff00::/8",
    )
)


class Signal(enum.Enum):
    POISON_SET = "poison_set"
    BOGON = "bogon"
    SHARED_ADDRESS = "shared_address"
    BLOCK_PAGE_ADDRESS = "block_page_address"
    DISAGREEMENT = "disagreement"
    CONNECT_FAILED = "connect_failed"  # not a verdict: the reason to ask the honest source


def in_poison_set(addresses: Iterable[str], poison: Collection[str]) -> Signal | None:
    return Signal.POISON_SET if any(a in poison for a in addresses) else None


def bogon_for_public_name(
    host: str, addresses: Iterable[str], networks: Iterable[IPNetwork]
) -> Signal | None:
    if is_local_destination(host) or parse_ip(host) is not None:
        return None  # a local name may well have a private address
    nets = tuple(networks)
    for address in addresses:
        ip = parse_ip(address)
        if ip is not None and any(ip in net for net in nets):
            return Signal.BOGON
    return None


def shared_by_blocked_names(
    host_domain: str,
    addresses: Collection[str],
    blocked_domains_by_address: Mapping[str, Collection[str]],
    threshold: int,
) -> Signal | None:
    if len(addresses) != 1:
        return None  # CDNs and shared hosts hand out several; a censor's resolver one
    (address,) = addresses
    others = {d for d in blocked_domains_by_address.get(address, ()) if d != host_domain}
    return Signal.SHARED_ADDRESS if len(others) >= threshold else None


def served_block_page(
    addresses: Iterable[str], block_page_addresses: Collection[str]
) -> Signal | None:
    return Signal.BLOCK_PAGE_ADDRESS if any(a in block_page_addresses for a in addresses) else None


def disagrees(system: Collection[str], honest: Collection[str]) -> Signal | None:
    return Signal.DISAGREEMENT if honest and not set(system) & set(honest) else None
