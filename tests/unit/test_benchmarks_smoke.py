"""The benchmark harness's pieces import and fit together (the benchmarks themselves are not
run by the test suite: see benchmarks/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import harness, report
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
