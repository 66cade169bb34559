"""Desync strategies (sans-IO), the ladder in the route plan, and the race that starts it
only once direct failed on its first packet."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from proxyd.config._config import parse_config
from proxyd.learning._detect import Reason
from proxyd.outbound._dialers import DirectDialer
from proxyd.outbound._race import AttemptFailed, Leg, run_race
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.protocol._desync import Strategy, chunks, rejected, split_point, strategy_of
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
    assert [r.name for r in on.plan("new.example", 443).routes] == [
        "direct",
        "desync:tlsrec",
        "desync:split",
        "desync:both",
        "tor",
    ]
    http = on.plan("new.example", 80, plain_http=True).routes
    assert [r.name for r in http] == ["direct", "desync:hostcase", "desync:split", "tor"]
    assert [r.name for r in off.plan("new.example", 443).routes] == ["direct", "tor"]
    assert [r.name for r in on.plan("printer.local", 443).routes] == ["direct"]


async def test_domain_learned_via_desync_goes_there_first_with_upstreams_behind(
    tmp_path: Path,
) -> None:
    routes = router(tmp_path, desync=True)
    assert routes.learned is not None
    routes.learned.direct_failed("sni.example", Reason.CONNECTION_RESET)
    routes.learned.confirm("sni.example", Reason.CONNECTION_RESET, "desync:tlsrec")
    plan = routes.plan("sni.example", 443)
    assert [r.name for r in plan.routes] == ["desync:tlsrec", "tor"]
    assert "desync:tlsrec = direct, with the ClientHello as two TLS records" in plan.why
    # a state file from before the ladder: "desync" was the TCP split
    routes.learned.force("old.example", "desync")
    assert routes.plan("old.example", 443).first.name == "desync:split"


def test_a_strategy_that_broke_the_handshake_leaves_the_ladder_for_that_domain(
    tmp_path: Path,
) -> None:
    routes = router(tmp_path, desync=True)
    assert routes.learned is not None
    routes.learned.mark_desync_broken("www.picky.example", "desync:tlsrec")
    ladder = [r.name for r in routes.plan("picky.example", 443).routes]
    assert ladder == ["direct", "desync:split", "desync:both", "tor"]
    assert "desync:tlsrec" in [r.name for r in routes.plan("other.example", 443).routes]


def server_reads_hello(tls_ca: trustme.CA, name: str, wire: bytes) -> bytes:
    """Feed ``wire`` to a real OpenSSL server; what it answers (a ServerHello flight)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_ca.issue_cert(name).configure_cert(ctx)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(wire)
    with pytest.raises(ssl.SSLWantReadError):
        server.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("strategy", [Strategy.TLSREC, Strategy.BOTH, Strategy.SPLIT])
def test_every_tls_strategy_hides_the_name_and_python_ssl_still_answers_the_hello(
    tls_ca: trustme.CA, strategy: Strategy
) -> None:
    name = "sni.example"
    hello = client_hello(tls_ca, name)
    parts = chunks(strategy, hello)
    assert parts is not None
    assert all(name.encode() not in part for part in parts)  # no segment holds the name
    wire = b"".join(parts)
    if strategy is not Strategy.SPLIT:
        assert wire != hello and name.encode() not in wire  # a record header interrupts it
        # the first record alone is a truncated hello: no name in it to parse
        first_length = int.from_bytes(wire[3:5], "big")
        assert wire[5 + first_length] == 0x16  # a second handshake record follows
    answer = server_reads_hello(tls_ca, name, wire)
    assert answer[:1] == b"\x16" and answer[5] == 2  # a ServerHello, not an alert


def test_http_strategies_keep_the_request_valid_and_tls_ones_do_not_apply() -> None:
    head = b"GET / HTTP/1.1\r\nHost: host.example\r\nAccept: */*\r\n\r\n"
    assert chunks(Strategy.HOSTCASE, head) == [head.replace(b"Host:", b"hOSt:")]
    assert chunks(Strategy.TLSREC, head) is None and chunks(Strategy.BOTH, head) is None
    split = chunks(Strategy.SPLIT, head)
    assert split is not None and b"".join(split) == head and len(split) == 2
    assert chunks(Strategy.HOSTCASE, b"\x16\x03\x01\x00\x05hello") is None


def test_route_names_map_to_strategies() -> None:
    assert strategy_of("desync:tlsrec") is Strategy.TLSREC
    assert strategy_of("desync") is Strategy.SPLIT  # the name before the ladder
    assert strategy_of("direct") is None and strategy_of("desync:nope") is None


def test_an_alert_or_a_400_right_after_a_strategy_is_a_rejection() -> None:
    assert rejected(b"\x15\x03\x03\x00\x02\x02\x28")
    assert rejected(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert not rejected(b"\x16\x03\x03\x00\x7a\x02") and not rejected(b"HTTP/1.1 200 OK\r\n")


class Route:
    def __init__(self, name: str, *, gated: bool = False) -> None:
        self.name = name
        if gated:
            self.needs_direct_evidence = True

    async def dial(self, host: str, port: int, **kwargs: object) -> object:
        raise AssertionError("not dialled in these transcripts")


async def race(routes: list[Route], outcomes: dict[str, Reason | None]) -> list[str]:
    started: list[str] = []

    async def attempt(leg: Leg) -> str:
        started.append(leg.route.name)
        reason = outcomes[leg.route.name]
        if reason is not None:
            raise AttemptFailed(reason)
        return leg.route.name

    await run_race(tuple(routes), attempt, race_after=0.5)  # type: ignore[arg-type]
    return started


LADDER = [Route("direct"), Route("desync:tlsrec", gated=True), Route("desync:split", gated=True),
          Route("tor")]  # fmt: skip


async def test_a_reset_after_the_hello_climbs_the_ladder_before_the_upstream() -> None:
    outcomes = {"direct": Reason.CONNECTION_RESET, "desync:tlsrec": Reason.CONNECTION_RESET,
                "desync:split": None, "tor": None}  # fmt: skip
    assert await race(LADDER, outcomes) == ["direct", "desync:tlsrec", "desync:split"]


async def test_a_direct_failure_reshaping_cannot_help_skips_the_ladder() -> None:
    for reason in (Reason.CONNECT_TIMEOUT, Reason.DNS_POISON, Reason.CONNECTION_REFUSED):
        outcomes = {"direct": reason, "desync:tlsrec": None, "desync:split": None, "tor": None}
        assert await race(LADDER, outcomes) == ["direct", "tor"]
