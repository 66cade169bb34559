"""How to start each proxy under test, on loopback, with its own temp config and port.

- ``PEERS``: name -> ``Peer``; ``DEFAULT_PEERS`` is the set run when ``--proxies`` is not given.
- ``Peer.launch(workdir, port, socks_port)`` writes the peer's config under ``workdir`` and
  returns the command (and extra environment) that serves HTTP proxy on ``127.0.0.1:port``;
  with ``socks_port`` it chains every request through that SOCKS5 server (``None`` from
  ``launch`` means the peer cannot chain). ``start_peer`` runs it pinned to the proxy CPU and
  waits for the port; a failure raises ``procs.StartError`` with a short reason.

Every config turns logging off (or to errors only) and caching off, so the figures compare
relays, not disks. Python peers run with the harness's interpreter and the repo on PYTHONPATH.

``proxyd-bare`` is the baseline of the "learning+metrics overhead <= 5 %" target: the same
daemon and code with ``[learning] enabled = false`` and ``metrics = false`` (no per-request
accounting), so the difference between the two columns is what learning and metrics cost.
``proxyd-nometrics`` turns off metrics alone, the baseline of "metrics cost < 3 %".
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import procs

REPO = Path(__file__).resolve().parent.parent

# proxyd's benchmark config. Its connection limits match the peers' (MaxClients 20000); the
# SOCKS part forces every loopback destination (the origin) through the upstream. The lead
# owns the format: adjust here when config.py changes.
PROXYD_CONFIG_TEMPLATE = """\
{top}
[limits]
max_connections = 20000
max_connections_per_client = 20000
"""
PROXYD_SOCKS_CONFIG_TEMPLATE = """\
[[upstream]]
name = "bench-socks"
url = "socks5://127.0.0.1:{socks_port}"

[[rule]]
cidr = "127.0.0.0/8"
route = "bench-socks"
"""
NO_METRICS = "metrics = false"
NO_LEARNING = "[learning]\nenabled = false\n"

Launch = tuple[list[str], dict[str, str]]


@dataclass(frozen=True)
class Peer:
    name: str
    note: str
    build: Callable[[Path, int, int | None], Launch | None]
    env: dict[str, str] = field(default_factory=dict)

    def launch(self, workdir: Path, port: int, socks_port: int | None) -> Launch | None:
        peer_dir = workdir / (self.name + ("-socks" if socks_port else ""))
        peer_dir.mkdir(parents=True, exist_ok=True)
        return self.build(peer_dir, port, socks_port)


def _python_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}


def _proxyd(*, metrics: bool = True, learning: bool = True) -> Callable[..., Launch]:
    def build(d: Path, port: int, socks_port: int | None) -> Launch:
        conf = PROXYD_CONFIG_TEMPLATE.format(top="" if metrics else NO_METRICS)
        if not learning:
            conf += "\n" + NO_LEARNING
        if socks_port:
            conf += "\n" + PROXYD_SOCKS_CONFIG_TEMPLATE.format(socks_port=socks_port)
        (d / "proxyd.toml").write_text(conf)
        cmd = [sys.executable, "-m", "proxyd", "run", "-c", str(d / "proxyd.toml")]
        cmd += ["--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{procs.free_port()}"]
        # Learned state goes to the temp dir, never the user's.
        cmd += ["--log-level", "warning", "--state-dir", str(d / "state")]
        return cmd, _python_env()

    return build


def _tinyproxy(d: Path, port: int, socks_port: int | None) -> Launch:
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 600",
        "MaxClients 20000",
        "LogLevel Error",
        f'LogFile "{d}/tinyproxy.log"',
        f'PidFile "{d}/tinyproxy.pid"',
        "DisableViaHeader Yes",
    ]
    if socks_port:
        lines.append(f"Upstream socks5 127.0.0.1:{socks_port}")
    (d / "tinyproxy.conf").write_text("\n".join(lines) + "\n")
    os.chmod(d, 0o777)  # tinyproxy drops to nobody when started as root
    return ["tinyproxy", "-d", "-c", str(d / "tinyproxy.conf")], {}


def _privoxy(d: Path, port: int, socks_port: int | None) -> Launch:
    # No actions/filter files: the most generous setup, a plain forwarding proxy.
    lines = [
        f"listen-address 127.0.0.1:{port}",
        f"confdir {d}",
        f"logdir {d}",
        "max-client-connections 20000",
        "keep-alive-timeout 300",
        "socket-timeout 300",
        "connection-sharing 1",
        "tolerate-pipelining 1",
        "enable-remote-toggle 0",
        "enable-edit-actions 0",
    ]
    if socks_port:
        lines.append(f"forward-socks5 / 127.0.0.1:{socks_port} .")
    (d / "privoxy.conf").write_text("\n".join(lines) + "\n")
    return ["privoxy", "--no-daemon", str(d / "privoxy.conf")], {}


def _squid(d: Path, port: int, socks_port: int | None) -> Launch | None:
    if socks_port:
        return None  # squid has no SOCKS parent support
    conf = f"""\
