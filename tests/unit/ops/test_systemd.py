"""sd_notify and socket activation against real sockets and real processes."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxyd.ops._systemd import Notifier, SocketActivationError, listen_fds

REPO_ROOT = Path(__file__).resolve().parents[3]
DEADLINE_SECONDS = 10.0


class NotifyReceiver:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.notify_socket = notify_socket  # the NOTIFY_SOCKET value systemd would export

    def next_datagram(self) -> bytes:
        return self.sock.recv(4096)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Iterator[NotifyReceiver]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE_SECONDS)
        if request.param == "abstract":
            name = f"proxyd-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            yield NotifyReceiver(sock, "@" + name)
        else:
            # pytest's tmp_path can exceed the 108-byte limit of AF_UNIX paths.
            with tempfile.TemporaryDirectory(prefix="sdnotify-") as directory:
                path = os.path.join(directory, "notify")
                sock.bind(path)
                yield NotifyReceiver(sock, path)


def notifier_for(receiver: NotifyReceiver) -> Notifier:
    return Notifier.from_env({"NOTIFY_SOCKET": receiver.notify_socket})


def test_ready_sends_ready_and_status_in_one_datagram(receiver: NotifyReceiver) -> None:
    assert notifier_for(receiver).ready("serving on 127.0.0.1:8080")
    assert receiver.next_datagram() == b"READY=1\nSTATUS=serving on 127.0.0.1:8080"


def test_each_state_change_sends_its_exact_datagram(receiver: NotifyReceiver) -> None:
    notifier = notifier_for(receiver)
    notifier.ready()
    notifier.status("3 tunnels")
    notifier.watchdog()
    notifier.stopping("draining 3 tunnels")
    assert [receiver.next_datagram() for _ in range(4)] == [
        b"READY=1",
        b"STATUS=3 tunnels",
        b"WATCHDOG=1",
        b"STOPPING=1\nSTATUS=draining 3 tunnels",
    ]


def test_reloading_carries_the_current_monotonic_time_in_microseconds(
    receiver: NotifyReceiver,
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier_for(receiver).reloading("reloading configuration")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, monotonic, status = receiver.next_datagram().decode().split("\n")
    assert reloading == "RELOADING=1"
    assert status == "STATUS=reloading configuration"
    name, _, usec = monotonic.partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_newline_in_status_cannot_smuggle_another_assignment(receiver: NotifyReceiver) -> None:
    notifier_for(receiver).status("upstream tor down\nREADY=1")
    assert receiver.next_datagram() == b"STATUS=upstream tor down READY=1"


def test_status_that_cannot_be_utf8_encoded_is_sent_with_replacements(
    receiver: NotifyReceiver,
) -> None:
    # A lone surrogate is how Python carries an undecodable byte from a file name or argv.
    assert notifier_for(receiver).status("config /etc/proxyd/\udcff.toml")
    assert receiver.next_datagram() == b"STATUS=config /etc/proxyd/?.toml"


def test_without_notify_socket_every_notification_is_a_no_op() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.ready("x")
    assert not notifier.reloading()
    assert not notifier.watchdog()
    assert notifier.watchdog_interval() is None


def test_unreachable_notify_socket_never_raises_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="proxyd.systemd")
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/nonexistent/proxyd-test/notify"})
    assert not notifier.ready()
    assert not notifier.watchdog()
    failures = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.DEBUG


def test_unsupported_notify_socket_kind_disables_notifications() -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).ready()


def test_from_env_unsets_notify_variables_so_children_do_not_inherit_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_env()
    child_sees = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; print(sorted(k for k in os.environ"
            " if k in ('NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=DEADLINE_SECONDS,
    ).stdout
    assert child_sees.strip() == "[]"
    assert notifier.watchdog_interval() == 30.0


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": "<ours>"}, 1.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<other>"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({}, None),
    ],
    ids=["no-pid", "our-pid", "other-pid", "bad-pid", "zero", "malformed", "absent"],
)
def test_watchdog_interval_is_armed_only_for_this_process(
    environ: dict[str, str], expected: float | None
) -> None:
    pids = {"<ours>": str(os.getpid()), "<other>": str(os.getpid() + 1)}
    resolved = {key: pids.get(value, value) for key, value in environ.items()}
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify", **resolved})
    assert notifier.watchdog_interval() == expected


# Socket activation. systemd forks, moves the listening sockets to fds 3.., sets LISTEN_PID to
# the forked pid and execs the service. LAUNCHER does the same between fork and the child.
LAUNCHER = r"""
import fcntl, os, sys
sources = [int(fd) for fd in sys.argv[1].split(",")]
names, child_code, child_args = sys.argv[2], sys.argv[3], sys.argv[4:]
# Park the fds above the target range first so that moving one cannot clobber another.
parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in sources]
for fd in sources:
    os.close(fd)
