"""Edge cases of the sans-IO HTTP/1.1 proxy framing: heads in, Request/Response or HttpError out."""

from __future__ import annotations

import time

import pytest

from proxyd.errors import ProxydError
from proxyd.protocol._http1 import (
    BodyKind,
    Framing,
    HttpError,
    Request,
    Response,
    parse_request,
    parse_response,
)
from proxyd.protocol._http1_body import BodyScanner
from proxyd.protocol._http1_encode import (
    encode_request_for_origin,
    encode_response_for_client,
    error_response,
    simple_response,
)


def req(head: bytes, **limits: int) -> Request:
    parsed = parse_request(head, **limits)
    assert parsed is not None
    return parsed[0]


def get(target: str = "http://example.com/", *fields: str, version: str = "HTTP/1.1") -> bytes:
    lines = [f"GET {target} {version}", *fields, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def post(*fields: str, version: str = "HTTP/1.1") -> bytes:
    lines = [f"POST http://example.com/form {version}", "Host: example.com", *fields, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def rejected(head: bytes, **limits: int) -> int:
    with pytest.raises(HttpError) as caught:
        parse_request(head, **limits)
    assert caught.value.reason
    return caught.value.status


def resp(head: bytes, method: str = "GET") -> Response:
    parsed = parse_response(head, request_method=method)
    assert parsed is not None
    return parsed[0]


def resp_rejected(head: bytes, method: str = "GET") -> int:
    with pytest.raises(HttpError) as caught:
        parse_response(head, request_method=method)
    return caught.value.status


def scan(framing: Framing, *pieces: bytes | memoryview) -> tuple[int, bool]:
    scanner = BodyScanner(framing)
    return sum(scanner.feed(piece) for piece in pieces), scanner.done


# --- request line and targets -------------------------------------------------------------


def test_absolute_form_get_yields_host_port_and_origin_path() -> None:
    r = req(get("http://example.com/a/b?q=1", "Host: example.com"))
    assert (r.method, r.host, r.port, r.path, r.version) == (
        "GET",
        "example.com",
        80,
        "/a/b?q=1",
        "HTTP/1.1",
    )
    assert not r.origin_form and not r.is_connect and r.target == "http://example.com/a/b?q=1"


def test_head_length_excludes_the_body_that_follows() -> None:
    head = post("Content-Length: 5")
    parsed = parse_request(head + b"helloGET")
    assert parsed is not None and parsed[1] == len(head)


def test_incomplete_head_returns_none() -> None:
    assert parse_request(get()[:-1]) is None
    assert parse_request(b"") is None


def test_empty_absolute_path_becomes_slash() -> None:
    assert req(get("http://example.com")).path == "/"


def test_query_without_path_gets_a_slash() -> None:
    assert req(get("http://example.com?x=1")).path == "/?x=1"


def test_explicit_port_is_parsed() -> None:
    assert req(get("http://example.com:8080/")).port == 8080


def test_scheme_and_host_are_case_insensitive_and_host_is_lowercased() -> None:
    assert req(get("HTTP://Example.COM/Path")).host == "example.com"
    assert req(get("HTTP://Example.COM/Path")).path == "/Path"


def test_ipv6_absolute_form_host_is_reported_without_brackets() -> None:
    r = req(get("http://[2001:DB8::1]:8080/"))
    assert (r.host, r.port) == ("2001:db8::1", 8080)


def test_connect_authority_form() -> None:
    r = req(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert (r.is_connect, r.host, r.port, r.path, r.origin_form) == (
        True,
        "example.com",
        443,
        "",
        False,
    )


def test_connect_bracketed_ipv6() -> None:
    assert req(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n").host == "::1"


def test_ipv4_mapped_ipv6_is_reported_as_ipv4_so_policy_sees_loopback() -> None:
    assert req(b"CONNECT [::ffff:127.0.0.1]:22 HTTP/1.1\r\n\r\n").host == "127.0.0.1"


def test_origin_form_request_for_the_proxy_itself_is_flagged() -> None:
    r = req(b"GET /proxy.pac HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
    assert (r.origin_form, r.path, r.host, r.port) == (True, "/proxy.pac", "127.0.0.1", 8080)


def test_options_asterisk_is_origin_form() -> None:
    assert req(b"OPTIONS * HTTP/1.1\r\nHost: proxy\r\n\r\n").origin_form


def test_http10_origin_form_without_host_is_accepted() -> None:
    assert req(b"GET / HTTP/1.0\r\n\r\n").host == ""


def test_leading_empty_lines_are_skipped_and_counted() -> None:
    parsed = parse_request(b"\r\n\r\n" + get())
    assert parsed is not None and parsed[1] == 4 + len(get())


def test_request_without_headers() -> None:
    assert req(b"GET http://a/ HTTP/1.1\r\n\r\n").headers == ()


def test_unknown_token_method_is_accepted_and_not_idempotent() -> None:
    r = req(b"PROPFIND http://a/ HTTP/1.1\r\n\r\n")
    assert r.method == "PROPFIND" and not r.idempotent


# --- header fields --------------------------------------------------------------------------


def test_headers_keep_order_case_and_duplicates() -> None:
    r = req(get("http://a/", "X-B: 1", "x-a: 2", "X-B: 3"))
    assert r.headers == (("X-B", "1"), ("x-a", "2"), ("X-B", "3"))


def test_values_lose_surrounding_whitespace_only() -> None:
    assert req(get("http://a/", "X:  \t a  b \t")).headers == (("X", "a  b"),)


def test_empty_value_is_allowed() -> None:
    assert req(get("http://a/", "X-Empty:")).headers == (("X-Empty", ""),)


def test_obs_text_in_value_survives_as_latin1() -> None:
    assert req(get("http://a/", "X: caf\xe9")).headers == (("X", "caf\xe9"),)


# --- keep-alive and flags -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "fields", "keep_alive"),
    [
        ("HTTP/1.1", (), True),
        ("HTTP/1.1", ("Connection: close",), False),
        ("HTTP/1.1", ("Proxy-Connection: Close",), False),
        ("HTTP/1.1", ("Connection: keep-alive", "Proxy-Connection: close"), False),
        ("HTTP/1.0", (), False),
        ("HTTP/1.0", ("Connection: Keep-Alive",), True),
        ("HTTP/1.0", ("Proxy-Connection: keep-alive",), True),
        ("HTTP/1.0", ("Connection: keep-alive, close",), False),
    ],
)
def test_keep_alive_is_what_the_client_asked_for(
    version: str, fields: tuple[str, ...], keep_alive: bool
) -> None:
    assert req(get("http://a/", *fields, version=version)).keep_alive is keep_alive


def test_proxy_authorization_is_captured() -> None:
    r = req(get("http://a/", "Proxy-Authorization: Basic YTpi"))
    assert r.proxy_authorization == "Basic YTpi"
    assert req(get()).proxy_authorization is None


def test_expect_100_continue_is_flagged() -> None:
    assert req(post("Content-Length: 3", "Expect: 100-Continue")).expect_continue
    assert not req(post("Content-Length: 3")).expect_continue


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"])
def test_rfc9110_idempotent_methods(method: str) -> None:
    assert req(f"{method} http://a/ HTTP/1.1\r\n\r\n".encode()).idempotent


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_post_and_patch_are_not_idempotent(method: str) -> None:
    assert not req(f"{method} http://a/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode()).idempotent


def test_websocket_upgrade_is_flagged() -> None:
    assert req(get("http://a/ws", "Connection: Upgrade", "Upgrade: websocket")).upgrade


def test_h2c_upgrade_is_not_a_websocket_upgrade() -> None:
    assert not req(get("http://a/", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c")).upgrade


def test_upgrade_header_without_connection_upgrade_is_not_an_upgrade() -> None:
    assert not req(get("http://a/ws", "Upgrade: websocket")).upgrade


# --- request body framing -------------------------------------------------------------------


def test_no_length_means_no_body() -> None:
    assert req(get()).body == Framing.NONE


def test_content_length_body() -> None:
    assert req(post("Content-Length: 0042")).body == Framing(BodyKind.LENGTH, 42)


def test_chunked_body_is_case_insensitive() -> None:
    assert req(post("Transfer-Encoding: Chunked")).body == Framing.CHUNKED


def test_identical_duplicate_content_lengths_are_accepted() -> None:
    assert req(post("Content-Length: 5", "Content-Length: 5")).body.length == 5
    assert req(post("Content-Length: 5, 5")).body.length == 5


# --- smuggling defences: one test each -------------------------------------------------------


def test_content_length_with_transfer_encoding_is_rejected() -> None:
    assert rejected(post("Content-Length: 5", "Transfer-Encoding: chunked")) == 400


def test_differing_duplicate_content_lengths_are_rejected() -> None:
    assert rejected(post("Content-Length: 5", "Content-Length: 6")) == 400


def test_differing_content_lengths_in_one_field_are_rejected() -> None:
    assert rejected(post("Content-Length: 5, 6")) == 400


@pytest.mark.parametrize("value", ["+5", "-1", "5a", "0x5", "", "5 5", "1e3", "\xb2", "1" * 20])
def test_non_digit_or_oversized_content_length_is_rejected(value: str) -> None:
    assert rejected(post(f"Content-Length: {value}")) == 400


@pytest.mark.parametrize("value", ["gzip", "gzip, chunked", "chunked, gzip", "identity"])
def test_transfer_coding_other_than_chunked_is_not_implemented(value: str) -> None:
    assert rejected(post(f"Transfer-Encoding: {value}")) == 501


@pytest.mark.parametrize(
    "value", ["", "xchunked", "chunked, chunked", "chunked;q=1", "chunked,", '"chunked"']
)
def test_garbage_transfer_encoding_is_bad_request(value: str) -> None:
    assert rejected(post(f"Transfer-Encoding: {value}")) == 400


def test_transfer_encoding_split_over_two_fields_chunked_twice_is_rejected() -> None:
    assert rejected(post("Transfer-Encoding: chunked", "Transfer-Encoding: chunked")) == 400


def test_transfer_encoding_in_http10_request_is_rejected() -> None:
    assert rejected(post("Transfer-Encoding: chunked", version="HTTP/1.0")) == 400


def test_obs_fold_is_rejected() -> None:
    assert rejected(get("http://a/", "X-A: 1", " folded")) == 400
    assert rejected(get("http://a/", "X-A: 1", "\tfolded: 2")) == 400


def test_bare_lf_line_endings_are_rejected() -> None:
    assert rejected(b"GET http://a/ HTTP/1.1\nHost: a\n\n") == 400


def test_bare_lf_inside_header_block_is_rejected() -> None:
    assert rejected(b"GET http://a/ HTTP/1.1\r\nX: 1\nY: 2\r\n\r\n") == 400


def test_bare_lf_is_rejected_before_the_head_is_complete() -> None:
    assert rejected(b"GET http://a/ HTTP/1.1\r\nX: 1\nTransfer-Encoding: chunked\n") == 400


def test_bare_cr_is_rejected() -> None:
    assert rejected(get("http://a/", "X: a\rb")) == 400


def test_bare_cr_just_before_the_blank_line_is_rejected() -> None:
    assert rejected(b"GET http://a/ HTTP/1.1\r\nX: a\r\r\n\r\n") == 400
    assert resp_rejected(b"HTTP/1.1 200 OK\r\nX: a\r\r\n\r\n") == 502


@pytest.mark.parametrize("byte", [b"\x00", b"\x01", b"\x0b", b"\x0c", b"\x1f", b"\x7f"])
def test_control_characters_in_values_are_rejected(byte: bytes) -> None:
    assert rejected(b"GET http://a/ HTTP/1.1\r\nX: a" + byte + b"b\r\n\r\n") == 400


def test_nul_in_header_name_is_rejected() -> None:
    assert rejected(b"GET http://a/ HTTP/1.1\r\nX\x00Y: 1\r\n\r\n") == 400


@pytest.mark.parametrize("target", [b"http://a/\x00", b"http://a/\x7f", b"http://a/\xe9", b"/a\tb"])
def test_control_or_non_ascii_in_target_is_rejected(target: bytes) -> None:
    assert rejected(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n") == 400


@pytest.mark.parametrize("method", [b"G(T", b"GE:T", b"G\x00T", b"\xc3\x89T"])
def test_invalid_token_chars_in_method_are_rejected(method: bytes) -> None:
    assert rejected(method + b" http://a/ HTTP/1.1\r\n\r\n") == 400


@pytest.mark.parametrize("name", ["Fo o", "Foo(", "Fo/o", "\xe9", "Fo\to"])
def test_invalid_token_chars_in_header_name_are_rejected(name: str) -> None:
    assert rejected(get("http://a/", f"{name}: 1")) == 400


def test_whitespace_before_colon_is_rejected() -> None:
    assert rejected(post("Content-Length : 5")) == 400
    assert rejected(post("Transfer-Encoding\t: chunked")) == 400


def test_empty_header_name_is_rejected() -> None:
    assert rejected(get("http://a/", ": x")) == 400


def test_header_line_without_colon_is_rejected() -> None:
    assert rejected(get("http://a/", "NoColon")) == 400


@pytest.mark.parametrize(
    "target", ["https://a/", "ftp://a/", "HTTPS://a:443/", "a.example/", "http:/a/", "//a/"]
)
def test_absolute_form_other_than_http_is_rejected(target: str) -> None:
    assert rejected(get(target)) == 400


def test_userinfo_in_absolute_form_is_rejected() -> None:
    assert rejected(get("http://user:pass@example.com/")) == 400


def test_userinfo_in_connect_target_is_rejected() -> None:
    assert rejected(b"CONNECT user@example.com:443 HTTP/1.1\r\n\r\n") == 400


def test_fragment_in_target_is_rejected() -> None:
    assert rejected(get("http://a/#frag")) == 400


@pytest.mark.parametrize(
    "target",
    [
        "example.com",
        "example.com:",
        "example.com:0",
        "example.com:65536",
        "example.com:+443",
        "example.com:443x",
        "::1:443",
        "2001:db8::1",
        "[::1]",
        "[::1:443",
        "[fe80::1%25eth0]:443",
        "[nonsense]:443",
        "/",
        "http://example.com:443",
        ":443",
        "exa$mple.com:443",
    ],
)
def test_connect_needs_authority_form_with_valid_port(target: str) -> None:
    assert rejected(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode()) == 400


@pytest.mark.parametrize("field", ["Content-Length: 5", "Transfer-Encoding: chunked"])
def test_connect_with_content_is_rejected(field: str) -> None:
    assert rejected(f"CONNECT a:443 HTTP/1.1\r\n{field}\r\n\r\n".encode()) == 400


def test_connect_with_zero_content_length_is_accepted() -> None:
    assert req(b"CONNECT a:443 HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_connect


def test_absolute_form_with_port_zero_is_rejected() -> None:
    assert rejected(get("http://example.com:0/")) == 400


def test_absolute_form_with_empty_host_is_rejected() -> None:
    assert rejected(get("http:///path")) == 400


def test_unbracketed_ipv6_in_absolute_form_is_rejected() -> None:
    assert rejected(get("http://::1/")) == 400


def test_http2_preface_is_version_not_supported() -> None:
    assert rejected(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == 505


def test_future_http1_minor_version_is_not_supported() -> None:
    assert rejected(b"GET http://a/ HTTP/1.2\r\n\r\n") == 505


@pytest.mark.parametrize(
    "line",
    [
        b"GET http://a/ http/1.1",
        b"GET http://a/ HTTP/1",
        b"GET http://a/",
        b"GET  http://a/ HTTP/1.1",
        b"GET http://a/ HTTP/1.1 ",
        b" GET http://a/ HTTP/1.1",
        b"GET\thttp://a/ HTTP/1.1",
    ],
)
def test_malformed_request_line_is_rejected(line: bytes) -> None:
    assert rejected(line + b"\r\n\r\n") == 400


def test_too_many_headers_is_431() -> None:
    fields = [f"X-{i}: v" for i in range(5)]
    assert rejected(get("http://a/", *fields), max_headers=4) == 431
    assert len(req(get("http://a/", *fields), max_headers=5).headers) == 5


def test_head_larger_than_max_head_is_431_before_it_completes() -> None:
    partial = get("http://a/", "X: " + "v" * 200)[:-2]
    assert parse_request(partial[:99], max_head=100) is None
    assert rejected(partial[:100], max_head=100) == 431


def test_head_of_exactly_max_head_bytes_is_accepted() -> None:
    head = get("http://a/", "X: v")
    assert parse_request(head, max_head=len(head)) is not None
    assert rejected(head, max_head=len(head) - 1) == 431


def test_over_long_request_line_is_414_before_the_line_ends() -> None:
    line = b"GET http://a/" + b"x" * 100
    assert rejected(line, max_line=50) == 414


def test_request_line_of_exactly_max_line_is_accepted() -> None:
    line = b"GET http://a/xx HTTP/1.1"
    assert parse_request(line + b"\r\n\r\n", max_line=len(line)) is not None
    assert rejected(line + b"\r\n\r\n", max_line=len(line) - 1) == 414


def test_more_than_one_host_is_rejected() -> None:
    assert rejected(get("http://a/", "Host: a", "Host: b")) == 400


def test_http11_origin_form_without_host_is_rejected() -> None:
    assert rejected(b"GET /proxy.pac HTTP/1.1\r\n\r\n") == 400


def test_origin_form_with_invalid_host_is_rejected() -> None:
    assert rejected(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n") == 400


def test_absolute_form_without_host_header_is_accepted() -> None:
    assert req(b"GET http://a/ HTTP/1.1\r\n\r\n").host == "a"


def test_more_than_one_proxy_authorization_is_rejected() -> None:
    assert rejected(get("http://a/", "Proxy-Authorization: a", "Proxy-Authorization: b")) == 400


# --- responses ------------------------------------------------------------------------------


def test_response_with_content_length() -> None:
    r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    assert (r.status, r.reason, r.version, r.body, r.keep_alive) == (
        200,
        "OK",
        "HTTP/1.1",
        Framing(BodyKind.LENGTH, 3),
        True,
    )


def test_response_head_length() -> None:
    head = b"HTTP/1.1 204 No Content\r\n\r\n"
    assert parse_response(head + b"HTTP/1.1", request_method="GET") == (resp(head), len(head))


def test_incomplete_response_returns_none() -> None:
    assert parse_response(b"HTTP/1.1 200 OK\r\n", request_method="GET") is None


def test_chunked_response() -> None:
    assert resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").body == Framing.CHUNKED


def test_response_without_length_is_read_until_close_and_not_kept_alive() -> None:
    r = resp(b"HTTP/1.1 200 OK\r\n\r\n")
    assert r.body == Framing.UNTIL_CLOSE and not r.keep_alive


def test_response_to_head_has_no_body_despite_content_length() -> None:
    r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD")
    assert r.body == Framing.NONE and r.keep_alive


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified", b"103 Early Hints"])
def test_bodyless_statuses(status: bytes) -> None:
    assert resp(b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\n\r\n").body == Framing.NONE


def test_100_continue_is_interim_and_the_final_response_follows() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    first = parse_response(data, request_method="POST")
    assert first is not None and first[0].interim and first[0].body == Framing.NONE
    second = parse_response(data[first[1] :], request_method="POST")
    assert second is not None and second[0].status == 200 and not second[0].interim


def test_101_switching_protocols_is_final_not_interim() -> None:
    assert not resp(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n").interim


def test_successful_connect_response_starts_a_tunnel_without_body() -> None:
    r = resp(b"HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT")
    assert r.body == Framing.NONE


def test_http10_response_keeps_alive_only_when_told() -> None:
    assert not resp(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").keep_alive
    keep = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"
    assert resp(keep).keep_alive


def test_response_connection_close_is_not_kept_alive() -> None:
    assert not resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n").keep_alive


def test_response_without_reason_phrase_is_accepted() -> None:
    assert resp(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").reason == ""


def test_response_duplicate_set_cookie_fields_are_kept_in_order() -> None:
    r = resp(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n")
    assert r.headers == (("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Length", "0"))


def test_response_with_content_length_and_transfer_encoding_is_bad_gateway() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert resp_rejected(head) == 502


def test_response_with_non_chunked_coding_is_read_until_close() -> None:
    assert resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").body == Framing.UNTIL_CLOSE


def test_response_with_chunked_not_last_is_bad_gateway() -> None:
    assert resp_rejected(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n") == 502


def test_response_with_differing_content_lengths_is_bad_gateway() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
    assert resp_rejected(head) == 502


@pytest.mark.parametrize(
    "line",
    [b"HTTP/1.1 20 OK", b"HTTP/1.1 600 X", b"HTTP/1.1 abc OK", b"HTTP/2.0 200 OK", b"ICY 200 OK"],
)
def test_malformed_status_line_is_bad_gateway(line: bytes) -> None:
    assert resp_rejected(line + b"\r\n\r\n") == 502


def test_response_obs_fold_is_bad_gateway() -> None:
    assert resp_rejected(b"HTTP/1.1 200 OK\r\nX: 1\r\n 2\r\nContent-Length: 0\r\n\r\n") == 502


def test_response_bare_lf_is_bad_gateway_before_the_head_completes() -> None:
    assert resp_rejected(b"HTTP/1.1 200 OK\nContent-Length: 0\n") == 502


def test_response_bare_cr_in_status_line_is_bad_gateway() -> None:
    assert resp_rejected(b"HTTP/1.1 200 O\rK\r\n\r\n") == 502


def test_response_head_too_large_is_bad_gateway() -> None:
    with pytest.raises(HttpError) as caught:
        parse_response(b"HTTP/1.1 200 OK\r\nX: " + b"v" * 100, request_method="GET", max_head=64)
    assert caught.value.status == 502


# --- encode_request_for_origin --------------------------------------------------------------


def encoded(head: bytes, via: str | None = None) -> bytes:
    return encode_request_for_origin(req(head), via=via)


def test_encoded_request_uses_origin_form_and_target_host() -> None:
    out = encoded(get("http://example.com/p?q", "Host: example.com", "Accept: */*"))
    assert out == b"GET /p?q HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"


def test_absolute_form_authority_wins_over_conflicting_host() -> None:
    out = encoded(get("http://real.example:8080/", "Host: evil.example"))
    assert b"Host: real.example:8080\r\n" in out and b"evil" not in out


def test_host_is_added_when_missing_and_ipv6_is_bracketed() -> None:
    assert encoded(get("http://[::1]:81/")) == b"GET / HTTP/1.1\r\nHost: [::1]:81\r\n\r\n"


@pytest.mark.parametrize(
    "field",
    [
        "Connection: close",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "Proxy-Authorization: Basic YTpi",
        "Proxy-Authenticate: Basic",
        "TE: trailers",
        "Trailer: X-Checksum",
        "Upgrade: h2c",
    ],
)
def test_hop_by_hop_fields_are_stripped(field: str) -> None:
    out = encoded(get("http://a/", field, "Accept: */*"))
    assert out == b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"


def test_fields_named_by_connection_are_stripped() -> None:
    out = encoded(get("http://a/", "Connection: X-Secret, close", "X-Secret: 1", "X-Kept: 2"))
    assert out == b"GET / HTTP/1.1\r\nHost: a\r\nX-Kept: 2\r\n\r\n"


def test_framing_fields_named_by_connection_are_kept() -> None:
    out = encoded(post("Connection: Content-Length, Host", "Content-Length: 3"))
    assert b"Content-Length: 3\r\n" in out and b"Host: example.com\r\n" in out


def test_chunked_transfer_encoding_is_kept_for_verbatim_forwarding() -> None:
    out = encoded(post("Transfer-Encoding: chunked", "Connection: Transfer-Encoding"))
    assert b"Transfer-Encoding: chunked\r\n" in out


def test_identical_duplicate_content_lengths_are_sent_once() -> None:
    out = encoded(post("Content-Length: 5, 5", "Content-Length: 5"))
    assert out.count(b"Content-Length") == 1 and b"Content-Length: 5\r\n" in out


def test_websocket_upgrade_keeps_upgrade_and_connection_upgrade() -> None:
    out = encoded(get("http://a/ws", "Connection: keep-alive, Upgrade", "Upgrade: websocket"))
    assert (
        out == b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )


def test_via_names_the_received_protocol_version() -> None:
    assert encoded(get("http://a/"), via="proxyd").endswith(b"\r\nVia: 1.1 proxyd\r\n\r\n")
    assert b"Via: 1.0 proxyd" in encoded(get("http://a/", version="HTTP/1.0"), via="proxyd")


def test_http10_client_version_is_kept_so_the_origin_never_chunks() -> None:
    assert encoded(get("http://a/", version="HTTP/1.0")).startswith(b"GET / HTTP/1.0\r\n")


def test_origin_form_request_keeps_its_host() -> None:
    out = encoded(b"GET /x HTTP/1.1\r\nHost: proxy:8080\r\n\r\n")
    assert out == b"GET /x HTTP/1.1\r\nHost: proxy:8080\r\n\r\n"


def test_connect_cannot_be_encoded_for_an_origin() -> None:
    with pytest.raises(ValueError):
        encode_request_for_origin(req(b"CONNECT a:443 HTTP/1.1\r\n\r\n"))


# --- encode_response_for_client -------------------------------------------------------------


def test_response_for_client_strips_hop_by_hop_and_closes_when_asked() -> None:
    r = resp(
        b"HTTP/1.1 200 OK\r\nKeep-Alive: 5\r\nConnection: X-A\r\nX-A: 1\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert encode_response_for_client(r, keep_alive=False) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )


def test_response_for_client_says_keep_alive_when_keeping() -> None:
    r = resp(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    out = encode_response_for_client(r, keep_alive=True)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"


def test_until_close_body_forces_connection_close() -> None:
    out = encode_response_for_client(resp(b"HTTP/1.1 200 OK\r\n\r\n"), keep_alive=True)
    assert out.endswith(b"Connection: close\r\n\r\n")


def test_interim_response_gets_no_connection_field() -> None:
    out = encode_response_for_client(resp(b"HTTP/1.1 100 Continue\r\n\r\n"), keep_alive=False)
    assert out == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_switching_protocols_keeps_upgrade() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    out = encode_response_for_client(resp(head), keep_alive=True)
    assert out == head.replace(b"Connection: Upgrade", b"Connection: upgrade")


def test_chunked_response_keeps_transfer_encoding() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert b"Transfer-Encoding: chunked\r\n" in encode_response_for_client(
        resp(head), keep_alive=True
    )


# --- BodyScanner ----------------------------------------------------------------------------


def test_length_body_ends_at_its_length_across_feeds() -> None:
    scanner = BodyScanner(Framing(BodyKind.LENGTH, 5))
    assert (scanner.feed(b"abc"), scanner.done) == (3, False)
    assert (scanner.feed(b"deNEXT"), scanner.done) == (2, True)
    assert scanner.feed(b"more") == 0


def test_zero_length_and_no_body_are_done_at_once() -> None:
    assert scan(Framing(BodyKind.LENGTH, 0), b"GET") == (0, True)
    assert scan(Framing.NONE, b"GET") == (0, True)


def test_until_close_body_takes_everything() -> None:
    assert scan(Framing.UNTIL_CLOSE, b"abc", b"def") == (6, False)


def test_chunked_body_ends_after_the_last_chunk_and_trailers() -> None:
    body = b'5\r\nhello\r\n6;name=val;q="a b"\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n'
    assert scan(Framing.CHUNKED, body + b"NEXT") == (len(body), True)


def test_chunked_body_fed_byte_by_byte() -> None:
    body = b"A\r\n0123456789\r\n0\r\n\r\n"
    assert scan(Framing.CHUNKED, *(body[i : i + 1] for i in range(len(body)))) == (len(body), True)


def test_chunked_body_from_memoryview() -> None:
    body = b"3\r\n\r\n\n\r\n0\r\n\r\n"
    assert scan(Framing.CHUNKED, memoryview(body + b"GET")) == (len(body), True)


def test_chunked_size_with_leading_zeros_and_upper_hex() -> None:
    body = b"000A\r\n" + b"x" * 10 + b"\r\n0\r\n\r\n"
    assert scan(Framing.CHUNKED, body) == (len(body), True)


@pytest.mark.parametrize(
    "body",
    [
        b"g\r\n",
        b"0x5\r\nhello\r\n",
        b"-5\r\n",
        b" 5\r\n",
        b"5 \r\nhello\r\n",
        b"\r\n",
        b"5\nhello\r\n",
        b"5\r\nhelloX\r\n",
        b"5\r\nhello\n0\r\n",
        b"5;\r\nhello\r\n",
        b"5;a=\r\nhello\r\n",
        b"5;a b\r\n",
        b'5;a="x\r\n',
        b"1" * 17 + b"\r\n",
        b"0\r\nX : 1\r\n\r\n",
        b"0\r\n folded\r\n\r\n",
        b"0\r\nX: 1\n\r\n",
        b"0\r\n\n",
        b"0\r\nX: \x00\r\n\r\n",
    ],
)
def test_malformed_chunked_framing_is_rejected(body: bytes) -> None:
    with pytest.raises(HttpError) as caught:
        BodyScanner(Framing.CHUNKED).feed(body)
    assert caught.value.status == 400


def test_overlong_chunk_size_line_is_rejected_without_a_newline() -> None:
    scanner = BodyScanner(Framing.CHUNKED)
    with pytest.raises(HttpError):
        for _ in range(100):
            scanner.feed(b"1;" + b"a" * 1000)


def test_huge_chunk_is_skipped_by_arithmetic_not_scanned() -> None:
    piece = memoryview(b"\r\n" * (1 << 19))  # 1 MiB of line endings a byte scanner would trip on
    scanner = BodyScanner(Framing.CHUNKED)
    started = time.process_time()
    consumed = scanner.feed(b"10000000\r\n")  # one chunk of 256 MiB
    for _ in range(256):
        consumed += scanner.feed(piece)
    consumed += scanner.feed(b"\r\n0\r\n\r\n")
    assert scanner.done and consumed == 10 + (256 << 20) + 7
    assert time.process_time() - started < 1.0  # a per-byte Python loop would need minutes


# --- local answers --------------------------------------------------------------------------


def test_error_response_is_complete_plain_text_and_closes() -> None:
    out = error_response(502, "upstream failed")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 502 Bad Gateway",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: 16",
        b"Connection: close",
    ]
    assert body == b"upstream failed\n"


def test_error_response_carries_extra_headers() -> None:
    out = error_response(407, "auth", extra_headers=[("Proxy-Authenticate", 'Basic realm="x"')])
    assert b'\r\nProxy-Authenticate: Basic realm="x"\r\n\r\nauth\n' in out


def test_error_response_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        error_response(407, "auth", extra_headers=[("X", "a\r\nSet-Cookie: b")])


def test_simple_response_for_pac_can_keep_alive() -> None:
    out = simple_response(
        200, b"pac", content_type="application/x-ns-proxy-autoconfig", keep_alive=True
    )
    assert out.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ns-proxy-autoconfig\r\n")
    assert out.endswith(b"Content-Length: 3\r\nConnection: keep-alive\r\n\r\npac")


def test_error_responses_parse_back_as_what_they_say() -> None:
    r = resp(error_response(431, "too big"))
    assert (r.status, r.body, r.keep_alive) == (431, Framing(BodyKind.LENGTH, 8), False)


def test_http_error_carries_status_and_reason_and_is_a_proxyd_error() -> None:
    error = HttpError(414, "request line too long")
    assert (error.status, error.reason) == (414, "request line too long")
    assert isinstance(error, ProxydError)
