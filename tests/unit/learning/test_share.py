"""Sharing learned blocks: every export format reads back with proxyd's own list parser."""

from __future__ import annotations

import pytest

from proxyd.learning import (
    SHARE_FORMATS,
    LearningTable,
    ListError,
    Reason,
    SharedEntry,
    read_shared,
    render_shared,
)
from proxyd.learning._lists import parse_list

DAY = 1_714_521_600.0  # 2024-05-01 00:00 UTC


def learned_table() -> LearningTable:
    table = LearningTable()
    table.record_failure("www.blocked.example", "direct", Reason.TLS_INJECTED, DAY)
    table.confirm_blocked("www.blocked.example", Reason.TLS_INJECTED, "tor", DAY)
    table.force("only.host.example", "socks", DAY + 86400)
    table.force("works.example", "direct", DAY)  # direct: not a block, not shared
    table.force("203.0.113.7", "tor", DAY)  # an address: never shared
    return table


@pytest.mark.parametrize("fmt", SHARE_FORMATS)
def test_each_format_parses_back_and_names_route_reason_and_date(fmt: str) -> None:
    text = render_shared(learned_table().snapshot(), fmt, DAY)
    parsed = parse_list(text, fmt)
    assert parsed.matches("blocked.example") and parsed.matches("a.blocked.example")
    assert parsed.matches("only.host.example")
    assert not parsed.matches("works.example") and not parsed.matches("203.0.113.7")
    assert "blocked.example route=tor reason=tls_injected since=2024-05-01" in text
    assert "only.host.example route=socks reason=forced since=2024-05-02" in text
    assert "203.0.113.7" not in text
    assert read_shared(text) == [
        SharedEntry("blocked.example", "tor"),
        SharedEntry("only.host.example", "socks"),
    ]


def test_a_list_from_elsewhere_imports_without_routes() -> None:
    assert read_shared("# zapret\nrutracker.org\n") == [SharedEntry("rutracker.org", None)]
    assert read_shared("||a.example\n|https://b.example/x\n") == [
        SharedEntry("a.example", None),
        SharedEntry("b.example", None),
    ]


def test_patterns_that_name_no_domain_are_refused_on_import() -> None:
    with pytest.raises(ListError):
        read_shared("keyword:google\n")
    with pytest.raises(ListError):
        read_shared("||a.example\n@@||b.a.example\n")


def test_seeded_entries_are_list_entries_re_tested_and_known_ones_win() -> None:
    table = LearningTable(retest_initial=100.0)
    assert table.seed("a.example", "tor", DAY) is not None
    entry = table.lookup("x.a.example", DAY)
    assert entry is not None and entry.route == "tor" and entry.next_retest is not None
    assert table.seed("a.example", "socks", DAY) is None
    host = table.seed("one.b.example", "tor", DAY)
    assert host is not None and table.lookup("other.b.example", DAY) is None
