"""Run the whole comparison: origin up, each run starts the proxies fresh and measures every
workload for direct and each proxy, then the table goes to stdout and the JSON to results/.

``main(argv)`` is what ``python -m benchmarks`` and ``python benchmarks/run.py`` call; options:
``--only WORKLOAD[,..]``, ``--proxies NAME[,..]``, ``--runs N`` (medians), ``--quick``,
``--json PATH``, ``--no-setup``. Unless told not to, it first runs ``setup.sh`` when a tool or
peer is missing, so one command works on a fresh Debian machine. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import procs, report
from benchmarks.loadgen import MeasureError
from benchmarks.origin import Origin
from benchmarks.peers import DEFAULT_PEERS, PEERS, Peer, start_peer
from benchmarks.workloads import ALIASES, WORKLOADS, Context, Target, Workload

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEBIAN_PACKAGES = ("nginx-light", "wrk", "curl", "tinyproxy", "privoxy", "squid", "microsocks")
SETUP = Path(__file__).resolve().parent / "setup.sh"
# Without these there is no measurement at all; a missing peer is only an "n/a" column.
ESSENTIAL = ("nginx", "wrk", "curl", "taskset")
PROGRAMS = (*ESSENTIAL, "tinyproxy", "privoxy", "squid", "microsocks")
NOFILE = 70000


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    names = ", ".join(w.name for w in WORKLOADS)
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--only", help=f"comma-separated workloads ({names}, latency)")
    p.add_argument("--proxies", help=f"comma-separated ({', '.join(PEERS)}); default: all")
    p.add_argument("--runs", type=int, default=3, help="runs per workload, median reported")
    p.add_argument("--quick", action="store_true", help="1 run, shorter durations")
    p.add_argument("--json", type=Path, help="where to write the JSON (default: results/)")
    p.add_argument("--no-setup", action="store_true", help="never run setup.sh, even if needed")
    return p.parse_args(argv)


def _select_workloads(only: str | None) -> list[Workload]:
    if not only:
        return list(WORKLOADS)
    wanted = {ALIASES.get(n.strip(), n.strip()) for n in only.split(",") if n.strip()}
    unknown = wanted - {w.name for w in WORKLOADS}
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    return [w for w in WORKLOADS if w.name in wanted]


def _select_peers(names: str | None) -> list[Peer]:
    chosen = [n.strip() for n in names.split(",") if n.strip()] if names else DEFAULT_PEERS
    unknown = [n for n in chosen if n not in PEERS]
    if unknown:
        raise SystemExit(f"unknown proxy(ies): {', '.join(unknown)}")
    return [PEERS[n] for n in chosen]


@contextlib.contextmanager
def _microsocks(workdir: Path) -> Iterator[int | None]:
    if shutil.which("microsocks") is None:
        _log("microsocks not installed: SOCKS TTFB is n/a")
        yield None
        return
    port = procs.free_port()
    cmd = ["microsocks", "-i", "127.0.0.1", "-p", str(port)]
    started = procs.start("microsocks", cmd, procs.CLIENT_CPU, workdir)
    try:
        procs.wait_port(started, port)
        yield port
    finally:
        procs.stop(started)


def _start_targets(peers: list[Peer], run_dir: Path) -> tuple[list[Target], dict[str, str]]:
    targets = [Target("direct")]
    failed: dict[str, str] = {}
    for peer in peers:
        try:
            started, port = start_peer(peer, run_dir)
        except procs.StartError as exc:
            failed[peer.name] = str(exc)
            _log(f"  {peer.name}: n/a ({exc})")
            continue
        targets.append(Target(peer.name, port, started, peer))
    return targets, failed


def _measure(
    ctx: Context,
    workload: Workload,
    target: Target,
    results: report.Results,
    *,
    again: bool = False,
) -> None:
    try:
        target.require_alive()
        measured = workload.measure(ctx, target)
    except (MeasureError, procs.StartError) as exc:
        if not again:
            for key in workload.metrics:
                results.fail(key, target.name, str(exc))
        _log(f"  {workload.name:<10} {target.name:<12} n/a ({exc})")
        return
    for key in workload.metrics:
        if key in measured.values:
            if again:
                results.keep_better(key, target.name, measured.values[key])
            else:
                results.add(key, target.name, measured.values[key])
        elif target.name != "direct":
            results.fail(key, target.name, "not measurable in this run")
    if measured.details:
        results.detail(workload.name, target.name, measured.details)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in measured.values.items())
    _log(f"  {workload.name:<10} {target.name:<12} {shown}" + (" (again)" if again else ""))


def _one_run(
    ctx: Context, workloads: list[Workload], peers: list[Peer], results: report.Results
) -> None:
    targets, failed = _start_targets(peers, ctx.workdir)
    try:
        for workload in workloads:
            for name, reason in failed.items():
                for key in workload.metrics:
                    results.fail(key, name, reason)
            for target in targets:
                if workload.direct or target.port is not None:
                    _measure(ctx, workload, target, results)
            if workload.bracket_direct and len(targets) > 1:
                _measure(ctx, workload, targets[0], results, again=True)
    finally:
        for target in targets:
            if target.started is not None:
                procs.stop(target.started)


def _missing() -> list[str]:
    missing = [t for t in PROGRAMS if shutil.which(t) is None]
    for module in ("pproxy", "uvloop"):
        if importlib.util.find_spec(module) is None:
            missing.append(module)
    return missing


def _install_missing(allowed: bool) -> list[str]:
    """Run setup.sh if anything is missing (and allowed); return what is still missing."""
    missing = _missing()
    if missing and allowed:
        _log(f"missing {', '.join(missing)}: running {SETUP}")
        env = {**os.environ, "PYTHON": sys.executable}
        subprocess.run(["bash", str(SETUP)], env=env, check=False, stdout=sys.stderr)
        importlib.invalidate_caches()
        missing = _missing()
    return missing


def _versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *DEBIAN_PACKAGES],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        for line in out.splitlines():
            package, _, version = line.partition(" ")
            versions[package] = version
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        versions["pproxy"] = importlib.metadata.version("pproxy")
    return versions


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # nginx, squid and privoxy live in sbin, which a normal user's PATH may lack.
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    workloads, peers = _select_workloads(args.only), _select_peers(args.proxies)
    runs = 1 if args.quick else max(1, args.runs)
    missing = _install_missing(not args.no_setup)
    if any(t in missing for t in ESSENTIAL):
        _log(f"missing {', '.join(missing)}: run benchmarks/setup.sh first")
        return 2
    nofile = procs.raise_nofile(NOFILE)
    os.sched_setaffinity(0, {procs.CLIENT_CPU})
    results = report.Results()
    meta: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": procs.machine(),
        "loadavg_start": _loadavg(),
        "runs": runs,
        "quick": args.quick,
        "workloads": [w.name for w in workloads],
        "versions": _versions(),
        "rlimit_nofile": nofile,
    }
    with tempfile.TemporaryDirectory(prefix="proxyd-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # nginx workers and squid run as other users
        origin = Origin.start(workdir)
        try:
            with _microsocks(workdir) as socks_port:
                for run in range(runs):
                    _log(f"run {run + 1}/{runs}")
                    run_dir = workdir / f"run{run + 1}"
                    run_dir.mkdir()
                    run_dir.chmod(0o755)
                    ctx = Context(origin, run_dir, args.quick, socks_port)
                    _one_run(ctx, workloads, peers, results)
        finally:
            origin.stop()
    meta["loadavg_end"] = _loadavg()
    targets = ["direct", *(p.name for p in peers)]
    steps = Context(origin, workdir, args.quick).tunnel_steps
    m = meta["machine"]
    footer = [
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}, Python "
        f"{m['python']}; {runs} run(s); load average at start {meta['loadavg_start']}, "
        f"at end {meta['loadavg_end']}"
    ]
    if nofile < 2 * steps[-1] + 64:
        footer.append(
            f"RLIMIT_NOFILE is capped at {nofile:,} here (no CAP_SYS_RESOURCE to raise it): at 2 "
            f"fds per tunnel a proxy can hold about {(nofile - 64) // 2:,} tunnels at most."
        )
    print(report.table(results, targets, steps, footer))
    out = args.json or RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.to_json(results, targets, meta), indent=2) + "\n")
    _log(f"JSON written to {out}")
    return 0
