"""Who may use the proxy (allow-list, proxy credentials, per-client caps) and where it may
never go (``is_own_address``: its own listeners, loopback, the router).
"""

from proxyd.access._policy import AccessPolicy, AuthThrottle, is_own_address

__all__ = ["AccessPolicy", "AuthThrottle", "is_own_address"]
