"""The learned table as text: what `proxyd routes` prints."""

from __future__ import annotations

import time
from collections.abc import Iterable

from proxyd.learning import DomainState

COLUMNS = ("domain", "state", "route", "evidence", "since", "next re-test")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def format_table(entries: Iterable[DomainState]) -> str:
    rows = [
        (
            e.key,
            e.state.value,
            e.route,
            ",".join(sorted({ev.reason.value for ev in e.evidence})) or e.source.value,
            _when(e.since),
            _when(e.next_retest),
        )
        for e in entries
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(COLUMNS, *rows, strict=False)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    header = "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))
    return "\n".join([header.rstrip(), *(line.rstrip() for line in lines)]) + "\n"
