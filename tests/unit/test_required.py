"""``require``: a missing prerequisite skips a test, except in CI where it fails it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.required import REQUIRED_ENV, require

REPO_ROOT = Path(__file__).resolve().parents[2]


def outcome_of_missing(what: str) -> BaseException:
    # Both outcomes are caught, so a skip where a failure is due fails this test instead
    # of skipping it.
    try:
        require(False, what)
    except (pytest.fail.Exception, pytest.skip.Exception) as outcome:
        return outcome
    raise AssertionError("require(False, ...) let the test go on")


def test_missing_prerequisite_fails_the_test_when_ci_requires_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(REQUIRED_ENV, "1")
    outcome = outcome_of_missing("chromium is not installed")
    assert isinstance(outcome, pytest.fail.Exception)
    assert "NOT RUN: chromium is not installed" in str(outcome)


@pytest.mark.parametrize("value", [None, "0", ""])
def test_missing_prerequisite_skips_the_test_otherwise(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(REQUIRED_ENV, raising=False)
    else:
        monkeypatch.setenv(REQUIRED_ENV, value)
    outcome = outcome_of_missing("needs root")
    assert isinstance(outcome, pytest.skip.Exception)
    assert "NOT RUN: needs root" in str(outcome)


def test_met_prerequisite_lets_the_test_run_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRED_ENV, "1")
    require(True, "anything")
    monkeypatch.delenv(REQUIRED_ENV)
    require(True, "anything")


# What pytest reports for a test whose prerequisite is missing, run in a child pytest:
# the outcome exceptions above are only what pytest turns into "failed" and "skipped".
CHILD_TEST = """
from tests.support.required import require

def test_needs_what_is_missing():
    require(False, "a program this machine lacks")
"""


@pytest.mark.parametrize(("value", "outcome"), [("1", "1 failed"), ("", "1 skipped")])
def test_pytest_reports_the_missing_prerequisite_as_failed_in_ci_and_skipped_elsewhere(
    tmp_path: Path, value: str, outcome: str
) -> None:
    test_file = tmp_path / "test_child.py"
    test_file.write_text(textwrap.dedent(CHILD_TEST))
    env = {"PYTHONPATH": str(REPO_ROOT), REQUIRED_ENV: value, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", str(test_file)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert outcome in done.stdout, done.stdout + done.stderr
    assert "NOT RUN: a program this machine lacks" in done.stdout
