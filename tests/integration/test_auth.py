"""Proxy authentication under attack: guesses are rate-limited per client address, and no
credential ever reaches the log or the metrics."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

from tests.integration.test_admin import ADMIN_LISTENING
from tests.integration.test_errors import status_of
from tests.support.origin import OriginServer
from tests.support.proc import Proxyd
from tests.support.scrape import limit_hits, metrics_text

PASSWORD = "s3cret-Passw0rd"
GUESSES = ["guess-one", "guess-two", "guess-three", "guess-four"]


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def get(proxy: Proxyd, origin: OriginServer, token: str | None, source: str = "127.0.0.1") -> int:
    auth = f"Proxy-Authorization: Basic {token}\r\n" if token else ""
    req = f"GET {origin.url}/x HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    with socket.create_connection(proxy.address, timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(req.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return status_of(answer)


def socks5_auth(proxy: Proxyd, user: str, password: str) -> bytes:
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(b"\x05\x01\x02")
        assert sock.recv(2) == b"\x05\x02"
        sock.sendall(
            b"\x01"
            + bytes([len(user)])
            + user.encode()
            + bytes([len(password)])
            + password.encode()
        )
        return sock.recv(2)


def test_failed_logins_are_rate_limited_and_credentials_never_logged(
    tmp_path: Path, origin: OriginServer
) -> None:
    config = (
        f'[auth]\nusers = {{ alice = "{PASSWORD}" }}\nmax_failures = 3\nfailure_window = "10m"\n'
    )
    proxy = Proxyd(
        ["--admin", "127.0.0.1:0", "--log-level", "debug"], config=config, tmp_path=tmp_path
    )
    try:
        match = proxy.wait_for_log(ADMIN_LISTENING)
        admin = f"http://{match.group(1)}:{match.group(2)}"
        assert get(proxy, origin, None) == 407  # a browser's first try is not a failure
        assert get(proxy, origin, basic("alice", PASSWORD)) == 200
        for guess in GUESSES[:2]:
            assert get(proxy, origin, basic("alice", guess)) == 407
        assert socks5_auth(proxy, "alice", GUESSES[2]) == b"\x01\x01"  # SOCKS shares the count
        # Three failures: now even the right password is refused unchecked, in both protocols.
        assert get(proxy, origin, basic("alice", GUESSES[3])) == 429
        assert get(proxy, origin, basic("alice", PASSWORD)) == 429
        assert socks5_auth(proxy, "alice", PASSWORD) == b"\x01\x01"
        assert limit_hits(admin, "auth_failures") == 3
        # Another client address is not punished for this one's guesses.
        assert get(proxy, origin, basic("alice", PASSWORD), source="127.0.0.2") == 200
        exposed = proxy.log_text() + metrics_text(admin)
        for secret in [PASSWORD, *GUESSES, basic("alice", PASSWORD), basic("alice", GUESSES[0])]:
            assert secret not in exposed
    finally:
        proxy.stop()
    proxy.assert_clean_log()
    assert PASSWORD not in proxy.log_text()
