"""Issue 5: the metrics of learning move with what really happens in the censored lab.

A first visit to an SNI-blocked site (the censor resets the connection after the TLS
ClientHello) must show up as a detection with the censor's reason, a successful request
through the upstream, a learned domain, a state save; the out-of-band re-tests as
"blocked" while the censor holds its rule and "ok" once it lifts it.

And the rule every metric keeps (DESIGN §7: bounded labels, never a domain): after mixed traffic
to many hosts, no label value names one, and more hosts make no more series.
"""

from __future__ import annotations

import time

from netlab import NetLab
from prometheus_client.parser import text_string_to_metric_families
from proxyd_fixture import (
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    learned,
    proxyd_config,
    unique_path,
)

from tests.integration.test_admin import ADMIN_LISTENING
from tests.support.proc import Proxyd

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(lab: NetLab, admin: str) -> Samples:
    done = lab.exec_client(["curl", "-sS", "--max-time", "10", f"{admin}/metrics"])
    assert done.returncode == 0, done.stderr
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(done.stdout)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_metric(
    lab: NetLab, admin: str, name: str, minimum: float, timeout: float = 15.0, **labels: str
) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(lab, admin)
        if value(samples, name, **labels) >= minimum:
            return samples
        assert time.monotonic() < deadline, f"{name}{labels} never reached {minimum}: " + repr(
            {k: v for k, v in samples.items() if k[0] == name}
        )
        time.sleep(0.1)


