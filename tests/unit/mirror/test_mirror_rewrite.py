"""The mirror's sans-IO rewriting: links, headers, cookies, compressed bodies."""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.mirror._rewrite import (
    PIECE,
    BodyDecoder,
    BodyPlan,
    DecodeError,
    HostMap,
    LinkRewriter,
    body_plan,
    rewrite_set_cookie,
    rewrite_url,
)

WILD = HostMap("*.blog.example", "*.blog-mirror.example")
EXACT = HostMap("blog.example", "mirror.example")


def rewrite(data: bytes, hosts: HostMap = WILD, cuts: list[int] | None = None) -> bytes:
    rewriter = LinkRewriter(hosts)
    out, start = [], 0
    for cut in sorted(cuts or []):
        out.append(rewriter.feed(data[start:cut]))
        start = cut
    out.append(rewriter.feed(data[start:]))
    out.append(rewriter.finish())
    return b"".join(out)


def test_host_map_keeps_subdomain_labels_both_ways() -> None:
    assert WILD.to_mirror("www.blog.example") == "www.blog-mirror.example"
    assert WILD.to_original("a.b.blog-mirror.example") == "a.b.blog.example"
    assert WILD.to_original("blog-mirror.example") == "blog.example"
    assert WILD.to_original("notblog-mirror.example") is None
    assert EXACT.to_original("www.mirror.example") is None
    assert EXACT.to_mirror("blog.example") == "mirror.example"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (b'<a href="http://blog-mirror.example/x">', b'<a href="http://blog.example/x">'),
        (b'<a href="https://www.blog-mirror.example/">', b'<a href="http://www.blog.example/">'),
        (b"<img src=//x.blog-mirror.example:8080/i.png>", b"<img src=//x.blog.example:8080/i.png>"),
        (b"url(HTTPS://WWW.Blog-Mirror.Example/a.css)", b"url(http://www.blog.example/a.css)"),
        # a different host that merely starts or ends like the mirror is left alone
        (b"http://blog-mirror.example.evil.test/", b"http://blog-mirror.example.evil.test/"),
        (b"http://xblog-mirror.example/", b"http://xblog-mirror.example/"),
        (b"http://blog-mirror.examples/", b"http://blog-mirror.examples/"),
        # text that is not a link stays as written
        (b"visit blog-mirror.example today", b"visit blog-mirror.example today"),
        # a trailing dot then a path is still the host
        (b"http://blog-mirror.example./p", b"http://blog.example./p"),
    ],
)
def test_links_to_the_mirror_point_back_at_the_original_over_plain_http(
    source: bytes, expected: bytes
) -> None:
    assert rewrite(source) == expected


def test_exact_mapping_rewrites_only_that_host() -> None:
    page = b"http://mirror.example/ http://www.mirror.example/"
    assert rewrite(page, EXACT) == b"http://blog.example/ http://www.mirror.example/"


def test_scheme_after_a_possible_double_byte_lead_keeps_its_s() -> None:
    # In Shift_JIS 0x82 0x68 is one character: the "h" is not the start of "https:".
    page = b"\x82https://blog-mirror.example/"
    assert rewrite(page) == b"\x82https://blog.example/"
    assert rewrite("é https://blog-mirror.example/".encode()) == "é http://blog.example/".encode()


def test_utf16_body_with_bom_passes_through() -> None:
    page = "\ufeffhttp://blog-mirror.example/".encode("utf-16-le")
    assert rewrite(page) == page
    page_be = b"\xfe\xff" + "http://blog-mirror.example/".encode("utf-16-be")
    assert rewrite(page_be) == page_be


FRAGMENTS = st.sampled_from(
    [
        b"http://",
        b"https://",
        b"//",
        b"blog-mirror.example",
        b"www.",
        b"x.",
        b".",
        b"/",
        b"a",
        b"-",
        b" ",
        b"\x82",
        b"\xc3\xa9",
        b"HTTP",
        b"s:",
        b'"',
    ]
)


