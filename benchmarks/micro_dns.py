"""Micro-benchmark of what name resolution costs a new connection, per path.

``python -m benchmarks.micro_dns [--number N] [--repeat R] [--request-us US]``

- ``system resolver alone``: ``resolve()`` as the direct route did before issue 13, the
  loop's ``getaddrinfo`` (a thread-pool round trip) for a name in /etc/hosts;
- ``system + old detector``: the same plus ``DnsPoisonDetector.check``, what every direct
  dial paid before issue 13;
- ``system + detectors``: the same plus ``Resolver.judge_system_answer``, what every
  direct dial pays now (hosts that need no DNS work);
- ``DoH cache hit``: ``Resolver.honest`` for a name whose honest answer is cached, what
  a ``direct+doh`` dial pays instead of the system resolver.

Each is shown against ``--request-us``, the proxy CPU per new-connection request that the
harness measures (345 us in the last full run, benchmarks/README.md). Timing is CPU time
of this process (the resolver threads included), best of R runs, on uvloop.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable

import uvloop

from proxyd.config import DnsConfig
from proxyd.learning import DnsPoisonDetector
from proxyd.outbound._dialers import resolve
from proxyd.resolver import AAAA, A, Resolver

HOST = "localhost"


async def _measure(step: Callable[[], Awaitable[object]], number: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(number):
            await step()
        best = min(best, time.process_time() - started)
    return best / number * 1e6


async def _run(number: int, repeat: int) -> dict[str, float]:
    resolver = Resolver(DnsConfig())
    resolver.cache.put("cached.example", A, ("198.18.2.16",), 3600, time.monotonic())
    resolver.cache.put("cached.example", AAAA, (), 3600, time.monotonic())

    async def system() -> object:
        return await resolve(HOST, 80)

    async def system_judged() -> object:
        addresses = await resolve(HOST, 80)
        return resolver.judge_system_answer(HOST, tuple(ip for _f, (ip, _p) in addresses))

    old = DnsPoisonDetector()

    async def system_old() -> object:
        addresses = await resolve(HOST, 80)
        return old.check(HOST, [ip for _f, (ip, _p) in addresses], now=0.0)

    async def cache_hit() -> object:
        return await resolver.honest("cached.example")

    return {
        "system resolver alone": await _measure(system, number, repeat),
        "system + old detector": await _measure(system_old, number, repeat),
        "system + detectors": await _measure(system_judged, number, repeat),
        "DoH cache hit (direct+doh)": await _measure(cache_hit, number, repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5_000, help="resolutions per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best one counts")
    parser.add_argument("--request-us", type=float, default=345.0, help="CPU per request, us")
    args = parser.parse_args()
    costs = uvloop.run(_run(args.number, args.repeat))
    for label, us in costs.items():
        print(f"{label:28s} {us:7.2f} us per new connection ({us / args.request_us:6.2%})")
    base = costs["system resolver alone"]
    for label in ("system + old detector", "system + detectors", "DoH cache hit (direct+doh)"):
        delta = (costs[label] - base) / args.request_us
        print(f"{label} vs system alone: {delta:+.2%} of a {args.request_us:g} us request")


if __name__ == "__main__":
    main()
