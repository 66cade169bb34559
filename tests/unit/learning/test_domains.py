from __future__ import annotations

import pytest

from proxyd.learning._domains import is_local_destination, normalise_host, registrable_domain


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("www.example.com", "example.com"),
        ("a.b.c.example.com", "example.com"),
        ("news.bbc.co.uk", "bbc.co.uk"),
        ("WWW.Example.COM.", "example.com"),
        ("user.github.io", "user.github.io"),  # private-section suffix: one site per user
        ("www.пример.рф", "xn--e1afmkfd.xn--p1ai"),
    ],
)
def test_registrable_domain_follows_the_public_suffix_list(host: str, expected: str) -> None:
    assert registrable_domain(host) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [("a.b.site.example", "site.example"), ("x.y.test", "y.test"), ("site.test", "site.test")],
)
def test_names_under_unlisted_suffixes_fall_back_to_last_two_labels(
    host: str, expected: str
) -> None:
    assert registrable_domain(host) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("198.18.0.7", "198.18.0.7"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("::ffff:198.18.0.7", "198.18.0.7"),
        ("router", "router"),
        ("Printer.", "printer"),
        ("co.uk", "co.uk"),
    ],
)
def test_ip_literals_single_labels_and_bare_suffixes_are_their_own_key(
    host: str, expected: str
) -> None:
    assert registrable_domain(host) == expected


def test_legacy_ipv4_spellings_that_resolvers_accept_are_recognised_as_addresses() -> None:
    # getaddrinfo("127.1") connects to 127.0.0.1: a name-based check would let it through.
    assert normalise_host("127.1") == "127.0.0.1"
    assert normalise_host("0x7f.0.0.1") == "127.0.0.1"
    assert normalise_host("2130706433") == "127.0.0.1"
    assert is_local_destination("127.1")
    assert is_local_destination("0x7f000001")
    assert normalise_host("cafe.be") == "cafe.be"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "[::1]",
        "0.0.0.0",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "fe80::1",
        "fe80::1%eth0",
        "fd12:3456::1",
        "::ffff:192.168.1.1",
        "localhost",
        "LOCALHOST.",
        "app.localhost",
        "printer.local",
        "nas.home.arpa",
        "build.internal",
        "router.lan",
        "intranet",
    ],
)
def test_local_names_and_addresses_never_go_upstream(host: str) -> None:
    assert is_local_destination(host)


@pytest.mark.parametrize(
    "host",
    [
        "198.18.0.1",  # benchmarking range: the censor test network, must stay routable
        "198.19.255.254",
        "172.32.0.1",
        "100.128.0.1",
        "192.169.0.1",
        "8.8.8.8",
        "2001:db8::1",
        "example.com",
        "local.example.com",
        "localhost.example",
        "example.onion",
    ],
)
def test_public_names_and_addresses_are_not_local(host: str) -> None:
    assert not is_local_destination(host)
