"""Turn a mirror's answer back into the original site's: links, ``Location``, cookies.

Sans-IO: bytes and strings in, bytes and strings out; ``proxyd.mirror._mirror`` does the IO.

- ``HostMap(from_host, to_host)``: the host mapping of one ``[[mirror]]``, exact or a
  wildcard that keeps subdomain labels (``*.blog.example`` <-> ``*.blog-mirror.example``):
  ``to_mirror(host)``, ``to_original(host)`` (None when the host is not covered).
- ``LinkRewriter(hosts)``: a streaming rewriter of absolute links (``http://``,
  ``https://`` and protocol-relative ``//``) that point at a mirror host, back to the
  original host over plain ``http://`` (the browser fetched the page over plain HTTP
  through proxyd, and must keep coming that way: an ``https://`` link would be a CONNECT
  that cannot be rewritten). ``feed(data) -> bytes``, ``finish() -> bytes``. The output
  does not depend on where the input was cut into chunks, and memory stays bounded: at
  most one possible match (a few hundred bytes) is held back between chunks.
- ``rewrite_url(value, hosts)``, ``rewrite_set_cookie(value, hosts)``: header values.
- ``BodyDecoder(coding)``: streaming gzip/deflate decoding, output in bounded pieces.
- ``body_plan(content_type, content_encoding) -> BodyPlan``: what to do with a body.

Charset safety. Nothing is ever decoded to text: patterns are ASCII bytes anchored at
``//``. In UTF-8, the ISO-8859 and Windows code pages and the East Asian multi-byte
encodings (Shift_JIS, EUC, Big5, GBK/GB18030), a ``/`` byte is always the slash itself,
never part of a multi-byte character, and the host name bytes after it are then ASCII
too. The ``https:`` before it is only rewritten to ``http:`` when the byte in front of
it is ASCII (after a byte >= 0x80 an ASCII letter may be the second half of a
double-byte character; then only the host is rewritten). UTF-16/32 bodies (by charset
or byte-order mark) are passed through untouched.
"""

from __future__ import annotations

import enum
import re
import zlib
from collections.abc import Iterator

# Subdomain labels a wildcard mapping keeps: real names have few, and a bound keeps the
# longest possible match (the hold-back between chunks) small.
MAX_LABELS = 8
PIECE = 64 * 1024  # largest piece the decoder produces per step
_LABEL = rb"[a-z0-9_-]{1,63}\."
_UTF16_32 = re.compile(r"utf-?(16|32)|ucs-?[24]", re.IGNORECASE)
_BOMS = (b"\xff\xfe", b"\xfe\xff")
REWRITTEN_TYPES = frozenset({"text/html", "text/css", "application/xhtml+xml"})
DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})


class HostMap:
    def __init__(self, from_host: str, to_host: str) -> None:
        self.wildcard = from_host.startswith("*.")
        if self.wildcard != to_host.startswith("*."):
            raise ValueError("from and to must both be wildcards or both hosts")
        self._from = from_host.removeprefix("*.")
        self._to = to_host.removeprefix("*.")
        labels = rb"(?:" + _LABEL + rb"){0,%d}" % MAX_LABELS if self.wildcard else b""
        host = labels + re.escape(self._to.encode("ascii"))
        # The host ends where no further host character (or ".label") follows.
        self.pattern = re.compile(
            rb"(?P<scheme>(?<![\x80-\xff])https?:)?//(?P<host>"
            + host
            + rb")(?![a-z0-9_-]|\.[a-z0-9_-])",
            re.IGNORECASE,
        )
        host_max = (64 * MAX_LABELS if self.wildcard else 0) + len(self._to)
        # scheme + "//" + host + the two bytes the lookahead reads
        self.longest_match = len("https:") + 2 + host_max + 2

    def to_mirror(self, host: str) -> str | None:
        return _map(host.lower(), self._from, self._to, wildcard=self.wildcard)

    def to_original(self, host: str) -> str | None:
        return _map(host.lower(), self._to, self._from, wildcard=self.wildcard)


def _map(host: str, source: str, target: str, *, wildcard: bool) -> str | None:
    if host == source:
        return target
    if wildcard and host.endswith("." + source):
        return host[: -len(source)] + target
    return None


