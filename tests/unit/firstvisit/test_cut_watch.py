"""The watch on a first visit's direct tunnel, over real TCP sockets: a server side reset
while its data flows to a client still reading is a cut after data; a client that
closes the connection itself never makes the domain suspected, whatever the server does
after."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path
from types import SimpleNamespace

from proxyd.config._config import parse_config
from proxyd.dataplane import RequestRecord
from proxyd.firstvisit._freeze import freeze_watch
from proxyd.firstvisit._tunnel import relay
from proxyd.learning._detect import Reason
from proxyd.outbound import Connection
from proxyd.outbound._dialers import DirectDialer
from proxyd.routing import RoutePlan
from proxyd.routing._learned import LearnedRoutes
from proxyd.runtime import Runtime

SENT_BEFORE_CUT = 200_000
HOST = "www.cut.example"


def _reset_on_close(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout: close() sends RST, as the censor's REJECT does.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _tunnel(tmp_path: Path, *, client_leaves_first: bool) -> LearnedRoutes:
    loop = asyncio.get_running_loop()
    config = parse_config("", source="test.toml")
    learned = LearnedRoutes(config.learning, tmp_path, connect_timeout=5.0)
    rt = SimpleNamespace(learned=learned, config=config, stats=learned.stats)
    listener = socket.create_server(("127.0.0.1", 0))
    client_app, client_end = socket.socketpair()
    server_end = socket.create_connection(listener.getsockname())
    origin, _ = listener.accept()
    for sock in (client_app, client_end, server_end, origin):
        sock.setblocking(False)
    plan = RoutePlan((DirectDialer(),), "test", learn=True)
    record = RequestRecord("connect", "127.0.0.1", HOST, 443)
    watch = freeze_watch(cast_rt(rt), HOST, plan, "direct", record)
    conn = Connection(server_end, "direct")
    relaying = asyncio.ensure_future(
        relay(cast_rt(rt), client_end, conn, record, on_client_done=watch)
    )
    await loop.sock_sendall(origin, b"d" * SENT_BEFORE_CUT)
    got = 0
    while got < SENT_BEFORE_CUT:
        data = await loop.sock_recv(client_app, 65536)
        assert data
        got += len(data)
    if client_leaves_first:
        client_app.shutdown(socket.SHUT_WR)
        # The server sees the client leave, then resets (a server that lingers no more).
        assert await loop.sock_recv(origin, 10) == b""
    _reset_on_close(origin)
    origin.close()
    await asyncio.wait_for(relaying, 5)
    for sock in (client_app, listener):
        sock.close()
    return learned


def cast_rt(rt: SimpleNamespace) -> Runtime:
    return rt  # type: ignore[return-value]  # the watch and relay read only these fields


def test_a_server_reset_while_the_client_reads_is_a_cut_after_data(tmp_path: Path) -> None:
    learned = asyncio.run(_tunnel(tmp_path, client_leaves_first=False))
    assert learned.cut_suspected(HOST)
    assert learned.table.cut_point(HOST, learned.now) >= SENT_BEFORE_CUT  # type: ignore[operator]
    assert learned.stats.detections[Reason.CUT_AFTER_DATA] == 1


def test_a_connection_the_client_closed_itself_is_never_suspected(tmp_path: Path) -> None:
    learned = asyncio.run(_tunnel(tmp_path, client_leaves_first=True))
    assert not learned.cut_suspected(HOST)
    assert not learned.stall_suspected(HOST)
    assert learned.stats.detections[Reason.CUT_AFTER_DATA] == 0
