"""An idle daemon has not loaded aiohttp or prometheus-client; the first admin request does.

Issue 6, target 4 (idle RSS): aiohttp and prometheus-client are about half of an idle
daemon's memory, so the admin app starts on the admin port's first connection and a mirror
route is only built when a ``[[mirror]]`` is configured. What the daemon imported is read
from outside, from the interpreter's own report: ``PYTHONPROFILEIMPORTTIME=1`` makes it
write one stderr line per module, as it imports it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxyd.ops._admin import AdminServer
from tests.integration.test_admin import ADMIN_LISTENING, context
from tests.support.origin import OriginServer
from tests.support.proc import Proxyd

IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$")
LAZY = ("aiohttp", "prometheus_client")


def imported(proc: Proxyd) -> set[str]:
    return {m.group(1) for line in proc.log_text().splitlines() if (m := IMPORTED.match(line))}


def loaded(proc: Proxyd, package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in imported(proc))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Proxyd, int]]:
    """``proxyd run`` with the embedded defaults, on free ports."""
    proc = Proxyd(
        ["--admin", "127.0.0.1:0"], tmp_path=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    port = int(proc.wait_for_log(ADMIN_LISTENING).group(2))
    yield proc, port
    assert proc.stop() == 0
    proc.assert_clean_log()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=15)


def healthy(status_and_body: tuple[int, bytes]) -> bool:
    """The /healthz answer of the defaults: their tor upstream may be down, or not checked yet."""
    return status_and_body in ((200, b"ok\n"), (503, b"every upstream is down: tor\n"))


def answer(sock: socket.socket, path: str) -> tuple[int, bytes]:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_daemon_serving_proxy_traffic_loads_aiohttp_only_for_its_first_admin_request(
    daemon: tuple[Proxyd, int],
) -> None:
    proc, admin_port = daemon
    origin = OriginServer("origin")
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proc.url}))
        with opener.open(f"{origin.url}/page", timeout=10) as resp:
            assert resp.read() == b"hello from origin /page\n"
    finally:
        origin.stop()
    assert loaded(proc, "proxyd.daemon")  # the report is there: it names what was imported
    assert [p for p in LAZY if loaded(proc, p)] == []

    assert healthy(answer(connect(admin_port), "/healthz"))
    status, body = answer(connect(admin_port), "/metrics")
    assert status == 200
    requests = {
        (s.labels["protocol"], s.labels["route"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "proxyd_requests_total"
    }
    assert requests == {("http", "direct", "ok"): 1.0}
    assert [p for p in LAZY if loaded(proc, p)] == list(LAZY)


# What only a rare path needs (writing TOML, a config error's "did you mean", credentials,
# long isolation keys, sizes written with a unit): 1.3 MB of an idle daemon (issue 11).
RARE = ("toml", "difflib", "hmac", "hashlib", "decimal")


def test_a_daemon_serving_proxy_traffic_keeps_modules_of_rare_paths_unloaded(
    daemon: tuple[Proxyd, int],
) -> None:
    proc, _admin_port = daemon
    origin = OriginServer("origin")
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proc.url}))
        with opener.open(f"{origin.url}/page", timeout=10) as resp:
            assert resp.read() == b"hello from origin /page\n"
    finally:
        origin.stop()
    assert loaded(proc, "proxyd.daemon")
    assert [m for m in RARE if loaded(proc, m)] == []


def test_two_first_admin_connections_together_are_both_served(
    daemon: tuple[Proxyd, int],
) -> None:
    proc, admin_port = daemon
    # Both are accepted by the kernel before the app exists: they wait in the backlog
    # while the daemon imports aiohttp, which takes far longer than two connects.
    first, second = connect(admin_port), connect(admin_port)
    assert healthy(answer(second, "/healthz"))
    status, body = answer(first, "/metrics")
    assert status == 200 and b"proxyd_build_info{" in body
    assert healthy(answer(connect(admin_port), "/healthz"))
    assert proc.log_text().count("admin app started") == 1


async def test_connections_waiting_together_start_the_admin_app_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "proxyd.admin")
    server = AdminServer(context())
    await server.start(socket.create_server(("127.0.0.1", 0)))
    _, port = server.addresses[0]
    # Blocking connects: both are in the backlog before the loop first sees the socket.
    waiting = [connect(port) for _ in range(3)]
    answers = await asyncio.gather(*(asyncio.to_thread(answer, c, "/healthz") for c in waiting))
    assert answers == [(200, b"ok\n")] * 3
    assert caplog.text.count("admin app started") == 1
    await server.stop()


async def test_stopping_an_admin_server_nobody_asked_closes_its_port() -> None:
    server = AdminServer(context())
    await server.start(socket.create_server(("127.0.0.1", 0)))
    _, port = server.addresses[0]
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        connect(port).close()


async def test_an_admin_app_that_cannot_start_is_logged_and_its_port_closed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from proxyd.ops import _admin_app as admin_app

    def broken(ctx: object) -> None:
        raise RuntimeError("no app today")

    # A fault the daemon cannot be made to hit from outside: its own app failing to build.
    monkeypatch.setattr(admin_app, "make_app", broken)
    server = AdminServer(context())
    await server.start(socket.create_server(("127.0.0.1", 0)))
    _, port = server.addresses[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        rest = await asyncio.wait_for(reader.read(), 15)
    except ConnectionResetError:
        rest = b""
    writer.close()
    assert rest == b""  # refused at once, not left waiting in the backlog
    assert "admin listener failed to start" in caplog.text
    assert "no app today" in caplog.text
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        connect(port).close()
