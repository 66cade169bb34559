"""A first-visit exchange leaves no reader behind on the origin socket when it returns.

The attempt's socket may be closed the moment the exchange ends (a lost race, a failed
route), and the data plane's accept loop may get the same fd number at once. A reader
still registered then belongs to someone else's transport (uvloop refuses to remove it:
"File descriptor N is used by transport"), so it must be gone before the exchange returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import SimpleNamespace
from typing import Any

from proxyd.config import load_config
from proxyd.firstvisit._retry import TunnelVisit
from proxyd.learning import Stats
from proxyd.outbound import AttemptFailed, Connection

CLIENT_HELLO = b"\x16\x03\x01\x00\x05hello"


async def _answer_after_first_bytes(origin: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    assert await loop.sock_recv(origin, 1024) == CLIENT_HELLO
    await loop.sock_sendall(origin, b"server hello")


async def test_the_exchange_removes_its_origin_reader_before_it_returns() -> None:
    # The origin answers the replayed first bytes: the reader was for a readable socket.
    loop = asyncio.get_running_loop()
    client, client_peer = socket.socketpair()
    ours, origin = socket.socketpair()
    for sock in (client, client_peer, ours, origin):
        sock.setblocking(False)
    rt: Any = SimpleNamespace(config=load_config(None), learned=None, stats=Stats())
    visit = TunnelVisit(rt, client, "example.org", 443, None, None, "", CLIENT_HELLO)  # type: ignore[arg-type]
    server = asyncio.ensure_future(_answer_after_first_bytes(origin))
    try:
        answer = await visit._exchange(Connection(ours, "direct"), "direct")
        assert answer == b"server hello"
        # Nothing may run between the exchange's end and the socket's close.
        assert loop.remove_reader(ours.fileno()) is False
    finally:
        await server
        for sock in (client, client_peer, ours, origin):
            sock.close()


async def test_an_exchange_that_times_out_leaves_no_reader_either() -> None:
    # Nobody speaks: the exchange gives up while it is still watching the origin.
    loop = asyncio.get_running_loop()
    client, client_peer = socket.socketpair()
    ours, origin = socket.socketpair()
    for sock in (client, client_peer, ours, origin):
        sock.setblocking(False)
    config = SimpleNamespace(limits=SimpleNamespace(idle_timeout=0.05))
    rt: Any = SimpleNamespace(config=config, learned=None, stats=Stats())
    visit = TunnelVisit(rt, client, "example.org", 443, None, None, "", b"")  # type: ignore[arg-type]
    try:
        with contextlib.suppress(AttemptFailed):
            await visit._exchange(Connection(ours, "direct"), "direct")
        assert loop.remove_reader(ours.fileno()) is False
    finally:
        for sock in (client, client_peer, ours, origin):
            sock.close()
