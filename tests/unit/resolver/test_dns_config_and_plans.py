"""The [dns] keys (errors name file, line and key) and where direct+doh stands in plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxyd.config import ConfigError
from proxyd.config._config import parse_config
from proxyd.learning._detect import Reason
from proxyd.outbound import HonestDirectDialer
from proxyd.outbound._dialers import DirectDialer
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.resolver import Resolver
from proxyd.routing._learned import LearnedRoutes
from proxyd.routing._router import Router

DOH = """
[[upstream]]
name = "tor"
url = "socks5h://127.0.0.1:9050"
tor = true

[dns]
poison_addresses = ["198.18.3.1"]

[[dns.doh]]
name = "lab"
url = "https://doh.example/dns-query"
bootstrap = ["198.18.2.30"]
"""


def error_for(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="proxyd.toml")
    return caught.value


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        ('[dns]\ntimeout = "0s"\n', 2, "dns.timeout", "longer than 0s"),
        ('[dns]\npoison_addresses = ["nope"]\n', 2, "dns.poison_addresses[0]", "not an IP"),
        (
            '[dns]\n[[dns.doh]]\nurl = "https://doh.example/q"\n',
            2,
            "dns.doh[0].bootstrap",
            "needs its addresses",
        ),
        ('[dns]\n[[dns.doh]]\nurl = "http://192.0.2.1/q"\n', 3, "dns.doh[0].url", "https://"),
        (
            '[dns]\n[[dns.doh]]\nurl = "https://192.0.2.1/q"\nvia = "nowhere"\n',
            4,
            "dns.doh[0].via",
            "no upstream named 'nowhere'",
        ),
        ('[dns]\ncache_min_ttl = "2h"\n', 1, "dns.cache_max_ttl", "shorter than cache_min"),
        ('[dns]\npoison_csv = "/nonexistent.csv"\n', 2, "dns.poison_csv", "nonexistent"),
        ('allow = []\ndns_listen = ["198.18.1.2:53"]\n', 2, "dns_listen[0]", "set allow"),
    ],
)
def test_dns_key_errors_name_file_line_and_key(text: str, line: int, key: str, words: str) -> None:
    error = error_for(text)
    assert (error.source, error.line, error.key) == ("proxyd.toml", line, key), str(error)
    assert words in error.message


def test_poison_csv_is_read_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "fp.csv").write_text("name,pattern_type,pattern\nx,full,198.18.3.9\n")
    config = parse_config('[dns]\npoison_csv = "fp.csv"\n', source=str(tmp_path / "p.toml"))
    assert config.dns.poison_from_csv == ("198.18.3.9",)


def router_for(toml: str, tmp_path: Path) -> Router:
    config = parse_config(toml, source="test.toml")
    learned = LearnedRoutes(config.learning, tmp_path, connect_timeout=5.0, clock=lambda: 1000.0)
    resolver = Resolver(config.dns)
    check = DirectDialer()._check
    honest = (
        HonestDirectDialer(resolver, check, gated=True),
        HonestDirectDialer(resolver, check, gated=False),
    )
    return Router(config, DirectDialer(), UpstreamSet(config.upstreams), learned, None, honest)


LADDER = ["desync:tlsrec", "desync:split", "desync:both"]


def test_first_visit_tries_direct_then_direct_doh_then_upstreams(tmp_path: Path) -> None:
    router = router_for(DOH, tmp_path)
    plan = router.plan("dns.example", 443)
    # The desync ladder (on by default) follows direct+doh: each starts only on its own cue.
    assert [r.name for r in plan.routes] == ["direct", "direct+doh", *LADDER, "tor"]
    assert plan.learn


def test_domain_learned_dns_poisoned_goes_direct_doh_first_upstreams_after(tmp_path: Path) -> None:
    router = router_for(DOH, tmp_path)
    assert router.learned is not None
    router.learned.table.confirm_blocked("dns.example", Reason.DNS_POISON, "direct+doh", 1000.0)
    plan = router.plan("www.dns.example", 443)
    assert [r.name for r in plan.routes] == ["direct+doh", "tor"]
    assert not plan.learn
    assert "direct to the DoH answer" in plan.why


def test_without_doh_provider_there_is_no_direct_doh_route(tmp_path: Path) -> None:
    config = parse_config(DOH.split("[dns]")[0], source="test.toml")
    learned = LearnedRoutes(config.learning, tmp_path, connect_timeout=5.0)
    router = Router(config, DirectDialer(), UpstreamSet(config.upstreams), learned)
    assert [r.name for r in router.plan("dns.example", 443).routes] == ["direct", *LADDER, "tor"]


def test_onion_and_upstream_rules_never_reach_a_resolver(tmp_path: Path) -> None:
    router = router_for(DOH + '[[rule]]\ndomain = "hidden.example"\nroute = "tor"\n', tmp_path)
    assert [r.name for r in router.plan("abc.onion", 80).routes] == ["tor"]
    assert [r.name for r in router.plan("www.hidden.example", 443).routes] == ["tor"]
