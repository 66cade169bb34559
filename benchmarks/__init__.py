"""Benchmark harness: proxyd against its peers and ``direct``, side by side, in one run.

Run ``python -m benchmarks`` (or ``python benchmarks/run.py``) after ``benchmarks/setup.sh``;
see benchmarks/README.md for the options, the workloads and the latest figures.
"""
