"""The HTTP client of wopihost's tools that call a host (`wopihost replay`, the validator): requests' Session,
except that it never sends a request on a connection that has idled for more than `IDLE_SECONDS`.

A host closes a kept-alive connection once it has idled for the host's keepalive (gunicorn's default is 2 s,
wopihost's 5 s, nginx's 75 s), and a request a client sends on it just then is lost without an answer. A client
may send it again only if it is idempotent (RFC 9112, 9.3.1), which a POST, every WOPI operation, is not, and
requests sends nothing again. So after a pause near the host's keepalive (a recording's gap replayed at its
recorded speed, a validator test's delay) the tool would now and then report "no answer" where the host did
nothing wrong. A new connection after a pause costs a handshake, and only after a pause.

The timeout bounds the whole exchange, the request sent and the answer read, head and body: requests' timeouts
are for each write and each read of the socket, so a host that read the request's body, or sent its answer (its
status line, a header, the body), a little at a time would hold the tool for as long as it liked. Each write of
the request and each read of the answer waits only for what is left of the timeout from when the request began
(the connect timeout for the writes, the read timeout for the reads: the tools give one for both).

`read` keeps an answer's body only up to a limit, and its size and SHA-256 whatever its size: a host that answers
with gigabytes costs the tool no memory.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import requests
from requests.adapters import HTTPAdapter
from urllib3 import connection, connectionpool

IDLE_SECONDS = 1.0  # below any host's keepalive that a client can expect (gunicorn's 2 s is the shortest common)
PIECE = 1 << 16
KEEP_LIMIT = 16 << 20  # the most of an answer's body kept for the tools' checks (JSON, text, frames, a document)
INTERRUPTED = 130  # the tools' exit status when Ctrl-C stopped them: 128 + SIGINT, as a shell gives such a command


class Client(requests.Session):
    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        super().__init__()
        self.idle_seconds = idle_seconds
        for prefix in ("https://", "http://"):
            self.mount(prefix, _Adapter())
        self._last = time.monotonic()

    def send(self, request, **kwargs):
        if time.monotonic() - self._last > self.idle_seconds:
            # the pooled connections: one another thread is using is closed when it is handed back instead
            for adapter in self.adapters.values():
                adapter.close()
        try:
            return super().send(request, **kwargs)
        finally:
            # when the answer's head has come: a body read after that (stream=True) counts as idle time, so
            # a connection may be let go sooner than it needs to be, never later
            self._last = time.monotonic()


def body(reply: requests.Response, decode_content: bool = True) -> Iterator[bytes]:
    """The body of `reply` (sent with stream=True), piece by piece; a ReadTimeoutError once the timeout is over."""
    while True:
        # read1: what has come, rather than wait for a whole piece, which a byte at a time would never end
        piece = reply.raw.read1(PIECE, decode_content=decode_content)
        if not piece:
            return
        yield piece


@dataclass(frozen=True)
class Read:
    size: int
    sha256: str
    data: bytes | None  # the whole body, None when it is longer than the limit it was read with


def read(reply: requests.Response, limit: int = KEEP_LIMIT, decode_content: bool = True) -> Read:
    """The body of `reply` (sent with stream=True): kept if it is no longer than `limit`, hashed and counted."""
    digest, size, kept = hashlib.sha256(), 0, bytearray()
    for piece in body(reply, decode_content):
        digest.update(piece)
        size += len(piece)
        if size <= limit:
            kept += piece
        elif kept:
            kept = bytearray()  # (let go as soon as it is too long)
    return Read(size, digest.hexdigest(), bytes(kept) if size <= limit else None)


class _Answer(http.client.HTTPResponse):
    """An answer each read of which waits only for what is left of the read timeout (which urllib3 has just put
    on the socket) counted from `begun`, when the request began: the timeout bounds the whole exchange, not each
    read."""

    def __init__(self, sock: socket.socket, *args, begun: float | None = None, **kwargs) -> None:
        timeout = sock.gettimeout()
        if timeout is not None:
            deadline = (time.monotonic() if begun is None else begun) + timeout
            sock = cast(socket.socket, _Deadline(sock, deadline))  # (only its makefile is used)
        super().__init__(sock, *args, **kwargs)


class _Deadline:
    """A socket as http.client reads an answer from it (makefile), with reads that end at `deadline`."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline

    def makefile(self, mode: str = "rb") -> io.BufferedReader:  # http.client asks for "rb" only
        return io.BufferedReader(_DeadlineReads(self.sock, self.sock.makefile("rb", buffering=0), self.deadline))


class _DeadlineReads(io.RawIOBase):
    def __init__(self, sock: socket.socket, raw: socket.SocketIO, deadline: float) -> None:
        self.sock, self.raw, self.deadline = sock, raw, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            # what a read that waits too long raises: urllib3 makes it a ReadTimeoutError, requests a ReadTimeout
            raise TimeoutError("the answer did not all come within the timeout")
        self.sock.settimeout(left)
        return self.raw.readinto(buffer)

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()  # (the socket's own file, which lets the socket close once the connection closes it)
        super().close()


class _Timed(connection.HTTPConnection):
    """A connection whose request's writes end at the connect timeout (which urllib3 has put on it for the
    request) counted from when the request began, and whose answer's reads at the read timeout counted from then."""

    _begun: float | None = None

    def request(self, *args, **kwargs) -> None:
        self._begun = time.monotonic()
        super().request(*args, **kwargs)

    def send(self, data) -> None:
        if self.sock is None and self.auto_open:
            self.connect()  # (as http.client would: the deadline goes on the socket it sends on)
        if self._begun is not None and self.timeout is not None and self.sock is not None:
            left = self._begun + self.timeout - time.monotonic()
            if left <= 0:  # what a write that waits too long raises
                raise TimeoutError("the request could not all be sent within the timeout")
            self.sock.settimeout(left)
        super().send(data)

    # http.client's is a class it calls with the socket; a method is called alike, and gives the answer its start
    def response_class(self, sock: socket.socket, *args, **kwargs) -> _Answer:  # type: ignore[override]
        return _Answer(sock, *args, begun=self._begun, **kwargs)


class _HTTPConnection(_Timed):
    pass


class _HTTPSConnection(_Timed, connection.HTTPSConnection):
    pass


# named as urllib3's pools are, which name themselves in the messages the tools report ("HTTPConnectionPool(host=
# ...): Read timed out.")
class HTTPConnectionPool(connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class HTTPSConnectionPool(connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}
