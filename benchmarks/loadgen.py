"""Load generators, each bounded in time and pinned to the client CPU; each returns raw figures.

- ``wrk(port, urls, ...)``: wrk with ``lua/absolute_get.lua`` connected to ``port`` (a proxy, or
  nginx itself for direct), returning the parsed ``WRK_JSON`` line.
- ``curl_bulk(url, proxy_port, tunnel, streams, max_time)``: ``streams`` parallel curl
  downloads (``-p -x`` for CONNECT, ``-x`` for plain HTTP, neither for direct);
  returns ``Bulk(bytes, seconds)`` for the aggregate.
- ``ttfb_ms(port, url, count)``: sequential requests on new connections (``Connection: close``),
  each timed from connect to the first response byte.
- ``IdleTunnels``: drives ``idle_tunnels.py`` step by step so the caller can read memory while
  the tunnels are held.

A failure raises ``MeasureError`` whose message is the short reason shown as "n/a (...)".
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import procs

LUA = Path(__file__).resolve().parent / "lua" / "absolute_get.lua"


class MeasureError(Exception):
    """A measurement could not be made; the message says why in a few words."""


def wrk(
    port: int,
    urls: list[str],
    connections: int,
    threads: int,
    duration_s: float,
    close: bool = False,
    check: bool = False,
) -> dict[str, Any]:
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s"]
    cmd += ["--timeout", "5s", "-s", str(LUA), f"http://127.0.0.1:{port}/", "--", ",".join(urls)]
    cmd += ["close"] if close else []
    cmd += ["check"] if check else []
    try:
        done = subprocess.run(
            procs.pinned(cmd, procs.CLIENT_CPU),
            capture_output=True,
            text=True,
            timeout=duration_s + 30,
        )
    except subprocess.TimeoutExpired as exc:
        raise MeasureError("wrk did not finish") from exc
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            break
    else:
        raise MeasureError(f"wrk failed: {(done.stderr or done.stdout).strip()[:120]}")
    if result["requests"] == 0:
        errors = {k: v for k, v in result.items() if k.endswith(("errors", "timeouts")) and v}
        raise MeasureError(f"no responses {errors}")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


@dataclass(frozen=True)
class Bulk:
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


def curl_bulk(
    url: str, proxy_port: int | None, tunnel: bool, streams: int, max_time_s: float
) -> Bulk:
    cmd = ["curl", "-s", "-S", "-o", "/dev/null", "--max-time", f"{max_time_s:g}"]
    cmd += ["-w", "%{size_download} %{http_code}"]
    if proxy_port is not None:
        cmd += ["-x", f"http://127.0.0.1:{proxy_port}"] + (["-p"] if tunnel else [])
    cmd.append(url)
    started = time.monotonic()
    running = [
        subprocess.Popen(
            procs.pinned(cmd, procs.CLIENT_CPU),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(streams)
    ]
    total = 0
    for proc in running:
        out, err = proc.communicate(timeout=max_time_s + 30)
        size, _, status = out.strip().partition(" ")
        # 28 is curl's "operation timed out": the bytes moved until then still measure the rate.
        if proc.returncode not in (0, 28) or status != "200":
            raise MeasureError(f"curl exit {proc.returncode} HTTP {status}: {err.strip()[:100]}")
        total += int(size)
    seconds = time.monotonic() - started
    if total == 0:
        raise MeasureError("no bytes received")
    return Bulk(total, seconds)


def ttfb_ms(port: int, url: str, count: int, deadline_s: float = 15.0) -> list[float]:
    authority = url.split("/")[2]
    request = f"GET {url} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode()
    samples: list[float] = []
    until = time.monotonic() + deadline_s
    while len(samples) < count and time.monotonic() < until:
        started = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request)
                first = sock.recv(1)
                samples.append((time.perf_counter() - started) * 1e3)
                if not first:
                    raise MeasureError("connection closed before any response byte")
                while sock.recv(65536):
                    pass
        except OSError as exc:
            raise MeasureError(f"{type(exc).__name__}: {exc}"[:120]) from exc
    if len(samples) < count // 2:
        raise MeasureError(f"only {len(samples)} of {count} requests in {deadline_s:g}s")
    return samples


class IdleTunnels:
    """``idle_tunnels.py`` as a child process: ``next_step()`` returns each step's report."""

    def __init__(self, proxy_port: int, target: str, steps: list[int], deadline_s: float):
        cmd = [sys.executable, "-m", "benchmarks.idle_tunnels", "--proxy"]
        cmd += [f"127.0.0.1:{proxy_port}", "--target", target]
        cmd += ["--steps", ",".join(map(str, steps)), "--deadline", f"{deadline_s:g}"]
        self.deadline_s = deadline_s
        self.proc = subprocess.Popen(
            procs.pinned(cmd, procs.CLIENT_CPU),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def next_step(self) -> dict[str, Any]:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.deadline_s + 30)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.close()
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise MeasureError(f"tunnel client failed: {err.strip()[-120:]}")
        return dict(json.loads(line))

    def resume(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"next\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