def test_learning_metrics_follow_a_blocked_first_visit_and_its_retests(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    config = proxyd_config([("tor", netlab.socks.url)], retest_initial="2s", retest_max="4s")
    proxy: Proxyd = launch_proxyd.start(config, "--admin", "127.0.0.1:0")
    match = proxy.wait_for_log(ADMIN_LISTENING)
    admin = f"http://{match.group(1)}:{match.group(2)}"

    result = curl_via(netlab, proxy, f"https://sni.example{unique_path()}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    reason = proxy.wait_for_log(learned("sni.example")).group(1)
    assert reason == "connection_reset"

    samples = wait_metric(netlab, admin, "proxyd_requests_total", 1, protocol="connect",
                          route="tor", outcome="ok")  # fmt: skip
    assert value(samples, "proxyd_detections_total", reason="connection_reset") == 1
    # Direct connected (the censor only resets after the ClientHello); so did the upstream.
    assert value(samples, "proxyd_dials_total", route="direct", outcome="ok") == 1
    assert value(samples, "proxyd_dials_total", route="tor", outcome="ok") == 1
    assert value(samples, "proxyd_first_byte_latency_seconds_count", route="tor") == 1
    assert value(samples, "proxyd_first_byte_latency_seconds_count", route="direct") == 0
    assert value(samples, "proxyd_relayed_bytes_total", route="tor", direction="down") > 1000
    assert value(samples, "proxyd_learned_domains", state="blocked", source="learned") == 1
    assert value(samples, "proxyd_upstream_up", upstream="tor") == 1
    wait_metric(netlab, admin, "proxyd_state_saves_total", 1)

    # The censor still resets: the re-test says so, and the domain stays blocked.
    samples = wait_metric(netlab, admin, "proxyd_retests_total", 1, result="blocked")
    assert value(samples, "proxyd_retests_total", result="ok") == 0
    netlab.censor.unblock("sni.example")
    samples = wait_metric(netlab, admin, "proxyd_retests_total", 1, result="ok", timeout=15)
    assert value(samples, "proxyd_learned_domains", state="blocked", source="learned") == 0
    assert value(samples, "proxyd_state_save_failures_total") == 0


def test_a_request_the_mirror_answers_is_counted_under_the_mirror_route(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    mirror = (
        '[[mirror]]\nname = "blog"\nfrom = "*.blog.example"\nto = "*.blog-mirror.example"\n'
        'mode = "proxy"\nwhen = "always"\n'
    )
    config = proxyd_config([("tor", netlab.socks.url)]) + mirror
    proxy: Proxyd = launch_proxyd.start(config, "--admin", "127.0.0.1:0")
    match = proxy.wait_for_log(ADMIN_LISTENING)
    admin = f"http://{match.group(1)}:{match.group(2)}"
    result = curl_via(netlab, proxy, f"http://blog.example{unique_path()}")
    assert (result.exit_code, result.http_code) == (0, 200), (result, proxy.log_text())
    samples = wait_metric(netlab, admin, "proxyd_requests_total", 1, protocol="http",
                          route="mirror:blog", outcome="ok")  # fmt: skip
    assert value(samples, "proxyd_relayed_bytes_total", route="mirror:blog", direction="up") > 0
    down = value(samples, "proxyd_relayed_bytes_total", route="mirror:blog", direction="down")
    assert down >= len(result.body.encode())
    assert value(samples, "proxyd_requests_total", protocol="http", route="direct",
                 outcome="ok") == 0  # fmt: skip


# Two rounds of the same kinds of traffic, each to hosts of its own: an open site over
# all three inbound protocols, first visits to sites the censor blocks (by SNI, by Host
# header) and a later visit on the learned route, a name that does not exist, a port
# that refuses. ``{socks}`` marks a visit through proxyd as a SOCKS5 proxy; the others
# use it as an HTTP proxy (CONNECT for https).
ROUND_ONE = (
    "http://open.example", "https://open.example", "{socks}https://open.example",
    "https://sni.example", "{socks}https://sni.example", "http://host.example",
    "http://nx-one.example", "https://gone-mirror.example",
)  # fmt: skip
ROUND_TWO = (
    "http://mirror.example", "https://mirror.example", "{socks}https://mirror.example",
    "https://a.many.example", "{socks}https://b.many.example", "http://blog.example",
    "http://nx-two.example", "https://slow.example:81",
)  # fmt: skip


def visit_round(lab: NetLab, proxy: Proxyd, urls: tuple[str, ...]) -> set[str]:
    """Visit each URL once; return every host and registrable domain visited."""
    visited: set[str] = set()
    for url in urls:
        args = ("--socks5-hostname", f"{proxy.host}:{proxy.port}") if "{socks}" in url else ()
        url = url.replace("{socks}", "")
        curl_via(lab, proxy, f"{url}{unique_path()}", *args)
        host = url.split("://", 1)[1].split(":", 1)[0]
        visited |= {host, ".".join(host.split(".")[-2:])}  # every lab domain is NAME.example
    return visited


def wait_requests_finished(lab: NetLab, admin: str, count: int) -> Samples:
    """Samples once ``count`` requests are accounted (curl may return a moment before)."""
    deadline = time.monotonic() + 15
    while True:
        samples = scrape(lab, admin)
        done = sum(v for (name, _), v in samples.items() if name == "proxyd_requests_total")
        if done >= count:
            return samples
        assert time.monotonic() < deadline, f"{done} of {count} requests accounted"
        time.sleep(0.1)


def label_sets(samples: Samples) -> dict[str, set[frozenset[tuple[str, str]]]]:
    series: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for name, labels in samples:
        series.setdefault(name, set()).add(labels)
    return series


def test_no_metric_label_names_a_visited_host_and_label_sets_do_not_grow_with_hosts(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    config = proxyd_config([("tor", netlab.socks.url)], **NO_RETEST_SOON)
    proxy: Proxyd = launch_proxyd.start(config, "--admin", "127.0.0.1:0")
    match = proxy.wait_for_log(ADMIN_LISTENING)
    admin = f"http://{match.group(1)}:{match.group(2)}"

    visited = visit_round(netlab, proxy, ROUND_ONE)
    for blocked in ("sni.example", "host.example"):
        proxy.wait_for_log(learned(blocked))
    after_one = wait_requests_finished(netlab, admin, len(ROUND_ONE))
    visited |= visit_round(netlab, proxy, ROUND_TWO)
    for blocked in ("many.example", "blog.example"):
        proxy.wait_for_log(learned(blocked))
    after_two = wait_requests_finished(netlab, admin, len(ROUND_ONE) + len(ROUND_TWO))

    # Every sample, every label value: no host and no domain, in any form.
    for name, labels in after_two:
        for label, label_value in labels:
            named = [v for v in visited if v in label_value.lower()]
            assert not named, f"{name} label {label}={label_value!r} names {named}"
    # Eight more hosts of the same kinds made no new series in any metric.
    assert label_sets(after_two) == label_sets(after_one)
    assert visited >= {"sni.example", "a.many.example", "many.example", "nx-two.example"}
