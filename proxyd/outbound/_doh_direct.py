"""Route ``direct+doh``: connect direct, to the address the honest source gives.

For a name whose DNS alone is blocked: the ISP's resolver answers a block-page or bogon
address, yet the site's real address is reachable. The destination checks run on the
address actually dialed, as for ``direct``.

``gated=True`` is the first-visit form, placed right after ``direct`` in a plan: it asks
the honest source only when the system's answer is suspect (a detector flagged it, a
connection to it failed, it served a block page) and then only goes on when the honest
answer shares no address with it. Any other failure of direct (an SNI reset, say) or a
name whose answer is fine costs no DoH query: the gate fails at once and the race moves
on to the next route.
"""

from __future__ import annotations

import asyncio
import socket

from proxyd.errors import ConnectTimeout, DialError
from proxyd.outbound._dialers import Connection, DestinationCheck, happy_eyeballs
from proxyd.resolver import Resolver, disagrees

ROUTE = "direct+doh"


class DnsNotSuspect(DialError):
    """The first-visit gate: nothing says the system's answer is forged."""

    # Not evidence of anything about the site; no Reason of its own.
    reason = "generic_failure"


class HonestDirectDialer:
    name = ROUTE

    def __init__(self, resolver: Resolver, check: DestinationCheck, *, gated: bool) -> None:
        self._resolver = resolver
        self._check = check
        self._gated = gated

    async def dial(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        client_ip: str = "",
        isolation: str | None = None,
    ) -> Connection:
        resolver = self._resolver
        system: tuple[str, ...] = ()
        if self._gated:
            suspect = resolver.suspect(host)
            if suspect is None:
                raise DnsNotSuspect(host, port, "the system resolver's answer is not suspect")
            system = suspect[1]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(timeout):
                honest = await resolver.honest(host)
                if self._gated:
                    if disagrees(system, honest) is None:
                        raise DnsNotSuspect(host, port, "the honest source gives the same answer")
                    resolver.note_disagreement()
                for address in honest:
                    self._check(client_ip, address, port)
                addresses = [
                    (socket.AF_INET6 if ":" in a else socket.AF_INET, (a, port)) for a in honest
                ]
                sock, peer = await happy_eyeballs(addresses, host, port)
        except TimeoutError:
            raise ConnectTimeout(host, port, f"no answer within {timeout:g}s") from None
        return Connection(
            sock=sock,
            route=self.name,
            resolved=honest,
            peer=peer,
            connect_seconds=loop.time() - started,
        )
