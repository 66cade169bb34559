"""Evidence classification, fed with real TLS handshakes run in memory by the ssl module."""

from __future__ import annotations

import contextlib
import ssl

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyd import errors
from proxyd.learning._detect import (
    DnsPoisonDetector,
    Fingerprints,
    Reason,
    Strength,
    classify_dial_error,
    classify_first_response,
)
from proxyd.protocol import _tls_hello as tls_hello
from proxyd.protocol._tls_hello import sni_from_client_hello

NO_FINGERPRINTS = Fingerprints()
SESSION_ID = slice(44, 76)  # record header 5, handshake header 4, version 2, random 32, len 1


def client_hello(
    tls_ca: trustme.CA, server_hostname: str | None = "www.example.com", *, max_tls12: bool = False
) -> bytes:
    ctx = ssl.create_default_context()
    tls_ca.configure_trust(ctx)
    if server_hostname is None:
        ctx.check_hostname = False
    if max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def server_answer(
    tls_ca: trustme.CA,
    hello: bytes,
    *,
    max_version: ssl.TLSVersion | None = None,
    min_version: ssl.TLSVersion | None = None,
    tickets: bool = True,
) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_ca.issue_cert("www.example.com").configure_cert(ctx)
    if max_version is not None:
        ctx.maximum_version = max_version
    if min_version is not None:
        ctx.minimum_version = min_version
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(hello)
    # SSLWantReadError (waiting for the client's Finished) is a subclass of SSLError
    # (an alert sent): the server has written its flight either way.
    with contextlib.suppress(ssl.SSLError):
        tls.do_handshake()
    return outgoing.read()


def classify(client: bytes, server: bytes, fingerprints: Fingerprints = NO_FINGERPRINTS) -> object:
    return classify_first_response(client, server, fingerprints=fingerprints)


# --- TLS ------------------------------------------------------------------------------


def test_real_tls13_server_hello_is_not_evidence(tls_ca: trustme.CA) -> None:
    hello = client_hello(tls_ca)
    answer = server_answer(tls_ca, hello)
    assert answer[SESSION_ID] == hello[SESSION_ID]
    assert classify(hello, answer) is None


def test_server_hello_not_echoing_session_id_under_tls13_is_injected(tls_ca: trustme.CA) -> None:
    hello = client_hello(tls_ca)
    answer = server_answer(tls_ca, hello)
    forged = answer[: SESSION_ID.start] + bytes(32) + answer[SESSION_ID.stop :]
    assert classify(hello, forged) is Reason.TLS_INJECTED


def test_tls12_server_with_fresh_session_id_is_not_evidence(tls_ca: trustme.CA) -> None:
    hello = client_hello(tls_ca)  # a 32-byte compat-mode session id
    answer = server_answer(tls_ca, hello, max_version=ssl.TLSVersion.TLSv1_2, tickets=False)
    assert answer[43] == 32 and answer[SESSION_ID] != hello[SESSION_ID]
    assert classify(hello, answer) is None


def test_tls12_server_with_empty_session_id_is_not_evidence(tls_ca: trustme.CA) -> None:
    hello = client_hello(tls_ca)
    answer = server_answer(tls_ca, hello, max_version=ssl.TLSVersion.TLSv1_2)
    assert answer[43] == 0
    assert classify(hello, answer) is None


def test_tls_alert_as_first_server_record_is_evidence(tls_ca: trustme.CA) -> None:
    hello = client_hello(tls_ca, max_tls12=True)
    alert = server_answer(tls_ca, hello, min_version=ssl.TLSVersion.TLSv1_3)
    assert alert[0] == 0x15
    assert classify(hello, alert) is Reason.TLS_ALERT_AFTER_HELLO


def test_plain_http_answer_to_a_client_hello_is_evidence(tls_ca: trustme.CA) -> None:
    blockpage = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
    assert classify(client_hello(tls_ca), blockpage) is Reason.TLS_UNEXPECTED_RESPONSE


def test_truncated_server_hello_is_not_judged(tls_ca: trustme.CA) -> None:
    hello = client_hello(tls_ca)
    answer = server_answer(tls_ca, hello)
    for cut in range(len(answer[:120])):
        assert classify(hello, answer[:cut]) is None


def test_sni_is_read_from_a_real_client_hello(tls_ca: trustme.CA) -> None:
    assert (
        sni_from_client_hello(client_hello(tls_ca, "Blocked.Example.ORG")) == "blocked.example.org"
    )


