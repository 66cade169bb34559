"""DNS-over-HTTPS providers in the internet namespace, and what the lab's resolvers saw.

``DohServers(internet_netns, workdir, ca, records)`` runs, after ``start()``:

- an honest resolver (dnsmasq on 127.0.0.1:5300 in I, never reachable from outside I)
  answering ``records`` (name -> address) with a TTL of ``HONEST_TTL``, every other
  name NXDOMAIN, each query logged;
- Debian's dnsdist serving DoH (RFC 8484, HTTP/1.1 and h2) with a certificate from the
  lab's CA for both provider names, on ``DOH_IP`` (``DOH_HOST``, which the censor leaves
  alone) and ``BLOCKED_DOH_IP`` (``BLOCKED_DOH_HOST``); the censor blocks the second
  only when a test calls ``lab.censor.blackhole(BLOCKED_DOH_IP)`` (undone by the lab's
  ``reset()``). Both forward to the honest resolver.

``honest_queries(name)``: how many queries for ``name`` reached the honest resolver
(through either provider). ``isp_queries(workdir, name)``: the same for the ISP's
resolver, from its own log. dnsmasq writes its log as it answers, so a test that wants
to show a name was *not* asked first waits for a marker name it did ask afterwards.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import trustme
from lab_netns import LabError, LabProcess, Netns, tool, wait_listening

DOH_IP = "198.18.2.30"
BLOCKED_DOH_IP = "198.18.2.31"
DOH_HOST = "doh.example"
BLOCKED_DOH_HOST = "doh-blocked.example"
DOH_PATH = "/dns-query"
HONEST_TTL = 300
_BACKEND = ("127.0.0.1", 5300)


class DohServers:
    def __init__(
        self, netns: Netns, workdir: Path, ca: trustme.CA, records: dict[str, str]
    ) -> None:
        self._netns = netns
        self._workdir = workdir
        self._ca = ca
        self._records = dict(records)
        self.honest_log = workdir / "honest-dns.log"
        self._honest = LabProcess(
            "honest dnsmasq",
            netns,
            [
                tool("dnsmasq"),
                "--keep-in-foreground",
                f"--conf-file={workdir / 'honest-dnsmasq.conf'}",
                f"--pid-file={workdir / 'honest-dnsmasq.pid'}",
                f"--log-facility={self.honest_log}",
                "--log-queries",
            ],
            workdir / "honest-dnsmasq.out",
        )
        self._dnsdist = LabProcess(
            "dnsdist",
            netns,
            [
                tool("dnsdist"),
                "--supervised",
                "--disable-syslog",
                "-C",
                str(workdir / "dnsdist.conf"),
            ],
            workdir / "dnsdist.out",
        )
        self._added = False

    def start(self) -> None:
        if not self._added:
            for address in (DOH_IP, BLOCKED_DOH_IP):
                self._netns.ip("addr", "add", f"{address}/32", "dev", "to-isp")
            self._added = True
        leaf = self._ca.issue_cert(DOH_HOST, BLOCKED_DOH_HOST)
        cert, key = self._workdir / "doh-cert.pem", self._workdir / "doh-key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        (self._workdir / "honest-dnsmasq.conf").write_text(self._honest_config())
        (self._workdir / "dnsdist.conf").write_text(self._dnsdist_config(cert, key))
        self._honest.start()
        wait_listening(self._honest, "udp", [_BACKEND])
        self._dnsdist.start()
        wait_listening(self._dnsdist, "tcp", [(DOH_IP, 443), (BLOCKED_DOH_IP, 443)])

    def stop(self) -> None:
        self._dnsdist.stop()
        self._honest.stop()

    def honest_queries(self, name: str) -> int:
        return _count_queries(self.honest_log, name)

    def _honest_config(self) -> str:
        lines = [
            "no-resolv",
            "no-hosts",
            "bind-interfaces",
            f"listen-address={_BACKEND[0]}",
            f"port={_BACKEND[1]}",
            "user=root",  # see lab_dns.py: keeps the parent-death signal
            "group=root",
            "local=/#/",
            f"local-ttl={HONEST_TTL}",
        ]
        lines += [
            f"host-record={name},{address}" for name, address in sorted(self._records.items())
        ]
        return "\n".join(lines) + "\n"

    def _dnsdist_config(self, cert: Path, key: Path) -> str:
        backend = f"{_BACKEND[0]}:{_BACKEND[1]}"
        return "\n".join(
            [
                'setSecurityPollSuffix("")',  # no queries of its own to the real internet
                'setACL({"198.18.0.0/15"})',
                f'newServer({{address="{backend}", healthCheckMode="up"}})',
                *(
                    f'addDOHLocal("{address}:443", "{cert}", "{key}", "{DOH_PATH}")'
                    for address in (DOH_IP, BLOCKED_DOH_IP)
                ),
                "",
            ]
        )


def _count_queries(log: Path, name: str) -> int:
    if not log.exists():
        return 0
    pattern = re.compile(rf"query\[\w+\] {re.escape(name)} from ")
    return sum(1 for line in log.read_text(errors="replace").splitlines() if pattern.search(line))


def isp_queries(workdir: Path, name: str) -> int:
    return _count_queries(workdir / "dnsmasq.log", name)


def wait_for_queries(log: Path, name: str, at_least: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _count_queries(log, name) < at_least:
        if time.monotonic() > deadline:
            raise LabError(f"{log.name}: fewer than {at_least} queries for {name} in {timeout}s")
        time.sleep(0.02)
