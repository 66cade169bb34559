"""The honest answers' cache: TTLs within a floor and a ceiling, time as a parameter."""

from __future__ import annotations

from proxyd.resolver import A, AnswerCache


def test_ttl_is_raised_to_the_floor_and_cut_to_the_ceiling() -> None:
    cache = AnswerCache(min_ttl=60, max_ttl=3600, size=10)
    cache.put("short.example", A, ("198.18.2.1",), 5, now=0)
    cache.put("long.example", A, ("198.18.2.2",), 86400, now=0)
    assert cache.get("short.example", A, 59) == (("198.18.2.1",), 1)
    assert cache.get("short.example", A, 60) is None
    assert cache.get("long.example", A, 3599) is not None
    assert cache.get("long.example", A, 3600) is None


def test_no_address_is_kept_for_the_floor_only() -> None:
    cache = AnswerCache(min_ttl=30, max_ttl=3600, size=10)
    cache.put("none.example", A, (), 3600, now=0)
    assert cache.get("none.example", A, 29) == ((), 1)
    assert cache.get("none.example", A, 30) is None


def test_oldest_entry_goes_first_when_full() -> None:
    cache = AnswerCache(min_ttl=60, max_ttl=60, size=2)
    for index in range(3):
        cache.put(f"n{index}.example", A, ("198.18.2.1",), 60, now=0)
    assert cache.get("n0.example", A, 1) is None
    assert len(cache) == 2
