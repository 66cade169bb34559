"""The access policy's pure parts: the login throttle (time passed in) and destination rules."""

from __future__ import annotations

import ipaddress

import pytest

from proxyd.access._policy import AccessPolicy, AuthThrottle, is_own_address
from proxyd.errors import Forbidden


def test_throttle_blocks_after_max_failures_within_the_window() -> None:
    throttle = AuthThrottle(max_failures=3, window=60.0)
    for t in (0.0, 1.0, 2.0):
        assert not throttle.blocked("192.0.2.7", now=t)
        throttle.failed("192.0.2.7", now=t)
    assert throttle.blocked("192.0.2.7", now=3.0)
    assert not throttle.blocked("192.0.2.8", now=3.0)  # per client address


def test_throttle_forgets_failures_older_than_the_window() -> None:
    throttle = AuthThrottle(max_failures=2, window=10.0)
    throttle.failed("192.0.2.7", now=0.0)
    throttle.failed("192.0.2.7", now=5.0)
    assert throttle.blocked("192.0.2.7", now=9.9)
    assert not throttle.blocked("192.0.2.7", now=10.0)  # the first failure aged out


def test_throttle_memory_is_bounded_by_forgetting_the_oldest_clients() -> None:
    throttle = AuthThrottle(max_failures=1, window=60.0)
    clients = [f"10.0.{i // 256}.{i % 256}" for i in range(AuthThrottle.MAX_CLIENTS + 10)]
    for client in clients:
        throttle.failed(client, now=0.0)
    assert not throttle.blocked(clients[0], now=1.0)  # evicted
    assert throttle.blocked(clients[-1], now=1.0)


def test_a_lowered_max_failures_applies_to_clients_already_counted() -> None:
    throttle = AuthThrottle(max_failures=5, window=60.0)
    throttle.failed("192.0.2.7", now=0.0)
    throttle.failed("192.0.2.7", now=0.0)
    throttle.max_failures = 2  # a reload
    assert throttle.blocked("192.0.2.7", now=1.0)


def test_own_addresses_are_recognised_by_the_kernel() -> None:
    assert is_own_address(ipaddress.ip_address("127.0.0.1"))
    assert not is_own_address(ipaddress.ip_address("192.0.2.1"))  # TEST-NET-1, never local


@pytest.mark.parametrize("dest", ["127.0.0.1", "::1", "169.254.1.1", "fe80::1", "0.0.0.0"])
def test_lan_clients_may_not_reach_local_destinations(dest: str) -> None:
    policy = AccessPolicy([], {})
    with pytest.raises(Forbidden):
        policy.check_destination("192.168.1.20", dest, 80)
    policy.check_destination("127.0.0.1", dest, 80)  # this machine's own clients may


def test_protect_local_off_lets_lan_clients_reach_local_destinations() -> None:
    AccessPolicy([], {}, protect_local=False).check_destination("192.168.1.20", "127.0.0.1", 80)


def test_public_destinations_are_allowed_for_lan_clients() -> None:
    AccessPolicy([], {}).check_destination("192.168.1.20", "192.0.2.1", 443)
