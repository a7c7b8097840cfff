"""gunicorn's threaded worker, made to hold up against slow clients without a proxy in front.

gunicorn's gthread worker gives each connection a thread as soon as it has any data, and that thread then
waits for the rest of the request head, the body and the client's reading, however slowly they come: eight
clients sending a header byte every half second took every thread of a default `wopihost serve`. Here:

* A request head (request line and headers) is read by the worker's event loop, which holds no thread for
  it; a thread gets the request once its head is complete. A head not complete within the header timeout
  (`WOPIHOST_HEADER_TIMEOUT`) is dropped; one longer than the loop buffers (`HEAD_BUFFER`) is refused (431)
  as soon as that much of it has come.
* A thread reading a body or writing a response gives up on a client that sends or reads nothing for the
  idle timeout (`WOPIHOST_IDLE_TIMEOUT`): the body read fails (408), a stalled reader's connection is closed.
* A file sent with sendfile (a download) that fills the socket is finished by the event loop as the client
  reads (`IdleTimeoutSocket.send_rest`), under the same idle timeout, and its thread goes on to other
  requests: with more connections than threads, each download no longer waits for a thread to stream it.
  (With no more connections than threads, and a client that reads as fast as it is sent, the thread goes on
  sending itself: `Worker._send_rest_here`.) What waits for its last byte (the body's close, the access
  line, a recording's reading of what was sent) then runs on the worker's closing thread, never in the loop.
* A worker accepts connections only while it has a thread free, so the next connection goes to a worker
  that can serve it instead of queueing behind slow ones; and it leaves a waiting client for a moment
  (`ACCEPT_FALLBACK_MS`) to another worker that serves fewer connections (`workerboard`), so that the
  connections, and the work, spread evenly between the workers.
* While a worker has no more connections than threads, a thread that has answered a kept-alive request
  waits a moment (`FOLLOW_ON_MS`) for the connection's next request and serves it itself, instead of handing
  the connection back to the event loop, which would hand the request to a thread again. With more
  connections than threads, a thread that has answered goes on to the next request waiting for a thread.
* A kept-alive connection whose next request arrives just as its keepalive runs out is served, where gunicorn
  would close it with the request unread (`Worker.murder_keepalived`).
* The connections of a listener on a loopback address (the nginx in front) get a congestion control that does
  not pace what they send (`use_congestion_control`): BBR's pacing costs CPU where nothing is congested.
* A connection that ends (Connection: close, a refused head, a response that failed mid-way) is closed by the
  event loop, which waits up to 2 s for the client to close in turn (`Worker._linger`), so that a reset does not
  cut off the last answer.

So a slow head, a slow download or a client that does not close costs a socket, and only a slow body or a slow
reader of a streamed response holds a thread, for as long as it keeps making progress. Heads and downloads over
TLS or HTTP/2 are left to gunicorn (wopihost serves plain HTTP/1.1 behind its proxy).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import os
import resource
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from datetime import timedelta
from functools import partial
from itertools import takewhile
from selectors import EVENT_READ, EVENT_WRITE, DefaultSelector
from typing import NamedTuple, cast

import sqlalchemy as sa
from gunicorn import util
from gunicorn.http.body import LengthReader
from gunicorn.http.errors import LimitRequestHeaders, ParseException
from gunicorn.http.wsgi import FileWrapper
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker  # type: ignore[attr-defined]  # gunicorn 27's; its stubs are older

from .app import App
from .body import BODY_FAILED
from .config import Settings, setting
from .httpdate import http_date
from .leader import Leader
from .prepared import compile_all
from .scratch import release_idle
from .workerboard import Board

# gunicorn's master imports this module, and with it the application's modules, before it builds the
# application (server.py) and forks the workers, which share all of it. The hot statements are compiled here
# too (prepared.compile_all), for the database the workers will use: the one the master's environment names
# (gunicorn's `raw_env` comes after this import; the workers then compile their own, as before this was done
# here). A URL that names no database SQLAlchemy knows, or a driver that is missing, is left to each
# worker to report as it starts.
with suppress(sa.exc.ArgumentError, ValueError, ImportError):  # ValueError: a port that is not a number
    compile_all(sa.create_engine(setting("DATABASE_URL", "sqlite://", str)).dialect)  # connects to nothing

# The worker that sweeps for the whole server (App.start): its lock's file is opened here, in the master, so that
# every worker it forks shares it.
SWEEPER = Leader()

# Every request writes an access line, and a log record looks up its caller's frame and its thread unless
# told not to (the logging HOWTO's "Optimization"); no format of gunicorn's or ours shows either.
logging._srcfile = None
logging.logThreads = False
logging.logMultiprocessing = False


# A worker whose threads have been idle this long gives their upload buffers' memory back (scratch.py).
IDLE_RELEASE_SECONDS = 0.5

# gunicorn formats every response's Date header anew (3% of a CheckFileInfo's CPU); see httpdate.py
util.http_date = http_date


class SettledConfig:
    """gunicorn's settings as a worker reads them, each looked up once. A Config looks a setting up through its
    table at every read, and a request reads some twenty (its parser's limits, the response's framing): 2% of a
    download's CPU. A worker's settings never change: a reload starts new workers."""

    def __init__(self, config) -> None:
        self._config = config

    def __getattr__(self, name: str):
        value = getattr(self._config, name)
        setattr(self, name, value)  # found in the instance from now on: __getattr__ is not called again
        return value


BOARD = Board()  # made here, in the master, so that every worker it forks shares it


class IdleTimeoutSocket(socket.socket):
    """A client socket on which gunicorn's "blocking" means "blocking, up to the idle timeout".

    gunicorn's threads set the socket blocking before each request, which would wait forever. The timeout
    bounds each wait, never a whole transfer: a slow but steady reader is served however long it takes. A
    send that times out is reported as the broken pipe it amounts to (gunicorn closes the connection
    quietly); a receive that times out raises TimeoutError, which the request body turns into a 408.

    It also counts what sendfile sends of the current response (`sendfile_sent`, None until it is used):
    gunicorn counts only what it writes itself, so its access log showed 0 bytes for a whole GetFile.

    And it sends a response's head with the start of its body. gunicorn writes the head and then each
    piece of the body with a send of its own: two TCP segments, and two wake-ups of the client, for a
    CheckFileInfo whose JSON would fit in the first; on loopback that second send was about a sixth of the
    server's CPU per request. So the head is held (`hold_head`, set for each response) and goes out in one
    write with the first piece of the body, ahead of a sendfile with MSG_MORE, or, for a response without a
    body, when the response is over (`end_response`).

    Its sends and sendfiles wait for the socket only when it is full: CPython's polled it before each one.

    And a sendfile that fills the socket may leave the rest to the worker's event loop (`may_hand_off`, set for
    a response whose body's close waits for it: `Worker.load_wsgi`), which carries it on as the client reads
    (`send_rest`), so that a download to a client slower than the disk holds no thread. What must wait until
    the last byte has gone (the body's close, the access line) is registered with `when_sent`.
    """

    __slots__ = ("sendfile_sent", "hold_head", "_held", "may_hand_off", "rest", "_when_sent")
    sendfile_sent: int | None
    hold_head: bool  # the next sendall is a response's head: hold it
    _held: bytes  # a response head not yet sent
    may_hand_off: bool
    rest: tuple[int, int, int] | None  # a sendfile handed off: (file descriptor, position, end)
    _when_sent: list[Callable[[], object]]
    idle_timeout: float | None = None

    @classmethod
    def adopt(cls, sock: socket.socket) -> IdleTimeoutSocket:
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.sendfile_sent, adopted.hold_head, adopted._held = None, False, b""
        adopted.may_hand_off, adopted.rest, adopted._when_sent = False, None, []
        return adopted

    def new_response(self) -> None:
        self.sendfile_sent, self.hold_head, self._held, self.may_hand_off = None, True, b"", False

    def end_response(self, *, failed: bool = False) -> None:
        """The response is over: a head still held (a response without a body: HEAD, 204, 304) is sent,
        unless the response failed, when gunicorn writes an error page or closes the connection."""
        self.hold_head = False
        if failed:
            self._held = b""
        else:
            self.send_held()

    def send_held(self, flags: int = 0) -> None:
        if self._held:
            held, self._held = self._held, b""
            self._send_all([held], flags)

    def setblocking(self, flag: bool) -> None:
        self.settimeout(self.idle_timeout if flag else 0.0)

    def settimeout(self, value: float | None) -> None:
        # gunicorn sets the same timeout again two or three times a request, and each is an ioctl that hands
        # the GIL over
        if value != self.gettimeout():
            super().settimeout(value)

    def send(self, data, flags: int = 0) -> int:
        self.send_held()
        return self._send_some([data], flags)

    def sendall(self, data, flags: int = 0) -> None:
        if self.hold_head:  # gunicorn writes a response's head with sendall before anything else of it
            self.hold_head, self._held = False, bytes(data)
            return
        held, self._held = self._held, b""
        self._send_all([held, data] if held else [data], flags)

    def _send_all(self, buffers: list, flags: int) -> None:
        # socket.sendall's timeout is a deadline for all of `data` (1 MiB pieces): one send at a time instead.
        views = [memoryview(b).cast("B") for b in buffers]
        while views:
            sent = self._send_some(views, flags)
            while views and sent >= len(views[0]):
                sent -= len(views.pop(0))
            if views:
                views[0] = views[0][sent:]

    def _send_some(self, buffers: list, flags: int) -> int:
        if not flags:
            # On a socket with a timeout CPython polls before every send, even one the buffer has room for (nearly
            # all): a syscall, and a handover of the GIL, for each response. Tried straight away, it only waits
            # when the buffer is full.
            try:
                return os.writev(self.fileno(), buffers)
            except BlockingIOError:
                pass
        try:
            return self.sendmsg(buffers, (), flags)
        except TimeoutError:
            raise BrokenPipeError(errno.EPIPE, "the client read nothing for the idle timeout") from None

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        # The held head leaves with the file's first bytes; without them (nothing to send) MSG_MORE would
        # leave it waiting in the kernel.
        self.send_held(socket.MSG_MORE if count else 0)
        # socket.sendfile reads the file's size, polls before each os.sendfile and seeks the file afterwards: five
        # syscalls a response that gunicorn, which gives the count and seeks the file itself, has no use for.
        # Here the socket is only waited for when it is full. (Only real files come here: storage.whole_file.)
        before = self.sendfile_sent = self.sendfile_sent or 0
        source = file.fileno()
        end = os.fstat(source).st_size if count is None else offset + count
        self.rest = (source, offset, end)
        if not self.send_rest():
            if self.may_hand_off:
                return end - offset  # as far as gunicorn is concerned, sent: the event loop sends the rest
            self.finish_sending()
        return self.sendfile_sent - before

    def send_rest(self) -> bool:
        """Send what the socket takes now of the file being sent (`rest`): whether it is all sent (or the file
        turned out shorter than it was). A client gone raises OSError, the rest still to send."""
        assert self.rest is not None
        source, position, end = self.rest
        sink = self.fileno()
        while position < end:
            try:
                sent = os.sendfile(sink, source, position, end - position)
            except BlockingIOError:
                sent = 0
            else:
                if not sent:  # the file is shorter than it was
                    break
                position += sent
                self.sendfile_sent = (self.sendfile_sent or 0) + sent
            if position < end and sent < SENDFILE_MOST:
                # The socket took less than was asked: it is full. Asking again would only fail (an exception,
                # at each of the dozen or so times a 20 MiB download fills loopback's buffers).
                self.rest = source, position, end
                return False
        self.rest = None
        return True

    def finish_sending(self) -> None:
        """Send the rest of the file being sent, if any, waiting for the client up to the idle timeout each
        time; then run what waited for it (`when_sent`), however the sending ended. The socket was full when
        the rest was left: it is waited for first, not tried in vain."""
        try:
            while self.rest is not None:
                self._wait_writable()
                self.send_rest()
        finally:
            self.sent()

    def when_sent(self, callback: Callable[[], object]) -> None:
        """Call `callback` once the file being sent is sent or given up: now if there is none."""
        if self.rest is None:
            callback()
        else:
            self._when_sent.append(callback)

    def sent(self) -> None:
        """The file being sent is sent, or given up (the client went away): what waited for it runs, in order,
        each whatever the others raise."""
        self.rest, waiting, self._when_sent = None, self._when_sent, []
        with ExitStack() as stack:
            for callback in reversed(waiting):
                stack.callback(callback)

    def _wait_writable(self) -> None:
        timeout = self.gettimeout()
        ready = select.poll()
        ready.register(self, select.POLLOUT)
        if not ready.poll(None if timeout is None else timeout * 1000):
            raise BrokenPipeError(errno.EPIPE, "the client read nothing for the idle timeout")


_close_graceful = util.close_graceful


def _end_failed_response(sock, *args, **kwargs) -> None:
    """gunicorn's close_graceful, which its threaded worker also calls for a response that failed after its head
    went (`handle_request`): the thread then waited up to 2 s for the client to close in turn. On the worker's
    sockets the answer is only ended here, and the loop waits for the client (`Worker._linger`) once the thread
    lets the connection go, as for any ending connection."""
    if type(sock) is not IdleTimeoutSocket:
        _close_graceful(sock, *args, **kwargs)
        return
    with suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


util.close_graceful = _end_failed_response


class _Served(NamedTuple):
    """What gunicorn's finish_request reads of a finished thread's Future, for a connection handed back."""

    keep: object  # handle's result

    def result(self) -> object:
        return self.keep

    def cancelled(self) -> bool:
        return False


class SentFromLoop(FileWrapper):
    """A file response that the event loop may finish sending: its close, the last thing gunicorn does with it,
    waits until it is sent (`IdleTimeoutSocket.when_sent`), so that whatever observes the close (metrics, a
    recording) sees the whole transfer, as the WSGI specification has it."""

    def __init__(self, body: FileWrapper, sock: IdleTimeoutSocket) -> None:
        self.filelike, self.blksize, self._body, self._sock = body.filelike, body.blksize, body, sock

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            self._sock.when_sent(close)


def handing_off(app):
    """`app`, each of whose file responses on a plain HTTP/1 connection the event loop may finish sending."""

    def serve(environ, start_response):
        body = app(environ, start_response)
        if environ.get(BODY_FAILED):
            # The rest of the body was given up on (body.py), so the connection ends after this answer: which
            # must say so (RFC 9112 §9.6), or a client sends its next request on it and loses it. Its head is
            # not written yet; start_response is gunicorn's Response's.
            with suppress(AttributeError):
                start_response.__self__.force_close()
        sock = environ.get("gunicorn.socket")
        if type(body) is FileWrapper and type(sock) is IdleTimeoutSocket:
            sock.may_hand_off = True
            return SentFromLoop(body, sock)
        return body

    return serve


class LogWhenSent:
    """The worker's logger, whose access line for a response the event loop is still sending is written once it
    is sent or given up, with what was sent and how long it took."""

    def __init__(self, log) -> None:
        self._log = log

    def __getattr__(self, name: str):
        return getattr(self._log, name)

    def access(self, resp, req, environ, request_time: timedelta) -> None:
        sock = environ.get("gunicorn.socket")
        if type(sock) is not IdleTimeoutSocket or sock.rest is None:
            self._log.access(resp, req, environ, request_time)
            return
        handed_off = time.monotonic()
        sock.when_sent(
            lambda: self._log.access(
                resp, req, environ, request_time + timedelta(seconds=time.monotonic() - handed_off)
            )
        )


class Connection(TConn):
    """gunicorn's connection, with the head of its next request as far as the event loop has read it."""

    head: bytearray | None = None
    # The worker's: closes the connection once the client has had time to read its last answer (Worker._linger).
    linger: Callable[[Connection], None] | None = None

    def close(self, graceful: bool = False) -> None:
        if self.sock.fileno() == -1:  # already closed by the thread that served its last request
            return
        if graceful and self.linger is not None:
            self.linger(self)
        else:
            super().close(graceful)


class Worker(ThreadWorker):
    """`worker_class` for gunicorn: see the module's notes."""

    def init_process(self) -> None:
        self.prepare()
        super().init_process()  # runs the loop

    def prepare(self) -> None:
        """What this worker adds to gunicorn's, set up in the worker process (`init_process`)."""
        settings = Settings.from_env()
        raise_descriptor_limit(self.log)
        if settings.loopback_tcp_congestion:
            for listener in self.sockets:
                use_congestion_control(listener, settings.loopback_tcp_congestion, self.log)
        self.header_timeout = settings.header_timeout
        IdleTimeoutSocket.idle_timeout = settings.idle_timeout
        self.heads: dict[Connection, float] = {}  # connections whose head the event loop is reading -> deadline
        self._heads_end_by = math.inf  # when the worker stops: the deadline of every head
        # connections whose response's file the event loop is sending (a thread handed it off) -> deadline
        self.sending: dict[Connection, float] = {}
        # connections that have ended, waiting for the client to close in turn (`_linger`) -> deadline
        self.lingering: dict[socket.socket, float] = {}
        # where what waits for the end of a download the loop sent runs (`_sent`); its thread starts at first use
        self.closer = ThreadPoolExecutor(1, thread_name_prefix="wopihost-sent")
        self.log = LogWhenSent(self.log)  # type: ignore[assignment]  # reads as a Logger
        self._next_notify = self._next_sweep = 0.0
        self.busy = 0  # requests given to the thread pool and not yet finished; never more than its threads
        # Requests whose head has come while every thread was busy, in order. A freed thread takes turns between
        # these and a connection waiting to be accepted (`_new_turn`): queued in the pool instead, they would
        # keep every thread busy under steady load, and the listener, enabled only while a thread is free,
        # would leave new clients in the backlog for seconds.
        self.parked: deque[Connection] = deque()
        self._new_turn = True
        # A client waiting to be accepted that this worker leaves to a less busy one: since when this worker has
        # seen it waiting, and until when the worker's listeners are off meanwhile.
        self._waiting_since: float | None = None
        self._held_until: float | None = None
        self._next_descriptor_warning = 0.0  # (_out_of_descriptors) at most one a minute
        self.cfg = SettledConfig(self.cfg)  # type: ignore[assignment]  # reads as a Config
        self._h2c_sniffed = self.cfg.http2_cleartext in ("prior-knowledge", "both")
        self._idle_since: float | None = None  # when the last request ended, until the buffers are given back

    def notify(self) -> None:
        # gunicorn's loop tells the master it is alive at every turn, with a syscall that hands the GIL over: a
        # download's sendfile turns it some fifteen times. The master needs it once per timeout (self.timeout is
        # half of it), and the loop turns at least once a second.
        now = time.monotonic()
        if now >= self._next_notify:
            self._next_notify = now + min(1.0, self.timeout / 2)
            super().notify()

    def load_wsgi(self) -> None:
        super().load_wsgi()  # the app the master built before forking (server.py), or one of this worker's own
        if isinstance(self.wsgi, App):
            self.wsgi.start(sweeps=SWEEPER.mine)  # its threads, in the process that serves it
        self.wsgi = handing_off(self.wsgi)

    def _buffers_heads(self, conn: TConn) -> bool:
        return not self.cfg.is_ssl and not (
            self._h2c_sniffed and negotiation.prior_knowledge_allowed(self.cfg, conn.client)
        )

    # -- connections: accepted only with a thread free, by the worker serving the fewest

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.leave_board()
        self._end_lingering()

    def _end_lingering(self) -> None:
        """gunicorn's loop ends once no connection is left, and a connection lingering for its client to close
        (`_linger`) is not one. Closed when the worker exits, with what its client has sent since unread, it
        would be reset, and a reset can cut off the answer the client has not read yet: the worker waits for
        them, each until its own deadline, as the loop did (whose poller gunicorn has closed)."""
        if not self.lingering:
            return
        with DefaultSelector() as self.poller:
            for sock in self.lingering:
                self.poller.register(sock, EVENT_READ, partial(self._on_linger_data, LINGER_MOST))
            while self.lingering:
                for key, _ in self.poller.select(max(0.0, min(self.lingering.values()) - time.monotonic())):
                    key.data(key.fileobj)
                self._drop_lingering_past(time.monotonic())

    def leave_board(self) -> None:
        BOARD.clear(self.age)

    def _serving(self) -> int:
        """What the worker posts on the board: its connections not idling between requests."""
        return self.nr_conns - len(self.keepalived_conns)

    def _post(self) -> float:
        # at each turn of the loop (at least one a second) and as soon as a connection comes or a request ends
        now = time.monotonic()
        BOARD.post(self.age, self._serving(), now)
        return now

    def wait_for_and_dispatch_events(self, timeout: float | None) -> None:
        now = self._post()
        if self._idle_since is not None and not self.busy and now - self._idle_since >= IDLE_RELEASE_SECONDS:
            self._idle_since = None  # until a request ends again (the loop turns at least once a second)
            release_idle()
        if self._held_until is not None:
            if now < self._held_until:
                timeout = self._held_until - now if timeout is None else min(timeout, self._held_until - now)
            else:
                self._held_until = None
                if not self._clients_waiting():  # another worker took it
                    self._waiting_since = None
                self._threads_changed()
        super().wait_for_and_dispatch_events(timeout)

    def set_accept_enabled(self, enabled: bool | None) -> None:
        # Never again once the worker stops: each request that ends would turn the listeners back on (via
        # _threads_changed), and a stopping worker under steady load would take clients until its graceful timeout
        # cut off the requests it then had under way.
        super().set_accept_enabled(enabled and self.alive and self.busy < self.cfg.threads and self._held_until is None)

    def _threads_changed(self) -> None:
        # gunicorn's loop only reconsiders accepting when its connection count crosses the limit.
        self.set_accept_enabled(self.nr_conns < self.worker_connections)

    def _clients_waiting(self) -> list:
        """The listeners with a client waiting to be accepted."""
        readable = {fd for fd, _ in self._watching_listeners().poll(0)}
        return [listener for listener in self.sockets if listener.fileno() in readable]

    def _watching_listeners(self) -> select.poll:
        """A poll that reports a client waiting to be accepted on any of the worker's listeners."""
        return _watching(self.sockets)

    def accept(self, listener) -> bool:  # type: ignore[override]  # also says whether it took a connection
        """A client waits on `listener` (the poller says so, or `_next` looked): take it, unless another worker
        serves fewer connections and the client has waited less than ACCEPT_FALLBACK_MS. That worker takes it
        as soon as its loop turns; the fallback is for one that does not (every thread busy, or stuck), so
        that no client waits long on what the board said."""
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        until = self._waiting_since + ACCEPT_FALLBACK_MS / 1000
        if now < until:
            fewest = BOARD.fewest_elsewhere(self.age, now)
            if fewest is not None and fewest < self._serving():
                self._held_until = until  # listeners off until then: the poller would only report the client again
                self._threads_changed()
                return False
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # raised, it would end the worker and every connection
                self._out_of_descriptors(now, exc)
                return False
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            self._waiting_since = None  # another worker took it
            return False
        self._waiting_since = None
        self.nr_conns += 1
        conn = Connection(self.cfg, IdleTimeoutSocket.adopt(client), address, listener.getsockname())
        conn.linger = self._linger
        self.enqueue_req(conn)
        self._post()
        return True

    def _out_of_descriptors(self, now: float, exc: OSError) -> None:
        """Leave the client in the backlog for a while: another worker, or this one's requests once they end."""
        self._waiting_since = None
        self._held_until = now + OUT_OF_DESCRIPTORS_PAUSE
        self._threads_changed()
        if now >= self._next_descriptor_warning:
            self._next_descriptor_warning = now + 60
            self.log.warning("not accepting connections for now: %s (%d open)", exc.strerror, self.nr_conns)

    def murder_keepalived(self, force: bool = False) -> None:
        """Close the kept-alive connections whose keepalive has run out, as gunicorn does, but first serve any
        of them whose next request arrived after the loop last polled. gunicorn would close it unread: its
        client sent the request in time, sees the connection close without an answer, and may not send it
        again (a POST, such as every WOPI operation that writes, is not idempotent: RFC 9110, 9.2.2)."""
        now = time.monotonic()
        if not force and self.keepalived_conns and cast(float, self.keepalived_conns[0].timeout) <= now:
            # the deque is in the order of the connections' deadlines (gunicorn's _cap_keepalive keeps it)
            expired = list(takewhile(lambda conn: cast(float, conn.timeout) <= now, self.keepalived_conns))
            readable = {fd for fd, _ in _watching(conn.sock for conn in expired).poll(0)}
            for conn in expired:
                if conn.sock.fileno() in readable:
                    self.on_client_socket_readable(cast(Connection, conn), conn.sock)
        super().murder_keepalived(force)  # type: ignore[call-arg]  # gunicorn 27's takes `force`; its stubs are older

    def on_client_socket_readable(self, conn: Connection, client) -> None:  # type: ignore[override]  # the worker makes every connection a Connection (accept)
        """A kept-alive connection has its next request coming. Its head is read now, while the socket is
        known to be readable, under the same registration: a head that arrives whole (nearly every one) goes
        to a thread without another turn of the loop."""
        self.keepalived_conns.remove(conn)
        if not self._buffers_heads(conn):
            self.poller.unregister(client)
            self.enqueue_req(conn)
            return
        conn.head = bytearray(conn.parser.unreader.take_buffered() if conn.parser is not None else b"")  # type: ignore[union-attr]  # heads are buffered for HTTP/1 only (_buffers_heads)
        self.heads[conn] = time.monotonic() + self.header_timeout
        self.poller.modify(client, EVENT_READ, partial(self._on_head_data, conn))
        self._on_head_data(conn, client)

    # -- request heads: read by the event loop, then the request goes to a thread

    def enqueue_req(self, conn: Connection) -> None:  # type: ignore[override]  # the worker makes every connection a Connection (accept)
        """Every way a request reaches the thread pool (a new connection, a kept-alive one, bytes a client
        pipelined behind its last request) passes here: a head not yet complete is read here first."""
        if self._buffers_heads(conn):
            if conn.head is None:
                pipelined = conn.parser.unreader.take_buffered() if conn.parser is not None else b""  # type: ignore[union-attr]  # heads are buffered for HTTP/1 only (_buffers_heads)
                conn.head = bytearray(pipelined)
                if not _complete(conn.head, 0):
                    conn.sock.setblocking(False)
                    self.heads[conn] = time.monotonic() + self.header_timeout
                    self.poller.register(conn.sock, EVENT_READ, partial(self._on_head_data, conn))
                    return
            conn.data_ready = True  # gunicorn must not wait for data: what it needs is in conn.head
        if self.busy >= self.cfg.threads:
            self.parked.append(conn)  # its head is read (or, TLS and h2c, waiting in the socket)
            return
        self._start(conn)

    def _start(self, conn: Connection) -> None:
        self.busy += 1
        served = [conn]  # the connection the thread ends on: it may go on to parked ones (_work)
        done = self.tpool.submit(self._work, served)
        done.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, served[0], fut))
        self._threads_changed()

    def _work(self, served: list[Connection]):
        """A thread's work: the connection `served[0]`, then the next parked request as long as one is parked
        and no client waits to be accepted, each connection handed back to the loop as the thread moves on
        (`_hand_back`). A parked request taken here skips a turn of the loop, a Future and a thread's wake-up:
        what the follow-on (`_next_head_follows`) saves with few connections, with more connections than
        threads. A waiting client stops it, so that the loop's turns between new and parked (`_next`) hold."""
        while True:
            keep = self.handle(served[0])
            following = self._pop_parked() if self.alive and self.parked and not self._clients_waiting() else None
            if following is None:
                return keep
            self.method_queue.defer(self._hand_back, served[0], _Served(keep))
            served[0] = following

    def _hand_back(self, conn: Connection, fs) -> None:
        """A connection whose thread went on to a parked request, or whose file the loop has sent: kept alive or
        closed, as when a thread ends."""
        self._release(conn, fs)
        self._post()

    def _release(self, conn: Connection, fs) -> None:
        """A connection its thread is done with: kept alive or closed (gunicorn's finish_request), once the loop
        has sent the rest of a file the thread handed off."""
        if getattr(conn.sock, "rest", None) is None:
            super().finish_request(conn, fs)
            return
        self.sending[conn] = self._sending_deadline()
        self.poller.register(conn.sock, EVENT_WRITE, partial(self._on_writable, conn, fs))

    def _sending_deadline(self) -> float:
        idle = IdleTimeoutSocket.idle_timeout
        return math.inf if idle is None else time.monotonic() + idle

    def _on_writable(self, conn: Connection, fs, _sock) -> None:
        """The client has read some of the file being sent: send what fits now, and, once it is all sent,
        release the connection as its thread would have."""
        try:
            if not conn.sock.send_rest():  # type: ignore[attr-defined]  # only an IdleTimeoutSocket hands off
                self.sending[conn] = self._sending_deadline()  # it read something: a new idle timeout
                return
        except OSError:  # the client went away
            self._drop_sending(conn)
            return
        self._sent(conn, partial(self._hand_back, conn, fs))

    def _drop_sending(self, conn: Connection) -> None:
        self._sent(conn)
        self.nr_conns -= 1
        conn.close()
        self._post()

    def _sent(self, conn: Connection, then: Callable[[], object] | None = None) -> None:
        """The loop is done sending `conn`'s file, all of it or not. What waited for it (the body's close, the
        access line) runs on the worker's closing thread, then `then` back in the loop: a recording reads again
        what was sent, or all of a file whose SHA-256 is not stored, which for a large download takes as long as
        a request, and the loop must go on serving every other connection meanwhile."""
        self.poller.unregister(conn.sock)
        del self.sending[conn]
        self.closer.submit(self._run_sent, conn.sock, then)  # type: ignore[arg-type]  # only an IdleTimeoutSocket hands off

    def _run_sent(self, sock: IdleTimeoutSocket, then: Callable[[], object] | None) -> None:
        try:
            sock.sent()
        except Exception:  # a request's own failure, which must not stop the closing thread
            self.log.exception("Error after sending a response")
        if then is not None:
            self.method_queue.defer(then)

    def _pop_parked(self) -> Connection | None:
        try:
            return self.parked.popleft()
        except IndexError:  # the loop and the threads both take parked requests
            return None

    def _on_head_data(self, conn: Connection, _sock) -> None:
        try:
            data = conn.sock.recv(HEAD_BUFFER)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its request
            self._drop_head(conn)
            return
        assert conn.head is not None  # enqueue_req set it before it asked for this data
        conn.head += data
        if _complete(conn.head, len(conn.head) - len(data)):
            self.poller.unregister(conn.sock)
            del self.heads[conn]
            self.enqueue_req(conn)

    def _drop_head(self, conn: Connection) -> None:
        self.poller.unregister(conn.sock)
        del self.heads[conn]
        self.nr_conns -= 1
        conn.close()

    def _linger(self, conn: Connection) -> None:
        """Close an ended connection as gunicorn's close_graceful does (RFC 9112, 9.6): the answer's end is sent,
        then what the client still sends is read and dropped until it closes, for LINGER_SECONDS at most, so that
        a reset does not cut off the answer. Here the loop waits, as for a head: a client that never closes costs
        a socket for that long, where close_graceful held a thread."""
        sock = conn.sock
        with suppress(OSError):  # done already by the thread that served its last request (`_serve`)
            sock.shutdown(socket.SHUT_WR)
        try:
            sock.setblocking(False)
            self.poller.register(sock, EVENT_READ, partial(self._on_linger_data, LINGER_MOST))
        except (OSError, ValueError):  # gone already
            util.close(sock)
            return
        self.lingering[sock] = time.monotonic() + LINGER_SECONDS

    def _on_linger_data(self, left: int, sock: socket.socket) -> None:
        try:
            data = sock.recv(min(left, 65536))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and len(data) < left:
            self.poller.modify(sock, EVENT_READ, partial(self._on_linger_data, left - len(data)))
        else:  # the client closed in turn (or went away, or sent too much): done
            self._drop_lingering(sock)

    def _drop_lingering(self, sock: socket.socket) -> None:
        self.poller.unregister(sock)
        del self.lingering[sock]
        util.close(sock)

    def murder_pending(self) -> None:
        """Also drop heads past their deadline (once the worker stops, STOP_KEEPALIVE_LINGER after at the
        latest), files being sent to a client that has read nothing for the idle timeout, and ended connections
        whose client has not closed within LINGER_SECONDS."""
        super().murder_pending()
        now = time.monotonic()
        if now < self._next_sweep and self.alive:  # gunicorn calls this at every turn of the loop
            return
        self._next_sweep = now + SWEEP_EVERY
        if not self.alive and self._heads_end_by == math.inf:
            # Stopping: a head on its way (a connection accepted, the next request of a kept-alive one) is still
            # read and answered, with Connection: close, as gunicorn answers a request that comes on a kept-alive
            # connection meanwhile; dropped, its client would not be free to send a POST again. None keeps the
            # worker longer than such a connection does.
            self._heads_end_by = now + STOP_KEEPALIVE_LINGER
            self._close_listeners()
        for conn, deadline in list(self.heads.items()):
            if min(deadline, self._heads_end_by) <= now:
                self._drop_head(conn)
        for conn, deadline in list(self.sending.items()):
            if deadline <= now:  # the client read nothing for the idle timeout
                self._drop_sending(conn)
        self._drop_lingering_past(now)

    def _close_listeners(self) -> None:
        """A stopping worker takes no new connection, but its copies of the listeners kept the kernel taking
        them into the backlog until the worker exited, then resetting them (a request nginx had sent: a 502
        after up to the graceful timeout, and not tried on another server). Closed, with the master's closed
        already on a stop (TERM, INT), a client is refused at once; on a reload (HUP) the new workers hold
        them, and a worker leaving for max_requests leaves them to the master and the others."""
        self.set_accept_enabled(False)
        listeners, self.sockets = self.sockets, []  # threads look at them (_watching_listeners): none closed
        for listener in listeners:
            listener.close()

    def _drop_lingering_past(self, now: float) -> None:
        for sock, deadline in list(self.lingering.items()):
            if deadline <= now:
                self._drop_lingering(sock)

    # -- threads

    def finish_request(self, conn: Connection, fs) -> None:  # type: ignore[override]  # the worker makes every connection a Connection (accept)
        self.busy -= 1
        self._release(conn, fs)
        self._idle_since = self._post()
        self._threads_changed()
        self._next()

    def _next(self) -> None:
        """Give each free thread the next request: a connection waiting to be accepted and a parked request take
        turns, so that neither kind starves the other. Parked requests are served while the worker stops too
        (gunicorn answers them with Connection: close); new connections are not taken then."""
        while self.busy < self.cfg.threads:
            if self.parked and not self._new_turn:
                self._new_turn = True
                if (parked := self._pop_parked()) is not None:
                    self._start(parked)
                continue
            self._new_turn = False
            if self.alive and self.nr_conns < self.worker_connections and self._held_until is None:
                waiting = self._clients_waiting()
                if not waiting:
                    self._waiting_since = None
                elif any(self.accept(listener) for listener in waiting):
                    continue
            if not self.parked:
                return

    def handle_request(self, req, conn: Connection):  # type: ignore[override]  # the worker makes every connection a Connection (accept)
        sock = conn.sock if isinstance(conn.sock, IdleTimeoutSocket) else None  # (not TLS, which gunicorn wraps)
        if sock is None:
            return super().handle_request(req, conn)
        sock.new_response()
        try:
            keep = super().handle_request(req, conn)
        except BaseException:
            sock.end_response(failed=True)
            raise
        sock.end_response()
        return keep

    def _keepalive_after(self, conn: Connection, keepalive: bool) -> bool:
        # gunicorn drains what the application left of a request's body under a deadline it sets on the socket
        # and then takes off again: two syscalls, and two more handovers of the GIL, after every request,
        # though nearly every body (a GET's, a PutFile's) is already read to its end.
        body = conn.parser.mesg.body if keepalive and conn.parser.mesg else None  # type: ignore[union-attr]  # HTTP/1: a request was parsed
        if (
            body is not None
            and isinstance(body.reader, LengthReader)
            and not body.reader.length
            and not body.buf.tell()
        ):
            return not getattr(body, "failed", False)
        try:
            return super()._keepalive_after(conn, keepalive)  # type: ignore[misc]  # gunicorn's, not in its stubs
        except (ParseException, OSError):  # NoMoreData is an OSError
            # A malformed or cut-off body the application never read: the answer has gone, so the connection
            # ends here. Raised on, gunicorn would write a 400 page after it, a second answer to one request.
            return False

    def handle(self, conn: Connection):  # type: ignore[override]  # the worker makes every connection a Connection (accept)
        keep = self._serve(conn)
        while keep:
            self._send_rest_here(conn)
            if not self._next_head_follows(conn):
                break
            keep = self._serve(conn)
        return keep

    def _thread_to_spare(self) -> bool:
        """Whether a thread that has answered may go on with its connection: no request of this worker can be
        waiting for it, as each of its connections could have a thread."""
        return self.alive and self.nr_conns <= self.cfg.threads

    def _send_rest_here(self, conn: Connection) -> None:
        """Send the rest of a download the thread handed off (it filled the socket) from this thread, while the
        client reads it as fast as it comes (the socket frees within KEEP_SENDING_MS each time) and no request
        of this worker could want the thread (`_thread_to_spare`). The loop would take a registration and a
        wake-up each time the socket fills, and the closing thread's hand-off at the end: some 5% of a GetFile
        of 1 MiB's CPU (docs/benchmarks.md). A slow reader, or a new client waiting to be
        accepted, leaves the rest to the loop as before; so does a client gone (the loop finds out)."""
        sock = conn.sock
        if getattr(sock, "rest", None) is None or not self._thread_to_spare():
            return
        ready = self._watching_listeners()
        ready.register(sock, select.POLLOUT)
        try:
            while len(events := ready.poll(KEEP_SENDING_MS)) == 1 and events[0][0] == sock.fileno():
                if sock.send_rest():  # type: ignore[attr-defined]  # only an IdleTimeoutSocket hands off (rest)
                    sock.sent()  # type: ignore[attr-defined]  # the body's close and the access line, here
                    return
        except OSError:
            return

    def _next_head_follows(self, conn: Connection) -> bool:
        """Whether the connection's next request head is here, whole, or comes within FOLLOW_ON_MS (it is then in
        `conn.head`). Each request handed from thread to loop to thread costs the loop a wake-up, a poller
        registration, a read and a hand-over: about a tenth of a CheckFileInfo's CPU. A thread goes on only
        while each of the worker's connections could have one, so that no request of this worker waits for
        it, and gives way as soon as a new client waits to be accepted, which only the loop does: threads that
        went on and on would otherwise keep the worker from ever accepting."""
        if (
            not (self._thread_to_spare() and self._buffers_heads(conn))
            or conn.is_http2
            or getattr(conn.sock, "rest", None) is not None  # the loop sends the rest of its response first
        ):
            return False
        unreader = conn.parser.unreader  # type: ignore[union-attr]  # HTTP/1 (_buffers_heads, not is_http2)
        head = bytearray(unreader.take_buffered())  # what gunicorn read ahead, draining the last body
        here = _complete(head, 0)
        waiting = self._watching_listeners()
        if not here:
            waiting.register(conn.sock, select.POLLIN)
        ready = dict(waiting.poll(0 if here else FOLLOW_ON_MS))
        if not here and ready.get(conn.sock.fileno()):
            try:
                head += os.read(conn.sock.fileno(), HEAD_BUFFER)  # readable: no poll first, as recv would
            except OSError:  # gone, or nothing after all: the loop finds out as it would have
                pass
            here = _complete(head, 0)
        if not here or any(listener.fileno() in ready for listener in self.sockets):
            unreader.unread(bytes(head))  # the loop's: a head that comes slowly is read to its deadline
            return False
        conn.head = head
        return True

    def _serve(self, conn: Connection) -> bool:
        head, conn.head = conn.head, None
        if head:  # give the parser the head the event loop read
            conn.sock.setblocking(True)
            if len(head) >= HEAD_BUFFER and _head_length(head) > HEAD_BUFFER:  # (what follows a head may be long)
                # No browser or nginx sends such a head. Read on to gunicorn's limits, it would hold this thread
                # up to the header timeout for a client that sends no more.
                self.handle_error(None, conn.sock, conn.client, LimitRequestHeaders(TOO_LONG))
                return False  # the loop ends the connection (`_linger`)
            conn.init()
            conn.parser.unreader.unread(bytes(head))  # type: ignore[union-attr]  # HTTP/1 (_buffers_heads), just made
        keep = super().handle(conn)
        if not keep:
            if getattr(conn.sock, "rest", None) is not None:  # a file handed off: the thread sends it, then closes
                with suppress(OSError):
                    conn.sock.finish_sending()  # type: ignore[attr-defined]  # only an IdleTimeoutSocket hands off
            # The connection ends: the client sees the answer's end now, and the loop closes the socket once the
            # client has closed in turn (`_linger`), which holds no thread.
            with suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
        return keep


