"""Moving bytes once the route is decided: the splice relay for tunnels and bodies, the
client ``Protocol`` that serves kept-alive plain-HTTP requests from uvloop's callbacks, and
the per-request books (``RequestRecord``).
"""

from proxyd.dataplane._accounting import NO_ROUTE, RequestRecord, finish, outcome_for
from proxyd.dataplane._client_protocol import ClientProtocol, Handoff
from proxyd.dataplane._relay import BodyPipe, SourceEnded, SpliceTunnel

__all__ = [
    "NO_ROUTE",
    "BodyPipe",
    "ClientProtocol",
    "Handoff",
    "RequestRecord",
    "SourceEnded",
    "SpliceTunnel",
    "finish",
    "outcome_for",
]
