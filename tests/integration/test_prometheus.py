"""A real Prometheus scrapes a real proxyd: the exposition is what Prometheus ingests.

Prometheus (the Debian package) runs on a free loopback port with its own config and
storage in a temp dir; a system Prometheus that apt may have started is left alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from proxyd.inbound._http import CONNECT_ESTABLISHED
from tests.integration.test_admin import ADMIN_LISTENING, free_port, wait_until
from tests.support.origin import OriginServer
from tests.support.proc import Proxyd

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian prometheus package not installed",
)

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: proxyd
    static_configs:
      - targets: ["127.0.0.1:{admin_port}"]
"""


@dataclass
class Scraped:
    proxyd: Proxyd
    admin_port: int
    prometheus: subprocess.Popen[bytes]
    api: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.scalar(promql)) != expected:
            assert time.monotonic() < deadline, f"{promql} = {got}, expected {expected}"
            time.sleep(0.2)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    tmp = tmp_path_factory.mktemp("prometheus")
    proxyd = Proxyd(["--admin", "127.0.0.1:0"], tmp_path=tmp)
    admin_port = int(proxyd.wait_for_log(ADMIN_LISTENING).group(2))
    config = tmp / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(admin_port=admin_port))
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=log,
    )
    api = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: ready(f"{api}/-/ready"), timeout=60, what="prometheus ready")
        yield Scraped(proxyd, admin_port, prometheus, api)
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        log.close()
        assert proxyd.stop() == 0
        proxyd.assert_clean_log()


def curl(*args: str) -> tuple[int, int]:
    """Run curl; the bytes it sent and received (headers, and a CONNECT answer, included)."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-o", "/dev/null",
         "-w", "%{size_request} %{size_header} %{size_download}", *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    sent, headers, body = map(int, out.stdout.split())
    return sent, headers + body


def test_prometheus_scrapes_proxyd_and_finds_it_up(scraped: Scraped) -> None:
    scraped.wait_for('up{job="proxyd"}', 1.0)
    scraped.wait_for('proxyd_build_info{job="proxyd"}', 1.0)
    assert scraped.scalar('process_resident_memory_bytes{job="proxyd"}') is not None


def test_request_counters_in_prometheus_match_the_traffic(
    scraped: Scraped, origin: OriginServer
) -> None:
    proxy = scraped.proxyd.url
    relayed = 'proxyd_relayed_bytes_total{route="direct",direction="%s"}'
    up = down = 0
    for n in range(4):
        sent, received = curl("-x", proxy, f"{origin.url}/plain/{n}")
        up, down = up + sent, down + received
    scraped.wait_for('sum(proxyd_requests_total{job="proxyd"})', 4.0, timeout=10)
    assert scraped.scalar(relayed % "up") == up
    assert scraped.scalar(relayed % "down") == down
    tunnel_sent = 0
    for n in range(3):
        sent, received = curl("-p", "-x", proxy, f"{origin.url}/tunnelled/{n}")
        # The CONNECT exchange is between curl and proxyd: not relayed traffic.
        tunnel_sent += sent
        down += received - len(CONNECT_ESTABLISHED)
    scraped.wait_for('sum(proxyd_requests_total{job="proxyd"})', 7.0, timeout=10)
    by_label = {
        (r["metric"]["protocol"], r["metric"]["route"], r["metric"]["outcome"]): r["value"][1]
        for r in scraped.query('proxyd_requests_total{job="proxyd"}')
    }
    assert by_label == {("http", "direct", "ok"): "4", ("connect", "direct", "ok"): "3"}
    assert scraped.scalar('proxyd_connections_total{protocol="http"}') == 7
    tunnelled_up = (scraped.scalar(relayed % "up") or 0) - up
    assert 0 < tunnelled_up < tunnel_sent - 3 * len("CONNECT  HTTP/1.1\r\n\r\n")
    assert scraped.scalar(relayed % "down") == down
    assert scraped.scalar('proxyd_dials_total{route="direct",outcome="ok"}') == 1 + 3
    assert scraped.scalar('proxyd_connect_latency_seconds_count{route="direct"}') == 1 + 3
    # Plain HTTP waits for the answer's head; these loopback tunnels have a single route,
    # so they are spliced at once and never wait for a first byte.
    assert scraped.scalar('proxyd_first_byte_latency_seconds_count{route="direct"}') == 4
    assert scraped.scalar('proxyd_tunnels_active{route="direct"}') == 0


def test_promtool_finds_no_problem_in_the_exposition(
    scraped: Scraped, origin: OriginServer
) -> None:
    curl("-x", scraped.proxyd.url, f"{origin.url}/for-some-series")
    with urllib.request.urlopen(f"http://127.0.0.1:{scraped.admin_port}/metrics") as response:
        exposition = response.read()
    assert b"proxyd_learned_domains" in exposition
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, b"", b"")
