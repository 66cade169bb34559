"""Issue 13: DNS done right, in the lab (lab_doh.py adds the DoH providers).

dns.example is poisoned at the ISP's resolver (the block-page address, which serves the
block page on port 80 and refuses 443) while its real address is reachable direct.
With a DoH provider configured, proxyd sees the forged answer fail, asks the honest
source, connects direct to the real address (route ``direct+doh``) and learns that: the
origin sees the client's own address, not the SOCKS server's.
"""

from __future__ import annotations

import re

from lab_doh import (
    BLOCKED_DOH_HOST,
    BLOCKED_DOH_IP,
    DOH_HOST,
    DOH_IP,
    DOH_PATH,
    isp_queries,
    wait_for_queries,
)
from lab_sites import CLIENT_IP, SOCKS_IP
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

from tests.support.proc import Proxyd

GOOD = (
    f'[[dns.doh]]\nname = "good"\nurl = "https://{DOH_HOST}{DOH_PATH}"\nbootstrap = ["{DOH_IP}"]\n'
)
BLOCKED = (
    f'[[dns.doh]]\nname = "blocked"\nurl = "https://{BLOCKED_DOH_HOST}{DOH_PATH}"\n'
    f'bootstrap = ["{BLOCKED_DOH_IP}"]\n'
)
DOH_TIMEOUT = 1.0


def start_proxyd(
    lab: NetLab,
    launch: ProxydLauncher,
    providers: str = GOOD,
    *,
    top: str = "",
    race_after: str = "800ms",
) -> Proxyd:
    lab.start_doh()
    config = top + proxyd_config([("tor", lab.socks.url)], race_after=race_after, **NO_RETEST_SOON)
    config += f'[dns]\ntimeout = "{DOH_TIMEOUT:g}s"\n' + providers
    # The providers' certificates come from the lab's CA.
    return launch.start(config, env={"SSL_CERT_FILE": str(lab.ca_bundle)})


def visit_from(lab: NetLab, proxy: Proxyd, url: str, peer: str) -> float:
    mark = lab.origin_mark()
    path = unique_path()
    host = url.split("/")[2]
    result = curl_via(lab, proxy, url + path)
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    assert result.body == origin_answer(host, path)
    lab.wait_for_origin(host=host, path=path, peer_ip=peer, since=mark)
    return result.time_starttransfer


# -- acceptance 1: direct, by route direct+doh -----------------------------------------


def test_poisoned_site_over_http_is_served_direct_by_doh_route_and_learned(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd)
    visit_from(netlab, proxy, "http://dns.example", CLIENT_IP)
    match = proxy.wait_for_log(learned("dns.example"))
    assert match.groups() == ("dns_poison", "direct+doh")
    # learned: the next visit goes to the real address at once, from the cache
    syns = netlab.censor.direct_syns(netlab.block_page_ip)
    visit_from(netlab, proxy, "http://dns.example", CLIENT_IP)
    assert netlab.censor.direct_syns(netlab.block_page_ip) == syns


def test_poisoned_site_over_https_is_served_direct_by_doh_route_and_learned(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd)
    doh = netlab.start_doh()
    visit_from(netlab, proxy, "https://dns.example", CLIENT_IP)
    match = proxy.wait_for_log(learned("dns.example"))
    assert match.groups() == ("dns_poison", "direct+doh")
    asked = doh.honest_queries("dns.example")
    assert asked >= 1
    visit_from(netlab, proxy, "https://dns.example", CLIENT_IP)
    assert doh.honest_queries("dns.example") == asked  # the cache answered


