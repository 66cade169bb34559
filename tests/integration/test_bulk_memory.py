"""A 1 GiB response streams through plain HTTP and through a CONNECT tunnel while the
daemon's resident memory stays bounded: bodies are relayed, never buffered whole."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.origin import SendfileOrigin
from tests.support.proc import Proxyd

GIB = 1 << 30
RSS_LIMIT_KIB = 80 * 1024


@pytest.fixture(scope="module")
def gib_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SendfileOrigin]:
    origin = SendfileOrigin(tmp_path_factory.mktemp("bulk") / "gib.bin", GIB)
    yield origin
    origin.stop()


def fetch_size(*curl_args: str) -> int:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            *curl_args,
        ],
        capture_output=True,
        text=True,
        timeout=130,
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("tunnel", [False, True], ids=["plain-http", "connect"])
def test_gib_response_streams_with_bounded_rss(
    tmp_path: Path, gib_origin: SendfileOrigin, tunnel: bool
) -> None:
    proxyd = Proxyd(tmp_path=tmp_path)
    try:
        before = proxyd.rss_kib()
        args = ["-x", proxyd.url, f"{gib_origin.url}/gib"]
        assert fetch_size(*(["-p", *args] if tunnel else args)) == GIB
        # VmHWM is the peak resident set over the process' life: no sampling can miss it.
        peak = proxyd.rss_kib("VmHWM")
        assert peak < RSS_LIMIT_KIB, f"peak RSS {peak} KiB (at start {before} KiB)"
        print(f"peak RSS {peak} KiB, at start {before} KiB")
    finally:
        assert proxyd.stop() == 0
    proxyd.assert_clean_log()
