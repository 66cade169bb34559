"""Mirror routes: a blocked plain-HTTP site answered from its mirror.

The aiohttp-backed parts (``MirrorRoute``, ``MirrorAnswer``) load only when a
``[[mirror]]`` is configured.
"""

from typing import TYPE_CHECKING

from proxyd._lazy import lazy_names
from proxyd.mirror._mirror import MirrorSet, MirrorStatus
from proxyd.mirror._plain_route import PlainHttpRoute

if TYPE_CHECKING:
    from proxyd.mirror._answer import MirrorAnswer
    from proxyd.mirror._route import MirrorRoute

# Loaded on first use, not at daemon start (the CLIs, and aiohttp behind mirrors).
__getattr__ = lazy_names(
    __name__,
    {
        "MirrorAnswer": "proxyd.mirror._answer",
        "MirrorRoute": "proxyd.mirror._route",
    },
)


__all__ = ["MirrorAnswer", "MirrorRoute", "MirrorSet", "MirrorStatus", "PlainHttpRoute"]
