# Over 400 lines: four client handshakes (SOCKS5, 4, 4a, CONNECT) share receive and error logic.
"""Sans-IO client side of the handshakes proxyd speaks to upstream proxies.

SOCKS5 (RFC 1928) with username/password (RFC 1929), SOCKS4 and SOCKS4a, HTTP CONNECT
(RFC 9110 §9.3.6), plus the cheap "is it alive" probes the health checks use. No socket
here: ``proxyd.outbound._upstreams`` moves the bytes.

API::

    hs = Socks5Handshake(target, credentials=("user", "pass"))  # or Socks4/HttpConnect...
    send(hs.start())
    while not hs.established:
        data = peek(sock)              # what has arrived, left in the kernel
        used = hs.receive_data(data)   # how much of it belongs to the handshake
        drop(sock, used)               # the rest is the tunnel's
        send(hs.data_to_send())
    on EOF or reset:   raise hs.closed_error()  # or closed_error("reset the connection")
    on the deadline:   raise hs.timeout_error(seconds)

``receive_data`` consumes exactly the handshake's bytes and never more: whatever a server
sends right after its reply (an SSH or SMTP banner) stays in the socket for the relay. It
raises a ``DialError`` subclass when the upstream refuses; each class says whose fault it
is, which is what the router needs:

- ``UpstreamError``: the upstream itself is broken or misconfigured for us (wrong
  protocol, credentials refused, malformed answer, no answer to the greeting);
- the destination's failure as the upstream reports it: ``ConnectionRefused``,
  ``HostUnreachable``, ``NetworkUnreachable``, ``ConnectTimeout``, ``Forbidden``,
  ``OnionServiceError`` (Tor's extended codes), or a plain ``DialError``.

``awaiting_destination`` is True once the CONNECT request is out: from then on silence or
a hang-up is the destination's (or the circuit's) doing rather than the upstream's.

Every error detail starts with ``Target.upstream`` ("upstream tor (127.0.0.1:9050)")
followed by ": "; ``upstream_label`` builds it.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass

from proxyd.errors import (
    ConnectionRefused,
    ConnectTimeout,
    DialError,
    Forbidden,
    HostUnreachable,
    NetworkUnreachable,
    OnionServiceError,
    UpstreamError,
)

# An answer to CONNECT is a status line and a few headers; anything this big is not one.
MAX_HTTP_HEAD = 16384

_SOCKS5_REPLIES: dict[int, tuple[type[DialError], str]] = {
    0x01: (DialError, "general SOCKS server failure"),
    0x02: (Forbidden, "connection not allowed by the upstream's ruleset"),
    0x03: (NetworkUnreachable, "network unreachable"),
    0x04: (HostUnreachable, "host unreachable"),
    0x05: (ConnectionRefused, "connection refused by the destination"),
    # Tor answers TTL expired when the exit's connect timed out.
    0x06: (ConnectTimeout, "TTL expired (the destination did not answer in time)"),
    0x07: (DialError, "the upstream does not support CONNECT"),
    0x08: (DialError, "the upstream does not support this address type"),
}

# Tor's ExtendedErrors (proposal 304), sent for onion services when the SocksPort has the
# ExtendedErrors flag. Each tells the user something different to do.
_TOR_ONION_REPLIES: dict[int, str] = {
    0xF0: "onion service descriptor not found (the service is offline or the address is wrong)",
    0xF1: "onion service descriptor is invalid",
    0xF2: "onion service introduction failed",
    0xF3: "onion service rendezvous failed",
    0xF4: "onion service requires client authorization",
    0xF5: "onion service rejected our client authorization",
    0xF6: "invalid onion address",
    0xF7: "onion service introduction timed out",
}

_STATUS_LINE = re.compile(rb"HTTP/\d\.\d ([0-9]{3})(?:[ \t]([^\r\n]*))?\r?\n")
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


def upstream_label(name: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"upstream {name} ({shown}:{port})"


@dataclass(frozen=True, slots=True)
class Target:
    host: str  # the destination as the caller named it: errors name it
    port: int
    address: str  # what goes on the wire: the name (remote DNS) or an IP resolved here
    upstream: str  # upstream_label(...), the prefix of every error detail


class ClientHandshake:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.established = False
        self.awaiting_destination = False
        self._outgoing = bytearray()
        self._buffer = bytearray()

    def start(self) -> bytes:
        """The first bytes to send."""
        raise NotImplementedError

    def data_to_send(self) -> bytes:
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def receive_data(self, data: bytes) -> int:
        used = 0
        while used < len(data) and not self.established:
            missing = self._wanted() - len(self._buffer)
            taken = data[used : used + missing]
            self._buffer += taken
            used += len(taken)
            if len(taken) == missing:
                self._advance()
        return used

    def closed_error(self, how: str = "closed the connection") -> DialError:
        if self.awaiting_destination:
            return self._error(DialError, f"{how} without answering the request")
        return self._error(UpstreamError, f"{how} during the handshake")

    def timeout_error(self, seconds: float) -> DialError:
        if self.awaiting_destination:
            return self._error(
                ConnectTimeout, f"no answer from the destination within {seconds:g}s"
            )
        return self._error(UpstreamError, f"no answer to the handshake within {seconds:g}s")

    def _error(self, cls: type[DialError], text: str) -> DialError:
        return cls(self.target.host, self.target.port, f"{self.target.upstream}: {text}")

    def _wanted(self) -> int:
        """Length of the message being read, as far as the bytes so far tell."""
        raise NotImplementedError

    def _advance(self) -> None:
        """The buffer holds ``_wanted()`` bytes: act on them, or raise."""
        raise NotImplementedError


class Socks5Handshake(ClientHandshake):
    """SOCKS5 CONNECT; with ``probe`` it stops after the greeting and authentication."""

    def __init__(
        self,
        target: Target,
        *,
        credentials: tuple[str, str] | None = None,
        probe: bool = False,
    ) -> None:
        super().__init__(target)
        self._credentials = credentials
        self._probe = probe
        self._state = "method"

    def start(self) -> bytes:
        # Offering both lets a server that needs no password skip it, while Tor picks
        # user/pass whenever it is offered, which is what stream isolation relies on.
        methods = b"\x00\x02" if self._credentials else b"\x00"
        return b"\x05" + bytes([len(methods)]) + methods

    def _wanted(self) -> int:
        buf = self._buffer
        if self._state != "reply" or len(buf) < 2:
            return 2  # method and auth answers are 2 bytes; a reply's VER and REP come first
        if len(buf) < 4:
            return 4  # up to ATYP
        if buf[3] == 0x03 and len(buf) < 5:
            return 5  # the bound name's length byte
        return self._reply_length() or 4  # an unknown ATYP is refused at 4 bytes

    def _reply_length(self) -> int | None:
        buf = self._buffer
        if len(buf) < 4:
            return None
        if buf[3] == 0x01:
            return 10
        if buf[3] == 0x04:
            return 22
        if buf[3] == 0x03 and len(buf) >= 5:
            return 7 + buf[4]
        return None

    def _advance(self) -> None:
        buf = self._buffer
        if buf[0] != (0x01 if self._state == "auth" else 0x05):
            got = bytes(buf[:2])
            raise self._error(UpstreamError, f"did not answer like a SOCKS5 proxy (got {got!r})")
        if self._state == "method":
            method = buf[1]
            buf.clear()
            self._on_method(method)
        elif self._state == "auth":
            status = buf[1]
            buf.clear()
            if status != 0x00:
                raise self._error(UpstreamError, "rejected the username and password")
            self._authenticated()
        elif len(buf) == 2 and buf[1] != 0x00:
            raise self._reply_error(buf[1])
        elif len(buf) == 4 and buf[3] not in (0x01, 0x03, 0x04):
            raise self._error(UpstreamError, f"sent a reply with address type {buf[3]:#04x}")
        elif len(buf) == self._reply_length():
            self.established = True

    def _on_method(self, method: int) -> None:
        if method == 0x00:
            self._authenticated()
        elif method == 0x02 and self._credentials:
            username, password = self._credentials
            self._outgoing += self._auth_request(username, password)
            self._state = "auth"
        elif method == 0xFF:
            hint = "" if self._credentials else " (it wants a username and password)"
            raise self._error(UpstreamError, "accepts none of our authentication methods" + hint)
        else:
            raise self._error(UpstreamError, f"chose authentication method {method:#04x}")

    def _auth_request(self, username: str, password: str) -> bytes:
        user, secret = username.encode(), password.encode()
        if not 1 <= len(user) <= 255 or len(secret) > 255:
            raise self._error(UpstreamError, "username must be 1-255 bytes, password 0-255")
        return b"\x01" + bytes([len(user)]) + user + bytes([len(secret)]) + secret

    def _authenticated(self) -> None:
        if self._probe:
            self.established = True
            return
        self._outgoing += b"\x05\x01\x00" + self._address() + self.target.port.to_bytes(2, "big")
        self._state = "reply"
        self.awaiting_destination = True

    def _address(self) -> bytes:
        ip = _ip(self.target.address)
        if ip is not None:
            return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
        name = _encode_name(self.target)
        return b"\x03" + bytes([len(name)]) + name

    def _reply_error(self, code: int) -> DialError:
        onion = _TOR_ONION_REPLIES.get(code)
        if onion is not None:
            return self._error(OnionServiceError, f"{onion} (Tor {code:#04x})")
        cls, text = _SOCKS5_REPLIES.get(code, (DialError, "unknown reply code"))
        return self._error(cls, f"{text} (SOCKS5 reply {code:#04x})")


class Socks4Handshake(ClientHandshake):
    """SOCKS4 CONNECT, or SOCKS4a when ``target.address`` is a name.

    ``probe`` asks for 0.0.0.0:0, which every server refuses at once: any well-formed
    reply proves it alive (SOCKS4 has no greeting to test instead).
    """

    def __init__(self, target: Target, *, userid: str = "", probe: bool = False) -> None:
        super().__init__(target)
        self._userid = userid
        self._probe = probe

    def start(self) -> bytes:
        self.awaiting_destination = not self._probe
        userid = self._userid.encode() + b"\x00"
        if self._probe:
            return b"\x04\x01\x00\x00\x00\x00\x00\x00" + userid
        port = self.target.port.to_bytes(2, "big")
        ip = _ip(self.target.address)
        if ip is None:
            return (
                b"\x04\x01"
                + port
                + b"\x00\x00\x00\x01"
                + userid
                + _encode_name(self.target)
                + b"\x00"
            )
        if ip.version != 4:
            raise self._error(DialError, "SOCKS4 cannot carry an IPv6 address")
        return b"\x04\x01" + port + ip.packed + userid

    def _wanted(self) -> int:
        return 8

    def _advance(self) -> None:
        version, code = self._buffer[0], self._buffer[1]
        if version not in (0x00, 0x04) or not 0x5A <= code <= 0x5D:
            got = bytes(self._buffer[:2])
            raise self._error(UpstreamError, f"did not answer like a SOCKS4 proxy (got {got!r})")
        if code in (0x5C, 0x5D):
            raise self._error(UpstreamError, f"wants identd, which we do not run ({code:#04x})")
        if code == 0x5B and not self._probe:
            raise self._error(DialError, "request rejected or failed (SOCKS4 reply 0x5b)")
        self.established = True


class HttpConnectHandshake(ClientHandshake):
    """HTTP CONNECT; with ``probe`` it sends ``OPTIONS *`` and takes any answer but 407.

    ``isolation`` goes in ``X-Tor-Stream-Isolation``, which Tor's HTTPTunnelPort isolates
    circuits on. With ``tor`` a 403 means the destination refused (Tor's mapping of
    END_REASON_CONNECTREFUSED) rather than a policy refusal.
    """

    def __init__(
        self,
        target: Target,
        *,
        credentials: tuple[str, str] | None = None,
        isolation: str | None = None,
        tor: bool = False,
        probe: bool = False,
    ) -> None:
        super().__init__(target)
        self._credentials = credentials
        self._isolation = isolation
        self._tor = tor
        self._probe = probe

    def start(self) -> bytes:
        authority = _authority(self.target)
        if self._probe:
            lines = ["OPTIONS * HTTP/1.1", f"Host: {authority}", "Connection: close"]
        else:
            lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
            self.awaiting_destination = True
        if self._credentials:
            basic = base64.b64encode(":".join(self._credentials).encode()).decode("ascii")
            lines.append(f"Proxy-Authorization: Basic {basic}")
        if self._isolation:
            lines.append(f"X-Tor-Stream-Isolation: {_header_value(self.target, self._isolation)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def receive_data(self, data: bytes) -> int:
        if self.established:
            return 0
        search_from = max(0, len(self._buffer) - 3)
        before = len(self._buffer)
        self._buffer += data
        ends = [i + len(m) for m in _HEAD_ENDS if (i := self._buffer.find(m, search_from)) >= 0]
        if not ends:
            if len(self._buffer) > MAX_HTTP_HEAD:
                raise self._error(UpstreamError, "sent an oversized answer to CONNECT")
            return len(data)
        end = min(ends)
        del self._buffer[end:]
        used = end - before
        self._on_head(bytes(self._buffer))
        self._buffer.clear()
        if not self.established:  # an interim 1xx answer: the final one follows
            used += self.receive_data(data[used:])
        return used

    def _on_head(self, head: bytes) -> None:
        match = _STATUS_LINE.match(head)
        if match is None:
            got = head[:40]
            raise self._error(UpstreamError, f"did not answer like an HTTP proxy (got {got!r})")
        status = int(match.group(1))
        phrase = (match.group(2) or b"").decode("latin-1").strip()
        answer = f"answered {status} {phrase}".rstrip()
        if status == 407:
            text = "rejected our credentials" if self._credentials else "requires authentication"
            raise self._error(UpstreamError, f"{text}: {answer}")
        if self._probe or 200 <= status < 300:
            self.established = True
        elif status >= 200:
            raise self._error(_http_error_class(status, tor=self._tor), answer)


def _http_error_class(status: int, *, tor: bool) -> type[DialError]:
    if status == 403:
        return ConnectionRefused if tor else Forbidden
    if status == 404:
        return HostUnreachable  # Tor: RESOLVEFAILED, NOROUTE
    if status == 504:
        return ConnectTimeout
    return DialError


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _encode_name(target: Target) -> bytes:
    address = target.address
    try:
        name = address.encode("ascii") if address.isascii() else address.encode("idna")
    except UnicodeError:
        name = b""
    # Refusing spaces and control bytes also rules out header injection in CONNECT.
    if not 1 <= len(name) <= 255 or any(b <= 0x20 or b >= 0x7F for b in name):
        raise DialError(target.host, target.port, f"{target.upstream}: invalid host name")
    return name


def _authority(target: Target) -> str:
    ip = _ip(target.address)
    if ip is None:
        host = _encode_name(target).decode("ascii")
    else:
        host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{host}:{target.port}"


def _header_value(target: Target, value: str) -> str:
    if not value.isprintable() or not value.isascii():
        raise DialError(target.host, target.port, f"{target.upstream}: invalid isolation key")
    return value
