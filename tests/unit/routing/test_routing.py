"""Route decisions: user rules > learned state > default, each plan explained.

The router is pure decision code over the config, the learned table and the upstream
set, so these tests build those from TOML and ask for plans; no socket is opened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxyd.config._config import parse_config
from proxyd.errors import Forbidden, UpstreamUnavailable
from proxyd.learning._detect import Reason
from proxyd.outbound._dialers import DirectDialer
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.routing._learned import LearnedRoutes
from proxyd.routing._router import Router

UPSTREAMS = """
[[upstream]]
name = "tor"
url = "socks5h://127.0.0.1:9050"
tor = true

[[upstream]]
name = "office"
url = "http://127.0.0.1:3128"
"""


def router_for(toml: str, tmp_path: Path) -> Router:
    config = parse_config(toml, source="test.toml")
    learned = LearnedRoutes(config.learning, tmp_path, connect_timeout=5.0, clock=lambda: 1000.0)
    return Router(config, DirectDialer(), UpstreamSet(config.upstreams), learned)


def route_names(router: Router, host: str, port: int = 443) -> list[str]:
    """The plan's routes less the desync ladder (tests/unit/outbound/test_desync.py)."""
    return [r.name for r in router.plan(host, port).routes if not r.name.startswith("desync:")]


RULES = (
    UPSTREAMS
    + """
[[rule]]
host = "exact.example"
route = "office"

[[rule]]
domain = "suffix.example"
route = "tor"

[[rule]]
regex = 'ads?[0-9]*\\..*'
route = "reject"

[[rule]]
cidr = "198.18.7.0/24"
route = "direct"

[[rule]]
domain = "mail.example"
port = 25
route = "reject"

[[rule]]
domain = "learn.example"
route = "auto"
"""
)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("exact.example", 443, ["office"]),
        ("suffix.example", 443, ["tor"]),
        ("deep.sub.suffix.example", 80, ["tor"]),
        ("198.18.7.9", 443, ["direct"]),
        ("mail.example", 443, ["direct", "tor", "office"]),  # port rule does not match
        ("learn.example", 443, ["direct", "tor", "office"]),
        ("unrelated.example", 443, ["direct", "tor", "office"]),
    ],
)
def test_rules_match_by_host_suffix_cidr_and_port(
    tmp_path: Path, host: str, port: int, expected: list[str]
) -> None:
    assert route_names(router_for(RULES, tmp_path), host, port) == expected


def test_exact_host_rule_does_not_cover_subdomains(tmp_path: Path) -> None:
    assert route_names(router_for(RULES, tmp_path), "www.exact.example")[0] == "direct"


@pytest.mark.parametrize(("host", "port"), [("ads1.tracker.example", 443), ("mail.example", 25)])
def test_reject_rules_refuse_with_the_rule_named(tmp_path: Path, host: str, port: int) -> None:
    with pytest.raises(Forbidden, match="rejected by rule"):
        router_for(RULES, tmp_path).plan(host, port)


def test_first_matching_rule_wins(tmp_path: Path) -> None:
    toml = UPSTREAMS + (
        '[[rule]]\nhost = "a.both.example"\nroute = "direct"\n'
        '[[rule]]\ndomain = "both.example"\nroute = "tor"\n'
    )
    router = router_for(toml, tmp_path)
    assert route_names(router, "a.both.example") == ["direct"]
    assert route_names(router, "b.both.example") == ["tor"]


async def test_rules_win_over_learned_state(tmp_path: Path) -> None:
    router = router_for(
        UPSTREAMS + '[[rule]]\ndomain = "pinned.example"\nroute = "direct"\n', tmp_path
    )
    assert router.learned is not None
    router.learned.table.record_failure("pinned.example", "direct", Reason.CONNECTION_RESET, 1000.0)
    router.learned.table.confirm_blocked("pinned.example", Reason.CONNECTION_RESET, "tor", 1000.0)
    assert route_names(router, "pinned.example") == ["direct"]
    assert "rule 1" in router.plan("pinned.example", 443).why


