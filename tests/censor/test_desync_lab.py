"""Desync in the lab: the censor's per-packet string match (iptables -m string) misses a
name cut across two TCP segments, so with ``learning.desync`` on, an SNI-blocked HTTPS site
and a Host-blocked HTTP site are reached *directly* on the first visit (the origin sees the
client's own address, not the SOCKS server's), learned with route "desync", and the next
visit goes straight there."""

from __future__ import annotations

import pytest
from lab_sites import CLIENT_IP
from netlab import NetLab
from proxyd_fixture import (
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    learned,
    origin_answer,
    proxyd_config,
    unique_path,
)


@pytest.mark.parametrize(("scheme", "host"), [("https", "sni.example"), ("http", "host.example")])
def test_desync_reaches_a_dpi_blocked_site_directly_and_is_learned(
    netlab: NetLab, launch_proxyd: ProxydLauncher, scheme: str, host: str
) -> None:
    config = proxyd_config([("tor", netlab.socks.url)], **NO_RETEST_SOON)
    config = config.replace("[learning]\n", "[learning]\ndesync = true\n")
    proxy = launch_proxyd.start(config)
    for visit in range(2):
        hits = netlab.censor.hits(host)
        path = unique_path()
        mark = netlab.origin_mark()
        result = curl_via(netlab, proxy, f"{scheme}://{host}{path}")
        assert result.exit_code == 0, (result.stderr, proxy.log_text())
        assert result.body == origin_answer(host, path)
        netlab.wait_for_origin(host=host, path=path, peer_ip=CLIENT_IP, since=mark)
        if visit == 0:
            match = proxy.wait_for_log(learned(host))
            assert match.group(2) == "desync"
            assert netlab.censor.hits(host) > hits  # plain direct was tried and reset
        else:
            assert netlab.censor.hits(host) == hits  # straight to desync: nothing to reset


def test_kept_alive_requests_to_a_desync_site_are_each_split(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    config = proxyd_config([("tor", netlab.socks.url)], **NO_RETEST_SOON)
    proxy = launch_proxyd.start(config.replace("[learning]\n", "[learning]\ndesync = true\n"))
    first = unique_path()
    assert curl_via(netlab, proxy, f"http://host.example{first}").exit_code == 0
    proxy.wait_for_log(learned("host.example"))
    # several requests on one client connection: the kept-alive fast path must split too
    paths = [unique_path() for _ in range(3)]
    hits = netlab.censor.hits("host.example")
    argv = ["curl", "-sS", "--max-time", "10", "-x", proxy.url]
    done = netlab.exec_client(argv + [f"http://host.example{p}" for p in paths], timeout=20)
    assert done.returncode == 0, (done.stderr, proxy.log_text())
    assert done.stdout == "".join(origin_answer("host.example", p) for p in paths)
    for path in paths:
        netlab.wait_for_origin(host="host.example", path=path, peer_ip=CLIENT_IP)
    assert netlab.censor.hits("host.example") == hits  # no unsplit head ever reached it
