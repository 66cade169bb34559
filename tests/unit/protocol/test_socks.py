"""Transcripts of SOCKS5/SOCKS4a handshakes against the sans-IO parser: bytes in, events out."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from proxyd.protocol._socks import (
    LARGEST_VALID_HANDSHAKE,
    ConnectRequest,
    HandshakeFailed,
    SendBytes,
    SocksHandshake,
    SocksStateError,
)

NO_AUTH_GREETING = b"\x05\x01\x00"
USER_PASS_GREETING = b"\x05\x01\x02"
EXAMPLE_COM_443 = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
SOCKS5_GENERAL_FAILURE = b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00"
SOCKS4_REJECTED = b"\x00\x5b\x00\x00\x00\x00\x00\x00"


def auth(username: bytes, password: bytes) -> bytes:
    return bytes([1, len(username)]) + username + bytes([len(password)]) + password


def socks5_request(address_type: int, address: bytes, port: int = 443, command: int = 1) -> bytes:
    return bytes([5, command, 0, address_type]) + address + port.to_bytes(2, "big")


def socks4_request(ip: bytes, port: int = 80, userid: bytes = b"", command: int = 1) -> bytes:
    return bytes([4, command]) + port.to_bytes(2, "big") + ip + userid + b"\x00"


def only_alice(username: str, password: str) -> bool:
    return (username, password) == ("alice", "secret")


def failed(events: Sequence[object]) -> HandshakeFailed:
    assert len(events) == 1
    assert isinstance(events[0], HandshakeFailed)
    return events[0]


def connected(hs: SocksHandshake, greeting: bytes, request: bytes) -> ConnectRequest:
    assert hs.receive_data(greeting) == [SendBytes(b"\x05\x00")]
    events = hs.receive_data(request)
    assert len(events) == 1
    assert isinstance(events[0], ConnectRequest)
    return events[0]


# --- SOCKS5 without auth -------------------------------------------------------------------


def test_socks5_no_auth_domain_request_becomes_connect_request() -> None:
    hs = SocksHandshake()
    assert hs.receive_data(NO_AUTH_GREETING) == [SendBytes(b"\x05\x00")]
    assert hs.receive_data(EXAMPLE_COM_443) == [
        ConnectRequest("example.com", 443, 5, "domain", None)
    ]
    assert hs.leftover == b""


def test_pipelined_greeting_and_request_yield_both_events_in_order() -> None:
    events = SocksHandshake().receive_data(NO_AUTH_GREETING + EXAMPLE_COM_443)
    assert events == [
        SendBytes(b"\x05\x00"),
        ConnectRequest("example.com", 443, 5, "domain", None),
    ]


def test_no_auth_is_preferred_when_client_offers_both_methods_and_no_credentials_are_set() -> None:
    assert SocksHandshake().receive_data(b"\x05\x02\x02\x00") == [SendBytes(b"\x05\x00")]


def test_ipv4_destination_is_reported_dotted() -> None:
    request = socks5_request(1, bytes([192, 0, 2, 1]), 80)
    assert connected(SocksHandshake(), NO_AUTH_GREETING, request) == ConnectRequest(
        "192.0.2.1", 80, 5, "ipv4", None
    )


def test_ipv6_destination_is_reported_in_rfc5952_form() -> None:
    address = bytes.fromhex("20010DB8000000000000000000000001")
    request = socks5_request(4, address, 8443)
    assert connected(SocksHandshake(), NO_AUTH_GREETING, request) == ConnectRequest(
        "2001:db8::1", 8443, 5, "ipv6", None
    )


def test_ipv4_mapped_ipv6_destination_is_reported_as_ipv4_so_loopback_checks_see_it() -> None:
    address = bytes.fromhex("00000000000000000000FFFF7F000001")
    request = socks5_request(4, address, 22)
    assert connected(SocksHandshake(), NO_AUTH_GREETING, request) == ConnectRequest(
        "127.0.0.1", 22, 5, "ipv4", None
    )


# --- SOCKS5 username/password ----------------------------------------------------------------


def test_correct_credentials_are_accepted_and_username_reported() -> None:
    hs = SocksHandshake(check_credentials=only_alice)
    assert hs.receive_data(b"\x05\x02\x00\x02") == [SendBytes(b"\x05\x02")]
    assert hs.receive_data(auth(b"alice", b"secret")) == [SendBytes(b"\x01\x00")]
    assert hs.receive_data(EXAMPLE_COM_443) == [
        ConnectRequest("example.com", 443, 5, "domain", "alice")
    ]


def test_wrong_password_gets_auth_status_failure_and_later_bytes_are_ignored() -> None:
    hs = SocksHandshake(check_credentials=only_alice)
    hs.receive_data(USER_PASS_GREETING)
    refusal = failed(hs.receive_data(auth(b"alice", b"guess")))
    assert refusal == HandshakeFailed(b"\x01\x01", "bad_credentials")
    assert hs.receive_data(EXAMPLE_COM_443) == []


def test_client_without_user_pass_is_refused_when_credentials_are_required() -> None:
    refusal = failed(SocksHandshake(check_credentials=only_alice).receive_data(NO_AUTH_GREETING))
    assert refusal == HandshakeFailed(b"\x05\xff", "no_acceptable_method")


def test_isolation_client_offering_only_user_pass_works_without_configured_credentials() -> None:
    hs = SocksHandshake()
    events = hs.receive_data(USER_PASS_GREETING + auth(b"example.org", b"x") + EXAMPLE_COM_443)
    assert events == [
        SendBytes(b"\x05\x02"),
        SendBytes(b"\x01\x00"),
        ConnectRequest("example.com", 443, 5, "domain", "example.org"),
    ]


def test_credentials_that_are_not_utf8_reach_the_checker_losslessly() -> None:
    seen: list[tuple[str, str]] = []

    def record(username: str, password: str) -> bool:
        seen.append((username, password))
        return True

    hs = SocksHandshake(check_credentials=record)
    hs.receive_data(USER_PASS_GREETING + auth(b"\xffuser", "pässword".encode()))
    [(username, password)] = seen
    assert username.encode("utf-8", "surrogateescape") == b"\xffuser"
    assert password == "pässword"


def test_auth_subnegotiation_version_other_than_1_is_refused() -> None:
    hs = SocksHandshake(check_credentials=only_alice)
    hs.receive_data(USER_PASS_GREETING)
    assert failed(hs.receive_data(b"\x05\x05alice\x06secret")) == HandshakeFailed(
        b"\x01\x01", "bad_auth_version"
    )


# --- malformed SOCKS5 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("greeting", "reason"),
    [
        (b"\x05\x00", "no_methods"),
        (b"\x05\x01\x01", "no_acceptable_method"),  # GSSAPI only
    ],
)
def test_greeting_without_a_usable_method_gets_no_acceptable_methods(
    greeting: bytes, reason: str
) -> None:
    assert failed(SocksHandshake().receive_data(greeting)) == HandshakeFailed(b"\x05\xff", reason)


@pytest.mark.parametrize(
    ("command", "name"), [(2, "BIND"), (3, "UDP ASSOCIATE"), (0xF0, "RESOLVE")]
)
def test_commands_other_than_connect_get_command_not_supported(command: int, name: str) -> None:
    hs = SocksHandshake()
    hs.receive_data(NO_AUTH_GREETING)
    request = socks5_request(1, bytes([192, 0, 2, 1]), command=command)
    refusal = failed(hs.receive_data(request))
    assert refusal.reply == b"\x05\x07\x00\x01" + bytes(6), name
    assert refusal.reason == "unsupported_command"


def test_unknown_address_type_gets_address_type_not_supported_before_the_address_arrives() -> None:
    hs = SocksHandshake()
    hs.receive_data(NO_AUTH_GREETING)
    assert failed(hs.receive_data(b"\x05\x01\x00\x05")) == HandshakeFailed(
        b"\x05\x08\x00\x01" + bytes(6), "unsupported_address_type"
    )


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"\x04\x01\x00\x01\xc0\x00\x02\x01\x00\x50", "bad_request_version"),
        (b"\x05\x01\x01\x01\xc0\x00\x02\x01\x00\x50", "nonzero_reserved"),
        (socks5_request(1, bytes([192, 0, 2, 1]), port=0), "port_zero"),
        (socks5_request(3, b"\x00"), "invalid_domain"),  # length 0
        (socks5_request(3, b"\x08exa\x00mple"), "invalid_domain"),
        (socks5_request(3, b"\x08exa mple"), "invalid_domain"),
        (socks5_request(3, b"\x0bexa\x1bmple.com"), "invalid_domain"),
        (socks5_request(3, b"\x07" + "bücher".encode()), "invalid_domain"),
    ],
)
def test_malformed_socks5_request_gets_general_failure(request_bytes: bytes, reason: str) -> None:
    hs = SocksHandshake()
    hs.receive_data(NO_AUTH_GREETING)
    assert failed(hs.receive_data(request_bytes)) == HandshakeFailed(SOCKS5_GENERAL_FAILURE, reason)


def test_first_byte_that_is_no_socks_version_fails_without_a_reply() -> None:
    assert failed(SocksHandshake().receive_data(b"GET / HTTP/1.1\r\n")) == HandshakeFailed(
        b"", "unknown_version"
    )


@pytest.mark.parametrize(
    "handshake",
    [
        NO_AUTH_GREETING + EXAMPLE_COM_443,
        b"\x05\x01\x02" + auth(b"alice", b"secret") + EXAMPLE_COM_443,
        NO_AUTH_GREETING + socks5_request(4, bytes(15) + b"\x01"),
        socks4_request(bytes([0, 0, 0, 1]), userid=b"bob") + b"example.com\x00",
    ],
    ids=["socks5-domain", "socks5-userpass", "socks5-ipv6", "socks4a"],
)
def test_every_truncation_of_a_valid_handshake_waits_for_more(handshake: bytes) -> None:
    for cut in range(len(handshake)):
        events = SocksHandshake().receive_data(handshake[:cut])
        assert all(isinstance(event, SendBytes) for event in events), cut
    assert isinstance(SocksHandshake().receive_data(handshake)[-1], ConnectRequest)


@pytest.mark.parametrize(
    ("handshake", "reply"),
    [
        (b"\x05\x03\x00\x01\x02", b"\x05\xff"),
        (USER_PASS_GREETING + auth(b"alice", b"secret"), b"\x01\x01"),
        (NO_AUTH_GREETING + socks5_request(3, b"\x0bexample.com"), SOCKS5_GENERAL_FAILURE),
        (socks4_request(bytes([0, 0, 0, 1])) + b"example.com\x00", SOCKS4_REJECTED),
    ],
    ids=["greeting", "auth", "request", "socks4a"],
)
def test_handshake_larger_than_max_buffer_is_refused_with_the_reply_of_its_phase(
    handshake: bytes, reply: bytes
) -> None:
    events = SocksHandshake(max_buffer=len(handshake) - 1).receive_data(handshake)
    assert events[-1] == HandshakeFailed(reply, "handshake_too_large")
    assert isinstance(
        SocksHandshake(max_buffer=len(handshake)).receive_data(handshake)[-1],
        (SendBytes, ConnectRequest),
    )


def test_largest_valid_handshake_fits_the_default_bound() -> None:
    handshake = (
        b"\x05\xff" + bytes(range(255)) + auth(b"u" * 255, b"p" * 255)
        + socks5_request(3, b"\xff" + b"h" * 255)
    )  # fmt: skip
    assert len(handshake) == LARGEST_VALID_HANDSHAKE
    events = SocksHandshake(check_credentials=lambda u, p: True).receive_data(handshake)
    assert events[-1] == ConnectRequest("h" * 255, 443, 5, "domain", "u" * 255)


# --- optimistic data ---------------------------------------------------------------------------


def test_bytes_sent_before_our_reply_are_kept_as_leftover_however_large() -> None:
    client_hello = b"\x16\x03\x01\x07\x00" + b"\x01" * 1795  # a post-quantum-sized ClientHello
    hs = SocksHandshake()
    events = hs.receive_data(NO_AUTH_GREETING + EXAMPLE_COM_443 + client_hello)
    assert isinstance(events[-1], ConnectRequest)
    assert hs.leftover == client_hello


def test_bytes_arriving_while_dialing_are_appended_to_leftover() -> None:
    hs = SocksHandshake()
    hs.receive_data(NO_AUTH_GREETING + EXAMPLE_COM_443 + b"GET / HT")
    assert hs.receive_data(b"TP/1.1\r\n") == []
    assert hs.leftover == b"GET / HTTP/1.1\r\n"


def test_socks4a_optimistic_data_is_kept_as_leftover() -> None:
    hs = SocksHandshake()
    hs.receive_data(socks4_request(bytes([0, 0, 0, 9])) + b"example.com\x00" + b"payload")
    assert hs.leftover == b"payload"


# --- SOCKS4 / SOCKS4a --------------------------------------------------------------------------


def test_socks4_ipv4_connect_reports_userid_as_username() -> None:
    events = SocksHandshake().receive_data(socks4_request(bytes([192, 0, 2, 7]), 80, b"bob"))
    assert events == [ConnectRequest("192.0.2.7", 80, 4, "ipv4", "bob")]


def test_socks4_empty_userid_is_no_username() -> None:
    events = SocksHandshake().receive_data(socks4_request(bytes([192, 0, 2, 7]), 80))
    assert events == [ConnectRequest("192.0.2.7", 80, 4, "ipv4", None)]


def test_socks4a_hostname_after_userid_becomes_domain_request() -> None:
    request = socks4_request(bytes([0, 0, 0, 1]), 443, b"bob") + b"example.com\x00"
    assert SocksHandshake().receive_data(request) == [
        ConnectRequest("example.com", 443, 4, "domain", "bob")
    ]


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (socks4_request(bytes([192, 0, 2, 7]), command=2), "unsupported_command"),
        (socks4_request(bytes([192, 0, 2, 7]), port=0), "port_zero"),
        (socks4_request(bytes(4)), "invalid_address"),
        (socks4_request(bytes([0, 0, 0, 1])) + b"\x00", "invalid_domain"),
        (socks4_request(bytes([0, 0, 0, 1])) + b"exa\x01mple\x00", "invalid_domain"),
        (b"\x04\x01\x00\x50\xc0\x00\x02\x07" + b"u" * 256, "userid_too_long"),
        (socks4_request(bytes([0, 0, 0, 1])) + b"h" * 256, "hostname_too_long"),
    ],
)
def test_bad_socks4_request_is_rejected_with_5b(request_bytes: bytes, reason: str) -> None:
    assert failed(SocksHandshake().receive_data(request_bytes)) == HandshakeFailed(
        SOCKS4_REJECTED, reason
    )


def test_socks4_names_of_exactly_255_bytes_are_accepted() -> None:
    request = socks4_request(bytes([0, 0, 0, 1]), userid=b"u" * 255) + b"h" * 255 + b"\x00"
    [event] = SocksHandshake().receive_data(request)
    assert event == ConnectRequest("h" * 255, 80, 4, "domain", "u" * 255)


def test_socks4_is_refused_when_credentials_are_required() -> None:
    hs = SocksHandshake(check_credentials=only_alice)
    refusal = failed(hs.receive_data(socks4_request(bytes([192, 0, 2, 7]), userid=b"alice")))
    assert refusal == HandshakeFailed(SOCKS4_REJECTED, "credentials_required")


# --- replies -----------------------------------------------------------------------------------


def socks5_awaiting_dial() -> SocksHandshake:
    hs = SocksHandshake()
    hs.receive_data(NO_AUTH_GREETING + EXAMPLE_COM_443)
    return hs


@pytest.mark.parametrize(
    ("bound_host", "encoded"),
    [
        ("192.0.2.1", b"\x01\xc0\x00\x02\x01"),
        ("::1", b"\x04" + bytes(15) + b"\x01"),
        ("::ffff:127.0.0.1", b"\x01\x7f\x00\x00\x01"),
        ("fe80::1%lo", b"\x04\xfe\x80" + bytes(13) + b"\x01"),
        ("upstream.example", b"\x03\x10upstream.example"),
    ],
)
def test_socks5_success_reply_encodes_bound_address_with_matching_atyp(
    bound_host: str, encoded: bytes
) -> None:
    reply = socks5_awaiting_dial().success_reply(bound_host, 0x1F90)
    assert reply == b"\x05\x00\x00" + encoded + b"\x1f\x90"


def test_socks5_failure_reply_carries_the_code() -> None:
    assert socks5_awaiting_dial().failure_reply(0x05) == b"\x05\x05\x00\x01" + bytes(6)


def test_socks4_success_reply_is_5a_with_bound_ipv4() -> None:
    hs = SocksHandshake()
    hs.receive_data(socks4_request(bytes([192, 0, 2, 7])))
    assert hs.success_reply("127.0.0.1", 1080) == b"\x00\x5a\x04\x38\x7f\x00\x00\x01"


def test_socks4_success_reply_leaves_ipv6_bound_address_zero() -> None:
    hs = SocksHandshake()
    hs.receive_data(socks4_request(bytes([192, 0, 2, 7])))
    assert hs.success_reply("::1", 1080) == b"\x00\x5a\x04\x38\x00\x00\x00\x00"


@pytest.mark.parametrize("code", range(1, 9))
def test_socks4_client_gets_5b_for_every_failure(code: int) -> None:
    hs = SocksHandshake()
    hs.receive_data(socks4_request(bytes([192, 0, 2, 7])))
    assert hs.failure_reply(code) == SOCKS4_REJECTED


@pytest.mark.parametrize("code", [0, 9, 0xF0])
def test_failure_reply_refuses_codes_outside_rfc1928(code: int) -> None:
    with pytest.raises(ValueError):
        socks5_awaiting_dial().failure_reply(code)


@pytest.mark.parametrize("bound_host", ["", "h" * 256, "bücher.example"])
def test_success_reply_refuses_unencodable_bound_host(bound_host: str) -> None:
    with pytest.raises(ValueError):
        socks5_awaiting_dial().success_reply(bound_host, 1)


def test_reply_before_a_connect_request_is_a_state_error() -> None:
    hs = SocksHandshake()
    hs.receive_data(NO_AUTH_GREETING)
    with pytest.raises(SocksStateError):
        hs.success_reply("127.0.0.1", 1)


def test_second_reply_is_a_state_error() -> None:
    hs = socks5_awaiting_dial()
    hs.failure_reply(1)
    with pytest.raises(SocksStateError):
        hs.success_reply("127.0.0.1", 1)
