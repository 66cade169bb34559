"""Route decision for one destination: which dialers to try, in order, and why.

Precedence (DESIGN §4): user rules > learned state > imported lists > default. Until the
learning issue lands every destination goes direct; the seam is ``Router.plan``.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxyd.dialers import Dialer


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Dialers to try in order; the first is the committed choice, the rest are fallbacks."""

    dialers: tuple[Dialer, ...]
    why: str

    @property
    def first(self) -> Dialer:
        return self.dialers[0]


class Router:
    def __init__(self, direct: Dialer) -> None:
        self._direct = direct
        self._direct_plan = RoutePlan((direct,), "default: direct")

    def plan(self, host: str, port: int) -> RoutePlan:
        return self._direct_plan
