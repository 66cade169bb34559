"""Issue 14: transparent mode on the home router, with real netfilter in namespaces.

The lab's client namespace is the router (proxyd runs there, with the rules `proxyd
transparent apply` puts in place); a LAN device behind it has no proxy settings and asks
the ISP's poisoning resolver. Every assertion is about what the device, the origin, the
echo servers or proxyd's own counters saw.

Without the transparent listener the redirected connections find nothing on port 8081
and fail; without the rules everything goes direct and the blocked sites stay blocked;
without the exclusions the router's own services and nameless traffic would land in
proxyd instead of where the device sent them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lab_lan import (
    DEVICE_IP,
    LAN_INTERFACE,
    LAN_NETWORK,
    NEIGHBOUR_IP,
    ROUTER_LAN_IP,
    Lan,
)
from lab_netns import wait_listening
from lab_sites import BLOCK_PAGE_IP, CLIENT_IP, SOCKS_IP
from netlab import NetLab
from proxyd_fixture import ProxydLauncher, learned, origin_answer, proxyd_config, unique_path
from test_metrics_lab import scrape, value

from tests.integration.test_admin import ADMIN_LISTENING
from tests.support.proc import Proxyd

TRANSPARENT_PORT = 8081
CHROMIUM_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)


@dataclass
class Router:
    lab: NetLab
    lan: Lan
    proxy: Proxyd
    admin: str
    config: Path
    backend: str

    def transparent(self, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "proxyd", "transparent", action, "-c", str(self.config)]
        argv += [f"--{self.backend}", "--lan", LAN_INTERFACE, *args]
        return self.lan.exec_router(argv)

    def metric(self, name: str, **labels: str) -> float:
        return value(scrape(self.lab, self.admin), name, **labels)

    def transparent_connections(self) -> float:
        return self.metric("proxyd_connections_total", protocol="transparent")


def router_config(lab: NetLab, *, nameless: str = "direct", owner: str = "") -> str:
    head = "\n".join(
        [
            'listen = ["127.0.0.1:0"]',
            'admin = "127.0.0.1:0"',
            f'allow = ["127.0.0.0/8", "{LAN_NETWORK}"]',
            "access_log = true",
            "",
        ]
    )
    transparent = "\n".join(
        [
            "[transparent]",
            f'listen = ["0.0.0.0:{TRANSPARENT_PORT}"]',
            f'nameless = "{nameless}"',
            f'owner = "{owner}"',
            "",
        ]
    )
    return head + proxyd_config([("tor", lab.socks.url)]) + transparent


def start_router(
    lab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path, backend: str, **settings: str
) -> Router:
    lan = lab.lan()
    proxy = launch_proxyd.start(router_config(lab, **settings))
    match = proxy.wait_for_log(ADMIN_LISTENING)
    assert proxy.config_path is not None
    router = Router(lab, lan, proxy, f"http://{match[1]}:{match[2]}", proxy.config_path, backend)
    applied = router.transparent("apply")
    assert applied.returncode == 0, applied.stderr
    return router


@pytest.fixture
def router(netlab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path) -> Iterator[Router]:
    before = netlab.lan().ruleset()
    router = start_router(netlab, launch_proxyd, tmp_path, "nft", owner="0")
    try:
        yield router
    finally:
        removed = router.transparent("remove")
        assert removed.returncode == 0, removed.stderr
        assert _rules_only(router.lan.ruleset()) == _rules_only(before)


def device_curl(
    lan: Lan, url: str, *args: str, max_time: float = 10
) -> subprocess.CompletedProcess[str]:
    argv = ["curl", "-sS", "--max-time", str(max_time), "--cacert", str(lan.workdir / "ca.pem")]
    return lan.exec_device([*argv, *args, url], timeout=max_time + 10)


# -- 1, 2: every kind of blocked site on the first visit, by name -----------------------

FIRST_VISITS = [
    ("https", "open.example", CLIENT_IP),
    ("http", "open.example", CLIENT_IP),
    ("https", "sni.example", SOCKS_IP),
    ("https", "b.many.example", SOCKS_IP),
    ("http", "host.example", SOCKS_IP),
    ("https", "hole.example", SOCKS_IP),
    ("http", "page.example", SOCKS_IP),
    ("https", "blog.example", SOCKS_IP),
    ("http", "blog.example", SOCKS_IP),
]


@pytest.mark.parametrize(("scheme", "host", "peer"), FIRST_VISITS)
def test_lan_device_without_proxy_settings_gets_the_first_visit_rescued(
    netlab: NetLab, router: Router, scheme: str, host: str, peer: str
) -> None:
    path = unique_path()
    mark = netlab.origin_mark()
    done = device_curl(router.lan, f"{scheme}://{host}{path}")
    assert done.returncode == 0, (done.stderr, router.proxy.log_text())
    assert done.stdout == origin_answer(host, path)
    netlab.wait_for_origin(host=host, path=path, peer_ip=peer, since=mark)
    assert router.transparent_connections() >= 1


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_dns_poisoned_name_is_reached_by_its_sni_or_host(
    netlab: NetLab, router: Router, scheme: str
) -> None:
    resolved = router.lan.exec_device(["getent", "ahostsv4", "dns.example"])
    assert resolved.stdout.split()[0] == BLOCK_PAGE_IP  # the device was lied to
    path = unique_path()
    mark = netlab.origin_mark()
    done = device_curl(router.lan, f"{scheme}://dns.example{path}")
    assert done.returncode == 0, (done.stderr, router.proxy.log_text())
    assert done.stdout == origin_answer("dns.example", path)
    netlab.wait_for_origin(host="dns.example", path=path, peer_ip=SOCKS_IP, since=mark)


@pytest.mark.usefixtures("chromium")
@pytest.mark.parametrize(("host", "peer"), [("sni.example", SOCKS_IP), ("open.example", CLIENT_IP)])
def test_chromium_on_the_lan_loads_pages_with_no_proxy_configured(
    netlab: NetLab, router: Router, tmp_path: Path, host: str, peer: str
) -> None:
    path = unique_path()
    argv = netlab.chromium_argv(f"https://{host}{path}", tmp_path / "profile", *CHROMIUM_FLAGS)
    page = router.lan.exec_device(argv, timeout=60)
    assert f"origin {host} {path}" in page.stdout, (page.stderr[-2000:], router.proxy.log_text())
    netlab.wait_for_origin(host=host, path=path, peer_ip=peer)


def test_proxyd_why_explains_a_name_learned_from_a_transparent_connection(
    netlab: NetLab, router: Router
) -> None:
    done = device_curl(router.lan, f"https://sni.example{unique_path()}")
    assert done.returncode == 0, done.stderr
    router.proxy.wait_for_log(learned("sni.example"))
    admin = router.admin.removeprefix("http://")
    why = router.lan.exec_router(
        [sys.executable, "-m", "proxyd", "why", "sni.example", "--admin", admin]
    )
    assert why.returncode == 0, why.stderr
    assert "sni.example:443 -> tor" in why.stdout, why.stdout
    assert "learned" in why.stdout


# -- 3: QUIC is rejected, not dropped ------------------------------------------------------


def test_udp_443_from_the_lan_is_rejected_at_once(router: Router) -> None:
    address, echo = router.lan.start_echo(443, "udp")
    probe = (
        "import socket,time\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(5)\n"
        f"s.connect(('{address}',443));t=time.monotonic();s.send(b'quic?')\n"
        "try:\n s.recv(100);print('answered')\n"
        "except ConnectionRefusedError:print('refused',time.monotonic()-t)\n"
        "except TimeoutError:print('dropped')\n"
    )
    done = router.lan.exec_device([sys.executable, "-c", probe], timeout=20)
    verdict, *elapsed = done.stdout.split()
    assert verdict == "refused", (done.stdout, done.stderr)
    assert float(elapsed[0]) < 0.2
    # without the rule the echo server would have answered
    assert "peer" not in echo.log_path.read_text()


@pytest.mark.usefixtures("chromium")
def test_chromium_that_knows_the_site_speaks_http3_loads_it_over_tcp_within_a_second(
    netlab: NetLab, router: Router, tmp_path: Path
) -> None:
    flags = (*CHROMIUM_FLAGS, "--enable-quic")
    # A first visit teaches Chromium (Alt-Svc) that open.example offers HTTP/3 on 443 ...
    learn = tmp_path / "learn"
    page = router.lan.exec_device(
        netlab.chromium_argv("https://open.example/alt-svc/", learn, *flags), timeout=60
    )
    assert "origin open.example /alt-svc/" in page.stdout, page.stderr[-2000:]
    state_file = Path("Default", "Network Persistent State")
    state = json.loads((learn / state_file).read_text())
    properties = state["net"]["http_server_properties"]
    properties.pop("broken_alternative_services", None)  # what that visit found out
    assert '"quic"' in json.dumps(properties["servers"])
    # ... so a profile holding that knowledge tries QUIC first; the router rejects it.
    timings = {}
    for profile in ("knows-h3", "fresh"):
        (tmp_path / profile / "Default").mkdir(parents=True)
        if profile == "knows-h3":
            (tmp_path / profile / state_file).write_text(json.dumps(state))
        path = unique_path()
        started = time.monotonic()
        page = router.lan.exec_device(
            netlab.chromium_argv(f"https://open.example{path}", tmp_path / profile, *flags),
            timeout=60,
        )
        timings[profile] = time.monotonic() - started
        assert f"origin open.example {path}" in page.stdout, page.stderr[-2000:]
        netlab.wait_for_origin(path=path, peer_ip=CLIENT_IP)  # the origin speaks only TCP
    assert timings["knows-h3"] < timings["fresh"] + 1.0, timings
    after = (tmp_path / "knows-h3" / state_file).read_text()
    assert "broken_alternative_services" in after  # it did try QUIC, and gave up on it


# -- 4: the router's own services, the LAN, and no loop ------------------------------------


def test_router_services_and_lan_neighbours_are_reached_without_proxyd(
    router: Router, tmp_path: Path
) -> None:
    lan = router.lan
    served = tmp_path / "www"
    served.mkdir()
    (served / "index.txt").write_text("router page\n")
    http_server = [sys.executable, "-m", "http.server", "--directory", str(served)]
    before = router.transparent_connections()
    # The router's LAN address, its WAN address (only "local to the router" covers that
    # one), and another host on the LAN.
    targets = ((lan.router, ROUTER_LAN_IP), (lan.router, CLIENT_IP), (lan.neighbour, NEIGHBOUR_IP))
    for netns, address in targets:
        server = lan.start_server(netns, f"http-{address}", [*http_server, "-b", address, "80"])
        try:
            wait_listening(server, "tcp", [(address, 80)])
            done = device_curl(lan, f"http://{address}/index.txt")
            assert done.stdout == "router page\n", (done.stderr, router.proxy.log_text())
            # the server saw the device itself: nothing in between
            assert f"{DEVICE_IP} - -" in server.log_path.read_text()
        finally:
            server.stop()
    assert router.transparent_connections() == before


def test_a_name_pointing_at_the_router_never_reaches_its_services(
    router: Router, tmp_path: Path
) -> None:
    lan = router.lan
    http_server = [sys.executable, "-m", "http.server", "--directory", str(tmp_path)]
    server = lan.start_server(lan.router, "http-router", [*http_server, "-b", ROUTER_LAN_IP, "80"])
    wait_listening(server, "tcp", [(ROUTER_LAN_IP, 80)])
    # An outside address, a Host naming the router: redirected, and refused by protect_local.
    done = device_curl(lan, "http://198.18.2.10/", "-H", f"Host: {ROUTER_LAN_IP}")
    assert done.returncode != 0
    assert "GET" not in server.log_path.read_text()
    server.stop()


def test_connections_straight_to_the_listener_are_refused_and_proxyd_never_dials_itself(
    netlab: NetLab, router: Router
) -> None:
    before = router.metric("proxyd_connections_total", protocol="transparent")
    done = device_curl(
        router.lan, f"http://{ROUTER_LAN_IP}:{TRANSPARENT_PORT}/", "-H", "Host: open.example"
    )
    assert done.returncode != 0  # reset: going "direct" there would be proxyd itself
    path = unique_path()
    visit = device_curl(router.lan, f"https://open.example{path}")
    assert visit.stdout == origin_answer("open.example", path)
    # Exactly the device's one connection came in: proxyd's own dial, with the rules in
    # place, went out to the origin and never back into the listener.
    assert router.metric("proxyd_connections_total", protocol="transparent") == before + 1
    netlab.wait_for_origin(path=path, peer_ip=CLIENT_IP)


# -- 5: nameless traffic goes where it was going ---------------------------------------------


def test_tls_without_sni_goes_to_its_original_address(netlab: NetLab, router: Router) -> None:
    # An IP literal in the URL: curl sends no SNI. sni.example's own address, so the
    # censor (which looks for the name) lets it through: proxyd must not reroute it.
    address = netlab.sites["sni.example"]
    path = unique_path()
    mark = netlab.origin_mark()
    done = device_curl(router.lan, f"https://{address}{path}", "-k", "-H", "Host: sni.example")
    assert done.returncode == 0, (done.stderr, router.proxy.log_text())
    assert done.stdout == origin_answer("sni.example", path)
    record = netlab.wait_for_origin(path=path, since=mark)
    assert (record.peer_ip, record.local_ip) == (CLIENT_IP, address)
    assert (
        router.metric("proxyd_requests_total", protocol="transparent", route="direct", outcome="ok")
        >= 1
    )


def test_a_non_http_protocol_on_port_80_reaches_its_original_destination(router: Router) -> None:
    address, echo = router.lan.start_echo(80)
    before = router.transparent_connections()
    client = (
        "import socket\n"
        f"s=socket.create_connection(('{address}',80),timeout=5)\n"
        "s.sendall(b'\\x00\\x01 not http\\n');print(s.recv(100))\n"
    )
    done = router.lan.exec_device([sys.executable, "-c", client], timeout=20)
    assert done.stdout.strip() == repr(b"\x00\x01 not http\n"), done.stderr
    assert f"peer {CLIENT_IP}" in echo.log_path.read_text()
    assert router.transparent_connections() == before + 1  # it did go through proxyd


def test_nameless_connections_are_refused_when_configured(
    netlab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path
) -> None:
    router = start_router(netlab, launch_proxyd, tmp_path, "nft", nameless="refuse")
    try:
        address, echo = router.lan.start_echo(80)
        client = (
            "import socket\n"
            f"s=socket.create_connection(('{address}',80),timeout=5)\n"
            "s.sendall(b'\\x00\\x01 not http\\n')\n"
            "try:print(s.recv(100))\n"
            "except ConnectionResetError:print('reset')\n"
        )
        done = router.lan.exec_device([sys.executable, "-c", client], timeout=20)
        assert done.stdout.strip() == "reset", done.stderr
        assert "peer" not in echo.log_path.read_text()
    finally:
        router.transparent("remove")


# -- 6: both backends apply and remove cleanly ------------------------------------------------


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_rules_apply_twice_and_remove_to_the_ruleset_before(
    netlab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path, backend: str
) -> None:
    before = netlab.lan().ruleset()
    router = start_router(netlab, launch_proxyd, tmp_path, backend, owner="0")
    assert router.transparent("apply").returncode == 0  # again: replaces, never doubles
    applied = router.lan.ruleset()
    assert applied != before
    path = unique_path()
    done = device_curl(router.lan, f"https://sni.example{path}")
    assert done.stdout == origin_answer("sni.example", path), done.stderr
    netlab.wait_for_origin(path=path, peer_ip=SOCKS_IP)
    removed = router.transparent("remove")
    assert removed.returncode == 0, removed.stderr
    assert _rules_only(router.lan.ruleset()) == _rules_only(before)
    # and with the rules gone the device is on its own again: the censor resets it
    blocked = device_curl(router.lan, f"https://sni.example{unique_path()}")
    assert blocked.returncode != 0


def _rules_only(ruleset: str) -> list[str]:
    """The rules and proxyd's own tables and chains: iptables-nft leaves the built-in
    chains it once created (empty) behind, which legacy iptables never shows either."""
    uncounted = re.sub(r"counter packets \d+ bytes \d+", "counter", ruleset)
    lines = [line.strip() for line in uncounted.splitlines()]
    kept = [
        line
        for line in lines
        if line and not line.startswith(("table ip ", "chain ", "type ", "}"))
    ]
    return kept + [line for line in lines if "proxyd" in line.lower()]
