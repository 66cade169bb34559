"""The PAC file, evaluated by a real JavaScript engine (Node.js's V8) with the PAC helpers.

``evaluate_pac`` is also used by the integration test that fetches /proxy.pac.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence

import pytest

from proxyd.ops._pac import DOMAIN_PATTERN, pac_proxy_endpoint, render_blocked_pac, render_pac

# The helpers a PAC runtime provides, after Mozilla's ProxyAutoConfig.cpp. Name
# resolution throws: the PAC must decide from the literal alone, never leak a host to DNS.
PAC_RUNTIME = r"""
const vm = require("vm");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
function isIPv4(s) { return /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/.test(s); }
function ipToInt(s) {
  return s.split(".").reduce((acc, part) => acc * 256 + Number(part), 0);
}
const resolved = [];
const sandbox = {
  dnsResolve(host) { resolved.push(host); throw new Error("PAC resolved " + host); },
  isResolvable(host) { resolved.push(host); throw new Error("PAC resolved " + host); },
  myIpAddress() { return "127.0.0.1"; },
  isPlainHostName(host) { return host.search("(\\.)|:") == -1; },
  dnsDomainIs(host, domain) {
    return host.length >= domain.length &&
      host.substring(host.length - domain.length) == domain;
  },
  dnsDomainLevels(host) { return host.split(".").length - 1; },
  shExpMatch(str, pattern) {
    const re = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&")
      .replace(/\*/g, ".*").replace(/\?/g, ".");
    return new RegExp("^" + re + "$").test(str);
  },
  isInNet(ip, pattern, mask) {
    if (!isIPv4(ip)) { ip = sandbox.dnsResolve(ip); }
    return ((ipToInt(ip) & ipToInt(mask)) >>> 0) === ((ipToInt(pattern) & ipToInt(mask)) >>> 0);
  },
};
vm.createContext(sandbox);
new vm.Script(input.pac, { filename: "proxy.pac" }).runInContext(sandbox);
const answers = input.hosts.map(
  (host) => sandbox.FindProxyForURL("https://" + host + "/path", host));