def test_poisoned_and_ip_blocked_site_ends_on_the_upstream(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    netlab.censor.blackhole("dns.example")  # its real address too
    proxy = start_proxyd(netlab, launch_proxyd)
    visit_from(netlab, proxy, "https://dns.example", SOCKS_IP)


# -- acceptance 2: no DoH for honest answers, failover within one timeout --------------


def test_names_with_honest_system_answers_cause_no_doh_query(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd)
    doh = netlab.start_doh()
    open_before, sni_before = doh.honest_queries("open.example"), doh.honest_queries("sni.example")
    visit_from(netlab, proxy, "http://open.example", CLIENT_IP)
    visit_from(netlab, proxy, "https://open.example", CLIENT_IP)
    # blocked by SNI, not by DNS: the upstream carries it, and DoH is not asked either
    visit_from(netlab, proxy, "https://sni.example", SOCKS_IP)
    # a name that does need DoH, asked after the others: once its query is logged,
    # theirs would have been too
    before = doh.honest_queries("dns.example")
    visit_from(netlab, proxy, "https://dns.example", CLIENT_IP)
    wait_for_queries(doh.honest_log, "dns.example", before + 1)
    assert doh.honest_queries("open.example") == open_before
    assert doh.honest_queries("sni.example") == sni_before


def test_blocked_doh_provider_fails_over_to_the_next_within_one_timeout(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    netlab.censor.blackhole(BLOCKED_DOH_IP)
    # racing later than the DoH timeout, so the upstream cannot hide a slow failover
    proxy = start_proxyd(netlab, launch_proxyd, BLOCKED + GOOD, race_after="3s")
    first_byte = visit_from(netlab, proxy, "https://dns.example", CLIENT_IP)
    assert first_byte < DOH_TIMEOUT + 0.9, first_byte
    assert netlab.censor.hits(BLOCKED_DOH_IP) > 0  # the blocked provider was tried first
    proxy.wait_for_log(re.compile(r"DoH provider blocked failed"))


# -- acceptance 3: never leak -----------------------------------------------------------

ONION = "expyuzz4wqqyqhjn.onion"


def test_no_query_for_upstream_routed_host_or_onion_leaves_the_client(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    rule = '[[rule]]\ndomain = "sni.example"\nroute = "tor"\n'
    onion_upstream = f'[[upstream]]\nname = "onion"\nurl = "{netlab.socks.url}"\ntor = true\n'
    proxy = start_proxyd(netlab, launch_proxyd, GOOD + rule + onion_upstream)
    doh = netlab.start_doh()
    names = ("sni.example", ONION)
    before = {n: (isp_queries(netlab.workdir, n), doh.honest_queries(n)) for n in names}
    wire = netlab.censor.dns_queries("sni.example")
    visit_from(netlab, proxy, "https://sni.example", SOCKS_IP)
    visit_from(netlab, proxy, "http://sni.example", SOCKS_IP)
    onion = curl_via(netlab, proxy, f"http://{ONION}/")
    assert onion.http_code in (502, 504), onion  # the stand-in for Tor knows no onions
    # A name the system resolver must be asked, after the others: once it is in the ISP
    # resolver's log, any query for the others would be there too.
    marker = isp_queries(netlab.workdir, "open.example")
    visit_from(netlab, proxy, "http://open.example", CLIENT_IP)
    wait_for_queries(netlab.workdir / "dnsmasq.log", "open.example", marker + 1)
    after = {n: (isp_queries(netlab.workdir, n), doh.honest_queries(n)) for n in names}
    assert after == before
    assert netlab.censor.dns_queries("sni.example") == wire  # nor on the wire, anywhere


# -- acceptance 4: the LAN DNS listener -------------------------------------------------


def dig(lab: NetLab, server: str, name: str, *options: str, isp: bool = False) -> str:
    argv = ["dig", f"@{server}", "-p", "5353", name, "A", "+time=3", "+tries=1", *options]
    if isp:
        return lab.isp.run(argv)
    done = lab.exec_client(argv)
    assert done.returncode == 0, done
    return done.stdout


def test_lan_dns_listener_answers_poisoned_name_honestly_and_refuses_strangers(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    top = 'allow = ["127.0.0.0/8"]\ndns_listen = ["127.0.0.1:5353", "198.18.1.2:5353"]\n'
    start_proxyd(netlab, launch_proxyd, top=top)
    for transport in ("+notcp", "+tcp"):
        answer = dig(netlab, "127.0.0.1", "dns.example", transport, "+short")
        assert answer.split() == [netlab.sites["dns.example"]], answer
    # the ISP's own answer, for contrast
    assert netlab.exec_client(["getent", "ahostsv4", "dns.example"]).stdout.startswith(
        netlab.block_page_ip
    )
    refused = dig(netlab, "198.18.1.2", "dns.example", isp=True)
    assert "status: REFUSED" in refused, refused
    assert "ANSWER: 0" in refused
