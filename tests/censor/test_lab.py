"""The lab reproduces each kind of censorship, proven with plain curl from the client."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from lab_netns import (
    Netns,
    lab_workdir,
    remove_stale_labs,
    run,
    wait_listening,
)
from lab_sites import BLOCK_PAGE_TEXT, CLIENT_IP, REDIRECT_LOCATION, SLOW_DELAY, SOCKS_IP
from netlab import NetLab

pytestmark = pytest.mark.censor

# curl exit codes
CONNECT_TIMEOUT = 28
RECV_FAILURE = 56
SSL_CONNECT_ERROR = 35


def curl(
    lab: NetLab, url: str, *args: str, socks: str | None = None, max_time: float = 3
) -> subprocess.CompletedProcess[str]:
    argv = ["curl", "-sS", "--max-time", str(max_time), "--cacert", str(lab.ca_bundle), *args]
    if socks is not None:
        argv += ["--socks5-hostname", socks]
    return lab.exec_client([*argv, url], timeout=max_time + 10)


def unique_path() -> str:
    return f"/{uuid.uuid4().hex}"


def socks_of(lab: NetLab) -> str:
    host, port = lab.socks.endpoint
    return f"{host}:{port}"


def test_open_site_answers_directly_over_http_and_https(netlab: NetLab) -> None:
    for scheme in ("http", "https"):
        path = unique_path()
        result = curl(netlab, f"{scheme}://open.example{path}")
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"origin open.example {path}\n"
        record = netlab.wait_for_origin(path=path)
        assert (record.peer_ip, record.scheme, record.host) == (CLIENT_IP, scheme, "open.example")


def test_sni_censor_resets_tls_before_the_origin_sees_a_request(netlab: NetLab) -> None:
    mark = netlab.origin_mark()
    hits = netlab.censor.hits("sni.example")
    result = curl(netlab, f"https://sni.example{unique_path()}")
    assert result.returncode == SSL_CONNECT_ERROR
    assert "reset" in result.stderr.lower()
    assert netlab.censor.hits("sni.example") == hits + 1
    assert netlab.origin_log(since=mark) == []


def test_sni_censor_leaves_plain_http_to_the_same_site_alone(netlab: NetLab) -> None:
    result = curl(netlab, "http://sni.example/")
    assert result.returncode == 0, result.stderr


def test_socks_server_reaches_sni_blocked_site_and_origin_sees_its_address(
    netlab: NetLab,
) -> None:
    syns, hits = netlab.censor.direct_syns("sni.example"), netlab.censor.hits("sni.example")
    path = unique_path()
    result = curl(netlab, f"https://sni.example{path}", socks=socks_of(netlab))
    assert result.returncode == 0, result.stderr
    assert netlab.wait_for_origin(path=path).peer_ip == SOCKS_IP
    assert netlab.censor.direct_syns("sni.example") == syns
    assert netlab.censor.hits("sni.example") == hits


def test_sni_censor_on_a_parent_name_hits_every_subdomain(netlab: NetLab) -> None:
    for label in "abcd":
        assert curl(netlab, f"https://{label}.many.example/").returncode == SSL_CONNECT_ERROR
    path = unique_path()
    result = curl(netlab, f"https://c.many.example{path}", socks=socks_of(netlab))
    assert result.returncode == 0, result.stderr
    assert netlab.wait_for_origin(path=path).host == "c.many.example"


def test_host_header_censor_resets_plain_http_but_not_https(netlab: NetLab) -> None:
    mark = netlab.origin_mark()
    blocked = curl(netlab, f"http://host.example{unique_path()}")
    assert blocked.returncode == RECV_FAILURE
    assert "reset" in blocked.stderr.lower()
    assert netlab.origin_log(since=mark) == []
    assert curl(netlab, "https://host.example/").returncode == 0


def test_blackholed_site_times_out_on_connect_but_works_via_socks(netlab: NetLab) -> None:
    syns = netlab.censor.direct_syns("hole.example")
    blocked = curl(netlab, "http://hole.example/", "--connect-timeout", "0.5")
    assert blocked.returncode == CONNECT_TIMEOUT
    assert netlab.censor.direct_syns("hole.example") > syns
    assert netlab.censor.hits("hole.example") > 0
    path = unique_path()
    assert curl(netlab, f"https://hole.example{path}", socks=socks_of(netlab)).returncode == 0
    assert netlab.wait_for_origin(path=path).peer_ip == SOCKS_IP


def test_poisoned_name_resolves_to_block_page_in_client_but_works_via_socks(
    netlab: NetLab,
) -> None:
    queries = netlab.censor.dns_queries("dns.example")
    resolved = netlab.exec_client(["getent", "ahostsv4", "dns.example"])
    assert resolved.stdout.split()[0] == netlab.block_page_ip
    assert netlab.censor.dns_queries("dns.example") > queries
    assert netlab.censor.hits("dns.example") > 0
    page = curl(netlab, "http://dns.example/")
    assert BLOCK_PAGE_TEXT in page.stdout
    assert netlab.isp_page_log()[-1].host == "dns.example"
    path = unique_path()
    assert curl(netlab, f"https://dns.example{path}", socks=socks_of(netlab)).returncode == 0
    assert netlab.wait_for_origin(path=path).local_ip == netlab.sites["dns.example"]


def test_redirect_censor_answers_302_to_the_block_page(netlab: NetLab) -> None:
    mark = netlab.origin_mark()
    result = curl(netlab, "http://page.example/article", "-i")
    assert result.stdout.startswith("HTTP/1.1 302")
    assert f"Location: {REDIRECT_LOCATION}" in result.stdout
    assert netlab.origin_log(since=mark) == []
    followed = curl(netlab, "http://page.example/", "-L")
    assert BLOCK_PAGE_TEXT in followed.stdout
    assert curl(netlab, "https://page.example/").returncode == 0


def test_down_site_fails_directly_and_via_socks(netlab: NetLab) -> None:
    assert curl(netlab, "http://down.example/", max_time=1).returncode == CONNECT_TIMEOUT
    via_socks = curl(netlab, "http://down.example/", socks=socks_of(netlab), max_time=1)
    assert via_socks.returncode != 0


def test_slow_site_answers_only_after_its_delay(netlab: NetLab) -> None:
    result = curl(netlab, "https://slow.example/", "-w", "%{time_total}")
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.rsplit("\n", 1)[-1]) >= SLOW_DELAY


@pytest.mark.parametrize(
    ("url", "curl_args"),
    [
        ("https://sni.example/", ()),
        ("http://host.example/", ()),
        ("http://hole.example/", ("--connect-timeout", "0.5")),
        ("http://dns.example/", ()),
        ("http://page.example/", ()),
    ],
)
def test_lifting_a_censor_rule_lets_the_client_reach_the_site_directly(
    netlab: NetLab, url: str, curl_args: tuple[str, ...]
) -> None:
    host = url.split("/")[2]
    path = unique_path()
    assert curl(netlab, url + path[1:], *curl_args).stdout != f"origin {host} {path}\n"
    netlab.censor.unblock(host)
    result = curl(netlab, url + path[1:])
    assert result.stdout == f"origin {host} {path}\n", result.stderr
    assert netlab.wait_for_origin(path=path).peer_ip == CLIENT_IP


def test_censor_counters_count_every_direct_attempt(netlab: NetLab) -> None:
    syns, hits = netlab.censor.direct_syns("sni.example"), netlab.censor.hits("sni.example")
    for _ in range(3):
        curl(netlab, "https://sni.example/")
    assert netlab.censor.direct_syns("sni.example") == syns + 3
    assert netlab.censor.hits("sni.example") == hits + 3


def test_second_socks_server_serves_until_it_is_stopped(netlab: NetLab) -> None:
    second = netlab.start_socks()
    assert second.address != SOCKS_IP
    path = unique_path()
    endpoint = f"{second.address}:{second.port}"
    assert curl(netlab, f"https://sni.example{path}", socks=endpoint).returncode == 0
    assert netlab.wait_for_origin(path=path).peer_ip == second.address
    second.stop()
    assert curl(netlab, "https://sni.example/", socks=endpoint).returncode != 0
    assert curl(netlab, "https://sni.example/", socks=socks_of(netlab)).returncode == 0


def test_blackholing_the_socks_server_cuts_the_client_off_from_it(netlab: NetLab) -> None:
    netlab.censor.blackhole(SOCKS_IP)
    socks = socks_of(netlab)
    result = curl(netlab, "https://open.example/", "--connect-timeout", "0.5", socks=socks)
    assert result.returncode == CONNECT_TIMEOUT
    assert netlab.censor.hits(SOCKS_IP) > 0


@pytest.mark.usefixtures("chromium")
def test_chromium_loads_an_open_https_page_and_is_reset_on_an_sni_blocked_one(
    netlab: NetLab, tmp_path: Path
) -> None:
    path = unique_path()
    open_page = netlab.chromium_argv(f"https://open.example{path}", tmp_path)
    opened = netlab.exec_client(open_page, timeout=60)
    assert f"origin open.example {path}" in opened.stdout
    blocked_page = netlab.chromium_argv("https://sni.example/", tmp_path)
    blocked = netlab.exec_client(blocked_page, timeout=60)
    assert "ERR_CONNECTION_RESET" in blocked.stderr


def test_lab_namespaces_hold_no_ipv6_address_that_could_change_under_a_browser(
    netlab: NetLab,
) -> None:
    # A link-local address finishing duplicate address detection is a network change
    # that makes Chromium abort a page load with ERR_NETWORK_CHANGED.
    for netns in (netlab.client, netlab.isp, netlab.internet):
        assert netns.ip("-6", "addr", "show").strip() == "", netns


def test_server_started_in_the_client_is_reachable_once_it_listens(netlab: NetLab) -> None:
    server = netlab.popen_client(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "8000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(server, "tcp", [("127.0.0.1", 8000)])
        assert curl(netlab, "http://127.0.0.1:8000/").returncode == 0
    finally:
        server.kill()
        server.wait()


def test_closing_a_lab_removes_its_namespaces_processes_and_files(netlab: NetLab) -> None:
    with NetLab() as other:
        names = [other.client.name, other.isp.name, other.internet.name]
        pids = [pid for name in names for pid in Netns(name).pids()]
        assert pids
        workdir = other.workdir
    listed = run(["ip", "netns", "list"])
    assert not any(name in listed for name in names)
    assert not any(Path("/proc", str(pid)).exists() for pid in pids)
    assert not workdir.exists()
    assert not any(Path("/etc/netns", name).exists() for name in names)
    assert curl(netlab, "http://open.example/").returncode == 0


def test_stale_lab_of_a_dead_process_is_removed_and_live_labs_are_kept(netlab: NetLab) -> None:
    exited = subprocess.Popen(["true"])
    exited.wait()
    stale = Netns(f"pxd{exited.pid}n0c")
    stale.create()
    stale.write_etc("hosts", "127.0.0.1 localhost\n")
    stale_workdir = lab_workdir(f"pxd{exited.pid}n0")
    stale_workdir.mkdir(exist_ok=True)
    try:
        remove_stale_labs()
        listed = run(["ip", "netns", "list"])
        left_behind = [p for p in (stale_workdir, Path("/etc/netns", stale.name)) if p.exists()]
    finally:
        stale.delete()
        shutil.rmtree(stale_workdir, ignore_errors=True)
    assert stale.name not in listed
    assert left_behind == []
    assert netlab.client.name in listed
    assert netlab.workdir.is_dir()
