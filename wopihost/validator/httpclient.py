"""The HTTP client of wopihost's tools that call a host (`wopihost replay`, the validator): requests' Session,
except that it never sends a request on a connection that has idled for more than `IDLE_SECONDS`.

A host closes a kept-alive connection once it has idled for the host's keepalive (gunicorn's default is 2 s,
wopihost's 5 s, nginx's 75 s), and a request a client sends on it just then is lost without an answer. A client
may send it again only if it is idempotent (RFC 9112, 9.3.1), which a POST, every WOPI operation, is not, and
requests sends nothing again. So after a pause near the host's keepalive (a recording's gap replayed at its
recorded speed, a validator test's delay) the tool would now and then report "no answer" where the host did
nothing wrong. A new connection after a pause costs a handshake, and only after a pause.
"""

from __future__ import annotations

import time

import requests

IDLE_SECONDS = 1.0  # below any host's keepalive that a client can expect (gunicorn's 2 s is the shortest common)


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
