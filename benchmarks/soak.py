"""Soak and leak test: a long mixed load through one proxyd, then check it came back to rest.

``python -m benchmarks.soak [--requests 1000000] [--tunnels 100000] [--max-seconds 1800]``

Over loopback, proxyd (CPU 0) carries, from clients on CPU 1:

- plain HTTP GETs on kept-alive connections, alternating between two hosts whose rules
  send them ``direct`` and through a SOCKS5 upstream (microsocks), so every connection
  mixes routes;
- tunnels, alternating CONNECT and SOCKS5 (remote DNS) and the same two routes, each
  carrying one GET;
- clients that give up at a random point (mid-head, before the answer, mid-body, with a
  reset) on ``--disconnect-rate`` of the exchanges.

The direct target is 127.0.0.1; the upstream one is a name that only microsocks can
resolve (it runs in a private mount namespace whose /etc/hosts maps it to 127.0.0.1), so
proxyd never sees a public-looking name resolve to loopback, which it would rightly take
for DNS poisoning.

Before the load (after a warm-up) and after it (once proxyd is quiet), it reads proxyd's
open descriptors and RSS from /proc and its asyncio task count from the
``proxyd_asyncio_tasks`` metric, then prints one table and a JSON line. It fails (exit 1)
when descriptors or tasks are not back to the baseline exactly, RSS grew more than 10 %,
an exchange that was not abandoned on purpose failed, or proxyd logged an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import procs
from benchmarks.origin import BODY_SIZE, Origin

# Direct by address; the other name exists only in microsocks' /etc/hosts (see above).
HOSTS = ("127.0.0.1", "upstream.soak")
# Idle pooled origin connections expire after 60 s, checked every 15 s.
SETTLE_SECONDS = 90.0
RSS_TOLERANCE = 0.10
_HEAD_END = b"\r\n\r\n"


@dataclass
class Tally:
    requests: int = 0
    tunnels: int = 0
    abandoned: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(what[:200])


class Abandon(Exception):
    """The client gives up here on purpose."""


class Client:
    def __init__(self, proxy: int, origin_ports: tuple[int, int], rate: float, seed: int) -> None:
        self.proxy = proxy
        self.ports = dict(zip(HOSTS, origin_ports, strict=True))
        self.rate = rate
        self.rng = random.Random(seed)
        self.tally = Tally()

    def maybe_abandon(self, writer: asyncio.StreamWriter, point: str) -> None:
        if self.rng.random() < self.rate / 4:  # four abandon points per exchange
            if point == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise Abandon(point)

    async def read_response(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(_HEAD_END)
        if not head.startswith(b"HTTP/1.1 200 "):
            raise ValueError(head[:80].decode(errors="replace"))
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        half = await reader.readexactly(length // 2)
        self.maybe_abandon(writer, "reset")
        rest = await reader.readexactly(length - len(half))
        if length != BODY_SIZE or not (half + rest).startswith(b"origin "):
            raise ValueError("wrong body")

    async def http_connection(self, budget: list[int]) -> None:
        """One kept-alive client connection carrying requests until it or the budget ends."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.proxy)
        try:
            while budget[0] > 0:
                budget[0] -= 1
                host = HOSTS[budget[0] % 2]
                req = (
                    f"GET http://{host}:{self.ports[host]}/1k HTTP/1.1\r\nHost: {host}\r\n\r\n"
                ).encode()
                self.maybe_abandon(writer, "before-request")
                cut = self.rng.randrange(1, len(req))
                writer.write(req[:cut])
                self.maybe_abandon(writer, "mid-head")
                writer.write(req[cut:])
                self.maybe_abandon(writer, "before-answer")
                await self.read_response(reader, writer)
                self.tally.requests += 1
        finally:
            writer.close()

    async def tunnel(self, number: int) -> None:
        host = HOSTS[number % 2]
        port = self.ports[host]
        reader, writer = await asyncio.open_connection("127.0.0.1", self.proxy)
        try:
            if number % 4 < 2:
                writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\n\r\n".encode())
                self.maybe_abandon(writer, "mid-handshake")
                head = await reader.readuntil(_HEAD_END)
                if not head.startswith(b"HTTP/1.1 200 "):
                    raise ValueError(head[:80].decode(errors="replace"))
            else:
                writer.write(b"\x05\x01\x00")
                self.maybe_abandon(writer, "mid-handshake")
                if await reader.readexactly(2) != b"\x05\x00":
                    raise ValueError("socks greeting refused")
                name = host.encode()
                writer.write(
                    b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port)
                )
                reply = await reader.readexactly(10)
                if reply[1] != 0:
                    raise ValueError(f"socks reply {reply[1]}")
            self.maybe_abandon(writer, "before-request")
            writer.write(f"GET /1k HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            self.maybe_abandon(writer, "before-answer")
            await self.read_response(reader, writer)
            self.tally.tunnels += 1
        finally:
            writer.close()

    async def run(self, requests: int, tunnels: int, concurrency: int, deadline: float) -> None:
        budget = [requests]
        tunnel_numbers = iter(range(tunnels))

        async def http_worker() -> None:
            while budget[0] > 0 and time.monotonic() < deadline:
                await self.guarded(self.http_connection(budget))

        async def tunnel_worker() -> None:
            for number in tunnel_numbers:
                if time.monotonic() >= deadline:
                    return
                await self.guarded(self.tunnel(number))

        await asyncio.gather(
            *(http_worker() for _ in range(concurrency)),
            *(tunnel_worker() for _ in range(concurrency)),
        )

    async def guarded(self, exchange: object) -> None:
        try:
            await exchange  # type: ignore[misc]
        except Abandon:
            self.tally.abandoned += 1
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.tally.error(f"{type(exc).__name__}: {exc}")


@dataclass
class Reading:
    fds: int
    tasks: int
    rss_kib: int


def read_state(pid: int, admin: int) -> Reading:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as response:
        text = response.read().decode()
    tasks = int(float(re.search(r"^proxyd_asyncio_tasks (\S+)$", text, re.M).group(1)))  # type: ignore[union-attr]
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return Reading(fds, tasks, procs.rss_kib(pid))


def settle(pid: int, admin: int, baseline: Reading) -> tuple[Reading, float]:
    """Wait (bounded) for descriptors and tasks to return to the baseline; the last reading."""
    started = time.monotonic()
    while True:
        now = read_state(pid, admin)
        if (now.fds, now.tasks) == (baseline.fds, baseline.tasks):
            return now, time.monotonic() - started
        if time.monotonic() - started > SETTLE_SECONDS:
            return now, time.monotonic() - started
        time.sleep(0.5)  # nothing to wait on from outside: poll, bounded by SETTLE_SECONDS


def wrap_hosts(workdir: Path, cmd: list[str]) -> list[str]:
    hosts = workdir / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {HOSTS[1]}\n")
    script = f'mount --bind {hosts} /etc/hosts\nexec "$@"'
    return ["unshare", "-m", "sh", "-ec", script, "sh", *cmd]


def start_daemons(workdir: Path) -> tuple[Origin, procs.Started, procs.Started, int, int]:
    origin = Origin.start(workdir)
    socks_port, proxy_port, admin_port = procs.free_port(), procs.free_port(), procs.free_port()
    microsocks = shutil.which("microsocks") or "/usr/bin/microsocks"
    socks = procs.start(
        "microsocks",
        wrap_hosts(workdir, [microsocks, "-i", "127.0.0.1", "-p", str(socks_port)]),
        procs.CLIENT_CPU,
        workdir,
    )
    procs.wait_port(socks, socks_port)
    config = workdir / "proxyd.toml"
    config.write_text(
        f'listen = ["127.0.0.1:{proxy_port}"]\nadmin = "127.0.0.1:{admin_port}"\n'
        f'state_dir = "{workdir / "state"}"\n'
        "[limits]\nmax_connections = 4096\nmax_connections_per_client = 4096\n"
        ""
        f'[[upstream]]\nname = "socks"\nurl = "socks5h://127.0.0.1:{socks_port}"\n'
        f'[[rule]]\ndomain = "{HOSTS[1]}"\nroute = "socks"\n'
    )
    cmd = [sys.executable, "-m", "proxyd", "run", "-c", str(config)]
    proxyd = procs.start("proxyd", cmd, procs.PROXY_CPU, workdir)
    procs.wait_port(proxyd, proxy_port)
    procs.wait_port(proxyd, admin_port)
    return origin, socks, proxyd, proxy_port, admin_port


def load(args: argparse.Namespace, proxy: int, ports: tuple[int, int], deadline: float) -> Tally:
    client = Client(proxy, ports, args.disconnect_rate, args.seed)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(client.run(args.requests, args.tunnels, args.concurrency, deadline))
    return client.tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--tunnels", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32, help="clients of each kind")
    parser.add_argument("--disconnect-rate", type=float, default=0.02)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    procs.raise_nofile(65536)
    workdir = Path(tempfile.mkdtemp(prefix="proxyd-soak-"))
    workdir.chmod(0o755)  # nginx's worker user must read the origin's files
    origin, socks, proxyd, proxy, admin = start_daemons(workdir)
    pid = proxyd.pid
    try:
        ports = (origin.port_a, origin.port_b)
        warm = argparse.Namespace(**{**vars(args), "requests": 2000, "tunnels": 400})
        fresh = read_state(pid, admin)
        warm_tally = load(warm, proxy, ports, time.monotonic() + 120)
        # The baseline is proxyd at rest after it has done everything once (lazy set-up
        # done, warm-up's pooled origin connections expired).
        baseline, _ = settle(pid, admin, fresh)
        started = time.monotonic()
        tally = load(args, proxy, ports, started + args.max_seconds)
        duration = time.monotonic() - started
        after, settle_s = settle(pid, admin, baseline)
        log = proxyd.log_path.read_text(errors="replace")
    finally:
        procs.stop(proxyd)
        procs.stop(socks)
        origin.stop()
    error_lines = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    rss_growth = (after.rss_kib - baseline.rss_kib) / baseline.rss_kib
    ok = (
        (after.fds, after.tasks) == (baseline.fds, baseline.tasks)
        and rss_growth <= RSS_TOLERANCE
        and tally.errors == 0
        and warm_tally.errors == 0
        and not error_lines
    )
    report = {
        "requests": tally.requests,
        "tunnels": tally.tunnels,
        "abandoned": tally.abandoned,
        "errors": tally.errors,
        "first_errors": tally.first_errors,
        "proxyd_error_log_lines": len(error_lines),
        "duration_s": round(duration, 1),
        "requests_per_s": round(tally.requests / duration),
        "tunnels_per_s": round(tally.tunnels / duration),
        "fds": [baseline.fds, after.fds],
        "tasks": [baseline.tasks, after.tasks],
        "rss_kib": [baseline.rss_kib, after.rss_kib],
        "rss_growth_pct": round(100 * rss_growth, 1),
        "settle_s": round(settle_s, 1),
        "ok": ok,
    }
    print(f"soak over {duration:.0f}s (asked: {args.requests} requests, {args.tunnels} tunnels)")
    print(f"  requests {tally.requests}  tunnels {tally.tunnels}  abandoned {tally.abandoned}")
    print(f"  errors {tally.errors}  proxyd error log lines {len(error_lines)}")
    print(f"  fds    before {baseline.fds:>8}  after {after.fds:>8}")
    print(f"  tasks  before {baseline.tasks:>8}  after {after.tasks:>8}")
    print(
        f"  RSS    before {baseline.rss_kib:>6} KiB  after {after.rss_kib:>6} KiB"
        f"  ({100 * rss_growth:+.1f} %)  settled in {settle_s:.1f}s"
    )
    for line in tally.first_errors + error_lines[:5]:
        print("  !", line)
    print("PASS" if ok else "FAIL")
    print(json.dumps(report))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
