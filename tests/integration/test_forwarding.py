"""Real clients (curl, aiohttp, raw sockets) through a real proxyd to real origins."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import aiohttp

from tests.support.origin import OriginServer
from tests.support.proc import Proxyd


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(timeout), *args],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
    )


def test_curl_get_through_http_proxy(proxyd: Proxyd, origin: OriginServer) -> None:
    out = curl("-x", proxyd.url, f"{origin.url}/page?q=1")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello from origin-a /page?q=1\n"


def test_curl_post_of_10_mb_body_streams_to_origin(
    proxyd: Proxyd, origin: OriginServer, tmp_path: Path
) -> None:
    body = tmp_path / "body.bin"
    data = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    body.write_bytes(data)
    out = curl("-x", proxyd.url, "--data-binary", f"@{body}", f"{origin.url}/echo")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def test_curl_chunked_upload_reaches_origin_intact(
    proxyd: Proxyd, origin: OriginServer, tmp_path: Path
) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(b"abc" * 100_000)
    out = curl(
        "-x",
        proxyd.url,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        f"@{body}",
        f"{origin.url}/echo",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"300000 {hashlib.sha256(b'abc' * 100_000).hexdigest()}"


def test_curl_head_gets_headers_without_body(proxyd: Proxyd, origin: OriginServer) -> None:
    out = curl("-x", proxyd.url, "-I", f"{origin.url}/page")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("HTTP/1.1 200")
    assert "Content-Length: 26" in out.stdout  # len("hello from origin-a /page\n")


def test_chunked_response_is_relayed_verbatim(proxyd: Proxyd, origin: OriginServer) -> None:
    out = curl("-x", proxyd.url, "--raw", "-i", f"{origin.url}/chunked?n=30")
    assert out.returncode == 0, out.stderr
    assert "Transfer-Encoding: chunked" in out.stdout
    decoded = curl("-x", proxyd.url, f"{origin.url}/chunked?n=30").stdout
    assert decoded == "".join(f"chunk {i}\n" for i in range(30))


def test_connect_tunnel_to_https_origin(
    proxyd: Proxyd, tls_origin: OriginServer, ca_file: Path
) -> None:
    url = f"https://localhost:{tls_origin.port}/secure"
    out = curl("--proxytunnel", "-x", proxyd.url, "--cacert", str(ca_file), url)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello from tls-origin /secure\n"


def test_socks5_with_remote_dns(proxyd: Proxyd, origin: OriginServer) -> None:
    url = f"http://localhost:{origin.port}/via-socks5"
    out = curl("--socks5-hostname", f"{proxyd.host}:{proxyd.port}", url)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello from origin-a /via-socks5\n"


def test_socks4a(proxyd: Proxyd, origin: OriginServer) -> None:
    url = f"http://localhost:{origin.port}/via-socks4a"
    out = curl("--socks4a", f"{proxyd.host}:{proxyd.port}", url)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello from origin-a /via-socks4a\n"


def test_hop_by_hop_and_proxy_headers_are_not_forwarded(
    proxyd: Proxyd, origin: OriginServer
) -> None:
    out = curl(
        "-x",
        proxyd.url,
        "-H",
        "Proxy-Connection: keep-alive",
        "-H",
        "Connection: X-Secret",
        "-H",
        "X-Secret: 1",
        "-H",
        "X-Kept: yes",
        f"{origin.url}/headers",
    )
    headers = {k.lower(): v for k, v in json.loads(out.stdout).items()}
    assert "proxy-connection" not in headers
    assert "x-secret" not in headers
    assert headers["x-kept"] == "yes"


async def test_aiohttp_1000_requests_to_two_origins_over_kept_alive_proxy_connections(
    proxyd: Proxyd, origin: OriginServer, origin_b: OriginServer
) -> None:
    created = 0

    async def on_create(*_args: object) -> None:
        nonlocal created
        created += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    connector = aiohttp.TCPConnector(limit=2)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        for i in range(1000):
            target = origin if i % 2 == 0 else origin_b
            async with session.get(f"{target.url}/whoami", proxy=proxyd.url) as resp:
                assert resp.status == 200
                assert await resp.text() == target.name
    # aiohttp keys its pool by destination, so one proxy connection per origin at most.
    assert created <= 2


def test_requests_to_different_origins_on_one_connection_are_routed_each(
    proxyd: Proxyd, origin: OriginServer, origin_b: OriginServer
) -> None:
    with socket.create_connection(proxyd.address) as sock:
        reader = sock.makefile("rb")
        for i in range(40):
            target = origin if i % 2 == 0 else origin_b
            sock.sendall(f"GET {target.url}/whoami HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while (line := reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert reader.read(length).decode() == target.name


def test_origin_connections_are_kept_alive_and_reused_across_client_connections(
    proxyd: Proxyd, origin: OriginServer, origin_b: OriginServer
) -> None:
    ports: dict[str, set[str]] = {origin.name: set(), origin_b.name: set()}
    for _client_connection in range(5):
        with socket.create_connection(proxyd.address) as sock:
            reader = sock.makefile("rb")
            for i in range(20):
                target = origin if i % 2 == 0 else origin_b
                sock.sendall(f"GET {target.url}/peer HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert reader.readline().startswith(b"HTTP/1.1 200")
                length = 0
                while (line := reader.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                ports[target.name].add(reader.read(length).decode())
    # 50 requests per origin from 5 client connections, carried by one origin connection each
    assert {name: len(seen) for name, seen in ports.items()} == {origin.name: 1, origin_b.name: 1}
