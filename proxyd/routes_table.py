"""``proxyd routes``: the learned table as the state file holds it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable

from proxyd.config import Config
from proxyd.learned import STATE_FILE
from proxyd.learning import DomainState, LearningTable, StateFormatError
from proxyd.statefile import default_state_dir

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


def print_routes(config: Config) -> int:
    """Read-only: unlike the daemon, a corrupt file is reported, never moved aside."""
    path = (config.state_dir or default_state_dir()) / STATE_FILE
    table = LearningTable()
    try:
        table.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, StateFormatError) as err:
        print(f"proxyd: {path}: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(format_table(table.snapshot()))
    return 0
