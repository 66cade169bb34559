"""Hostile input over real sockets: each attack gets a clean refusal (never a traceback), and
the same daemon serves a normal request right after it."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from tests.integration.test_errors import exchange, status_of, still_serves
from tests.support.origin import OriginServer
from tests.support.proc import Proxyd

GET = b"GET http://127.0.0.1/ HTTP/1.1\r\n"


@pytest.fixture(scope="module")
def proxyd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxyd]:
    """One daemon takes every attack in this module, and must serve after each."""
    proc = Proxyd(tmp_path=tmp_path_factory.mktemp("hostile"))
    yield proc
    proc.stop()
    proc.assert_clean_log()


@pytest.mark.parametrize(
    "head",
    [
        GET + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        GET + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        GET + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        GET + b"Content-Length: 5, 6\r\n\r\nhello!",
        GET + b"Content-Length: abc\r\n\r\n",
        GET + b"Content-Length: -1\r\n\r\n",
        GET + b"Content-Length: +5\r\n\r\nhello",
        GET + b"Content-Length: 99999999999999999999999\r\n\r\n",
        GET + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        GET + b"X-Folded: a\r\n b\r\n\r\n",
        GET + b"X-Folded: a\r\n\tb\r\n\r\n",
        b"GET http://127.0.0.1/ HTTP/1.1\nHost: x\n\n",
        GET + b"Host: x\n\r\n",
        GET + b"X-Nul: a\x00b\r\n\r\n",
        b"GET http://127.0.0.1/\x00 HTTP/1.1\r\n\r\n",
        GET + b"X\x00: a\r\n\r\n",
        GET + b"Host : x\r\n\r\n",
    ],
    ids=[
        "cl-then-te",
        "te-then-cl",
        "duplicate-differing-cl",
        "cl-list",
        "cl-not-a-number",
        "cl-negative",
        "cl-plus-sign",
        "cl-overflow",
        "te-not-ending-in-chunked",
        "obs-fold-space",
        "obs-fold-tab",
        "bare-lf",
        "bare-lf-in-last-line",
        "nul-in-value",
        "nul-in-target",
        "nul-in-name",
        "space-before-colon",
    ],
)
def test_smuggling_shapes_get_400_and_the_daemon_still_serves(
    proxyd: Proxyd, origin: OriginServer, head: bytes
) -> None:
    status = status_of(exchange(proxyd, head))
    assert status in (400, 501), status  # 501: a transfer coding proxyd does not implement
    still_serves(proxyd, origin)


@pytest.mark.parametrize(
    "target",
    [b"example.org", b"example.org:", b"example.org:0", b"::1:443", b"[::1", b"example.org:99999"],
    ids=["no-port", "empty-port", "port-0", "bracketless-ipv6", "unclosed-bracket", "port-range"],
)
def test_connect_to_odd_targets_gets_400_and_the_daemon_still_serves(
    proxyd: Proxyd, origin: OriginServer, target: bytes
) -> None:
    assert status_of(exchange(proxyd, b"CONNECT " + target + b" HTTP/1.1\r\n\r\n")) == 400
    still_serves(proxyd, origin)


def test_absurd_header_count_gets_431_and_the_daemon_still_serves(
    proxyd: Proxyd, origin: OriginServer
) -> None:
    # 20,000 one-byte headers fit no sane head: refused by count and size, never parsed.
    head = GET + b"a:\r\n" * 20_000 + b"\r\n"
    assert status_of(exchange(proxyd, head)) == 431
    head = GET + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n"
    assert status_of(exchange(proxyd, head)) == 431
    still_serves(proxyd, origin)


SOCKS5_OK_GREETING = b"\x05\x01\x00"


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        (b"\x05", b""),  # truncated greeting, then EOF
        (b"\x05\x03\x00", b""),  # promises 3 methods, sends 1
        (b"\x05\x00", b"\x05\xff"),  # zero methods
        (SOCKS5_OK_GREETING + b"\x05\x01\x00\x03\x10abc", b"\x05\x00"),  # domain cut short
        (SOCKS5_OK_GREETING + b"\x05\x01\x00\x01\x7f\x00", b"\x05\x00"),  # IPv4 cut short
        (SOCKS5_OK_GREETING + b"\x05\x01\x00\x03\x00\x00\x50", b"\x05\x00\x05\x01"),  # empty name
        (SOCKS5_OK_GREETING + b"\x05\x01\x00\x03\x03a\x00b\x00\x50", b"\x05\x00\x05\x01"),  # NUL
        (SOCKS5_OK_GREETING + b"\x05\x01\x00\x09" + b"\x00" * 8, b"\x05\x00\x05\x08"),  # ATYP
        (SOCKS5_OK_GREETING + b"\x05\x01\x00\x03\x04host\x00\x00", b"\x05\x00\x05\x01"),  # port 0
        (SOCKS5_OK_GREETING + b"\x05\x01\x07\x01\x7f\x00\x00\x01\x00\x50", b"\x05\x00\x05\x01"),
        (b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 300 + b"\x00", b"\x00\x5b"),  # long userid
        (b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"h" * 300 + b"\x00", b"\x00\x5b"),  # 4a host
        (b"\x04\x01\x00\x50\x00\x00\x00\x00\x00", b"\x00\x5b"),  # SOCKS4 to 0.0.0.0
        (b"\x04\x01\x00\x50\x7f", b""),  # truncated SOCKS4 request
    ],
    ids=[
        "greeting-1-byte",
        "greeting-short-methods",
        "greeting-no-methods",
        "domain-truncated",
        "ipv4-truncated",
        "empty-domain",
        "nul-in-domain",
        "unknown-address-type",
        "port-0",
        "reserved-nonzero",
        "socks4-userid-over-255",
        "socks4a-hostname-over-255",
        "socks4-null-address",
        "socks4-truncated",
    ],
)
def test_malformed_socks_gets_a_refusal_and_the_daemon_still_serves(
    proxyd: Proxyd, origin: OriginServer, data: bytes, answer: bytes
) -> None:
    got = exchange(proxyd, data, half_close=True)
    assert got[: len(answer)] == answer and len(got) <= len(answer) + 8, got
    still_serves(proxyd, origin)


def test_oversized_socks5_credentials_are_refused_and_the_daemon_still_serves(
    proxyd: Proxyd, origin: OriginServer
) -> None:
    # Without configured users any credentials are accepted (Tor-style isolation); a
    # username field claiming 255 bytes and then ending is still just a truncated message.
    data = b"\x05\x01\x02" + b"\x01\xff" + b"u" * 10
    assert exchange(proxyd, data, half_close=True) == b"\x05\x02"
    # 255-byte credentials are the RFC 1929 maximum and pass; the CONNECT then goes on.
    auth = b"\x01\xff" + b"u" * 255 + b"\xff" + b"p" * 255
    connect = b"\x05\x01\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", origin.port)
    got = exchange(proxyd, b"\x05\x01\x02" + auth + connect, half_close=True)
    assert got[:6] == b"\x05\x02\x01\x00\x05\x00", got
    still_serves(proxyd, origin)
