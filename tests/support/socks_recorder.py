"""A real SOCKS5 server on loopback that remembers who asked for what.

Tor builds one circuit per SOCKS username (IsolateSOCKSAuth), so stream isolation is
proven by the usernames an upstream sees. microsocks accepts one user only and logs none,
hence this small server: RFC 1928 CONNECT (IPv4 or domain name) with RFC 1929
username/password, any credentials accepted, bytes relayed both ways.

``RecordingSocks5(hosts)``: ``hosts`` maps each name it may be asked for to the address
it connects to instead of resolving (so nothing leaves loopback); other names get reply
0x04 (host unreachable). ``.port``; ``.connects`` -> list of ``SocksConnect(username,
host, port)`` in arrival order (username None without authentication); ``.stop()``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Mapping
from typing import NamedTuple

NO_AUTH, USERNAME_PASSWORD, NO_ACCEPTABLE = 0x00, 0x02, 0xFF


class SocksConnect(NamedTuple):
    username: str | None
    host: str
    port: int


class RecordingSocks5:
    def __init__(self, hosts: Mapping[str, str]) -> None:
        self._hosts = dict(hosts)
        self._lock = threading.Lock()
        self._connects: list[SocksConnect] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def connects(self) -> list[SocksConnect]:
        with self._lock:
            return list(self._connects)

    def stop(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn:
            try:
                target = self._handshake(conn)
            except (OSError, ConnectionError, struct.error):
                return
            if target is not None:
                with target:
                    _relay(conn, target)

    def _handshake(self, conn: socket.socket) -> socket.socket | None:
        version, count = _read(conn, 2)
        if version != 5:
            return None
        methods = _read(conn, count)
        username = None
        if USERNAME_PASSWORD in methods:
            conn.sendall(bytes([5, USERNAME_PASSWORD]))
            _subversion, ulen = _read(conn, 2)
            username = _read(conn, ulen).decode("utf-8", "replace")
            (plen,) = _read(conn, 1)
            _read(conn, plen)
            conn.sendall(b"\x01\x00")
        elif NO_AUTH in methods:
            conn.sendall(bytes([5, NO_AUTH]))
        else:
            conn.sendall(bytes([5, NO_ACCEPTABLE]))
            return None
        _version, command, _reserved, address_type = _read(conn, 4)
        if address_type == 1:
            host = socket.inet_ntoa(_read(conn, 4))
        elif address_type == 3:
            (length,) = _read(conn, 1)
            host = _read(conn, length).decode("ascii", "replace")
        else:
            conn.sendall(b"\x05\x08\x00\x01" + bytes(6))  # address type not supported
            return None
        (port,) = struct.unpack("!H", _read(conn, 2))
        with self._lock:
            self._connects.append(SocksConnect(username, host, port))
        address = self._hosts.get(host, host if address_type == 1 else None)
        if command != 1 or address is None:
            conn.sendall(b"\x05\x04\x00\x01" + bytes(6))
            return None
        try:
            target = socket.create_connection((address, port), timeout=10)
        except OSError:
            conn.sendall(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
            return None
        bound_ip, bound_port = target.getsockname()[:2]
        conn.sendall(
            b"\x05\x00\x00\x01" + socket.inet_aton(bound_ip) + struct.pack("!H", bound_port)
        )
        return target


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client closed mid-handshake")
        data += chunk
    return data


def _relay(client: socket.socket, target: socket.socket) -> None:
    client.settimeout(None)
    target.settimeout(None)

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    upstream = threading.Thread(target=pump, args=(client, target), daemon=True)
    upstream.start()
    pump(target, client)
    upstream.join()