@given(
    data=st.lists(FRAGMENTS, max_size=60).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_chunk_boundaries_anywhere_give_the_same_output(data: bytes, cuts: list[int]) -> None:
    whole = rewrite(data)
    assert rewrite(data, cuts=[c for c in cuts if c <= len(data)]) == whole
    # and one byte at a time
    assert rewrite(data, cuts=list(range(len(data)))) == whole


@given(data=st.lists(FRAGMENTS, max_size=60).map(b"".join))
def test_streaming_equals_a_whole_body_substitution(data: bytes) -> None:
    def replace(match: re.Match[bytes]) -> bytes:
        original = WILD.to_original(match["host"].decode())
        assert original is not None
        return (b"http:" if match["scheme"] else b"") + b"//" + original.encode()

    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return
    assert rewrite(data) == WILD.pattern.sub(replace, data)


def test_memory_held_between_chunks_is_bounded() -> None:
    rewriter = LinkRewriter(WILD)
    emitted = 0
    for _ in range(200):
        emitted += len(rewriter.feed(b"x" * 10_000))
    assert 200 * 10_000 - emitted <= WILD.longest_match + 1


def test_location_header_is_rewritten_and_relative_ones_are_kept() -> None:
    assert rewrite_url("https://www.blog-mirror.example/a?b", WILD) == "http://www.blog.example/a?b"
    assert rewrite_url("/relative", WILD) == "/relative"
    assert rewrite_url("http://other.example/", WILD) == "http://other.example/"


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("s=1; Domain=.blog-mirror.example; Path=/", "s=1; Domain=blog.example; Path=/"),
        ("s=1; domain=www.blog-mirror.example", "s=1; Domain=www.blog.example"),
        ("s=1; Domain=tracker.example; Path=/", "s=1; Path=/"),
        ("s=1; Path=/; Secure; HttpOnly; SameSite=None", "s=1; Path=/; HttpOnly"),
        ("s=1; SameSite=Lax", "s=1; SameSite=Lax"),
    ],
)
def test_set_cookie_domain_follows_the_original_host(cookie: str, expected: str) -> None:
    assert rewrite_set_cookie(cookie, WILD) == expected


def decode_all(decoder: BodyDecoder, data: bytes, step: int) -> bytes:
    out = []
    for start in range(0, len(data), step):
        for piece in decoder.feed(data[start : start + step]):
            assert len(piece) <= PIECE
            out.append(piece)
    decoder.finish()
    return b"".join(out)


@pytest.mark.parametrize("step", [1, 7, 4096, 10**7])
def test_gzip_and_deflate_decode_in_any_chunking(step: int) -> None:
    body = b"<a href='http://blog-mirror.example/'>" * 5000
    assert decode_all(BodyDecoder("gzip"), gzip.compress(body), step) == body
    assert decode_all(BodyDecoder("deflate"), zlib.compress(body), step) == body
    raw = zlib.compressobj(wbits=-15)
    raw_deflate = raw.compress(body) + raw.flush()
    assert decode_all(BodyDecoder("deflate"), raw_deflate, step) == body


def test_gzip_with_several_members_decodes_all_of_them() -> None:
    data = gzip.compress(b"one ") + gzip.compress(b"two")
    assert decode_all(BodyDecoder("gzip"), data, 5) == b"one two"


def test_a_highly_compressed_body_comes_out_in_bounded_pieces() -> None:
    bomb = gzip.compress(b"\0" * (20 * PIECE))
    pieces = list(BodyDecoder("gzip").feed(bomb))
    assert len(pieces) >= 20
    assert sum(map(len, pieces)) == 20 * PIECE


@pytest.mark.parametrize(
    "damage",
    [lambda d: d[: len(d) // 2], lambda d: d[:10] + b"garbage" + d[17:]],
    ids=["truncated", "corrupt"],
)
def test_broken_gzip_is_an_error_not_garbage(damage: Callable[[bytes], bytes]) -> None:
    data = damage(gzip.compress(b"hello world " * 1000))
    decoder = BodyDecoder("gzip")
    with pytest.raises(DecodeError):
        for _ in decoder.feed(data):
            pass
        decoder.finish()


@pytest.mark.parametrize(
    ("content_type", "encoding", "plan"),
    [
        ("text/html; charset=utf-8", None, BodyPlan.REWRITE),
        ("text/css", "identity", BodyPlan.REWRITE),
        ("TEXT/HTML", "gzip", BodyPlan.DECODE_REWRITE),
        ("text/html", "deflate", BodyPlan.DECODE_REWRITE),
        ("text/html", "br", BodyPlan.PASS),
        ("text/html", "gzip, gzip", BodyPlan.PASS),
        ("text/html; charset=UTF-16", None, BodyPlan.PASS),
        ("application/javascript", None, BodyPlan.PASS),
        ("image/png", "gzip", BodyPlan.PASS),
        (None, None, BodyPlan.PASS),
    ],
)
def test_body_plan_follows_the_documented_rule(
    content_type: str | None, encoding: str | None, plan: BodyPlan
) -> None:
    assert body_plan(content_type, encoding) is plan
