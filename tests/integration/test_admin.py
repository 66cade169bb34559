"""The admin listener: in-process for its policies, then on a real daemon with real clients
(aiohttp, curl, Node.js for the PAC file, headless Chromium for the status page)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxyd.access._policy import AccessPolicy
from proxyd.config._config import LearningConfig
from proxyd.learning._detect import Reason
from proxyd.learning._stats import Stats
from proxyd.learning._table import DomainState, Evidence, Scope, Source, State
from proxyd.ops import AdminContext, AdminServer
from proxyd.ops._cli_routes import routes_command
from proxyd.outbound._upstream_set import UpstreamStatus
from proxyd.routing._learned import LearnedRoutes
from tests.support.origin import OriginServer
from tests.support.proc import Proxyd
from tests.unit.ops.test_pac import evaluate_pac, needs_node

ADMIN_LISTENING = re.compile(r"admin listening on (\S+):(\d+)")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class Microsocks:
    """A real SOCKS5 server on loopback: an upstream whose health the test controls."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["microsocks", "-i", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: accepting(self.port), what="microsocks")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def socks() -> Iterator[Microsocks]:
    server = Microsocks()
    yield server
    server.stop()


def upstream_config(port: int, name: str = "socks", top: str = "") -> str:
    return top + (
        f'[[upstream]]\nname = "{name}"\nurl = "socks5h://127.0.0.1:{port}"\n'
        'health_interval = "300ms"\n'
    )


class AdminDaemon:
    def __init__(self, proc: Proxyd) -> None:
        self.proc = proc
        match = proc.wait_for_log(ADMIN_LISTENING)
        self.admin = f"http://{match.group(1)}:{match.group(2)}"
        self.admin_port = int(match.group(2))


@pytest.fixture
def daemon(tmp_path: Path, socks: Microsocks) -> Iterator[AdminDaemon]:
    proc = Proxyd(["--admin", "127.0.0.1:0"], config=upstream_config(socks.port), tmp_path=tmp_path)
    yield AdminDaemon(proc)
    assert proc.stop() == 0
    proc.assert_clean_log()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def healthz(http: aiohttp.ClientSession, base: str) -> tuple[int, str]:
    async with http.get(f"{base}/healthz") as resp:
        return resp.status, await resp.text()


async def wait_health(http: aiohttp.ClientSession, base: str, status: int) -> str:
    deadline = time.monotonic() + 15
    while True:
        got, text = await healthz(http, base)
        if got == status:
            return text
        assert time.monotonic() < deadline, f"/healthz stayed {got}: {text}"
        await asyncio.sleep(0.1)


# --- in process: the policies of the app, with a real learned table -----------------------


@pytest.fixture
async def learned(tmp_path: Path) -> AsyncIterator[LearnedRoutes]:
    routes = LearnedRoutes(LearningConfig(), tmp_path / "state", connect_timeout=2.0)
    yield routes
    await routes.close()


async def serve(ctx: AdminContext) -> tuple[AdminServer, str]:
    server = AdminServer(ctx)
    sock = socket.create_server(("127.0.0.1", 0))
    await server.start(sock)
    host, port = server.addresses[0]
    return server, f"http://{host}:{port}"


def context(learned: LearnedRoutes | None = None, **kwargs: Any) -> AdminContext:
    ctx = AdminContext(stats=Stats(), proxy_addresses=lambda: [("127.0.0.1", 8080)], **kwargs)
    ctx.learning = learned
    return ctx


async def test_clients_outside_the_allow_list_are_refused(http: aiohttp.ClientSession) -> None:
    lan_only = AccessPolicy([ipaddress.ip_network("10.0.0.0/8")], {})
    server, base = await serve(context(client_allowed=lan_only.client_allowed))
    try:
        for path in ("/", "/metrics", "/healthz", "/api/routes", "/proxy.pac"):
            async with http.get(base + path) as resp:
                assert resp.status == 403, path
    finally:
        await server.stop()