for target, fd in enumerate(parked, start=3):
    os.dup2(fd, target)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(parked))
if names != "-":
    os.environ["LISTEN_FDNAMES"] = names
os.execv(sys.executable, [sys.executable, "-c", child_code, *child_args])
"""

# Accepts one connection on the inherited socket named argv[1], answers with that name, and
# reports what listen_fds made of the fds.
SERVE_ONE = r"""
import fcntl, json, os, select, sys
from proxyd.ops._systemd import listen_fds
inherited = listen_fds()
report = {
    "names": [i.name for i in inherited],
    "fds": [i.socket.fileno() for i in inherited],
    "blocking": [i.socket.getblocking() for i in inherited],
    "cloexec": [
        bool(fcntl.fcntl(i.socket.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for i in inherited
    ],
    "listen_vars_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
}
serving = next(i.socket for i in inherited if i.name == sys.argv[1])
select.select([serving], [], [], 10)
connection, _ = serving.accept()
connection.setblocking(True)
connection.sendall(sys.argv[1].encode())
connection.close()
print(json.dumps(report))
"""

REPORT_ERROR = r"""
from proxyd.ops._systemd import SocketActivationError, listen_fds
try:
    listen_fds()
except SocketActivationError as error:
    print("SocketActivationError:", error)
"""


def run_activated(
    fds: list[int], names: str, child_code: str, *child_args: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), names, child_code, *child_args],
        pass_fds=fds,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def answer_from(address: tuple[str, int]) -> bytes:
    with socket.create_connection(address, timeout=DEADLINE_SECONDS) as client:
        chunks = []
        while chunk := client.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def test_activated_child_serves_on_the_inherited_socket_with_that_name() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as proxy,
        socket.create_server(("127.0.0.1", 0)) as admin,
    ):
        child = run_activated([proxy.fileno(), admin.fileno()], "proxy:admin", SERVE_ONE, "admin")
        # The parent never accepts: only the child, through fd 4, can answer this connection.
        answer = answer_from(admin.getsockname())
        stdout, _ = child.communicate(timeout=DEADLINE_SECONDS)
    assert child.returncode == 0
    assert answer == b"admin"
    assert json.loads(stdout) == {
        "names": ["proxy", "admin"],
        "fds": [3, 4],
        "blocking": [False, False],
        "cloexec": [True, True],
        "listen_vars_left": [],
    }


def test_inherited_socket_without_fdnames_is_called_unknown() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        child = run_activated([listener.fileno()], "-", SERVE_ONE, "unknown")
        answer = answer_from(listener.getsockname())
        stdout, _ = child.communicate(timeout=DEADLINE_SECONDS)
    assert answer == b"unknown"
    assert json.loads(stdout)["names"] == ["unknown"]


def test_passed_fd_that_is_not_a_socket_is_a_typed_error() -> None:
    read_end, write_end = os.pipe()
    try:
        child = run_activated([read_end], "proxy", REPORT_ERROR)
        stdout, _ = child.communicate(timeout=DEADLINE_SECONDS)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert stdout.startswith("SocketActivationError: passed fd 3 (proxy) is not a socket")


def test_listen_variables_for_another_process_are_ignored_and_removed() -> None:
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert listen_fds(environ) == []
    assert environ == {}


def test_without_listen_variables_there_are_no_inherited_sockets() -> None:
    assert listen_fds({}) == []


@pytest.mark.parametrize(
    ("listen_fds_value", "fdnames"),
    [("two", None), ("-1", None), ("2", "proxy"), ("1", "")],
    ids=["not-a-number", "negative", "fewer-names", "empty-names"],
)
def test_malformed_listen_variables_are_a_typed_error(
    listen_fds_value: str, fdnames: str | None
) -> None:
    # Every case is rejected before any fd is touched, so pytest's own fds 3.. are safe.
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": listen_fds_value}
    if fdnames is not None:
        environ["LISTEN_FDNAMES"] = fdnames
    with pytest.raises(SocketActivationError):
        listen_fds(environ)
