"""Issue 3, acceptance 6: Debian's headless Chromium, pointed at proxyd, loads HTTPS pages
from a blocked and an open site on the first visit, as an HTTP proxy and as a SOCKS5 one.

Chromium sends its own ClientHello (large, possibly split over two segments), may open
several connections at once and gives up on a reset with ERR_CONNECTION_RESET: the
transparent retry has to hold for a real browser, not only for curl.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lab_sites import CLIENT_IP, SOCKS_IP
from netlab import NetLab
from proxyd_fixture import ProxydLauncher, proxyd_config, unique_path

CHROMIUM_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)


@pytest.mark.usefixtures("chromium")
@pytest.mark.parametrize("scheme", ["http", "socks5"])
@pytest.mark.parametrize(("host", "peer"), [("sni.example", SOCKS_IP), ("open.example", CLIENT_IP)])
def test_chromium_loads_https_page_on_first_visit_through_proxyd(
    netlab: NetLab,
    launch_proxyd: ProxydLauncher,
    tmp_path: Path,
    host: str,
    peer: str,
    scheme: str,
) -> None:
    proxy = launch_proxyd.start(proxyd_config([("tor", netlab.socks.url)]))
    path = unique_path()
    argv = netlab.chromium_argv(
        f"https://{host}{path}",
        tmp_path / "profile",
        *CHROMIUM_FLAGS,
        # socks5:// in Chromium means remote DNS: proxyd gets the name, as with CONNECT
        f"--proxy-server={scheme}://{proxy.host}:{proxy.port}",
    )
    page = netlab.exec_client(argv, timeout=60)
    assert f"origin {host} {path}" in page.stdout, (page.stderr[-2000:], proxy.log_text())
    netlab.wait_for_origin(host=host, path=path, peer_ip=peer)
