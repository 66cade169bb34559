"""The FIN check that tells a frozen tunnel from an idle one: a live peer's kernel
acknowledges our FIN at once, whatever its application does."""

from __future__ import annotations

import asyncio
import socket

from proxyd.firstvisit._freeze import fin_unacknowledged, server_went_deaf


def test_a_live_server_that_never_reads_still_acknowledges_our_fin() -> None:
    async def main() -> bool:
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()  # never read from: only the kernel answers
        try:
            client.setblocking(False)
            assert not fin_unacknowledged(client)  # established: nothing pending
            return await server_went_deaf(client, wait=2.0)
        finally:
            accepted.close()
            listener.close()

    assert asyncio.run(main()) is False


def test_a_closed_socket_is_not_called_deaf() -> None:
    sock = socket.socket()
    sock.close()
    assert fin_unacknowledged(sock) is False
