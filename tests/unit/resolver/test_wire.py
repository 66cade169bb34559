"""DNS messages and DoH framing, bytes in and out (dnspython builds the answers)."""

from __future__ import annotations

import dns.message
import dns.rrset
import pytest

from proxyd.resolver import (
    AAAA,
    A,
    WireError,
    decode_answer,
    doh_request,
    encode_query,
    parse_doh_response,
)
from proxyd.resolver._wire import encode_reply, parse_question


def answer_for(query: bytes, *records: tuple[str, int, str, str]) -> bytes:
    reply = dns.message.make_response(dns.message.from_wire(query))
    for name, ttl, kind, value in records:
        reply.answer.append(dns.rrset.from_text(name, ttl, "IN", kind, value))
    return reply.to_wire()


def test_query_has_id_zero_so_doh_caches_can_share_it() -> None:
    assert encode_query("site.example", A)[:2] == b"\0\0"


def test_answer_follows_cnames_and_keeps_the_smallest_ttl() -> None:
    query = encode_query("www.site.example", A)
    wire = answer_for(
        query,
        ("www.site.example.", 300, "CNAME", "cdn.example."),
        ("cdn.example.", 60, "A", "198.18.2.16"),
        ("other.example.", 5, "A", "198.18.2.99"),
    )
    answer = decode_answer(wire, "www.site.example", A)
    assert answer.addresses == ("198.18.2.16",)
    assert answer.ttl == 60
    assert answer.rcode == 0


def test_answer_ignores_records_of_another_type() -> None:
    query = encode_query("site.example", AAAA)
    wire = answer_for(query, ("site.example.", 60, "A", "198.18.2.16"))
    assert decode_answer(wire, "site.example", AAAA).addresses == ()


def test_garbage_is_a_wire_error() -> None:
    with pytest.raises(WireError):
        decode_answer(b"\x01\x02", "site.example", A)


def test_doh_request_is_an_rfc8484_post() -> None:
    request = doh_request("doh.example", "/dns-query", b"\0\1")
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /dns-query HTTP/1.1\r\nHost: doh.example\r\n")
    assert b"Content-Type: application/dns-message" in head
    assert b"Content-Length: 2" in head
    assert body == b"\0\1"


def test_doh_response_waits_for_the_whole_body_and_leaves_the_rest() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-type: application/dns-message\r\n\r\n"
    assert parse_doh_response(raw + b"ab") is None
    status, body, used = parse_doh_response(raw + b"abcNEXT")  # type: ignore[misc]
    assert (status, body) == (200, b"abc")
    assert (raw + b"abcNEXT")[used:] == b"NEXT"


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ],
)
def test_doh_response_without_a_known_length_is_refused(raw: bytes) -> None:
    with pytest.raises(WireError):
        parse_doh_response(raw)


def test_listener_reply_answers_the_question_with_its_id() -> None:
    query = dns.message.make_query("Site.Example", "A")
    question = parse_question(query.to_wire())
    assert (question.name, question.qtype) == ("site.example", A)
    reply = dns.message.from_wire(encode_reply(question, 0, ("198.18.2.16",), 120))
    assert reply.id == query.id
    assert [r.to_text() for r in reply.answer[0]] == ["198.18.2.16"]
    assert reply.answer[0].ttl == 120
