#!/usr/bin/env python3
"""Coverage-guided fuzzing of the sans-IO parsers with atheris (libFuzzer for Python).

``python -m tests.fuzz.run TARGET [libFuzzer arguments...]``, TARGET one of
``tests.fuzz.targets.TARGETS``; e.g. ``python -m tests.fuzz.run socks WORKDIR
tests/fuzz/corpus/socks -max_total_time=600``. libFuzzer writes new interesting inputs to
the first corpus directory and a crashing input to ``-artifact_prefix``; ``scripts/fuzz``
drives it for every target and merges what is new into tests/fuzz/corpus.

libFuzzer's merge re-runs this file as a program with only libFuzzer's arguments, so the
target travels in the environment (and the file is executable).
"""

from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports(include=["proxyd"]):
    import proxyd.protocol._http1
    import proxyd.protocol._http1_body
    import proxyd.protocol._socks  # noqa: F401  (imported here so coverage guides the fuzzer)

from tests.fuzz.targets import TARGETS

_TARGET_ENV = "PROXYD_FUZZ_TARGET"


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in TARGETS:
        os.environ[_TARGET_ENV] = args.pop(0)
    name = os.environ.get(_TARGET_ENV, "")
    if name not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.run {{{','.join(TARGETS)}}} [libFuzzer args]")
    atheris.Setup([sys.argv[0], *args], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
