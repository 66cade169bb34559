"""Upstream dialers and health checks against real proxies: microsocks (SOCKS5), tinyproxy
(HTTP CONNECT) and proxyd itself (SOCKS4/4a), plus a scripted SOCKS5 server for the
answers no local proxy gives (Tor's extended codes, silence)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from proxyd.config._config import UpstreamConfig
from proxyd.errors import (
    ConnectionRefused,
    ConnectTimeout,
    DialError,
    DnsLookupError,
    Forbidden,
    OnionServiceError,
    UpstreamError,
)
from proxyd.outbound._dialers import Connection, DirectDialer
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.outbound._upstreams import UpstreamDialer, isolation_scope
from tests.support.origin import EchoServer
from tests.support.proc import Proxyd

# Resolvable only inside the mount namespace of the microsocks started with `hosts=`.
UPSTREAM_ONLY_NAME = "upstream-only.test"
# What a health check sees when microsocks has gone (refused) or is going: its socket
# reset or closed under a check that had just connected.
REFUSED_OR_RESET = (
    "connection refused",
    "reset the connection during the handshake",
    "closed the connection during the handshake",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_accepting(port: int, proc: subprocess.Popen[bytes], deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.01)
    raise AssertionError(f"nothing accepts on port {port}")


class Microsocks:
    """Debian's microsocks on 127.0.0.1; ``hosts`` gives it a private /etc/hosts."""

    def __init__(self, *extra: str, hosts: Path | None = None) -> None:
        self.port = free_port()
        self._extra = extra
        self._hosts = hosts
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = ["microsocks", "-i", "127.0.0.1", "-p", str(self.port), *self._extra]
        if self._hosts is not None:
            script = 'mount --bind "$0" /etc/hosts && exec "$@"'
            argv = ["unshare", "-m", "sh", "-c", script, str(self._hosts), *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_accepting(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Tinyproxy:
    """Debian's tinyproxy with Basic auth, allowing CONNECT to the given ports only."""

    def __init__(self, tmp: Path, connect_ports: list[int]) -> None:
        self.port = free_port()
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "Allow 127.0.0.1",
            "BasicAuth user pass",
            "LogLevel Critical",
            *(f"ConnectPort {p}" for p in connect_ports),
        ]
        conf = tmp / "tinyproxy.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            ["tinyproxy", "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_accepting(self.port, self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class BannerServer:
    """Speaks first, like SSH or SMTP: its banner must survive the upstream handshake."""

    BANNER = b"220 banner from the server\r\n"

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(self.BANNER)
                conn.recv(1)

    def stop(self) -> None:
        self._sock.close()


class ScriptedSocks5:
    """A SOCKS5 server on loopback that answers CONNECT with ``reply``, or never answers.

    ``greet=False``: accept TCP but never answer the greeting.
    """

    def __init__(self, reply: bytes | None, *, greet: bool = True) -> None:
        self._reply = reply
        self._greet = greet
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self._greet:
                conn.recv(3)
                conn.sendall(b"\x05\x00")
                conn.recv(262)
                if self._reply is not None:
                    conn.sendall(self._reply)
            while conn.recv(4096):
                pass

    def stop(self) -> None:
        self._sock.close()
        for conn in self._open:
            conn.close()


class UpstreamLog(logging.Handler):
    """The "proxyd.upstream" log lines, with a way to wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self._changed.set()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    async def wait_for(self, text: str, times: int = 1, timeout: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while self.count(text) < times:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"never logged {text!r} x{times}: {self.lines}") from None


@pytest.fixture
def upstream_log() -> Iterator[UpstreamLog]:
    logger = logging.getLogger("proxyd.upstream")
    handler = UpstreamLog()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def microsocks() -> Iterator[Microsocks]:
    server = Microsocks()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def banner() -> Iterator[BannerServer]:
    server = BannerServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def closed_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def tinyproxy(
    tmp_path_factory: pytest.TempPathFactory,
    echo: EchoServer,
    banner: BannerServer,
    closed_port: int,
) -> Iterator[Tinyproxy]:
    server = Tinyproxy(tmp_path_factory.mktemp("tinyproxy"), [echo.port, banner.port, closed_port])
    yield server
    server.stop()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedSocks5]]:
    servers: list[ScriptedSocks5] = []

    def start(reply: bytes | None, *, greet: bool = True) -> ScriptedSocks5:
        servers.append(ScriptedSocks5(reply, greet=greet))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def dialer(
    url: str, name: str = "up", *, tor: bool = False, isolate: bool | None = None
) -> UpstreamDialer:
    return UpstreamDialer(UpstreamConfig.from_url(name, url, tor=tor, isolate=isolate))


async def roundtrip(conn: Connection, payload: bytes = b"ping through the upstream") -> bytes:
    loop = asyncio.get_running_loop()
    with conn.sock:
        await loop.sock_sendall(conn.sock, payload)
        received = b""
        while len(received) < len(payload):
            chunk = await loop.sock_recv(conn.sock, 65536)
            if not chunk:
                break
            received += chunk
    return received


async def first_bytes(conn: Connection) -> bytes:
    with conn.sock:
        return await asyncio.get_running_loop().sock_recv(conn.sock, 4096)


@contextlib.asynccontextmanager
async def health_checks(upstreams: UpstreamSet) -> AsyncIterator[None]:
    task = asyncio.create_task(upstreams.run_health_checks())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- dialing ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5h", "socks5"])
async def test_bytes_flow_through_microsocks(
    scheme: str, microsocks: Microsocks, echo: EchoServer
) -> None:
    up = dialer(f"{scheme}://{microsocks.url}", name="backup")
    conn = await up.dial("localhost", echo.port, timeout=5)
    assert conn.route == "backup"
    assert conn.peer == ("127.0.0.1", microsocks.port)
    assert conn.resolved == (() if scheme == "socks5h" else ("127.0.0.1",))
    assert not conn.sock.getblocking()
    assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert await roundtrip(conn) == b"ping through the upstream"


async def test_server_first_bytes_survive_the_socks_and_http_handshakes(
    microsocks: Microsocks, tinyproxy: Tinyproxy, banner: BannerServer
) -> None:
    socks = dialer(f"socks5h://{microsocks.url}")
    assert await first_bytes(await socks.dial("127.0.0.1", banner.port, timeout=5)) == (
        BannerServer.BANNER
    )
    http = dialer(f"http://user:pass@127.0.0.1:{tinyproxy.port}")
    assert await first_bytes(await http.dial("127.0.0.1", banner.port, timeout=5)) == (
        BannerServer.BANNER
    )


async def test_socks5_credentials_from_the_url_are_used(echo: EchoServer) -> None:
    server = Microsocks("-u", "alice", "-P", "s3cret")
    try:
        good = dialer(f"socks5h://alice:s3cret@{server.url}")
        assert await roundtrip(await good.dial("127.0.0.1", echo.port, timeout=5)) != b""
        bad = dialer(f"socks5h://alice:wrong@{server.url}")
        with pytest.raises(UpstreamError, match=r"upstream up \(127\.0\.0\.1:\d+\)"):
            await bad.dial("127.0.0.1", echo.port, timeout=5)
        anonymous = dialer(f"socks5h://{server.url}")
        with pytest.raises(UpstreamError, match="wants a username and password"):
            await anonymous.dial("127.0.0.1", echo.port, timeout=5)
    finally:
        server.stop()


@pytest.fixture
def hosts_only_upstream_knows(tmp_path: Path) -> Path:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {UPSTREAM_ONLY_NAME}\n")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f'mount --bind "{hosts}" /etc/hosts'], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace: {probe.stderr.decode().strip()}")
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(UPSTREAM_ONLY_NAME, 80)  # the proof needs it unknown here
    return hosts


async def test_socks5h_lets_the_upstream_resolve_and_socks5_resolves_locally(
    hosts_only_upstream_knows: Path, echo: EchoServer
) -> None:
    server = Microsocks(hosts=hosts_only_upstream_knows)
    try:
        remote = dialer(f"socks5h://{server.url}")
        conn = await remote.dial(UPSTREAM_ONLY_NAME, echo.port, timeout=5)
        assert await roundtrip(conn) == b"ping through the upstream"
        local = dialer(f"socks5://{server.url}")
        with pytest.raises(DnsLookupError):
            await local.dial(UPSTREAM_ONLY_NAME, echo.port, timeout=5)
    finally:
        server.stop()


async def test_an_unresolvable_name_is_the_upstreams_answer_with_socks5h(
    microsocks: Microsocks,
) -> None:
    with pytest.raises(DialError) as info:
        await dialer(f"socks5h://{microsocks.url}").dial("does-not-exist.invalid", 80, timeout=5)
    # microsocks reports a failed lookup as "general failure": the error is not ours.
    assert type(info.value) is DialError
    assert "SOCKS5 reply 0x01" in info.value.detail
    with pytest.raises(DnsLookupError):
        await dialer(f"socks5://{microsocks.url}").dial("does-not-exist.invalid", 80, timeout=5)


async def test_refused_destination_through_microsocks_is_connection_refused(
    microsocks: Microsocks, closed_port: int
) -> None:
    with pytest.raises(ConnectionRefused) as info:
        await dialer(f"socks5h://{microsocks.url}").dial("127.0.0.1", closed_port, timeout=5)
    assert info.value.host == "127.0.0.1"
    assert info.value.port == closed_port
    assert f"upstream up (127.0.0.1:{microsocks.port})" in info.value.detail


async def test_stopped_upstream_is_an_upstream_error(echo: EchoServer) -> None:
    port = free_port()
    with pytest.raises(UpstreamError) as info:
        await dialer(f"socks5h://127.0.0.1:{port}", name="tor").dial("example.org", 443, timeout=5)
    assert info.value.detail == f"upstream tor (127.0.0.1:{port}): connection refused"
    assert info.value.host == "example.org"


async def test_isolation_key_reaches_the_upstream_as_socks_username(echo: EchoServer) -> None:
    # microsocks accepts one user: only the key for example.org gets through.
    server = Microsocks("-u", "example.org", "-P", "proxyd")
    try:
        tor = dialer(f"socks5h://{server.url}", name="tor", tor=True)
        assert tor.isolates
        conn = await tor.dial("127.0.0.1", echo.port, timeout=5, isolation="example.org")
        assert await roundtrip(conn) == b"ping through the upstream"
        with pytest.raises(UpstreamError, match="rejected the username and password"):
            await tor.dial("127.0.0.1", echo.port, timeout=5, isolation="other.example")
        plain = dialer(f"socks5h://{server.url}", tor=True, isolate=False)
        with pytest.raises(UpstreamError, match="accepts none of our authentication methods"):
            await plain.dial("127.0.0.1", echo.port, timeout=5, isolation="example.org")
    finally:
        server.stop()


async def test_per_client_isolation_names_the_lan_client_in_the_socks_username(
    echo: EchoServer,
) -> None:
    # microsocks accepts one user: only example.org for the client 198.18.1.2 gets through.
    server = Microsocks("-u", "example.org 198.18.1.2", "-P", "proxyd")
    try:
        config = UpstreamConfig.from_url(
            "tor", f"socks5h://{server.url}", tor=True, isolate_clients=True
        )
        tor = UpstreamDialer(config)
        conn = await tor.dial(
            "127.0.0.1", echo.port, timeout=5, client_ip="198.18.1.2", isolation="example.org"
        )
        assert await roundtrip(conn) == b"ping through the upstream"
        with pytest.raises(UpstreamError, match="rejected the username and password"):
            await tor.dial(
                "127.0.0.1", echo.port, timeout=5, client_ip="198.18.1.3", isolation="example.org"
            )
        # Pooled plain-HTTP connections are kept apart by the same scope.
        assert isolation_scope(tor, "example.org", "198.18.1.2") == "example.org 198.18.1.2"
        per_domain = dialer(f"socks5h://{server.url}", tor=True)
        assert isolation_scope(per_domain, "example.org", "198.18.1.2") == "example.org"
        assert isolation_scope(DirectDialer(), "example.org", "198.18.1.2") == "example.org"
    finally:
        server.stop()


async def test_http_connect_through_tinyproxy(
    tinyproxy: Tinyproxy, echo: EchoServer, closed_port: int
) -> None:
    proxy = dialer(f"http://user:pass@127.0.0.1:{tinyproxy.port}", name="corp")
    conn = await proxy.dial("127.0.0.1", echo.port, timeout=5)
    assert conn.route == "corp"
    assert await roundtrip(conn) == b"ping through the upstream"

    with pytest.raises(Forbidden, match="answered 403"):
        await proxy.dial("127.0.0.1", 1, timeout=5)  # not a ConnectPort
    with pytest.raises(DialError) as info:
        await proxy.dial("127.0.0.1", closed_port, timeout=5)
    assert type(info.value) is DialError
    assert "answered 500" in info.value.detail

    anonymous = dialer(f"http://127.0.0.1:{tinyproxy.port}")
    with pytest.raises(UpstreamError, match="requires authentication: answered 407"):
        await anonymous.dial("127.0.0.1", echo.port, timeout=5)


async def test_socks4_and_socks4a_through_proxyd(tmp_path: Path, echo: EchoServer) -> None:
    upstream = Proxyd(tmp_path=tmp_path)
    try:
        socks4a = dialer(f"socks4a://127.0.0.1:{upstream.port}")
        conn = await socks4a.dial("localhost", echo.port, timeout=5)
        assert conn.resolved == ()
        assert await roundtrip(conn) == b"ping through the upstream"
        socks4 = dialer(f"socks4://127.0.0.1:{upstream.port}")
        conn = await socks4.dial("localhost", echo.port, timeout=5)
        assert "127.0.0.1" in conn.resolved  # resolved here, sent as an address
        assert await roundtrip(conn) == b"ping through the upstream"
        assert await socks4.probe(timeout=5) >= 0
    finally:
        upstream.stop()


async def test_tor_extended_error_from_a_real_socket_is_an_onion_service_error(
    scripted: Callable[..., ScriptedSocks5],
) -> None:
    server = scripted(b"\x05\xf0\x00\x01\x00\x00\x00\x00\x00\x00")
    tor = dialer(f"socks5h://127.0.0.1:{server.port}", name="tor", tor=True)
    with pytest.raises(OnionServiceError, match="descriptor not found"):
        await tor.dial("abcdefghijklmnop.onion", 80, timeout=5, isolation="abcdefghijklmnop.onion")


async def test_a_dial_deadline_blames_the_upstream_or_the_destination_correctly(
    scripted: Callable[..., ScriptedSocks5],
) -> None:
    # The upstream's accept queue is full: the TCP connect to it never completes.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    queued = socket.create_connection(full.getsockname())
    try:
        with pytest.raises(UpstreamError, match=r"did not accept a connection within 0\.3s"):
            await dialer(f"socks5h://127.0.0.1:{full.getsockname()[1]}").dial(
                "example.org", 443, timeout=0.3
            )
    finally:
        queued.close()
        full.close()

    mute = scripted(None, greet=False)
    with pytest.raises(UpstreamError, match=r"no answer to the handshake within 0\.3s"):
        await dialer(f"socks5h://127.0.0.1:{mute.port}").dial("example.org", 443, timeout=0.3)

    slow_destination = scripted(None)
    with pytest.raises(ConnectTimeout, match=r"no answer from the destination within 0\.3s"):
        await dialer(f"socks5h://127.0.0.1:{slow_destination.port}").dial(
            "example.org", 443, timeout=0.3
        )


# --- the set and its health ------------------------------------------------------------


def config(name: str, url: str, interval: float = 0.2, *, tor: bool = False) -> UpstreamConfig:
    return UpstreamConfig.from_url(name, url, health_interval=interval, tor=tor)


async def test_killed_upstream_goes_down_and_comes_back_up(
    microsocks: Microsocks, upstream_log: UpstreamLog
) -> None:
    upstreams = UpstreamSet([config("a", f"socks5h://{microsocks.url}")])
    async with health_checks(upstreams):
        await upstream_log.wait_for("upstream a up (")
        [status] = upstreams.status()
        assert status.up and status.latency is not None and status.last_check is not None
        assert abs(status.last_check - time.time()) < 5

        microsocks.stop()
        await upstream_log.wait_for("upstream a down: ")
        [status] = upstreams.status()
        assert not status.up
        # A check may catch microsocks mid-exit (reset, closed) rather than gone (refused).
        assert status.last_error in REFUSED_OR_RESET

        microsocks.start()
        await upstream_log.wait_for("upstream a up (", times=2)
        assert upstreams.status()[0].up
    assert upstream_log.count("upstream a down") == 1  # several failed checks, one line


async def test_a_down_upstream_is_skipped_until_none_is_left(upstream_log: UpstreamLog) -> None:
    first, second = Microsocks(), Microsocks()
    try:
        upstreams = UpstreamSet(
            [config("tor", f"socks5h://{first.url}"), config("backup", f"socks5h://{second.url}")]
        )
        assert [d.name for d in upstreams.dialers()] == ["tor", "backup"]
        async with health_checks(upstreams):
            await upstream_log.wait_for("upstream backup up (")
            first.stop()
            await upstream_log.wait_for("upstream tor down")
            assert [d.name for d in upstreams.dialers()] == ["backup"]

            second.stop()
            await upstream_log.wait_for("upstream backup down")
            assert [d.name for d in upstreams.dialers()] == ["tor", "backup"]
            message = str(upstreams.unavailable_error("example.org", 443))
            reason = "(" + "|".join(REFUSED_OR_RESET) + ")"
            assert re.fullmatch(
                "example.org:443: no upstream available: "
                rf"tor \(127\.0\.0\.1:{first.port}\): {reason}; "
                rf"backup \(127\.0\.0\.1:{second.port}\): {reason}",
                message,
            ), message
    finally:
        first.stop()
        second.stop()


async def test_a_reported_failure_marks_down_at_once_and_checks_immediately(
    microsocks: Microsocks, upstream_log: UpstreamLog
) -> None:
    # A one-minute interval: only the immediate check can bring it back within the test.
    upstreams = UpstreamSet([config("tor", f"socks5h://{microsocks.url}", interval=60.0)])
    async with health_checks(upstreams):
        await upstream_log.wait_for("upstream tor up (")
        err = UpstreamError("example.org", 443, f"upstream tor (127.0.0.1:{microsocks.port}): boom")
        upstreams.report_failure("tor", err)
        assert not upstreams.status()[0].up
        assert upstreams.status()[0].last_error == "boom"
        assert upstream_log.lines[-1] == "upstream tor down: boom"
        await upstream_log.wait_for("upstream tor up (", times=2)


async def test_http_upstream_health_check_sees_tinyproxy_and_its_auth(
    tinyproxy: Tinyproxy, upstream_log: UpstreamLog
) -> None:
    upstreams = UpstreamSet(
        [
            config("corp", f"http://user:pass@127.0.0.1:{tinyproxy.port}"),
            config("anon", f"http://127.0.0.1:{tinyproxy.port}"),
        ]
    )
    async with health_checks(upstreams):
        await upstream_log.wait_for("upstream corp up (")
        await upstream_log.wait_for("upstream anon down: requires authentication")


async def test_reconfigure_keeps_the_health_of_unchanged_upstreams(
    microsocks: Microsocks, upstream_log: UpstreamLog
) -> None:
    kept = config("tor", f"socks5h://{microsocks.url}", tor=True)
    upstreams = UpstreamSet([kept, config("old", f"socks5h://{microsocks.url}")])
    async with health_checks(upstreams):
        await upstream_log.wait_for("upstream old up (")
        await upstream_log.wait_for("upstream tor up (")
        dialer_before = upstreams.get("tor")
        upstreams.reconfigure([config("new", f"socks5://{microsocks.url}"), kept])
        assert upstreams.get("old") is None
        assert upstreams.get("tor") is dialer_before
        assert upstreams.tor is dialer_before
        by_name = {s.name: s for s in upstreams.status()}
        assert list(by_name) == ["new", "tor"]
        assert by_name["tor"].up and by_name["tor"].tor
        assert not by_name["new"].up and by_name["new"].last_check is None
        await upstream_log.wait_for("upstream new up (")


def test_status_never_shows_the_password() -> None:
    upstreams = UpstreamSet([config("corp", "http://user:hunter2@127.0.0.1:3128")])
    [status] = upstreams.status()
    assert status.url_redacted == "http://user:***@127.0.0.1:3128"
    assert "hunter2" not in repr(status)