http_port 127.0.0.1:{port}
http_access allow all
cache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log {d}/cache.log
pid_filename {d}/squid.pid
coredump_dir {d}
logfile_rotate 0
max_filedescriptors 65536
pinger_enable off
netdb_filename none
shutdown_lifetime 1 seconds
workers 1
"""
    (d / "squid.conf").write_text(conf)
    # squid drops to its effective user (Debian: proxy) before writing its pid and log files.
    shutil.chown(d, user="proxy", group="proxy")
    return ["squid", "-N", "-f", str(d / "squid.conf")], {}


# pproxy 2.7.9 calls uvloop.install() then asyncio.get_event_loop(), which uvloop 0.23 refuses
# ("no current event loop"). The shim creates the uvloop loop pproxy meant to use, then runs it.
_PPROXY_SHIM = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop(uvloop.new_event_loop()); "
    "uvloop.install = lambda: None; from pproxy.server import main; main()"
)


def _pproxy(d: Path, port: int, socks_port: int | None) -> Launch:
    cmd = [sys.executable, "-c", _PPROXY_SHIM, "-l", f"http://127.0.0.1:{port}"]
    if socks_port:
        cmd += ["-r", f"socks5://127.0.0.1:{socks_port}"]
    return cmd, {}


def _naive(d: Path, port: int, socks_port: int | None) -> Launch | None:
    if socks_port:
        return None
    cmd = [sys.executable, "-m", "benchmarks.naive_relay", "--listen", f"127.0.0.1:{port}"]
    return cmd, _python_env()


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("proxyd", "this project", _proxyd()),
        Peer("proxyd-bare", "proxyd, learning+metrics off", _proxyd(metrics=False, learning=False)),
        Peer("proxyd-nometrics", "proxyd, metrics off", _proxyd(metrics=False)),
        Peer("tinyproxy", "Debian, C, thread per client", _tinyproxy),
        Peer("privoxy", "Debian, C, no filters", _privoxy),
        Peer("squid", "Debian, C++, caching off", _squid),
        Peer("pproxy", "PyPI, asyncio streams", _pproxy),
        Peer("naive", "our StreamReader relay, pipes after 1st request", _naive),
    )
}
DEFAULT_PEERS = (
    "proxyd",
    "proxyd-bare",
    "proxyd-nometrics",
    "tinyproxy",
    "privoxy",
    "squid",
    "pproxy",
    "naive",
)


def start_peer(
    peer: Peer, workdir: Path, socks_port: int | None = None
) -> tuple[procs.Started, int]:
    """Start ``peer`` and wait until it accepts; return the process and its port."""
    port = procs.free_port()
    launch = peer.launch(workdir, port, socks_port)
    if launch is None:
        raise procs.StartError("cannot chain to a SOCKS upstream")
    cmd, env = launch
    exe = shutil.which(cmd[0])
    if exe is None:
        raise procs.StartError(f"{cmd[0]} not installed (run benchmarks/setup.sh)")
    name = peer.name + ("-socks" if socks_port else "")
    started = procs.start(name, cmd, procs.PROXY_CPU, workdir, env={**env, **peer.env})
    try:
        procs.wait_port(started, port)
    except procs.StartError:
        procs.stop(started)
        raise
    return started, port
