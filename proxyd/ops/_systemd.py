"""systemd integration without libsystemd: readiness notification and socket activation.

Both protocols are tiny and stable (sd_notify(3), sd_listen_fds(3)), so proxyd speaks them
directly instead of depending on a binding.

Public API
----------
``Notifier.from_env(environ=os.environ) -> Notifier``
    Reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` and *removes them* from
    ``environ`` (pass ``os.environ`` to change the process environment): a child process that
    inherited them would believe it is the supervised service, and could ping the watchdog
    or report readiness on our behalf. Without ``NOTIFY_SOCKET`` every method is a no-op.
``Notifier.ready(status=None)``, ``.status(text)``, ``.reloading(status=None)``,
``.stopping(status=None)``, ``.watchdog()``
    Each sends one datagram (``READY=1``, ``STATUS=...``, ``RELOADING=1`` with
    ``MONOTONIC_USEC``, ``STOPPING=1``, ``WATCHDOG=1``) and returns whether it was sent.
    They never raise: the first failure is logged at debug level, later ones silently.
``Notifier.active``
    Whether ``NOTIFY_SOCKET`` named a socket proxyd can notify.
``Notifier.watchdog_interval() -> float | None``
    The watchdog timeout in seconds (``WatchdogSec=``), or None when no watchdog is armed
    for this process. Ping at half of it.
``listen_fds(environ=os.environ) -> list[InheritedSocket]``
    The sockets systemd passed (fds 3, 4, ...) as ``InheritedSocket(name, socket)``, in
    order, non-blocking and close-on-exec. ``name`` comes from ``FileDescriptorName=``
    (``"unknown"`` when systemd sent no names, as libsystemd reports it). Removes
    ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES`` from ``environ``. Returns ``[]`` when the
    variables are absent or addressed to another process; raises ``SocketActivationError``
    when they are malformed or an fd is not a socket.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping
from typing import NamedTuple

from proxyd.errors import ProxydError

logger = logging.getLogger("proxyd.systemd")

# sd_listen_fds(3): passed fds start right after stdin, stdout and stderr.
_FIRST_LISTEN_FD = 3

# systemd drains its notification socket promptly; the timeout only bounds the event loop
# stall if PID 1 is wedged, without dropping READY=1 the way a non-blocking send could.
_SEND_TIMEOUT_SECONDS = 2.0


class SocketActivationError(ProxydError):
    """The socket-activation variables are malformed or name an fd that is not a socket."""


class InheritedSocket(NamedTuple):
    name: str
    socket: socket.socket


class Notifier:
    """Sends sd_notify(3) state changes to the service manager."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        """``address`` is an AF_UNIX address as Python takes it (abstract ones start with NUL)."""
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._failure_logged = False

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        notify_socket = environ.pop("NOTIFY_SOCKET", None)
        watchdog_usec = environ.pop("WATCHDOG_USEC", None)
        watchdog_pid = environ.pop("WATCHDOG_PID", None)
        return cls(_unix_address(notify_socket), _our_watchdog_usec(watchdog_usec, watchdog_pid))

    @property
    def active(self) -> bool:
        """Whether a service manager is listening (NOTIFY_SOCKET was usable)."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1_000_000

    def ready(self, status: str | None = None) -> bool:
        return self._send("READY=1", *_status_assignment(status))

    def status(self, text: str) -> bool:
        return self._send(*_status_assignment(text))

    def reloading(self, status: str | None = None) -> bool:
        # Type=notify-reload (systemd >= 253) rejects RELOADING=1 without the timestamp: it is
        # how the manager tells this reload from a stale one. READY=1 ends the reload.
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send(
            "RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", *_status_assignment(status)
        )

    def stopping(self, status: str | None = None) -> bool:
        return self._send("STOPPING=1", *_status_assignment(status))

    def watchdog(self) -> bool:
        return self._send("WATCHDOG=1")

    def _send(self, *assignments: str) -> bool:
        if self._address is None:
            return False
        message = "\n".join(assignments).encode("utf-8", "replace")
        try:
            # A socket per message, as libsystemd does: a few syscalls every ~15 s is nothing,
            # and there is no descriptor to own, close or leak into children.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(_SEND_TIMEOUT_SECONDS)
                sock.sendto(message, self._address)
        except OSError as error:
            if not self._failure_logged:
                self._failure_logged = True
                logger.debug("cannot notify systemd at %r: %s", self._address, error)
            return False
        return True


def listen_fds(environ: MutableMapping[str, str] = os.environ) -> list[InheritedSocket]:
    listen_pid = environ.pop("LISTEN_PID", None)
    listen_fds_count = environ.pop("LISTEN_FDS", None)
    listen_fdnames = environ.pop("LISTEN_FDNAMES", None)
    # Variables addressed to another process were inherited by mistake; like libsystemd,
    # ignore them rather than adopt fds that belong to someone else.
    if listen_pid is None or listen_fds_count is None or not _is_our_pid(listen_pid):
        return []
    try:
        count = int(listen_fds_count)
    except ValueError:
        raise SocketActivationError(f"LISTEN_FDS={listen_fds_count!r} is not a number") from None
    if count < 0:
        raise SocketActivationError(f"LISTEN_FDS={listen_fds_count!r} is negative")
    if listen_fdnames is None:
        names = ["unknown"] * count
    else:
        names = listen_fdnames.split(":") if listen_fdnames else []
    if len(names) != count:
        raise SocketActivationError(
            f"LISTEN_FDNAMES={listen_fdnames!r} names {len(names)} fds, LISTEN_FDS={count}"
        )
    inherited: list[InheritedSocket] = []
    for fd, name in enumerate(names, start=_FIRST_LISTEN_FD):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as error:
            for earlier in inherited:
                earlier.socket.close()
            raise SocketActivationError(
                f"passed fd {fd} ({name}) is not a socket: {error}"
            ) from None
        sock.setblocking(False)
        # systemd passes them inheritable (they had to survive its exec); ours must not
        # leak into anything proxyd spawns.
        os.set_inheritable(fd, False)
        inherited.append(InheritedSocket(name, sock))
    return inherited


def _unix_address(notify_socket: str | None) -> str | None:
    if not notify_socket:
        return None
    if notify_socket.startswith("/"):
        return notify_socket
    if notify_socket.startswith("@"):
        return "\0" + notify_socket[1:]
    # e.g. "vsock:CID:PORT" (systemd >= 254 in VMs): not something proxyd runs under.
    logger.debug("ignoring unsupported NOTIFY_SOCKET=%r", notify_socket)
    return None


def _our_watchdog_usec(watchdog_usec: str | None, watchdog_pid: str | None) -> int | None:
    if watchdog_usec is None:
        return None
    if watchdog_pid is not None and not _is_our_pid(watchdog_pid):
        return None
    try:
        usec = int(watchdog_usec)
    except ValueError:
        logger.debug("ignoring malformed WATCHDOG_USEC=%r", watchdog_usec)
        return None
    return usec if usec > 0 else None


def _is_our_pid(value: str) -> bool:
    try:
        return int(value) == os.getpid()
    except ValueError:
        return False


def _status_assignment(status: str | None) -> tuple[str, ...]:
    if status is None:
        return ()
    # A newline would end the assignment and let the rest pass for another variable.
    return ("STATUS=" + status.replace("\n", " "),)
