"""The one place a test gives up for want of root or a program: skip, or fail in CI.

A test that needs what a developer's machine may lack (root for network namespaces,
Chromium, the lab's daemons) calls ``require(met, what)``. Without the condition the
test is skipped, loudly; with ``PROXYD_CENSOR_REQUIRED=1`` (``scripts/test`` sets it as
root, so CI does) it fails instead: there, a skip would count a test that never ran as
passing.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRED_ENV = "PROXYD_CENSOR_REQUIRED"
# Where Debian puts ip, iptables and friends, which a non-login PATH may lack.
_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


def require(met: bool, what: str) -> None:
    """Go on if ``met``; otherwise skip this test, or fail it when CI requires everything."""
    if met:
        return
    if os.environ.get(REQUIRED_ENV) == "1":
        pytest.fail(f"NOT RUN: {what} ({REQUIRED_ENV}=1: a skip would hide it)", pytrace=False)
    pytest.skip(f"NOT RUN: {what}")


def installed(program: str) -> bool:
    return shutil.which(program, path=os.environ.get("PATH", "") + ":" + _SBIN_PATH) is not None


def is_root() -> bool:
    return os.geteuid() == 0
