"""Resuming a plain-HTTP answer cut mid-body: the rest asked of the next route by Range.

Some filters let a download start and reset it once it carried enough. The answer's head
and the first part of its body are already the client's, so there is nothing to replay;
but an idempotent GET whose answer declared its length can ask the next route for the rest
(``Range: bytes=N-``, RFC 9110 14.2) and splice it into the same answer. Only when the
rest provably belongs to the same representation: a 206 whose ``Content-Range`` is exactly
``bytes N-(length-1)/length``, whose validator (``ETag``, else ``Last-Modified``) is the
one the first answer had, asked with ``If-Range`` so that a changed resource answers 200
instead of a mismatched part. Anything else (a 200 from an origin ignoring Range, another
range, a changed validator, no route left) ends the client connection: the client knows by
the Content-Length that the answer is short, and never gets a spliced mix of two versions.

API::

    ResumeRefused               the rest could not be had: close the client connection
    resumable(req, resp) -> Validator | None
    resume_routes(plan, cut_route) -> routes to ask the rest of
    ask_rest(client, req, validator, delivered, length, routes, isolation, timeout)
        -> the route that carried the rest (already spliced to the client)
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from proxyd.dataplane import SourceEnded
from proxyd.errors import DialError
from proxyd.inbound._http_attempt import Exchange, close_answer
from proxyd.learning import DIRECT
from proxyd.mirror import PlainHttpRoute
from proxyd.outbound import Dialer, is_desync, run_race, take_answer
from proxyd.protocol import BodyKind, HttpError, Request, Response
from proxyd.routing import RoutePlan

if TYPE_CHECKING:
    from proxyd.inbound._http_attempt import HttpClient

log = logging.getLogger("proxyd.http")

# Request fields that would make the origin answer something else than the rest of this
# representation (a range of the client's own, or a 304).
_CONDITIONAL = frozenset(
    ("range", "if-range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since")
)


class ResumeRefused(ConnectionResetError):
    """The rest of a cut answer could not be had: the client connection closes."""


@dataclasses.dataclass(frozen=True, slots=True)
class Validator:
    """What must be the same in the answer to the resume (both None: the server gave none)."""

    etag: str | None
    last_modified: str | None

    @property
    def if_range(self) -> str | None:
        # A weak tag may not be sent in If-Range (RFC 9110 13.1.5); a date only when the
        # server gave no tag at all.
        if self.etag is not None:
            return None if self.etag.startswith("W/") else self.etag
        return self.last_modified


def _field(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    return next((value for key, value in headers if key.lower() == name), None)


def resumable(req: Request, resp: Response) -> Validator | None:
    """The validator of an answer whose cut body may be asked again from where it broke,
    or None: only a plain GET without a range or condition of its own, answered 200 with a
    Content-Length."""
    if req.method != "GET" or req.body.kind is not BodyKind.NONE:
        return None
    if resp.status != 200 or resp.body.kind is not BodyKind.LENGTH:
        return None
    if any(key.lower() in _CONDITIONAL for key, _ in req.headers):
        return None
    return Validator(_field(resp.headers, "etag"), _field(resp.headers, "last-modified"))


def resume_routes(plan: RoutePlan, cut_route: str) -> tuple[Dialer, ...]:
    """The plan's routes after the one that was cut that take another path: a desync
    route or direct to another address crosses the same filter, and a mirror serves
    another copy."""
    names = [route.name for route in plan.routes]
    after = plan.routes[names.index(cut_route) + 1 :] if cut_route in names else ()
    return tuple(
        route
        for route in after
        if not isinstance(route, PlainHttpRoute)
        and not is_desync(route.name)
        and not route.name.startswith(DIRECT)
    )


def _range_request(req: Request, validator: Validator, start: int) -> Request:
    headers = tuple((k, v) for k, v in req.headers if k.lower() not in _CONDITIONAL)
    headers += (("Range", f"bytes={start}-"),)
    if validator.if_range is not None:
        headers += (("If-Range", validator.if_range),)
    return dataclasses.replace(req, headers=headers)


def _refusal(resp: Response, validator: Validator, start: int, length: int) -> str | None:
    """Why this answer is not the rest of the cut one, or None when it is."""
    if resp.status != 206:
        return f"answered {resp.status}, not 206"
    wanted = f"bytes {start}-{length - 1}/{length}"
    got = _field(resp.headers, "content-range")
    if got is None or got.strip().lower() != wanted:
        return f"Content-Range {got!r}, not {wanted!r}"
    if resp.body.kind is not BodyKind.LENGTH or resp.body.length != length - start:
        return "a part of another length"
    for name, had in (("etag", validator.etag), ("last-modified", validator.last_modified)):
        if had is not None and _field(resp.headers, name) != had:
            return f"the {name} changed"
    return None


async def ask_rest(
    client: HttpClient,
    req: Request,
    validator: Validator,
    delivered: int,
    length: int,
    routes: tuple[Dialer, ...],
    isolation: str | None,
    timeout: float,
) -> str:
    """Ask ``routes`` in turn for the body from byte ``delivered`` on and splice it to the
    client; a rest that is cut again is asked of the next route from where it broke.
    Returns the route that carried the end; raises ``ResumeRefused`` otherwise."""
    start = delivered
    while routes:
        plan = RoutePlan(routes, "resume", isolation=isolation)
        exchange = Exchange(client, _range_request(req, validator, start), plan, timeout)
        exchange.forward_interim = False
        try:
            result = await run_race(
                routes, exchange.attempt, race_after=None, may_race=lambda: False
            )
        except (HttpError, DialError) as err:
            raise ResumeRefused(f"resume at byte {start} failed: {err}") from None
        answer = take_answer(result, close_answer)
        if answer is None or not isinstance(answer, tuple):
            if answer is not None:
                close_answer(answer)
            raise ResumeRefused(f"no route answered the resume at byte {start}")
        origin, _key, resp, rbuf = answer
        try:
            refusal = _refusal(resp, validator, start, length)
            if refusal is not None:
                raise ResumeRefused(f"{origin.route} refused the resume at byte {start}: {refusal}")
            have = min(len(rbuf), length - start)
            if have:
                await client.send(bytes(rbuf[:have]))
                start += have
            try:
                if start < length:
                    await client.copy_exact(origin.sock, client.sock, length - start, timeout)
            except SourceEnded as cut:
                start += cut.moved
                names = [route.name for route in routes]
                routes = routes[names.index(origin.route) + 1 :]
                log.info("%s: the resumed answer was cut again at byte %d", req.host, start)
                continue
            return origin.route
        finally:
            origin.sock.close()
    raise ResumeRefused(f"no route left to resume the answer at byte {start}")
