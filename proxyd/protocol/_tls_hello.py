"""Reading the first TLS flight, sans-IO: what detection and desync need of a hello.

Nothing is decrypted or verified: these read the cleartext ClientHello a client sends and
the ServerHello (or alert) that answers it, tolerating fragments and truncation (a
missing field is None, never an exception).

API::

    HANDSHAKE, ALERT          record content types; CONTENT_TYPES: every valid one
    RECORD_HEADER             bytes of a record header (type, version, length)
    is_record(data, content_type) -> bool      does ``data`` start with such a record
    sni_from_client_hello(data) -> str | None
    client_session_id(data) -> bytes | None    legacy_session_id of a ClientHello
    server_hello(data) -> ServerHello | None   its session_id and selected version
"""

from __future__ import annotations

from dataclasses import dataclass

HANDSHAKE, ALERT = 0x16, 0x15
CONTENT_TYPES = range(0x14, 0x19)  # change_cipher_spec .. heartbeat
RECORD_HEADER = 5
_CLIENT_HELLO, _SERVER_HELLO = 1, 2
_EXT_SERVER_NAME, _EXT_SUPPORTED_VERSIONS = 0, 43


@dataclass(frozen=True, slots=True)
class ServerHello:
    session_id: bytes  # the legacy_session_id it echoed (or not)
    version: int | None  # from supported_versions (TLS 1.3); None for older servers


class _Truncated(Exception):
    """The bytes end (or lie) before the field we need."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise _Truncated
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.uint(length_bytes))

    def take_available(self, n: int) -> bytes:
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk

    def at_end(self) -> bool:
        return self._pos >= len(self._data)


def is_record(data: bytes, content_type: int) -> bool:
    return len(data) >= 3 and data[0] == content_type and data[1] == 0x03


def _handshake_message(data: bytes, msg_type: int) -> _Reader:
    """The body of the first handshake message, reassembled across records.

    A ClientHello may be split over several records (large post-quantum key shares,
    or a record-splitting desync trick), so fragments are joined; whatever is missing
    at the end surfaces as ``_Truncated`` when a field is read.
    """
    fragments = bytearray()
    records = _Reader(data)
    header = records.take_available(RECORD_HEADER)
    while len(header) == RECORD_HEADER and header[0] == HANDSHAKE:
        fragments += records.take_available(int.from_bytes(header[3:5], "big"))
        header = records.take_available(RECORD_HEADER)
    message = _Reader(bytes(fragments))
    if message.uint(1) != msg_type:
        raise _Truncated
    body_length = message.uint(3)
    return _Reader(bytes(fragments[4 : 4 + body_length]))


def _client_hello_after_session_id(data: bytes) -> tuple[bytes, _Reader]:
    """(legacy_session_id, the rest of the ClientHello); raises _Truncated."""
    hello = _handshake_message(data, _CLIENT_HELLO)
    hello.take(2 + 32)  # legacy_version, random
    return hello.vector(1), hello


def _extensions(message: _Reader) -> dict[int, bytes]:
    if message.at_end():
        return {}
    extensions = {}
    block = _Reader(message.vector(2))
    while not block.at_end():
        ext_type = block.uint(2)
        extensions[ext_type] = block.vector(2)
    return extensions


def sni_from_client_hello(data: bytes) -> str | None:
    """The server_name of a (possibly fragmented or truncated) ClientHello, if present."""
    try:
        _, hello = _client_hello_after_session_id(data)
        hello.vector(2)  # cipher_suites
        hello.vector(1)  # legacy_compression_methods
        names = _Reader(_Reader(_extensions(hello)[_EXT_SERVER_NAME]).vector(2))
        while not names.at_end():
            name_type, name = names.uint(1), names.vector(2)
            if name_type == 0:  # host_name
                text = name.decode("ascii").lower()
                return text if text and text.isprintable() and " " not in text else None
    except (_Truncated, KeyError, UnicodeDecodeError):
        pass
    return None


def client_session_id(data: bytes) -> bytes | None:
    try:
        session_id, _ = _client_hello_after_session_id(data)
    except _Truncated:
        return None
    return session_id


def server_hello(data: bytes) -> ServerHello | None:
    try:
        hello = _handshake_message(data, _SERVER_HELLO)
        hello.take(2 + 32)  # legacy_version, random
        session_id = hello.vector(1)
        hello.take(2 + 1)  # cipher_suite, legacy_compression_method
        selected = _extensions(hello).get(_EXT_SUPPORTED_VERSIONS)
    except _Truncated:
        return None
    version = int.from_bytes(selected, "big") if selected and len(selected) == 2 else None
    return ServerHello(session_id, version)
