"""The one thing the proxy side needs to know of a mirror: it answers a request itself.

Apart from ``_mirror`` and ``_route`` so that neither imports the other at run time:
``_mirror`` makes routes lazily (aiohttp), and ``_route`` subclasses this.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxyd.mirror._answer import MirrorAnswer
    from proxyd.mirror._client import RequestBody
    from proxyd.protocol import Request
    from proxyd.runtime import Runtime


class PlainHttpRoute(abc.ABC):
    """A route that answers a plain-HTTP request itself instead of carrying it: a mirror.

    What ``inbound_http`` tests a route for, so that it can tell a mirror apart without
    importing ``MirrorRoute`` (and aiohttp with it).
    """

    @abc.abstractmethod
    async def answer(
        self, rt: Runtime, req: Request, body: RequestBody | None = None
    ) -> MirrorAnswer: ...
