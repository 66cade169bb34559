"""The proxy auto-config (PAC) file: which destinations a browser should send to proxyd.

Pure: no IO. Local and private destinations and the domains known to work direct go
``DIRECT``; everything else goes to proxyd, which routes it further. Sending a host
through proxyd is always correct, ``DIRECT`` is only a shortcut, so the domain list may
be cut at a size bound without harm.

The generated JavaScript never resolves names (``isInNet`` and ``dnsResolve`` on a name
would leak every visited host to the local resolver and block the browser on it):
``isInNet`` is only called on IPv4 literals. Every domain is validated against a strict
host-name pattern and written as a JSON string literal, so no value can escape its
string.

Public API:

- ``render_pac(proxy, direct_domains, *, max_domains=MAX_DIRECT_DOMAINS) -> str``
- ``render_blocked_pac(proxy, blocked) -> str``: the shared export, the other way
  round: only the named domains (and their subdomains) go to proxyd, the rest DIRECT;
  each domain carries its comment (route, reason, date).
- ``pac_proxy_endpoint(host_header, listen) -> tuple[str, int] | None``: the proxy
  address as the client can reach it.
- ``MAX_DIRECT_DOMAINS``, ``CONTENT_TYPE``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence

from proxyd.learning import LOCAL_NETWORKS, LOCAL_SUFFIXES, normalise_host, parse_ip

CONTENT_TYPE = "application/x-ns-proxy-autoconfig"
MAX_DIRECT_DOMAINS = 5000
# Labels of letters, digits, hyphens and underscores, at least two labels: single-label
# names are DIRECT anyway, and a bare "__proto__" could not reach the lookup object.
DOMAIN_PATTERN = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))+")
_WILDCARD_HOSTS = ("0.0.0.0", "::")

# The IPv6 part of LOCAL_NETWORKS, as patterns on the literal (isInNet is IPv4 only in
# most PAC engines): ::, ::1, fc00::/7 (unique local) and fe80::/10 (link local).
_LOCAL_IPV6 = r"/^(::1?|f[cd][0-9a-f]{2}:.*|fe[89ab][0-9a-f]:.*)$/"


def _js(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def _ipv4_checks() -> str:
    nets = [n for n in LOCAL_NETWORKS if isinstance(n, ipaddress.IPv4Network)]
    return " ||\n        ".join(
        f"isInNet(host, {_js(str(n.network_address))}, {_js(str(n.netmask))})" for n in nets
    )


def _suffix_checks() -> str:
    return " ||\n      ".join(
        f"host == {_js(s)} || dnsDomainIs(host, {_js('.' + s)})" for s in LOCAL_SUFFIXES
    )


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_pac(
    proxy: tuple[str, int],
    direct_domains: Iterable[str],
    *,
    max_domains: int = MAX_DIRECT_DOMAINS,
) -> str:
    host, port = proxy
    if parse_ip(host) is None and not DOMAIN_PATTERN.fullmatch(host) and host != "localhost":
        raise ValueError(f"{host!r} is not a host name or address")
    endpoint = _endpoint(host, port)
    domains = sorted(
        {d for d in map(normalise_host, direct_domains) if DOMAIN_PATTERN.fullmatch(d)}
    )
    left_out = len(domains) - max_domains
    domains = domains[:max_domains]
    table = ",\n".join(f"  {_js(d)}: 1" for d in domains)
    note = f"// {left_out} more direct domains left out (size bound)\n" if left_out > 0 else ""
    return f"""\
// proxyd proxy auto-config: local and known-direct destinations go DIRECT,
// everything else through proxyd, which decides the route for each site.
{note}var PROXYD = {_js(f"PROXY {endpoint}; SOCKS5 {endpoint}")};
var DIRECT_DOMAINS = {{
{table}
}};

function FindProxyForURL(url, host) {{
  host = host.toLowerCase();
  if (host.charAt(0) == "[") {{
    host = host.substring(1, host.length - 1);
  }}
  if (isPlainHostName(host) ||
      {_suffix_checks()}) {{
    return "DIRECT";
  }}
  if (/^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$/.test(host)) {{
    if ({_ipv4_checks()}) {{
      return "DIRECT";
    }}
    return PROXYD;
  }}
  if (host.indexOf(":") >= 0) {{
    return {_LOCAL_IPV6}.test(host) ? "DIRECT" : PROXYD;
  }}
  for (var name = host; name.indexOf(".") > 0; name = name.substring(name.indexOf(".") + 1)) {{
    if (Object.prototype.hasOwnProperty.call(DIRECT_DOMAINS, name)) {{
      return "DIRECT";
    }}
  }}
  return PROXYD;
}}
"""


def render_blocked_pac(proxy: tuple[str, int], blocked: Iterable[tuple[str, str]]) -> str:
    """``blocked``: (domain, comment) pairs. Unlike ``render_pac`` this file is for a
    browser that should use the proxy only where a block is known, so nothing is cut."""
    host, port = proxy
    if parse_ip(host) is None and not DOMAIN_PATTERN.fullmatch(host) and host != "localhost":
        raise ValueError(f"{host!r} is not a host name or address")
    endpoint = _endpoint(host, port)
    rows = {}
    for domain, comment in blocked:
        name = normalise_host(domain)
        if DOMAIN_PATTERN.fullmatch(name):
            # Comments are written as JSON strings too: no value can end the comment.
            rows[name] = f"  {_js(name)}: {_js(comment)}"
    table = ",\n".join(rows[name] for name in sorted(rows))
    return f"""\
// proxyd learned routes: domains known to be blocked go through proxyd, the rest DIRECT.
// Each value says which route worked, the evidence and its date.
var PROXYD = {_js(f"PROXY {endpoint}; SOCKS5 {endpoint}")};
var BLOCKED_DOMAINS = {{
{table}
}};

function FindProxyForURL(url, host) {{
  host = host.toLowerCase();
  for (var name = host; name.indexOf(".") > 0; name = name.substring(name.indexOf(".") + 1)) {{
    if (Object.prototype.hasOwnProperty.call(BLOCKED_DOMAINS, name)) {{
      return PROXYD;
    }}
  }}
  return "DIRECT";
}}
"""


def pac_proxy_endpoint(
    host_header: str | None, listen: Sequence[tuple[str, int]]
) -> tuple[str, int] | None:
    """Where the client should send proxy traffic, or None when proxyd is not listening.

    The client reached the admin listener under the Host header's name; when a proxy
    listener is bound to that address or to a wildcard, the same name reaches it. A
    Host header that matches no listener (or is not a valid host) gets the first
    listen address as bound.
    """
    if not listen:
        return None
    name = _host_of(host_header)
    if name is not None:
        for host, port in listen:
            if host in _WILDCARD_HOSTS or normalise_host(host) == name:
                return name, port
        # "localhost" reaches a proxy on 127.0.0.1 as well as the admin listener.
        loopback_port = next((p for h, p in listen if _is_loopback(h)), None)
        if _is_loopback(name) and loopback_port is not None:
            return name, loopback_port
    host, port = listen[0]
    return ("127.0.0.1" if host in _WILDCARD_HOSTS else host), port


def _is_loopback(host: str) -> bool:
    ip = parse_ip(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


def _host_of(host_header: str | None) -> str | None:
    text = (host_header or "").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        text = text[1:end] if end > 0 else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    if parse_ip(text) is not None:
        return normalise_host(text)
    return text if text == "localhost" or DOMAIN_PATTERN.fullmatch(text) else None
