"""Where a redirected connection was going before the router's firewall caught it.

NAT REDIRECT rewrites the destination to proxyd's listener; conntrack keeps the original,
which ``SO_ORIGINAL_DST`` (``IP6T_SO_ORIGINAL_DST`` for IPv6, same number) returns as a
``sockaddr_in``/``sockaddr_in6``. TPROXY leaves the packet alone, so the accepted socket's
own local address is the original destination.
"""

from __future__ import annotations

import socket

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
_SOCKADDR_IN6 = 28


def original_destination(sock: socket.socket, mode: str) -> tuple[str, int]:
    """(address, port) the client connected to; raises ``OSError`` when there is none."""
    if mode == "tproxy":
        host, port = sock.getsockname()[:2]
        return _unmapped(str(host)), int(port)
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, _SOCKADDR_IN6)
        port = int.from_bytes(raw[2:4], "big")
        return _unmapped(socket.inet_ntop(socket.AF_INET6, raw[8:24])), port
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")


def _unmapped(host: str) -> str:
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host
