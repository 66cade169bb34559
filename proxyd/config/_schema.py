"""The configuration schema: the frozen dataclasses ``proxyd.config._config`` re-exports.

Private: import these from ``proxyd.config._config``, which builds them from TOML (with
``_configvalidate``) and writes them back. Conventions: durations are floats in
seconds, sizes ints in bytes, hosts lower-case ASCII (IDNA) without a trailing dot;
every float field in the schema is a duration (the TOML writer relies on it).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from proxyd.learning import DomainList

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UPSTREAM_SCHEMES = ("socks5h", "socks5", "socks4a", "socks4", "http")
SOCKS_SCHEMES = frozenset({"socks5h", "socks5", "socks4a", "socks4"})


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str  # an IP literal (no brackets) or "localhost"
    port: int  # 0 asks the kernel for a free port (tests)

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        ip = ipaddress.ip_address(self.host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too (Python 3.11 says no)
        return ip.is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    users: tuple[tuple[str, str], ...] = ()  # (username, password) in file order; dict() it
    max_failures: int = 10  # per client address within failure_window, then refused
    failure_window: float = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 4096
    max_connections_per_client: int = 1024
    max_head_bytes: int = 65536
    max_headers: int = 100
    max_line: int = 8192
    head_timeout: float = 10.0
    idle_timeout: float = 300.0
    connect_timeout: float = 10.0
    drain_grace: float = 30.0
    replay_buffer: int = 65536


@dataclass(frozen=True, slots=True)
class LearningConfig:
    enabled: bool = True
    race_after: float | None = None  # None: derived from measured direct RTTs ("auto")
    race_min: float = 0.3
    first_byte_timeout: float = 10.0
    retest_initial: float = 3600.0
    retest_max: float = 86400.0
    retest_successes: int = 1
    weak_threshold: int = 2
    weak_window: float = 60.0
    # A direct tunnel silent this long after 10-32 KB of server data, until the client
    # gave up, froze (weak evidence, ``detect.is_stall``).
    stall_after: float = 8.0
    save_debounce: float = 5.0
    blockpage_networks: tuple[Network, ...] = ()
    # Regex sources, searched (not full-matched) in Location and, UTF-8 encoded, the body.
    blockpage_fingerprints: tuple[str, ...] = ()
    # Try the desync ladder (the direct route with reshaped first bytes) before upstreams.
    desync: bool = True
    # Hosts the outage gate may ask, direct, whether the network is up, when no host
    # worked direct in the last minutes (``learning.OutageGate``).
    canaries: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    name: str
    scheme: str  # one of UPSTREAM_SCHEMES
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tor: bool = False
    isolate: bool = False  # a distinct SOCKS username per registrable domain
    isolate_clients: bool = False  # ... and per LAN client address
    health_interval: float = 30.0
    url: str  # as written in the config

    @classmethod
    def from_url(
        cls,
        name: str,
        url: str,
        *,
        tor: bool = False,
        isolate: bool | None = None,
        isolate_clients: bool = False,
        health_interval: float = 30.0,
    ) -> UpstreamConfig:
        """Parse ``scheme://[user[:pass]@]host:port``; ``isolate`` defaults to ``tor``."""
        if "://" not in url:
            raise ValueError(f'{url!r} is not a URL: write e.g. "socks5h://127.0.0.1:9050"')
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in UPSTREAM_SCHEMES:
            supported = ", ".join(f"{s}://" for s in UPSTREAM_SCHEMES)
            raise ValueError(f"unsupported scheme {scheme + '://'!r}: use one of {supported}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{url!r} has something after host:port; write scheme://host:port")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r} has an invalid port (1-65535)") from None
        if not parts.hostname or not port:
            raise ValueError(f"{url!r} needs a host and a port, e.g. {scheme}://127.0.0.1:9050")
        username = None if parts.username is None else unquote(parts.username)
        password = None if parts.password is None else unquote(parts.password)
        if password is not None and scheme.startswith("socks4"):
            raise ValueError(
                "SOCKS4 has no password (only a user id); use socks5h:// for user:pass"
            )
        return cls(
            name=name,
            scheme=scheme,
            host=parts.hostname,
            port=port,
            username=username,
            password=password,
            tor=tor,
            isolate=tor if isolate is None else isolate,
            isolate_clients=isolate_clients,
            health_interval=health_interval,
            url=url,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleConfig:
    """All given matchers must match; ``domain`` covers the domain and every subdomain."""

    host: str | None = None
    domain: str | None = None
    regex: re.Pattern[str] | None = None  # full-match against the host, case-insensitive
    cidr: Network | None = None  # the destination is an IP literal within it
    port: int | None = None
    route: str  # direct | reject | auto | an upstream name | a mirror name


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorConfig:
    name: str
    from_host: str  # "blog.example", or "*.blog.example" for it and all its subdomains
    to_host: str  # exact when from_host is, a wildcard when from_host is
    mode: str = "redirect"  # redirect | proxy
    when: str = "blocked"  # blocked | always
    scheme: str = "http"  # used to reach the mirror

    def rewrite(self, host: str) -> str | None:
        """The mirror host for ``host``, keeping subdomain labels; None if not covered."""
        if not self.from_host.startswith("*."):
            return self.to_host if host == self.from_host else None
        suffix, target = self.from_host[2:], self.to_host[2:]
        if host == suffix:
            return target
        if host.endswith("." + suffix):
            return host[: -len(suffix)] + target
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListConfig:
    path: Path
    format: str = "hostlist"  # see proxyd.learning._lists.FORMATS
    route: str | None = None  # an upstream or mirror name; None: the upstreams in order
    domains: DomainList = field(compare=False, repr=False)  # read when the config is


@dataclass(frozen=True, slots=True, kw_only=True)
class DohProviderConfig:
    """One DNS-over-HTTPS provider (RFC 8484). ``bootstrap``: its addresses, so that
    reaching it never asks the (possibly poisoned) system resolver; ``via``: "direct" or
    an upstream that carries the connection when the provider itself is blocked."""

    name: str
    url: str  # https://host[:port]/path, as written
    host: str
    port: int
    path: str
    bootstrap: tuple[str, ...]  # IP literals; the host itself when it is one
    via: str = "direct"


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsConfig:
    """``[dns]``: the honest source, its cache and the poisoning detectors."""

    doh: tuple[DohProviderConfig, ...] = ()  # in order; empty: no direct+doh route
    timeout: float = 2.0  # one DoH query, before the next provider is asked
    cache_min_ttl: float = 60.0
    cache_max_ttl: float = 3600.0
    cache_size: int = 4096
    poison_addresses: tuple[str, ...] = ()  # answers that are always forged
    poison_csv: Path | None = None  # OONI's fingerprints_dns.csv, read at load
    poison_from_csv: tuple[str, ...] = field(default=(), compare=False, repr=False)
    bogon_networks: tuple[Network, ...] | None = None  # None: the built-in ranges
    shared_address_threshold: int = 3  # blocked names behind one address


TRANSPARENT_MODES = ("redirect", "tproxy")
NAMELESS_ACTIONS = ("direct", "refuse")


@dataclass(frozen=True, slots=True)
class TransparentConfig:
    """Listeners the router's firewall sends the LAN's web traffic to (no proxy settings)."""

    listen: tuple[ListenAddress, ...] = ()  # empty: transparent mode off
    mode: str = "redirect"  # how the firewall hands connections over: redirect | tproxy
    ports: tuple[int, ...] = (80, 443)  # destination ports the rules send to proxyd
    nameless: str = "direct"  # no SNI or Host: direct to the original address, or refuse
    name_timeout: float = 2.0  # how long to wait for the first bytes that carry the name
    interfaces: tuple[str, ...] = ()  # LAN interfaces; empty: match the allow networks
    owner: str = ""  # user or uid proxyd runs as: the rules mark its own connections


TOR_UPSTREAM = UpstreamConfig.from_url("tor", "socks5h://127.0.0.1:9050", tor=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 8080),)
    admin: ListenAddress | None = ListenAddress("127.0.0.1", 9477)  # None: no admin listener
    allow: tuple[Network, ...] = ()
    log_level: str = "info"
    access_log: bool = False
    metrics: bool = True  # False: no per-request accounting and no /metrics
    admin_token: str | None = None  # bearer token the admin API requires (not /healthz)
    state_dir: Path | None = None  # None: $STATE_DIRECTORY or the XDG state dir
    via: bool = False
    # Clients that are not loopback may not reach loopback, link-local or this machine's
    # own addresses through the proxy (the router's admin pages, local daemons).
    protect_local: bool = True
    auth: AuthConfig = AuthConfig()
    limits: Limits = Limits()
    learning: LearningConfig = LearningConfig()
    upstreams: tuple[UpstreamConfig, ...] = (TOR_UPSTREAM,)  # priority order
    rules: tuple[RuleConfig, ...] = ()  # first match wins
    mirrors: tuple[MirrorConfig, ...] = ()
    lists: tuple[ListConfig, ...] = ()  # imported block lists, priors for learning
    dns: DnsConfig = DnsConfig()
    dns_listen: tuple[ListenAddress, ...] = ()  # the LAN DNS listener (UDP and TCP)
    transparent: TransparentConfig = TransparentConfig()

    def upstream(self, name: str) -> UpstreamConfig:
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream
        raise KeyError(name)

    def mirror(self, name: str) -> MirrorConfig:
        for mirror in self.mirrors:
            if mirror.name == name:
                return mirror
        raise KeyError(name)

    @property
    def tor_upstream(self) -> UpstreamConfig | None:
        """Where ``.onion`` goes: the first upstream with ``tor = true``, if any."""
        return next((u for u in self.upstreams if u.tor), None)
