"""Property tests for the HTTP/1.1 framing: hostile bytes only ever yield a Request, None or an
HttpError with a 4xx/5xx status; how the bytes are chunked never changes the outcome; valid
requests survive a trip through ``encode_request_for_origin``.

Budget: ~200 examples per property by default; HYPOTHESIS_PROFILE=fuzz runs 20,000.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from proxyd.protocol._http1_encode import encode_request_for_origin

FUZZING = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
budget = settings(
    max_examples=20_000 if FUZZING else 200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "http1"
LIMITS = {"max_head": 2048, "max_headers": 20, "max_line": 512}

Outcome = tuple[str, object, int]
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
HOP_BY_HOP_AND_FRAMING = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    "transfer-encoding",
}
FRAGMENTS = [
    b"GET ", b"CONNECT ", b"POST ", b"PRI * HTTP/2.0", b"http://", b"https://", b"[::1]", b"a.b",
    b":80", b":0", b"@", b"#", b"/", b"?", b" ", b"\t", b"\r\n", b"\r", b"\n", b"\r\n\r\n",
    b" HTTP/1.1", b" HTTP/1.0", b"Host: ", b"Content-Length: ", b"Transfer-Encoding: ",
    b"chunked", b"gzip", b",", b"Connection: ", b"close", b"keep-alive", b"Upgrade: websocket",
    b"0", b"5", b"-1", b"\x00", b"\x7f", b"\xff", b":", b"x",
]  # fmt: skip

tokens = st.text(TCHAR, min_size=1, max_size=12)
field_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
    | st.just("\t"),
    max_size=30,
).map(lambda value: value.strip(" \t"))
end_to_end_fields = st.lists(
    st.tuples(tokens.filter(lambda name: name.lower() not in HOP_BY_HOP_AND_FRAMING), field_values),
    max_size=8,
)
hop_by_hop_fields = st.lists(
    st.sampled_from(
        [
            ("Connection", "close"),
            ("Proxy-Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic YTpi"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
        ]
    ),
    max_size=3,
    unique=True,
)
hosts = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
)
paths = st.from_regex(r"(/[A-Za-z0-9._~%!$&'()*+,;=:@-]*)+(\?[A-Za-z0-9/?=&%-]*)?", fullmatch=True)
hostile_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(b"".join),
)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str]]]:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PROPFIND"]))
    port = draw(st.one_of(st.just(""), st.integers(1, 65535).map(lambda port: f":{port}")))
    target = f"http://{draw(hosts)}{port}{draw(paths)}"
    fields = draw(end_to_end_fields)
    every = [*fields, *draw(hop_by_hop_fields)]
    body = draw(st.sampled_from([[], ["Content-Length: 3"], ["Transfer-Encoding: chunked"]]))
    lines = [f"{method} {target} HTTP/1.1", *(f"{n}:{v}" for n, v in every), *body]
    return "".join(f"{line}\r\n" for line in lines).encode("latin-1") + b"\r\n", fields


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    head = bytearray(draw(valid_requests())[0])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(head)))
        insert = draw(st.sampled_from(FRAGMENTS))
        cut = draw(st.integers(0, 3))
        head[at : at + cut] = insert
    return bytes(head)


def outcome(buf: bytes) -> Outcome:
    try:
        parsed = parse_request(buf, **LIMITS)
    except HttpError as error:
        assert 400 <= error.status <= 599 and error.reason
        return ("error", None, error.status)
    if parsed is None:
        return ("incomplete", None, 0)
    request, head_len = parsed
    assert isinstance(request, Request) and 0 < head_len <= len(buf)
    assert_clean_fields(request.headers)
    assert request.path.startswith("/") or request.is_connect or request.path == "*"
    return ("request", request, head_len)


def assert_clean_fields(fields: tuple[tuple[str, str], ...]) -> None:
    """Whatever is accepted can be forwarded without splitting or smuggling anything."""
    for name, value in fields:
        assert name and set(name) <= set(TCHAR)
        assert all(c == "\t" or " " <= c != "\x7f" for c in value)
        assert value == value.strip(" \t")


def fed_growing(buf: bytes, step: int = 1) -> Outcome:
    """What a caller sees when the bytes arrive ``step`` at a time into one growing buffer."""
    for end in [*range(step, len(buf), step), len(buf)]:
        result = outcome(buf[:end])
        if result[0] != "incomplete":
            return result
    return outcome(buf)


def response_outcome(buf: bytes, method: str) -> Outcome:
    try:
        parsed = parse_response(buf, request_method=method, max_head=2048, max_headers=20)
    except HttpError as error:
        assert error.status == 502
        return ("error", None, error.status)
    if parsed is None:
        return ("incomplete", None, 0)
    assert isinstance(parsed[0], Response) and 0 < parsed[1] <= len(buf)
    assert_clean_fields(parsed[0].headers)
    return ("response", parsed[0], parsed[1])


def scan_outcome(framing: Framing, pieces: list[bytes]) -> tuple[str, int, bool]:
    scanner = BodyScanner(framing)
    consumed = 0
    try:
        for piece in pieces:
            taken = scanner.feed(memoryview(piece))
            assert 0 <= taken <= len(piece)
            consumed += taken
            if scanner.done:
                break
    except HttpError as error:
        assert error.status == 400
        return ("error", 0, False)
    return ("ok", consumed, scanner.done)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@budget
@given(hostile_bytes)
def test_hostile_bytes_yield_a_request_none_or_an_http_error(buf: bytes) -> None:
    outcome(buf)


@budget
@given(mutated_requests())
def test_mutated_heads_yield_a_request_none_or_an_http_error(buf: bytes) -> None:
    outcome(buf)


@budget
@given(st.one_of(mutated_requests(), hostile_bytes, valid_requests().map(lambda vr: vr[0])))
def test_byte_at_a_time_feeding_gives_the_same_outcome_as_all_at_once(buf: bytes) -> None:
    assert fed_growing(buf) == outcome(buf)


@budget
@given(mutated_requests(), st.integers(2, 64))
def test_feeding_in_any_step_size_gives_the_same_outcome(buf: bytes, step: int) -> None:
    assert fed_growing(buf, step) == outcome(buf)


@budget
@given(valid_requests())
def test_round_trip_keeps_method_path_and_end_to_end_headers(
    valid: tuple[bytes, list[tuple[str, str]]],
) -> None:
    head, fields = valid
    first = parse_request(head)
    assert first is not None and first[1] == len(head)
    second = parse_request(encode_request_for_origin(first[0], via="proxyd"))
    assert second is not None
    again = second[0]
    assert (again.method, again.path, again.body) == (first[0].method, first[0].path, first[0].body)
    assert (again.host, again.port) == (first[0].host, first[0].port)
    forwarded = [(n, v) for n, v in again.headers if n.lower() not in HOP_BY_HOP_AND_FRAMING]
    assert forwarded == [*fields, ("Via", "1.1 proxyd")]


@budget
@given(hostile_bytes, st.sampled_from(["GET", "HEAD", "CONNECT", "POST"]))
def test_hostile_response_bytes_yield_a_response_none_or_bad_gateway(
    buf: bytes, method: str
) -> None:
    whole = response_outcome(b"HTTP/1.1 " + buf, method)
    prefix = b"HTTP/1.1 " + buf
    for end in range(1, len(prefix)):
        partial = response_outcome(prefix[:end], method)
        if partial[0] != "incomplete":
            assert partial == whole
            return


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    body = b""
    for size in draw(st.lists(st.integers(1, 300), max_size=6)):
        extension = draw(st.sampled_from([b"", b";a", b";a=b", b';name="q \\" x"', b" ; a = b"]))
        data = draw(st.binary(min_size=size, max_size=size))
        body += f"{size:x}".encode() + extension + b"\r\n" + data + b"\r\n"
    trailers = draw(st.lists(st.sampled_from([b"X-Sum: 1\r\n", b"Expires:\r\n"]), max_size=2))
    return body + b"0\r\n" + b"".join(trailers) + b"\r\n"


@budget
@given(chunked_bodies(), st.binary(max_size=20), st.lists(st.integers(0, 2000), max_size=8))
def test_chunked_body_ends_exactly_after_its_last_chunk_however_it_is_split(
    body: bytes, following: bytes, cuts: list[int]
) -> None:
    data = body + following
    assert scan_outcome(Framing.CHUNKED, [data]) == ("ok", len(body), True)
    assert scan_outcome(Framing.CHUNKED, split(data, cuts)) == ("ok", len(body), True)


@budget
@given(
    st.one_of(hostile_bytes, chunked_bodies().map(lambda body: body[: len(body) // 2] + body)),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_hostile_chunked_bytes_yield_a_count_or_bad_request_however_split(
    data: bytes, cuts: list[int]
) -> None:
    whole = scan_outcome(Framing.CHUNKED, [data])
    assert scan_outcome(Framing.CHUNKED, split(data, cuts)) == whole
    bytewise = [data[i : i + 1] for i in range(len(data))]
    assert scan_outcome(Framing.CHUNKED, bytewise) == whole


@budget
@given(st.integers(0, 500), st.lists(st.binary(max_size=200), max_size=6))
def test_length_body_takes_exactly_its_length(length: int, pieces: list[bytes]) -> None:
    total = sum(map(len, pieces))
    consumed, done = scan_outcome(Framing(BodyKind.LENGTH, length), pieces)[1:]
    assert consumed == min(length, total) and done == (total >= length)


@pytest.mark.parametrize("path", sorted(CORPUS.iterdir()), ids=lambda path: path.name)
def test_corpus_inputs_are_handled_the_same_however_they_arrive(path: Path) -> None:
    data = path.read_bytes()
    result = outcome(data)
    assert fed_growing(data) == result
    assert fed_growing(data, 7) == result
    if result[0] == "request":
        request = result[1]
        assert isinstance(request, Request)
        rest = data[result[2] :]
        body = scan_outcome(request.body, [rest])
        assert scan_outcome(request.body, [rest[i : i + 1] for i in range(len(rest))]) == body
        if body[0] == "ok" and body[2]:
            # Whatever follows the body is the next pipelined request, parsed the same way.
            following = rest[body[1] :]
            assert fed_growing(following) == outcome(following)
