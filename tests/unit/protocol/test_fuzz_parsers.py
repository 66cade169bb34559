"""The coverage-guided fuzzers, on a short budget: every corpus input still meets the
parsers' contracts, and a few seconds of atheris per parser find nothing. ``make fuzz``
runs the same targets for as long as you like."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"
ROOT = CORPUS.parents[2]
SECONDS = int(os.environ.get("PROXYD_FUZZ_SECONDS", "6"))


@pytest.mark.parametrize(
    ("target", "path"),
    [(name, path) for name in TARGETS for path in sorted((CORPUS / name).iterdir())],
    ids=lambda value: value if isinstance(value, str) else value.name,
)
def test_corpus_input_meets_the_parser_contract(target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_short_coverage_guided_run_finds_nothing(target: str, tmp_path: Path) -> None:
    work = tmp_path / "new"
    work.mkdir()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", target, str(work), str(CORPUS / target),
         f"-max_total_time={SECONDS}", "-max_len=4096", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=SECONDS + 120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done " in result.stderr
