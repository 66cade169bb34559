"""Open many idle CONNECT tunnels through a proxy and hold them while the harness measures.

``python -m benchmarks.idle_tunnels --proxy 127.0.0.1:P --target 127.0.0.1:O --steps 5000,10000``

For each step it opens tunnels until that many are established (or the step's deadline passes,
or too many attempts fail), prints one JSON line to stdout —
``{"step": 5000, "held": N, "failed": F, "seconds": S, "first_error": "..."}`` — and waits for a
line on stdin before the next step. After the last step it waits for stdin to close, then exits
(closing every tunnel). ``held`` counts tunnels the proxy answered ``200`` to and has not closed.
RLIMIT_NOFILE is raised to fit the largest step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

_MAX_FAILURES = 200


class _Tunnels:
    def __init__(self, proxy: tuple[str, int], target: str) -> None:
        self.proxy = proxy
        self.request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
        self.open: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.failed = 0
        self.first_error = ""

    async def open_one(self) -> None:
        try:
            reader, writer = await asyncio.open_connection(*self.proxy)
        except OSError as exc:
            self._fail(exc)
            return
        try:
            writer.write(self.request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
        ) as exc:
            writer.close()
            self._fail(exc)
            return
        status = head.split(b"\r\n", 1)[0]
        if b" 200" not in status:
            writer.close()
            self._fail(RuntimeError(status.decode(errors="replace")))
            return
        self.open.append((reader, writer))

    def _fail(self, exc: BaseException) -> None:
        self.failed += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}"[:160]

    def held(self) -> int:
        return sum(1 for reader, _ in self.open if not reader.at_eof())

    async def fill(self, step: int, deadline_s: float, concurrency: int) -> dict[str, object]:
        started = time.monotonic()
        until = started + deadline_s
        pending: set[asyncio.Task[None]] = set()
        while time.monotonic() < until and self.failed < _MAX_FAILURES:
            wanted = step - len(self.open) - len(pending)
            for _ in range(max(0, min(wanted, concurrency - len(pending)))):
                pending.add(asyncio.create_task(self.open_one()))
            if not pending:
                break
            timeout = max(0.0, until - time.monotonic())
            _, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        for task in pending:
            task.cancel()
        seconds = time.monotonic() - started
        return {
            "step": step,
            "held": self.held(),
            "failed": self.failed,
            "seconds": round(seconds, 3),
            "first_error": self.first_error,
        }


async def _run(args: argparse.Namespace) -> None:
    host, _, port = args.proxy.rpartition(":")
    tunnels = _Tunnels((host, int(port)), args.target)
    loop = asyncio.get_running_loop()
    for step in (int(s) for s in args.steps.split(",")):
        report = await tunnels.fill(step, args.deadline, args.concurrency)
        print(json.dumps(report), flush=True)
        # The harness measures the proxy's memory now and answers with a line (or EOF).
        await loop.run_in_executor(None, sys.stdin.readline)
    for _, writer in tunnels.open:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", required=True, help="HOST:PORT of the proxy")
    parser.add_argument("--target", required=True, help="HOST:PORT to CONNECT to")
    parser.add_argument("--steps", default="5000", help="comma-separated cumulative counts")
    parser.add_argument("--deadline", type=float, default=15.0, help="seconds per step")
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    largest = max(int(s) for s in args.steps.split(","))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = largest + 1024
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
