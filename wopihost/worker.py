"""gunicorn's threaded worker, made to hold up against slow clients without a proxy in front.

gunicorn's gthread worker gives each connection a thread as soon as it has any data, and that thread then
waits for the rest of the request head, the body and the client's reading, however slowly they come: eight
clients sending a header byte every half second took every thread of a default `wopihost serve`. Here:

* A request head (request line and headers) is read by the worker's event loop, which holds no thread for
  it; a thread gets the request once its head is complete. A head not complete within the header timeout
  (`WOPIHOST_HEADER_TIMEOUT`) is dropped.
* A thread reading a body or writing a response gives up on a client that sends or reads nothing for the
  idle timeout (`WOPIHOST_IDLE_TIMEOUT`): the body read fails (408), a stalled reader's connection is closed.
* A worker accepts connections only while it has a thread free, so the next connection goes to a worker
  that can serve it instead of queueing behind slow ones.

So a slow head costs a socket, and only a slow body or a stalled reader holds a thread, for as long as it
keeps making progress. Heads over TLS or HTTP/2 are left to gunicorn (wopihost serves plain HTTP/1.1
behind its proxy).
"""

from __future__ import annotations

import errno
import socket
import time
from functools import partial
from selectors import EVENT_READ

from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

from .config import Settings

HEAD_END = (b"\r\n\r\n", b"\n\n")


class IdleTimeoutSocket(socket.socket):
    """A client socket on which gunicorn's "blocking" means "blocking, up to the idle timeout".

    gunicorn's threads set the socket blocking before each request, which would wait forever. A send that
    times out is reported as the broken pipe it amounts to (gunicorn closes the connection quietly); a
    receive that times out raises TimeoutError, which the request body turns into a 408.
    """

    __slots__ = ()
    idle_timeout: float | None = None

    @classmethod
    def adopt(cls, sock: socket.socket) -> "IdleTimeoutSocket":
        return cls(sock.family, sock.type, sock.proto, fileno=sock.detach())

    def setblocking(self, flag: bool) -> None:
        self.settimeout(self.idle_timeout if flag else 0.0)

    def send(self, *args, **kwargs):
        with _stalled_reader():
            return super().send(*args, **kwargs)

    def sendall(self, *args, **kwargs):
        with _stalled_reader():
            return super().sendall(*args, **kwargs)

    def sendfile(self, *args, **kwargs):
        with _stalled_reader():
            return super().sendfile(*args, **kwargs)


class _stalled_reader:
    def __enter__(self) -> None:
        pass

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None and issubclass(kind, TimeoutError):
            raise BrokenPipeError(errno.EPIPE, "the client read nothing for the idle timeout") from None


class Worker(ThreadWorker):
    """`worker_class` for gunicorn: see the module's notes."""

    def init_process(self) -> None:
        settings = Settings.from_env()
        self.header_timeout = settings.header_timeout
        IdleTimeoutSocket.idle_timeout = settings.idle_timeout
        # Past this much, gunicorn's parser refuses a head anyway (a limit of 0 means none: take 64 KiB).
        cfg = self.cfg
        self.max_head = (cfg.limit_request_line or 65536) + (cfg.limit_request_fields or 32768) * (
            (cfg.limit_request_field_size or 65536) + 2) + 4
        self.heads: dict[TConn, float] = {}  # connections whose head is being read -> deadline
        self.busy = 0  # threads serving a request
        super().init_process()

    def _buffers_heads(self, conn: TConn) -> bool:
        return not self.cfg.is_ssl and not negotiation.prior_knowledge_allowed(self.cfg, conn.client)

    # -- connections: accepted only with a thread free, heads read by the event loop

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and self.busy < self.cfg.threads)

    def accept(self, listener) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, IdleTimeoutSocket.adopt(client), address, listener.getsockname())
        if self._buffers_heads(conn):
            self._read_head(conn)
        else:
            self.enqueue_req(conn)

    def on_client_socket_readable(self, conn: TConn, client) -> None:
        """A kept-alive connection has its next request coming: read its head here too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        if self._buffers_heads(conn):
            self._read_head(conn)
        else:
            self.enqueue_req(conn)

    def _read_head(self, conn: TConn) -> None:
        conn.head = bytearray()
        conn.sock.setblocking(False)
        self.heads[conn] = time.monotonic() + self.header_timeout
        self.poller.register(conn.sock, EVENT_READ, partial(self._on_head_data, conn))

    def _on_head_data(self, conn: TConn, _sock) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its request
            self._drop_head(conn)
            return
        conn.head += data
        tail = max(0, len(conn.head) - len(data) - 3)  # where a head end the new data completes can start
        if any(conn.head.find(end, tail) >= 0 for end in HEAD_END) or len(conn.head) >= self.max_head:
            self.poller.unregister(conn.sock)
            del self.heads[conn]
            conn.data_ready = True  # gunicorn must not wait for data: it is in conn.head
            self.enqueue_req(conn)

    def _drop_head(self, conn: TConn) -> None:
        self.poller.unregister(conn.sock)
        del self.heads[conn]
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also drop heads past their deadline (all of them when the worker stops)."""
        super().murder_pending()
        now = time.monotonic()
        for conn, deadline in list(self.heads.items()):
            if deadline <= now or not self.alive:
                self._drop_head(conn)

    # -- threads

    def enqueue_req(self, conn: TConn) -> None:
        self.busy += 1
        super().enqueue_req(conn)

    def finish_request(self, conn: TConn, fs) -> None:
        self.busy -= 1
        super().finish_request(conn, fs)

    def handle(self, conn: TConn):
        head = getattr(conn, "head", None)
        if head is not None:  # give the parser the head the event loop read
            conn.head = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(bytes(head))
        return super().handle(conn)
