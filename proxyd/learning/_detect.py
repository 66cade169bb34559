"""Classify a failed or suspicious attempt into evidence with a stable reason label.

Sans-IO and cheap: the first-visit logic calls it once per connection, on the first
server bytes or on the dial error. Reason values double as Prometheus label values and
match the ``reason`` of the ``proxyd.errors.DialError`` classes.

Public API:

- ``Reason`` (StrEnum) with ``.strength`` (``Strength.STRONG`` / ``WEAK`` / ``NONE``) and
  ``.is_outage_symptom`` (a dead uplink looks like this; it feeds network-down gating).
- ``classify_dial_error(err) -> Reason``.
- ``classify_first_response(client_first_bytes, server_first_bytes, *, fingerprints)
  -> Reason | None``: None means "looks like a real server".
- ``Fingerprints.compile(patterns, location=[...], body=[...], body_window=...)``:
  configured block page patterns (``re`` syntax, searched; a bad one raises ``re.error``).
- ``is_stall(server_bytes, *, server_closed, silence, stall_after) -> bool``: a direct
  tunnel that ended this way froze after some data (the "16 KB freeze"); weak evidence.
- ``is_cut(server_bytes, *, server_reset, server_closed, silence, stall_after) -> bool``:
  a direct tunnel reset mid-transfer, or gone silent, past the TLS handshake
  (``cut_after_data``); weak evidence.
- ``DnsPoisonDetector(blockpage_networks, *, same_address_threshold, window)`` with
  ``check(host, addresses, *, now)`` and ``note_blockpage_address(address)``.

Strength of each reason (what learning may conclude once the control route worked):

- STRONG, one observation suffices: a reset or EOF after our first bytes and before any
  answer, an injected ServerHello, a TLS alert or non-TLS bytes answering a ClientHello,
  a poisoned DNS answer, a block page (451, foreign redirect, fingerprint). A healthy
  server does none of these to a request another route gets answered.
- WEAK, needs repetition: connect and first-byte timeouts, the 16 KB stall and a cut
  after data (packet loss and overloaded servers look the same; the stall and the cut
  are confirmed by an upstream control instead); ``connection_refused``, because some
  filters answer SYNs to blocked addresses with RST but a stopped service looks
  identical; ``dns_lookup_error``, because ISP resolvers answering NXDOMAIN for blocked
  names is common but so is a flaky local resolver.
- NONE, never evidence: host/network unreachable (an ICMP error from our own path means
  the uplink or routing is broken, not the destination filtered), anything about an
  upstream or our own policy.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from proxyd.errors import DialError
from proxyd.learning._domains import (
    LOCAL_NETWORKS,
    IPAddress,
    IPNetwork,
    is_local_destination,
    normalise_host,
    parse_ip,
    registrable_domain,
)
from proxyd.protocol import tls_hello


class Strength(StrEnum):
    STRONG = "strong"
    WEAK = "weak"
    NONE = "none"


class Reason(StrEnum):
    CONNECTION_RESET = "connection_reset"
    EOF_BEFORE_RESPONSE = "eof_before_response"
    TLS_INJECTED = "tls_injected"
    TLS_ALERT_AFTER_HELLO = "tls_alert_after_hello"
    TLS_UNEXPECTED_RESPONSE = "tls_unexpected_response"
    DNS_POISON = "dns_poison"
    BLOCKPAGE_REDIRECT = "blockpage_redirect"
    BLOCKPAGE_FINGERPRINT = "blockpage_fingerprint"
    HTTP_451 = "http_451"
    CONNECT_TIMEOUT = "connect_timeout"
    FIRST_BYTE_TIMEOUT = "first_byte_timeout"
    STALL_AFTER_DATA = "stall_after_data"
    CUT_AFTER_DATA = "cut_after_data"
    CONNECTION_REFUSED = "connection_refused"
    DNS_LOOKUP_ERROR = "dns_lookup_error"
    HOST_UNREACHABLE = "host_unreachable"
    NETWORK_UNREACHABLE = "network_unreachable"
    UPSTREAM_FAILED = "upstream_failed"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    ONION_SERVICE_FAILED = "onion_service_failed"
    MIRROR_FAILED = "mirror_failed"  # about the mirror, never evidence about the site
    DESYNC_REJECTED = "desync_rejected"  # the server refused a reshaped hello: not censorship
    FORBIDDEN = "forbidden"
    GENERIC_FAILURE = "generic_failure"

    @property
    def strength(self) -> Strength:
        if self in _STRONG:
            return Strength.STRONG
        if self in _WEAK:
            return Strength.WEAK
        return Strength.NONE

    @property
    def is_outage_symptom(self) -> bool:
        """Our own uplink failing could produce this; a forged or real answer could not."""
        return self in _OUTAGE_SYMPTOMS


_STRONG = frozenset(
    {
        Reason.CONNECTION_RESET,
        Reason.EOF_BEFORE_RESPONSE,
        Reason.TLS_INJECTED,
        Reason.TLS_ALERT_AFTER_HELLO,
        Reason.TLS_UNEXPECTED_RESPONSE,
        Reason.DNS_POISON,
        Reason.BLOCKPAGE_REDIRECT,
        Reason.BLOCKPAGE_FINGERPRINT,
        Reason.HTTP_451,
    }
)
_WEAK = frozenset(
    {
        Reason.CONNECT_TIMEOUT,
        Reason.FIRST_BYTE_TIMEOUT,
        Reason.STALL_AFTER_DATA,
        Reason.CUT_AFTER_DATA,
        Reason.CONNECTION_REFUSED,
        Reason.DNS_LOOKUP_ERROR,
    }
)
_OUTAGE_SYMPTOMS = _WEAK | {
    Reason.CONNECTION_RESET,
    Reason.EOF_BEFORE_RESPONSE,
    Reason.HOST_UNREACHABLE,
    Reason.NETWORK_UNREACHABLE,
}


def classify_dial_error(err: DialError) -> Reason:
    # The error classes carry the same labels, so new subclasses map without a table;
    # one this module does not know yet is reported as generic (never evidence).
    try:
        return Reason(err.reason)
    except ValueError:
        return Reason.GENERIC_FAILURE


# --- the 16 KB freeze ----------------------------------------------------------------

# The "16 KB freeze": a filter lets a connection carry some server data (seen from 10 to
# 25 KB, often about 16 KB) and then drops every server packet for good. The connection
# cannot be told from an idle one by its bytes (they are encrypted), only by its shape:
# that much data, then silence until the client gave up, the server never closing.
STALL_MIN_BYTES = 10_000
STALL_MAX_BYTES = 32 * 1024
# A longer silence before the client closed is an idle keep-alive connection being
# dropped by the browser (Firefox waits 115 s), not a transfer that froze.
STALL_GIVE_UP_MAX = 60.0


def is_stall(server_bytes: int, *, server_closed: bool, silence: float, stall_after: float) -> bool:
    """A tunnel that carried ``server_bytes`` from the server, which then said nothing for
    ``silence`` seconds until the tunnel ended: did it freeze?"""
    return (
        not server_closed
        and STALL_MIN_BYTES <= server_bytes <= STALL_MAX_BYTES
        and stall_after <= silence <= STALL_GIVE_UP_MAX
    )


# --- a cut after data -------------------------------------------------------------

# A filter that lets a transfer start and then resets it (or drops the rest) when the
# connection has carried enough: seen at about 110 KB of a 1 MB download. Below this the
# bytes may still be the TLS handshake's server flight (certificates included), where
# the first-visit retry judges resets.
CUT_MIN_BYTES = 16 * 1024


def is_cut(
    server_bytes: int,
    *,
    server_reset: bool,
    server_closed: bool,
    silence: float,
    stall_after: float,
) -> bool:
    """A direct tunnel that carried ``server_bytes`` past the handshake and then either
    was reset on the server's side while its data was flowing (``silence`` short: an
    idle connection a server resets is no transfer cut), or heard nothing for ``silence``
    seconds until the client gave up, the server never closing. The freeze's shape
    (``is_stall``) is the small case of the second; a cut is the reason for the rest."""
    if server_bytes <= CUT_MIN_BYTES:
        return False
    if server_reset:
        return silence < stall_after
    return (
        not server_closed
        and server_bytes > STALL_MAX_BYTES
        and stall_after <= silence <= STALL_GIVE_UP_MAX
    )


# --- TLS -------------------------------------------------------------------------------

_TLS13 = 0x0304


def _classify_tls(client: bytes, server: bytes) -> Reason | None:
    if len(server) >= 1 and server[0] not in tls_hello.CONTENT_TYPES:
        # Plain bytes (typically an HTTP block page) thrown at a ClientHello.
        return Reason.TLS_UNEXPECTED_RESPONSE
    if len(server) < tls_hello.RECORD_HEADER:
        return None
    if tls_hello.is_record(server, tls_hello.ALERT):
        return Reason.TLS_ALERT_AFTER_HELLO
    client_session_id = tls_hello.client_session_id(client)
    answer = tls_hello.server_hello(server)
    if client_session_id is None or answer is None:
        return None
    # RFC 8446 §4.1.3: a TLS 1.3 server (and its HelloRetryRequest) MUST echo the
    # client's legacy_session_id, and clients abort otherwise, so a 1.3 ServerHello
    # that does not echo was not written by the server. That is what an injector that
    # never saw the real ClientHello produces. A TLS 1.2 server may legitimately answer
    # with a fresh id (full handshake, or the client's id not resumable), so a 1.2
    # ServerHello is never called injected on the session id alone.
    if answer.version == _TLS13 and answer.session_id != client_session_id:
        return Reason.TLS_INJECTED
    return None


# --- HTTP ------------------------------------------------------------------------------

_REQUEST_LINE = re.compile(rb"[A-Z]+ (\S+) HTTP/1\.[01]\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Fingerprints:
    location: tuple[re.Pattern[str], ...] = ()
    body: tuple[re.Pattern[bytes], ...] = ()
    body_window: int = 4096  # bytes of body searched: block pages say who they are early

    @classmethod
    def compile(
        cls,
        patterns: Iterable[str] = (),
        *,
        location: Iterable[str] = (),
        body: Iterable[str] = (),
        body_window: int = 4096,
    ) -> Fingerprints:
        """``patterns`` are searched in both places (the config's blockpage_fingerprints)."""
        patterns = tuple(patterns)
        return cls(
            location=tuple(re.compile(p) for p in (*patterns, *location)),
            body=tuple(re.compile(p.encode()) for p in (*patterns, *body)),
            body_window=body_window,
        )


def _head_fields(head: bytes) -> dict[str, str]:
    fields = {}
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            fields[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return fields


def _request_host(client: bytes) -> str | None:
    match = _REQUEST_LINE.match(client)
    if match is None:
        return None
    head = client.split(b"\r\n\r\n", 1)[0]
    authority = _head_fields(head).get("host") or urlsplit(match[1].decode("latin-1")).netloc
    try:
        return urlsplit("//" + authority).hostname
    except ValueError:
        return None


def _is_foreign_redirect(location: str, request_host: str) -> bool:
    try:
        target = urlsplit(location.strip()).hostname
    except ValueError:
        return False
    if not target:  # relative: same host
        return False
    if parse_ip(target) is not None:
        return normalise_host(target) != normalise_host(request_host)
    # Same registrable domain covers http->https, example.com -> www.example.com and
    # regional hosts; a block page lives on the censor's or the ISP's own domain.
    return registrable_domain(target) != registrable_domain(request_host)


def _classify_http(request_host: str, server: bytes, fingerprints: Fingerprints) -> Reason | None:
    status_match = _STATUS_LINE.match(server)
    if status_match is None:
        return None
    status = int(status_match[1])
    if status == 451:
        return Reason.HTTP_451
    head, _, body = server.partition(b"\r\n\r\n")
    location = _head_fields(head).get("location")
    if location is not None and any(p.search(location) for p in fingerprints.location):
        return Reason.BLOCKPAGE_FINGERPRINT
    window = body[: fingerprints.body_window]
    if any(p.search(window) for p in fingerprints.body):
        return Reason.BLOCKPAGE_FINGERPRINT
    if (
        status in _REDIRECT_STATUSES
        and location is not None
        and _is_foreign_redirect(location, request_host)
    ):
        return Reason.BLOCKPAGE_REDIRECT
    return None


def classify_first_response(
    client_first_bytes: bytes, server_first_bytes: bytes, *, fingerprints: Fingerprints
) -> Reason | None:
    if tls_hello.is_record(client_first_bytes, tls_hello.HANDSHAKE):
        return _classify_tls(client_first_bytes, server_first_bytes)
    request_host = _request_host(client_first_bytes)
    if request_host is not None:
        return _classify_http(request_host, server_first_bytes, fingerprints)
    return None


# --- DNS -------------------------------------------------------------------------------

# Answers no public name has: local ranges plus multicast, reserved and documentation
# space. 198.18.0.0/15 is left out on purpose (see proxyd.learning._domains.LOCAL_NETWORKS).
BOGON_NETWORKS: tuple[IPNetwork, ...] = LOCAL_NETWORKS + tuple(
    ipaddress.ip_network(net)
    for net in (
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "2001:db8::/32",
        "ff00::/8",
    )
)


class DnsPoisonDetector:
    """Spot forged DNS answers for public names.

    The repeated-address rule only counts answers made of a single address: CDNs and
    shared hosts usually hand out several, while a censor's resolver points every
    blocked name at its one block-page server. It remembers at most
    ``max_tracked_addresses`` addresses and forgets domains after ``window`` seconds.
    """

    def __init__(
        self,
        blockpage_networks: Iterable[str | IPNetwork] = (),
        *,
        same_address_threshold: int = 5,
        window: float = 60.0,
        max_tracked_addresses: int = 4096,
    ) -> None:
        self._suspect_networks = BOGON_NETWORKS + tuple(
            ipaddress.ip_network(n) for n in blockpage_networks
        )
        self._threshold = same_address_threshold
        self._window = window
        self._max_tracked = max_tracked_addresses
        self._blockpage_addresses: OrderedDict[IPAddress, None] = OrderedDict()
        self._domains_by_address: OrderedDict[IPAddress, dict[str, float]] = OrderedDict()

    def note_blockpage_address(self, address: str | IPAddress) -> None:
        ip = parse_ip(str(address))
        if ip is None:
            return
        self._blockpage_addresses[ip] = None
        self._blockpage_addresses.move_to_end(ip)
        if len(self._blockpage_addresses) > self._max_tracked:
            self._blockpage_addresses.popitem(last=False)

    def check(
        self, host: str, addresses: Sequence[str | IPAddress], *, now: float
    ) -> Reason | None:
        if is_local_destination(host) or parse_ip(host) is not None:
            return None  # private answers are expected there; literals are not looked up
        answer = {ip for ip in (parse_ip(str(a)) for a in addresses) if ip is not None}
        for ip in answer:
            if ip in self._blockpage_addresses or any(ip in net for net in self._suspect_networks):
                return Reason.DNS_POISON
        if len(answer) == 1:
            return self._check_repeated(answer.pop(), registrable_domain(host), now)
        return None

    def _check_repeated(self, ip: IPAddress, domain: str, now: float) -> Reason | None:
        seen = self._domains_by_address.pop(ip, {})
        seen = {d: at for d, at in seen.items() if now - self._window <= at <= now}
        seen[domain] = now
        self._domains_by_address[ip] = seen  # re-inserted last: oldest evicted first
        if len(self._domains_by_address) > self._max_tracked:
            self._domains_by_address.popitem(last=False)
        return Reason.DNS_POISON if len(seen) >= self._threshold else None
