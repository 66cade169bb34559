"""The direct dialer's happy eyeballs (RFC 8305), run for real inside the lab's client
namespace: when a name's first address is blackholed, the next address is tried after the
stagger delay, in parallel, and wins long before the connect timeout."""

from __future__ import annotations

import json
import sys

from lab_sites import site_named
from netlab import NetLab

DIAL_SCRIPT = """
import asyncio, json, socket, sys, time
from proxyd.outbound._dialers import happy_eyeballs

async def main():
    addresses = [(socket.AF_INET, (ip, 80)) for ip in sys.argv[1:]]
    started = time.monotonic()
    sock, peer = await asyncio.wait_for(happy_eyeballs(addresses, "x.example", 80), 10)
    sock.close()
    print(json.dumps({"peer": peer[0], "seconds": time.monotonic() - started}))

asyncio.run(main())
"""


def dial_in_client(lab: NetLab, *ips: str) -> dict[str, object]:
    done = lab.exec_client([sys.executable, "-c", DIAL_SCRIPT, *ips], timeout=30)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_blackholed_first_address_loses_to_the_next_after_the_stagger(netlab: NetLab) -> None:
    hole, open_ = site_named("hole.example").address, site_named("open.example").address
    syns = netlab.censor.direct_syns("hole.example")
    result = dial_in_client(netlab, hole, open_)
    assert result["peer"] == open_
    # started after the 250 ms stagger, not after a connect timeout (seconds)
    assert 0.2 <= float(str(result["seconds"])) < 2.0
    assert netlab.censor.direct_syns("hole.example") > syns  # the first address was tried
