"""DNS messages and their DNS-over-HTTPS framing, sans-IO.

- ``encode_query(name, qtype)`` -> wire bytes with ID 0 (RFC 8484 §4.1: caches key on it).
- ``decode_answer(wire, name, qtype)`` -> ``DnsAnswer``: the rcode, the addresses of the
  asked type (following CNAMEs inside the message) and the smallest TTL on the way.
- ``doh_request(host, path, query)`` -> an HTTP/1.1 POST; ``parse_doh_response(buffer)``
  -> ``(status, body, used)`` once a whole answer is in, else ``None``.
- ``parse_question(wire)`` and ``encode_reply(...)`` for the LAN listener.

dnspython does the DNS wire format; it is imported on first use, so a proxyd with no
DNS work configured never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dns.message

A = 1
AAAA = 28
NOERROR = 0
SERVFAIL = 2
NXDOMAIN = 3
REFUSED = 5
MAX_DOH_ANSWER = 65535 + 4096  # a DNS message plus a generous HTTP head


class WireError(ValueError):
    """Bytes that are not the DNS message or HTTP answer they should be."""


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    rcode: int
    addresses: tuple[str, ...]
    ttl: float  # seconds; the smallest on the CNAME chain (0 when nothing was answered)


@dataclass(frozen=True, slots=True)
class Question:
    id: int
    name: str  # lower case, no trailing dot
    qtype: int
    message: dns.message.Message


def encode_query(name: str, qtype: int) -> bytes:
    import dns.message
    import dns.rdatatype

    query = dns.message.make_query(name, dns.rdatatype.RdataType(qtype))
    query.id = 0
    return query.to_wire()


def decode_answer(wire: bytes, name: str, qtype: int) -> DnsAnswer:
    import dns.exception
    import dns.message
    import dns.name

    try:
        message = dns.message.from_wire(wire)
    except dns.exception.DNSException as exc:
        raise WireError(f"not a DNS message: {exc}") from None
    owner = dns.name.from_text(name)
    ttl: float | None = None
    addresses: list[str] = []
    for _hop in range(16):  # a CNAME chain longer than this is a loop
        cname = None
        for rrset in message.answer:
            if rrset.name != owner:
                continue
            if rrset.rdtype == qtype:
                addresses += [rdata.to_text() for rdata in rrset]
                ttl = rrset.ttl if ttl is None else min(ttl, rrset.ttl)
            elif rrset.rdtype == 5:  # CNAME
                cname = rrset[0].target
                ttl = rrset.ttl if ttl is None else min(ttl, rrset.ttl)
        if addresses or cname is None:
            break
        owner = cname
    return DnsAnswer(message.rcode(), tuple(addresses), float(ttl or 0))


def doh_request(host: str, path: str, query: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/dns-message\r\nAccept: application/dns-message\r\n"
        f"Content-Length: {len(query)}\r\n\r\n"
    )
    return head.encode("ascii") + query


def parse_doh_response(buffer: bytes) -> tuple[int, bytes, int] | None:
    """``(status, body, bytes used)``, or ``None`` until the whole answer is in."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_DOH_ANSWER:
            raise WireError("HTTP answer head too long")
        return None
    lines = buffer[:end].decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if (
        len(status_line) < 2
        or not status_line[0].startswith("HTTP/1.")
        or not status_line[1].isdigit()
    ):
        raise WireError(f"not an HTTP/1 answer: {lines[0][:60]!r}")
    length = None
    for line in lines[1:]:
        field, _, value = line.partition(":")
        field = field.strip().lower()
        if field == "content-length":
            if not value.strip().isdigit():
                raise WireError("bad Content-Length")
            length = int(value)
        elif field == "transfer-encoding":
            raise WireError("chunked DoH answers are not supported")
    if length is None:
        raise WireError("DoH answer without Content-Length")
    if length > MAX_DOH_ANSWER:
        raise WireError("DoH answer too long")
    body_start = end + 4
    if len(buffer) < body_start + length:
        return None
    return int(status_line[1]), buffer[body_start : body_start + length], body_start + length


def parse_question(wire: bytes) -> Question:
    import dns.exception
    import dns.message

    try:
        message = dns.message.from_wire(wire)
    except dns.exception.DNSException as exc:
        raise WireError(f"not a DNS query: {exc}") from None
    if len(message.question) != 1:
        raise WireError("a query needs exactly one question")
    question = message.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    return Question(message.id, name, int(question.rdtype), message)


def encode_reply(
    question: Question, rcode: int, addresses: tuple[str, ...] = (), ttl: float = 0
) -> bytes:
    import dns.message
    import dns.rcode
    import dns.rrset

    reply = dns.message.make_response(question.message)
    reply.set_rcode(dns.rcode.Rcode(rcode))
    if addresses:
        kind = "A" if question.qtype == A else "AAAA"
        reply.answer.append(
            dns.rrset.from_text_list(question.name + ".", int(ttl), "IN", kind, list(addresses))
        )
    return reply.to_wire()