async def test_token_is_required_everywhere_but_healthz(http: aiohttp.ClientSession) -> None:
    server, base = await serve(context(token=lambda: "s3cret"))
    try:
        async with http.get(f"{base}/api/routes") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        bad = {"Authorization": "Bearer wrong"}
        async with http.get(f"{base}/metrics", headers=bad) as resp:
            assert resp.status == 401
        good = {"Authorization": "Bearer s3cret"}
        async with http.get(f"{base}/metrics", headers=good) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/proxy.pac?token=s3cret") as resp:
            assert resp.status == 200  # a browser's PAC setting can only carry a URL
        assert (await healthz(http, base))[0] == 200
    finally:
        await server.stop()


async def test_host_names_a_rebinding_attack_would_use_are_refused(
    http: aiohttp.ClientSession,
) -> None:
    server, base = await serve(context())
    try:
        for host, status in [
            ("attacker.example:9477", 421),
            ("127.0.0.1:9477", 200),
            ("router.lan", 200),
            ("[::1]:9477", 200),
            ("localhost", 200),
        ]:
            async with http.get(f"{base}/api/routes", headers={"Host": host}) as resp:
                assert resp.status == status, host
    finally:
        await server.stop()


async def test_healthz_gives_every_reason_for_being_unhealthy(
    http: aiohttp.ClientSession, learned: LearnedRoutes
) -> None:
    down = UpstreamStatus("tor", "socks5h://127.0.0.1:9050", False, None, 1.0, "refused", True)
    listening: list[tuple[str, int]] = [("127.0.0.1", 8080)]
    ctx = context(learned, upstream_status=lambda: [down])
    ctx.proxy_addresses = lambda: listening
    server, base = await serve(ctx)
    try:
        status, text = await healthz(http, base)
        assert status == 503
        assert text == "every upstream is down: tor\n"
        ctx.upstream_status = lambda: [down, dataclasses.replace(down, name="b", up=True)]
        assert await healthz(http, base) == (200, "ok\n")
        ctx.stats.state_saved(False)
        now = time.time()
        for n in range(5):  # outage symptoms on many unrelated domains: the uplink is down
            learned.table.record_failure(f"site{n}.example", "direct", Reason.CONNECT_TIMEOUT, now)
        listening.clear()
        status, text = await healthz(http, base)
        assert status == 503
        assert text.splitlines() == [
            "the proxy is not listening",
            "the last state save failed",
            "learning paused: the network looks down",
        ]
    finally:
        await server.stop()


async def test_status_page_escapes_names_from_the_network(
    http: aiohttp.ClientSession, learned: LearnedRoutes
) -> None:
    hostile = '<img src=x onerror="alert(1)">.example'
    learned.table._entries[hostile] = DomainState(  # as a crafted state file could hold it
        key=hostile,
        scope=Scope.DOMAIN,
        state=State.BLOCKED,
        route="tor",
        probe_host=hostile,
        since=time.time(),
        source=Source.LEARNED,
        evidence=(Evidence(Reason.CONNECTION_RESET, "direct", time.time()),),
    )
    server, base = await serve(context(learned))
    try:
        async with http.get(base + "/") as resp:
            page = await resp.text()
            assert resp.status == 200
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert "<img" not in page
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.example" in page
        assert "connection_reset" in page
    finally:
        await server.stop()


# --- the daemon ------------------------------------------------------------------------


