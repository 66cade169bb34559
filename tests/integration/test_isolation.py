"""Tor stream isolation end to end: curl -> proxyd -> a SOCKS5 upstream that records the
username of every CONNECT (tests/support/socks_recorder.py).

Tor gives each SOCKS username its own circuit, so what isolation promises is visible at
the upstream: one username per registrable domain, whichever inbound protocol the
client used.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.origin import OriginServer
from tests.support.proc import Proxyd
from tests.support.socks_recorder import RecordingSocks5

# Two hosts of each of two registrable domains; the upstream connects them all to the
# loopback origin.
HOSTS = ("a.one.example", "b.one.example", "c.two.example", "d.two.example")


@pytest.fixture
def tor() -> Iterator[RecordingSocks5]:
    server = RecordingSocks5(dict.fromkeys(HOSTS, "127.0.0.1"))
    yield server
    server.stop()


@pytest.fixture
def proxyd_via_tor(tmp_path: Path, tor: RecordingSocks5) -> Iterator[Proxyd]:
    # Rules, not learning, send the domains to the upstream: no direct attempt, no DNS.
    config = (
        f'[[upstream]]\nname = "tor"\nurl = "socks5h://127.0.0.1:{tor.port}"\ntor = true\n'
        '[[rule]]\ndomain = "one.example"\nroute = "tor"\n'
        '[[rule]]\ndomain = "two.example"\nroute = "tor"\n'
    )
    proc = Proxyd(config=config, tmp_path=tmp_path)
    yield proc
    proc.stop()
    proc.assert_clean_log()


def fetch(proxy: Proxyd, url: str, *how: str) -> str:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", *how, url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_each_registrable_domain_reaches_tor_under_its_own_username_in_every_protocol(
    proxyd_via_tor: Proxyd, tor: RecordingSocks5, origin: OriginServer
) -> None:
    proxy = proxyd_via_tor
    http = ("-x", proxy.url)
    connect = ("-x", proxy.url, "--proxytunnel")
    socks = ("--socks5-hostname", f"{proxy.host}:{proxy.port}")
    # Each domain's two hosts arrive through different inbound protocols.
    visits = {"a.one.example": http, "b.one.example": socks,
              "c.two.example": connect, "d.two.example": http}  # fmt: skip
    for host, how in visits.items():
        path = f"/{host}"
        assert fetch(proxy, f"http://{host}:{origin.port}{path}", *how) == (
            f"hello from origin-a {path}\n"
        )

    usernames: dict[str, set[str | None]] = {host: set() for host in HOSTS}
    for connect_request in tor.connects:
        if connect_request.host in usernames:
            usernames[connect_request.host].add(connect_request.username)
    assert all(len(names) == 1 for names in usernames.values()), usernames
    one = usernames["a.one.example"]
    two = usernames["c.two.example"]
    # Two hosts of one domain share a circuit; two domains never do.
    assert usernames["b.one.example"] == one
    assert usernames["d.two.example"] == two
    assert one != two
    assert None not in one | two, "isolation needs SOCKS authentication"
