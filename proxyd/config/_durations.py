"""Durations and sizes as proxyd's config writes them.

- ``parse_duration("250ms") -> 0.25``: a number (no sign, no exponent) with a unit
  ``ms``, ``s``, ``m``, ``h`` or ``d``; parts may be chained (``"1h30m"``). A bare number
  is refused on purpose: ``"10"`` reads as seconds to one person and milliseconds to
  another, and a timeout that is off by 1000x fails silently.
- ``format_duration(seconds) -> str``: the shortest of those spellings that
  ``parse_duration`` maps back to exactly the same float (``proxyd config`` output
  round-trips).
- ``parse_size(64 * 1024) == parse_size("64KiB") == 65536``: an integer is bytes; a
  string needs a unit ``B``, ``KiB``/``MiB``/``GiB`` (powers of 1024) or
  ``KB``/``MB``/``GB`` (powers of 1000), case-insensitive.

All three raise ``ValueError`` with a message fit for the user.
"""

from __future__ import annotations

import re

MAX_DURATION = 365 * 86400.0  # beyond this an event loop timer is a bug, not a setting

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_BARE_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WHOLE_UNITS = ("d", "h", "m", "s")

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]+)", re.IGNORECASE)
_BYTES_PER_UNIT = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_DURATION_EXAMPLES = '"250ms", "1.5s", "10m", "1h", "2d"'


def parse_duration(text: str) -> float:
    if _BARE_NUMBER.fullmatch(text):
        raise ValueError(f'duration {text!r} has no unit: write e.g. "{text}s" or "{text}ms"')
    if text.startswith("-") and _DURATION.fullmatch(text[1:]):
        raise ValueError(f"duration {text!r} is negative")
    if not _DURATION.fullmatch(text):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit, e.g. {_DURATION_EXAMPLES}"
        )
    seconds = 0.0
    for number, unit in _DURATION_PART.findall(text):
        if unit == "ms":
            # Division is correctly rounded, so "300ms" is the float nearest 0.3, same as "0.3s".
            seconds += float(number) / 1000
        else:
            seconds += float(number) * _SECONDS_PER_UNIT[unit]
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {text!r} is too long (more than 365d)")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    candidates = [
        f"{int(seconds / _SECONDS_PER_UNIT[unit])}{unit}"
        for unit in _WHOLE_UNITS
        if (seconds / _SECONDS_PER_UNIT[unit]).is_integer()
    ]
    if seconds < 1 and (seconds * 1000).is_integer():
        candidates.append(f"{int(seconds * 1000)}ms")
    candidates.append(f"{seconds!r}s")
    for candidate in candidates:
        if _DURATION.fullmatch(candidate) and parse_duration(candidate) == seconds:
            return candidate
    # repr() chose an exponent (1e-05); the exact decimal expansion of a float is finite.
    from decimal import Decimal  # rare, and 0.4 MB the daemon need not keep

    return f"{Decimal(seconds):f}s"


def parse_size(value: int | str) -> int:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size {value} is negative")
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        if _BARE_NUMBER.fullmatch(value):
            raise ValueError(
                f'size {value!r} has no unit: write {value} (an integer) or e.g. "64KiB"'
            )
        raise ValueError(f'invalid size {value!r}: use bytes (65536) or e.g. "64KiB", "1MiB"')
    number, unit = match.groups()
    bytes_per_unit = _BYTES_PER_UNIT.get(unit.lower())
    if bytes_per_unit is None:
        raise ValueError(
            f"size {value!r} has an unknown unit {unit!r}: use B, KiB, MiB, GiB, KB, MB or GB"
        )
    from decimal import Decimal  # config parsing only; see format_duration

    size = Decimal(number) * bytes_per_unit
    if size != size.to_integral_value():
        raise ValueError(f"size {value!r} is not a whole number of bytes")
    return int(size)
