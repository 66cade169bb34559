"""Mirror routes: a blocked plain-HTTP site answered from its mirror.

The aiohttp-backed parts (``MirrorRoute``, ``MirrorAnswer``) load only when a
``[[mirror]]`` is configured.
"""

from typing import TYPE_CHECKING

from proxyd.mirror._mirror import MirrorSet, MirrorStatus
from proxyd.mirror._plain_route import PlainHttpRoute

if TYPE_CHECKING:
    from proxyd.mirror._answer import MirrorAnswer
    from proxyd.mirror._route import MirrorRoute

_LAZY = {
    "MirrorAnswer": "proxyd.mirror._answer",
    "MirrorRoute": "proxyd.mirror._route",
}


def __getattr__(name: str) -> object:
    # Heavy modules (aiohttp, prometheus-client) load on first use, not at start.
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = ["MirrorAnswer", "MirrorRoute", "MirrorSet", "MirrorStatus", "PlainHttpRoute"]
