"""A userspace DPI box of the censorship lab: a relay the censor DNATs a site's port 443 to.

    dpi.py --listen ADDR:PORT --upstream ADDR:PORT --block NAME --mode first-record|reassemble

It reassembles TCP (it reads the stream, so a ClientHello cut across segments is whole
again) and then looks for ``NAME`` in the server_name of the ClientHello:

- ``first-record``: parses only the first TLS record, like many deployed boxes; a
  ClientHello spread over two records is truncated there and passes.
- ``reassemble``: joins handshake fragments across records first; nothing passes.

A blocked connection is reset (SO_LINGER 0); any other is relayed to ``--upstream`` with
the bytes already read, then both ways until either side ends. The origin sees the relay's
address (the ISP's), never the SOCKS server's. Its own parser, on purpose: the lab must
not judge proxyd's hello with proxyd's code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct

RECORD_HEADER = 5
HANDSHAKE = 0x16
READ_LIMIT = 16 * 1024 + RECORD_HEADER


def _server_name(hello: bytes) -> str | None:
    """The host_name of a ClientHello handshake message; None if it is not (whole) there."""
    try:
        if hello[0] != 1:
            return None
        body = hello[4 : 4 + int.from_bytes(hello[1:4], "big")]
        at = 2 + 32
        at += 1 + body[at]  # session id
        at += 2 + int.from_bytes(body[at : at + 2], "big")  # cipher suites
        at += 1 + body[at]  # compression methods
        end = at + 2 + int.from_bytes(body[at : at + 2], "big")
        at += 2
        while at + 4 <= end:
            kind, length = struct.unpack("!HH", body[at : at + 4])
            data = body[at + 4 : at + 4 + length]
            if len(data) < length:
                return None
            if kind == 0:  # server_name: list length, type, name length, name
                return data[5 : 5 + int.from_bytes(data[3:5], "big")].decode("ascii", "replace")
            at += 4 + length
    except IndexError:
        return None
    return None


def _records(data: bytes) -> list[tuple[int, bytes]]:
    """Whole records at the start of ``data``."""
    records, at = [], 0
    while len(data) - at >= RECORD_HEADER:
        length = int.from_bytes(data[at + 3 : at + 5], "big")
        if len(data) - at - RECORD_HEADER < length:
            break
        records.append((data[at], data[at + RECORD_HEADER : at + RECORD_HEADER + length]))
        at += RECORD_HEADER + length
    return records


def _hello(data: bytes, mode: str) -> bytes | None:
    """The handshake bytes the box judges, or None while it needs more of the stream."""
    records = _records(data)
    if not records:
        return None
    if mode == "first-record":
        return records[0][1]
    joined = b"".join(fragment for kind, fragment in records if kind == HANDSHAKE)
    if len(joined) >= 4 and len(joined) >= 4 + int.from_bytes(joined[1:4], "big"):
        return joined
    return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def handler(upstream: tuple[str, int], block: str, mode: str):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        hello = None
        while hello is None and len(data) < READ_LIMIT:
            chunk = await reader.read(READ_LIMIT)
            if not chunk:
                writer.close()
                return
            data += chunk
            if data[0] != HANDSHAKE:
                break
            hello = _hello(data, mode)
        name = _server_name(hello) if hello is not None else None
        if name is not None and block in name:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        except OSError:
            _reset(writer)
            return
        up_writer.write(data)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        up_writer.close()
        writer.close()

    return handle


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--block", required=True)
    parser.add_argument("--mode", choices=("first-record", "reassemble"), required=True)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    up_host, up_port = args.upstream.rsplit(":", 1)
    server = await asyncio.start_server(
        handler((up_host, int(up_port)), args.block, args.mode), host, int(port)
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
