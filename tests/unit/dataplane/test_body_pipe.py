"""BodyPipe, the plain-HTTP body path, over real loopback TCP: exactly the body's bytes move
and the next answer stays in the socket, an early close or a stall is an error, and no
reader or writer callback is left behind on any of those ends, nor when the request that
awaited the body is cancelled."""

from __future__ import annotations

import asyncio
import socket

import pytest

from proxyd.dataplane._relay import BodyPipe

BODY = 5 * 1024 * 1024 + 3
NEXT_ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    for sock in (near, far):
        sock.setblocking(False)
    return near, far


def _no_callbacks_left(loop: asyncio.AbstractEventLoop, *socks: socket.socket) -> bool:
    # remove_* answers whether something was registered (and takes it away).
    return not any(loop.remove_reader(s.fileno()) or loop.remove_writer(s.fileno()) for s in socks)


async def _read_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < n:
        chunk = await loop.sock_recv(sock, min(1 << 20, n - len(data)))
        assert chunk, "closed early"
        data += chunk
    return bytes(data)


async def _exact_body_then_next_answer() -> None:
    loop = asyncio.get_running_loop()
    origin_app, origin = _tcp_pair()
    client, client_app = _tcp_pair()
    body = bytes(range(256)) * (BODY // 256) + b"end"
    pipe = BodyPipe()

    async def origin_sends() -> None:
        await loop.sock_sendall(origin_app, body + NEXT_ANSWER)

    sending = asyncio.ensure_future(origin_sends())
    copying = asyncio.ensure_future(pipe.copy_exact(origin, client, BODY, timeout=10))
    assert await asyncio.wait_for(_read_exactly(client_app, BODY), 20) == body
    await asyncio.wait_for(copying, 5)
    await sending
    # The next answer was not taken: it is still the origin socket's to read.
    assert await asyncio.wait_for(_read_exactly(origin, len(NEXT_ANSWER)), 5) == NEXT_ANSWER
    assert _no_callbacks_left(loop, origin, client)
    pipe.close()
    for sock in (origin_app, origin, client, client_app):
        sock.close()


def test_copy_exact_moves_the_body_and_leaves_the_next_answer_in_the_socket() -> None:
    asyncio.run(_exact_body_then_next_answer())


async def _until_eof() -> int:
    loop = asyncio.get_running_loop()
    origin_app, origin = _tcp_pair()
    client, client_app = _tcp_pair()
    pipe = BodyPipe()
    copying = asyncio.ensure_future(pipe.copy_until_eof(origin, client, timeout=10))
    await loop.sock_sendall(origin_app, b"x" * BODY)
    origin_app.close()
    got = await asyncio.wait_for(_read_exactly(client_app, BODY), 20)
    count = await asyncio.wait_for(copying, 5)
    assert got == b"x" * BODY and _no_callbacks_left(loop, origin, client)
    pipe.close()
    for sock in (origin, client, client_app):
        sock.close()
    return count


def test_copy_until_eof_counts_every_byte_to_the_close() -> None:
    assert asyncio.run(_until_eof()) == BODY


async def _broken(stall: bool) -> None:
    loop = asyncio.get_running_loop()
    origin_app, origin = _tcp_pair()
    client, client_app = _tcp_pair()
    pipe = BodyPipe()
    await loop.sock_sendall(origin_app, b"y" * 1000)
    if not stall:
        origin_app.close()
    expected = TimeoutError if stall else ConnectionResetError
    copying = asyncio.ensure_future(pipe.copy_exact(origin, client, BODY, timeout=0.3))
    # The copy's own error, not a guard's: the guard only cancels, after far longer.
    done, _ = await asyncio.wait([copying], timeout=10)
    assert copying in done, "the copy neither failed nor timed out"
    with pytest.raises(expected):
        copying.result()
    assert _no_callbacks_left(loop, origin, client)
    pipe.close()
    for sock in (origin_app, origin, client, client_app):
        sock.close()


def test_an_origin_closing_before_the_body_ends_is_a_reset() -> None:
    asyncio.run(_broken(stall=False))


def test_an_origin_that_stalls_mid_body_times_out() -> None:
    asyncio.run(_broken(stall=True))


async def _cancelled() -> None:
    loop = asyncio.get_running_loop()
    origin_app, origin = _tcp_pair()
    client, client_app = _tcp_pair()
    pipe = BodyPipe()
    copying = asyncio.ensure_future(pipe.copy_exact(origin, client, BODY, timeout=60))
    await loop.sock_sendall(origin_app, b"z" * 1000)
    await _read_exactly(client_app, 1000)  # the copy is now waiting for more
    copying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await copying
    assert _no_callbacks_left(loop, origin, client)
    pipe.close()
    for sock in (origin_app, origin, client, client_app):
        sock.close()


def test_a_cancelled_copy_leaves_no_callback_behind() -> None:
    asyncio.run(_cancelled())
