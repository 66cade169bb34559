"""The "16 KB freeze": its shape (``detect.is_stall``), how stalls add up in the learning
table, and how routing moves a suspected domain's next tunnels to the upstreams."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from proxyd.config._config import parse_config
from proxyd.learning._detect import (
    STALL_GIVE_UP_MAX,
    STALL_MAX_BYTES,
    STALL_MIN_BYTES,
    Reason,
    is_stall,
)
from proxyd.learning._table import DIRECT, STALL_SUSPECT_FOR, LearningTable, State
from proxyd.outbound._dialers import DirectDialer
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.routing._learned import LearnedRoutes
from proxyd.routing._router import Router

T0 = 1_700_000_000.0
FROZEN = 16 * 1024


@pytest.mark.parametrize(
    ("server_bytes", "server_closed", "silence", "stalled"),
    [
        (FROZEN, False, 9.0, True),
        (STALL_MIN_BYTES, False, 8.0, True),
        (STALL_MAX_BYTES, False, STALL_GIVE_UP_MAX, True),
        (STALL_MIN_BYTES - 1, False, 9.0, False),  # a small page, then idle
        (STALL_MAX_BYTES + 1, False, 9.0, False),  # got past where a freeze stops
        (FROZEN, True, 9.0, False),  # the server ended it: not frozen
        (FROZEN, False, 7.9, False),  # the client gave up quickly: no evidence
        (FROZEN, False, STALL_GIVE_UP_MAX + 1, False),  # a browser closing an idle connection
    ],
)
def test_a_stall_is_some_data_then_silence_until_the_client_gives_up(
    server_bytes: int, server_closed: bool, silence: float, stalled: bool
) -> None:
    shape = is_stall(server_bytes, server_closed=server_closed, silence=silence, stall_after=8.0)
    assert shape is stalled


def make_table() -> LearningTable:
    return LearningTable(rng=random.Random(3), weak_threshold=2, weak_window=60.0)


def test_one_stall_makes_the_domain_suspected() -> None:
    table = make_table()
    assert table.record_stall("www.frozen.example", T0) is True
    assert table.stall_suspected("img.frozen.example", T0 + 1)
    assert not table.stall_suspected("other.example", T0 + 1)


def test_suspicion_lapses_when_no_control_confirms_it() -> None:
    table = make_table()
    table.record_stall("frozen.example", T0 + 1)
    assert table.stall_suspected("frozen.example", T0 + 1 + STALL_SUSPECT_FOR)
    assert not table.stall_suspected("frozen.example", T0 + 2 + STALL_SUSPECT_FOR)


def test_a_direct_success_after_a_stall_does_not_lift_the_suspicion() -> None:
    # Every frozen connection got its first bytes: for other weak evidence that resets the count.
    table = make_table()
    table.record_stall("frozen.example", T0)
    table.record_direct_success("frozen.example", T0 + 5)
    assert table.stall_suspected("frozen.example", T0 + 10)


def test_upstream_control_confirms_a_suspected_stall_as_blocked_with_the_stall_evidence() -> None:
    table = make_table()
    table.record_stall("www.frozen.example", T0)
    table.record_stall("www.frozen.example", T0 + 20)
    entry = table.confirm_blocked("www.frozen.example", Reason.STALL_AFTER_DATA, "tor", T0 + 40)
    assert entry is not None
    assert (entry.key, entry.state, entry.route) == ("frozen.example", State.BLOCKED, "tor")
    assert [(e.reason, e.route, e.at) for e in entry.evidence] == [
        (Reason.STALL_AFTER_DATA, DIRECT, T0),
        (Reason.STALL_AFTER_DATA, DIRECT, T0 + 20),
    ]
    assert not table.stall_suspected("frozen.example", T0 + 41)  # settled


def test_stall_confirmation_without_suspicion_learns_nothing() -> None:
    table = make_table()
    assert table.confirm_blocked("frozen.example", Reason.STALL_AFTER_DATA, "tor", T0 + 1) is None
    assert table.lookup("frozen.example", T0 + 1) is None
    table.record_stall("frozen.example", T0)
    late = T0 + STALL_SUSPECT_FOR + 1
    assert table.confirm_blocked("frozen.example", Reason.STALL_AFTER_DATA, "tor", late) is None


def test_no_stall_counts_while_learning_is_paused_for_a_network_outage() -> None:
    table = make_table()
    for index in range(5):
        table.record_failure(f"site{index}.example", DIRECT, Reason.CONNECT_TIMEOUT, T0)
    assert table.is_paused(T0)
    assert table.record_stall("frozen.example", T0 + 2) is False


UPSTREAM = """
[[upstream]]
name = "tor"
url = "socks5h://127.0.0.1:9050"
"""


def suspected_router(tmp_path: Path, extra: str = "") -> tuple[Router, LearnedRoutes]:
    config = parse_config(UPSTREAM + extra, source="test.toml")
    learned = LearnedRoutes(config.learning, tmp_path, connect_timeout=5.0, clock=lambda: T0)
    learned.direct_stalled("www.frozen.example", FROZEN)
    return Router(config, DirectDialer(), UpstreamSet(config.upstreams), learned), learned


def test_tunnels_to_a_suspected_domain_go_to_the_upstreams_first_as_the_control(
    tmp_path: Path,
) -> None:
    router, _ = suspected_router(tmp_path)
    plan = router.plan("api.frozen.example", 443)
    assert [r.name for r in plan.routes] == ["tor", DIRECT]
    assert plan.stall_control and not plan.learn
    assert "froze" in plan.why
    other = router.plan("open.example", 443)
    assert [r.name for r in other.routes][::4] == [DIRECT, "tor"] and not other.stall_control


def test_plain_http_and_forced_routes_ignore_stall_suspicion(tmp_path: Path) -> None:
    router, learned = suspected_router(tmp_path)
    assert router.plan("frozen.example", 80, plain_http=True).first.name == DIRECT
    learned.table.force("frozen.example", DIRECT, T0)
    assert [r.name for r in router.plan("frozen.example", 443).routes] == [DIRECT]


def test_stalls_feed_the_detection_counter(tmp_path: Path) -> None:
    _, learned = suspected_router(tmp_path)
    assert learned.stats.detections[Reason.STALL_AFTER_DATA] == 1
