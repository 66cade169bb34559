"""Address plan and site table of the censorship lab.

Every address lives in 198.18.0.0/15 (RFC 2544 benchmarking space), so nothing the lab
does can reach a real network.

- ``CLIENT_IP``: the client namespace, where proxyd, curl and chromium run.
- ``ISP_CLIENT_SIDE`` / ``ISP_INTERNET_SIDE``: the censor's router; the first is also the
  ISP's DNS resolver that the client is told to use.
- ``BLOCK_PAGE_IP`` / ``REDIRECT_IP``: the ISP's block-page server and its 302 responder.
- ``SOCKS_IP``: the first SOCKS5 server (in the internet namespace); ``SPARE_SOCKS_IPS``
  are free addresses for more of them.
- ``SITES``: every site with its real address and the censorship applied by default.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

CLIENT_IP = "198.18.1.2"
ISP_CLIENT_SIDE = "198.18.1.1"
ISP_INTERNET_SIDE = "198.18.2.1"
INTERNET_IP = "198.18.2.2"
SOCKS_IP = "198.18.2.3"
SOCKS_PORT = 1080
SPARE_SOCKS_IPS = ("198.18.2.4", "198.18.2.5", "198.18.2.6")
BLOCK_PAGE_IP = "198.18.3.1"
REDIRECT_IP = "198.18.3.2"

BLOCK_PAGE_HOST = "blocked.gov.example"
BLOCK_PAGE_TEXT = "Blocked by order of the authorities"
REDIRECT_LOCATION = f"http://{BLOCK_PAGE_HOST}/"
SLOW_DELAY = 0.8
# The "16 KB freeze": bytes (IP packets included) a connection's server side may send.
FREEZE_AFTER = 16 * 1024
# The mid-stream reset: server bytes (IP packets included) a connection may carry before
# the censor resets it; the client's next packet (an ACK) gets the RST.
CUT_AFTER = 100 * 1024


class Censorship(enum.Enum):
    """What the censor does to a site; the value names its iptables/DNS rules."""

    SNI = "sni"  # RST when a TLS ClientHello carries the name
    HOST_HEADER = "host"  # RST when a plain-HTTP request carries ``Host: name``
    BLACKHOLE = "blackhole"  # every packet to the site's address silently dropped
    DNS_POISON = "dns"  # the ISP resolver answers with the block-page address
    REDIRECT = "redirect"  # port 80 DNATed to a responder sending 302 to the block page
    FREEZE = "freeze"  # HTTPS from the site dropped for good after FREEZE_AFTER bytes
    CUT = "cut"  # HTTPS and plain HTTP reset once the site sent CUT_AFTER bytes
    # HTTPS DNATed to a userspace DPI relay (servers/dpi.py) that reassembles TCP and
    # resets a ClientHello naming the site: parsing only the first TLS record, or joining
    # handshake fragments across records too.
    DPI_FIRST_RECORD = "dpi1"
    DPI_REASSEMBLE = "dpi2"


@dataclass(frozen=True)
class Site:
    name: str
    address: str
    censorship: tuple[Censorship, ...] = ()
    subdomains: tuple[str, ...] = ()  # full names served from the same address
    down: bool = False  # nothing answers, not even through the SOCKS server
    slow: bool = False  # the origin answers only after SLOW_DELAY
    mirror: bool = False  # serves the lab's mirror site (httpd.py --mirror), not an origin
    nginx: bool = False  # served by nginx (answers ``nginx HOST PATH``), not httpd.py
    listening: bool = True  # False: the address is up, every connection is refused

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.subdomains)


SITES: tuple[Site, ...] = (
    Site("open.example", "198.18.2.10"),
    Site("slow.example", "198.18.2.11", slow=True),
    Site("down.example", "198.18.2.12", down=True),
    Site("sni.example", "198.18.2.13", (Censorship.SNI,)),
    Site("host.example", "198.18.2.14", (Censorship.HOST_HEADER,)),
    Site("hole.example", "198.18.2.15", (Censorship.BLACKHOLE,)),
    Site("dns.example", "198.18.2.16", (Censorship.DNS_POISON,)),
    Site("page.example", "198.18.2.17", (Censorship.REDIRECT,)),
    # SNI matching is a substring search, so blocking the parent catches every subdomain.
    Site(
        "many.example",
        "198.18.2.18",
        (Censorship.SNI,),
        subdomains=tuple(f"{label}.many.example" for label in "abcd"),
    ),
    Site(
        "blog.example",
        "198.18.2.19",
        (Censorship.SNI, Censorship.HOST_HEADER),
        subdomains=("www.blog.example",),
    ),
    Site(
        "blog-mirror.example",
        "198.18.2.20",
        subdomains=("www.blog-mirror.example", "x.blog-mirror.example"),
        mirror=True,
    ),
    Site("mirror.example", "198.18.2.21"),
    Site("gone-mirror.example", "198.18.2.22", listening=False),
    Site("freeze.example", "198.18.2.23", (Censorship.FREEZE,)),
    # More SNI-blocked domains, for a burst of unrelated blocked sites (a news page).
    Site("video.example", "198.18.2.24", (Censorship.SNI,)),
    Site("chat.example", "198.18.2.25", (Censorship.SNI,)),
    Site("dpi.example", "198.18.2.26", (Censorship.DPI_FIRST_RECORD,)),
    Site("dpi-full.example", "198.18.2.27", (Censorship.DPI_REASSEMBLE,)),
    Site("nginx.example", "198.18.2.28", (Censorship.SNI, Censorship.HOST_HEADER), nginx=True),
    # Its origin honours Range on /ranged/N (httpd.py); /bytes/N ignores it, as many do.
    Site("cut.example", "198.18.2.29", (Censorship.CUT,)),
)
# Where the ISP's DPI relays listen (on ISP_CLIENT_SIDE), one per kind.
DPI_PORTS = {Censorship.DPI_FIRST_RECORD: 9443, Censorship.DPI_REASSEMBLE: 9444}
DPI_MODES = {Censorship.DPI_FIRST_RECORD: "first-record", Censorship.DPI_REASSEMBLE: "reassemble"}


def site_named(name: str) -> Site:
    """The site serving ``name`` (a site name or one of its subdomains)."""
    for site in SITES:
        if name in site.names:
            return site
    raise KeyError(name)


def real_addresses() -> dict[str, str]:
    """Every served name, subdomains included, mapped to its real address."""
    return {name: site.address for site in SITES for name in site.names}
