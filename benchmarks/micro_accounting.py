"""Micro-benchmark of what metrics cost a kept-alive request: the hot lane's books.

``python -m benchmarks.micro_accounting [--number N] [--repeat R] [--request-us US]``

A request the hot lane serves gets a ``RequestRecord``, one first-byte histogram
observation and one ``accounting.finish`` (request counter by protocol, route and outcome;
bytes by route). ``metrics = false`` swaps ``Stats`` for ``NullStats``, whose methods do
nothing, while the record and the finish call stay. The difference between the two lines is
what turning metrics on adds per request, shown against ``--request-us``: the proxy CPU
per kept-alive request that the harness measures (``keepalive_cpu_us``; 205 us in the last
run on this machine kind).

The keep-alive workload itself (``python -m benchmarks --only keepalive --proxies
proxyd,proxyd-nometrics``) compares the two daemons too, but run-to-run noise on a shared
2-CPU machine (about ±5 %) is larger than the effect; this isolates it. Timing is CPU time
of this process, best of R runs.
"""

from __future__ import annotations

import argparse
import time
import timeit
from types import SimpleNamespace
from typing import Any

from proxyd.dataplane._accounting import RequestRecord, finish
from proxyd.learning._stats import NullStats, Stats


def _hot_lane_books(rt: Any) -> None:
    record = RequestRecord("http", "127.0.0.1", "origin.example", 80, route="direct", up=120)
    record.first_byte_seconds = 0.0003
    rt.stats.first_byte(record.route, record.first_byte_seconds)
    record.down = 1250
    record.outcome = "ok"
    finish(rt, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000, help="requests per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best one counts")
    parser.add_argument("--request-us", type=float, default=205.0, help="CPU per request, us")
    args = parser.parse_args()
    per_request = {}
    for label, stats in (("metrics on (Stats)", Stats()), ("metrics off (NullStats)", NullStats())):
        rt = SimpleNamespace(stats=stats, config=SimpleNamespace(access_log=False))
        runs = timeit.repeat(
            lambda rt=rt: _hot_lane_books(rt),
            number=args.number,
            repeat=args.repeat,
            timer=time.process_time,
        )
        per_request[label] = min(runs) / args.number * 1e6
        print(f"{label:28s} {per_request[label]:6.2f} us per request")
    added = per_request["metrics on (Stats)"] - per_request["metrics off (NullStats)"]
    share = added / args.request_us * 100
    print(f"metrics add {added:.2f} us per request: {share:.2f} % of {args.request_us:g} us")


if __name__ == "__main__":
    main()
