"""Issue 3, acceptance 5: two upstreams in priority order, failover, and a 502 that says
which upstreams were tried when none works.

Both upstreams are microsocks servers in the lab's internet namespace; each connects out
from its own address, so the origin's log tells which one carried a request.
"""

from __future__ import annotations

from lab_sites import SOCKS_IP
from netlab import NetLab, SocksServer
from proxyd_fixture import (
    ANY_LEARNED,
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    learned,
    origin_answer,
    proxyd_config,
    unique_path,
    upstream_down,
)

from tests.support.proc import Proxyd

HEALTH_INTERVAL = 0.5


def start_with_two_upstreams(
    lab: NetLab, launch_proxyd: ProxydLauncher, backup: SocksServer
) -> Proxyd:
    upstreams = [("primary", lab.socks.url), ("backup", backup.url)]
    config = proxyd_config(upstreams, health_interval=f"{HEALTH_INTERVAL}s", **NO_RETEST_SOON)
    return launch_proxyd.start(config)


def test_killing_first_upstream_fails_over_to_second_within_one_health_interval(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    backup = netlab.start_socks()
    proxy = start_with_two_upstreams(netlab, launch_proxyd, backup)
    path = unique_path()
    assert curl_via(netlab, proxy, f"https://sni.example{path}").exit_code == 0
    netlab.wait_for_origin(path=path, peer_ip=SOCKS_IP)
    assert proxy.wait_for_log(learned("sni.example")).group(2) == "primary"

    netlab.socks.stop()
    path = unique_path()
    result = curl_via(netlab, proxy, f"https://sni.example{path}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    assert result.body == origin_answer("sni.example", path)
    # the very first request after the kill is carried, and without waiting for a check
    assert result.time_total < HEALTH_INTERVAL
    netlab.wait_for_origin(path=path, peer_ip=backup.address)
    proxy.wait_for_log(upstream_down("primary"), timeout=5)


def test_with_no_upstream_up_502_names_every_upstream_tried(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    backup = netlab.start_socks()
    proxy = start_with_two_upstreams(netlab, launch_proxyd, backup)
    netlab.socks.stop()
    backup.stop()
    mark = netlab.origin_mark()
    result = curl_via(netlab, proxy, f"http://host.example{unique_path()}")
    assert result.http_code == 502, result
    assert "primary" in result.body
    assert "backup" in result.body
    assert netlab.origin_log(since=mark) == []
    proxy.stop()
    # every route failed: an outage, not censorship
    assert not ANY_LEARNED.search(proxy.log_text())
