"""A censored network built for real: three network namespaces, veth pairs, iptables.

    client (C) 198.18.1.2 --- 198.18.1.1 ISP/censor (R) 198.18.2.1 --- 198.18.2.2 internet (I)

``with NetLab() as lab:`` (or the ``netlab`` pytest fixture) gives:

- ``lab.client`` / ``lab.isp`` / ``lab.internet``: ``Netns`` objects (``.name``,
  ``.popen``, ``.run``); ``lab.exec_client(argv, **run_kwargs)`` runs a command in C
  (``subprocess.run``, text output captured by default), ``lab.popen_client(argv, **kw)``
  starts one there (killed at ``close()`` if still running). C resolves through the ISP's
  resolver only; proxy variables are removed from the environment.
- ``lab.sites``: every served name -> its real address; ``lab.client_ip``,
  ``lab.block_page_ip``, ``lab.redirect_ip``.
- ``lab.socks``: the first SOCKS5 server (microsocks, honest DNS, outgoing connections
  from its own address), ``.endpoint`` (host, port), ``.url``, ``.start()``, ``.stop()``;
  ``lab.start_socks()`` starts another on a spare address.
- ``lab.ca_bundle``: CA file for ``curl --cacert``; ``lab.tls_spki_sha256`` for
  chromium's ``--ignore-certificate-errors-spki-list``; ``lab.chromium_argv(url, dir)``.
- ``lab.origin_log(since=n)`` -> ``OriginRecord`` list; ``lab.origin_mark()``;
  ``lab.wait_for_origin(host=, path=, peer_ip=, since=, timeout=)``;
  ``lab.isp_page_log()`` for requests the block page and the 302 responder answered.
- ``lab.censor``: see lab_censor.py (block/unblock primitives and counters).
- ``lab.cut_uplink()`` / ``lab.restore_uplink()``: the ISP's link to the internet
  namespace goes down (its routes with it: the ISP answers "network unreachable") / up.
- ``lab.reset()``: default censorship back, uplink up, first SOCKS server up, extra ones
  stopped.
- ``lab.lan()``: a home LAN behind the client namespace, which becomes its router
  (lab_lan.py); built on first use, so labs that never ask for it do not change.

Names are ``pxd<pid>n<seq>{c,r,i}``; ``close()`` stops only this lab's processes (by PID)
and deletes only its namespaces and files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lab_censor import Censor
from lab_dns import IspResolver
from lab_doh import DohServers
from lab_lan import Lan
from lab_netns import (
    LabError,
    LabProcess,
    LabUnavailable,
    Netns,
    clean_env,
    lab_prefix,
    lab_workdir,
    remove_stale_labs,
    run,
    tool,
    wait_listening,
)
from lab_sites import (
    BLOCK_PAGE_HOST,
    BLOCK_PAGE_IP,
    CLIENT_IP,
    DPI_MODES,
    DPI_PORTS,
    INTERNET_IP,
    ISP_CLIENT_SIDE,
    ISP_INTERNET_SIDE,
    REDIRECT_IP,
    SITES,
    SLOW_DELAY,
    SOCKS_IP,
    SOCKS_PORT,
    SPARE_SOCKS_IPS,
    real_addresses,
)

_HTTPD = Path(__file__).resolve().parent / "servers" / "httpd.py"
_DPI = Path(__file__).resolve().parent / "servers" / "dpi.py"
_NO_IPV6 = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
_NETNS_ETC_DIR = Path("/etc/netns")
_LOCALHOST = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"


class OriginRecord(NamedTuple):
    peer_ip: str
    scheme: str
    host: str
    path: str
    local_ip: str
    method: str
    role: str


class SocksServer:
    """microsocks on its own address in the internet namespace."""

    def __init__(self, netns: Netns, address: str, port: int, workdir: Path) -> None:
        self.address = address
        self.port = port
        # -b: connect out from its own address, so origins can tell which server relayed
        argv = [tool("microsocks"), "-i", address, "-p", str(port), "-b", address]
        log = workdir / f"socks-{address}.log"
        self._process = LabProcess(f"microsocks {address}", netns, argv, log)

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.address, self.port)

    @property
    def url(self) -> str:
        return f"socks5h://{self.address}:{self.port}"

    def running(self) -> bool:
        return self._process.running()

    def start(self) -> None:
        self._process.start()
        try:
            wait_listening(self._process, "tcp", [self.endpoint])
        except BaseException:
            self._process.stop()  # or it keeps the address and fails every later start
            raise

    def stop(self) -> None:
        self._process.stop()


class NetLab:
    def __init__(self, *, slow_delay: float = SLOW_DELAY) -> None:
        self.prefix = lab_prefix()
        self.client = Netns(f"{self.prefix}c")
        self.isp = Netns(f"{self.prefix}r")
        self.internet = Netns(f"{self.prefix}i")
        self.client_ip = CLIENT_IP
        self.block_page_ip = BLOCK_PAGE_IP
        self.redirect_ip = REDIRECT_IP
        self.sites = real_addresses()
        self.slow_delay = slow_delay
        self.workdir = lab_workdir(self.prefix)
        self.ca_bundle = self.workdir / "ca.pem"
        self.tls_spki_sha256 = ""
        self.resolver = IspResolver(self.isp, self.workdir, self._resolver_records())
        self.socks = SocksServer(self.internet, SOCKS_IP, SOCKS_PORT, self.workdir)
        self.censor = Censor(self.isp, self.resolver)
        self._created: list[Netns] = []
        self._servers: list[LabProcess] = []
        self._client_processes: list[subprocess.Popen[Any]] = []
        self._extra_socks: list[SocksServer] = []
        self._socks_addresses = {SOCKS_IP}
        self._doh: DohServers | None = None
        self._lan: Lan | None = None

    def __enter__(self) -> NetLab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        remove_stale_labs()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(mode=0o700)
        for netns in (self.client, self.isp, self.internet):
            try:
                netns.create()
            except LabError as error:
                raise LabUnavailable(f"cannot create network namespaces: {error}") from error
            self._created.append(netns)
        self._wire()
        self._write_resolver_files()
        self._make_certificates()
        origin, pages = self._start_http_servers()
        self._start_dpi_relays()
        nginx = self._start_nginx()
        self.resolver.start()
        self.socks.start()
        self.censor.install()
        self.censor.restore_defaults()
        served = [
            site.address for site in SITES if not site.down and site.listening and not site.nginx
        ]
        nginx_served = [site.address for site in SITES if site.nginx]
        wait_listening(nginx, "tcp", [(a, p) for a in nginx_served for p in (80, 443)])
        wait_listening(origin, "tcp", [(a, p) for a in served for p in (80, 443)])
        wait_listening(pages, "tcp", [(BLOCK_PAGE_IP, 80), (REDIRECT_IP, 80)])

    def close(self) -> None:
        if self._lan is not None:
            self._lan.close()
            self._lan = None
        for proc in self._client_processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for socks in [*self._extra_socks, self.socks]:
            socks.stop()
        if self._doh is not None:
            self._doh.stop()
        self.resolver.stop()
        for server in self._servers:
            server.stop()
        for netns in self._created:
            netns.delete()
        self._created.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def reset(self) -> None:
        """Undo what a test changed: censorship, the uplink, SOCKS servers."""
        self.restore_uplink()
        self.censor.restore_defaults()
        for socks in self._extra_socks:
            socks.stop()
        self._extra_socks.clear()
        if not self.socks.running():
            self.socks.start()

    def lan(self) -> Lan:
        """The LAN behind the client namespace (the router), built on first use."""
        if self._lan is None:
            etc = {
                name: (_NETNS_ETC_DIR / self.client.name / name).read_text()
                for name in ("hosts", "nsswitch.conf")
            }
            lan = Lan(self.prefix, self.client, self.internet, self.workdir, ISP_CLIENT_SIDE, etc)
            self._lan = lan
            lan.start()
        return self._lan

    # -- running things in the client namespace ----------------------------------------

    def exec_client(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("env", clean_env())
        return subprocess.run(self.client.exec_argv(argv), check=False, **kwargs)

    def popen_client(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = self.client.popen(argv, **kwargs)
        self._client_processes.append(proc)
        return proc

    def chromium_argv(self, url: str, profile_dir: Path, *flags: str) -> list[str]:
        """Headless chromium printing ``url``'s DOM, trusting the lab's certificate.

        ``flags`` go before the URL, e.g. ``--proxy-server=http://127.0.0.1:8080``.
        Run it with ``exec_client``; as root it needs ``--no-sandbox``.
        """
        return [
            tool("chromium"),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile_dir}",
            f"--ignore-certificate-errors-spki-list={self.tls_spki_sha256}",
            *flags,
            "--dump-dom",
            url,
        ]

    def cut_uplink(self) -> None:
        _ip_batch(self.isp, "link set to-internet down")

    def restore_uplink(self) -> None:
        _ip_batch(self.isp, "link set to-internet up")

    def start_socks(self, address: str | None = None, port: int = SOCKS_PORT) -> SocksServer:
        """Another SOCKS5 server, on a spare address unless one is given."""
        if address is None:
            in_use = {socks.address for socks in self._extra_socks} | {SOCKS_IP}
            address = next(ip for ip in SPARE_SOCKS_IPS if ip not in in_use)
        if address not in self._socks_addresses:
            self.internet.ip("addr", "add", f"{address}/32", "dev", "to-isp")
            self._socks_addresses.add(address)
        socks = SocksServer(self.internet, address, port, self.workdir)
        socks.start()
        self._extra_socks.append(socks)
        return socks

    def start_doh(self) -> DohServers:
        """The DoH providers of lab_doh.py, started on first use, stopped at ``close()``."""
        if self._doh is None:
            self._doh = DohServers(self.internet, self.workdir, self.ca, self._resolver_records())
            self._doh.start()
        return self._doh

    # -- what the servers saw -----------------------------------------------------------

    def origin_log(self, *, since: int = 0) -> list[OriginRecord]:
        return _read_records(self.workdir / "origin.log")[since:]

    def origin_mark(self) -> int:
        """Index for ``since=``: only requests logged after this call."""
        return len(self.origin_log())

    def isp_page_log(self, *, since: int = 0) -> list[OriginRecord]:
        return _read_records(self.workdir / "isp-pages.log")[since:]

    def wait_for_origin(
        self,
        *,
        host: str | None = None,
        path: str | None = None,
        peer_ip: str | None = None,
        since: int = 0,
        timeout: float = 5.0,
    ) -> OriginRecord:
        deadline = time.monotonic() + timeout
        while True:
            records = self.origin_log(since=since)
            for record in records:
                if (
                    host in (None, record.host)
                    and path in (None, record.path)
                    and peer_ip in (None, record.peer_ip)
                ):
                    return record
            if time.monotonic() > deadline:
                wanted = f"host={host} path={path} peer_ip={peer_ip}"
                raise LabError(f"no origin request {wanted} within {timeout}s; saw {records}")
            time.sleep(0.02)

    # -- construction -------------------------------------------------------------------

    def _wire(self) -> None:
        # The lab is IPv4 only. IPv6 off before any link is up: a link-local address that
        # finishes duplicate address detection mid-test is a network change to Chromium,
        # which then fails its page load with ERR_NETWORK_CHANGED.
        for netns in (self.client, self.isp, self.internet):
            netns.run([tool("sysctl"), "-q", "-w", *_NO_IPV6])
        # Each veth end is created inside its namespace, so no name ever exists on the host.
        for near, far_end in ((self.client, "to-client"), (self.internet, "to-internet")):
            near_end = ["to-isp", "netns", near.name]
            peer = ["peer", "name", far_end, "netns", self.isp.name]
            run([tool("ip"), "link", "add", *near_end, "type", "veth", *peer])
        _ip_batch(
            self.client,
            f"addr add {CLIENT_IP}/24 dev to-isp",
            "link set to-isp up",
            f"route add default via {ISP_CLIENT_SIDE}",
        )
        _ip_batch(
            self.isp,
            f"addr add {ISP_CLIENT_SIDE}/24 dev to-client",
            f"addr add {ISP_INTERNET_SIDE}/24 dev to-internet",
            f"addr add {BLOCK_PAGE_IP}/32 dev lo",
            f"addr add {REDIRECT_IP}/32 dev lo",
            "link set to-client up",
            "link set to-internet up",
        )
        _ip_batch(
            self.internet,
            f"addr add {INTERNET_IP}/24 dev to-isp",
            f"addr add {SOCKS_IP}/32 dev to-isp",
            *(f"addr add {site.address}/32 dev to-isp" for site in SITES),
            # One segment per packet, as on a real uplink: the censor's byte-counting
            # freeze must cut inside a response, not drop a 64 KB GSO burst whole.
            "link set to-isp gso_max_segs 1",
            "link set to-isp up",
            f"route add default via {ISP_INTERNET_SIDE}",
        )
        self.isp.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        # A down site drops at its own host, so it is just as dead through the SOCKS server.
        for site in SITES:
            if site.down:
                self.internet.iptables("-A", "INPUT", "-d", site.address, "-j", "DROP")

    def _write_resolver_files(self) -> None:
        nsswitch = "".join(
            "hosts: files dns\n" if line.startswith("hosts:") else line + "\n"
            for line in Path("/etc/nsswitch.conf").read_text().splitlines()
        )
        self.client.write_etc("resolv.conf", f"nameserver {ISP_CLIENT_SIDE}\n")
        self.client.write_etc("hosts", _LOCALHOST)
        self.client.write_etc("nsswitch.conf", nsswitch)
        records = self._resolver_records().items()
        honest = "".join(f"{address} {name}\n" for name, address in records)
        # No resolver in I: its hosts file is the whole truth, and a port nobody listens
        # on makes any other lookup fail at once.
        self.internet.write_etc("resolv.conf", "nameserver 127.0.0.1\n")
        self.internet.write_etc("hosts", _LOCALHOST + honest)
        self.internet.write_etc("nsswitch.conf", nsswitch)

    def _resolver_records(self) -> dict[str, str]:
        return {**self.sites, BLOCK_PAGE_HOST: BLOCK_PAGE_IP}

    def _make_certificates(self) -> None:
        ca = trustme.CA()
        self.ca = ca  # for servers started later (lab_doh.py)
        leaf = ca.issue_cert(*self.sites)
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        leaf.private_key_and_cert_chain_pem.write_to_path(str(self.workdir / "server.pem"))
        cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.tls_spki_sha256 = base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def _start_http_servers(self) -> tuple[LabProcess, LabProcess]:
        python = [sys.executable, str(_HTTPD)]
        origin_argv = [*python, "--log", str(self.workdir / "origin.log")]
        origin_argv += ["--cert", str(self.workdir / "server.pem")]
        origin_argv += ["--slow-delay", str(self.slow_delay)]
        for site in SITES:
            if site.slow:
                origin_argv += ["--slow", site.address]
            if site.down or not site.listening or site.nginx:
                continue
            origin_argv += ["--mirror" if site.mirror else "--origin", site.address]
        pages_argv = [*python, "--log", str(self.workdir / "isp-pages.log")]
        pages_argv += ["--block-page", BLOCK_PAGE_IP, "--redirect", REDIRECT_IP]
        origin = LabProcess("origin httpd", self.internet, origin_argv, self.workdir / "origin.out")
        pages = LabProcess("block-page httpd", self.isp, pages_argv, self.workdir / "isp-pages.out")
        for server in (origin, pages):
            self._servers.append(server)
            server.start()
        return origin, pages

    def _start_nginx(self) -> LabProcess:
        """nginx for the sites marked so: a real-world TLS stack for desync to satisfy."""
        listen = "".join(
            f"listen {site.address}:80; listen {site.address}:443 ssl; "
            for site in SITES
            if site.nginx
        )
        pem = self.workdir / "server.pem"
        conf = self.workdir / "nginx.conf"
        conf.write_text(
            f"pid {self.workdir}/nginx.pid; error_log {self.workdir}/nginx.err;\n"
            "events { worker_connections 64; }\n"
            "http { access_log off; server { "
            f"{listen} ssl_certificate {pem}; ssl_certificate_key {pem}; "
            'location / { default_type text/plain; return 200 "nginx $host $request_uri\\n"; }'
            " } }\n"
        )
        argv = [tool("nginx"), "-c", str(conf), "-p", str(self.workdir), "-g", "daemon off;"]
        nginx = LabProcess("nginx", self.internet, argv, self.workdir / "nginx.out")
        self._servers.append(nginx)
        nginx.start()
        return nginx

    def _start_dpi_relays(self) -> None:
        for site in SITES:
            for kind in site.censorship:
                if kind not in DPI_PORTS:
                    continue
                port = DPI_PORTS[kind]
                argv = [sys.executable, str(_DPI), "--listen", f"{ISP_CLIENT_SIDE}:{port}"]
                argv += ["--upstream", f"{site.address}:443", "--block", site.name]
                argv += ["--mode", DPI_MODES[kind]]
                log = self.workdir / f"dpi-{port}.out"
                relay = LabProcess(f"dpi {DPI_MODES[kind]}", self.isp, argv, log)
                self._servers.append(relay)
                relay.start()
                wait_listening(relay, "tcp", [(ISP_CLIENT_SIDE, port)])


def _ip_batch(netns: Netns, *commands: str) -> None:
    run([tool("ip"), "-n", netns.name, "-batch", "-"], input_text="\n".join(commands) + "\n")


def _read_records(path: Path) -> list[OriginRecord]:
    if not path.exists():
        return []
    records = []
    # the last element is empty, or a line the server is still writing
    for line in path.read_text().split("\n")[:-1]:
        fields = json.loads(line)
        records.append(
            OriginRecord(
                peer_ip=fields["peer"],
                scheme=fields["scheme"],
                host=fields["host"],
                path=fields["path"],
                local_ip=fields["local"],
                method=fields["method"],
                role=fields["role"],
            )
        )
    return records
