"""The HTTP client of wopihost's tools that call a host (`wopihost replay`, the validator): requests' Session,
except that it never sends a request on a connection that has idled for more than `IDLE_SECONDS`.

A host closes a kept-alive connection once it has idled for the host's keepalive (gunicorn's default is 2 s,
wopihost's 5 s, nginx's 75 s), and a request a client sends on it just then is lost without an answer. A client
may send it again only if it is idempotent (RFC 9112, 9.3.1), which a POST, every WOPI operation, is not, and
requests sends nothing again. So after a pause near the host's keepalive (a recording's gap replayed at its
recorded speed, a validator test's delay) the tool would now and then report "no answer" where the host did
nothing wrong. A new connection after a pause costs a handshake, and only after a pause.

`body` reads an answer within the tool's timeout: requests' timeout is for each read of the socket, so a host
that sends its answer a byte at a time would hold the tool for as long as it likes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import requests

IDLE_SECONDS = 1.0  # below any host's keepalive that a client can expect (gunicorn's 2 s is the shortest common)
PIECE = 1 << 16


class Client(requests.Session):
    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        super().__init__()
        self.idle_seconds = idle_seconds
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


def body(reply: requests.Response, deadline: float, decode_content: bool = True) -> Iterator[bytes]:
    """The body of `reply` (sent with stream=True), piece by piece, until `deadline` (time.monotonic()): each
    read of the socket waits only for what is left, and ReadTimeout once nothing is."""
    stream = reply.raw

    def wait_no_longer() -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise requests.exceptions.ReadTimeout("the answer's body did not all come within the timeout")
        sock = getattr(stream.connection, "sock", None)
        if sock is not None:
            sock.settimeout(left)

    while True:
        wait_no_longer()
        # read1: what has come, rather than wait for a whole piece, which a byte at a time would never end
        piece = stream.read1(PIECE, decode_content=decode_content)
        if not piece:
            return
        yield piece
