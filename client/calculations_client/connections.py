"""The connections of `Client`: http.client's, kept alive, shared by threads. It is the
lightest HTTP client Python has: through urllib3 a create cost 150 us more CPU, and the
benchmark holds the sync client to 0.8 of a raw http.client loop."""

from __future__ import annotations

import gzip
import http.client
import select
import threading
from urllib.parse import urlsplit

KEPT = 16  # idle connections kept for reuse; a busier moment opens more, then closes them


class Connections:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self.host, self.port, self.timeout = parts.hostname or "", parts.port, timeout
        self.prefix = parts.path  # a service served under a path
        self.idle: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()

    def request(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str], read: float
    ) -> tuple[int, str | None, bytes]:
        """The status, the Retry-After and the body (gzip undone) of one request. Raises
        OSError or http.client.HTTPException when no answer came."""
        conn = self.take()
        try:
            if conn.sock is None:
                conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(read)
            conn.request(method, self.prefix + target, body, headers)
            answer = conn.getresponse()
            data = answer.read()
        except BaseException:
            conn.close()
            raise
        if answer.getheader("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        if answer.will_close:
            conn.close()
        else:
            self.give(conn)
        return answer.status, answer.getheader("Retry-After"), data

    def take(self) -> http.client.HTTPConnection:
        with self.lock:
            while self.idle:
                conn = self.idle.pop()
                if not closed_by_peer(conn):
                    return conn
                conn.close()
        return self.kind(self.host, self.port, timeout=self.timeout)

    def give(self, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            if len(self.idle) < KEPT:
                self.idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


def closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle connection that can be read from has been closed by the service (it closes
    those idle for CLIENT_TIMEOUT): a request sent on it would be lost."""
    if conn.sock is None:
        return True
    readable, _, _ = select.select([conn.sock], [], [], 0)
    return bool(readable)
