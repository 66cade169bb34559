"""Running the daemon: the admin listener (metrics, health, learned routes, PAC, status
page), systemd socket activation and readiness, the ``routes`` CLI, and the
``transparent`` CLI with the firewall rules it prints.

The admin app, metrics and status page load on the first admin request.
"""

from typing import TYPE_CHECKING

from proxyd.ops._admin import AdminServer
from proxyd.ops._admin_context import AdminContext, daemon_context
from proxyd.ops._systemd import InheritedSocket, Notifier, listen_fds

if TYPE_CHECKING:
    from proxyd.ops._cli_routes import routes_command
    from proxyd.ops._cli_transparent import transparent_command

_LAZY = {
    "routes_command": "proxyd.ops._cli_routes",
    "transparent_command": "proxyd.ops._cli_transparent",
}


def __getattr__(name: str) -> object:
    # Heavy modules (aiohttp, prometheus-client) load on first use, not at start.
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "AdminContext",
    "AdminServer",
    "InheritedSocket",
    "Notifier",
    "daemon_context",
    "listen_fds",
    "routes_command",
    "transparent_command",
]