def test_client_hello_without_sni_yields_none(tls_ca: trustme.CA) -> None:
    assert sni_from_client_hello(client_hello(tls_ca, None)) is None
    assert sni_from_client_hello(client_hello(tls_ca, "198.18.0.1")) is None  # no SNI for IPs


def test_sni_is_read_from_a_client_hello_split_over_two_records(tls_ca: trustme.CA) -> None:
    hello = client_hello(tls_ca, "split.example.net")
    body = hello[5:]
    record = bytes(hello[:3])
    split = (
        record
        + (20).to_bytes(2, "big")
        + body[:20]
        + record
        + (len(body) - 20).to_bytes(2, "big")
        + body[20:]
    )
    assert sni_from_client_hello(split) == "split.example.net"


def test_every_truncation_of_a_client_hello_is_handled(tls_ca: trustme.CA) -> None:
    hello = client_hello(tls_ca, "www.example.com")
    results = {sni_from_client_hello(hello[:cut]) for cut in range(len(hello))}
    assert results <= {None, "www.example.com"}
    assert sni_from_client_hello(hello) == "www.example.com"


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_sni_parser_survives_garbage(data: bytes) -> None:
    result = sni_from_client_hello(b"\x16\x03\x01" + data)
    assert result is None or isinstance(result, str)


# --- HTTP -----------------------------------------------------------------------------

REQUEST = b"GET /news HTTP/1.1\r\nHost: www.news.example\r\nAccept: */*\r\n\r\n"


def redirect_to(location: str, status: int = 302) -> bytes:
    return f"HTTP/1.1 {status} Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()


def test_http_451_is_evidence() -> None:
    answer = b"HTTP/1.1 451 Unavailable For Legal Reasons\r\nContent-Length: 0\r\n\r\n"
    assert classify(REQUEST, answer) is Reason.HTTP_451


def test_redirect_to_a_foreign_domain_is_a_blockpage() -> None:
    assert classify(REQUEST, redirect_to("http://blocked.isp.example/")) is (
        Reason.BLOCKPAGE_REDIRECT
    )


def test_redirect_to_a_bare_ip_is_a_blockpage() -> None:
    assert classify(REQUEST, redirect_to("http://198.18.9.9/blocked.html")) is (
        Reason.BLOCKPAGE_REDIRECT
    )


@pytest.mark.parametrize(
    "location",
    [
        "https://www.news.example/news",  # http -> https
        "http://news.example/news",  # to the apex
        "https://m.news.example/",  # to another host of the same site
        "/news/",  # relative
        "//www.news.example/x",  # scheme-relative
    ],
)
def test_redirects_within_the_same_site_are_normal(location: str) -> None:
    assert classify(REQUEST, redirect_to(location, 301)) is None


def test_absolute_form_request_without_host_header_uses_the_uri_host() -> None:
    request = b"GET http://www.news.example/ HTTP/1.1\r\n\r\n"
    assert classify(request, redirect_to("https://www.news.example/")) is None
    assert classify(request, redirect_to("https://warning.example/")) is Reason.BLOCKPAGE_REDIRECT


def test_configured_fingerprints_match_location_and_body() -> None:
    fingerprints = Fingerprints.compile(location=[r"/blocked\?"], body=[r"(?i)access denied by"])
    same_site = redirect_to("https://www.news.example/blocked?id=1")
    assert classify(REQUEST, same_site, fingerprints) is Reason.BLOCKPAGE_FINGERPRINT
    page = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n<h1>ACCESS DENIED by order</h1>"
    assert classify(REQUEST, page, fingerprints) is Reason.BLOCKPAGE_FINGERPRINT
    assert classify(REQUEST, page) is None


def test_shared_fingerprints_apply_to_location_and_body() -> None:
    fingerprints = Fingerprints.compile([r"warning\.rkn\."])
    assert classify(REQUEST, redirect_to("http://warning.rkn.example/"), fingerprints) is (
        Reason.BLOCKPAGE_FINGERPRINT
    )
    page = b"HTTP/1.1 200 OK\r\n\r\n<a href='http://warning.rkn.example/'>why</a>"
    assert classify(REQUEST, page, fingerprints) is Reason.BLOCKPAGE_FINGERPRINT


def test_body_fingerprint_only_looks_at_the_configured_window() -> None:
    fingerprints = Fingerprints.compile(body=["blocked"], body_window=16)
    late = b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 32 + b"blocked"
    assert classify(REQUEST, late, fingerprints) is None