async def test_routes_api_lists_forces_and_forgets_and_the_router_follows(
    daemon: AdminDaemon, http: aiohttp.ClientSession
) -> None:
    base = daemon.admin
    async with http.put(f"{base}/api/routes/Works.Example", json={"route": "direct"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["key"] == "works.example"
    async with http.put(f"{base}/api/routes/blocked.example", json={"route": "socks"}) as resp:
        assert (await resp.json())["state"] == "blocked"
    for bad_body, status in [({"route": "nowhere"}, 400), ({"x": 1}, 400)]:
        async with http.put(f"{base}/api/routes/a.example", json=bad_body) as resp:
            assert resp.status == status
    async with http.put(f"{base}/api/routes/not a domain", json={"route": "direct"}) as resp:
        assert resp.status == 400

    listed = await get_json(http, f"{base}/api/routes")
    assert [e["key"] for e in listed["entries"]] == ["blocked.example", "works.example"]
    blocked = await get_json(http, f"{base}/api/routes?state=blocked")
    assert [(e["key"], e["route"], e["source"]) for e in blocked["entries"]] == [
        ("blocked.example", "socks", "forced")
    ]
    found = await get_json(http, f"{base}/api/routes?q=works")
    assert [e["key"] for e in found["entries"]] == ["works.example"]

    why = await get_json(http, f"{base}/api/explain?host=www.blocked.example")
    assert why["routes"] == ["socks"]
    assert "learned: blocked.example blocked" in why["why"]

    async with http.delete(f"{base}/api/routes/blocked.example") as resp:
        assert resp.status == 200
    async with http.delete(f"{base}/api/routes/blocked.example") as resp:
        assert resp.status == 404
    listed = await get_json(http, f"{base}/api/routes")
    assert [e["key"] for e in listed["entries"]] == ["works.example"]
    why = await get_json(http, f"{base}/api/explain?host=www.blocked.example")
    assert "learned" not in why["why"]
    assert why["routes"][0] == "direct"


async def test_upstreams_and_health_follow_the_upstream_going_down(
    tmp_path: Path, socks: Microsocks, http: aiohttp.ClientSession
) -> None:
    proc = Proxyd(["--admin", "127.0.0.1:0"], config=upstream_config(socks.port), tmp_path=tmp_path)
    try:
        base = AdminDaemon(proc).admin
        assert await wait_health(http, base, 200) == "ok\n"
        (upstream,) = (await get_json(http, f"{base}/api/upstreams"))["upstreams"]
        assert upstream["name"] == "socks" and upstream["up"] is True
        assert upstream["latency"] > 0
        socks.stop()
        assert await wait_health(http, base, 503) == "every upstream is down: socks\n"
        (upstream,) = (await get_json(http, f"{base}/api/upstreams"))["upstreams"]
        assert upstream["up"] is False and upstream["error"]
    finally:
        assert proc.stop() == 0
    proc.assert_clean_log()


async def test_metrics_exposition_reads_live_state(
    daemon: AdminDaemon, http: aiohttp.ClientSession
) -> None:
    await wait_health(http, daemon.admin, 200)
    async with http.put(f"{daemon.admin}/api/routes/a.example", json={"route": "socks"}):
        pass
    async with http.get(f"{daemon.admin}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    assert 'proxyd_learned_domains{source="forced",state="blocked"} 1.0' in text
    assert 'proxyd_upstream_up{upstream="socks"} 1.0' in text
    assert re.search(r'proxyd_build_info\{python="[\d.]+",version="[\d.]+"\} 1\.0', text)
    assert "process_open_fds" in text


def test_proxy_refuses_to_relay_requests_to_its_own_admin_listener(
    daemon: AdminDaemon,
) -> None:
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", daemon.proc.url,
         f"{daemon.admin}/healthz"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.stdout == "403"


def test_admin_port_in_use_stops_startup_with_a_clear_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = Proxyd(["--admin", f"127.0.0.1:{port}"], tmp_path=tmp_path, wait=False)
        assert proc.proc.wait(30) != 0
        proc.stop()
    assert f"cannot listen on 127.0.0.1:{port}" in proc.log_text()
    assert "proxyd listening on" not in proc.log_text()


@needs_node
async def test_proxy_pac_from_the_daemon_answers_in_a_javascript_engine(
    daemon: AdminDaemon, http: aiohttp.ClientSession
) -> None:
    async with http.put(f"{daemon.admin}/api/routes/works.example", json={"route": "direct"}):
        pass
    async with http.put(f"{daemon.admin}/api/routes/blocked.example", json={"route": "socks"}):
        pass
    async with http.get(f"{daemon.admin}/proxy.pac") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/x-ns-proxy-autoconfig"
        pac = await resp.text()
    proxy = f"PROXY 127.0.0.1:{daemon.proc.port}; SOCKS5 127.0.0.1:{daemon.proc.port}"
    assert evaluate_pac(
        pac, ["www.works.example", "blocked.example", "unknown.example", "192.168.0.10", "nas"]
    ) == {
        "www.works.example": "DIRECT",
        "blocked.example": proxy,
        "unknown.example": proxy,
        "192.168.0.10": "DIRECT",
        "nas": "DIRECT",
    }
    async with http.get(f"{daemon.admin}/proxy.pac", headers={"Host": "localhost:1"}) as resp:
        assert f"PROXY localhost:{daemon.proc.port}" in await resp.text()


def chromium(url: str, user_data: Path, *action: str) -> subprocess.CompletedProcess[str]:
    argv = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-sync", f"--user-data-dir={user_data}", "--enable-logging=stderr", "--v=0",
        "--window-size=1280,1000", *action, url,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
async def test_status_page_renders_in_headless_chromium_without_console_errors(
    daemon: AdminDaemon, http: aiohttp.ClientSession, origin: OriginServer, tmp_path: Path
) -> None:
    await wait_health(http, daemon.admin, 200)
    async with http.put(f"{daemon.admin}/api/routes/blocked.example", json={"route": "socks"}):
        pass
    async with http.put(f"{daemon.admin}/api/routes/works.example", json={"route": "direct"}):
        pass
    for _ in range(3):
        async with http.get(f"{origin.url}/x", proxy=daemon.proc.url) as resp:
            assert resp.status == 200

    shot = tmp_path / "status-page.png"
    out = chromium(daemon.admin + "/", tmp_path / "chromium", f"--screenshot={shot}")
    assert out.returncode == 0, out.stderr
    console = [line for line in out.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)

    dom = chromium(daemon.admin + "/", tmp_path / "chromium", "--dump-dom").stdout
    assert "<h1>proxyd</h1>" in dom
    assert "blocked.example" in dom and "works.example" in dom
    assert "Healthy" in dom
    assert re.search(r"<td>socks</td><td class=\"ok\">up</td>", dom)


async def test_routes_command_uses_the_api_while_the_daemon_runs(
    daemon: AdminDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    admin = ["--admin", f"127.0.0.1:{daemon.admin_port}"]
    loop = asyncio.get_running_loop()

    async def routes(*argv: str) -> tuple[int, str]:
        code = await loop.run_in_executor(None, routes_command, [*admin, *argv])
        return code, capsys.readouterr().out

    assert await routes("set", "cli.example", "socks") == (0, "cli.example: socks (forced)\n")
    code, table = await routes()
    assert code == 0
    assert re.search(r"^cli\.example\s+blocked\s+socks\s+forced", table, re.M)
    code, listed = await routes("--json", "--state", "direct")
    assert (code, json.loads(listed)) == (0, [])
    assert (await routes("set", "cli.example", "nowhere"))[0] == 1
    assert await routes("forget", "cli.example") == (0, "cli.example: forgotten\n")
    assert (await routes("forget", "cli.example"))[0] == 1


def test_routes_command_edits_the_state_file_when_the_daemon_is_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--admin", f"127.0.0.1:{free_port()}", "--state-dir", str(tmp_path / "state")]
    assert routes_command([*state, "set", "offline.example", "direct"]) == 0
    assert "applies at the next start" in capsys.readouterr().out
    proc = Proxyd(
        ["--admin", "127.0.0.1:0", "--state-dir", str(tmp_path / "state")], tmp_path=tmp_path
    )
    try:
        port = AdminDaemon(proc).admin_port
        assert routes_command(["--admin", f"127.0.0.1:{port}", "--json"]) == 0
        (entry,) = json.loads(capsys.readouterr().out)
        assert (entry["key"], entry["state"], entry["source"]) == (
            "offline.example",
            "direct",
            "forced",
        )
    finally:
        assert proc.stop() == 0


# --- routing of the very next request, in a network namespace of our own ---------------


class LoopbackNetns:
    """A network namespace with only loopback, where site.example is 127.0.0.1.

    ``ip netns exec`` bind-mounts /etc/netns/NAME/hosts over /etc/hosts for what it runs,
    so proxyd and microsocks resolve the name without any DNS traffic, and nothing in
    here can reach anything outside.
    """

    def __init__(self) -> None:
        self.name = f"pxd{os.getpid()}adm{time.monotonic_ns() % 100000}"
        self.etc = Path("/etc/netns") / self.name
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            self.run("ip", "link", "set", "lo", "up")
            self.etc.mkdir(parents=True)
            (self.etc / "hosts").write_text("127.0.0.1 localhost\n127.0.0.1 site.example\n")
            (self.etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        except BaseException:
            self.close()
            raise

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*argv), capture_output=True, text=True, timeout=timeout)

    def start(self, *argv: str, ready_port: int) -> None:
        self.procs.append(
            subprocess.Popen(self.argv(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        probe = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)"
        wait_until(
            lambda: self.run("python3", "-c", probe, str(ready_port)).returncode == 0,
            what=f"{argv[0]} in {self.name}",
        )

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(10)
        subprocess.run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(self.etc, ignore_errors=True)


@pytest.fixture
def netns() -> Iterator[LoopbackNetns]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("microsocks") is None:
        pytest.skip("needs root, iproute2 and microsocks")
    ns = LoopbackNetns()
    yield ns
    ns.close()


def test_put_and_delete_change_the_route_of_the_very_next_request(
    netns: LoopbackNetns, tmp_path: Path
) -> None:
    """site.example resolves to loopback, which proxyd takes for a forged DNS answer: going
    direct fails, the SOCKS upstream (which resolves it the same way) gets through. So the
    answer of each request tells which route it took."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "page.txt").write_text("the page\n")
    netns.start("python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                str(tmp_path / "www"), "8000", ready_port=8000)  # fmt: skip
    netns.start("microsocks", "-i", "127.0.0.1", "-p", "1080", ready_port=1080)
    # A namespace of our own: fixed ports are free.
    top = 'listen = ["127.0.0.1:8080"]\nadmin = "127.0.0.1:9477"\n'
    proxyd = Proxyd(config=upstream_config(1080, top=top), tmp_path=tmp_path, netns=netns.name)
    admin = "http://127.0.0.1:9477/api/routes/site.example"

    def api(method: str, url: str, body: str | None = None) -> str:
        data = ["-H", "Content-Type: application/json", "-d", body] if body else []
        out = netns.run("curl", "-sS", "-X", method, *data, url)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def fetch() -> tuple[str, str]:
        out = netns.run(
            "curl", "-sS", "-p", "-x", "http://127.0.0.1:8080", "-w", "\n%{http_connect}",
            "--max-time", "20", "http://site.example:8000/page.txt",
        )  # fmt: skip
        body, _, connect_status = out.stdout.rpartition("\n")
        return connect_status, body

    try:
        api("PUT", admin, '{"route": "direct"}')
        assert fetch()[0] == "502"  # direct only, and direct cannot work
        api("PUT", admin, '{"route": "socks"}')
        assert fetch() == ("200", "the page\n")  # through the upstream
        api("PUT", admin, '{"route": "direct"}')
        assert fetch()[0] == "502"
        assert json.loads(api("DELETE", admin)) == {"forgotten": "site.example"}
        # Forgotten: the default again, direct first and the upstream as the fallback,
        # and the failed direct attempt is evidence that gets the domain learned.
        assert fetch() == ("200", "the page\n")
        (entry,) = json.loads(api("GET", "http://127.0.0.1:9477/api/routes"))["entries"]
        assert (entry["key"], entry["source"], entry["route"]) == (
            "site.example",
            "learned",
            "socks",
        )
        assert [e["reason"] for e in entry["evidence"]] == ["dns_poison"]
    finally:
        assert proxyd.stop() == 0
    proxyd.assert_clean_log()


def test_proxyd_routes_command_line_drives_the_running_daemon(
    daemon: AdminDaemon, tmp_path: Path
) -> None:
    """The installed entry point, as an operator types it: `proxyd routes ...`."""

    def proxyd_routes(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "proxyd", "routes", "--admin",
             f"127.0.0.1:{daemon.admin_port}", "--state-dir", str(tmp_path / "unused"), *argv],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    done = proxyd_routes("set", "typed.example", "socks")
    assert (done.returncode, done.stdout) == (0, "typed.example: socks (forced)\n"), done.stderr
    listed = proxyd_routes()
    assert re.search(r"^typed\.example\s+blocked\s+socks\s+forced", listed.stdout, re.M)
    assert proxyd_routes("forget", "typed.example").stdout == "typed.example: forgotten\n"
    assert "typed.example" not in proxyd_routes().stdout
    assert not (tmp_path / "unused").exists()  # the daemon's table, not a file, was used


def test_proxyd_why_explains_the_running_daemons_decision_and_the_stopped_ones(
    daemon: AdminDaemon, tmp_path: Path
) -> None:
    def proxyd_why(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "proxyd", "why", *argv],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    online = ["--admin", f"127.0.0.1:{daemon.admin_port}"]
    assert proxyd_routes_set(daemon, "why.example", "socks") == 0
    done = proxyd_why(*online, "www.why.example")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "www.why.example:443 -> socks"
    assert "learned: why.example blocked (forced)" in done.stdout
    explained = json.loads(proxyd_why(*online, "--json", "--port", "80", "new.example").stdout)
    assert (explained["port"], explained["routes"][0], explained["learning"]) == (
        80,
        "direct",
        True,
    )

    # stopped: the same decision from the config and the state file
    offline = ["--admin", f"127.0.0.1:{free_port()}", "--state-dir", str(tmp_path / "state")]
    assert routes_command([*offline, "set", "why.example", "direct"]) == 0
    done = proxyd_why(*offline, "www.why.example")
    assert done.stdout.splitlines()[0] == "www.why.example:443 -> direct", done.stderr
    assert "using the state file" in done.stderr


def proxyd_routes_set(daemon: AdminDaemon, domain: str, route: str) -> int:
    return routes_command(["--admin", f"127.0.0.1:{daemon.admin_port}", "set", domain, route])


def test_admin_token_from_the_config_guards_the_api_and_proxyd_routes_uses_it(
    tmp_path: Path,
) -> None:
    token = "correct-horse-battery-staple"
    config = f'admin = "127.0.0.1:{free_port()}"\nadmin_token = "{token}"\nupstream = []\n'
    proc = Proxyd(config=config, tmp_path=tmp_path)
    try:
        admin = AdminDaemon(proc).admin
        assert urllib_status(f"{admin}/api/routes") == 401
        assert urllib_status(f"{admin}/healthz") == 200  # for monitors without secrets
        assert urllib_status(f"{admin}/metrics", token) == 200
        assert proc.config_path is not None
        done = subprocess.run(
            [sys.executable, "-m", "proxyd", "routes", "-c", str(proc.config_path),
             "set", "guarded.example", "direct"],
            capture_output=True, text=True, timeout=30,
            env={k: v for k, v in os.environ.items() if k != "PROXYD_ADMIN_TOKEN"},
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (0, "guarded.example: direct (forced)\n")
    finally:
        assert proc.stop() == 0


def urllib_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def seeded_state_dir(path: Path) -> Path:
    """A state dir holding learned blocks with evidence, as a daemon would have saved."""
    from proxyd.learning._table import LearningTable
    from proxyd.routing import STATE_FILE, save_state

    table = LearningTable()
    now = time.time()
    table.record_failure("www.shared.example", "direct", Reason.TLS_INJECTED, now)
    table.confirm_blocked("www.shared.example", Reason.TLS_INJECTED, "socks", now)
    table.force("one.host.example", "socks", now)  # one host of its domain only
    table.force("works.example", "direct", now)
    path.mkdir(parents=True)
    save_state(path / STATE_FILE, table.to_json())
    return path


def blocked_routes(port: int, capsys: pytest.CaptureFixture[str]) -> set[tuple[str, str, str]]:
    assert routes_command(["--admin", f"127.0.0.1:{port}", "--json", "--state", "blocked"]) == 0
    return {(e["key"], e["scope"], e["route"]) for e in json.loads(capsys.readouterr().out)}


def test_export_then_import_on_a_second_daemon_gives_the_same_routes(
    tmp_path: Path, socks: Microsocks, capsys: pytest.CaptureFixture[str]
) -> None:
    boxes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        state = tmp_path / name / "state"
        if name == "a":
            seeded_state_dir(state)
        boxes.append(
            Proxyd(
                ["--admin", "127.0.0.1:0", "--state-dir", str(state)],
                config=upstream_config(socks.port),
                tmp_path=tmp_path / name,
            )
        )
    try:
        a, b = (AdminDaemon(p) for p in boxes)
        # Traffic from a client first: its address must not reach any export.
        with urllib.request.urlopen(f"{a.admin}/api/routes", timeout=10):
            pass
        exports = {}
        for fmt in ("hostlist", "gfwlist", "v2fly", "pac"):
            argv = ["--admin", f"127.0.0.1:{a.admin_port}", "export", "--format", fmt]
            assert routes_command(argv) == 0
            exports[fmt] = capsys.readouterr().out
            listed = [line for line in exports[fmt].splitlines() if "PROXYD =" not in line]
            assert "127.0.0.1" not in "\n".join(listed)
        with urllib.request.urlopen(f"{a.admin}/api/lists/learned.txt", timeout=10) as resp:
            assert resp.read().decode() == exports["hostlist"]
        assert "shared.example route=socks reason=tls_injected since=" in exports["hostlist"]
        assert "works.example" not in exports["hostlist"]
        answers = evaluate_pac(exports["pac"], ["x.shared.example", "works.example"])
        assert answers["x.shared.example"].startswith("PROXY ")
        assert answers["works.example"] == "DIRECT"

        expected = blocked_routes(a.admin_port, capsys)
        assert expected == {
            ("shared.example", "domain", "socks"),
            ("one.host.example", "host", "socks"),
        }
        shared = tmp_path / "shared.txt"
        shared.write_text(exports["gfwlist"])
        assert routes_command(["--admin", f"127.0.0.1:{b.admin_port}", "import", str(shared)]) == 0
        assert "imported 2 routes" in capsys.readouterr().out
        assert blocked_routes(b.admin_port, capsys) == expected
        assert routes_command(["--admin", f"127.0.0.1:{b.admin_port}", "import", str(shared)]) == 0
        assert "imported 0 routes, kept 2 known" in capsys.readouterr().out
    finally:
        for proc in boxes:
            assert proc.stop() == 0
            proc.assert_clean_log()


def test_import_seeds_the_state_file_when_the_daemon_is_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "list.txt"
    shared.write_text(
        "# proxyd: a.example route=nowhere reason=forced since=2024-05-01\na.example\n"
    )
    config = tmp_path / "proxyd.toml"
    config.write_text(upstream_config(free_port(), name="tor"))
    state = ["-c", str(config), "--admin", f"127.0.0.1:{free_port()}"]
    state += ["--state-dir", str(tmp_path / "state")]
    assert routes_command([*state, "import", str(shared)]) == 0
    assert "imported 1 routes" in capsys.readouterr().out
    assert routes_command([*state, "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert (entry["key"], entry["route"], entry["source"]) == ("a.example", "tor", "list")
    assert routes_command([*state, "export", "--format", "v2fly"]) == 0
    assert "domain:a.example" in capsys.readouterr().out
    bad = tmp_path / "bad.txt"
    bad.write_text("a.example\nnot a domain!\n")
    assert routes_command([*state, "import", str(bad)]) == 1
    assert f"{bad}:2: not a domain" in capsys.readouterr().err