class LinkRewriter:
    def __init__(self, hosts: HostMap) -> None:
        self._hosts = hosts
        self._pattern = hosts.pattern
        self._hold = hosts.longest_match + 1
        self._pending = b""
        self._before = b""  # the last byte already emitted: the lookbehind reads it
        self._passthrough: bool | None = None  # decided on the first bytes (a BOM?)

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        return self._run(final=False)

    def finish(self) -> bytes:
        return self._run(final=True)

    def _run(self, *, final: bool) -> bytes:
        if self._passthrough is None:
            if len(self._pending) < 2 and not final:
                return b""
            self._passthrough = self._pending[:2] in _BOMS
        if self._passthrough:
            passed, self._pending = self._pending, b""
            return passed
        buf = self._before + self._pending
        start = len(self._before)
        limit = len(buf) if final else len(buf) - self._hold
        if limit <= start:
            return b""
        out: list[bytes] = []
        pos = start
        # A match starting before ``limit`` ends, lookahead included, inside ``buf``: it
        # is the same match the whole stream would give.
        for match in self._pattern.finditer(buf, start):
            if match.start() >= limit:
                break
            out.append(buf[pos : match.start()])
            out.append(self._replacement(match))
            pos = match.end()
        end = max(pos, limit)
        out.append(buf[pos:end])
        self._pending = buf[end:]
        self._before = buf[end - 1 : end]
        return b"".join(out)

    def _replacement(self, match: re.Match[bytes]) -> bytes:
        original = self._hosts.to_original(match["host"].decode("ascii"))
        assert original is not None  # the pattern only matches mapped hosts
        scheme = b"http:" if match["scheme"] else b""
        return scheme + b"//" + original.encode("ascii")


def rewrite_url(value: str, hosts: HostMap) -> str:
    """An absolute URL in a header (``Location``), rewritten like a link in a body."""
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        return value  # not a URL we could have produced a match in
    rewriter = LinkRewriter(hosts)
    return (rewriter.feed(raw) + rewriter.finish()).decode("ascii")


def rewrite_set_cookie(value: str, hosts: HostMap) -> str:
    """Point a mirror's cookie at the original host.

    ``Domain`` naming a mirror host becomes the original host; any other ``Domain`` is
    dropped (the browser would refuse it for the original host), leaving a host-only
    cookie. ``Secure`` is dropped because the browser talks plain HTTP to proxyd for
    this site and would refuse the cookie; ``SameSite=None`` needs ``Secure``, so it
    goes too (the browser's default, Lax, applies).
    """
    name_value, *attributes = value.split(";")
    kept = [name_value]
    for attribute in attributes:
        key, _, val = attribute.strip().partition("=")
        lowered = key.strip().lower()
        if lowered == "domain":
            original = hosts.to_original(val.strip().lstrip("."))
            if original is not None:
                kept.append(f" Domain={original}")
            continue
        if lowered == "secure" or (lowered == "samesite" and val.strip().lower() == "none"):
            continue
        kept.append(attribute)
    return ";".join(kept)


class DecodeError(Exception):
    """A compressed body that does not decode: it must not reach the client half-mangled."""


class BodyDecoder:
    """gzip (several members allowed) or deflate (zlib-wrapped, or raw as some servers
    send it), decoded as the bytes arrive; ``feed`` yields pieces of at most ``PIECE``."""

    def __init__(self, coding: str) -> None:
        self._gzip = coding in ("gzip", "x-gzip")
        self._head = b""  # deflate: the first two bytes tell zlib from raw
        self._inflater: zlib._Decompress | None = (
            zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None
        )
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._inflater is None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(data) else -15)
        inflater = self._inflater
        while data or not inflater.eof:
            try:
                # Bounded output per call: a small bomb cannot become a huge buffer.
                piece = inflater.decompress(data, PIECE)
            except zlib.error as exc:
                raise DecodeError(str(exc)) from None
            self._started = True
            data = inflater.unconsumed_tail
            if piece:
                yield piece
            if inflater.eof:
                data = inflater.unused_data
                if not data:
                    return
                if not self._gzip:
                    raise DecodeError("data after the end of the deflate stream")
                self._inflater = inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif not data and len(piece) < PIECE:
                return

    def finish(self) -> None:
        if self._inflater is None:
            if self._head:
                raise DecodeError("truncated compressed body")
            return
        if self._started and not self._inflater.eof:
            raise DecodeError("truncated compressed body")


def _zlib_header(head: bytes) -> bool:
    return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


class BodyPlan(enum.Enum):
    PASS = "pass"  # bytes through untouched, with their Content-Encoding
    REWRITE = "rewrite"  # identity body: rewrite links
    DECODE_REWRITE = "decode"  # gzip/deflate: decode, rewrite, send as identity


def body_plan(content_type: str | None, content_encoding: str | None) -> BodyPlan:
    """The documented rule: HTML and CSS are rewritten; gzip/deflate bodies of those are
    decoded first and sent uncompressed; any other coding (br, zstd, stacked codings)
    and UTF-16/32 text pass through unmodified; other types are never touched."""
    if content_type is None:
        return BodyPlan.PASS
    media, _, params = content_type.partition(";")
    if media.strip().lower() not in REWRITTEN_TYPES or _UTF16_32.search(params):
        return BodyPlan.PASS
    coding = (content_encoding or "identity").strip().lower()
    if coding in ("", "identity"):
        return BodyPlan.REWRITE
    if coding in DECODABLE:
        return BodyPlan.DECODE_REWRITE
    return BodyPlan.PASS