process.stdout.write(JSON.stringify({ answers, resolved }));
"""

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js (Debian nodejs) is not installed")


def evaluate_pac(pac_source: str, hosts: Sequence[str]) -> dict[str, str]:
    """FindProxyForURL's answer per host, from Node.js; fails if the PAC touched DNS."""
    assert NODE is not None
    out = subprocess.run(
        [NODE, "-e", PAC_RUNTIME],
        input=json.dumps({"pac": pac_source, "hosts": list(hosts)}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["resolved"] == [], "the PAC file resolved names"
    return dict(zip(hosts, result["answers"], strict=True))


PROXY = "PROXY 127.0.0.1:8080; SOCKS5 127.0.0.1:8080"


@needs_node
def test_local_and_private_destinations_go_direct_and_public_ones_to_proxyd() -> None:
    pac = render_pac(("127.0.0.1", 8080), [])
    answers = evaluate_pac(
        pac,
        [
            "intranet", "localhost", "printer.local", "nas.lan", "router.home.arpa",
            "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "127.0.0.1",
            "169.254.1.1", "100.64.0.1", "::1", "[::1]", "fe80::1", "fd12:3456::1",
            "172.32.0.1", "198.18.0.5", "93.184.216.34", "2001:db8::1", "fc::1", "fec0::1",
            "example.com",
            "notlocal.example",
        ],
    )  # fmt: skip
    direct = {h for h, answer in answers.items() if answer == "DIRECT"}
    assert direct == {
        "intranet", "localhost", "printer.local", "nas.lan", "router.home.arpa",
        "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "127.0.0.1",
        "169.254.1.1", "100.64.0.1", "::1", "[::1]", "fe80::1", "fd12:3456::1",
    }  # fmt: skip
    assert {answers[h] for h in answers.keys() - direct} == {PROXY}


@needs_node
def test_known_direct_domains_and_their_subdomains_go_direct() -> None:
    pac = render_pac(("127.0.0.1", 8080), ["works.example", "Sub.Other.Example."])
    answers = evaluate_pac(
        pac,
        [
            "works.example", "www.works.example", "WWW.WORKS.EXAMPLE", "sub.other.example",
            "a.sub.other.example", "other.example", "notworks.example",
            "works.example.evil.test", "constructor.example", "__proto__",
        ],
    )  # fmt: skip
    assert answers == {
        "works.example": "DIRECT",
        "www.works.example": "DIRECT",
        "WWW.WORKS.EXAMPLE": "DIRECT",
        "sub.other.example": "DIRECT",
        "a.sub.other.example": "DIRECT",
        "other.example": PROXY,
        "notworks.example": PROXY,
        "works.example.evil.test": PROXY,
        "constructor.example": PROXY,
        "__proto__": "DIRECT",  # single label: a LAN name
    }


@needs_node
def test_hostile_domain_names_never_reach_the_javascript() -> None:
    hostile = [
        'evil.test"; } function FindProxyForURL() { return "DIRECT"; } //',
        "evil.test\u2028x.test",
        "</script>.test",
        "a.test\\",
    ]
    pac = render_pac(("127.0.0.1", 8080), [*hostile, "fine.test"])
    assert "evil" not in pac and "script" not in pac
    assert evaluate_pac(pac, ["evil.test", "fine.test"]) == {
        "evil.test": PROXY,
        "fine.test": "DIRECT",
    }


@needs_node
def test_direct_list_is_cut_at_the_size_bound() -> None:
    domains = [f"site{i:02d}.example" for i in range(10)]
    pac = render_pac(("127.0.0.1", 8080), domains, max_domains=4)
    assert "6 more direct domains left out" in pac
    answers = evaluate_pac(pac, domains)
    assert sum(a == "DIRECT" for a in answers.values()) == 4


@needs_node
def test_ipv6_proxy_address_is_bracketed() -> None:
    pac = render_pac(("::1", 3128), [])
    assert evaluate_pac(pac, ["example.com"]) == {
        "example.com": "PROXY [::1]:3128; SOCKS5 [::1]:3128"
    }


def test_render_refuses_a_proxy_host_that_is_not_a_name_or_address() -> None:
    with pytest.raises(ValueError):
        render_pac(('evil"host', 8080), [])


def test_domain_pattern_needs_two_clean_labels() -> None:
    assert DOMAIN_PATTERN.fullmatch("a.example")
    assert DOMAIN_PATTERN.fullmatch("xn--bcher-kva.example")
    assert not DOMAIN_PATTERN.fullmatch("example")
    assert not DOMAIN_PATTERN.fullmatch("a..example")
    assert not DOMAIN_PATTERN.fullmatch("a.example ")


LISTEN = [("127.0.0.1", 8080), ("::1", 8080)]


@pytest.mark.parametrize(
    ("host_header", "listen", "expected"),
    [
        ("127.0.0.1:9477", LISTEN, ("127.0.0.1", 8080)),
        ("[::1]:9477", LISTEN, ("::1", 8080)),
        ("localhost:9477", LISTEN, ("localhost", 8080)),
        ("router.lan:9477", [("0.0.0.0", 3128)], ("router.lan", 3128)),
        ("192.168.1.1", [("192.168.1.1", 3128), ("127.0.0.1", 8080)], ("192.168.1.1", 3128)),
        ("evil.test\"'", LISTEN, ("127.0.0.1", 8080)),
        (None, [("0.0.0.0", 3128)], ("127.0.0.1", 3128)),
        ("10.0.0.9:9477", LISTEN, ("127.0.0.1", 8080)),
        ("127.0.0.1", [], None),
    ],
)
def test_pac_names_the_proxy_as_the_client_reached_proxyd(
    host_header: str | None, listen: list[tuple[str, int]], expected: tuple[str, int] | None
) -> None:
    assert pac_proxy_endpoint(host_header, listen) == expected


@needs_node
def test_exported_pac_sends_only_the_blocked_domains_to_proxyd() -> None:
    source = render_blocked_pac(
        ("127.0.0.1", 8080),
        [
            ("blocked.example", "route=tor reason=tls_reset since=2024-05-01"),
            ("evil.example", '*/ "}; alert(1); //'),
        ],
    )
    answers = evaluate_pac(
        source, ["blocked.example", "www.blocked.example", "other.example", "evil.example"]
    )
    assert answers == {
        "blocked.example": PROXY,
        "www.blocked.example": PROXY,
        "other.example": "DIRECT",
        "evil.example": PROXY,
    }
    assert "reason=tls_reset since=2024-05-01" in source
