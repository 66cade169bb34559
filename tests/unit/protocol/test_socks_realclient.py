"""Real SOCKS clients (python-socks, curl) against SocksHandshake over loopback sockets.

A test-only asyncio shell runs the handshake, dials the requested destination (only loopback,
via a fixed name table standing in for DNS) and pumps bytes, so every reply code the clients
see is one the module produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from python_socks import ProxyError, ProxyType
from python_socks.async_.asyncio import Proxy

from proxyd.protocol._socks import ConnectRequest, HandshakeFailed, SendBytes, SocksHandshake

DEADLINE = 10.0
CONNECTION_REFUSED = 0x05
SOCKS4_REJECTED = 0x5B
# Names the frontend "resolves": proves a hostname travelled through the proxy unresolved.
TEST_HOSTS = {"echo.test": "127.0.0.1", "web.test": "127.0.0.1", "echo6.test": "::1"}


@dataclass
class SocksFrontend:
    check_credentials: Callable[[str, str], bool] | None = None
    requests: list[ConnectRequest] = field(default_factory=list)
    failures: list[HandshakeFailed] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handshake = SocksHandshake(check_credentials=self.check_credentials)
        try:
            while data := await reader.read(4096):
                for event in handshake.receive_data(data):
                    if isinstance(event, SendBytes):
                        writer.write(event.data)
                    elif isinstance(event, HandshakeFailed):
                        self.failures.append(event)
                        writer.write(event.reply)
                        await writer.drain()
                        return
                    else:
                        self.requests.append(event)
                        await self.dial_and_pump(handshake, event, reader, writer)
                        return
        finally:
            writer.close()

    async def dial_and_pump(
        self,
        handshake: SocksHandshake,
        request: ConnectRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        address = TEST_HOSTS.get(request.host) if request.address_type == "domain" else request.host
        if address is None or not ipaddress.ip_address(address).is_loopback:
            writer.write(handshake.failure_reply(0x02))  # never leave loopback
            await writer.drain()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(address, request.port)
        except ConnectionRefusedError:
            writer.write(handshake.failure_reply(CONNECTION_REFUSED))
            await writer.drain()
            return
        bound_host, bound_port = server_writer.get_extra_info("sockname")[:2]
        writer.write(handshake.success_reply(bound_host, bound_port))
        server_writer.write(handshake.leftover)
        try:
            await asyncio.gather(pump(reader, server_writer), pump(server_reader, writer))
        finally:
            server_writer.close()


async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()
    if sink.can_write_eof():
        sink.write_eof()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await pump(reader, writer)
    writer.close()


async def http_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    body = head.split(b"\r\n", 1)[0] + b"\n"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body))
    writer.write(b"Connection: close\r\n\r\n" + body)
    await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def listening(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object], host: str
) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, host, 0)  # type: ignore[arg-type]
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def frontend(
    check_credentials: Callable[[str, str], bool] | None = None,
) -> AsyncIterator[SocksFrontend]:
    socks = SocksFrontend(check_credentials)
    async with listening(socks.serve, "127.0.0.1") as port:
        socks.port = port
        yield socks


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async with listening(echo, "127.0.0.1") as port:
        yield port


@pytest.fixture
def refused_port() -> Iterator[int]:
    # A bound socket that never listens answers connects with RST, and keeps the port ours.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def only_alice(username: str, password: str) -> bool:
    return (username, password) == ("alice", "secret")


async def echo_through(proxy: Proxy, host: str, port: int, payload: bytes) -> bytes:
    async with asyncio.timeout(DEADLINE):
        sock = await proxy.connect(host, port, timeout=DEADLINE)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(payload)
        writer.write_eof()
        answer = await reader.read()
        writer.close()
        return answer


async def test_python_socks5_with_remote_dns_reaches_the_named_echo_server(echo_port: int) -> None:
    async with frontend() as socks:
        proxy = Proxy(ProxyType.SOCKS5, "127.0.0.1", socks.port, rdns=True)
        assert await echo_through(proxy, "echo.test", echo_port, b"ping") == b"ping"
    assert socks.requests == [ConnectRequest("echo.test", echo_port, 5, "domain", None)]


async def test_python_socks5_to_ipv4_literal_reaches_echo_server(echo_port: int) -> None:
    async with frontend() as socks:
        proxy = Proxy(ProxyType.SOCKS5, "127.0.0.1", socks.port)
        assert await echo_through(proxy, "127.0.0.1", echo_port, b"v4") == b"v4"
    assert socks.requests == [ConnectRequest("127.0.0.1", echo_port, 5, "ipv4", None)]


async def test_python_socks5_to_ipv6_literal_reaches_echo_server() -> None:
    try:
        server = await asyncio.start_server(echo, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    async with server, frontend() as socks:
        port = server.sockets[0].getsockname()[1]
        proxy = Proxy(ProxyType.SOCKS5, "127.0.0.1", socks.port)
        assert await echo_through(proxy, "::1", port, b"v6") == b"v6"
    assert socks.requests == [ConnectRequest("::1", port, 5, "ipv6", None)]


async def test_python_socks5_with_right_password_connects_and_reports_username(
    echo_port: int,
) -> None:
    async with frontend(only_alice) as socks:
        proxy = Proxy(ProxyType.SOCKS5, "127.0.0.1", socks.port, "alice", "secret", rdns=True)
        assert await echo_through(proxy, "echo.test", echo_port, b"auth") == b"auth"
    assert socks.requests == [ConnectRequest("echo.test", echo_port, 5, "domain", "alice")]


async def test_python_socks5_with_wrong_password_is_told_authentication_failed(
    echo_port: int,
) -> None:
    async with frontend(only_alice) as socks:
        proxy = Proxy(ProxyType.SOCKS5, "127.0.0.1", socks.port, "alice", "guess", rdns=True)
        with pytest.raises(ProxyError, match="authentication failure"):
            await echo_through(proxy, "echo.test", echo_port, b"x")
    assert [failure.reason for failure in socks.failures] == ["bad_credentials"]
    assert socks.requests == []


async def test_python_socks5_sees_connection_refused_code(refused_port: int) -> None:
    async with frontend() as socks:
        proxy = Proxy(ProxyType.SOCKS5, "127.0.0.1", socks.port)
        with pytest.raises(ProxyError) as refused:
            await echo_through(proxy, "127.0.0.1", refused_port, b"x")
    assert refused.value.error_code == CONNECTION_REFUSED


async def test_python_socks4_with_userid_reaches_echo_server(echo_port: int) -> None:
    async with frontend() as socks:
        proxy = Proxy(ProxyType.SOCKS4, "127.0.0.1", socks.port, username="bob")
        assert await echo_through(proxy, "127.0.0.1", echo_port, b"four") == b"four"
    assert socks.requests == [ConnectRequest("127.0.0.1", echo_port, 4, "ipv4", "bob")]


async def test_python_socks4a_with_remote_dns_reaches_the_named_echo_server(
    echo_port: int,
) -> None:
    async with frontend() as socks:
        proxy = Proxy(ProxyType.SOCKS4, "127.0.0.1", socks.port, rdns=True)
        assert await echo_through(proxy, "echo.test", echo_port, b"4a") == b"4a"
    assert socks.requests == [ConnectRequest("echo.test", echo_port, 4, "domain", None)]


async def test_python_socks4_sees_rejection_for_refused_connect(refused_port: int) -> None:
    async with frontend() as socks:
        proxy = Proxy(ProxyType.SOCKS4, "127.0.0.1", socks.port)
        with pytest.raises(ProxyError) as refused:
            await echo_through(proxy, "127.0.0.1", refused_port, b"x")
    assert refused.value.error_code == SOCKS4_REJECTED


async def test_python_socks4_is_rejected_when_credentials_are_required(echo_port: int) -> None:
    async with frontend(only_alice) as socks:
        proxy = Proxy(ProxyType.SOCKS4, "127.0.0.1", socks.port, username="alice")
        with pytest.raises(ProxyError) as rejected:
            await echo_through(proxy, "127.0.0.1", echo_port, b"x")
    assert rejected.value.error_code == SOCKS4_REJECTED
    assert [failure.reason for failure in socks.failures] == ["credentials_required"]


async def test_optimistic_data_sent_with_the_request_reaches_the_server(echo_port: int) -> None:
    client_hello = b"\x16\x03\x01\x00\x05hello"
    request = b"\x05\x01\x00\x03\x09echo.test" + echo_port.to_bytes(2, "big")
    async with frontend() as socks, asyncio.timeout(DEADLINE):
        reader, writer = await asyncio.open_connection("127.0.0.1", socks.port)
        writer.write(b"\x05\x01\x00" + request + client_hello)  # one segment, no waiting
        writer.write_eof()
        answer = await reader.read()
        writer.close()
    assert answer[:2] == b"\x05\x00"  # method selection
    assert answer[2:6] == b"\x05\x00\x00\x01"  # CONNECT succeeded, IPv4 bound address
    assert answer[12:] == client_hello


@pytest.fixture
async def web_port() -> AsyncIterator[int]:
    async with listening(http_hello, "127.0.0.1") as port:
        yield port


async def curl(*args: str) -> tuple[int, bytes]:
    # A bare environment: the developer's proxy variables must not steer curl elsewhere.
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", str(DEADLINE), "--noproxy", "", *args,
        env={"PATH": os.environ["PATH"]},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(DEADLINE + 5):
        stdout, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout


async def test_curl_socks5_hostname_fetches_page_by_name(web_port: int) -> None:
    async with frontend() as socks:
        status, body = await curl(
            "--socks5-hostname", f"127.0.0.1:{socks.port}", f"http://web.test:{web_port}/hi"
        )
    assert (status, body) == (0, b"GET /hi HTTP/1.1\n")
    assert socks.requests == [ConnectRequest("web.test", web_port, 5, "domain", None)]


async def test_curl_socks5h_with_credentials_fetches_page(web_port: int) -> None:
    async with frontend(only_alice) as socks:
        proxy = f"socks5h://alice:secret@127.0.0.1:{socks.port}"
        status, body = await curl("-x", proxy, f"http://web.test:{web_port}/auth")
    assert (status, body) == (0, b"GET /auth HTTP/1.1\n")
    assert socks.requests[0].username == "alice"


async def test_curl_without_credentials_is_refused_when_they_are_required(web_port: int) -> None:
    async with frontend(only_alice) as socks:
        status, _ = await curl(
            "--socks5-hostname", f"127.0.0.1:{socks.port}", f"http://web.test:{web_port}/"
        )
    assert status == 97  # CURLE_PROXY
    assert [failure.reason for failure in socks.failures] == ["no_acceptable_method"]


async def test_curl_socks4a_fetches_page_by_name(web_port: int) -> None:
    async with frontend() as socks:
        status, body = await curl(
            "--socks4a", f"127.0.0.1:{socks.port}", f"http://web.test:{web_port}/4a"
        )
    assert (status, body) == (0, b"GET /4a HTTP/1.1\n")
    assert socks.requests == [ConnectRequest("web.test", web_port, 4, "domain", None)]
