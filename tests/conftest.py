from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.origin import OriginServer
from tests.support.proc import Proxyd


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def origin() -> Iterator[OriginServer]:
    server = OriginServer("origin-a")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def origin_b() -> Iterator[OriginServer]:
    server = OriginServer("origin-b")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_origin(tls_ca: trustme.CA) -> Iterator[OriginServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    server = OriginServer("tls-origin", ssl_context=ctx)
    yield server
    server.stop()


@pytest.fixture
def proxyd(tmp_path: Path) -> Iterator[Proxyd]:
    """proxyd on embedded defaults, except a free loopback port and a temp state dir."""
    proc = Proxyd(tmp_path=tmp_path)
    yield proc
    proc.stop()
    proc.assert_clean_log()
