"""What the client is told when every route failed (``firstvisit.best_error``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from proxyd.errors import AnswerTimeout, ConnectTimeout, DialError
from proxyd.firstvisit._retry import best_error
from proxyd.learning._detect import Reason
from proxyd.outbound._race import Failure, RaceResult


def result_of(*failures: Failure) -> RaceResult[object]:
    return RaceResult(failures=list(failures))


NO_RUNTIME: Any = SimpleNamespace()  # only consulted when upstreams themselves failed


def test_servers_that_connected_but_never_answered_are_a_gateway_timeout() -> None:
    silent = result_of(
        Failure("direct", Reason.FIRST_BYTE_TIMEOUT, None),
        Failure("tor", Reason.FIRST_BYTE_TIMEOUT, None),
    )
    err = best_error(NO_RUNTIME, silent, "mute.example", 443)
    assert isinstance(err, AnswerTimeout)
    assert err.http_status == 504
    assert "mute.example:443" in str(err) and "in time" in str(err)


def test_a_destination_error_wins_over_silence() -> None:
    mixed = result_of(
        Failure("direct", Reason.CONNECT_TIMEOUT, ConnectTimeout("x.example", 443)),
        Failure("tor", Reason.FIRST_BYTE_TIMEOUT, None),
    )
    assert isinstance(best_error(NO_RUNTIME, mixed, "x.example", 443), ConnectTimeout)


def test_other_failures_without_an_error_stay_a_bad_gateway() -> None:
    reset = result_of(Failure("direct", Reason.CONNECTION_RESET, None))
    err = best_error(NO_RUNTIME, reset, "x.example", 443)
    assert type(err) is DialError and err.http_status == 502
