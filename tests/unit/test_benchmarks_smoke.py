"""The benchmark harness's pieces import and fit together (the benchmarks themselves are not
run by the test suite: see benchmarks/README.md)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from benchmarks import harness, origin, report
from benchmarks.peers import PEERS
from benchmarks.workloads import WORKLOADS


def test_every_workload_and_alias_is_selectable() -> None:
    names = [w.name for w in harness._select_workloads(None)]
    assert names == [w.name for w in WORKLOADS]
    assert [w.name for w in harness._select_workloads("latency,connect8")] == [
        "keepalive",
        "connect8",
    ]


def test_unknown_workload_or_proxy_is_refused_by_name() -> None:
    with pytest.raises(SystemExit, match="nosuch"):
        harness._select_workloads("keepalive,nosuch")
    with pytest.raises(SystemExit, match="nosuch"):
        harness._select_peers("proxyd,nosuch")


def test_options_parse() -> None:
    args = harness._parse(["--quick", "--only", "keepalive", "--proxies", "proxyd,proxyd-bare"])
    assert args.quick and args.only == "keepalive" and not args.no_setup


def test_bare_proxyd_config_turns_learning_and_metrics_off(tmp_path: Path) -> None:
    launch = PEERS["proxyd-bare"].launch(tmp_path, 18080, None)
    assert launch is not None
    cmd, _env = launch
    conf = Path(cmd[cmd.index("-c") + 1]).read_text()
    assert "[learning]\nenabled = false" in conf
    assert conf.startswith("metrics = false\n")


def test_nometrics_proxyd_config_turns_only_metrics_off(tmp_path: Path) -> None:
    launch = PEERS["proxyd-nometrics"].launch(tmp_path, 18080, None)
    assert launch is not None
    cmd, _env = launch
    conf = Path(cmd[cmd.index("-c") + 1]).read_text()
    assert conf.startswith("metrics = false\n")
    assert "[learning]" not in conf


def test_table_reports_what_each_feature_costs_against_its_baseline() -> None:
    results = report.Results()
    for target, rps in (("direct", 20000.0), ("proxyd", 9800.0), ("proxyd-nometrics", 10000.0)):
        results.add("keepalive_rps", target, rps)
    text = report.table(results, ["direct", "proxyd", "proxyd-nometrics"], [5000, 10000], [])
    assert "metrics overhead (proxyd vs proxyd-nometrics; + is slower): keep-alive" in text
    assert "+2.0 %" in text
    assert "learning+metrics overhead" not in text  # proxyd-bare did not run


def test_table_shows_ratio_to_direct_and_reasons_for_gaps() -> None:
    results = report.Results()
    results.add("keepalive_rps", "direct", 20000.0)
    results.add("keepalive_rps", "proxyd", 15000.0)
    results.fail("keepalive_rps", "squid", "squid not installed")
    text = report.table(results, ["direct", "proxyd", "squid"], [5000, 10000], [])
    assert "15.0k (0.75x)" in text
    assert "n/a [1]" in text and "[1] squid not installed" in text


def test_bulk_workloads_measure_direct_again_and_keep_the_better_sample() -> None:
    bracketed = {w.name for w in WORKLOADS if w.bracket_direct}
    assert bracketed == {"connect1", "connect8", "plainbulk"}
    results = report.Results()
    results.add("connect1_mbps", "direct", 300.0)  # run 1, first sample depressed
    results.keep_better("connect1_mbps", "direct", 1500.0)
    results.add("connect1_mbps", "direct", 1400.0)  # run 2
    results.keep_better("connect1_mbps", "direct", 1300.0)
    assert results.samples["connect1_mbps"]["direct"] == [1500.0, 1400.0]


def test_resident_fraction_tells_a_cold_file_from_a_cached_one() -> None:
    # Next to the checkout, not in /tmp: a tmpfs keeps no page cache to evict.
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        _check_residency(Path(tmp) / "sparse")


def _check_residency(path: Path) -> None:
    with path.open("wb") as f:
        f.truncate(8 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert origin.resident_fraction(path) == 0.0
        origin._warm_page_cache(path)
        assert origin.resident_fraction(path) == 1.0
        os.posix_fadvise(fd, 0, 4 << 20, os.POSIX_FADV_DONTNEED)
        assert origin.resident_fraction(path) == 0.5
    finally:
        os.close(fd)
