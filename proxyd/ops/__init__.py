"""Running the daemon: the admin listener (metrics, health, learned routes, PAC, status
page), systemd socket activation and readiness, the ``routes`` CLI, and the
``transparent`` CLI with the firewall rules it prints.

The admin app, metrics and status page load on the first admin request.
"""

from typing import TYPE_CHECKING

from proxyd._lazy import lazy_names
from proxyd.ops._admin import AdminServer
from proxyd.ops._admin_context import AdminContext, daemon_context
from proxyd.ops._systemd import InheritedSocket, Notifier, listen_fds

if TYPE_CHECKING:
    from proxyd.ops._cli_routes import routes_command
    from proxyd.ops._cli_transparent import transparent_command

# Loaded on first use, not at daemon start (the CLIs, and aiohttp behind mirrors).
__getattr__ = lazy_names(
    __name__,
    {
        "routes_command": "proxyd.ops._cli_routes",
        "transparent_command": "proxyd.ops._cli_transparent",
    },
)


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
