"""What may be resumed after a plain-HTTP answer was cut mid-body, how the rest is asked,
and which answers are the rest: any other closes the client connection (a short answer
by its Content-Length), never a body spliced from two versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxyd.config._config import parse_config
from proxyd.inbound._http_resume import (
    Validator,
    _range_request,
    _refusal,
    resumable,
    resume_routes,
)
from proxyd.outbound._dialers import DirectDialer
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.protocol import Request, Response, http1
from proxyd.routing._learned import LearnedRoutes
from proxyd.routing._router import Router

LENGTH = 1_000_000
ETAG = '"abc"'
DATE = "Wed, 21 Oct 2026 07:28:00 GMT"


def request(extra: str = "", method: str = "GET") -> Request:
    raw = f"{method} http://cut.example/file HTTP/1.1\r\nHost: cut.example\r\n{extra}\r\n"
    parsed = http1.parse_request(raw.encode())
    assert parsed is not None
    return parsed[0]


def response(status: int, *fields: str, length: int = LENGTH) -> Response:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {length}", *fields, "", ""]
    parsed = http1.parse_response("\r\n".join(lines).encode(), request_method="GET")
    assert parsed is not None
    return parsed[0]


def test_a_plain_get_answered_200_with_a_length_is_resumable_with_its_validator() -> None:
    validator = resumable(request(), response(200, f"ETag: {ETAG}", f"Last-Modified: {DATE}"))
    assert validator == Validator(ETAG, DATE)
    assert resumable(request(), response(200)) == Validator(None, None)


@pytest.mark.parametrize(
    ("req", "resp"),
    [
        (request(method="HEAD"), response(200)),
        (request("Range: bytes=5-\r\n"), response(200)),  # the client's own range
        (request('If-None-Match: "x"\r\n'), response(200)),
        (request(), response(206, "Content-Range: bytes 0-9/10", length=10)),
        (request(), response(404)),
    ],
)
def test_other_requests_and_answers_are_never_resumed(req: Request, resp: Response) -> None:
    assert resumable(req, resp) is None


def test_the_rest_is_asked_with_range_and_if_range_of_a_strong_validator() -> None:
    asked = _range_request(request("Accept: */*\r\n"), Validator(ETAG, DATE), 4096)
    fields = dict(asked.headers)
    assert fields["Range"] == "bytes=4096-" and fields["If-Range"] == ETAG
    assert fields["Accept"] == "*/*"
    # A weak tag may not be sent in If-Range; a date only stands in when there is no tag.
    weak = dict(_range_request(request(), Validator('W/"abc"', DATE), 1).headers)
    assert "If-Range" not in weak
    dated = dict(_range_request(request(), Validator(None, DATE), 1).headers)
    assert dated["If-Range"] == DATE


def test_only_the_exact_rest_of_the_same_representation_is_accepted() -> None:
    validator, start = Validator(ETAG, None), 4096
    rest = LENGTH - start
    good = response(
        206, f"Content-Range: bytes {start}-{LENGTH - 1}/{LENGTH}", f"ETag: {ETAG}", length=rest
    )
    assert _refusal(good, validator, start, LENGTH) is None
    ignored = response(200, f"ETag: {ETAG}")
    assert "200" in (_refusal(ignored, validator, start, LENGTH) or "")
    other_range = response(206, f"Content-Range: bytes 0-{LENGTH - 1}/{LENGTH}", length=LENGTH)
    assert _refusal(other_range, validator, start, LENGTH) is not None
    changed = response(
        206, f"Content-Range: bytes {start}-{LENGTH - 1}/{LENGTH}", 'ETag: "new"', length=rest
    )
    assert "etag" in (_refusal(changed, validator, start, LENGTH) or "")
    grown = response(
        206, f"Content-Range: bytes {start}-{LENGTH}/{LENGTH + 1}", f"ETag: {ETAG}", length=rest + 1
    )
    assert _refusal(grown, validator, start, LENGTH) is not None


def test_the_rest_is_asked_of_the_routes_that_take_another_path(tmp_path: Path) -> None:
    config = parse_config(
        '[[upstream]]\nname = "tor"\nurl = "socks5h://127.0.0.1:9050"\n'
        '[[upstream]]\nname = "vpn"\nurl = "socks5h://127.0.0.1:9051"\n'
        "[learning]\ndesync = true\n",
        source="test.toml",
    )
    learned = LearnedRoutes(config.learning, tmp_path, connect_timeout=5.0)
    router = Router(config, DirectDialer(), UpstreamSet(config.upstreams), learned)
    plan = router.plan("cut.example", 80, plain_http=True)
    assert any(r.name.startswith("desync:") for r in plan.routes)  # crosses the same filter
    assert [r.name for r in resume_routes(plan, "direct")] == ["tor", "vpn"]
    assert [r.name for r in resume_routes(plan, "tor")] == ["vpn"]
    assert resume_routes(plan, "vpn") == ()
