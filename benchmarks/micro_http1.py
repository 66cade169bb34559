"""Micro-benchmark of the HTTP/1.1 head parser on the hot path: parses per second.

``python -m benchmarks.micro_http1 [--number N] [--repeat R]``

Cases: a typical ~400-byte browser request through a proxy (absolute-form GET with
Proxy-Connection and cookies) and a chunked response (head plus BodyScanner over 4 x 4 KiB
chunks), plus the two encoders. For scale, the same bytes are also tokenized by httptools
(llhttp) with header callbacks and none of proxyd's checks: the floor an httptools-based parser
could not beat, as any such parser still needs the target, framing and smuggling checks on top.

Timing is CPU time of this process (best of R runs), so other load on a shared machine skews
it less than wall time would.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable

import httptools

from proxyd.protocol._http1 import parse_request, parse_response
from proxyd.protocol._http1_body import BodyScanner
from proxyd.protocol._http1_encode import encode_request_for_origin, encode_response_for_client

BROWSER_REQUEST = (
    b"GET http://www.example.com/articles/2024/05/some-article.html?ref=home HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Proxy-Connection: keep-alive\r\n"
    b"Cookie: session=abc123def456\r\n"
    b"\r\n"
)
CHUNK = b"x" * 4096
CHUNKED_RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Mon, 27 May 2024 10:00:00 GMT\r\n"
    b"Server: nginx\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Connection: keep-alive\r\n"
    b"Cache-Control: private, max-age=0\r\n"
    b"Set-Cookie: id=a3fWa; Path=/; HttpOnly\r\n"
    b"\r\n"
)
CHUNKED_BODY = (b"1000\r\n" + CHUNK + b"\r\n") * 4 + b"0\r\n\r\n"
CHUNKED_RESPONSE = CHUNKED_RESPONSE_HEAD + CHUNKED_BODY


def proxyd_request() -> None:
    parse_request(BROWSER_REQUEST)


def proxyd_chunked_response() -> None:
    parsed = parse_response(CHUNKED_RESPONSE, request_method="GET")
    assert parsed is not None
    scanner = BodyScanner(parsed[0].body)
    scanner.feed(memoryview(CHUNKED_RESPONSE)[parsed[1] :])
    assert scanner.done


_parsed_request = parse_request(BROWSER_REQUEST)
_parsed_response = parse_response(CHUNKED_RESPONSE, request_method="GET")
assert _parsed_request is not None and _parsed_response is not None
REQUEST = _parsed_request[0]
RESPONSE = _parsed_response[0]


def proxyd_encode_request() -> None:
    encode_request_for_origin(REQUEST, via="proxyd")


def proxyd_encode_response() -> None:
    encode_response_for_client(RESPONSE, keep_alive=True)


class _Tokens:
    """httptools callbacks that only collect what any parser would have to hand on."""

    __slots__ = ("fields", "url")

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))


def httptools_request_tokens() -> None:
    httptools.HttpRequestParser(_Tokens()).feed_data(BROWSER_REQUEST)


def httptools_chunked_response_tokens() -> None:
    httptools.HttpResponseParser(_Tokens()).feed_data(CHUNKED_RESPONSE)


CASES: list[tuple[str, Callable[[], None]]] = [
    ("parse_request, 400-byte browser GET", proxyd_request),
    ("parse_response + BodyScanner, chunked 16 KiB", proxyd_chunked_response),
    ("encode_request_for_origin", proxyd_encode_request),
    ("encode_response_for_client", proxyd_encode_response),
    ("httptools tokens only: same GET", httptools_request_tokens),
    ("httptools tokens only: same chunked response", httptools_chunked_response_tokens),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best one counts")
    args = parser.parse_args()
    print(f"request {len(BROWSER_REQUEST)} bytes; chunked response {len(CHUNKED_RESPONSE)} bytes")
    for name, case in CASES:
        runs = timeit.repeat(case, number=args.number, repeat=args.repeat, timer=time.process_time)
        per_call = min(runs) / args.number
        print(f"{name:48s} {1 / per_call:>12,.0f}/s {per_call * 1e6:8.2f} us")


if __name__ == "__main__":
    main()
