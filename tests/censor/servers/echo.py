"""An echo server for the lab: ``echo.py tcp|udp ADDRESS PORT``.

Every peer is printed (``peer IP``) before its bytes are echoed back, so a test can tell
which address a connection came from; TCP echoes until the peer closes.
"""

from __future__ import annotations

import socket
import sys
import threading


def _serve_tcp(conn: socket.socket, peer: str) -> None:
    print(f"peer {peer}", flush=True)
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def main() -> None:
    proto, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if proto == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((address, port))
        while True:
            data, peer = sock.recvfrom(65536)
            print(f"peer {peer[0]}", flush=True)
            sock.sendto(data, peer)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(16)
    while True:
        conn, peer = sock.accept()
        threading.Thread(target=_serve_tcp, args=(conn, peer[0]), daemon=True).start()


if __name__ == "__main__":
    main()
