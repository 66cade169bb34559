"""Moving bytes once the route is decided: the splice relay for tunnels and bodies, the hot
lane for kept-alive plain-HTTP requests, and the per-request books (``RequestRecord``).
"""

from proxyd.dataplane._accounting import NO_ROUTE, RequestRecord, finish, outcome_for
from proxyd.dataplane._hotlane import RECV_SIZE, AnswerHead, HotLane
from proxyd.dataplane._relay import BodyPipe, SpliceTunnel

__all__ = [
    "NO_ROUTE",
    "RECV_SIZE",
    "AnswerHead",
    "BodyPipe",
    "HotLane",
    "RequestRecord",
    "SpliceTunnel",
    "finish",
    "outcome_for",
]
