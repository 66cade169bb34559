"""Desync's cut point (sans-IO) and its place in the route plan."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from proxyd.config._config import parse_config
from proxyd.learning._detect import Reason
from proxyd.outbound._desync import split_point
from proxyd.outbound._dialers import DirectDialer
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.routing._learned import LearnedRoutes
from proxyd.routing._router import Router


def client_hello(tls_ca: trustme.CA, name: str) -> bytes:
    ctx = ssl.create_default_context()
    tls_ca.configure_trust(ctx)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("name", ["sni.example", "a.b.c.blocked.example", "x.io"])
def test_client_hello_is_cut_inside_the_server_name(tls_ca: trustme.CA, name: str) -> None:
    hello = client_hello(tls_ca, name)
    cut = split_point(hello)
    assert cut is not None
    first, rest = hello[:cut], hello[cut:]
    # neither segment carries the whole name, and together they are the original bytes
    assert name.encode() not in first
    assert name.encode() not in rest
    assert first + rest == hello


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: host.example\r\nAccept: */*\r\n\r\n",
        b"GET http://host.example/ HTTP/1.1\r\nUser-Agent: x\r\nHOST:host.example\r\n\r\n",
    ],
)
def test_http_request_is_cut_inside_the_host_value(head: bytes) -> None:
    cut = split_point(head)
    assert cut is not None
    assert b"Host: host.example" not in head[:cut] and b"host.example" not in head[cut:]


def test_bytes_without_a_name_are_not_cut() -> None:
    assert split_point(b"SSH-2.0-OpenSSH_9.2\r\n") is None
    assert split_point(b"GET / HTTP/1.0\r\n\r\n") is None
    assert split_point(b"\x16\x03\x01\x00\x05hello") is None  # truncated TLS, no SNI


@given(st.binary(max_size=600))
def test_any_bytes_give_no_cut_or_one_strictly_inside(data: bytes) -> None:
    cut = split_point(data)
    assert cut is None or 0 < cut < len(data)


CONFIG = """
[learning]
desync = {desync}
[[upstream]]
name = "tor"
url = "socks5h://127.0.0.1:9050"
"""


def router(tmp_path: Path, *, desync: bool) -> Router:
    config = parse_config(CONFIG.format(desync=str(desync).lower()), source="t")
    learned = LearnedRoutes(config.learning, tmp_path, connect_timeout=5, clock=lambda: 9.0)
    return Router(config, DirectDialer(), UpstreamSet(config.upstreams), learned)


def test_desync_is_tried_after_direct_and_before_the_upstreams_only_when_enabled(
    tmp_path: Path,
) -> None:
    on, off = router(tmp_path, desync=True), router(tmp_path, desync=False)
    assert [r.name for r in on.plan("new.example", 443).routes] == ["direct", "desync", "tor"]
    assert [r.name for r in off.plan("new.example", 443).routes] == ["direct", "tor"]
    assert [r.name for r in on.plan("printer.local", 443).routes] == ["direct"]


async def test_domain_learned_via_desync_goes_there_first_with_upstreams_behind(
    tmp_path: Path,
) -> None:
    routes = router(tmp_path, desync=True)
    assert routes.learned is not None
    routes.learned.direct_failed("sni.example", Reason.CONNECTION_RESET)
    routes.learned.confirm("sni.example", Reason.CONNECTION_RESET, "desync")
    assert [r.name for r in routes.plan("sni.example", 443).routes] == ["desync", "tor"]
