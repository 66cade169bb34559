"""Listeners and clients: the accept loop sniffs the first byte and serves HTTP proxy
(plain requests and CONNECT) or SOCKS on the same port.
"""

from proxyd.inbound._http import HttpClient
from proxyd.inbound._server import ProxyServer, StartupError, bind_listener

__all__ = ["HttpClient", "ProxyServer", "StartupError", "bind_listener"]
