"""A cut after data (issue 12, part 2; weak evidence ``cut_after_data``): its shape
(``detect.is_cut``), the suspicion it leaves in the learning table with its cut point,
the upstream control that confirms it, and routing's answer to a suspected domain."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from proxyd.config._config import parse_config
from proxyd.learning._detect import (
    CUT_MIN_BYTES,
    STALL_GIVE_UP_MAX,
    STALL_MAX_BYTES,
    Reason,
    Strength,
    is_cut,
)
from proxyd.learning._table import DIRECT, STALL_SUSPECT_FOR, LearningTable, State
from proxyd.outbound._dialers import DirectDialer
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.routing._learned import LearnedRoutes
from proxyd.routing._router import Router

T0 = 1_700_000_000.0
CUT = 110 * 1024


def test_a_cut_after_data_is_weak_evidence() -> None:
    assert Reason.CUT_AFTER_DATA.strength is Strength.WEAK


@pytest.mark.parametrize(
    ("server_bytes", "reset", "closed", "silence", "cut"),
    [
        (CUT, True, False, 0.01, True),  # reset while the data flowed
        (CUT_MIN_BYTES + 1, True, False, 0.0, True),
        (CUT_MIN_BYTES, True, False, 0.0, False),  # still the handshake's size
        (CUT, True, False, 8.0, False),  # an idle connection the server reset
        (CUT, False, False, 9.0, True),  # silence past a freeze's size until the client left
        (STALL_MAX_BYTES, False, False, 9.0, False),  # that size is the freeze's (is_stall)
        (CUT, False, True, 9.0, False),  # the server ended it
        (CUT, False, False, 2.0, False),  # the client left quickly: no evidence
        (CUT, False, False, STALL_GIVE_UP_MAX + 1, False),  # an idle keep-alive dropped
    ],
)
def test_a_cut_is_data_past_the_handshake_then_a_reset_or_silence(
    server_bytes: int, reset: bool, closed: bool, silence: float, cut: bool
) -> None:
    shape = is_cut(
        server_bytes, server_reset=reset, server_closed=closed, silence=silence, stall_after=8.0
    )
    assert shape is cut


def make_table() -> LearningTable:
    return LearningTable(rng=random.Random(3), weak_threshold=2, weak_window=60.0)


def test_one_cut_makes_the_domain_suspected_with_its_cut_point() -> None:
    table = make_table()
    assert table.record_cut("www.cut.example", CUT, T0) is True
    assert table.cut_point("img.cut.example", T0 + 1) == CUT
    assert table.cut_point("other.example", T0 + 1) is None


def test_an_unconfirmed_cut_suspicion_lapses() -> None:
    table = make_table()
    table.record_cut("cut.example", CUT, T0)
    assert table.cut_point("cut.example", T0 + STALL_SUSPECT_FOR) == CUT
    assert table.cut_point("cut.example", T0 + STALL_SUSPECT_FOR + 1) is None
    late = T0 + STALL_SUSPECT_FOR + 1
    assert table.confirm_blocked("cut.example", Reason.CUT_AFTER_DATA, "tor", late) is None


def test_a_confirmed_cut_blocks_the_domain_with_the_cut_evidence() -> None:
    table = make_table()
    assert table.confirm_blocked("cut.example", Reason.CUT_AFTER_DATA, "tor", T0) is None
    table.record_cut("www.cut.example", CUT, T0)
    entry = table.confirm_blocked("www.cut.example", Reason.CUT_AFTER_DATA, "tor", T0 + 5)
    assert entry is not None
    assert (entry.key, entry.state, entry.route) == ("cut.example", State.BLOCKED, "tor")
    assert [(e.reason, e.route, e.at) for e in entry.evidence] == [
        (Reason.CUT_AFTER_DATA, DIRECT, T0)
    ]
    assert table.cut_point("cut.example", T0 + 6) is None  # settled


def test_no_cut_counts_while_learning_is_paused() -> None:
    table = make_table()
    for index in range(5):
        table.record_failure(f"site{index}.example", DIRECT, Reason.CONNECT_TIMEOUT, T0)
    assert table.is_paused(T0)
    assert table.record_cut("cut.example", CUT, T0 + 1) is False


UPSTREAM = """
[[upstream]]
name = "tor"
url = "socks5h://127.0.0.1:9050"
"""


def cut_router(tmp_path: Path) -> tuple[Router, LearnedRoutes]:
    config = parse_config(UPSTREAM, source="test.toml")
    learned = LearnedRoutes(config.learning, tmp_path, connect_timeout=5.0, clock=lambda: T0)
    learned.direct_cut("www.cut.example", CUT, "tunnel was reset")
    return Router(config, DirectDialer(), UpstreamSet(config.upstreams), learned), learned


def test_the_next_tunnel_of_a_cut_domain_goes_to_the_upstream_first_as_the_control(
    tmp_path: Path,
) -> None:
    router, learned = cut_router(tmp_path)
    plan = router.plan("cut.example", 443)
    assert [r.name for r in plan.routes] == ["tor", DIRECT]
    assert plan.stall_control and not plan.learn
    assert "cut after some data (cut_after_data)" in plan.why
    assert learned.stats.detections[Reason.CUT_AFTER_DATA] == 1


def test_the_control_confirms_only_when_it_carried_more_than_the_cut_point(
    tmp_path: Path,
) -> None:
    _, learned = cut_router(tmp_path)

    async def control() -> None:  # a confirmation arms the state file's save timer
        learned.control_carried("cut.example", "tor", CUT)  # no further than the cut
        assert learned.lookup("cut.example") is None
        learned.control_carried("cut.example", DIRECT, 10 * CUT)  # direct is no control
        assert learned.lookup("cut.example") is None
        learned.control_carried("cut.example", "tor", CUT + 1)

    asyncio.run(control())
    entry = learned.lookup("cut.example")
    assert entry is not None and entry.route == "tor"
    assert [e.reason for e in entry.evidence] == [Reason.CUT_AFTER_DATA]


def test_proxyd_why_explains_a_domain_learned_from_a_cut(tmp_path: Path) -> None:
    router, learned = cut_router(tmp_path)
    assert "cut after some data (cut_after_data)" in str(router.explain("cut.example")["why"])

    async def control() -> None:
        learned.control_carried("cut.example", "tor", 2 * CUT)

    asyncio.run(control())
    why = str(router.explain("www.cut.example")["why"])
    assert "blocked (cut_after_data)" in why and "reset mid-way" in why
