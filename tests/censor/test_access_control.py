"""A LAN client (a host in another network namespace) uses proxyd on a "router" namespace:
it reaches the LAN and beyond, but never the router's loopback, link-local or own
addresses, nor proxyd's admin listener, unless ``protect_local`` is turned off."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lab_netns import Netns, lab_prefix, tool, wait_listening

from tests.support.proc import Proxyd
from tests.support.required import is_root, require

ROUTER_IP = "198.19.0.1"  # proxyd's LAN address, inside the router namespace only
LAN_CLIENT_IP = "198.19.0.2"
LOCAL_PORT, OWN_PORT, LAN_PORT, ADMIN_PORT, PROXY_PORT = 8000, 8001, 8002, 9477, 8080


@dataclass
class Lan:
    router: Netns
    client: Netns
    proxyd: Proxyd

    def curl(self, url: str, *extra: str, netns: Netns | None = None) -> tuple[int, str]:
        """HTTP status and body of ``url`` fetched through proxyd by the LAN client."""
        where = netns or self.client
        proxy = ROUTER_IP if where is self.client else "127.0.0.1"
        out = subprocess.run(
            where.exec_argv(
                [tool("curl"), "-s", "-m", "10", "-w", "\n%{http_code}",
                 "-x", f"http://{proxy}:{PROXY_PORT}", *extra, url]
            ),
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        body, _, code = out.rpartition("\n")
        return int(code), body

    def connect_status(self, target: str) -> int:
        """The HTTP status the LAN client gets for ``CONNECT target``."""
        script = (
            "import socket,sys;"
            f"s=socket.create_connection(('{ROUTER_IP}',{PROXY_PORT}),timeout=10);"
            f"s.sendall(b'CONNECT {target} HTTP/1.1\\r\\n\\r\\n');"
            "sys.stdout.write(s.recv(100)[9:12].decode())"
        )
        out = subprocess.run(
            self.client.exec_argv([sys.executable, "-c", script]),
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return int(out)

    def socks5_status(self, host: str, port: int) -> int:
        """The SOCKS5 reply code the LAN client gets for CONNECT host:port."""
        script = (
            "import socket,struct,sys;"
            f"s=socket.create_connection(('{ROUTER_IP}',{PROXY_PORT}),timeout=10);"
            "s.sendall(b'\\x05\\x01\\x00');s.recv(2);"
            f"s.sendall(b'\\x05\\x01\\x00\\x01'+socket.inet_aton('{host}')+struct.pack('!H',{port}));"
            "sys.stdout.write(str(s.recv(10)[1]))"
        )
        out = subprocess.run(
            self.client.exec_argv([sys.executable, "-c", script]),
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return int(out)


def _serve(netns: Netns, ip: str, port: int, text: str, root: Path) -> subprocess.Popen[bytes]:
    directory = root / f"{ip}-{port}"
    directory.mkdir()
    (directory / "index.html").write_text(text)
    proc = netns.popen(
        [sys.executable, "-m", "http.server", "-b", ip, "-d", str(directory), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_listening(proc, "tcp", [(ip, port)], timeout=30)
    return proc


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    require(is_root(), "needs root for network namespaces")
    prefix = lab_prefix()
    router, client = Netns(prefix + "r"), Netns(prefix + "c")
    servers: list[subprocess.Popen[bytes]] = []
    proxyd = None
    try:
        router.create()
        client.create()
        veth_r, veth_c = f"{prefix}a"[-15:], f"{prefix}b"[-15:]
        router.ip(
            "link", "add", veth_r, "type", "veth", "peer", "name", veth_c, "netns", client.name
        )
        router.ip("addr", "add", f"{ROUTER_IP}/30", "dev", veth_r)
        router.ip("link", "set", veth_r, "up")
        client.ip("addr", "add", f"{LAN_CLIENT_IP}/30", "dev", veth_c)
        client.ip("link", "set", veth_c, "up")
        servers.append(_serve(router, "127.0.0.1", LOCAL_PORT, "router loopback", tmp_path))
        servers.append(_serve(router, ROUTER_IP, OWN_PORT, "router own address", tmp_path))
        servers.append(_serve(client, LAN_CLIENT_IP, LAN_PORT, "lan host", tmp_path))
        config = (
            f'listen = ["{ROUTER_IP}:{PROXY_PORT}", "127.0.0.1:{PROXY_PORT}"]\n'
            f'admin = "0.0.0.0:{ADMIN_PORT}"\n'
            f'allow = ["127.0.0.0/8", "{LAN_CLIENT_IP}/32"]\n'
        )
        proxyd = Proxyd(config=config, tmp_path=tmp_path, netns=router.name)
        yield Lan(router, client, proxyd)
    finally:
        if proxyd is not None:
            proxyd.stop()
        for server in servers:
            server.terminate()
            server.wait()
        client.delete()
        router.delete()
    proxyd.assert_clean_log()


def test_lan_client_cannot_reach_the_routers_own_services_through_the_proxy(lan: Lan) -> None:
    for url in (
        f"http://127.0.0.1:{LOCAL_PORT}/",
        f"http://127.1.2.3:{LOCAL_PORT}/",
        f"http://[::1]:{LOCAL_PORT}/",
        f"http://[::ffff:127.0.0.1]:{LOCAL_PORT}/",
        f"http://localhost:{LOCAL_PORT}/",
        f"http://{ROUTER_IP}:{OWN_PORT}/",
        f"http://{ROUTER_IP}:{ADMIN_PORT}/metrics",
        f"http://127.0.0.1:{ADMIN_PORT}/metrics",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:8000/",
    ):
        status, body = lan.curl(url)
        assert status == 403, (url, status, body)
    assert lan.connect_status(f"{ROUTER_IP}:{OWN_PORT}") == 403
    assert lan.connect_status(f"[::1]:{LOCAL_PORT}") == 403
    assert lan.socks5_status("127.0.0.1", LOCAL_PORT) == 0x02
    assert lan.socks5_status(ROUTER_IP, ADMIN_PORT) == 0x02
    # ... while the LAN and the rest of the world stay reachable.
    assert lan.curl(f"http://{LAN_CLIENT_IP}:{LAN_PORT}/") == (200, "lan host")
    assert lan.socks5_status(LAN_CLIENT_IP, LAN_PORT) == 0x00
    assert lan.connect_status(f"{LAN_CLIENT_IP}:{LAN_PORT}") == 200


def test_loopback_clients_may_reach_loopback_but_never_the_admin_listener(lan: Lan) -> None:
    loopback = f"http://127.0.0.1:{LOCAL_PORT}/"
    assert lan.curl(loopback, netns=lan.router) == (200, "router loopback")
    status, _ = lan.curl(f"http://127.0.0.1:{ADMIN_PORT}/metrics", netns=lan.router)
    assert status == 403


def test_protect_local_off_lets_lan_clients_reach_the_router_after_a_reload(lan: Lan) -> None:
    assert lan.curl(f"http://127.0.0.1:{LOCAL_PORT}/")[0] == 403
    config_path = lan.proxyd.config_path
    assert config_path is not None
    config_path.write_text(config_path.read_text() + "protect_local = false\n")
    lan.proxyd.signal(signal.SIGHUP)
    lan.proxyd.wait_for_log("configuration reloaded")
    assert lan.curl(f"http://127.0.0.1:{LOCAL_PORT}/") == (200, "router loopback")
    assert lan.curl(f"http://{ROUTER_IP}:{OWN_PORT}/") == (200, "router own address")
    # The admin listener stays out of reach: that is loop protection, not a LAN policy.
    assert lan.curl(f"http://{ROUTER_IP}:{ADMIN_PORT}/metrics")[0] == 403
