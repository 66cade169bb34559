"""Listeners and clients: the accept loop sniffs the first byte and serves HTTP proxy
(plain requests and CONNECT) or SOCKS on the same port; transparent listeners take the
LAN's redirected connections and route them by the name in their first bytes.
"""

from proxyd.inbound._http import HttpClient
from proxyd.inbound._server import ProxyServer, StartupError, bind_listener
from proxyd.inbound._transparent import TransparentServer

__all__ = ["HttpClient", "ProxyServer", "StartupError", "TransparentServer", "bind_listener"]