# How often the loop looks for heads and downloads past their deadlines (seconds apart): each look goes through
# every such connection, and the loop turns at every wake-up of a download.
SWEEP_EVERY = 0.1
SENDFILE_MOST = 0x7FFFF000  # the most Linux sends in one sendfile, room or not
# How long a thread waits for a client to make room for more of a download before leaving the rest to the loop
# (Worker._send_rest_here): a reader on loopback or a fast network frees room well within it, even one, like
# wrk, that reads several connections in turn; a slow reader costs its thread no more than this, once.
KEEP_SENDING_MS = 10
# How long, and for how much, an ended connection waits for its client to close in turn (Worker._linger):
# gunicorn's close_graceful's.
LINGER_SECONDS = 2.0
LINGER_MOST = 64 << 10
# The most of a request head the loop reads: a longer one is refused (431) as soon as this much of it has come.
HEAD_BUFFER = 64 << 10
TOO_LONG = f"a request head over {HEAD_BUFFER} bytes"
# How long a thread that has answered waits for the same connection's next request (Worker._next_head_follows):
# long enough for a client that sends its next request as soon as it has read the answer, even on a busy
# machine; short enough that a new connection, which cannot be accepted meanwhile, hardly notices.
FOLLOW_ON_MS = 2
# How long a worker leaves a waiting client to another worker serving fewer connections (Worker.accept) before
# taking it itself: about a request's time, the longest a worker with every thread busy should take to free
# one and accept.
ACCEPT_FALLBACK_MS = 5
# How long a worker out of file descriptors leaves its listeners off (Worker.accept): the client waits in the
# backlog for another worker, or for this one's requests to end and free theirs.
OUT_OF_DESCRIPTORS_PAUSE = 0.5
# The soft limit of open files a worker raises its own to (never past the hard limit): one a connection, and its
# threads' blobs, databases and workbook pipes; 1,024, the usual default, is reached before gunicorn's 1,000
# connections.
DESCRIPTORS_WANTED = 65536