async def test_learned_blocked_domain_goes_to_its_working_upstream_first(tmp_path: Path) -> None:
    router = router_for(UPSTREAMS, tmp_path)
    assert router.learned is not None
    router.learned.table.record_failure(
        "www.held.example", "direct", Reason.CONNECTION_RESET, 1000.0
    )
    router.learned.table.confirm_blocked(
        "www.held.example", Reason.CONNECTION_RESET, "office", 1000.0
    )
    plan = router.plan("cdn.held.example", 443)
    # no direct attempt, the upstream that worked first, the others as failover
    assert [r.name for r in plan.routes] == ["office", "tor"]
    assert not plan.learn
    assert "held.example blocked (connection_reset)" in plan.why
    assert plan.isolation == "held.example"


def test_unknown_host_goes_direct_first_with_upstreams_as_transparent_fallback(
    tmp_path: Path,
) -> None:
    plan = router_for(UPSTREAMS, tmp_path).plan("new.example", 443)
    assert [r.name for r in plan.routes][::4] == ["direct", "tor"]  # the desync ladder between
    assert plan.routes[-1].name == "office"
    assert plan.learn
    assert "unknown" in plan.why


def test_without_upstreams_unknown_hosts_go_direct_then_desync_or_learn_nothing(
    tmp_path: Path,
) -> None:
    plan = router_for("upstream = []\n", tmp_path).plan("new.example", 443)
    assert [r.name for r in plan.routes] == [
        "direct",
        "desync:tlsrec",
        "desync:split",
        "desync:both",
    ]
    assert plan.learn  # the ladder is a way around a block even with no upstream
    off = router_for("upstream = []\n[learning]\ndesync = false\n", tmp_path)
    plan = off.plan("new.example", 443)
    assert [r.name for r in plan.routes] == ["direct"]
    assert not plan.learn


@pytest.mark.parametrize(
    "host", ["localhost", "printer", "nas.local", "192.168.1.20", "10.0.0.1", "[fe80::1]"]
)
def test_local_destinations_always_go_direct_and_are_never_learned(
    tmp_path: Path, host: str
) -> None:
    plan = router_for(UPSTREAMS, tmp_path).plan(host, 80)
    assert [r.name for r in plan.routes] == ["direct"]
    assert not plan.learn


def test_onion_goes_to_the_tor_upstream_with_isolation(tmp_path: Path) -> None:
    plan = router_for(UPSTREAMS, tmp_path).plan("news.abcdefghijklmnop.onion", 80)
    assert [r.name for r in plan.routes] == ["tor"]
    assert plan.isolation is not None


def test_onion_without_a_tor_upstream_is_refused_clearly(tmp_path: Path) -> None:
    toml = '[[upstream]]\nname = "office"\nurl = "http://127.0.0.1:3128"\n'
    with pytest.raises(Forbidden, match="tor = true"):
        router_for(toml, tmp_path).plan("abcdefghijklmnop.onion", 80)


def test_rule_to_an_upstream_that_is_gone_names_the_upstreams(tmp_path: Path) -> None:
    router = router_for(UPSTREAMS + '[[rule]]\ndomain = "x.example"\nroute = "tor"\n', tmp_path)
    router.upstreams.reconfigure([])
    with pytest.raises(UpstreamUnavailable):
        router.plan("x.example", 443)


def test_explain_names_the_deciding_rule_or_evidence(tmp_path: Path) -> None:
    router = router_for(RULES, tmp_path)
    assert router.explain("suffix.example") == {
        "host": "suffix.example",
        "port": 443,
        "routes": ["tor"],
        "why": "rule 2 (domain suffix.example) -> tor",
        "learning": False,
    }
    rejected = router.explain("ads.example")
    assert rejected["routes"] == []
    assert "rule 3" in str(rejected["why"])
