"""Where a mirror sits in a plan: plain HTTP only, before the upstreams, never touching a
site that works direct unless ``when = "always"``; tunnels go to the upstreams or are
refused with a reason. Pure decisions: no socket is opened."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from proxyd.config._config import parse_config
from proxyd.learning._detect import Reason
from proxyd.mirror._mirror import MirrorSet
from proxyd.outbound._dialers import DirectDialer
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.routing._learned import LearnedRoutes
from proxyd.routing._router import MirrorHttpsUnavailable, Router

TOR = '[[upstream]]\nname = "tor"\nurl = "socks5h://127.0.0.1:9050"\n'
NO_UPSTREAM = "upstream = []\n"


def mirror(when: str = "blocked") -> str:
    return (
        f'[[mirror]]\nname = "blog"\nfrom = "*.blog.example"\nto = "*.blog-mirror.example"\n'
        f'mode = "proxy"\nwhen = "{when}"\n'
    )


def router_for(toml: str, tmp_path: Path) -> Router:
    config = parse_config(toml, source="test.toml")
    learned = LearnedRoutes(config.learning, tmp_path, connect_timeout=5.0, clock=lambda: 1000.0)
    return Router(
        config, DirectDialer(), UpstreamSet(config.upstreams), learned, MirrorSet(config.mirrors)
    )


def names(router: Router, host: str, *, plain_http: bool, port: int = 80) -> list[str]:
    plan = router.plan(host, port, plain_http=plain_http)
    return [r.name for r in plan.routes if not r.name.startswith("desync:")]


def block(router: Router, host: str, route: str) -> None:
    assert router.learned is not None
    router.learned.table.confirm_blocked(host, Reason.CONNECTION_RESET, route, 1000.0)


def test_first_visit_tries_the_mirror_after_direct_and_before_any_upstream(
    tmp_path: Path,
) -> None:
    router = router_for(TOR + mirror(), tmp_path)
    plan = router.plan("www.blog.example", 80, plain_http=True)
    assert [r.name for r in plan.routes] == [
        "direct",
        "desync:hostcase",
        "desync:split",
        "mirror:blog",
        "tor",
    ]
    assert plan.learn
    # a tunnel's first visit is the usual one: the mirror cannot carry it
    assert names(router, "www.blog.example", plain_http=False, port=443) == ["direct", "tor"]


def test_without_upstreams_the_mirror_is_still_the_fallback_and_learning_is_on(
    tmp_path: Path,
) -> None:
    router = router_for(NO_UPSTREAM + mirror(), tmp_path)
    plan = router.plan("blog.example", 80, plain_http=True)
    assert names(router, "blog.example", plain_http=True) == ["direct", "mirror:blog"]
    assert plan.learn


def test_a_blocked_domain_goes_to_the_mirror_first_then_the_upstreams(tmp_path: Path) -> None:
    router = router_for(TOR + mirror(), tmp_path)
    block(router, "blog.example", "mirror:blog")
    assert names(router, "blog.example", plain_http=True) == ["mirror:blog", "tor"]
    assert names(router, "x.blog.example", plain_http=True) == ["mirror:blog", "tor"]
    # HTTPS takes the domain's upstream
    assert names(router, "blog.example", plain_http=False, port=443) == ["tor"]


def test_a_domain_that_works_direct_is_left_alone_unless_always(tmp_path: Path) -> None:
    router = router_for(TOR + mirror("blocked"), tmp_path)
    assert router.learned is not None
    router.learned.table.force("blog.example", "direct", 1000.0)
    assert names(router, "blog.example", plain_http=True) == ["direct"]
    always = router_for(TOR + mirror("always"), tmp_path / "always")
    assert always.learned is not None
    always.learned.table.force("blog.example", "direct", 1000.0)
    assert names(always, "blog.example", plain_http=True) == ["mirror:blog", "direct"]


def test_always_puts_the_mirror_before_the_first_visit(tmp_path: Path) -> None:
    router = router_for(TOR + mirror("always"), tmp_path)
    assert names(router, "blog.example", plain_http=True) == ["mirror:blog", "direct", "tor"]
    assert names(router, "blog.example", plain_http=False, port=443) == ["tor"]


def test_hosts_outside_the_mapping_are_not_mirrored(tmp_path: Path) -> None:
    router = router_for(TOR + mirror("always"), tmp_path)
    assert names(router, "notblog.example", plain_http=True) == ["direct", "tor"]


def test_a_tunnel_to_a_mirrored_host_without_upstream_is_refused_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    router = router_for(NO_UPSTREAM + mirror(), tmp_path)
    block(router, "blog.example", "mirror:blog")
    assert names(router, "blog.example", plain_http=True) == ["mirror:blog"]
    with caplog.at_level(logging.WARNING), pytest.raises(MirrorHttpsUnavailable) as refused:
        router.plan("blog.example", 443)
    assert "mirror blog (blog-mirror.example)" in str(refused.value)
    assert "plain HTTP only" in str(refused.value)
    assert "refusing tunnels to blog.example" in caplog.text
    # once per host, not once per request
    caplog.clear()
    with pytest.raises(MirrorHttpsUnavailable):
        router.plan("blog.example", 443)
    assert caplog.text == ""


def test_a_rule_can_name_the_mirror(tmp_path: Path) -> None:
    rule = '[[rule]]\ndomain = "blog.example"\nroute = "blog"\n'
    router = router_for(TOR + mirror() + rule, tmp_path)
    assert names(router, "blog.example", plain_http=True) == ["mirror:blog", "tor"]
    assert names(router, "blog.example", plain_http=False, port=443) == ["tor"]


async def test_a_reload_keeps_unchanged_mirrors_and_their_pools() -> None:
    first = parse_config(
        mirror() + '[[mirror]]\nfrom = "a.example"\nto = "b.example"\n', source="t"
    )
    mirrors = MirrorSet(first.mirrors)
    kept, dropped = mirrors.routes
    second = parse_config(
        mirror() + '[[mirror]]\nfrom = "c.example"\nto = "d.example"\n', source="t"
    )
    mirrors.reconfigure(second.mirrors)
    assert mirrors.routes[0] is kept
    assert mirrors.routes[1] is not dropped
    assert mirrors.covering("c.example") is mirrors.routes[1]
    assert mirrors.covering("a.example") is None
    await mirrors.close()
