"""Client handshakes to upstream proxies as transcripts: bytes out, bytes in, outcome."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from proxyd.protocol._upstream_handshake import (
    ClientHandshake,
    HttpConnectHandshake,
    Socks4Handshake,
    Socks5Handshake,
    Target,
    upstream_label,
)

LABEL = upstream_label("tor", "127.0.0.1", 9050)
SUCCESS_V4 = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90"


def target(address: str = "example.org", port: int = 443) -> Target:
    return Target(host="example.org", port=port, address=address, upstream=LABEL)


def feed(hs: ClientHandshake, data: bytes) -> int:
    return hs.receive_data(data)


def test_socks5_without_credentials_sends_name_and_is_established_by_the_reply() -> None:
    hs = Socks5Handshake(target())
    assert hs.start() == b"\x05\x01\x00"
    assert not hs.awaiting_destination
    assert feed(hs, b"\x05\x00") == 2
    assert hs.data_to_send() == b"\x05\x01\x00\x03\x0bexample.org\x01\xbb"
    assert hs.awaiting_destination
    assert feed(hs, SUCCESS_V4) == len(SUCCESS_V4)
    assert hs.established


def test_socks5_sends_credentials_when_the_server_picks_user_pass() -> None:
    hs = Socks5Handshake(target(), credentials=("example.org", "proxyd"))
    assert hs.start() == b"\x05\x02\x00\x02"
    feed(hs, b"\x05\x02")
    assert hs.data_to_send() == b"\x01\x0bexample.org\x06proxyd"
    feed(hs, b"\x01\x00")
    assert hs.data_to_send().startswith(b"\x05\x01\x00\x03")


def test_socks5_ip_destinations_are_sent_as_addresses() -> None:
    for address, encoded in [
        ("192.0.2.7", b"\x01\xc0\x00\x02\x07"),
        ("2001:db8::1", b"\x04" + bytes.fromhex("20010db8000000000000000000000001")),
    ]:
        hs = Socks5Handshake(target(address))
        hs.start()
        feed(hs, b"\x05\x00")
        assert hs.data_to_send() == b"\x05\x01\x00" + encoded + b"\x01\xbb"


def test_socks5_consumes_only_its_reply_and_leaves_the_servers_first_bytes() -> None:
    hs = Socks5Handshake(target())
    hs.start()
    feed(hs, b"\x05\x00")
    banner = b"SSH-2.0-OpenSSH_9.6\r\n"
    assert feed(hs, SUCCESS_V4 + banner) == len(SUCCESS_V4)
    assert hs.established


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40))
def test_socks5_reply_with_domain_bound_address_split_anywhere(sizes: list[int]) -> None:
    reply = b"\x05\x00\x00\x03\x09localhost\x01\xbb"
    hs = Socks5Handshake(target())
    hs.start()
    feed(hs, b"\x05\x00")
    stream = reply + b"tunnel bytes"
    pos = 0
    for size in sizes:
        if hs.established:
            break
        pos += feed(hs, stream[pos : pos + size])
    if pos < len(reply):
        pos += feed(hs, stream[pos:])
    assert hs.established
    assert pos == len(reply)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (0x01, DialError),
        (0x02, Forbidden),
        (0x03, NetworkUnreachable),
        (0x04, HostUnreachable),
        (0x05, ConnectionRefused),
        (0x06, ConnectTimeout),
        (0x07, DialError),
        (0x08, DialError),
        (0x42, DialError),
    ],
)
def test_socks5_reply_codes_map_to_the_destinations_failure(code: int, cls: type) -> None:
    hs = Socks5Handshake(target())
    hs.start()
    feed(hs, b"\x05\x00")
    with pytest.raises(DialError) as info:
        feed(hs, bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
    assert type(info.value) is cls
    assert info.value.host == "example.org"
    assert info.value.detail.startswith(LABEL + ": ")
    assert f"{code:#04x}" in info.value.detail


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0xF0, "descriptor not found"),
        (0xF1, "descriptor is invalid"),
        (0xF2, "introduction failed"),
        (0xF3, "rendezvous failed"),
        (0xF4, "requires client authorization"),
        (0xF5, "rejected our client authorization"),
        (0xF6, "invalid onion address"),
        (0xF7, "introduction timed out"),
    ],
)
def test_tor_extended_codes_are_distinct_onion_service_errors(code: int, words: str) -> None:
    hs = Socks5Handshake(target("abc.onion", 80))
    hs.start()
    feed(hs, b"\x05\x00")
    with pytest.raises(OnionServiceError) as info:
        feed(hs, bytes([5, code, 0, 1]))
    assert words in info.value.detail
    assert info.value.reason == "onion_service_failed"


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (b"\x05\xff", r"accepts none of our authentication methods \(it wants a username"),
        (b"HT", "did not answer like a SOCKS5 proxy"),
        (b"\x05\x01", "chose authentication method 0x01"),
    ],
)
def test_socks5_greeting_failures_are_the_upstreams_fault(answer: bytes, words: str) -> None:
    hs = Socks5Handshake(target())
    hs.start()
    with pytest.raises(UpstreamError, match=words):
        feed(hs, answer)


def test_socks5_rejected_credentials_are_the_upstreams_fault() -> None:
    hs = Socks5Handshake(target(), credentials=("u", "p"))
    hs.start()
    feed(hs, b"\x05\x02")
    with pytest.raises(UpstreamError, match="rejected the username and password"):
        feed(hs, b"\x01\x01")


def test_silence_or_hangup_is_blamed_on_whoever_we_were_waiting_for() -> None:
    hs = Socks5Handshake(target())
    hs.start()
    assert isinstance(hs.timeout_error(5), UpstreamError)
    assert type(hs.closed_error()) is UpstreamError
    feed(hs, b"\x05\x00")
    assert type(hs.timeout_error(5)) is ConnectTimeout
    assert "within 5s" in str(hs.timeout_error(5))
    assert type(hs.closed_error("reset the connection")) is DialError


def test_socks5_probe_stops_after_authentication() -> None:
    hs = Socks5Handshake(target(), credentials=("u", "p"), probe=True)
    hs.start()
    feed(hs, b"\x05\x02")
    hs.data_to_send()
    feed(hs, b"\x01\x00")
    assert hs.established
    assert hs.data_to_send() == b""


def test_socks4a_sends_the_name_and_socks4_the_address() -> None:
    assert (
        Socks4Handshake(target(), userid="example.org").start()
        == b"\x04\x01\x01\xbb\x00\x00\x00\x01example.org\x00example.org\x00"
    )
    assert Socks4Handshake(target("192.0.2.7")).start() == b"\x04\x01\x01\xbb\xc0\x00\x02\x07\x00"
    with pytest.raises(DialError, match="IPv6"):
        Socks4Handshake(target("2001:db8::1")).start()


@pytest.mark.parametrize(
    ("reply", "cls"),
    [
        (b"\x00\x5a\x00\x00\x00\x00\x00\x00", None),
        (b"\x00\x5b\x00\x00\x00\x00\x00\x00", DialError),
        (b"\x00\x5c\x00\x00\x00\x00\x00\x00", UpstreamError),
        (b"HTTP/1.1", UpstreamError),
    ],
)
def test_socks4_replies(reply: bytes, cls: type | None) -> None:
    hs = Socks4Handshake(target())
    hs.start()
    assert hs.awaiting_destination
    if cls is None:
        assert feed(hs, reply + b"more") == 8
        assert hs.established
    else:
        with pytest.raises(DialError) as info:
            feed(hs, reply)
        assert type(info.value) is cls


def test_socks4_probe_takes_a_refusal_as_proof_of_life() -> None:
    hs = Socks4Handshake(target(), probe=True)
    assert hs.start() == b"\x04\x01\x00\x00\x00\x00\x00\x00\x00"
    feed(hs, b"\x00\x5b\x00\x00\x00\x00\x00\x00")
    assert hs.established


def test_http_connect_request_carries_credentials_and_isolation() -> None:
    hs = HttpConnectHandshake(target(), credentials=("user", "pa:ss"), isolation="example.org")
    request = hs.start().decode()
    assert request.startswith("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n")
    basic = base64.b64encode(b"user:pa:ss").decode()
    assert f"\r\nProxy-Authorization: Basic {basic}\r\n" in request
    assert "\r\nX-Tor-Stream-Isolation: example.org\r\n" in request
    assert request.endswith("\r\n\r\n")
    ipv6 = HttpConnectHandshake(target("2001:db8::1")).start()
    assert ipv6.startswith(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n")


def test_http_connect_refuses_names_that_would_inject_headers() -> None:
    with pytest.raises(DialError, match="invalid host name"):
        HttpConnectHandshake(target("evil.example:1\r\nX-Injected: 1")).start()


def test_http_connect_consumes_exactly_the_answer_head_even_split_in_the_terminator() -> None:
    hs = HttpConnectHandshake(target())
    hs.start()
    head = b"HTTP/1.1 200 Connection established\r\nServer: x\r\n\r\n"
    assert feed(hs, head[:-1]) == len(head) - 1
    assert not hs.established
    assert feed(hs, head[-1:] + b"\x16\x03\x01server bytes") == 1
    assert hs.established


def test_http_connect_skips_interim_answers() -> None:
    hs = HttpConnectHandshake(target())
    hs.start()
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nrest"
    assert feed(hs, data) == len(data) - 4
    assert hs.established


@pytest.mark.parametrize(
    ("status", "cls", "tor"),
    [
        (502, DialError, False),
        (503, DialError, False),
        (500, DialError, False),
        (504, ConnectTimeout, False),
        (403, Forbidden, False),
        (403, ConnectionRefused, True),
        (404, HostUnreachable, True),
        (407, UpstreamError, False),
    ],
)
def test_http_connect_statuses_map_to_errors(status: int, cls: type, tor: bool) -> None:
    hs = HttpConnectHandshake(target(), tor=tor)
    hs.start()
    with pytest.raises(DialError) as info:
        feed(hs, f"HTTP/1.1 {status} Some Reason\r\nX: y\r\n\r\n".encode())
    assert type(info.value) is cls
    assert f"answered {status} Some Reason" in info.value.detail


def test_http_407_names_authentication() -> None:
    hs = HttpConnectHandshake(target())
    hs.start()
    with pytest.raises(UpstreamError, match="requires authentication"):
        feed(hs, b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n")


def test_http_garbage_or_an_endless_head_is_the_upstreams_fault() -> None:
    hs = HttpConnectHandshake(target())
    hs.start()
    with pytest.raises(UpstreamError, match="did not answer like an HTTP proxy"):
        feed(hs, b"\x05\x00\r\n\r\n")
    hs = HttpConnectHandshake(target())
    hs.start()
    with pytest.raises(UpstreamError, match="oversized"):
        feed(hs, b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 4000)


def test_http_probe_takes_any_status_but_407() -> None:
    hs = HttpConnectHandshake(target("127.0.0.1", 8118), probe=True)
    assert hs.start().startswith(b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1:8118\r\n")
    assert not hs.awaiting_destination
    feed(hs, b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert hs.established
    hs = HttpConnectHandshake(target("127.0.0.1", 8118), probe=True)
    hs.start()
    with pytest.raises(UpstreamError):
        feed(hs, b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