def test_ordinary_responses_and_unknown_protocols_are_not_evidence() -> None:
    assert classify(REQUEST, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") is None
    assert classify(REQUEST, b"HTTP/1.1 404 Not Found\r\n\r\n") is None
    assert classify(b"SSH-2.0-OpenSSH_9.6\r\n", b"SSH-2.0-OpenSSH_9.2\r\n") is None


# --- reasons and dial errors -----------------------------------------------------------


def all_dial_error_classes() -> list[type[errors.DialError]]:
    found, pending = [], [errors.DialError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", all_dial_error_classes(), ids=lambda cls: cls.__name__)
def test_every_dial_error_maps_to_the_reason_with_its_label(cls: type[errors.DialError]) -> None:
    assert classify_dial_error(cls("blocked.example", 443)) == cls.reason


def test_a_dial_error_with_an_unknown_label_is_generic() -> None:
    class Novel(errors.DialError):
        reason = "something_new"

    assert classify_dial_error(Novel("h", 1)) is Reason.GENERIC_FAILURE


def test_outages_are_not_censorship_evidence() -> None:
    assert Reason.CONNECTION_RESET.strength is Strength.STRONG
    assert Reason.TLS_INJECTED.strength is Strength.STRONG
    assert Reason.CONNECT_TIMEOUT.strength is Strength.WEAK
    assert Reason.CONNECTION_REFUSED.strength is Strength.WEAK
    assert Reason.NETWORK_UNREACHABLE.strength is Strength.NONE
    assert Reason.UPSTREAM_FAILED.strength is Strength.NONE
    assert Reason.CONNECT_TIMEOUT.is_outage_symptom
    assert not Reason.HTTP_451.is_outage_symptom


# --- DNS ------------------------------------------------------------------------------


def test_answer_in_a_configured_blockpage_network_is_poison() -> None:
    detector = DnsPoisonDetector(["198.18.66.0/24"])
    assert detector.check("news.example", ["198.18.66.6"], now=0.0) is Reason.DNS_POISON
    assert detector.check("news.example", ["198.18.1.1"], now=0.0) is None


def test_private_answer_for_a_public_name_is_poison_but_not_for_a_local_name() -> None:
    detector = DnsPoisonDetector()
    assert detector.check("news.example", ["10.10.34.34"], now=0.0) is Reason.DNS_POISON
    assert detector.check("news.example", ["::1"], now=0.0) is Reason.DNS_POISON
    assert detector.check("news.example", ["0.0.0.0"], now=0.0) is Reason.DNS_POISON
    assert detector.check("nas.local", ["192.168.1.5"], now=0.0) is None
    assert detector.check("printer", ["10.0.0.9"], now=0.0) is None


def test_address_that_served_a_blockpage_is_poison_afterwards() -> None:
    detector = DnsPoisonDetector()
    assert detector.check("a.example", ["198.18.7.7"], now=0.0) is None
    detector.note_blockpage_address("198.18.7.7")
    assert detector.check("b.example", ["198.18.9.9", "198.18.7.7"], now=1.0) is Reason.DNS_POISON


def test_one_address_for_many_unrelated_domains_within_the_window_is_poison() -> None:
    detector = DnsPoisonDetector(same_address_threshold=3, window=60.0)
    assert detector.check("www.one.example", ["198.18.5.5"], now=0.0) is None
    assert detector.check("cdn.one.example", ["198.18.5.5"], now=1.0) is None  # same domain
    assert detector.check("two.example", ["198.18.5.5"], now=2.0) is None
    assert detector.check("three.example", ["198.18.5.5"], now=3.0) is Reason.DNS_POISON


def test_repeated_address_rule_forgets_old_answers_and_ignores_multi_address_answers() -> None:
    detector = DnsPoisonDetector(same_address_threshold=3, window=60.0)
    detector.check("one.example", ["198.18.5.5"], now=0.0)
    detector.check("two.example", ["198.18.5.5"], now=1.0)
    assert detector.check("three.example", ["198.18.5.5"], now=100.0) is None
    for name in ("four.example", "five.example", "six.example"):
        assert detector.check(name, ["198.18.5.5", "198.18.5.6"], now=101.0) is None


def test_truncated_or_foreign_hellos_read_as_nothing_not_an_exception() -> None:
    short_server_hello = b"\x16\x03\x03\x00\x05\x02\x00\x00\x46\x03"
    assert tls_hello.server_hello(short_server_hello) is None
    assert tls_hello.client_session_id(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is None
    assert tls_hello.sni_from_client_hello(b"\x16\x03\x01\x00") is None