def raise_descriptor_limit(log) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = DESCRIPTORS_WANTED if hard == resource.RLIM_INFINITY else min(hard, DESCRIPTORS_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < 2048:
        log.warning("the hard limit of open files (%s) leaves a worker room for fewer connections than it takes", hard)


def use_congestion_control(listener: socket.socket, algorithm: str, log) -> None:
    """Give the connections `listener` accepts the TCP congestion control `algorithm`, if it is bound to a
    loopback address (WOPIHOST_LOOPBACK_TCP_CONGESTION).

    Such a listener only ever talks to this machine: the nginx in front, as deploy/ runs it. Under BBR, the
    default of many distributions, every segment sent is paced, and over loopback, where nothing is ever
    congested, the pacing costs CPU and nothing else: a 20 MiB download took 1.5-1.7 ms of the server's CPU
    under Reno and 6.7-8.4 ms under BBR (docs/benchmarks.md, 2026-12-05, morning). It is set on the listener,
    before any connection: a connection accepted under BBR stays paced after a switch (it was slower still).
    Reno is the default because every process may choose it (net.ipv4.tcp_allowed_congestion_control), and
    over loopback it does as well as CUBIC; a choice the kernel refuses is reported, and the system's stays."""
    if listener.family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = listener.getsockname()[0]
    if not _loopback(host):
        return
    try:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, algorithm.encode())
    except OSError as exc:
        why = exc.strerror
        if exc.errno == errno.ENOENT:
            why = "this kernel has no such algorithm"
        elif exc.errno == errno.EPERM:
            why = "not in net.ipv4.tcp_allowed_congestion_control, which is all this server may choose"
        log.warning(
            "WOPIHOST_LOOPBACK_TCP_CONGESTION: cannot use %s on %s (%s); its connections keep the system's choice",
            algorithm,
            host,
            why,
        )


