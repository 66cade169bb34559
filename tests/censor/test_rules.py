"""Issue 3, rules and lists: config rules win over learning, in the lab with a real upstream.

- A rule sending an open site to the upstream: the origin sees the SOCKS server's address
  and the censor never sees a direct attempt.
- A rule pinning a blocked site direct: no transparent rescue through the upstream and
  nothing learned (the user asked for direct, so the client sees the censor's reset).
- A reject rule: 403 naming the rule, for plain HTTP and CONNECT alike.
- An imported block list: a listed site's first visit goes straight to the upstream,
  with no direct attempt for the censor to see.
"""

from __future__ import annotations

from pathlib import Path

from lab_sites import SOCKS_IP
from netlab import NetLab
from proxyd_fixture import (
    ANY_LEARNED,
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    origin_answer,
    proxyd_config,
    unique_path,
)


def config_with_rules(lab: NetLab, *rules: tuple[str, str]) -> str:
    tables = "".join(f'[[rule]]\ndomain = "{d}"\nroute = "{r}"\n' for d, r in rules)
    return tables + proxyd_config([("tor", lab.socks.url)], **NO_RETEST_SOON)


def test_rule_sends_an_open_site_through_the_upstream_without_a_direct_attempt(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = launch_proxyd.start(config_with_rules(netlab, ("open.example", "tor")))
    syns = netlab.censor.direct_syns("open.example")
    path = unique_path()
    mark = netlab.origin_mark()
    result = curl_via(netlab, proxy, f"https://open.example{path}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    assert result.body == origin_answer("open.example", path)
    netlab.wait_for_origin(host="open.example", path=path, peer_ip=SOCKS_IP, since=mark)
    assert netlab.censor.direct_syns("open.example") == syns


def test_rule_pinning_a_blocked_site_direct_is_obeyed_and_nothing_is_learned(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = launch_proxyd.start(config_with_rules(netlab, ("sni.example", "direct")))
    hits = netlab.censor.hits("sni.example")
    result = curl_via(netlab, proxy, f"https://sni.example{unique_path()}")
    assert result.exit_code != 0  # the censor's reset reached the client: no upstream rescue
    assert netlab.censor.hits("sni.example") > hits
    assert not ANY_LEARNED.search(proxy.log_text())


def test_reject_rule_answers_403_for_plain_http_and_connect(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = launch_proxyd.start(config_with_rules(netlab, ("open.example", "reject")))
    plain = curl_via(netlab, proxy, f"http://open.example{unique_path()}")
    assert plain.http_code == 403
    assert "rule 1" in plain.body
    tunnel = curl_via(netlab, proxy, f"https://open.example{unique_path()}")
    assert tunnel.http_connect == 403
    assert tunnel.exit_code != 0
    # and the daemon keeps serving other sites
    path = unique_path()
    assert curl_via(netlab, proxy, f"http://slow.example{path}", max_time=20).body == (
        origin_answer("slow.example", path)
    )


def test_listed_site_goes_straight_to_the_upstream_on_its_first_visit(
    netlab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path
) -> None:
    # relative to the config file, which the launcher writes into tmp_path
    (tmp_path / "blocked.v2fly").write_text("domain:sni.example\nfull:hole.example\n")
    config = '[[list]]\npath = "blocked.v2fly"\nformat = "v2fly"\n'
    proxy = launch_proxyd.start(config + proxyd_config([("tor", netlab.socks.url)]))
    hits, syns = netlab.censor.hits("sni.example"), netlab.censor.direct_syns("hole.example")
    for host in ("sni.example", "hole.example"):
        path = unique_path()
        mark = netlab.origin_mark()
        result = curl_via(netlab, proxy, f"https://{host}{path}")
        assert result.exit_code == 0, (result.stderr, proxy.log_text())
        assert result.body == origin_answer(host, path)
        netlab.wait_for_origin(host=host, path=path, peer_ip=SOCKS_IP, since=mark)
    assert netlab.censor.hits("sni.example") == hits
    assert netlab.censor.direct_syns("hole.example") == syns
    proxy.wait_for_log("sni.example is listed blocked")
