"""``proxyd routes export`` and ``/api/lists/learned.txt``: the learned blocks as a list.

Pure. The list formats come from ``proxyd.learning`` (``render_shared``); the PAC form
from ``proxyd.ops._pac``, with the same comment per domain.

Public API: ``EXPORT_FORMATS``, ``render_export(entries, fmt, now, proxy) -> str``.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxyd.learning import SHARE_FORMATS, DomainState, comment_fields, render_shared, shareable
from proxyd.ops._pac import render_blocked_pac

EXPORT_FORMATS = (*SHARE_FORMATS, "pac")


def render_export(
    entries: Sequence[DomainState], fmt: str, now: float, proxy: tuple[str, int]
) -> str:
    if fmt == "pac":
        return render_blocked_pac(proxy, ((e.key, comment_fields(e)) for e in shareable(entries)))
    return render_shared(entries, fmt, now)
