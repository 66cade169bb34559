"""Issue 12, the desync ladder, on by default. A per-packet filter (iptables ``-m string``)
misses a name cut across two TCP segments or interrupted by a TLS record header; a DPI box
that reassembles TCP but parses only the first TLS record misses a ClientHello re-framed as
two records. So SNI-blocked, Host-blocked and first-record-DPI sites are reached *directly*
on the first visit (the origin sees the client's own address, or the ISP relay's, never
the SOCKS server's), learned with the strategy that worked, cheapest first
(``desync:tlsrec``, ``desync:hostcase``), and the next visit goes straight there. A DPI
that joins handshake fragments across records is not fooled: the upstream carries it.
Real clients and servers accept every strategy: curl and headless Chromium against the
lab's origin (Python's ssl) through each one, forced by a rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lab_sites import CLIENT_IP, ISP_INTERNET_SIDE, SOCKS_IP
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


def default_config(netlab: NetLab, upstreams: bool = True) -> str:
    chosen = [("tor", netlab.socks.url)] if upstreams else []
    config = proxyd_config(chosen, desync=None, **NO_RETEST_SOON)
    return config if upstreams else "upstream = []\n" + config


@pytest.mark.parametrize(
    ("scheme", "host", "strategy", "origin_sees"),
    [
        ("https", "sni.example", "desync:tlsrec", CLIENT_IP),
        ("http", "host.example", "desync:hostcase", CLIENT_IP),
        ("https", "dpi.example", "desync:tlsrec", ISP_INTERNET_SIDE),  # through the DPI relay
    ],
)
def test_desync_reaches_a_dpi_blocked_site_directly_and_learns_the_strategy(
    netlab: NetLab,
    launch_proxyd: ProxydLauncher,
    scheme: str,
    host: str,
    strategy: str,
    origin_sees: str,
) -> None:
    proxy = launch_proxyd.start(default_config(netlab))
    for visit in range(2):
        syns = netlab.censor.direct_syns(host)
        path = unique_path()
        mark = netlab.origin_mark()
        result = curl_via(netlab, proxy, f"{scheme}://{host}{path}")
        assert result.exit_code == 0, (result.stderr, proxy.log_text())
        assert result.body == origin_answer(host, path)
        netlab.wait_for_origin(host=host, path=path, peer_ip=origin_sees, since=mark)
        if visit == 0:
            match = proxy.wait_for_log(learned(host))
            assert match.group(2) == strategy
            # plain direct was tried first and reset: two connections, one per try
            assert netlab.censor.direct_syns(host) >= syns + 2
        else:
            # straight to the strategy (plain HTTP may reuse its pooled connection)
            assert netlab.censor.direct_syns(host) <= syns + 1


def test_a_dpi_that_joins_records_is_not_fooled_and_the_upstream_carries_the_site(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = launch_proxyd.start(default_config(netlab))
    path = unique_path()
    mark = netlab.origin_mark()
    result = curl_via(netlab, proxy, f"https://dpi-full.example{path}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    assert result.body == origin_answer("dpi-full.example", path)
    netlab.wait_for_origin(host="dpi-full.example", path=path, peer_ip=SOCKS_IP, since=mark)
    assert proxy.wait_for_log(learned("dpi-full.example")).group(2) == "tor"


@pytest.mark.parametrize(
    ("scheme", "host", "strategy"),
    [
        ("https", "sni.example", "desync:tlsrec"),
        ("http", "host.example", "desync:hostcase"),
        ("https", "dpi.example", "desync:tlsrec"),
    ],
)
def test_with_no_upstream_at_all_desync_still_loads_the_site(
    netlab: NetLab, launch_proxyd: ProxydLauncher, scheme: str, host: str, strategy: str
) -> None:
    proxy = launch_proxyd.start(default_config(netlab, upstreams=False))
    path = unique_path()
    result = curl_via(netlab, proxy, f"{scheme}://{host}{path}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    assert result.body == origin_answer(host, path)
    assert proxy.wait_for_log(learned(host)).group(2) == strategy


def test_kept_alive_requests_to_a_desync_site_are_each_reshaped(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = launch_proxyd.start(default_config(netlab))
    first = unique_path()
    assert curl_via(netlab, proxy, f"http://host.example{first}").exit_code == 0
    proxy.wait_for_log(learned("host.example"))
    # several requests on one client connection: the kept-alive fast path must reshape too
    paths = [unique_path() for _ in range(3)]
    hits = netlab.censor.hits("host.example")
    argv = ["curl", "-sS", "--max-time", "10", "-x", proxy.url]
    done = netlab.exec_client(argv + [f"http://host.example{p}" for p in paths], timeout=20)
    assert done.returncode == 0, (done.stderr, proxy.log_text())
    assert done.stdout == "".join(origin_answer("host.example", p) for p in paths)
    for path in paths:
        netlab.wait_for_origin(host="host.example", path=path, peer_ip=CLIENT_IP)
    assert netlab.censor.hits("host.example") == hits  # no plain head ever reached it


STRATEGIES = ("desync:split", "desync:tlsrec", "desync:both")
HTTP_STRATEGIES = ("desync:split", "desync:hostcase")
# Blocked sites served by the lab's origin (Python's ssl behind aiohttp) and by nginx
# (OpenSSL): a strategy forced by a rule must really reshape the bytes to get through.
HTTPS_SITES = {"sni.example": "origin", "nginx.example": "nginx"}
HTTP_SITES = {"host.example": "origin", "nginx.example": "nginx"}


def forced(netlab: NetLab, host: str, route: str) -> str:
    rule = f'[[rule]]\nhost = "{host}"\nroute = "{route}"\n'
    return rule + default_config(netlab)


def answer(host: str, path: str) -> str:
    return f"{({**HTTPS_SITES, **HTTP_SITES})[host]} {host} {path}\n"


@pytest.mark.parametrize(
    ("scheme", "host", "route"),
    [("https", host, route) for host in HTTPS_SITES for route in STRATEGIES]
    + [
        ("http", host, route)
        for host in HTTP_SITES
        for route in ("desync:split", "desync:hostcase")
    ],
)
def test_curl_completes_through_every_strategy(
    netlab: NetLab, launch_proxyd: ProxydLauncher, scheme: str, host: str, route: str
) -> None:
    proxy = launch_proxyd.start(forced(netlab, host, route))
    hits = netlab.censor.hits(host)
    path = unique_path()
    result = curl_via(netlab, proxy, f"{scheme}://{host}{path}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    assert result.body == answer(host, path)
    assert netlab.censor.hits(host) == hits  # the censor never saw the name whole
    assert not re.search(r"broke the handshake", proxy.log_text())


@pytest.mark.parametrize("host", HTTPS_SITES)
@pytest.mark.parametrize("route", STRATEGIES)
def test_chromium_completes_handshakes_through_every_tls_strategy(
    netlab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path, route: str, host: str
) -> None:
    proxy = launch_proxyd.start(forced(netlab, host, route))
    hits = netlab.censor.hits(host)
    path = unique_path()
    argv = netlab.chromium_argv(
        f"https://{host}{path}", tmp_path / "profile", f"--proxy-server={proxy.url}"
    )
    done = netlab.exec_client(argv, timeout=60)
    assert answer(host, path).strip() in done.stdout, done.stderr[-2000:]
    assert netlab.censor.hits(host) == hits
    assert not re.search(r"broke the handshake", proxy.log_text())
