"""The control rule (DESIGN §4), in the lab: a direct failure is censorship only if
another route reached the site for the same request. With every route down it is an
outage, and nothing may be learned, whatever the censor did to the direct attempt.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from netlab import NetLab
from proxyd_fixture import (
    ANY_LEARNED,
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    learned,
    proxyd_config,
    unique_path,
)

from tests.integration.test_admin import ADMIN_LISTENING
from tests.support.proc import Proxyd

# One of each kind of direct evidence the censor leaves: a reset after the ClientHello,
# a reset after the Host header, a poisoned DNS answer, a redirect to the block page.
CENSORED = ("https://sni.example", "http://host.example", "https://dns.example",
            "http://page.example")  # fmt: skip


def learned_table(lab: NetLab, admin: str) -> list[dict[str, Any]]:
    """What ``proxyd routes --json`` lists, asked from the client namespace as a user would."""
    argv = [sys.executable, "-m", "proxyd", "routes", "--admin", admin, "--json"]
    done = lab.exec_client(argv, timeout=30)
    assert done.returncode == 0, done.stderr
    entries: list[dict[str, Any]] = json.loads(done.stdout)
    return entries


def test_every_route_down_learns_nothing_and_the_learned_table_stays_empty(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    netlab.socks.stop()
    config = proxyd_config([("tor", netlab.socks.url)], **NO_RETEST_SOON)
    proxy: Proxyd = launch_proxyd.start(config, "--admin", "127.0.0.1:0")
    match = proxy.wait_for_log(ADMIN_LISTENING)
    admin = f"{match.group(1)}:{match.group(2)}"
    resets = netlab.censor.hits("sni.example") + netlab.censor.hits("host.example")

    for site in CENSORED:
        path = unique_path()
        result = curl_via(netlab, proxy, f"{site}{path}")
        # An error, or the censor's own answer (its 302) when no route said otherwise.
        assert path not in result.body, (site, result)
        assert result.exit_code != 0 or result.http_code in (302, 502, 504), (site, result)
    # The direct attempts did meet the censor: the evidence was there to be misread.
    assert netlab.censor.hits("sni.example") + netlab.censor.hits("host.example") > resets
    assert not ANY_LEARNED.search(proxy.log_text()), proxy.log_text()
    assert learned_table(netlab, admin) == []

    # The control: with the upstream back, the same visit is learned and listed, so the
    # empty table above was the rule at work and not a table that never fills.
    netlab.socks.start()
    proxy.wait_for_log(r"upstream tor up")
    result = curl_via(netlab, proxy, f"https://sni.example{unique_path()}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    proxy.wait_for_log(learned("sni.example"))
    entries = learned_table(netlab, admin)
    assert [(e["key"], e["state"], e["route"]) for e in entries] == [
        ("sni.example", "blocked", "tor")
    ]
