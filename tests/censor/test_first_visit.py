"""Issue 3, acceptance 1-3: a real proxyd in the lab's client namespace, driven by curl.

- The first visit to every kind of blocked site succeeds, through the transparent retry:
  the client sees the origin's page, never the failure, and the origin saw the request
  arrive from the SOCKS server.
- Once a domain is learned blocked, the next visit goes straight through the upstream:
  the censor's counters (SYNs to the site's address, rule hits, DNS queries for the name)
  do not move.
- Open and slow sites stay direct on every visit; a down site gets a clear 502/504 and
  is not learned.
- When the censor lifts its rule, the re-test moves the domain back to direct.

Poisoned DNS (dns.example): the ISP resolver answers the block-page server's address,
which serves the block page on port 80 and refuses port 443. Plain HTTP shows the block
page, which the configured fingerprint recognises. Over HTTPS the direct attempt is
refused, a failure before any server byte, so the tentative attempt is replayed through
the upstream, whose remote DNS gives the real address: the first visit succeeds in
either order. After an HTTP visit taught proxyd the domain, HTTPS makes no direct
attempt at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from lab_sites import CLIENT_IP, SOCKS_IP
from netlab import NetLab
from proxyd_fixture import (
    ANY_LEARNED,
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    learned,
    origin_answer,
    proxyd_config,
    retest_direct,
    state_mentions,
    unique_path,
    wait_no_connect_in_flight,
)

from tests.support.proc import Proxyd

# Racing starts the upstream 0.8 s after a silent direct attempt; the lab's upstream adds
# milliseconds. A connect-timeout fallback would take 3 s.
BLACKHOLE_FIRST_BYTE_LIMIT = 2.5
# weak evidence (a blackhole's timeouts) needs this many direct failures (the default)
WEAK_THRESHOLD = 2


def start_proxyd(lab: NetLab, launch_proxyd: ProxydLauncher, **settings: str) -> Proxyd:
    return launch_proxyd.start(proxyd_config([("tor", lab.socks.url)], **settings))


def visit(lab: NetLab, proxy: Proxyd, scheme: str, host: str) -> float:
    """GET a fresh path, assert the origin's own answer; return the first-byte time."""
    path = unique_path()
    result = curl_via(lab, proxy, f"{scheme}://{host}{path}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    assert result.body == origin_answer(host, path)
    return result.time_starttransfer


def visit_records_peer(lab: NetLab, proxy: Proxyd, scheme: str, host: str, peer: str) -> None:
    path = unique_path()
    mark = lab.origin_mark()
    result = curl_via(lab, proxy, f"{scheme}://{host}{path}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    assert result.body == origin_answer(host, path)
    lab.wait_for_origin(host=host, path=path, peer_ip=peer, since=mark)


@dataclass(frozen=True)
class BlockedVisit:
    scheme: str
    host: str
    domain: str  # the registrable domain proxyd learns
    visits_to_learn: int = 1  # strong evidence blocks at once

    def __str__(self) -> str:
        return f"{self.scheme}-{self.host}"


SNI = BlockedVisit("https", "sni.example", "sni.example")
HOST_HEADER = BlockedVisit("http", "host.example", "host.example")
BLACKHOLE_HTTPS = BlockedVisit("https", "hole.example", "hole.example", WEAK_THRESHOLD)
BLACKHOLE_HTTP = BlockedVisit("http", "hole.example", "hole.example", WEAK_THRESHOLD)
POISON_HTTP = BlockedVisit("http", "dns.example", "dns.example")
REDIRECT = BlockedVisit("http", "page.example", "page.example")
SUBDOMAIN = BlockedVisit("https", "a.many.example", "many.example")


# -- first visit ---------------------------------------------------------------------


@pytest.mark.parametrize("blocked", [SNI, HOST_HEADER, POISON_HTTP, REDIRECT, SUBDOMAIN], ids=str)
def test_first_visit_to_blocked_site_succeeds_via_upstream(
    netlab: NetLab, launch_proxyd: ProxydLauncher, blocked: BlockedVisit
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd)
    hits = netlab.censor.hits(blocked.domain)
    visit_records_peer(netlab, proxy, blocked.scheme, blocked.host, SOCKS_IP)
    # the censor did act on a direct attempt: the client was spared a real failure
    assert netlab.censor.hits(blocked.domain) > hits


@pytest.mark.parametrize("blocked", [BLACKHOLE_HTTPS, BLACKHOLE_HTTP], ids=str)
def test_first_visit_to_blackholed_site_gets_first_byte_by_racing_not_timeout(
    netlab: NetLab, launch_proxyd: ProxydLauncher, blocked: BlockedVisit
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd)
    path = unique_path()
    syns = netlab.censor.direct_syns(blocked.host)
    result = curl_via(netlab, proxy, f"{blocked.scheme}://{blocked.host}{path}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    assert result.body == origin_answer(blocked.host, path)
    assert result.time_starttransfer < BLACKHOLE_FIRST_BYTE_LIMIT
    netlab.wait_for_origin(path=path, peer_ip=SOCKS_IP)
    # direct was tried first (a race, not a guess)
    assert netlab.censor.direct_syns(blocked.host) > syns


def test_first_visit_to_poisoned_name_over_https_succeeds_via_upstream(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd)
    syns = netlab.censor.direct_syns(netlab.block_page_ip)
    visit_records_peer(netlab, proxy, "https", "dns.example", SOCKS_IP)
    # the direct attempt went to the poisoned address, was refused, and was replayed
    assert netlab.censor.direct_syns(netlab.block_page_ip) > syns


def test_https_to_poisoned_name_after_its_block_page_makes_no_direct_attempt(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd)
    visit_records_peer(netlab, proxy, "http", "dns.example", SOCKS_IP)
    proxy.wait_for_log(learned("dns.example"))
    syns = netlab.censor.direct_syns(netlab.block_page_ip)
    queries = netlab.censor.dns_queries("dns.example")
    visit_records_peer(netlab, proxy, "https", "dns.example", SOCKS_IP)
    assert netlab.censor.direct_syns(netlab.block_page_ip) == syns
    assert netlab.censor.dns_queries("dns.example") == queries


# -- second visit --------------------------------------------------------------------


def direct_address(lab: NetLab, blocked: BlockedVisit) -> str:
    """Where a direct attempt connects: the poisoned address for a poisoned name."""
    return lab.block_page_ip if blocked is POISON_HTTP else lab.sites[blocked.host]


def direct_attempt_counters(lab: NetLab, blocked: BlockedVisit) -> dict[str, int]:
    """Every trace a direct attempt leaves at the censor: SYNs, rule hits, DNS queries."""
    return {
        "syns": lab.censor.direct_syns(direct_address(lab, blocked)),
        "hits": lab.censor.hits(blocked.domain),
        "dns": lab.censor.dns_queries(blocked.host),
    }


@pytest.mark.parametrize(
    "blocked", [SNI, HOST_HEADER, BLACKHOLE_HTTPS, POISON_HTTP, REDIRECT], ids=str
)
def test_second_visit_to_learned_domain_goes_straight_via_upstream(
    netlab: NetLab, launch_proxyd: ProxydLauncher, blocked: BlockedVisit
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd, **NO_RETEST_SOON)
    for _ in range(blocked.visits_to_learn):
        visit(netlab, proxy, blocked.scheme, blocked.host)
    # A blackhole's evidence is a direct connect timing out, which may land after the
    # raced upstream already answered: wait on the log line, not the visit.
    match = proxy.wait_for_log(learned(blocked.domain))
    assert match.group(2) == "tor"
    wait_no_connect_in_flight(netlab, direct_address(netlab, blocked))
    before = direct_attempt_counters(netlab, blocked)
    visit_records_peer(netlab, proxy, blocked.scheme, blocked.host, SOCKS_IP)
    assert direct_attempt_counters(netlab, blocked) == before


def test_sibling_subdomain_of_learned_domain_goes_straight_via_upstream(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd, **NO_RETEST_SOON)
    visit_records_peer(netlab, proxy, "https", "a.many.example", SOCKS_IP)
    proxy.wait_for_log(learned("many.example"))
    wait_no_connect_in_flight(netlab, netlab.sites["many.example"])
    syns, hits = netlab.censor.direct_syns("many.example"), netlab.censor.hits("many.example")
    queries = netlab.censor.dns_queries("b.many.example")
    visit_records_peer(netlab, proxy, "https", "b.many.example", SOCKS_IP)
    assert netlab.censor.direct_syns("many.example") == syns
    assert netlab.censor.hits("many.example") == hits
    assert netlab.censor.dns_queries("b.many.example") == queries


# -- no false positives --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "peers_allowed"),
    [
        ("open.example", {CLIENT_IP}),
        # A slow plain-HTTP answer may start a race that the upstream then loses.
        ("slow.example", {CLIENT_IP, SOCKS_IP}),
    ],
)
def test_open_and_slow_sites_stay_direct_on_every_visit(
    netlab: NetLab, launch_proxyd: ProxydLauncher, host: str, peers_allowed: set[str]
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd)
    mark = netlab.origin_mark()
    for scheme in ("https", "http") * 3:
        visit_records_peer(netlab, proxy, scheme, host, CLIENT_IP)
    assert {record.peer_ip for record in netlab.origin_log(since=mark)} <= peers_allowed
    proxy.stop()
    assert not ANY_LEARNED.search(proxy.log_text())
    assert not state_mentions(launch_proxyd.state_file, host)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_down_site_gets_502_or_504_and_is_not_learned(
    netlab: NetLab, launch_proxyd: ProxydLauncher, scheme: str
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd)
    result = curl_via(netlab, proxy, f"{scheme}://down.example{unique_path()}", max_time=20)
    if scheme == "http":
        assert result.http_code in (502, 504), result
        assert "down.example" in result.body
    else:
        assert result.http_connect in (502, 504), result
    proxy.stop()
    assert not ANY_LEARNED.search(proxy.log_text())
    assert not state_mentions(launch_proxyd.state_file, "down.example")


# -- re-test -------------------------------------------------------------------------


def test_retest_moves_domain_back_to_direct_once_the_censor_lifts_its_rule(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start_proxyd(netlab, launch_proxyd, retest_initial="2s", retest_max="4s")
    visit_records_peer(netlab, proxy, "https", "sni.example", SOCKS_IP)
    proxy.wait_for_log(learned("sni.example"))
    netlab.censor.unblock("sni.example")
    # first re-test after 2 s (+-10 %), or 4 s later if it raced the unblock
    proxy.wait_for_log(retest_direct("sni.example"), timeout=10)
    visit_records_peer(netlab, proxy, "https", "sni.example", CLIENT_IP)
