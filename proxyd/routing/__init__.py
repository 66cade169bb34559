"""Deciding the route: ``Router.plan`` turns rules, lists and the learned table into an
ordered ``RoutePlan``; ``LearnedRoutes`` owns the learned table's persistence and re-tests.
"""

from proxyd.routing._learned import STATE_FILE, LearnedRoutes
from proxyd.routing._router import RoutePlan, Router
from proxyd.routing._routes_table import format_table
from proxyd.routing._statefile import StateError, default_state_dir, save_state

__all__ = [
    "STATE_FILE",
    "LearnedRoutes",
    "RoutePlan",
    "Router",
    "StateError",
    "default_state_dir",
    "format_table",
    "save_state",
]
