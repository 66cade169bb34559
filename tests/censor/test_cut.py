"""Issue 12, acceptance 2: the mid-stream reset. The censor resets every connection to
cut.example, HTTPS and plain HTTP, once the site has sent ``CUT_AFTER`` bytes on it.

- HTTPS: the first download is lost (nothing to replay: its head and first part are the
  client's), but the cut is evidence (``cut_after_data``): the next tunnel goes through
  the upstream as the control and completes, which confirms the block.
- Plain HTTP: an answer with a Content-Length and an ETag is resumed on the first visit:
  proxyd asks the upstream for the rest with ``Range``/``If-Range`` and splices it into
  the same answer. An origin that ignores Range (``/bytes/N``) answers the resume 200:
  the client connection closes, and what the client got is a prefix of the truth.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from lab_sites import CLIENT_IP, CUT_AFTER, SOCKS_IP
from netlab import NetLab
from proxyd_fixture import (
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    learned,
    proxyd_config,
    unique_path,
)

from tests.support.proc import Proxyd

SIZE = 1_000_000  # a download the censor cuts after about a tenth
CURL_PARTIAL = 18  # curl: transfer closed with outstanding read data remaining
CUT_TUNNEL = re.compile(r"cut\.example: a direct tunnel was reset after (\d+) bytes")
RESUMED = re.compile(
    r"cut\.example: an answer cut on direct at byte (\d+) of (\d+) was resumed through (\S+)"
)
REFUSED = re.compile(r"cut\.example: an answer cut at byte (\d+) of \d+ closes: .*answered 200")


def pattern(size: int) -> str:
    """What the lab origin's /bytes/N and /ranged/N answer."""
    return ("0123456789abcdef" * (size // 16 + 1))[:size]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def start(netlab: NetLab, launch_proxyd: ProxydLauncher) -> Proxyd:
    return launch_proxyd.start(proxyd_config([("tor", netlab.socks.url)], **NO_RETEST_SOON))


def test_https_download_reset_mid_stream_completes_through_the_upstream_on_visit_2(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start(netlab, launch_proxyd)
    path = f"/bytes/{SIZE}?{unique_path()[1:]}"
    mark = netlab.origin_mark()
    cut = curl_via(netlab, proxy, f"https://cut.example{path}")
    assert cut.exit_code != 0 and len(cut.body) < SIZE, (cut.stderr, proxy.log_text())
    netlab.wait_for_origin(host="cut.example", path=path, peer_ip=CLIENT_IP, since=mark)
    cut_point = int(proxy.wait_for_log(CUT_TUNNEL).group(1))
    assert CUT_AFTER // 2 < cut_point < SIZE
    assert not learned("cut.example").search(proxy.log_text())  # suspected, not learned
    path = f"/bytes/{SIZE}?{unique_path()[1:]}"
    mark = netlab.origin_mark()
    control = curl_via(netlab, proxy, f"https://cut.example{path}")
    assert control.exit_code == 0, (control.stderr, proxy.log_text())
    assert sha256(control.body) == sha256(pattern(SIZE))
    netlab.wait_for_origin(host="cut.example", path=path, peer_ip=SOCKS_IP, since=mark)
    match = proxy.wait_for_log(learned("cut.example"))
    assert match.groups() == ("cut_after_data", "tor")


def test_plain_http_answer_cut_mid_body_is_resumed_by_range_on_the_next_route(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start(netlab, launch_proxyd)
    path = f"/ranged/{SIZE}?{unique_path()[1:]}"
    mark = netlab.origin_mark()
    answer = curl_via(netlab, proxy, f"http://cut.example{path}")
    assert answer.exit_code == 0 and answer.http_code == 200, (answer.stderr, proxy.log_text())
    assert sha256(answer.body) == sha256(pattern(SIZE))
    resumed = proxy.wait_for_log(RESUMED)
    assert CUT_AFTER // 2 < int(resumed.group(1)) < SIZE and resumed.group(3) == "tor"
    # Asked direct first, then the rest through the upstream.
    netlab.wait_for_origin(host="cut.example", path=path, peer_ip=CLIENT_IP, since=mark)
    netlab.wait_for_origin(host="cut.example", path=path, peer_ip=SOCKS_IP, since=mark)
    # The request carried past the cut on the upstream: the control rule, on one request.
    assert proxy.wait_for_log(learned("cut.example")).groups() == ("cut_after_data", "tor")


def test_origin_that_ignores_range_gets_a_clean_close_never_a_corrupt_answer(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start(netlab, launch_proxyd)
    answer = curl_via(netlab, proxy, f"http://cut.example/bytes/{SIZE}?{unique_path()[1:]}")
    assert answer.exit_code == CURL_PARTIAL, (answer.stderr, proxy.log_text())
    assert 0 < len(answer.body) < SIZE
    assert pattern(SIZE).startswith(answer.body)  # a prefix of the truth, nothing spliced
    refused = proxy.wait_for_log(REFUSED)
    assert int(refused.group(1)) == len(answer.body)


def chromium_text(
    netlab: NetLab, proxy: Proxyd, url: str, profile: Path, *flags: str
) -> str | None:
    """The text of a text/plain document as headless Chromium shows it (one <pre>)."""
    argv = netlab.chromium_argv(
        url,
        profile,
        *flags,
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--proxy-server=http://{proxy.host}:{proxy.port}",
    )
    page = netlab.exec_client(argv, timeout=60)
    shown = re.search(r"<pre[^>]*>([0-9a-f]*)</pre>", page.stdout)
    return shown.group(1) if shown is not None else None


@pytest.mark.usefixtures("chromium")
def test_chromium_loads_a_mid_stream_reset_https_download_whole_on_visit_2(
    netlab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path
) -> None:
    proxy = start(netlab, launch_proxyd)
    size = 400_000
    # A load that broke off never finishes: --timeout stops it and dumps what there is.
    url = f"https://cut.example/ranged/{size}"
    first = chromium_text(netlab, proxy, url, tmp_path / "p1", "--timeout=10000")
    assert first is None or len(first) < size, proxy.log_text()  # the cut visit is lost
    proxy.wait_for_log(CUT_TUNNEL)
    path = f"/ranged/{size}?{unique_path()[1:]}"
    mark = netlab.origin_mark()
    second = chromium_text(netlab, proxy, f"https://cut.example{path}", tmp_path / "p2")
    assert second is not None, proxy.log_text()
    assert sha256(second) == sha256(pattern(size))
    netlab.wait_for_origin(host="cut.example", path=path, peer_ip=SOCKS_IP, since=mark)
    assert proxy.wait_for_log(learned("cut.example")).groups() == ("cut_after_data", "tor")


@pytest.mark.usefixtures("chromium")
def test_chromium_gets_a_cut_plain_http_answer_whole_by_a_range_resume(
    netlab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path
) -> None:
    proxy = start(netlab, launch_proxyd)
    size = 400_000
    url = f"http://cut.example/ranged/{size}?{unique_path()[1:]}"
    shown = chromium_text(netlab, proxy, url, tmp_path / "profile")
    assert shown is not None, proxy.log_text()
    assert sha256(shown) == sha256(pattern(size))
    assert proxy.wait_for_log(RESUMED).group(3) == "tor"
