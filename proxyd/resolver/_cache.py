"""Answers of the honest source, kept for their TTL (time is a parameter).

A floor keeps a name that the provider hands out with a TTL of seconds from costing a
DoH round trip per connection; a ceiling bounds how long a moved site stays wrong.
Negative answers (no address) are kept for the floor only.
"""

from __future__ import annotations

from collections import OrderedDict


class AnswerCache:
    def __init__(self, *, min_ttl: float, max_ttl: float, size: int) -> None:
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.size = size
        self._entries: OrderedDict[tuple[str, int], tuple[float, tuple[str, ...]]] = OrderedDict()

    def get(self, name: str, qtype: int, now: float) -> tuple[tuple[str, ...], float] | None:
        """``(addresses, seconds left)`` while fresh."""
        key = (name, qtype)
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, addresses = entry
        if now >= expires:
            del self._entries[key]
            return None
        return addresses, expires - now

    def put(
        self, name: str, qtype: int, addresses: tuple[str, ...], ttl: float, now: float
    ) -> None:
        kept = min(max(ttl, self.min_ttl), self.max_ttl) if addresses else self.min_ttl
        key = (name, qtype)
        self._entries[key] = (now + kept, addresses)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
