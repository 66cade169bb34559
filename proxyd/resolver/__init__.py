"""Name resolution done honestly: the system resolver's answers judged by pure poisoning
detectors, DNS-over-HTTPS providers (with bootstrap addresses) as the honest source, a
TTL cache, and the optional LAN DNS listener. DNS messages are handled sans-IO in
``_wire``; dnspython is loaded only when a DoH provider or the listener is used.
"""

from proxyd.resolver._cache import AnswerCache
from proxyd.resolver._doh import Connector, DohError, DohProvider
from proxyd.resolver._listener import DnsListener
from proxyd.resolver._poison import (
    DEFAULT_BOGONS,
    Signal,
    bogon_for_public_name,
    disagrees,
    in_poison_set,
    served_block_page,
    shared_by_blocked_names,
)
from proxyd.resolver._resolver import Resolver
from proxyd.resolver._wire import (
    AAAA,
    NOERROR,
    NXDOMAIN,
    REFUSED,
    A,
    DnsAnswer,
    WireError,
    decode_answer,
    doh_request,
    encode_query,
    parse_doh_response,
)

__all__ = [
    "AAAA",
    "DEFAULT_BOGONS",
    "NOERROR",
    "NXDOMAIN",
    "REFUSED",
    "A",
    "AnswerCache",
    "Connector",
    "DnsAnswer",
    "DnsListener",
    "DohError",
    "DohProvider",
    "Resolver",
    "Signal",
    "WireError",
    "bogon_for_public_name",
    "decode_answer",
    "disagrees",
    "doh_request",
    "encode_query",
    "in_poison_set",
    "parse_doh_response",
    "served_block_page",
    "shared_by_blocked_names",
]
