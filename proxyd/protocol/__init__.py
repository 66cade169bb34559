"""Sans-IO wire protocols: bytes in, events or bytes out, no sockets, no clock, no asyncio.

HTTP/1 heads and bodies (``http1``, ``http1_encode``, ``BodyScanner``), the SOCKS4/4a/5
server handshake, the client handshakes proxyd speaks to upstreams, the TLS
ClientHello reader (``tls_hello``), and the name a transparent connection's first bytes
carry (``read_name``).
"""

from proxyd.protocol import _desync as desync
from proxyd.protocol import _fasthead as fasthead
from proxyd.protocol import _http1 as http1
from proxyd.protocol import _http1_encode as http1_encode
from proxyd.protocol import _tls_hello as tls_hello
from proxyd.protocol._first_name import (
    MAX_FIRST_BYTES,
    NEED_MORE,
    FirstName,
    Named,
    Nameless,
    read_name,
)
from proxyd.protocol._http1 import BodyKind, Framing, HttpError, Request, Response
from proxyd.protocol._http1_body import BodyScanner
from proxyd.protocol._http1_encode import FRAMING_FIELDS, HOP_BY_HOP
from proxyd.protocol._socks import ConnectRequest, HandshakeFailed, SendBytes, SocksHandshake
from proxyd.protocol._tls_hello import HANDSHAKE, RECORD_HEADER, sni_from_client_hello
from proxyd.protocol._upstream_handshake import (
    ClientHandshake,
    HttpConnectHandshake,
    Socks4Handshake,
    Socks5Handshake,
    Target,
    upstream_label,
)

__all__ = [
    "FRAMING_FIELDS",
    "HANDSHAKE",
    "HOP_BY_HOP",
    "MAX_FIRST_BYTES",
    "NEED_MORE",
    "RECORD_HEADER",
    "BodyKind",
    "BodyScanner",
    "ClientHandshake",
    "ConnectRequest",
    "FirstName",
    "Framing",
    "HandshakeFailed",
    "HttpConnectHandshake",
    "HttpError",
    "Named",
    "Nameless",
    "Request",
    "Response",
    "SendBytes",
    "Socks4Handshake",
    "Socks5Handshake",
    "SocksHandshake",
    "Target",
    "desync",
    "fasthead",
    "http1",
    "http1_encode",
    "read_name",
    "sni_from_client_hello",
    "tls_hello",
    "upstream_label",
]
