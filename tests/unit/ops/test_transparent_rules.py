"""The transparent-mode rules as text (applied for real in tests/censor/test_transparent.py)."""

from __future__ import annotations

import pytest

from proxyd.config._config import parse_config
from proxyd.ops._transparent_rules import (
    RulesError,
    RuleSet,
    apply_script,
    remove_script,
    rule_set,
)

BASE = """
allow = ["127.0.0.0/8", "192.168.1.0/24"]
[[upstream]]
name = "tor"
url = "socks5h://192.0.2.7:9050"
[[upstream]]
name = "named"
url = "socks5h://proxy.example:1080"
[transparent]
listen = ["0.0.0.0:8081"]
"""


def rules_for(
    extra: str = "", *, interfaces: tuple[str, ...] | None = None, owner: str | None = None
) -> RuleSet:
    return rule_set(parse_config(BASE + extra, source="t"), interfaces=interfaces, owner=owner)


def test_lan_is_the_allow_networks_without_loopback_when_no_interface_is_named() -> None:
    script = apply_script(rules_for(), "nft")
    assert "ip saddr { 192.168.1.0/24 } jump lan" in script
    assert "127.0.0.0/8 } jump" not in script
    assert "iifname" not in script


def test_named_interfaces_are_matched_by_name() -> None:
    script = apply_script(rules_for(interfaces=("br-lan",)), "iptables")
    assert "-A PROXYD_TRANSPARENT -i br-lan -p tcp -m multiport --dports 80,443" in script
    assert "-A PROXYD_QUIC -i br-lan -p udp --dport 443 -j REJECT" in script


def test_router_lan_reserved_and_upstream_addresses_are_never_redirected() -> None:
    nft = apply_script(rules_for(), "nft")
    assert "fib daddr type local return" in nft
    for net in ("10.0.0.0/8", "192.168.0.0/16", "192.0.2.7/32", "127.0.0.0/8"):
        assert net in nft
    # a named upstream's address is unknown here; its name is not an address
    assert "proxy.example" not in nft
    ipt = apply_script(rules_for(), "iptables")
    assert "-m addrtype --dst-type LOCAL -j RETURN" in ipt
    assert "-A PROXYD_TRANSPARENT -d 192.0.2.7/32 -j RETURN" in ipt


def test_owner_marks_proxyds_connections_and_the_redirect_skips_them_first() -> None:
    nft = apply_script(rules_for(owner="proxyd"), "nft")
    assert "meta skuid proxyd ct mark set 0x7078" in nft
    lan_chain = nft.split("chain lan {")[1]
    assert lan_chain.strip().startswith("ct mark 0x7078 return")
    assert "skuid" not in apply_script(rules_for(), "nft")


def test_ipv6_is_redirected_only_to_an_ipv6_listener() -> None:
    v4 = apply_script(rules_for(), "nft")
    assert "meta nfproto ipv6" not in v4
    both = BASE.replace('listen = ["0.0.0.0:8081"]', 'listen = ["0.0.0.0:8081", "[::]:8082"]')
    both = both.replace('"192.168.1.0/24"]', '"192.168.1.0/24", "fd00:1::/64"]')
    script = apply_script(rule_set(parse_config(both, source="t")), "iptables")
    assert "ip6tables-restore" in script
    assert (
        "-A PROXYD_TRANSPARENT -s fd00:1::/64 -p tcp -m multiport --dports 80,443"
        " -j REDIRECT --to-ports 8082" in script
    )


def test_tproxy_adds_the_policy_route_and_removes_it() -> None:
    rules = rules_for('mode = "tproxy"\n')
    script = apply_script(rules, "nft")
    assert "tproxy ip to :8081 meta mark set 0x7079 accept" in script
    assert "ip -4 rule add fwmark 0x7079 lookup 7079" in script
    removal = remove_script(rules, "nft")
    assert "ip -4 rule del fwmark 0x7079 lookup 7079" in removal
    assert "nft delete table inet proxyd" in removal


def test_apply_starts_by_removing_so_it_can_run_twice() -> None:
    rules = rules_for()
    for backend in ("nft", "iptables"):
        script = apply_script(rules, backend)
        removal = remove_script(rules, backend).splitlines()[2:]
        body = script.splitlines()
        assert body[3 : 3 + len(removal)] == removal


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("allow = []\n[transparent]\nlisten = []\n", "transparent.listen is empty"),
        ('[transparent]\nlisten = ["127.0.0.1:8081"]\n', "REDIRECT delivers"),
        ('[transparent]\nmode = "tproxy"\nlisten = ["127.0.0.1:8081"]\n', "no LAN to redirect"),
    ],
)
def test_what_cannot_be_turned_into_rules_is_said(config: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        rule_set(parse_config(config, source="t"))
