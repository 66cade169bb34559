"""Fixtures for tests that run inside the censorship lab (see netlab.py).

- ``netlab``: one ``NetLab`` for the whole session. After every test that used it, the
  lab is ``reset()`` (default censorship, first SOCKS server up, extra ones stopped), so a
  test may lift blocks or kill upstreams freely.
- ``launch_proxyd``: a ``proxyd_fixture.ProxydLauncher`` for this test; every proxyd it
  started is stopped (SIGTERM by PID) after the test and its log checked for tracebacks.
- Every test under this directory is marked ``censor``.

Without root, ip netns or the lab's programs the tests skip, loudly; with
``PROXYD_CENSOR_REQUIRED=1`` (for CI) they fail instead (``tests.support.required``,
which every test needing root or Chromium goes through as well).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_netns import LabUnavailable
from netlab import NetLab
from proxyd_fixture import ProxydLauncher

from tests.support.required import installed, is_root, require

_HERE = Path(__file__).resolve().parent
_NEEDED_TOOLS = ("ip", "iptables", "iptables-restore", "dnsmasq", "microsocks", "curl")
_PACKAGES = "iproute2 iptables dnsmasq-base microsocks curl"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.censor)


def _require_for_lab(met: bool, reason: str) -> None:
    require(met, f"censorship lab: {reason} (needs root and: {_PACKAGES})")


@pytest.fixture(scope="session")
def netlab() -> Iterator[NetLab]:
    _require_for_lab(is_root(), "not running as root")
    for name in _NEEDED_TOOLS:
        _require_for_lab(installed(name), f"{name} is not installed")
    lab = NetLab()
    try:
        lab.__enter__()
    except LabUnavailable as error:
        _require_for_lab(False, str(error))
        raise
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(autouse=True)
def _reset_netlab_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    lab = request.node.funcargs.get("netlab")
    if isinstance(lab, NetLab):
        lab.reset()


@pytest.fixture
def chromium() -> None:
    """For tests that drive Debian's headless Chromium (``NetLab.chromium_argv``)."""
    require(installed("chromium"), "chromium is not installed")


@pytest.fixture
def launch_proxyd(netlab: NetLab, tmp_path: Path) -> Iterator[ProxydLauncher]:
    launcher = ProxydLauncher(netlab, tmp_path)
    yield launcher
    launcher.stop_all()
