"""What an operator switches: the access log, metrics off, the log level, the health check
when the state cannot be saved. Real daemon, real curl."""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.test_admin import ADMIN_LISTENING, accepting, free_port, wait_until
from tests.support.origin import OriginServer
from tests.support.proc import Proxyd
from tests.support.scrape import scrape

ACCESS_LINE = re.compile(
    r"proxyd\.access: 127\.0\.0\.1 (?P<protocol>\S+) (?P<target>\S+) route=(?P<route>\S+) "
    r"outcome=(?P<outcome>\S+) up=(?P<up>\d+) down=(?P<down>\d+) "
    r"connect=(?P<connect>\S+) first_byte=(?P<first_byte>\S+) total=(?P<total>\d+)ms$"
)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def access_lines(proc: Proxyd) -> list[dict[str, str]]:
    return [m.groupdict() for line in proc.lines if (m := ACCESS_LINE.search(line))]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_access_log_writes_one_line_per_request_with_route_and_timings(
    tmp_path: Path, origin: OriginServer
) -> None:
    # A log level that hides info lines (so no "listening" line to wait for): the access
    # log was asked for by its own key.
    port = free_port()
    proc = Proxyd(
        ["--listen", f"127.0.0.1:{port}"],
        config='access_log = true\nlog_level = "warning"\nupstream = []\n',
        tmp_path=tmp_path,
        wait=False,
    )
    proc.host, proc.port = "127.0.0.1", port
    try:
        wait_until(lambda: accepting(port), what="proxyd accepting")
        assert curl("-x", proc.url, f"{origin.url}/plain").stdout == "200"
        assert curl("-p", "-x", proc.url, f"{origin.url}/tunnelled").stdout == "200"
        closed = free_port()  # nothing listens there: connection refused
        assert curl("-x", proc.url, f"http://127.0.0.1:{closed}/").stdout == "502"
        proc.wait_for_log(rf"127\.0\.0\.1:{closed} route=direct outcome=dial_error")
    finally:
        assert proc.stop() == 0
    plain, tunnel, refused = access_lines(proc)
    origin_port = origin.url.rsplit(":", 1)[1]
    assert (plain["protocol"], plain["target"], plain["route"], plain["outcome"]) == (
        "http", f"127.0.0.1:{origin_port}", "direct", "ok"
    )  # fmt: skip
    assert re.fullmatch(r"\d+ms", plain["connect"]) and re.fullmatch(r"\d+ms", plain["first_byte"])
    assert int(plain["up"]) > 0 and int(plain["down"]) > 0
    assert (tunnel["protocol"], tunnel["route"], tunnel["outcome"]) == ("connect", "direct", "ok")
    assert re.fullmatch(r"\d+ms", tunnel["connect"])
    assert (refused["outcome"], refused["up"], refused["down"]) == (
        "dial_error",
        refused["up"],
        "0",
    )
    assert refused["connect"] == "-"
    assert "proxyd listening on" not in proc.log_text()  # the warning level still applies


def test_no_line_per_request_by_default(tmp_path: Path, origin: OriginServer) -> None:
    # No upstream (health lines) and a connection limit the fd limit allows (a warning):
    # nothing at all is logged once proxyd listens.
    config = "upstream = []\n[limits]\nmax_connections = 100\n"
    proc = Proxyd(config=config, tmp_path=tmp_path)
    try:
        before = len(proc.lines)
        for n in range(5):
            assert curl("-x", proc.url, f"{origin.url}/quiet/{n}").stdout == "200"
        assert curl("-x", proc.url, f"http://127.0.0.1:{free_port()}/").stdout == "502"
        during = proc.lines[before:]
    finally:
        assert proc.stop() == 0
    assert during == []
    assert "/quiet/" not in proc.log_text() and "proxyd.access" not in proc.log_text()


def test_metrics_can_be_switched_off_and_everything_else_keeps_working(
    tmp_path: Path, origin: OriginServer
) -> None:
    proc = Proxyd(["--admin", "127.0.0.1:0"], config="metrics = false\n", tmp_path=tmp_path)
    try:
        admin = f"http://127.0.0.1:{proc.wait_for_log(ADMIN_LISTENING).group(2)}"
        assert curl("-x", proc.url, f"{origin.url}/x").stdout == "200"
        status, text = get(f"{admin}/metrics")
        assert (status, text) == (404, "proxyd: metrics are off (metrics = false)\n")
        assert get(f"{admin}/api/routes")[0] == 200
        status, page = get(f"{admin}/")
        assert status == 200 and "off (metrics = false)" in page
    finally:
        assert proc.stop() == 0
    proc.assert_clean_log()


def test_healthz_is_503_while_the_state_cannot_be_saved(
    tmp_path: Path,
) -> None:
    # A file where the state directory should be: every save fails, for real.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    proc = Proxyd(
        ["--admin", "127.0.0.1:0", "--state-dir", str(blocker / "state")],
        config='upstream = []\n[learning]\nsave_debounce = "100ms"\n',
        tmp_path=tmp_path,
    )
    try:
        admin = f"http://127.0.0.1:{proc.wait_for_log(ADMIN_LISTENING).group(2)}"
        assert get(f"{admin}/healthz") == (200, "ok\n")
        request = urllib.request.Request(
            f"{admin}/api/routes/forced.example",
            data=b'{"route": "direct"}',
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        proc.wait_for_log("cannot save learned routes")
        assert get(f"{admin}/healthz") == (503, "the last state save failed\n")
        exposition = get(f"{admin}/metrics")[1]
        assert "proxyd_state_save_failures_total 1.0" in exposition
        assert "proxyd_state_last_save_successful 0.0" in exposition
    finally:
        proc.stop()
    proc.assert_clean_log()


def test_kept_alive_requests_are_each_counted_once_with_their_bytes(
    tmp_path: Path, origin: OriginServer
) -> None:
    """One client connection, five requests: the first is dialled by the coroutine, the
    rest are served by the hot lane from the pooled origin connection."""
    proc = Proxyd(["--admin", "127.0.0.1:0"], config="access_log = true\n", tmp_path=tmp_path)
    try:
        admin = f"http://127.0.0.1:{proc.wait_for_log(ADMIN_LISTENING).group(2)}"
        urls = [f"{origin.url}/kept/{n}" for n in range(5)]
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "-x", proc.url,
             "-w", "%{size_request} %{size_header} %{size_download} %{num_connects}\n",
             *[arg for url in urls for arg in ("-o", "/dev/null", url)]],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        rows = [tuple(map(int, line.split())) for line in out.stdout.splitlines()]
        assert [connects for *_, connects in rows] == [1, 0, 0, 0, 0]  # one connection
        samples = scrape(admin)
    finally:
        assert proc.stop() == 0
    ok = 'proxyd_requests_total{outcome="ok",protocol="http",route="direct"}'
    assert samples[ok] == 5
    assert samples['proxyd_connections_total{protocol="http"}'] == 1
    assert samples['proxyd_first_byte_latency_seconds_count{route="direct"}'] == 5
    up = samples['proxyd_relayed_bytes_total{direction="up",route="direct"}']
    down = samples['proxyd_relayed_bytes_total{direction="down",route="direct"}']
    assert up == sum(sent for sent, *_ in rows)
    assert down == sum(headers + body for _, headers, body, _ in rows)
    lines = access_lines(proc)
    assert [line["target"].rsplit(":")[0] for line in lines] == ["127.0.0.1"] * 5
    assert [line["connect"] == "-" for line in lines] == [False, True, True, True, True]
