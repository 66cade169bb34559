"""The poisoning detectors: one pure function per signal, and the resolver's memory."""

from __future__ import annotations

import ipaddress

from proxyd.config import DnsConfig
from proxyd.config._validate import ooni_dns_addresses
from proxyd.resolver import (
    DEFAULT_BOGONS,
    Resolver,
    Signal,
    bogon_for_public_name,
    disagrees,
    in_poison_set,
    served_block_page,
    shared_by_blocked_names,
)


def test_poison_set_matches_any_address_of_the_answer() -> None:
    assert in_poison_set(["198.18.2.1", "198.18.3.1"], {"198.18.3.1"}) is Signal.POISON_SET
    assert in_poison_set(["198.18.2.1"], {"198.18.3.1"}) is None


def test_private_address_is_forged_for_a_public_name_only() -> None:
    assert bogon_for_public_name("site.example", ["10.0.0.1"], DEFAULT_BOGONS) is Signal.BOGON
    assert bogon_for_public_name("nas.lan", ["10.0.0.1"], DEFAULT_BOGONS) is None
    assert bogon_for_public_name("site.example", ["198.18.2.1"], DEFAULT_BOGONS) is None
    custom = (ipaddress.ip_network("198.18.3.0/24"),)
    assert bogon_for_public_name("site.example", ["198.18.3.1"], custom) is Signal.BOGON


def test_one_address_shared_by_enough_other_blocked_domains_is_forged() -> None:
    seen = {"198.18.3.1": {"a.example", "b.example", "c.example"}}
    assert shared_by_blocked_names("d.example", ["198.18.3.1"], seen, 3) is Signal.SHARED_ADDRESS
    # the domain itself does not count, and two others are not enough
    assert shared_by_blocked_names("a.example", ["198.18.3.1"], seen, 3) is None
    # several addresses: a CDN's answer, not a censor's
    two = ["198.18.3.1", "198.18.3.2"]
    assert shared_by_blocked_names("d.example", two, seen, 3) is None


def test_block_page_address_and_disagreement() -> None:
    assert served_block_page(["198.18.3.1"], {"198.18.3.1"}) is Signal.BLOCK_PAGE_ADDRESS
    assert served_block_page(["198.18.2.1"], {"198.18.3.1"}) is None
    assert disagrees(["198.18.3.1"], ["198.18.2.16"]) is Signal.DISAGREEMENT
    assert disagrees(["198.18.2.16", "198.18.3.1"], ["198.18.2.16"]) is None
    assert disagrees(["198.18.3.1"], []) is None


def test_ooni_csv_gives_its_full_address_patterns() -> None:
    text = (
        "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,"
        "expected_countries,source,exp_url,notes\n"
        "dns_ir_1,nat,,dns,full,10.10.34.35,5,IR,,,\n"
        "dns_ru_x,isp,,dns,prefix,198.18.,5,RU,,,\n"
        "dns_tr_1,nat,,dns,full,195.175.254.2,5,TR,,,\n"
        "dns_xx,nat,,dns,full,not-an-address,5,,,,\n"
    )
    assert ooni_dns_addresses(text) == ("10.10.34.35", "195.175.254.2")


def test_resolver_marks_suspects_and_learns_block_page_addresses() -> None:
    now = [0.0]
    resolver = Resolver(DnsConfig(poison_addresses=("198.18.9.9",)), clock=lambda: now[0])
    assert resolver.judge_system_answer("open.example", ("198.18.2.10",)) is None
    assert resolver.suspect("open.example") is None
    assert resolver.judge_system_answer("x.example", ("198.18.9.9",)) is Signal.POISON_SET
    assert resolver.suspect("x.example") == (Signal.POISON_SET, ("198.18.9.9",))
    resolver.note_block_page("dns.example", "198.18.3.1")
    assert resolver.judge_system_answer("other.example", ("198.18.3.1",)) is (
        Signal.BLOCK_PAGE_ADDRESS
    )
    resolver.note_unreachable("gone.example", ("198.18.2.50",))
    assert resolver.suspect("gone.example") == (Signal.CONNECT_FAILED, ("198.18.2.50",))
    now[0] = 61.0  # suspicion explains the next attempts for a while only
    assert resolver.suspect("gone.example") is None
    assert resolver.detections == {"poison_set": 1, "block_page_address": 1}


def test_resolver_shared_address_needs_block_evidence_of_other_domains() -> None:
    resolver = Resolver(DnsConfig(shared_address_threshold=2))
    assert resolver.judge_system_answer("c.example", ("198.18.7.7",)) is None
    resolver.note_unreachable("a.example", ("198.18.7.7",))
    resolver.note_unreachable("b.example", ("198.18.7.7",))
    assert resolver.judge_system_answer("c.example", ("198.18.7.7",)) is Signal.SHARED_ADDRESS


def test_dns_metrics_carry_signals_and_sources_never_names() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from proxyd.learning import Stats
    from proxyd.ops._admin_context import AdminContext
    from proxyd.ops._metrics import ProxydCollector

    resolver = Resolver(DnsConfig(poison_addresses=("198.18.9.9",)))
    resolver.judge_system_answer("secret-site.example", ("198.18.9.9",))
    resolver.judge_system_answer("open.example", ("198.18.2.10",))
    context = AdminContext(stats=Stats(), proxy_addresses=list, resolver=lambda: resolver)
    registry = CollectorRegistry()
    registry.register(ProxydCollector(context))
    text = generate_latest(registry).decode()
    assert 'proxyd_dns_poison_detections_total{signal="poison_set"} 1.0' in text
    assert 'proxyd_dns_resolutions_total{result="answered",source="system"} 2.0' in text
    assert "proxyd_dns_cache_hits_total 0.0" in text
    assert "secret-site" not in text and "open.example" not in text
