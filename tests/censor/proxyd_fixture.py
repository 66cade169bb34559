"""A real proxyd inside the lab's client namespace, and curl through it.

- ``proxyd_config(upstreams, *, race_after=, retest_initial=, retest_max=,
  health_interval=, stall_after=, desync=) -> str``: the TOML of issue 3's acceptance
  runs; ``upstreams`` are
  ``(name, url)`` pairs in priority order; ``**NO_RETEST_SOON`` for tests that count
  the censor's packets.
- ``ProxydLauncher(lab, tmp_path)`` (the ``launch_proxyd`` fixture):
  ``start(config, *args) -> Proxyd`` runs ``proxyd run`` in the client namespace on a free
  loopback port with ``<tmp_path>/state`` as its state dir, so a second ``start`` in the
  same test is a restart on the same learned state; ``state_file`` (``STATE_FILE`` in
  the state dir); ``stop_all()``
  SIGTERMs every proxyd it started that still runs (by PID) and fails on a log with a
  traceback or an internal error.
- ``curl_via(lab, proxy, url, *args, max_time=)`` -> ``CurlResult`` (exit code, body,
  status codes, timings): curl in the client namespace with ``-x`` at proxyd.
- ``learned(domain)``, ``retest_direct(domain)``, ``upstream_down(name)``, ``ANY_LEARNED``:
  the log lines proxyd prints (issue 3).
- ``wait_no_connect_in_flight(lab, address)``: until the client namespace has no
  connection attempt to ``address`` pending (earlier attempts can retransmit SYNs).
- ``state_mentions(path, domain)``, ``wait_for_state(path, domain)``: whether the state
  file names a domain (as a JSON string), and waiting until it does.
- ``unique_path()``: a request path no other request used, to find it in the origin log.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from netlab import NetLab

from tests.support.proc import Proxyd


def learned(domain: str) -> re.Pattern[str]:
    """``learned DOMAIN blocked: REASON on direct; ROUTE works``; groups reason, route."""
    return re.compile(rf"learned {re.escape(domain)} blocked: (\S+) on direct; (\S+) works")


def retest_direct(domain: str) -> re.Pattern[str]:
    return re.compile(rf"retest {re.escape(domain)}: direct works again")


def upstream_down(name: str) -> re.Pattern[str]:
    return re.compile(rf"upstream {re.escape(name)} down\b")


# Spelled out, not imported: renaming the file would silently forget every user's routes.
STATE_FILE = "routes.json"
ANY_LEARNED = re.compile(r"learned \S+ blocked:")
# For tests that count direct attempts: no out-of-band re-test may touch the censor.
NO_RETEST_SOON = {"retest_initial": "1h", "retest_max": "2h"}


def proxyd_config(
    upstreams: Sequence[tuple[str, str]],
    *,
    race_after: str = "800ms",
    retest_initial: str = "2s",
    retest_max: str = "4s",
    health_interval: str = "500ms",
    stall_after: str = "8s",
    desync: bool | None = False,
) -> str:
    """``desync``: False for the tests of upstream fallbacks (SNI-blocked sites would
    otherwise be learned with a desync route), None for proxyd's default (on)."""
    tables = [
        f'[[upstream]]\nname = "{name}"\nurl = "{url}"\nhealth_interval = "{health_interval}"\n'
        for name, url in upstreams
    ]
    return "\n".join(
        [
            *tables,
            "[learning]",
            *([] if desync is None else [f"desync = {str(desync).lower()}"]),
            f'race_after = "{race_after}"',
            'first_byte_timeout = "3s"',
            f'stall_after = "{stall_after}"',
            f'retest_initial = "{retest_initial}"',
            f'retest_max = "{retest_max}"',
            'save_debounce = "200ms"',
            'blockpage_fingerprints = ["Blocked by order of the authorities"]',
            "[limits]",
            'connect_timeout = "3s"',
            # A tunnel a test left open must not hold up the fixture's SIGTERM for 30 s.
            'drain_grace = "2s"',
            "",
        ]
    )


class ProxydLauncher:
    def __init__(self, lab: NetLab, tmp_path: Path) -> None:
        self._lab = lab
        self._tmp_path = tmp_path
        self.started: list[Proxyd] = []

    @property
    def state_file(self) -> Path:
        return self._tmp_path / "state" / STATE_FILE

    def start(self, config: str, *args: str, env: dict[str, str] | None = None) -> Proxyd:
        proxy = Proxyd(
            args, config=config, tmp_path=self._tmp_path, netns=self._lab.client.name, env=env
        )
        self.started.append(proxy)
        return proxy

    def stop_all(self) -> None:
        for proxy in self.started:
            proxy.stop()
        for proxy in self.started:
            proxy.assert_clean_log()


@dataclass(frozen=True)
class CurlResult:
    exit_code: int
    body: str
    stderr: str
    http_code: int  # the origin's (or proxyd's, for plain HTTP) response status
    http_connect: int  # proxyd's answer to CONNECT, 0 when there was none
    time_starttransfer: float  # seconds until the first response byte (after TLS)
    time_total: float


def curl_via(lab: NetLab, proxy: Proxyd, url: str, *args: str, max_time: float = 10) -> CurlResult:
    argv = ["curl", "-sS", "--max-time", str(max_time), "--cacert", str(lab.ca_bundle)]
    argv += ["-x", proxy.url, "-w", "\n%{json}", *args, url]
    try:
        done = lab.exec_client(argv, timeout=max_time + 10)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"curl {url} outlived its --max-time {max_time}") from error
    body, _, stats_line = done.stdout.rpartition("\n")
    stats = json.loads(stats_line)
    return CurlResult(
        exit_code=done.returncode,
        body=body,
        stderr=done.stderr,
        http_code=int(stats["http_code"]),
        http_connect=int(stats["http_connect"]),
        time_starttransfer=float(stats["time_starttransfer"]),
        time_total=float(stats["time_total"]),
    )


def origin_answer(host: str, path: str) -> str:
    """What the lab's origin answers; anything else came from somewhere else."""
    return f"origin {host} {path}\n"


def unique_path() -> str:
    return f"/{uuid.uuid4().hex}"


def state_mentions(path: Path, domain: str) -> bool:
    return path.exists() and json.dumps(domain) in path.read_text()


def wait_no_connect_in_flight(lab: NetLab, address: str, timeout: float = 10.0) -> None:
    """Until no socket in the client namespace is still sending SYNs to ``address``.

    A direct attempt (or an out-of-band probe) begun before a domain was learned may go
    on retransmitting SYNs after the ``learned`` line; counting a later visit's direct
    attempts is only meaningful once those are over.
    """
    argv = ["ss", "-tnH", "state", "syn-sent", "dst", address]
    deadline = time.monotonic() + timeout
    while True:
        listed = lab.exec_client(argv)
        if listed.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: {listed.stderr}")
        in_flight = listed.stdout.strip()
        if not in_flight:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"connections to {address} still in flight: {in_flight}")
        time.sleep(0.05)


def wait_for_state(path: Path, domain: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not state_mentions(path, domain):
        if time.monotonic() > deadline:
            text = path.read_text() if path.exists() else "(no file)"
            raise AssertionError(f"{path} never named {domain} within {timeout}s: {text}")
        time.sleep(0.02)
