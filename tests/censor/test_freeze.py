"""The "16 KB freeze" (DESIGN §4, weak evidence): the censor lets each HTTPS connection to
freeze.example carry 16 KiB from the server, then drops everything after it, FIN included.

A frozen connection cannot be rescued: its first bytes arrived, so the transparent retry
has nothing to replay, and the client gives up on its own (curl's --max-time here). What
proxyd learns is the shape: that much data, then silence until the client left. Two such
stalls within the weak window send the domain's next tunnels through the upstream, and
the one that carries more than a freeze lets through confirms the block; from then on
the domain goes straight through the upstream.
"""

from __future__ import annotations

import re

from lab_sites import CLIENT_IP, FREEZE_AFTER, SOCKS_IP
from netlab import NetLab
from proxyd_fixture import (
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    learned,
    proxyd_config,
    retest_direct,
    unique_path,
)

from tests.support.proc import Proxyd

SIZE = 200_000  # far past the freeze
CURL_GAVE_UP = 28  # curl: operation timed out
SUSPECTED = re.compile(r"freeze\.example: a direct tunnel froze after \d+ bytes")


def pattern(size: int) -> str:
    """What the lab origin's /bytes/N answers."""
    return ("0123456789abcdef" * (size // 16 + 1))[:size]


def learn_the_freeze(netlab: NetLab, proxy: Proxyd) -> None:
    """One frozen visit, then the control through the upstream: freeze.example blocked."""
    path = f"/bytes/{SIZE}?{unique_path()[1:]}"
    mark = netlab.origin_mark()
    frozen = curl_via(netlab, proxy, f"https://freeze.example{path}", max_time=3)
    assert frozen.exit_code == CURL_GAVE_UP, (frozen.stderr, proxy.log_text())
    # The first TLS record of the answer (16 KiB) never arrives whole: curl has no
    # byte of it, though the request reached the origin directly.
    assert frozen.http_connect == 200 and len(frozen.body) < FREEZE_AFTER
    netlab.wait_for_origin(host="freeze.example", path=path, peer_ip=CLIENT_IP, since=mark)
    proxy.wait_for_log(SUSPECTED)
    assert not learned("freeze.example").search(proxy.log_text())  # no control yet
    path = f"/bytes/{SIZE}?{unique_path()[1:]}"
    mark = netlab.origin_mark()
    control = curl_via(netlab, proxy, f"https://freeze.example{path}")
    assert control.exit_code == 0, (control.stderr, proxy.log_text())
    assert control.body == pattern(SIZE)
    # The control went through the upstream, not direct.
    netlab.wait_for_origin(host="freeze.example", path=path, peer_ip=SOCKS_IP, since=mark)
    match = proxy.wait_for_log(learned("freeze.example"))
    assert match.group(1) == "stall_after_data" and match.group(2) == "tor"


def test_frozen_site_moves_to_the_upstream_after_one_stall_and_is_then_learned_blocked(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    config = proxyd_config([("tor", netlab.socks.url)], stall_after="1s", **NO_RETEST_SOON)
    proxy = launch_proxyd.start(config)
    learn_the_freeze(netlab, proxy)
    syns = netlab.censor.direct_syns("freeze.example")
    again = curl_via(netlab, proxy, f"https://freeze.example/bytes/{SIZE}?{unique_path()[1:]}")
    assert again.exit_code == 0 and again.body == pattern(SIZE)
    assert netlab.censor.direct_syns("freeze.example") == syns  # never direct again


def test_retest_transfers_past_the_freeze_before_the_domain_goes_back_to_direct(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    # A handshake-only re-test would pass the freeze and send the domain back to break.
    config = proxyd_config(
        [("tor", netlab.socks.url)], stall_after="1s", retest_initial="1s", retest_max="2s"
    )
    proxy = launch_proxyd.start(config, "--log-level", "debug")
    learn_the_freeze(netlab, proxy)
    proxy.wait_for_log(re.compile(r"retest freeze\.example: still blocked \(stall_after_data\)"))
    assert not retest_direct("freeze.example").search(proxy.log_text())
    netlab.censor.unblock("freeze.example")
    proxy.wait_for_log(retest_direct("freeze.example"))
    path = f"/bytes/{SIZE}?{unique_path()[1:]}"
    mark = netlab.origin_mark()
    direct = curl_via(netlab, proxy, f"https://freeze.example{path}")
    assert direct.exit_code == 0 and direct.body == pattern(SIZE)
    netlab.wait_for_origin(host="freeze.example", path=path, peer_ip=CLIENT_IP, since=mark)


def test_open_site_answering_the_same_bytes_is_never_suspected(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    config = proxyd_config([("tor", netlab.socks.url)], stall_after="1s", **NO_RETEST_SOON)
    proxy = launch_proxyd.start(config)
    for _ in range(3):
        path = f"/bytes/{SIZE}?{unique_path()[1:]}"
        mark = netlab.origin_mark()
        done = curl_via(netlab, proxy, f"https://open.example{path}")
        assert done.exit_code == 0 and done.body == pattern(SIZE)
        netlab.wait_for_origin(host="open.example", path=path, peer_ip=CLIENT_IP, since=mark)
    assert "froze" not in proxy.log_text()


# A client keeping a TLS connection through proxyd alive after one answer, then dropping it
# while idle, as browsers do: the answer fits a freeze's size and the silence is long.
IDLE_CLIENT = """
import socket, ssl, sys, time
proxy_host, proxy_port, host, ca, size, idle = sys.argv[1:]
raw = socket.create_connection((proxy_host, int(proxy_port)))
raw.sendall(f"CONNECT {host}:443 HTTP/1.1\\r\\nHost: {host}:443\\r\\n\\r\\n".encode())
assert raw.recv(4096).startswith(b"HTTP/1.1 200")
tls = ssl.create_default_context(cafile=ca).wrap_socket(raw, server_hostname=host)
tls.sendall(f"GET /bytes/{size} HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n".encode())
answer = b""
while len(answer.partition(b"\\r\\n\\r\\n")[2]) < int(size):
    answer += tls.recv(65536)
time.sleep(float(idle))  # the idle spell before the client gives the connection up
tls.close()
print("dropped")
"""


def test_open_site_whose_kept_alive_connection_the_client_drops_while_idle_is_never_suspected(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    config = proxyd_config([("tor", netlab.socks.url)], stall_after="1s", **NO_RETEST_SOON)
    proxy = launch_proxyd.start(config, "--log-level", "debug")
    host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
    argv = ["python3", "-c", IDLE_CLIENT, host, port, "open.example", str(netlab.ca_bundle)]
    done = netlab.exec_client([*argv, str(FREEZE_AFTER + 4000), "2"], timeout=30)
    assert done.stdout.strip() == "dropped", (done.stderr, proxy.log_text())
    # The tunnel's end was judged (its FIN acknowledged) before the next visit is planned.
    proxy.wait_for_log(re.compile(r"open\.example: .*acknowledged our FIN: not a freeze"))
    path = f"/bytes/{SIZE}?{unique_path()[1:]}"
    mark = netlab.origin_mark()
    again = curl_via(netlab, proxy, f"https://open.example{path}")
    assert again.exit_code == 0 and again.body == pattern(SIZE)
    netlab.wait_for_origin(host="open.example", path=path, peer_ip=CLIENT_IP, since=mark)
    assert "froze" not in proxy.log_text()
