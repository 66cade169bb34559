"""SpliceTunnel's client-done hook over real socket pairs: it is asked once, when the
client finishes first or as the tunnel ends, and may end a tunnel whose server will
never speak again (the "16 KB freeze") instead of leaving it to the idle timeout."""

from __future__ import annotations

import asyncio
import socket

from proxyd.dataplane._relay import SpliceTunnel

SERVER_DATA = b"s" * 16_000


def _pairs() -> tuple[socket.socket, socket.socket, socket.socket, socket.socket]:
    client_app, client_end = socket.socketpair()
    server_end, server_app = socket.socketpair()
    for sock in (client_end, server_end, client_app, server_app):
        sock.setblocking(False)
    return client_app, client_end, server_end, server_app


async def _read_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        assert chunk, "closed early"
        data += chunk
    return data


async def _tunnel_with_hook(answer: bool) -> tuple[list[tuple[bool, float, int]], SpliceTunnel]:
    loop = asyncio.get_running_loop()
    client_app, client_end, server_end, server_app = _pairs()
    calls: list[tuple[bool, float, int]] = []

    def client_done(tunnel: SpliceTunnel) -> bool:
        calls.append((tunnel.down.eof, tunnel.server_silence, tunnel.down.moved))
        return answer

    tunnel = SpliceTunnel(client_end, server_end, idle_timeout=60.0, on_client_done=client_done)
    tunnel.start()
    await loop.sock_sendall(server_app, SERVER_DATA)
    assert await _read_exactly(loop, client_app, len(SERVER_DATA)) == SERVER_DATA
    client_app.shutdown(socket.SHUT_WR)  # the client gives up; the server stays silent
    if answer:
        await asyncio.wait_for(tunnel.done, 5)
    else:
        # The server sees the client's EOF and, unlike a frozen one, finishes normally.
        assert await asyncio.wait_for(loop.sock_recv(server_app, 10), 5) == b""
        assert calls and not tunnel.done.done()
        server_app.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(tunnel.done, 5)
    for sock in (client_app, server_app):
        sock.close()
    return calls, tunnel


def test_hook_that_sees_a_frozen_server_ends_the_tunnel_at_once() -> None:
    calls, tunnel = asyncio.run(_tunnel_with_hook(answer=True))
    assert len(calls) == 1
    server_closed, silence, server_bytes = calls[0]
    assert not server_closed and server_bytes == len(SERVER_DATA)
    assert 0.0 <= silence <= tunnel.ended_at - tunnel.down.last_read
    assert tunnel.done.result() == (0, len(SERVER_DATA))


def test_hook_that_declines_leaves_the_tunnel_to_finish_normally_and_is_asked_once() -> None:
    calls, tunnel = asyncio.run(_tunnel_with_hook(answer=False))
    assert len(calls) == 1  # not asked again when the tunnel ends
    assert tunnel.down.eof


async def _server_closes_first() -> list[bool]:
    loop = asyncio.get_running_loop()
    client_app, client_end, server_end, server_app = _pairs()
    seen: list[bool] = []

    def client_done(tunnel: SpliceTunnel) -> bool:
        seen.append(tunnel.down.eof)
        return False

    tunnel = SpliceTunnel(client_end, server_end, idle_timeout=60.0, on_client_done=client_done)
    tunnel.start()
    await loop.sock_sendall(server_app, SERVER_DATA)
    server_app.shutdown(socket.SHUT_WR)
    assert await _read_exactly(loop, client_app, len(SERVER_DATA)) == SERVER_DATA
    client_app.shutdown(socket.SHUT_WR)
    await asyncio.wait_for(tunnel.done, 5)
    for sock in (client_app, server_app):
        sock.close()
    return seen


def test_when_the_server_finished_first_the_hook_is_asked_as_the_tunnel_ends() -> None:
    assert asyncio.run(_server_closes_first()) == [True]


async def _idle_timeout() -> list[bool]:
    loop = asyncio.get_running_loop()
    client_app, client_end, server_end, server_app = _pairs()
    timed_out: list[bool] = []

    def client_done(tunnel: SpliceTunnel) -> bool:
        timed_out.append(tunnel.timed_out)
        return False

    tunnel = SpliceTunnel(client_end, server_end, idle_timeout=0.1, on_client_done=client_done)
    tunnel.start()
    await loop.sock_sendall(server_app, SERVER_DATA)
    assert await _read_exactly(loop, client_app, len(SERVER_DATA)) == SERVER_DATA
    await asyncio.wait_for(tunnel.done, 5)  # both sides stay quiet: the idle timer ends it
    for sock in (client_app, server_app):
        sock.close()
    return timed_out


def test_a_tunnel_ended_by_the_idle_timer_tells_the_hook_nobody_gave_up() -> None:
    # Learning must not read an idle keep-alive connection's end as a frozen server.
    assert asyncio.run(_idle_timeout()) == [True]
