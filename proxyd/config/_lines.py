"""Find the line where a key path is defined in a TOML text, for error messages.

Private to ``proxyd.config._config``. ``tomllib`` reports lines only for syntax errors, so
``KeyLines(text).line_of(("upstream", 1, "url"))`` rescans text that ``tomllib`` has
already accepted: table headers (``[[a]]`` counted per array), ``key =`` lines, dotted
and quoted keys, array elements and inline tables. A path that is not in the text (a
missing key) resolves to its closest defined parent, e.g. the ``[[upstream]]`` header.
Best effort: if the scanner meets something it does not understand it keeps what it has.
"""

from __future__ import annotations

import bisect
import contextlib
import tomllib

KeyPath = tuple[str | int, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_VALUE_END = frozenset(",]}#\r\n")


class KeyLines:
    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._newlines = [index for index, char in enumerate(text) if char == "\n"]
        self._lines: dict[KeyPath, int] = {}
        self._array_lengths: dict[KeyPath, int] = {}  # arrays of tables seen so far
        # Should we misread text tomllib accepted, keep the lines found so far.
        with contextlib.suppress(IndexError, ValueError, tomllib.TOMLDecodeError):
            self._document()

    def line_of(self, path: KeyPath) -> int | None:
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None

    def _record(self, path: KeyPath, pos: int) -> None:
        line = bisect.bisect_left(self._newlines, pos) + 1
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], line)

    def _peek(self, count: int = 1) -> str:
        return self._text[self._pos : self._pos + count]

    def _skip_blank(self, *, newlines: bool) -> None:
        text = self._text
        while self._pos < len(text):
            char = text[self._pos]
            if char == "#":
                end = text.find("\n", self._pos)
                self._pos = len(text) if end < 0 else end
            elif char in " \t" or (newlines and char in "\r\n"):
                self._pos += 1
            else:
                return

    def _document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip_blank(newlines=True)
            if self._pos >= len(self._text):
                return
            start = self._pos
            if self._peek(2) == "[[":
                self._pos += 2
                keys = self._key()
                array = (*self._concrete(keys[:-1]), keys[-1])
                index = self._array_lengths.get(array, 0)
                self._array_lengths[array] = index + 1
                table = (*array, index)
                self._pos += 2
            elif self._peek() == "[":
                self._pos += 1
                table = self._concrete(self._key())
                self._pos += 1
            else:
                self._key_value(table)
                continue
            self._record(table, start)

    def _concrete(self, keys: KeyPath) -> KeyPath:
        """``[upstream.x]`` inside the third ``[[upstream]]`` means ``upstream[2].x``."""
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            if path in self._array_lengths:
                path = (*path, self._array_lengths[path] - 1)
        return path

    def _key_value(self, table: KeyPath) -> None:
        start = self._pos
        path = (*table, *self._key())
        self._record(path, start)
        self._skip_blank(newlines=False)
        self._pos += 1  # "="
        self._skip_blank(newlines=False)
        self._value(path)

    def _key(self) -> KeyPath:
        parts: list[str] = []
        while True:
            self._skip_blank(newlines=False)
            if self._peek() in ("'", '"'):
                start = self._pos
                self._string()
                # Let tomllib decode the escapes, so the key is exactly what the dict holds.
                parts.append(next(iter(tomllib.loads(self._text[start : self._pos] + " = 0"))))
            else:
                start = self._pos
                while self._peek() and self._peek() in _BARE_KEY_CHARS:
                    self._pos += 1
                if self._pos == start:
                    raise ValueError("expected a key")
                parts.append(self._text[start : self._pos])
            self._skip_blank(newlines=False)
            if self._peek() != ".":
                return tuple(parts)
            self._pos += 1

    def _value(self, path: KeyPath) -> None:
        char = self._peek()
        if char in ("'", '"'):
            self._string()
        elif char == "[":
            self._array(path)
        elif char == "{":
            self._inline_table(path)
        else:
            while self._peek() and self._peek() not in _VALUE_END:
                self._pos += 1

    def _array(self, path: KeyPath) -> None:
        self._pos += 1
        index = 0
        while True:
            self._skip_blank(newlines=True)
            if self._peek() == "]":
                self._pos += 1
                return
            start = self._pos
            self._record((*path, index), start)
            self._value((*path, index))
            if self._pos == start:
                raise ValueError("unexpected character in an array")
            index += 1
            self._skip_blank(newlines=True)
            if self._peek() == ",":
                self._pos += 1

    def _inline_table(self, path: KeyPath) -> None:
        self._pos += 1
        while True:
            self._skip_blank(newlines=False)
            if self._peek() == "}":
                self._pos += 1
                return
            self._key_value(path)
            self._skip_blank(newlines=False)
            if self._peek() == ",":
                self._pos += 1

    def _string(self) -> None:
        text, quote = self._text, self._peek()
        if self._peek(3) == quote * 3:
            end = text.index(quote * 3, self._pos + 3) if quote == "'" else self._find_quote(3)
            self._pos = end + 3
            # A multi-line string may end with up to two quotes of its own before the closer.
            for _ in range(2):
                if self._peek() == quote:
                    self._pos += 1
        elif quote == "'":
            self._pos = text.index("'", self._pos + 1) + 1
        else:
            self._pos = self._find_quote(1) + 1

    def _find_quote(self, width: int) -> int:
        """Index of the closing (triple) double quote, skipping backslash escapes."""
        text, pos = self._text, self._pos + width
        while True:
            if text[pos] == "\\":
                pos += 2
            elif text.startswith('"' * width, pos):
                return pos
            else:
                pos += 1
