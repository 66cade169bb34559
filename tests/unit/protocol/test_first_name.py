"""The name of a transparent connection from its first bytes: real ClientHellos from
Python's ssl module, real request heads, split at every byte."""

from __future__ import annotations

import ssl

import pytest

from proxyd.protocol import NEED_MORE, Named, Nameless, read_name


def client_hello(server_hostname: str | None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=server_hostname
    )
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def split_records(hello: bytes, size: int) -> bytes:
    """The same hello in records of ``size`` bytes, as a client splitting its hello sends it."""
    body = hello[5:]
    version = hello[1:3]
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"\x16" + version + len(c).to_bytes(2, "big") + c for c in chunks)


def test_sni_of_a_whole_client_hello() -> None:
    assert read_name(client_hello("sni.example")) == Named("sni.example", "tls")


def test_every_prefix_of_a_client_hello_asks_for_more() -> None:
    hello = client_hello("www.sni.example")
    for cut in range(1, len(hello)):
        assert read_name(hello[:cut]) is NEED_MORE, cut


def test_a_hello_split_over_records_is_read_whole() -> None:
    hello = split_records(client_hello("many.example"), 100)
    for cut in range(1, len(hello)):
        assert read_name(hello[:cut]) is NEED_MORE, cut
    assert read_name(hello) == Named("many.example", "tls")


def test_tls_without_sni_is_nameless() -> None:
    assert read_name(client_hello(None)) == Nameless("tls")


def test_a_hello_larger_than_the_bound_is_nameless() -> None:
    hello = client_hello("sni.example")
    assert read_name(hello[:-1], max_bytes=len(hello) - 1) == Nameless("tls")


def test_host_of_a_request_head() -> None:
    head = b"GET /path HTTP/1.1\r\nHost: Host.Example\r\nAccept: */*\r\n\r\n"
    for cut in range(1, len(head)):
        assert read_name(head[:cut]) is NEED_MORE, cut
    assert read_name(head) == Named("host.example", "http")
    assert read_name(head + b"body") == Named("host.example", "http")


def test_host_with_a_port_and_an_ip_literal() -> None:
    assert read_name(b"GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n") == Named(
        "a.example", "http"
    )
    assert read_name(b"HEAD / HTTP/1.1\r\nHost: 198.18.2.10\r\n\r\n") == Named(
        "198.18.2.10", "http"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x00\x01binary",
        b"hello\n",
        b"\x16\x01\x00",  # a 0x16 byte, then no TLS record
        b"GET / HTTP/1.0\r\n\r\n",  # no Host to go by
        b"GET /\x00 HTTP/1.1\r\nHost: a.example\r\n\r\n",  # not HTTP after all
    ],
)
def test_other_protocols_are_nameless(data: bytes) -> None:
    assert isinstance(read_name(data), Nameless)


def test_a_head_without_end_is_nameless_at_the_bound() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a.example\r\nX: " + b"a" * 100
    assert read_name(head, max_bytes=64) == Nameless("http")
