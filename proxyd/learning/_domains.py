"""Host names: normal form, registrable domain, and what counts as a local destination.

Public API:

- ``normalise_host(host) -> str``: lower case, no trailing dot, no IPv6 brackets; IP
  literals (including the legacy forms ``127.1``, ``0x7f.0.0.1``, ``2130706433`` that
  ``getaddrinfo`` accepts) in their canonical text form.
- ``parse_ip(host) -> IPv4Address | IPv6Address | None``: the address a host literal
  denotes, or None for a name.
- ``registrable_domain(host) -> str``: the learning key of a host ("eTLD+1") from the
  offline public suffix list shipped by ``publicsuffixlist``, loaded once on first use.
  IP literals and single-label names come back as they are (normalised).
- ``is_local_destination(host) -> bool``: names and addresses that must never be sent to
  an upstream (DESIGN §4, Privoxy+Tor parity).
- ``LOCAL_NETWORKS``: the address ranges behind ``is_local_destination``.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import socket
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Addresses that only make sense on this machine or this LAN: an upstream (a Tor exit, a
# remote proxy) would reach *its own* neighbourhood instead, which is a leak at best.
# 100.64.0.0/10 (RFC 6598, carrier-grade NAT) is included: besides the ISP's own side of
# the NAT it is where Tailscale and similar overlays put their peers, which are only
# reachable from here. 198.18.0.0/15 (RFC 2544 benchmarking) is deliberately NOT
# included: it is globally unrouted but not local, and the project's censorship test
# network lives there; the stdlib's ``is_private`` counts it, so it is not used here.
LOCAL_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network"; Linux connects 0.0.0.0 to the local host
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::/128",
        "::1/128",
        "fc00::/7",  # unique local
        "fe80::/10",  # link local
    )
)

# Special-use names that resolve only on the local network: RFC 6761 (localhost),
# RFC 6762 (local, mDNS), RFC 8375 (home.arpa), ICANN's 2024 private-use TLD (internal),
# and "lan", not reserved but never delegated and the default domain of OpenWrt and many
# home routers, which is where this daemon runs.
LOCAL_SUFFIXES: tuple[str, ...] = ("localhost", "local", "home.arpa", "internal", "lan")

# Every request's route decision asks these about its host; the same few hundred hosts
# come back all day, and parsing them again cost more than the rest of the decision.
# The answers depend only on the argument (the suffix list is fixed), so they are cached.
_cached = functools.lru_cache(maxsize=4096)

# Only these shapes go to inet_aton: it also accepts "1.2.3.4 trailing junk".
_LEGACY_IPV4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")


@functools.cache
def _suffix_list() -> Any:
    from publicsuffixlist import PublicSuffixList

    # The full list, private section included (github.io, blogspot.com, ...): that is
    # the browser's notion of a site, and separate customers of such hosts are
    # censored separately.
    return PublicSuffixList()


@_cached
def parse_ip(host: str) -> IPAddress | None:
    """The address ``host`` denotes if it is an IP literal in any form a resolver takes."""
    text = host.strip().lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        if not _LEGACY_IPV4.fullmatch(text):
            return None
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@_cached
def normalise_host(host: str) -> str:
    address = parse_ip(host)
    if address is not None:
        return str(address)
    text = host.strip().rstrip(".").lower()
    if not text.isascii():
        # Keep the name as given when it is not valid IDNA: it will not resolve anyway.
        with contextlib.suppress(UnicodeError):
            text = text.encode("idna").decode("ascii")
    return text


@_cached
def registrable_domain(host: str) -> str:
    name = normalise_host(host)
    if "." not in name or parse_ip(name) is not None:
        return name
    # Unknown TLDs (.example, .test, .onion-like names) are treated as public suffixes
    # by the library, which yields the last two labels: the fallback we want.
    domain = _suffix_list().privatesuffix(name)
    if domain is None:  # the name is itself a public suffix ("co.uk")
        return name
    return str(domain)


@_cached
def is_local_destination(host: str) -> bool:
    address = parse_ip(host)
    if address is not None:
        return is_local_address(address)
    name = normalise_host(host)
    if "." not in name:
        return True  # single-label: resolved by the LAN's search domain, if at all
    return any(name == suffix or name.endswith("." + suffix) for suffix in LOCAL_SUFFIXES)


def is_local_address(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in LOCAL_NETWORKS)
