"""Typed failures shared by dialers, the first-visit logic and the client-facing answers.

Every failure carries a stable ``reason`` label (OONI's failure vocabulary is the model):
metrics use it as a label, ``detect`` turns it into evidence, and the client gets the
HTTP status or SOCKS reply code that fits it.
"""

from __future__ import annotations


class ProxydError(Exception):
    """Base of everything proxyd raises on purpose."""


class ClientGone(ProxydError):
    """The client closed or broke its connection; nothing more can be said to it."""


class DialError(ProxydError):
    """Opening a connection for a route failed."""

    reason = "generic_failure"
    http_status = 502
    socks5_reply = 0x01  # general SOCKS server failure

    def __init__(self, host: str, port: int, detail: str = "") -> None:
        self.host = host
        self.port = port
        self.detail = detail
        super().__init__(self.describe())

    def describe(self) -> str:
        cause = self.detail or self.reason.replace("_", " ")
        return f"{self.host}:{self.port}: {cause}"


class DnsLookupError(DialError):
    reason = "dns_lookup_error"
    socks5_reply = 0x04  # host unreachable


class ConnectionRefused(DialError):
    reason = "connection_refused"
    socks5_reply = 0x05


class ConnectTimeout(DialError):
    reason = "connect_timeout"
    http_status = 504
    socks5_reply = 0x04


class AnswerTimeout(DialError):
    """Connected, but the server sent no first byte in time (on every route tried)."""

    reason = "first_byte_timeout"
    http_status = 504
    socks5_reply = 0x04


class HostUnreachable(DialError):
    reason = "host_unreachable"
    socks5_reply = 0x04


class NetworkUnreachable(DialError):
    reason = "network_unreachable"
    socks5_reply = 0x03


class ConnectionReset(DialError):
    reason = "connection_reset"


class UpstreamError(DialError):
    """The upstream proxy itself failed or refused the request."""

    reason = "upstream_failed"


class UpstreamUnavailable(DialError):
    """No upstream was usable; ``detail`` names the ones tried."""

    reason = "upstream_unavailable"


class MirrorError(DialError):
    """A mirror could not answer; ``detail`` names the mirror and says why."""

    reason = "mirror_failed"


class Forbidden(DialError):
    """Policy refuses the destination (rule ``reject``, loop, private address)."""

    reason = "forbidden"
    http_status = 403
    socks5_reply = 0x02  # connection not allowed by ruleset


class DnsPoisoned(DialError):
    """The resolver's answer is a known block-page, bogon or private address."""

    reason = "dns_poison"
    socks5_reply = 0x04


class OnionServiceError(DialError):
    """Tor could not reach an onion service; ``detail`` says which step failed.

    From Tor's extended SOCKS5 codes 0xF0-0xF7 (SocksPort flag ExtendedErrors).
    """

    reason = "onion_service_failed"
    socks5_reply = 0x04  # host unreachable: the closest standard code
