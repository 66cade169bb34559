"""The 1,000,000-domain list: load time, memory held, and per-lookup cost (issue 16).

    python -m benchmarks.big_list [--domains N]

The list is generated here (random names under common suffixes, written to a
temporary file that is deleted after), so no list lives in git. Figures:

- load: ``read_list`` on the file, as the config loader calls it (parse and compact);
- held: resident memory of a fresh interpreter that loaded the list, minus one that
  loaded an empty list (in this process freed generator memory would hide it);
- lookup: ``DomainList.matches`` on hosts of four labels, listed and not listed.

Not measured yet: keep-alive req/s through a daemon with and without the list.
"""

from __future__ import annotations

import argparse
import gc
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proxyd.learning import read_list

SUFFIXES = ("com", "net", "org", "ru", "io", "info", "xyz", "co.uk")


_CHILD = """
import gc, os, sys
from pathlib import Path
from proxyd.learning import read_list
kept = read_list(Path(sys.argv[1]), "hostlist")
gc.collect()
print(int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
"""


def _child_rss_mib(path: Path) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True)
    return int(out.stdout) / 2**20


def _names(count: int, rng: random.Random) -> list[str]:
    alphabet = string.ascii_lowercase + string.digits
    names: set[str] = set()
    while len(names) < count:
        label = "".join(rng.choices(alphabet, k=rng.randint(5, 14)))
        names.add(f"{label}.{rng.choice(SUFFIXES)}")
    return sorted(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = random.Random(16)
    names = _names(args.domains, rng)
    probes = [f"www.cdn.{n}" for n in rng.sample(names, 50_000)]
    probes += [f"www.cdn.{n}x" for n in rng.sample(names, 50_000)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        path.write_text("\n".join(names) + "\n")
        del names
        gc.collect()
        start = time.perf_counter()
        domains = read_list(path, "hostlist")
        load = time.perf_counter() - start
        empty = Path(tmp) / "empty.txt"
        empty.write_text("")
        held = _child_rss_mib(path) - _child_rss_mib(empty)
    start = time.perf_counter()
    hits = sum(map(domains.matches, probes))
    per_lookup = (time.perf_counter() - start) / len(probes)
    assert hits == len(probes) // 2, hits
    print(f"domains        {len(domains):>10,}")
    print(f"load           {load:>10.2f} s")
    print(f"held           {held:>10.1f} MiB")
    print(f"lookup         {per_lookup * 1e6:>10.2f} us (4-label hosts, half listed)")


if __name__ == "__main__":
    main()
