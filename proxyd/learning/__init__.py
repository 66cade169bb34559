"""What proxyd knows about names, sans-IO, with time as a parameter.

Registrable domains and local names, block lists, evidence (``classify_*``, ``Reason``:
what a failure says about censorship), the learned table (``LearningTable``) and the
counters the control plane bumps (``Stats``).
"""

from proxyd.learning._detect import (
    CUT_MIN_BYTES,
    STALL_MAX_BYTES,
    DnsPoisonDetector,
    Fingerprints,
    Reason,
    Strength,
    classify_dial_error,
    classify_first_response,
    is_cut,
    is_stall,
)
from proxyd.learning._domains import (
    LOCAL_NETWORKS,
    LOCAL_SUFFIXES,
    is_local_destination,
    normalise_host,
    parse_ip,
    registrable_domain,
)
from proxyd.learning._lists import FORMATS, DomainList, ListError, read_list
from proxyd.learning._outage import CANARY_FRESH, GateState, OutageGate
from proxyd.learning._share import (
    SHARE_FORMATS,
    SharedEntry,
    comment_fields,
    read_shared,
    render_shared,
    shareable,
)
from proxyd.learning._stats import Histogram, MetricSources, NullStats, Stats, UpstreamHealth
from proxyd.learning._table import (
    DIRECT,
    SCHEMA_VERSION,
    DomainState,
    LearningTable,
    Source,
    State,
    StateFormatError,
)

__all__ = [
    "CANARY_FRESH",
    "CUT_MIN_BYTES",
    "DIRECT",
    "FORMATS",
    "LOCAL_NETWORKS",
    "LOCAL_SUFFIXES",
    "SCHEMA_VERSION",
    "SHARE_FORMATS",
    "STALL_MAX_BYTES",
    "DnsPoisonDetector",
    "DomainList",
    "DomainState",
    "Fingerprints",
    "GateState",
    "Histogram",
    "LearningTable",
    "ListError",
    "MetricSources",
    "NullStats",
    "OutageGate",
    "Reason",
    "SharedEntry",
    "Source",
    "State",
    "StateFormatError",
    "Stats",
    "Strength",
    "UpstreamHealth",
    "classify_dial_error",
    "classify_first_response",
    "comment_fields",
    "is_cut",
    "is_local_destination",
    "is_stall",
    "normalise_host",
    "parse_ip",
    "read_list",
    "read_shared",
    "registrable_domain",
    "render_shared",
    "shareable",
]
