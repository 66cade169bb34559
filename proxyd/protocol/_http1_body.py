"""Where an HTTP/1.1 message body ends, for bodies forwarded verbatim (sans-IO).

API::

    BodyScanner(framing).feed(data) -> int    bytes of data that belong to the body; .done

Content-Length bodies are counted, until-close ones never end, chunked ones are checked
line by line (RFC 9112 7.1): malformed framing raises ``HttpError(400)``.
"""

from __future__ import annotations

import re

from proxyd.protocol._http1 import BodyKind, Framing, HttpError

__all__ = ["BodyScanner"]


_CHUNK_LINE_LIMIT = 8192
_TRAILER_LIMIT = 65536
_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:[ \t]*;[ \t]*[-!#$%&'*+.^_`|~0-9A-Za-z]+"
    rb"(?:[ \t]*=[ \t]*(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+"
    rb'|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))?)*\r\n'
)
_TRAILER_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t \x21-\x7e\x80-\xff]*\r\n")
_SIZE, _DATA, _DATA_CR, _DATA_LF, _TRAILER = range(5)


class BodyScanner:
    """Finds the end of a body whose bytes are forwarded verbatim.

    Chunk data is skipped by arithmetic; only size lines and trailers are looked at, so a
    large chunk costs the same as a small one. Malformed chunked framing -> HttpError(400).
    """

    __slots__ = ("_kind", "_line", "_remaining", "_state", "_trailer_bytes", "done")

    def __init__(self, framing: Framing) -> None:
        self._kind = framing.kind
        self._remaining = framing.length
        self._state = _SIZE
        self._line = b""
        self._trailer_bytes = 0
        self.done = framing.kind is BodyKind.NONE or (
            framing.kind is BodyKind.LENGTH and framing.length == 0
        )

    def feed(self, data: memoryview | bytes | bytearray) -> int:
        if self.done:
            return 0
        if self._kind is BodyKind.LENGTH:
            taken = min(len(data), self._remaining)
            self._remaining -= taken
            self.done = self._remaining == 0
            return taken
        if self._kind is BodyKind.UNTIL_CLOSE:
            return len(data)
        return self._feed_chunked(data)

    def _feed_chunked(self, data: memoryview | bytes | bytearray) -> int:
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == _DATA:
                taken = min(self._remaining, n - i)
                i += taken
                self._remaining -= taken
                if not self._remaining:
                    self._state = _DATA_CR
            elif state == _DATA_CR:
                if data[i : i + 2] == b"\r\n":  # the usual case, one step instead of two
                    i += 2
                    self._state = _SIZE
                    continue
                if data[i] != 13:
                    raise HttpError(400, "chunk data not followed by CRLF")
                i += 1
                self._state = _DATA_LF
            elif state == _DATA_LF:
                if data[i] != 10:
                    raise HttpError(400, "chunk data not followed by CRLF")
                i += 1
                self._state = _SIZE
            else:
                # A small window: size lines are short, and copying more would cost per chunk.
                window = bytes(data[i : i + 256])
                if state == _SIZE and not self._line:
                    whole_line = _SIZE_LINE.match(window)
                    if whole_line:  # fast path; anything unusual takes the general one below
                        i += whole_line.end()
                        self._remaining = int(whole_line[1], 16)
                        self._state = _DATA if self._remaining else _TRAILER
                        continue
                lf = window.find(b"\n")
                if lf < 0:
                    self._line += window
                    i += len(window)
                    if len(self._line) > _CHUNK_LINE_LIMIT:
                        raise HttpError(400, "chunk size or trailer line too long")
                    continue
                i += lf + 1
                line, self._line = self._line + window[: lf + 1], b""
                if len(line) > _CHUNK_LINE_LIMIT:
                    raise HttpError(400, "chunk size or trailer line too long")
                if state == _SIZE:
                    self._chunk_size_line(line)
                elif line == b"\r\n":
                    self.done = True
                    return i
                else:
                    self._trailer_line(line)
        return i

    def _chunk_size_line(self, line: bytes) -> None:
        match = _SIZE_LINE.fullmatch(line)
        if match is None:
            raise HttpError(400, "malformed chunk size line")
        self._remaining = int(match[1], 16)
        self._state = _DATA if self._remaining else _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        self._trailer_bytes += len(line)
        if self._trailer_bytes > _TRAILER_LIMIT:
            raise HttpError(400, "trailer section too large")
        if not _TRAILER_LINE.fullmatch(line):
            raise HttpError(400, "malformed trailer field")
