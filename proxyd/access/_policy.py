"""Who may use the proxy and where they may go: client allow-list, proxy auth, destinations."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence

from proxyd.errors import Forbidden

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class AuthThrottle:
    """Failed logins per client address in a sliding window, so passwords cannot be guessed
    at wire speed. Bounded: the oldest addresses are forgotten first."""

    MAX_CLIENTS = 4096

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked(self, client_ip: str, *, now: float) -> bool:
        times = self._failures.get(client_ip)
        if times is None:
            return False
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client_ip]
            return False
        return len(times) >= self.max_failures

    def failed(self, client_ip: str, *, now: float) -> None:
        times = self._failures.pop(client_ip, None) or deque()
        times.append(now)
        while len(times) > self.max_failures:
            times.popleft()
        self._failures[client_ip] = times
        while len(self._failures) > self.MAX_CLIENTS:
            self._failures.popitem(last=False)


class AccessPolicy:
    """Decisions that depend on the client: allow-list, credentials, reachable destinations."""

    def __init__(
        self,
        allow: Sequence[Network],
        users: Mapping[str, str],
        *,
        protect_local: bool = True,
        throttle: AuthThrottle | None = None,
    ) -> None:
        self._allow = tuple(allow)
        self._users = {name.encode(): pw.encode() for name, pw in users.items()}
        self._protect_local = protect_local
        self.throttle = throttle or AuthThrottle(10, 60.0)

    @property
    def auth_required(self) -> bool:
        return bool(self._users)

    def client_allowed(self, client_ip: str) -> bool:
        addr = parse_ip(client_ip)
        if addr is None:
            return False
        if not self._allow:
            # Without an allow-list only this machine may connect (the config refuses to
            # bind a non-loopback address without one, so this is the loopback case).
            return addr.is_loopback
        return any(addr in net for net in self._allow)

    def check_credentials(self, username: str, password: str) -> bool:
        # Loaded on the first credentials: hmac brings hashlib and OpenSSL's digests (0.7 MB)
        # into a daemon that, without [auth], never needs them.
        import hmac

        expected = self._users.get(username.encode("utf-8", "surrogateescape"))
        if expected is None:
            # Compare anyway so a wrong user name costs the same time as a wrong password.
            hmac.compare_digest(b"\0" * 16, password.encode("utf-8", "surrogateescape"))
            return False
        return hmac.compare_digest(expected, password.encode("utf-8", "surrogateescape"))

    def check_basic(self, header: str | None) -> bool:
        """Validate a ``Proxy-Authorization: Basic ...`` header value."""
        if not self._users:
            return True
        if header is None:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        return bool(sep) and self.check_credentials(user, password)

    def check_destination(self, client_ip: str, dest_ip: str, port: int) -> None:
        """Clients from other machines must not reach this machine's private services."""
        if not self._protect_local:
            return
        client = parse_ip(client_ip)
        if client is None or client.is_loopback:
            return
        dest = parse_ip(dest_ip)
        if dest is None:
            return
        if dest.is_loopback or dest.is_link_local or dest.is_unspecified:
            raise Forbidden(dest_ip, port, "LAN clients may not reach loopback or link-local")
        if is_own_address(dest):
            raise Forbidden(dest_ip, port, "LAN clients may not reach this machine through it")


def is_own_address(addr: IPAddress) -> bool:
    """Whether ``addr`` belongs to this machine: only such addresses can be bound.

    Asking the kernel follows interfaces coming and going (DHCP, PPPoE) with no table to
    keep fresh, for one cheap syscall.
    """
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(addr), 0))
        except OSError:
            return False
    return True
