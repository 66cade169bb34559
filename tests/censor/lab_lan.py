"""A home LAN behind the lab's client namespace, which then plays the home router.

    device (L) 198.18.4.2 --+
                            +-- br-lan 198.18.4.1  router = lab.client (C) --- ISP (R) --- I
    neighbour (M) 198.18.4.3+

``lab.lan()`` (built on first use, deleted with the lab) gives:

- ``device`` / ``neighbour``: ``Netns`` of two LAN hosts on one bridge (``br-lan``) in
  the router. They have no proxy settings and resolve through the ISP's (poisoning)
  resolver, as a DHCP server would have told them; the router forwards and masquerades
  their traffic to the ISP, so without proxyd's rules it reaches the internet untouched.
- ``exec_device(argv)`` / ``exec_router(argv)`` / ``exec_neighbour(argv)``: run there
  (``subprocess.run``, text output captured, proxy variables removed).
- ``start_server(netns, name, argv)``: a ``LabProcess`` stopped with the lab (or by the
  caller); ``start_echo(address, port, proto)``: an echo server in the internet namespace
  on a fresh address, which logs each peer to its log file.
- ``ruleset()``: what the router's netfilter holds now (nft's view, which includes what
  iptables-nft added), to compare before and after rules are applied and removed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab_netns import LabProcess, Netns, clean_env, run, tool, wait_listening

LAN_NETWORK = "198.18.4.0/24"
ROUTER_LAN_IP = "198.18.4.1"
DEVICE_IP = "198.18.4.2"
NEIGHBOUR_IP = "198.18.4.3"
LAN_INTERFACE = "br-lan"
ECHO_IPS = ("198.18.2.40", "198.18.2.41", "198.18.2.42")
_ECHO = Path(__file__).resolve().parent / "servers" / "echo.py"


class Lan:
    def __init__(
        self,
        prefix: str,
        router: Netns,
        internet: Netns,
        workdir: Path,
        resolver_ip: str,
        etc: dict[str, str],
    ) -> None:
        self.router = router
        self.internet = internet
        self.device = Netns(f"{prefix}l")
        self.neighbour = Netns(f"{prefix}m")
        self.workdir = workdir
        self._resolver_ip = resolver_ip
        self._etc = etc
        self._created: list[Netns] = []
        self._servers: list[LabProcess] = []
        self._echo_ips = list(ECHO_IPS)

    def start(self) -> None:
        for netns in (self.device, self.neighbour):
            netns.create()
            self._created.append(netns)
            netns.run([tool("sysctl"), "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
            netns.run([tool("sysctl"), "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
            netns.write_etc("resolv.conf", f"nameserver {self._resolver_ip}\n")
            for name, text in self._etc.items():
                netns.write_etc(name, text)
        self.router.ip("link", "add", LAN_INTERFACE, "type", "bridge")
        for netns, port, address in (
            (self.device, "lan-device", DEVICE_IP),
            (self.neighbour, "lan-neighbour", NEIGHBOUR_IP),
        ):
            run(
                [
                    *("ip", "link", "add", "to-router", "netns", netns.name, "type", "veth"),
                    *("peer", "name", port, "netns", self.router.name),
                ]
            )
            self.router.ip("link", "set", port, "master", LAN_INTERFACE, "up")
            netns.ip("addr", "add", f"{address}/24", "dev", "to-router")
            netns.ip("link", "set", "to-router", "up")
            netns.ip("route", "add", "default", "via", ROUTER_LAN_IP)
        self.router.ip("addr", "add", f"{ROUTER_LAN_IP}/24", "dev", LAN_INTERFACE)
        self.router.ip("link", "set", LAN_INTERFACE, "up")
        self.router.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        # A home router's NAT: the ISP only ever sees the router's address.
        self.router.iptables(
            *("-t", "nat", "-A", "POSTROUTING", "-s", LAN_NETWORK, "-o", "to-isp"),
            *("-j", "MASQUERADE"),
        )

    def close(self) -> None:
        for server in self._servers:
            server.stop()
        for netns in self._created:
            netns.delete()
        self._created.clear()
        # The bridge and the router's ports go with the client namespace.

    def _exec(
        self, netns: Netns, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("env", clean_env())
        return subprocess.run(netns.exec_argv(argv), check=False, **kwargs)

    def exec_device(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        return self._exec(self.device, argv, **kwargs)

    def exec_neighbour(
        self, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        return self._exec(self.neighbour, argv, **kwargs)

    def exec_router(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        return self._exec(self.router, argv, **kwargs)

    def start_server(self, netns: Netns, name: str, argv: Sequence[str]) -> LabProcess:
        server = LabProcess(name, netns, argv, self.workdir / f"{name}.log")
        self._servers.append(server)
        server.start()
        return server

    def start_echo(self, port: int, proto: str = "tcp") -> tuple[str, LabProcess]:
        """An echo server on a fresh internet address; each peer is logged on a line."""
        address = self._echo_ips.pop(0)
        self.internet.ip("addr", "add", f"{address}/32", "dev", "to-isp")
        argv = [sys.executable, str(_ECHO), proto, address, str(port)]
        server = self.start_server(self.internet, f"echo-{proto}-{address}", argv)
        wait_listening(server, proto, [(address, port)])
        return address, server

    def ruleset(self) -> str:
        return self.router.run([tool("nft"), "list", "ruleset"])
