"""Issue 3, acceptance 4: what proxyd learned survives restarts; a corrupt file does not
stop it.

SIGTERM saves on the way out. SIGKILL loses whatever changed within the last
``save_debounce`` (200 ms here, 5 s by default): the kill test first waits until the
state file names the domain, which is the most a user can expect of a killed process.
The restarted daemon must then route the domain through the upstream without touching
the censor at all.
"""

from __future__ import annotations

import re
import signal

from lab_sites import SOCKS_IP
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
    wait_for_state,
)

from tests.support.proc import Proxyd

QUARANTINE_WARNING = re.compile(r"WARNING .*(corrupt|quarantin)")


def config(lab: NetLab) -> str:
    return proxyd_config([("tor", lab.socks.url)], **NO_RETEST_SOON)


def learn_sni_example(lab: NetLab, launch_proxyd: ProxydLauncher) -> Proxyd:
    proxy = launch_proxyd.start(config(lab))
    result = curl_via(lab, proxy, f"https://sni.example{unique_path()}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    proxy.wait_for_log(learned("sni.example"))
    return proxy


def assert_goes_straight_via_upstream(lab: NetLab, proxy: Proxyd) -> None:
    syns, hits = lab.censor.direct_syns("sni.example"), lab.censor.hits("sni.example")
    path = unique_path()
    result = curl_via(lab, proxy, f"https://sni.example{path}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    assert result.body == origin_answer("sni.example", path)
    lab.wait_for_origin(path=path, peer_ip=SOCKS_IP)
    assert lab.censor.direct_syns("sni.example") == syns
    assert lab.censor.hits("sni.example") == hits


def test_learned_route_survives_sigterm_and_restart(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    first = learn_sni_example(netlab, launch_proxyd)
    assert first.stop() == 0
    assert state_mentions(launch_proxyd.state_file, "sni.example")
    second = launch_proxyd.start(config(netlab))
    assert_goes_straight_via_upstream(netlab, second)


def test_learned_route_survives_sigkill_once_saved_and_restart(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    first = learn_sni_example(netlab, launch_proxyd)
    wait_for_state(launch_proxyd.state_file, "sni.example")
    first.signal(signal.SIGKILL)
    assert first.proc.wait(10) == -signal.SIGKILL
    second = launch_proxyd.start(config(netlab))
    assert_goes_straight_via_upstream(netlab, second)


def test_corrupt_state_file_is_quarantined_and_daemon_serves(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    state_file = launch_proxyd.state_file
    state_file.parent.mkdir(mode=0o700)
    garbage = b'{"version": 1, "entries": [{"key": "sni.exa\x00\xff truncated'
    state_file.write_bytes(garbage)
    proxy = launch_proxyd.start(config(netlab))
    proxy.wait_for_log(QUARANTINE_WARNING)
    quarantined = list(state_file.parent.glob(f"{state_file.name}.corrupt-*"))
    assert [path.read_bytes() for path in quarantined] == [garbage]
    path = unique_path()
    result = curl_via(netlab, proxy, f"https://open.example{path}")
    assert result.body == origin_answer("open.example", path)
    # and it still learns, into a fresh file
    result = curl_via(netlab, proxy, f"https://sni.example{unique_path()}")
    assert result.exit_code == 0, (result.stderr, proxy.log_text())
    wait_for_state(state_file, "sni.example")
