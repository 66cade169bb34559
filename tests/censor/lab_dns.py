"""The ISP's DNS resolver: dnsmasq in the censor namespace, with no upstream at all.

``IspResolver(netns, workdir, records)`` answers A queries for ``records`` (name ->
address), overridden by ``poison(name, address)`` until ``unpoison(name)``; every other
name is NXDOMAIN. ``start()`` / ``stop()``; a change rewrites the config and restarts
dnsmasq, which is back before the call returns (SIGHUP would re-read hosts files only,
and gives no signal of when it is done).
"""

from __future__ import annotations

from pathlib import Path

from lab_netns import LabProcess, Netns, tool, wait_listening
from lab_sites import ISP_CLIENT_SIDE, ISP_INTERNET_SIDE


class IspResolver:
    def __init__(self, netns: Netns, workdir: Path, records: dict[str, str]) -> None:
        self._records = dict(records)
        self._poisoned: dict[str, str] = {}
        self._config = workdir / "dnsmasq.conf"
        self._process = LabProcess(
            "dnsmasq",
            netns,
            [
                tool("dnsmasq"),
                "--keep-in-foreground",
                f"--conf-file={self._config}",
                f"--pid-file={workdir / 'dnsmasq.pid'}",
                f"--log-facility={workdir / 'dnsmasq.log'}",
                "--log-queries",
            ],
            workdir / "dnsmasq.out",
        )

    @property
    def poisoned(self) -> dict[str, str]:
        return dict(self._poisoned)

    def start(self) -> None:
        self._config.write_text(self._render())
        self._process.start()
        wait_listening(self._process, "udp", [(ISP_CLIENT_SIDE, 53), (ISP_INTERNET_SIDE, 53)])

    def stop(self) -> None:
        self._process.stop()

    def poison(self, name: str, address: str) -> None:
        self._poisoned[name] = address
        self._restart()

    def unpoison(self, name: str) -> None:
        if self._poisoned.pop(name, None) is not None:
            self._restart()

    def set_poisoned(self, poisoned: dict[str, str]) -> None:
        if poisoned != self._poisoned:
            self._poisoned = dict(poisoned)
            self._restart()

    def _restart(self) -> None:
        self.stop()
        self.start()

    def _render(self) -> str:
        answers = {**self._records, **self._poisoned}
        lines = [
            "no-resolv",
            "no-hosts",
            "bind-interfaces",
            f"listen-address={ISP_CLIENT_SIDE},{ISP_INTERNET_SIDE}",
            # Staying root:root keeps the 0700 work dir readable and, as no credential
            # changes, keeps the parent-death signal that stops it if the tests crash.
            "user=root",
            "group=root",
            # everything not listed is NXDOMAIN at once instead of REFUSED for lack of servers
            "local=/#/",
        ]
        # host-record answers exact names only, and NODATA (not NXDOMAIN) for AAAA, which
        # resolvers that merge A and AAAA results need.
        lines += [f"host-record={name},{address}" for name, address in sorted(answers.items())]
        return "\n".join(lines) + "\n"
