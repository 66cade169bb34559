"""The shipped systemd units, byte for byte, as systemd itself reads them.

systemd is installed here but is not PID 1, so the units cannot be started; what can be
proven is what ``systemd-analyze`` checks offline: every directive parses (unknown or
misspelt keys, values this systemd rejects such as Type=notify-reload on 252), ExecStart's
binary and every bare command name resolve to executables (systemd 252 does not look for
absolute paths outside ExecStart, such as ``/bin/kill``), every referenced unit exists, and
the sandbox's exposure score.

The units are verified unchanged inside a throwaway ``--root``: it holds this host's own
system units (targets such as sockets.target) and ``proxyd`` where an install would put it.
That ``proxyd`` is the installed console script when there is one, else a shim that runs
``python -m proxyd``; systemd-analyze only checks that it is an executable file, so both
are honest stand-ins.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is missing (Debian package `systemd`): "
    "THE SHIPPED SYSTEMD UNITS ARE NOT VERIFIED",
)

UNIT_DIR = Path(__file__).resolve().parents[2] / "systemd"
SHIPPED_UNITS = (
    "proxyd.service",
    "proxyd.socket",
    "proxyd-admin.socket",
    "proxyd-transparent.service",
)
# systemd-analyze's scale is 0-100, printed as 0.0-10.0; the shipped service scores 1.4.
MAX_EXPOSURE = 20


def host_unit_dir() -> Path:
    for candidate in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (candidate / "sockets.target").exists():
            return candidate
    pytest.fail("no systemd unit directory with sockets.target on this host")


def proxyd_executable() -> str:
    installed = shutil.which("proxyd")
    if installed is not None:
        return Path(installed).read_text()
    return f'#!/bin/sh\nexec {sys.executable} -m proxyd "$@"\n'


def build_root(root: Path, proxyd_dir: str) -> Path:
    shutil.copytree(host_unit_dir(), root / "usr/lib/systemd/system", symlinks=True)
    proxyd = root / proxyd_dir / "proxyd"
    proxyd.parent.mkdir(parents=True, exist_ok=True)
    proxyd.write_text(proxyd_executable())
    proxyd.chmod(0o755)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in SHIPPED_UNITS:
        shutil.copy(UNIT_DIR / unit, units / unit)
    return root


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False
    )


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return systemd_analyze("verify", f"--root={root}", "--man=no", "--generators=no", *units)


@pytest.mark.parametrize(
    "proxyd_dir",
    ["usr/bin", "usr/local/bin"],
    ids=["distribution-package", "pip-install"],
)
def test_shipped_units_verify_cleanly_wherever_proxyd_is_installed(
    tmp_path: Path, proxyd_dir: str
) -> None:
    root = build_root(tmp_path, proxyd_dir)
    result = verify(root, *SHIPPED_UNITS)
    # verify exits 0 on unknown keys and unparsable values; only its output tells.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_service_fails_verification_when_proxyd_is_not_on_systemds_search_path(
    tmp_path: Path,
) -> None:
    root = build_root(tmp_path, "opt/proxyd/bin")
    result = verify(root, "proxyd.service")
    assert result.returncode != 0
    assert "Command proxyd is not executable" in result.stderr


def test_verify_reports_a_misspelt_directive(tmp_path: Path) -> None:
    root = build_root(tmp_path, "usr/bin")
    shipped = (UNIT_DIR / "proxyd.service").read_text()
    assert "\nProtectSystem=strict\n" in shipped
    typo = root / "etc/systemd/system/proxyd-typo.service"
    typo.write_text(shipped.replace("\nProtectSystem=strict\n", "\nProtectSytem=strict\n"))
    result = verify(root, "proxyd-typo.service")
    assert "Unknown key 'ProtectSytem'" in result.stderr


def test_shipped_service_sandbox_exposure_stays_low(tmp_path: Path) -> None:
    root = build_root(tmp_path, "usr/bin")
    result = systemd_analyze(
        "security",
        "--offline=true",
        f"--root={root}",
        f"--threshold={MAX_EXPOSURE}",
        "proxyd.service",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def service_settings(text: str) -> dict[str, list[str]]:
    """[Service] assignments in order; a key may repeat (ExecReload, SystemCallFilter)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_service_has_every_setting_a_router_install_relies_on() -> None:
    settings = service_settings((UNIT_DIR / "proxyd.service").read_text())
    required = {
        "Type": ["notify"],
        "DynamicUser": ["yes"],
        "StateDirectory": ["proxyd"],
        "ConfigurationDirectory": ["proxyd"],
        "ProtectSystem": ["strict"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],  # empty: the default ports are not privileged
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
        "Restart": ["on-failure"],
        "ExecReload": ["proxyd check -c /etc/proxyd/proxyd.toml", "/bin/kill -HUP $MAINPID"],
    }
    assert {key: settings.get(key) for key in required} == required
    assert settings["SystemCallFilter"][0] == "@system-service"  # splice is in it
    for key in ("MemoryMax", "LimitNOFILE", "WatchdogSec"):
        assert len(settings.get(key, [])) == 1 and settings[key][0], key
    # A spliced tunnel holds 4 fds: the limit must allow thousands of tunnels.
    assert int(settings["LimitNOFILE"][0]) >= 16384


def test_transparent_rules_unit_applies_before_proxyd_and_removes_on_stop() -> None:
    text = (UNIT_DIR / "proxyd-transparent.service").read_text()
    settings = service_settings(text)
    required = {
        "Type": ["oneshot"],
        "RemainAfterExit": ["yes"],  # stop (and so ExecStop, the removal) must mean something
        "ExecStart": ["proxyd transparent apply -c /etc/proxyd/proxyd.toml"],
        "ExecStop": ["proxyd transparent remove -c /etc/proxyd/proxyd.toml"],
        "CapabilityBoundingSet": ["CAP_NET_ADMIN"],
    }
    assert {key: settings.get(key) for key in required} == required
    assert "\nBefore=proxyd.service\n" in text
    # proxyd.service itself stays without capabilities: REDIRECT mode needs none.
    proxyd = service_settings((UNIT_DIR / "proxyd.service").read_text())
    assert proxyd["CapabilityBoundingSet"] == [""]