def _loopback(host: str) -> bool:
    address = ipaddress.ip_address(host)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def _watching(sockets: Iterable) -> select.poll:
    """A poll that reports input waiting on any of `sockets`."""
    ready = select.poll()
    for sock in sockets:
        if (fd := sock.fileno()) >= 0:  # a stopping worker's listeners are closed as a thread looks (-1)
            ready.register(fd, select.POLLIN)
    return ready


def _complete(head: bytearray, new_from: int) -> bool:
    """Whether `head` holds a whole request head (or as much as the event loop buffers); only an end that
    bytes from `new_from` on complete is looked for."""
    return len(head) >= HEAD_BUFFER or _ends(head, new_from)


def _head_length(head: bytearray) -> int:
    """How long the request head at the start of `head` is, with its blank line; more than `head` if it has not
    ended there. However its bytes came, one read or several, one end counts."""
    ends = [at + len(blank) for blank in (b"\r\n\r\n", b"\n\n") if (at := head.find(blank)) >= 0]
    return min(ends, default=len(head) + 1)


def _ends(head: bytearray, new_from: int) -> bool:
    """Whether `head` holds the end of a request head; only an end that bytes from `new_from` on complete is
    looked for."""
    start = max(0, new_from - 3)
    return head.find(b"\r\n\r\n", start) >= 0 or head.find(b"\n\n", start) >= 0
