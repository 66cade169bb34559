"""``python benchmarks/run.py [options]``: the same as ``python -m benchmarks [options]``."""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, sys.path[0] is benchmarks/ itself; the package needs the repo root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
