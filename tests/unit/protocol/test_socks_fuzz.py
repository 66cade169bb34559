"""Property tests for the SOCKS parser: hostile bytes only ever produce events, valid handshakes
round-trip, and how the bytes are chunked never changes the outcome.

Budget: ~200 examples per property by default; HYPOTHESIS_PROFILE=fuzz runs 20,000.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyd.protocol._socks import (
    AddressType,
    ConnectRequest,
    Event,
    HandshakeFailed,
    SendBytes,
    SocksHandshake,
)

FUZZING = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
budget = settings(
    max_examples=20_000 if FUZZING else 200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "socks"

HOSTNAME_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
SOCKS4A_MARKERS = ipaddress.IPv4Network("0.0.0.0/24")
ports = st.integers(min_value=1, max_value=0xFFFF)


def only_alice(username: str, password: str) -> bool:
    return username == "alice" and password == "secret"


def run(
    chunks: list[bytes], *, require_credentials: bool, max_buffer: int
) -> tuple[list[Event], bytes]:
    hs = SocksHandshake(
        check_credentials=only_alice if require_credentials else None, max_buffer=max_buffer
    )
    events: list[Event] = []
    for chunk in chunks:
        events += hs.receive_data(chunk)
    check_event_invariants(events)
    if events and isinstance(events[-1], ConnectRequest):
        # The caller's half of the contract must hold for whatever request got through.
        reply = hs.failure_reply(1)
        assert reply[0] == (5 if events[-1].version == 5 else 0)
    return events, hs.leftover


def check_event_invariants(events: list[Event]) -> None:
    for event in events[:-1]:
        assert isinstance(event, SendBytes)
    if events and isinstance(events[-1], ConnectRequest):
        request = events[-1]
        assert 1 <= request.port <= 0xFFFF
        assert request.host and request.host.isascii() and request.host.isprintable()
        if request.address_type != "domain":
            assert str(ipaddress.ip_address(request.host)) == request.host
    if events and isinstance(events[-1], HandshakeFailed):
        assert events[-1].reason


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def assert_chunking_does_not_matter(
    data: bytes, cuts: list[int], require_credentials: bool, max_buffer: int
) -> None:
    whole = run([data], require_credentials=require_credentials, max_buffer=max_buffer)
    bytewise = [data[i : i + 1] for i in range(len(data))]
    assert run(bytewise, require_credentials=require_credentials, max_buffer=max_buffer) == whole
    pieces = split(data, cuts)
    assert run(pieces, require_credentials=require_credentials, max_buffer=max_buffer) == whole


@st.composite
def valid_handshakes(draw: st.DrawFn) -> tuple[bytes, ConnectRequest]:
    port = draw(ports)
    port_bytes = port.to_bytes(2, "big")
    if draw(st.booleans()):
        userid = draw(st.binary(max_size=255).filter(lambda b: b"\x00" not in b))
        username = userid.decode("utf-8", "surrogateescape") or None
        head = bytes([4, 1]) + port_bytes
        if draw(st.booleans()):
            host = draw(st.text(HOSTNAME_CHARS, min_size=1, max_size=255))
            wire = head + bytes([0, 0, 0, draw(st.integers(1, 255))]) + userid + b"\x00"
            return wire + host.encode() + b"\x00", ConnectRequest(host, port, 4, "domain", username)
        # 0.0.0.0/24 is not addressable in SOCKS4: 0.0.0.x (x != 0) is the SOCKS4a marker.
        ip4 = draw(st.ip_addresses(v=4).filter(lambda a: a not in SOCKS4A_MARKERS))
        wire = head + ip4.packed + userid + b"\x00"
        return wire, ConnectRequest(str(ip4), port, 4, "ipv4", username)

    methods = draw(st.lists(st.integers(0, 255), min_size=1, max_size=255))
    if 0 in methods:
        wire, username = bytes([5, len(methods), *methods]), None
    else:
        methods.append(2)
        user = draw(st.binary(max_size=255))
        password = draw(st.binary(max_size=255))
        wire = bytes([5, len(methods), *methods])
        wire += bytes([1, len(user)]) + user + bytes([len(password)]) + password
        username = user.decode("utf-8", "surrogateescape")
    wire += b"\x05\x01\x00"
    address = draw(st.one_of(st.ip_addresses(), st.text(HOSTNAME_CHARS, min_size=1, max_size=255)))
    if isinstance(address, str):
        wire += bytes([3, len(address)]) + address.encode()
        expected = ConnectRequest(address, port, 5, "domain", username)
    else:
        wire += (b"\x01" if address.version == 4 else b"\x04") + address.packed
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            expected = ConnectRequest(str(address.ipv4_mapped), port, 5, "ipv4", username)
        else:
            kind: AddressType = "ipv4" if address.version == 4 else "ipv6"
            expected = ConnectRequest(str(address), port, 5, kind, username)
    return wire + port_bytes, expected


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(buf)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and position < len(buf):
            buf[position] = draw(st.integers(0, 255))
        elif action == "insert":
            buf[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del buf[position : position + draw(st.integers(1, 8))]
        else:
            del buf[position:]
    return bytes(buf)


handshake_then_mutation = valid_handshakes().flatmap(lambda pair: mutated(pair[0]))
cut_points = st.lists(st.integers(min_value=0), max_size=8)
max_buffers = st.sampled_from([1032, 1032, 300, 16, 0])


@budget
@given(valid_handshakes(), st.sampled_from([b"", b"\x16\x03\x01\x00\x05hello"]), cut_points)
def test_valid_handshakes_round_trip_however_they_are_chunked(
    case: tuple[bytes, ConnectRequest], optimistic: bytes, cuts: list[int]
) -> None:
    wire, expected = case
    events, leftover = run(
        split(wire + optimistic, cuts), require_credentials=False, max_buffer=1032
    )
    assert events[-1] == expected
    assert leftover == optimistic


@budget
@given(
    st.one_of(
        st.binary(max_size=1200),
        st.sampled_from([b"\x04", b"\x05"]).flatmap(
            lambda version: st.binary(max_size=600).map(lambda rest: version + rest)
        ),
    ),
    cut_points,
    st.booleans(),
    max_buffers,
)
def test_random_bytes_only_produce_events_and_chunking_does_not_matter(
    data: bytes, cuts: list[int], require_credentials: bool, max_buffer: int
) -> None:
    assert_chunking_does_not_matter(data, cuts, require_credentials, max_buffer)


@budget
@given(handshake_then_mutation, cut_points, st.booleans(), max_buffers)
def test_mutated_handshakes_only_produce_events_and_chunking_does_not_matter(
    data: bytes, cuts: list[int], require_credentials: bool, max_buffer: int
) -> None:
    assert_chunking_does_not_matter(data, cuts, require_credentials, max_buffer)


@pytest.mark.parametrize("path", sorted(CORPUS.iterdir()), ids=lambda path: path.name)
@pytest.mark.parametrize("require_credentials", [False, True])
def test_corpus_inputs_only_produce_events_and_chunking_does_not_matter(
    path: Path, require_credentials: bool
) -> None:
    assert_chunking_does_not_matter(path.read_bytes(), [3, 11, 40], require_credentials, 1032)
