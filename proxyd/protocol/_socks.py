# Over 400 lines: SOCKS4, 4a and 5 server handshakes share one state machine and reply encoder.
"""Sans-IO server side of SOCKS5 (RFC 1928), its username/password auth (RFC 1929) and SOCKS4/4a.

The daemon sniffs the first byte (0x05 or 0x04) and feeds every byte the client sends to one
``SocksHandshake``; this module never touches a socket.

API::

    hs = SocksHandshake(check_credentials=None, max_buffer=LARGEST_VALID_HANDSHAKE)
    for event in hs.receive_data(chunk):
        SendBytes(data)                 -> write data to the client, keep reading
        ConnectRequest(host, port, version, address_type, username)
                                        -> dial; then write hs.success_reply(bound_host, bound_port)
                                           or hs.failure_reply(socks5_code), then hs.leftover
                                           goes to the server (never drop it)
        HandshakeFailed(reply, reason)  -> write reply (may be empty), then close
    An empty list means: need more bytes.

Decisions:

- Methods: with ``check_credentials`` set, SOCKS5 clients must pick 0x02 and the callback decides
  (``False`` -> auth status 0x01, then ``HandshakeFailed``); SOCKS4 is refused with 0x5B after
  its request arrives, as it cannot carry a password. Without it 0x00 is chosen when offered,
  else 0x02 with any credentials accepted: Tor-style isolation clients offer only user/pass.
- ``username``: the RFC 1929 name or the SOCKS4 userid (None when absent or empty userid), so
  the caller can carry it as an isolation key. Credentials are decoded as UTF-8 with
  ``surrogateescape``: lossless, and a UTF-8 password compares equal to the configured str.
  Empty fields reach the callback as-is; its exceptions propagate out of ``receive_data``.
- Only CONNECT. Any other command -> 0x07 (SOCKS4: 0x5B); unknown ATYP -> 0x08. RSV must be 0
  (as Tor requires); anything else is a malformed request (0x01).
- Hosts: a domain must be 1..255 bytes of printable ASCII (0x21-0x7E), reported as sent; IDN
  clients send punycode, and anything else (NUL, spaces, UTF-8) is refused rather than passed
  to DNS and routing. IPv6 is reported in RFC 5952 form. IPv4-mapped IPv6 (::ffff:a.b.c.d) is
  reported as the IPv4 address with ``address_type="ipv4"`` so loopback/private checks see it.
  Port 0 and SOCKS4 address 0.0.0.0 are refused.
- SOCKS4 userid and SOCKS4a hostname: at most 255 bytes before the NUL.
- ``max_buffer`` bounds the bytes the handshake messages themselves may take (pipelined
  greeting, auth and request added up); it never counts optimistic data after the request. The
  default is the largest valid handshake, so only a caller that lowers it refuses real clients.
- Bytes after the request (e.g. a TLS ClientHello sent before our reply) are kept in
  ``leftover``; ``receive_data`` after the ``ConnectRequest`` appends to it and returns [].
  After ``HandshakeFailed`` further input is ignored.
- Parsing is a pure function of the buffered bytes, so feeding byte by byte yields exactly the
  events of feeding everything at once.

``HandshakeFailed.reason`` is one of a bounded set of labels (usable as a metric label):
unknown_version, no_methods, no_acceptable_method, bad_auth_version, bad_credentials,
bad_request_version, unsupported_command, nonzero_reserved, unsupported_address_type,
invalid_domain, invalid_address, port_zero, userid_too_long, hostname_too_long,
credentials_required, handshake_too_large.

``success_reply``/``failure_reply`` called at the wrong time raise ``SocksStateError``; a
``bound_host`` that is neither an IP nor a short ASCII name, or a code outside 1..8, raise
``ValueError``.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from proxyd.errors import ProxydError

AddressType = Literal["domain", "ipv4", "ipv6"]

# greeting 2+255, RFC 1929 auth 3+255+255, request 4+1+255+2 (SOCKS4a needs only 8+256+256).
LARGEST_VALID_HANDSHAKE = 1032

_SOCKS4_NAME_LIMIT = 255
_METHOD_NO_AUTH = 0x00
_METHOD_USER_PASS = 0x02
_NO_ACCEPTABLE_METHODS = b"\x05\xff"
_AUTH_OK = b"\x01\x00"
_AUTH_FAILED = b"\x01\x01"
_SOCKS4_GRANTED = 0x5A
_SOCKS4_REJECTED = 0x5B
_GENERAL_FAILURE = 0x01
_COMMAND_NOT_SUPPORTED = 0x07
_ADDRESS_TYPE_NOT_SUPPORTED = 0x08


@dataclass(frozen=True)
class SendBytes:
    data: bytes


@dataclass(frozen=True)
class ConnectRequest:
    host: str
    port: int
    version: int
    address_type: AddressType
    username: str | None


@dataclass(frozen=True)
class HandshakeFailed:
    reply: bytes
    reason: str


Event = SendBytes | ConnectRequest | HandshakeFailed


class SocksStateError(ProxydError):
    """The caller asked for a reply the handshake is not ready for (or already gave)."""


class _Refused(Exception):
    def __init__(self, reply: bytes, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


class _Phase(enum.Enum):
    FIRST_MESSAGE = enum.auto()
    SOCKS5_AUTH = enum.auto()
    SOCKS5_REQUEST = enum.auto()
    AWAITING_DIAL = enum.auto()
    REPLIED = enum.auto()
    FAILED = enum.auto()


_PARSING = (_Phase.FIRST_MESSAGE, _Phase.SOCKS5_AUTH, _Phase.SOCKS5_REQUEST)


class SocksHandshake:
    def __init__(
        self,
        *,
        check_credentials: Callable[[str, str], bool] | None = None,
        max_buffer: int = LARGEST_VALID_HANDSHAKE,
    ) -> None:
        self._check_credentials = check_credentials
        self._max_buffer = max_buffer
        self._phase = _Phase.FIRST_MESSAGE
        self._version = 0
        self._buffer = bytearray()
        self._consumed = 0
        self._username: str | None = None
        self._leftover = bytearray()

    @property
    def leftover(self) -> bytes:
        """Client bytes that followed its request; forward them to the server first."""
        return bytes(self._leftover)

    def receive_data(self, data: bytes) -> list[Event]:
        if self._phase is _Phase.FAILED:
            return []
        if self._phase not in _PARSING:
            self._leftover += data
            return []
        self._buffer += data
        events: list[Event] = []
        try:
            if not self._version and self._buffer:
                self._version = self._buffer[0]
                if self._version not in (4, 5):
                    raise _Refused(b"", "unknown_version")
            while self._phase in _PARSING:
                # Parsing only what fits under the bound keeps the outcome independent of how
                # the bytes were chunked: an oversized message fails the same way either way.
                room = max(self._max_buffer - self._consumed, 0)
                parsed = self._parse_next(bytes(self._buffer[:room]))
                if parsed is None:
                    if len(self._buffer) > room:
                        raise _Refused(self._refusal_reply(), "handshake_too_large")
                    break
                event, length = parsed
                del self._buffer[:length]
                self._consumed += length
                events.append(event)
        except _Refused as refused:
            self._phase = _Phase.FAILED
            self._buffer.clear()
            events.append(HandshakeFailed(refused.reply, refused.reason))
            return events
        if self._phase is _Phase.AWAITING_DIAL:
            self._leftover = self._buffer
            self._buffer = bytearray()
        return events

    def success_reply(self, bound_host: str, bound_port: int) -> bytes:
        self._finish_dial()
        port = _port_bytes(bound_port)
        if self._version == 4:
            # SOCKS4 replies can only carry IPv4; clients ignore the address anyway.
            address = _ip_address(bound_host)
            packed = address.packed if address is not None and address.version == 4 else bytes(4)
            return bytes([0, _SOCKS4_GRANTED]) + port + packed
        return b"\x05\x00\x00" + _socks5_address(bound_host) + port

    def failure_reply(self, socks5_code: int) -> bytes:
        if not 1 <= socks5_code <= 8:
            raise ValueError(f"SOCKS5 failure codes are 1..8, not {socks5_code}")
        self._finish_dial()
        if self._version == 4:
            return _socks4_reply(_SOCKS4_REJECTED)
        return _socks5_reply(socks5_code)

    def _finish_dial(self) -> None:
        if self._phase is not _Phase.AWAITING_DIAL:
            raise SocksStateError(f"no connect request awaiting a reply (phase {self._phase.name})")
        self._phase = _Phase.REPLIED

    def _refusal_reply(self) -> bytes:
        if self._version == 4:
            return _socks4_reply(_SOCKS4_REJECTED)
        if self._phase is _Phase.FIRST_MESSAGE:
            return _NO_ACCEPTABLE_METHODS
        if self._phase is _Phase.SOCKS5_AUTH:
            return _AUTH_FAILED
        return _socks5_reply(_GENERAL_FAILURE)

    def _parse_next(self, buf: bytes) -> tuple[Event, int] | None:
        """One complete message at the head of ``buf`` and its length, or None for need-more.

        Fields are checked in wire order, so a verdict on a prefix never changes as more bytes
        arrive.
        """
        if self._phase is _Phase.SOCKS5_AUTH:
            return self._parse_auth(buf)
        if self._phase is _Phase.SOCKS5_REQUEST:
            return self._parse_socks5_request(buf)
        if self._version == 5:
            return self._parse_greeting(buf)
        return self._parse_socks4_request(buf)

    def _parse_greeting(self, buf: bytes) -> tuple[Event, int] | None:
        if len(buf) < 2:
            return None
        count = buf[1]
        if count == 0:
            raise _Refused(_NO_ACCEPTABLE_METHODS, "no_methods")
        if len(buf) < 2 + count:
            return None
        offered = buf[2 : 2 + count]
        if self._check_credentials is None and _METHOD_NO_AUTH in offered:
            method = _METHOD_NO_AUTH
        elif _METHOD_USER_PASS in offered:
            method = _METHOD_USER_PASS
        else:
            raise _Refused(_NO_ACCEPTABLE_METHODS, "no_acceptable_method")
        self._phase = _Phase.SOCKS5_AUTH if method == _METHOD_USER_PASS else _Phase.SOCKS5_REQUEST
        return SendBytes(bytes([5, method])), 2 + count

    def _parse_auth(self, buf: bytes) -> tuple[Event, int] | None:
        if not buf:
            return None
        if buf[0] != 0x01:
            raise _Refused(_AUTH_FAILED, "bad_auth_version")
        if len(buf) < 2:
            return None
        name_end = 2 + buf[1]
        if len(buf) < name_end + 1:
            return None
        end = name_end + 1 + buf[name_end]
        if len(buf) < end:
            return None
        username = _decode_credential(buf[2:name_end])
        password = _decode_credential(buf[name_end + 1 : end])
        if self._check_credentials is not None and not self._check_credentials(username, password):
            raise _Refused(_AUTH_FAILED, "bad_credentials")
        self._username = username
        self._phase = _Phase.SOCKS5_REQUEST
        return SendBytes(_AUTH_OK), end

    def _parse_socks5_request(self, buf: bytes) -> tuple[Event, int] | None:
        if len(buf) < 4:
            return None
        if buf[0] != 5:
            raise _Refused(_socks5_reply(_GENERAL_FAILURE), "bad_request_version")
        if buf[1] != 0x01:
            raise _Refused(_socks5_reply(_COMMAND_NOT_SUPPORTED), "unsupported_command")
        if buf[2] != 0:
            raise _Refused(_socks5_reply(_GENERAL_FAILURE), "nonzero_reserved")
        address_type = buf[3]
        host: str
        kind: AddressType
        if address_type == 0x01:
            end = 8
            if len(buf) < end + 2:
                return None
            host, kind = str(ipaddress.IPv4Address(buf[4:end])), "ipv4"
        elif address_type == 0x04:
            end = 20
            if len(buf) < end + 2:
                return None
            address = _unmapped(ipaddress.IPv6Address(buf[4:end]))
            host, kind = str(address), "ipv4" if address.version == 4 else "ipv6"
        elif address_type == 0x03:
            if len(buf) < 5:
                return None
            end = 5 + buf[4]
            if len(buf) < end + 2:
                return None
            host, kind = _domain(buf[5:end], _socks5_reply(_GENERAL_FAILURE)), "domain"
        else:
            reply = _socks5_reply(_ADDRESS_TYPE_NOT_SUPPORTED)
            raise _Refused(reply, "unsupported_address_type")
        port = int.from_bytes(buf[end : end + 2], "big")
        if port == 0:
            raise _Refused(_socks5_reply(_GENERAL_FAILURE), "port_zero")
        self._phase = _Phase.AWAITING_DIAL
        return ConnectRequest(host, port, 5, kind, self._username), end + 2

    def _parse_socks4_request(self, buf: bytes) -> tuple[Event, int] | None:
        rejected = _socks4_reply(_SOCKS4_REJECTED)
        if len(buf) < 8:
            return None
        if buf[1] != 0x01:
            raise _Refused(rejected, "unsupported_command")
        port = int.from_bytes(buf[2:4], "big")
        if port == 0:
            raise _Refused(rejected, "port_zero")
        userid_end = _find_nul(buf, 8, "userid_too_long")
        if userid_end is None:
            return None
        end = userid_end + 1
        address = ipaddress.IPv4Address(buf[4:8])
        host: str
        kind: AddressType
        # SOCKS4a: 0.0.0.x with x != 0 means "the hostname follows the userid".
        if buf[4:7] == b"\x00\x00\x00" and buf[7] != 0:
            host_end = _find_nul(buf, end, "hostname_too_long")
            if host_end is None:
                return None
            host, kind = _domain(buf[end:host_end], rejected), "domain"
            end = host_end + 1
        elif address == ipaddress.IPv4Address(0):
            raise _Refused(rejected, "invalid_address")
        else:
            host, kind = str(address), "ipv4"
        if self._check_credentials is not None:
            raise _Refused(rejected, "credentials_required")
        userid = _decode_credential(buf[8:userid_end]) or None
        self._phase = _Phase.AWAITING_DIAL
        return ConnectRequest(host, port, 4, kind, userid), end


def _find_nul(buf: bytes, start: int, too_long_reason: str) -> int | None:
    nul = buf.find(b"\x00", start, start + _SOCKS4_NAME_LIMIT + 1)
    if nul >= 0:
        return nul
    if len(buf) > start + _SOCKS4_NAME_LIMIT:
        raise _Refused(_socks4_reply(_SOCKS4_REJECTED), too_long_reason)
    return None


def _domain(raw: bytes, reply: bytes) -> str:
    if not raw or any(byte < 0x21 or byte > 0x7E for byte in raw):
        raise _Refused(reply, "invalid_domain")
    return raw.decode("ascii")


def _decode_credential(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _unmapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return _unmapped(ipaddress.ip_address(host))
    except ValueError:
        return None


def _socks5_address(host: str) -> bytes:
    address = _ip_address(host)
    if address is not None:
        return (b"\x01" if address.version == 4 else b"\x04") + address.packed
    raw = host.encode("ascii") if host.isascii() else b""
    if not 1 <= len(raw) <= 255:
        raise ValueError(f"bound host {host!r} is neither an IP address nor a short ASCII name")
    return bytes([0x03, len(raw)]) + raw


def _port_bytes(port: int) -> bytes:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    return port.to_bytes(2, "big")


def _socks5_reply(code: int) -> bytes:
    # The bound address of a failure is meaningless; RFC 1928 still requires one.
    return bytes([5, code, 0, 0x01]) + bytes(6)


def _socks4_reply(code: int) -> bytes:
    return bytes([0, code]) + bytes(6)
