"""Who may use the proxy and where they may go: client allow-list, proxy auth, destinations."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
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


class AccessPolicy:
    """Decisions that depend on the client: allow-list, credentials, reachable destinations."""

    def __init__(self, allow: Sequence[Network], users: Mapping[str, str]) -> None:
        self._allow = tuple(allow)
        self._users = {name.encode(): pw.encode() for name, pw in users.items()}

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
        client = parse_ip(client_ip)
        if client is None or client.is_loopback:
            return
        dest = parse_ip(dest_ip)
        if dest is not None and (dest.is_loopback or dest.is_link_local or dest.is_unspecified):
            raise Forbidden(dest_ip, port, "LAN clients may not reach loopback or link-local")
