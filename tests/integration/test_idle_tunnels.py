"""10,000 idle tunnels held at once, memory per tunnel reported, and connection 10,001 over
``max_connections`` refused cleanly while the held tunnels still carry bytes.

The count is what the descriptor limit allows, up to 10,000: each tunnel costs proxyd two
sockets (plus pipes while data is in flight) and this test as many again, and RLIMIT_NOFILE's
hard limit can only be raised with CAP_SYS_RESOURCE. The test prints the count it used and
why it is lower when it is.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_admin import ADMIN_LISTENING, wait_until
from tests.support.proc import Proxyd
from tests.support.scrape import limit_hits, scrape

WANTED = 10_000
# Tunnels through which bytes are echoed after the refusal; their pipes need descriptors too.
CHECKED = 100
RESERVE = 256  # listener, admin, state, logs, the refused connections


def hard_nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


# A plain echo server in its own process, so the test's descriptors and its do not add up.
ECHO = """
import asyncio, sys

async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()

async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def nofile() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the echo server inherits it
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def echo_port(nofile: None) -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    yield int(proc.stdout.readline())
    proc.terminate()
    proc.wait()


async def open_tunnel(
    address: tuple[str, int], target: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return reader, writer


async def open_many(
    address: tuple[str, int], target: str, count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    gate = asyncio.Semaphore(256)  # a browser-like burst, not 10,000 SYNs at once

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await open_tunnel(address, target)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def echo_through(
    tunnel: tuple[asyncio.StreamReader, asyncio.StreamWriter], payload: bytes
) -> bool:
    reader, writer = tunnel
    writer.write(payload)
    return await reader.readexactly(len(payload)) == payload


async def refused_answer(address: tuple[str, int], data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(data)
    answer = await reader.read()
    writer.close()
    return answer


def set_max_connections(proxy: Proxyd, count: int) -> None:
    assert proxy.config_path is not None
    limits = f"[limits]\nmax_connections = {count}\nmax_connections_per_client = {count}\n"
    proxy.config_path.write_text(limits)
    reloads = proxy.log_text().count("configuration reloaded")
    proxy.signal(signal.SIGHUP)
    wait_until(lambda: proxy.log_text().count("configuration reloaded") > reloads)


def proxyd_fds(proxy: Proxyd) -> int:
    return len(list(Path(f"/proc/{proxy.proc.pid}/fd").iterdir()))


async def test_ten_thousand_idle_tunnels_then_one_over_the_limit_is_refused(
    tmp_path: Path, echo_port: int
) -> None:
    hard = hard_nofile()
    target = f"127.0.0.1:{echo_port}"
    # proxyd starts with a soft limit of 1024 and must raise it to the hard limit itself.
    wrap = ["prlimit", f"--nofile=1024:{hard}", "--"]
    proxy = Proxyd(
        ["--admin", "127.0.0.1:0"],
        config=f"[limits]\nmax_connections = {WANTED}\n",
        tmp_path=tmp_path,
        wrap=wrap,
    )
    admin_match = proxy.wait_for_log(ADMIN_LISTENING)
    admin = f"http://{admin_match.group(1)}:{admin_match.group(2)}"
    tunnels: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        # A first batch measures what one idle tunnel costs in descriptors and memory.
        tunnels += await open_many(proxy.address, target, 100)
        fds_at_100, rss_at_100 = proxyd_fds(proxy), proxy.rss_kib()
        tunnels += await open_many(proxy.address, target, 100)
        per_tunnel_fds = (proxyd_fds(proxy) - fds_at_100) / 100
        # Pipes of the echoed tunnels (if made on demand) must fit as well.
        budget = hard - RESERVE - fds_at_100 - CHECKED * 4
        count = min(WANTED, 200 + int(budget / per_tunnel_fds))
        count = min(count, (hard - RESERVE) // 2)  # this process holds one socket per tunnel
        set_max_connections(proxy, count)
        tunnels += await open_many(proxy.address, target, count - len(tunnels))
        rss_held = proxy.rss_kib()
        per_tunnel = (rss_held - rss_at_100) * 1024 / (count - 100)
        why = (
            ""
            if count == WANTED
            else (
                f" (RLIMIT_NOFILE hard limit {hard} here, {per_tunnel_fds:g} fds per idle tunnel)"
            )
        )
        print(
            f"\n{count} idle tunnels held{why}: proxyd RSS {rss_held} KiB, "
            f"{per_tunnel / 1024:.1f} KiB per tunnel in user space (socket buffers: kernel)"
        )
        assert scrape(admin)['proxyd_tunnels_active{route="direct"}'] == count
        # Number count + 1: a clean refusal in each protocol, the daemon unharmed.
        http = await refused_answer(proxy.address, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
        assert http.startswith(b"HTTP/1.1 503 "), http
        assert await refused_answer(proxy.address, b"\x05\x01\x00") == b"\x05\xff"
        assert limit_hits(admin, "max_connections") == 2
        # ... while held tunnels, first, last and spread over the rest, still relay both ways.
        step = max(1, len(tunnels) // CHECKED)
        checked = [*tunnels[::step][: CHECKED - 1], tunnels[-1]]
        results = await asyncio.gather(
            *(echo_through(t, f"tunnel {i}\n".encode()) for i, t in enumerate(checked))
        )
        assert all(results)
        assert per_tunnel < 32 * 1024, f"{per_tunnel:.0f} bytes of RSS per idle tunnel"
    finally:
        for _reader, writer in tunnels:
            writer.close()
        proxy.stop()
    proxy.assert_clean_log()
