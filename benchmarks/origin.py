"""The origin: Debian's nginx on loopback with its own temp config, pid and logs.

``Origin.start(workdir)`` serves two plain-HTTP ports, ``port_a`` and ``port_b``:

- ``/1k``: 1 KiB whose first line is ``origin <port>`` — each port serves its own body, so a
  response tells which origin produced it (the two-origins correctness check reads it);
- ``/1g``: 1 GiB (port A), a sparse file, so making it costs no disk time;
- every response carries ``X-Want: <value of ?o=>``, echoing which origin the client asked for.

One worker, pinned to the client CPU, ``keepalive_requests`` effectively unbounded, no access log.
Plain HTTP on purpose: with TLS, crypto on the client and origin would be the bottleneck and
hide the relay's cost. ``url(port, path)`` builds the absolute URLs the workloads request.
"""

from __future__ import annotations

import ctypes
import mmap
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from benchmarks import procs

BODY_SIZE = 1024
BULK_SIZE = 1 << 30

_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections {connections}; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_header_timeout 300s;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port_a} backlog=4096;
        root {root}/www-a;
        add_header X-Want $arg_o always;
    }}
    server {{
        listen 127.0.0.1:{port_b} backlog=4096;
        root {root}/www-b;
        add_header X-Want $arg_o always;
    }}
}}
"""


def url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


def _body(port: int) -> bytes:
    head = f"origin {port}\n".encode()
    return head + b"x" * (BODY_SIZE - len(head) - 1) + b"\n"


def _warm_page_cache(path: Path) -> None:
    """Read the file once: the first sendfile of a cold sparse file runs at a fifth of the speed,
    and whichever target came first would pay for it."""
    chunk = bytearray(1 << 20)
    with path.open("rb", buffering=0) as f:
        while f.readinto(chunk):
            pass


def resident_fraction(path: Path) -> float | None:
    """Share of the file's pages in the page cache (mincore), None where it cannot be asked."""
    size = path.stat().st_size
    if size == 0:
        return 1.0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    with path.open("rb") as f:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        return None
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = ctypes.create_string_buffer(pages)
        if libc.mincore(addr, size, vec) != 0:
            return None
        return sum(b & 1 for b in vec.raw) / pages
    finally:
        libc.munmap(addr, size)


@dataclass
class Origin:
    root: Path
    port_a: int
    port_b: int
    started: procs.Started | None = None

    @classmethod
    def start(cls, workdir: Path) -> Origin:
        root = workdir / "origin"
        origin = cls(root, procs.free_port(), procs.free_port())
        origin._write_files()
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        cmd = [nginx, "-p", str(root), "-e", str(root / "nginx-error.log"), "-c", "nginx.conf"]
        origin.started = procs.start("nginx", cmd, procs.CLIENT_CPU, workdir)
        procs.wait_port(origin.started, origin.port_a)
        procs.wait_port(origin.started, origin.port_b)
        return origin

    def _write_files(self) -> None:
        for sub in ("tmp", "www-a", "www-b"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "www-a" / "1k").write_bytes(_body(self.port_a))
        (self.root / "www-b" / "1k").write_bytes(_body(self.port_b))
        with (self.root / "www-a" / "1g").open("wb") as big:
            big.truncate(BULK_SIZE)
        _warm_page_cache(self.root / "www-a" / "1g")
        # The worker inherits the harness's RLIMIT_NOFILE; stay inside it rather than ask nginx
        # to raise it (without CAP_SYS_RESOURCE that fails with an alert).
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        conf = _CONF.format(
            root=self.root, port_a=self.port_a, port_b=self.port_b, connections=soft - 64
        )
        (self.root / "nginx.conf").write_text(conf)

    def warm_bulk(self) -> float | None:
        """Put /1g back in the page cache before a bulk measurement; returns how much of it was
        still there (the JSON keeps it). Direct's one-stream download is the first bulk read of
        every run, right after the memory-hungry idle-tunnel workload: where that evicted the
        file, direct alone read it cold (see ``_warm_page_cache``), as in the newcomer's run
        where direct read 300 MB/s against 1,622 for 8 streams and proxyd showed 4.15x."""
        path = self.root / "www-a" / "1g"
        resident = resident_fraction(path)
        if resident is None or resident < 1.0:
            _warm_page_cache(path)
        return resident

    def stop(self) -> None:
        if self.started is not None:
            procs.stop(self.started)
