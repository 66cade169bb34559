"""Issue 12, the outage gate asks a canary: a burst of blocked sites (a news page embedding
six blocked domains, all visited at once) looks like a dead uplink to the old network-down
rule, which paused learning and withdrew what it had just learned. proxyd now asks a host
that worked direct a moment ago; it answers, so every blocked site is learned. A real
uplink cut (the ISP's link to the internet goes down) fails the canary too: learning
pauses, nothing is learned, and the first direct success after the link is back resumes it.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

from netlab import NetLab
from proxyd_fixture import (
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    learned,
    origin_answer,
    proxyd_config,
    state_mentions,
    unique_path,
)
from test_metrics_lab import value, wait_metric

from tests.integration.test_admin import ADMIN_LISTENING
from tests.support.proc import Proxyd

# Six unrelated registrable domains the censor resets, one of them plain HTTP.
BURST = (
    "https://sni.example",
    "https://a.many.example",
    "https://blog.example",
    "https://video.example",
    "https://chat.example",
    "http://host.example",
)
BURST_DOMAINS = ("sni.example", "many.example", "blog.example", "video.example",
                 "chat.example", "host.example")  # fmt: skip
CHECKED = re.compile(r"outage check: .* asking the canary open\.example direct")


def start(netlab: NetLab, launch_proxyd: ProxydLauncher) -> tuple[Proxyd, str]:
    config = proxyd_config([("tor", netlab.socks.url)], **NO_RETEST_SOON)
    proxy = launch_proxyd.start(config, "--admin", "127.0.0.1:0")
    match = proxy.wait_for_log(ADMIN_LISTENING)
    return proxy, f"http://{match.group(1)}:{match.group(2)}"


def visit_open_site(netlab: NetLab, proxy: Proxyd) -> None:
    path = unique_path()
    done = curl_via(netlab, proxy, f"https://open.example{path}")
    assert done.body == origin_answer("open.example", path), (done.stderr, proxy.log_text())


def explain(netlab: NetLab, admin: str, host: str) -> dict[str, object]:
    done = netlab.exec_client(["curl", "-sS", f"{admin}/api/explain?host={host}"])
    assert done.returncode == 0, done.stderr
    explained: dict[str, object] = json.loads(done.stdout)
    return explained


def test_a_burst_of_six_blocked_sites_is_learned_whole_once_the_canary_answers(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy, admin = start(netlab, launch_proxyd)
    visit_open_site(netlab, proxy)  # the canary: it worked direct a moment ago

    def visit(site: str) -> None:
        path = unique_path()
        done = curl_via(netlab, proxy, f"{site}{path}", max_time=20)
        host = site.partition("://")[2]
        assert done.exit_code == 0, (site, done.stderr)
        assert done.body == origin_answer(host, path)

    with ThreadPoolExecutor(len(BURST)) as pool:
        list(pool.map(visit, BURST))  # all within the 10 s window, no direct success between
    proxy.wait_for_log(CHECKED)
    proxy.wait_for_log("the failures are censorship, learning goes on")
    for domain in BURST_DOMAINS:
        proxy.wait_for_log(learned(domain))
    samples = wait_metric(netlab, admin, "proxyd_outage_checks_total", 1, result="censorship")
    assert value(samples, "proxyd_outage_checks_total", result="outage") == 0
    assert value(samples, "proxyd_learning_paused") == 0
    gate = str(explain(netlab, admin, "open.example")["gate"])
    assert "the canary open.example answered" in gate and gate.startswith("learning open")
    assert "learning paused" not in proxy.log_text()
    assert proxy.stop() == 0  # saves the table
    for domain in BURST_DOMAINS:
        assert state_mentions(launch_proxyd.state_file, domain), domain


# Unrelated domains that work (open.example, the canary, stays out of the burst).
CUT_VICTIMS = (
    "https://slow.example",
    "https://mirror.example",
    "https://blog-mirror.example",
    "https://page.example",
    "https://sni.example",
    "http://host.example",
)


def test_a_real_uplink_cut_fails_the_canary_too_pauses_learning_and_learns_nothing(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy, admin = start(netlab, launch_proxyd)
    visit_open_site(netlab, proxy)
    netlab.cut_uplink()

    def visit(site: str) -> None:
        done = curl_via(netlab, proxy, f"{site}{unique_path()}", max_time=10)
        assert done.exit_code != 0 or done.http_code >= 500 or done.http_connect >= 500, site

    with ThreadPoolExecutor(len(CUT_VICTIMS)) as pool:
        list(pool.map(visit, CUT_VICTIMS))
    proxy.wait_for_log(CHECKED)
    proxy.wait_for_log(re.compile(r"learning paused: the canary open\.example failed too"))
    samples = wait_metric(netlab, admin, "proxyd_outage_checks_total", 1, result="outage")
    assert value(samples, "proxyd_learning_paused") == 1
    assert str(explain(netlab, admin, "open.example")["gate"]).startswith("learning paused")

    netlab.restore_uplink()
    visit_open_site(netlab, proxy)
    proxy.wait_for_log("learning resumed: open.example works direct")
    assert "learning resumed at" in str(explain(netlab, admin, "open.example")["gate"])
    assert not re.search(r"learned \S+ blocked", proxy.log_text())
    assert proxy.stop() == 0
    for site in CUT_VICTIMS:
        assert not state_mentions(launch_proxyd.state_file, site.partition("://")[2]), site
