"""Issue 3, network-down gating: when direct fails for many unrelated domains at once but
the upstream still works (the uplink is down, a local Tor is not), every site is rescued
through the upstream, yet learning pauses instead of marking them all blocked; the first
direct success resumes it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from lab_sites import site_named
from netlab import NetLab
from proxyd_fixture import (
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    origin_answer,
    proxyd_config,
    state_mentions,
    unique_path,
    wait_no_connect_in_flight,
)

# six unrelated registrable domains, more than the default gate of five
VICTIMS = (
    "open.example",
    "slow.example",
    "mirror.example",
    "blog-mirror.example",
    "page.example",
    "host.example",
)


def test_many_unrelated_direct_failures_pause_learning_until_direct_works_again(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    for host in VICTIMS:
        netlab.censor.blackhole(site_named(host).address)
    proxy = launch_proxyd.start(proxyd_config([("tor", netlab.socks.url)], **NO_RETEST_SOON))

    def visit(host: str) -> None:
        path = unique_path()
        result = curl_via(netlab, proxy, f"https://{host}{path}", max_time=20)
        assert result.exit_code == 0, (host, result.stderr)
        assert result.body == origin_answer(host, path)

    with ThreadPoolExecutor(len(VICTIMS)) as pool:
        list(pool.map(visit, VICTIMS))  # every visit rescued through the upstream
    proxy.wait_for_log("learning paused", timeout=20)
    for host in VICTIMS:
        wait_no_connect_in_flight(netlab, site_named(host).address, timeout=20)

    netlab.censor.unblock(site_named("open.example").address)
    path = unique_path()
    assert curl_via(netlab, proxy, f"https://open.example{path}").body == (
        origin_answer("open.example", path)
    )
    proxy.wait_for_log("learning resumed")
    assert proxy.stop() == 0  # saves the table
    for host in VICTIMS:
        assert not state_mentions(launch_proxyd.state_file, host), host
