"""SpliceTunnel moving bulk over real loopback TCP: every byte arrives once and in order in
both directions, each side's half-close reaches the other while the opposite direction
keeps flowing, and a bulk direction moves through a 1 MiB pipe where the system allows
one, while a tunnel that only exchanged a few small messages keeps the 64 KiB default
(issue 11: bulk at a Go splice proxy's level, idle tunnels small)."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import socket
from pathlib import Path

from proxyd.dataplane._relay import DEFAULT_PIPE_SIZE, PIPE_SIZE, SpliceTunnel, _Pump

F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
UP_BYTES = 3 * 1024 * 1024 + 17  # odd sizes: no chunk boundary lines up with the end
DOWN_BYTES = 9 * 1024 * 1024 + 5


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    for sock in (near, far):
        sock.setblocking(False)
    return near, far


def _pattern(seed: int, n: int) -> bytes:
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest() * 2048  # 64 KiB, not repeating
    return (block * (n // len(block) + 1))[:n]


async def _read_to_eof(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    chunks = []
    while chunk := await loop.sock_recv(sock, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _pipe_size(pump: _Pump) -> int:
    assert pump.pipe_w >= 0, "this direction never made its pipe"
    return int(fcntl.fcntl(pump.pipe_w, F_GETPIPE_SZ))


def _expected_bulk_pipe_size() -> int:
    # Unprivileged processes may not grow a pipe past fs.pipe-max-size; the relay then keeps
    # the default one (smaller splices, same bytes).
    allowed = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    return PIPE_SIZE if allowed >= PIPE_SIZE else DEFAULT_PIPE_SIZE


async def _bulk_both_ways() -> None:
    loop = asyncio.get_running_loop()
    client_app, client_end = _tcp_pair()
    server_end, server_app = _tcp_pair()
    up, down = _pattern(1, UP_BYTES), _pattern(2, DOWN_BYTES)
    tunnel = SpliceTunnel(client_end, server_end, idle_timeout=60.0)
    done = tunnel.start()
    sizes: dict[str, int] = {}

    async def client() -> bytes:
        await loop.sock_sendall(client_app, up)
        client_app.shutdown(socket.SHUT_WR)  # done sending, still reading
        return await _read_to_eof(loop, client_app)

    async def server() -> bytes:
        received = await _read_to_eof(loop, server_app)  # the client's half-close arrived
        sizes["up"] = _pipe_size(tunnel.up)
        await loop.sock_sendall(server_app, down)  # and the other direction still flows
        sizes["down"] = _pipe_size(tunnel.down)
        server_app.shutdown(socket.SHUT_WR)
        return received

    got_down, got_up = await asyncio.wait_for(asyncio.gather(client(), server()), 30)
    assert await asyncio.wait_for(done, 5) == (UP_BYTES, DOWN_BYTES)
    assert len(got_up) == UP_BYTES and got_up == up
    assert len(got_down) == DOWN_BYTES and got_down == down
    assert sizes == {"up": _expected_bulk_pipe_size(), "down": _expected_bulk_pipe_size()}
    for sock in (client_app, server_app):
        sock.close()


def test_a_tunnel_relays_every_byte_both_ways_and_passes_each_half_close_on() -> None:
    asyncio.run(_bulk_both_ways())


async def _small_messages() -> int:
    loop = asyncio.get_running_loop()
    client_app, client_end = _tcp_pair()
    server_end, server_app = _tcp_pair()
    tunnel = SpliceTunnel(client_end, server_end, idle_timeout=60.0)
    done = tunnel.start()
    for i in range(20):
        message = b"ping %d\n" % i
        await loop.sock_sendall(client_app, message)
        echoed = b""
        while len(echoed) < len(message):
            echoed += await loop.sock_recv(server_app, 100)
        await loop.sock_sendall(server_app, echoed)
        back = b""
        while len(back) < len(message):
            back += await loop.sock_recv(client_app, 100)
        assert back == message
    size = _pipe_size(tunnel.down)
    client_app.close()
    server_app.close()
    await asyncio.wait_for(done, 5)
    return size


def test_a_tunnel_of_small_messages_keeps_the_default_pipe() -> None:
    assert asyncio.run(_small_messages()) == DEFAULT_PIPE_SIZE
