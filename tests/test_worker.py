"""The gunicorn worker's event loop, driven step by step: real gunicorn configuration, real sockets, a real
thread pool; only the loop that would run forever is turned by the test."""

from __future__ import annotations

import email.utils
import logging
import os
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER

from wopihost import worker as worker_module
from wopihost import workerboard
from wopihost.httpdate import DateOfTheSecond
from wopihost.scratch import scratch
from wopihost.worker import ACCEPT_FALLBACK_MS, IdleTimeoutSocket, SettledConfig, Worker, handing_off

REQUEST = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


class App:
    """A WSGI app whose requests wait until the test lets them finish."""

    def __init__(self):
        self.release, self.started = threading.Event(), threading.Semaphore(0)

    def __call__(self, environ, start_response):
        self.started.release()
        self.release.wait(10)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]


def _worker(age: int, listener: socket.socket) -> Worker:
    cfg = Config()
    cfg.set("threads", 2)
    cfg.set("keepalive", 30)
    worker = Worker(age, os.getpid(), [listener], None, 30, cfg, Logger(cfg))
    worker.log.error_log.setLevel(logging.CRITICAL)
    worker.wsgi = App()
    # ThreadWorker.init_process, without the loop it goes on to run:
    worker.tpool, worker.poller = worker.get_thread_pool(), selectors.DefaultSelector()
    worker.method_queue.init()
    worker.poller.register(worker.method_queue.fileno(), selectors.EVENT_READ, worker.method_queue.run_callbacks)
    worker.prepare()
    worker.set_accept_enabled(True)
    return worker


def _stop(worker: Worker) -> None:
    worker.wsgi.release.set()
    worker.tpool.shutdown(wait=True)
    worker.closer.shutdown(wait=True)
    worker.leave_board()


@pytest.fixture
def listener(monkeypatch, tmp_path):
    monkeypatch.setenv("WOPIHOST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WOPIHOST_HEADER_TIMEOUT", "30s")  # longer than any pause of a loaded test machine
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener
    listener.close()


@pytest.fixture
def worker(listener):
    worker = _worker(1, listener)
    yield worker
    _stop(worker)


@pytest.fixture
def second_worker(listener):
    """Another worker of the same server: the same listener, the board shared (as after gunicorn's fork)."""
    worker = _worker(2, listener)
    yield worker
    _stop(worker)


def turn(worker, until, seconds: float = 60) -> None:
    """Run the worker's loop until `until()` holds."""
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "the worker never got there"
        worker.wait_for_and_dispatch_events(0.05)
        worker.murder_pending()


def connect(worker) -> socket.socket:
    client = socket.create_connection(worker.sockets[0].getsockname(), timeout=5)
    connections = worker.nr_conns
    turn(worker, lambda: worker.nr_conns == connections + 1)
    return client


def answers(client: socket.socket, count: int) -> bytes:
    """The next `count` answers (each ends with the app's "ok")."""
    received = b""
    while received.count(b"\r\n\r\nok") < count:
        piece = client.recv(4096)
        assert piece, f"the server closed the connection after {received!r}"
        received += piece
    return received


def test_a_worker_out_of_descriptors_leaves_the_client_waiting_and_serves_on(worker):
    """accept() failing for want of a descriptor (a worker's 1,000 connections pass the usual limit of 1,024)
    was raised out of the loop: the worker exited, every connection it held dropped. The client now waits in
    the backlog until descriptors free, and the connections the worker holds are served meanwhile."""
    held = connect(worker)
    waiting = socket.create_connection(worker.sockets[0].getsockname(), timeout=5)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(map(int, os.listdir("/proc/self/fd"))) + 8, hard))
    taken = []
    try:
        with suppress(OSError):  # every number below the limit taken, holes too: the next accept has none
            while True:
                taken.append(os.dup(0))
        turn(worker, lambda: worker._held_until is not None)
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert worker.nr_conns == 1
    worker.wsgi.release.set()
    held.sendall(REQUEST)
    turn(worker, lambda: _readable(held))
    assert answers(held, 1).startswith(b"HTTP/1.1 200")  # the loop was not ended
    turn(worker, lambda: worker.nr_conns == 2)  # once its listeners are on again
    waiting.sendall(REQUEST)
    turn(worker, lambda: _readable(waiting))
    assert answers(waiting, 1).startswith(b"HTTP/1.1 200")


def test_a_worker_raises_its_limit_of_open_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        worker_module.raise_descriptor_limit(logging.getLogger("test"))
        raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert raised == (worker_module.DESCRIPTORS_WANTED if hard == resource.RLIM_INFINITY else min(hard, 65536))


def test_a_slow_head_holds_no_thread_and_is_dropped_at_its_deadline(worker):
    worker.header_timeout = 1.0
    client = connect(worker)
    client.sendall(REQUEST[:10])
    turn(worker, lambda: len(worker.heads) == 1)
    assert worker.busy == 0
    time.sleep(1.1)
    turn(worker, lambda: not worker.heads)
    client.settimeout(2)
    assert client.recv(100) == b""  # dropped
    assert worker.nr_conns == 0


def test_a_request_whose_head_is_on_its_way_when_the_worker_stops_is_answered(worker):
    """A stopping worker (SIGTERM: a restart, a reload's old workers) dropped every head it was reading at once:
    a connection it had accepted, or a kept-alive one whose next request had begun to come (a head of two TCP
    segments), was closed with its request unanswered, and a POST its client is not free to send again. Served,
    as gunicorn serves what comes on a kept-alive connection meanwhile, with Connection: close."""
    client = connect(worker)
    client.sendall(REQUEST[:10])
    turn(worker, lambda: len(worker.heads) == 1)
    worker.handle_exit(signal.SIGTERM, None)
    worker.murder_pending()  # as the stopping loop does at every turn
    worker.wsgi.release.set()
    client.sendall(REQUEST[10:])
    turn(worker, lambda: _readable(client))
    answer = answers(client, 1)
    assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer, answer


def test_a_head_that_does_not_come_when_the_worker_stops_is_dropped_soon(worker):
    """... but a head that does not come keeps a stopping worker no longer than a kept-alive connection does."""
    client = connect(worker)
    client.sendall(REQUEST[:10])
    turn(worker, lambda: len(worker.heads) == 1)
    worker.handle_exit(signal.SIGTERM, None)
    stopped = time.monotonic()
    turn(worker, lambda: not worker.heads)
    assert time.monotonic() - stopped < STOP_KEEPALIVE_LINGER + 1  # not the header timeout's 30 s
    client.settimeout(2)
    assert client.recv(100) == b""
    assert worker.nr_conns == 0


def _own_copy_of_the_listener(worker, listener) -> None:
    """The worker listens on a copy of `listener`, as each worker of a server on its copy of the master's."""
    worker.set_accept_enabled(False)
    worker.sockets = [socket.socket(fileno=os.dup(listener.fileno()))]
    worker.set_accept_enabled(True)


def test_a_stopping_worker_accepts_no_new_connection_once_a_thread_frees(worker, listener):
    """A stopping worker turned its listeners on again whenever a request ended: it went on taking new clients
    for as long as they came, and when its graceful timeout ran out under steady load, it ended with requests
    under way. The server's other workers, or the next ones, take them."""
    _own_copy_of_the_listener(worker, listener)
    client = connect(worker)
    client.sendall(REQUEST)
    turn(worker, lambda: worker.busy == 1)
    worker.handle_exit(signal.SIGTERM, None)
    worker.set_accept_enabled(False)  # what gunicorn's loop does once it sees the worker stopping
    worker.wsgi.release.set()
    assert answers(client, 1).startswith(b"HTTP/1.1 200")
    turn(worker, lambda: worker.busy == 0)
    newcomer = socket.create_connection(listener.getsockname(), timeout=5)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        worker.wait_for_and_dispatch_events(0.05)
        worker.murder_pending()
    assert not worker._accepting and _watching_one(listener)  # the newcomer waits for another worker
    newcomer.close()


def test_a_stopping_worker_closes_its_listeners_so_that_a_stopped_server_refuses_clients(worker, listener):
    """A stopping worker kept its copies of the listeners open until it exited: on a stop, with the master's
    closed, the kernel went on taking clients into the backlog that nobody would serve, and reset them when the
    worker exited, up to the graceful timeout later (nginx had sent each its request: a 502, not tried on
    another server). They are refused at once."""
    _own_copy_of_the_listener(worker, listener)
    address = listener.getsockname()
    listener.close()  # the master's, closed as gunicorn stops
    client = connect(worker)
    worker.handle_exit(signal.SIGTERM, None)
    worker.murder_pending()  # as the stopping loop does at every turn
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5)
    worker.wsgi.release.set()
    client.sendall(REQUEST)  # a connection it has is still served
    turn(worker, lambda: _readable(client))
    assert answers(client, 1).startswith(b"HTTP/1.1 200")


def _watching_one(listener) -> bool:
    return bool(select.select([listener], [], [], 0)[0])


def test_a_worker_with_every_thread_busy_stops_accepting(worker):
    clients = [connect(worker) for _ in range(2)]
    for client in clients:
        client.sendall(REQUEST)
    turn(worker, lambda: worker.busy == 2)
    assert worker.wsgi.started.acquire(timeout=5) and worker.wsgi.started.acquire(timeout=5)
    assert not worker._accepting  # a third connection waits for another worker, not for these threads
    worker.wsgi.release.set()
    turn(worker, lambda: worker.busy == 0)
    assert worker._accepting
    for client in clients:
        assert answers(client, 1).startswith(b"HTTP/1.1 200")


def test_a_freed_thread_accepts_a_waiting_connection_at_once(worker):
    """Not at a later turn of the loop, where under steady load the kept-alive requests took the thread
    first and a new client waited for seconds."""
    clients = [connect(worker) for _ in range(2)]
    for client in clients:
        client.sendall(REQUEST)
    turn(worker, lambda: worker.busy == 2)
    waiting = socket.create_connection(worker.sockets[0].getsockname(), timeout=5)  # in the listen backlog
    worker.wait_for_and_dispatch_events(0.05)
    assert worker.nr_conns == 2
    connections_after_finishing = []
    finish = worker.finish_request

    def recording(conn, fs):
        finish(conn, fs)
        connections_after_finishing.append(worker.nr_conns)

    worker.finish_request = recording
    worker.wsgi.release.set()
    turn(worker, lambda: connections_after_finishing)
    assert connections_after_finishing[0] == 3
    waiting.sendall(REQUEST)
    turn(worker, lambda: select.select([waiting], [], [], 0)[0])
    assert answers(waiting, 1).startswith(b"HTTP/1.1 200")
    for client in (*clients, waiting):
        client.close()


def test_a_waiting_connection_takes_turns_with_kept_alive_requests(worker):
    """Under steady load a kept-alive request is always ready. Queued in the pool as they came, such requests
    kept every thread busy, and a new client, accepted only when a thread is free, waited in the backlog for
    seconds (p99 of 1-3 s at 32 connections). Parked instead, they take turns with it."""
    clients = [connect(worker) for _ in range(3)]
    for client in clients[:2]:
        client.sendall(REQUEST)
    turn(worker, lambda: worker.busy == 2)
    clients[2].sendall(REQUEST)  # its head comes while every thread is busy: parked, not queued
    turn(worker, lambda: len(worker.parked) == 1)
    assert worker.busy == 2
    waiting = socket.create_connection(worker.sockets[0].getsockname(), timeout=5)  # in the listen backlog
    waiting.sendall(REQUEST)
    worker.wait_for_and_dispatch_events(0.05)
    assert worker.nr_conns == 3  # no thread is free: not accepted
    after_each_finish = []
    finish = worker.finish_request

    def recording(conn, fs):
        finish(conn, fs)
        after_each_finish.append((worker.nr_conns, len(worker.parked)))

    worker.finish_request = recording
    worker.wsgi.release.set()
    turn(worker, lambda: after_each_finish)
    # The first thread freed accepted the waiting connection (whose head the loop then reads) and, free still,
    # took the parked request.
    assert after_each_finish[0] == (4, 0)
    everyone = (*clients, waiting)
    turn(worker, lambda: len(select.select(everyone, [], [], 0)[0]) == len(everyone))
    assert worker.busy <= 2 and not worker.parked
    for client in everyone:
        assert answers(client, 1).startswith(b"HTTP/1.1 200")
        client.close()


def test_a_client_is_left_to_the_worker_serving_fewer_connections(worker, second_worker):
    """Both workers wait on one listener; the busier one would often win the client, being awake."""
    client = connect(worker)
    client.sendall(REQUEST)
    turn(worker, lambda: worker.busy == 1)
    second_worker.wait_for_and_dispatch_events(0)  # it posts: it serves nothing
    newcomer = socket.create_connection(worker.sockets[0].getsockname(), timeout=5)
    worker.wait_for_and_dispatch_events(0.05)
    assert worker.nr_conns == 1
    assert not worker._accepting  # its listener is off meanwhile: the loop does not spin on the waiting client
    turn(second_worker, lambda: second_worker.nr_conns == 1)
    second_worker.wsgi.release.set()
    newcomer.sendall(REQUEST)
    turn(second_worker, lambda: _readable(newcomer))
    assert answers(newcomer, 1).startswith(b"HTTP/1.1 200")
    time.sleep(ACCEPT_FALLBACK_MS / 1000)
    turn(worker, lambda: worker._accepting)  # its listener is back, with nothing left to take
    assert worker.nr_conns == 1 and second_worker.nr_conns == 1
    turn(second_worker, lambda: second_worker.busy == 0)  # its connection idles, kept alive: it serves nothing
    late = socket.create_connection(worker.sockets[0].getsockname(), timeout=5)
    worker.wait_for_and_dispatch_events(0.05)
    assert worker.nr_conns == 1  # a new client, left to the other worker again
    turn(second_worker, lambda: second_worker.nr_conns == 2)
    late.close()


def test_a_client_left_to_another_worker_that_does_not_take_it_is_taken_after_the_fallback(
    worker, second_worker, monkeypatch
):
    """The other worker may have every thread busy, or be stuck: no client waits on what the board said."""
    monkeypatch.setattr(workerboard, "STALE", 60.0)  # so that only the fallback, not the board, lets it take the client
    client = connect(worker)
    client.sendall(REQUEST)
    turn(worker, lambda: worker.busy == 1)
    second_worker.wait_for_and_dispatch_events(0)  # it posts, serving nothing, then its loop never turns again
    socket.create_connection(worker.sockets[0].getsockname(), timeout=5)
    started = time.monotonic()
    turn(worker, lambda: worker.nr_conns == 2)
    assert ACCEPT_FALLBACK_MS / 1000 <= time.monotonic() - started < 10
    assert second_worker.nr_conns == 0


def test_a_thread_that_has_answered_goes_on_to_a_parked_request_without_the_loop(worker):
    clients = [connect(worker) for _ in range(3)]
    for client in clients[:2]:
        client.sendall(REQUEST)
    turn(worker, lambda: worker.busy == 2)
    clients[2].sendall(REQUEST)  # every thread busy: parked
    turn(worker, lambda: len(worker.parked) == 1)
    worker.wsgi.release.set()
    assert answers(clients[2], 1).startswith(b"HTTP/1.1 200")  # the loop has not turned since
    assert not worker.parked
    turn(worker, lambda: worker.busy == 0)
    assert worker.nr_conns == 3 and len(worker.keepalived_conns) == 3  # each connection handed back, kept alive
    for client in clients[:2]:
        assert answers(client, 1).startswith(b"HTTP/1.1 200")
    for client in clients:  # and each serves its next request
        client.sendall(REQUEST)
        turn(worker, lambda: _readable(client))  # noqa: B023  # this iteration's client, awaited here
        assert answers(client, 1).startswith(b"HTTP/1.1 200")


def test_a_partial_head_pipelined_behind_a_request_is_read_by_the_loop(worker):
    client = connect(worker)
    worker.wsgi.release.set()
    client.sendall(REQUEST + REQUEST[:10])  # the second request's head stops half way
    turn(worker, lambda: worker.nr == 1 and len(worker.heads) == 1 and worker.busy == 0)  # no thread waits
    assert answers(client, 1).startswith(b"HTTP/1.1 200")
    client.sendall(REQUEST[10:])
    turn(worker, lambda: worker.nr == 2 and not worker.heads and worker.busy == 0)
    assert answers(client, 1).startswith(b"HTTP/1.1 200")


def test_a_malformed_chunked_body_on_a_request_that_reads_none_gets_one_answer(worker):
    """The app answers without reading the body; draining it afterwards finds it malformed. The connection
    ends there: gunicorn's error page would be a second answer to the one request."""
    client = connect(worker)
    worker.wsgi.release.set()
    client.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
    turn(worker, lambda: worker.nr == 1 and worker.nr_conns == 0 and worker.busy == 0)
    received = b""
    while piece := client.recv(4096):
        received += piece
    assert received.count(b"HTTP/1.1 ") == 1 and received.startswith(b"HTTP/1.1 200"), received


LONG_HEAD = b"GET /x HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 8000) for i in range(9))


def _refused_at_once(worker, client: socket.socket) -> bytes:
    """What `client` receives for its head over HEAD_BUFFER, not ended: the connection ends now, not after a thread
    has read on for the header timeout (30 s here), which a client that sends no more would make it wait out."""
    turn(worker, lambda: worker.busy == 0 and worker.nr_conns == 0, seconds=5)
    received = b""
    while piece := client.recv(4096):
        received += piece
    return received


def test_a_head_longer_than_the_loop_buffers_is_refused_at_once(worker):
    client = connect(worker)
    client.sendall(LONG_HEAD)  # and nothing more
    received = _refused_at_once(worker, client)
    assert received.count(b"HTTP/1.1 ") == 1 and received.startswith(b"HTTP/1.1 431"), received
    other = connect(worker)
    worker.wsgi.release.set()
    other.sendall(REQUEST)
    turn(worker, lambda: _readable(other))
    assert answers(other, 1).startswith(b"HTTP/1.1 200")


def test_a_head_longer_than_the_loop_buffers_is_refused_however_its_bytes_come(worker):
    """Ended in a second read past the loop's 64 KiB, it is as long as one the loop gave up on: refused too."""
    head = LONG_HEAD + b"\r\n"  # whole
    client = connect(worker)
    client.sendall(head[: 60 << 10])
    turn(worker, lambda: worker.heads and len(next(iter(worker.heads)).head or b"") >= 60 << 10)
    client.sendall(head[60 << 10 :])
    worker.wsgi.release.set()
    turn(worker, lambda: _readable(client))
    assert client.recv(200).startswith(b"HTTP/1.1 431")


def test_a_head_longer_than_the_loop_buffers_behind_a_request_is_refused_at_once(worker):
    client = connect(worker)
    worker.wsgi.release.set()
    client.sendall(REQUEST + LONG_HEAD)
    received = _refused_at_once(worker, client)
    assert received.startswith(b"HTTP/1.1 200") and received.count(b"HTTP/1.1 431") == 1, received


def _answered_and_sent_again(worker, client: socket.socket, next_bytes: bytes) -> None:
    """`client`'s request let go, with `next_bytes` sent while the app was still answering it."""
    client.sendall(REQUEST)
    turn(worker, lambda: worker.busy == 1)
    assert worker.wsgi.started.acquire(timeout=5)
    client.sendall(next_bytes)
    worker.wsgi.release.set()


def test_a_request_that_follows_its_answer_at_once_is_served_by_the_same_thread(worker):
    client = connect(worker)
    _answered_and_sent_again(worker, client, REQUEST)
    assert answers(client, 2).count(b"HTTP/1.1 200") == 2  # the loop has not turned since the first request
    assert worker.nr == 2
    turn(worker, lambda: worker.busy == 0)  # then the connection is the loop's, kept alive
    assert worker.keepalived_conns and worker.nr_conns == 1


def test_no_thread_waits_for_a_follow_on_while_the_worker_has_more_connections_than_threads(worker):
    """Its waiting could keep another connection's request from a thread."""
    client, *others = [connect(worker) for _ in range(3)]
    _answered_and_sent_again(worker, client, REQUEST)
    assert answers(client, 1).count(b"HTTP/1.1 200") == 1
    time.sleep(0.1)
    assert worker.nr == 1 and not _readable(client)  # the second request waits for the loop
    turn(worker, lambda: worker.nr == 2)
    assert answers(client, 1).startswith(b"HTTP/1.1 200")
    for other in others:
        other.close()


def test_a_thread_gives_way_to_a_client_waiting_to_be_accepted(worker):
    """Only the loop accepts: threads that went on serving their clients would keep the worker from it."""
    client = connect(worker)
    client.sendall(REQUEST)
    turn(worker, lambda: worker.busy == 1)
    assert worker.wsgi.started.acquire(timeout=5)
    waiting = socket.create_connection(worker.sockets[0].getsockname(), timeout=5)  # in the listen backlog
    client.sendall(REQUEST)
    worker.wsgi.release.set()
    assert answers(client, 1).count(b"HTTP/1.1 200") == 1
    time.sleep(0.1)
    assert worker.nr == 1 and not _readable(client)
    turn(worker, lambda: worker.nr == 2 and worker.nr_conns == 2)
    assert answers(client, 1).startswith(b"HTTP/1.1 200")
    waiting.close()


def test_a_follow_on_head_that_comes_slowly_holds_no_thread(worker):
    client = connect(worker)
    _answered_and_sent_again(worker, client, REQUEST[:10])
    assert answers(client, 1).startswith(b"HTTP/1.1 200")
    turn(worker, lambda: len(worker.heads) == 1 and worker.busy == 0)  # the loop reads it, to its deadline
    client.sendall(REQUEST[10:])
    turn(worker, lambda: worker.nr == 2 and not worker.heads)
    assert answers(client, 1).startswith(b"HTTP/1.1 200")


def _kept_alive_past_its_keepalive(worker) -> socket.socket:
    """A connection that has been answered, kept alive by the loop, and whose keepalive has just run out."""
    client = connect(worker)
    worker.wsgi.release.set()
    client.sendall(REQUEST)
    turn(worker, lambda: _readable(client))
    assert answers(client, 1).startswith(b"HTTP/1.1 200")
    turn(worker, lambda: len(worker.keepalived_conns) == 1)
    worker.keepalived_conns[0].timeout = time.monotonic()
    return client


def test_a_request_that_arrives_as_its_keepalive_runs_out_is_served_not_dropped(worker):
    """The request arrives after the loop last polled, and the loop's next step is the sweep of expired
    connections: the client sent it in time, and a POST it would not be free to send again."""
    client = _kept_alive_past_its_keepalive(worker)
    client.sendall(REQUEST)
    time.sleep(0.05)  # in the server's socket (loopback), with no turn of the loop since
    worker.murder_keepalived()
    assert answers(client, 1).startswith(b"HTTP/1.1 200")
    turn(worker, lambda: worker.busy == 0 and len(worker.keepalived_conns) == 1)  # and kept alive again


def test_a_connection_idle_past_its_keepalive_is_closed(worker):
    client = _kept_alive_past_its_keepalive(worker)
    worker.murder_keepalived()
    assert worker.nr_conns == 0 and not worker.keepalived_conns
    client.settimeout(2)
    assert client.recv(100) == b""


def test_closing_a_connection_never_stalls_the_loop(worker, monkeypatch):
    """A connection that ends is closed with a linger of up to 2 s for what the client still sends; a client
    that neither reads nor closes must not make the event loop (every other connection) wait that long."""
    monkeypatch.setattr(worker_module, "LINGER_SECONDS", 1.0)
    silent = connect(worker)
    worker.wsgi.release.set()
    silent.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")  # then neither reads nor closes
    longest = 0.0
    deadline = time.monotonic() + 30
    while (worker.nr_conns or worker.lingering) and time.monotonic() < deadline:  # until the socket is closed
        started = time.monotonic()
        worker.wait_for_and_dispatch_events(0.05)
        worker.murder_pending()
        longest = max(longest, time.monotonic() - started)
    assert worker.nr_conns == 0 and not worker.lingering
    assert longest < 0.5, longest  # no turn of the loop waited out the linger
    assert answers(silent, 1).startswith(b"HTTP/1.1 200")
    assert silent.recv(100) == b""


def test_a_client_that_does_not_close_after_a_refused_head_holds_no_thread(worker):
    """The linger after a refused head (or any answer that ends the connection) is the event loop's: a client
    that never closes costs a socket for its 2 s, not a thread, or one such client a second would take a
    thread for good."""
    garbage = connect(worker)
    garbage.sendall(b"BAD\r\n\r\n")
    turn(worker, lambda: _readable(garbage))
    assert garbage.recv(4096).startswith(b"HTTP/1.1 400")
    turn(worker, lambda: worker.busy == 0 and worker.nr_conns == 0, seconds=1.5)  # no thread waits for the client
    assert worker.lingering  # the socket does, until the client closes
    client = connect(worker)
    worker.wsgi.release.set()
    client.sendall(REQUEST)
    turn(worker, lambda: _readable(client))
    assert answers(client, 1).startswith(b"HTTP/1.1 200")
    garbage.close()  # the client closes in turn: the socket is closed at once
    turn(worker, lambda: not worker.lingering, seconds=1)


def _lingering_while_running(worker) -> tuple[threading.Thread, socket.socket]:
    """The worker's whole loop running (in a thread), and a client whose connection has ended and lingers."""
    worker.poller.unregister(worker.method_queue.fileno())  # run() registers it again
    running = threading.Thread(target=worker.run)
    running.start()
    client = socket.create_connection(worker.sockets[0].getsockname(), timeout=5)
    client.sendall(b"BAD\r\n\r\n")
    assert client.recv(4096).startswith(b"HTTP/1.1 400")
    deadline = time.monotonic() + 5
    while not worker.lingering:
        assert time.monotonic() < deadline, "the connection never lingered"
        time.sleep(0.01)
    return running, client


def test_a_stopping_worker_waits_for_its_lingering_connections(worker):
    """gunicorn's loop ends once it has no connection left, and an ended connection lingering for its client
    is not one: the worker exited, closing it with what the client sent since unread, which resets the
    connection and can cut off the answer the client has not read yet. A worker stops (a restart, a reload,
    max_requests) while answers like a refused upload's are under way. It now waits for them, each until its
    client closes or its LINGER_SECONDS run out."""
    running, client = _lingering_while_running(worker)
    worker.handle_exit(signal.SIGTERM, None)
    running.join(0.5)
    assert running.is_alive()  # the client has not closed yet
    client.sendall(b"the rest of an upload" * 100)  # read and dropped, not left to reset the connection
    client.close()
    running.join(1)
    assert not running.is_alive() and not worker.lingering


def test_a_stopping_worker_waits_for_a_lingering_client_no_longer_than_its_linger(worker):
    running, client = _lingering_while_running(worker)
    stopped = time.monotonic()
    worker.handle_exit(signal.SIGTERM, None)
    running.join(10)
    assert not running.is_alive() and not worker.lingering
    assert 1 < time.monotonic() - stopped < worker_module.LINGER_SECONDS + 1
    client.close()


class FailingApp(App):
    """Answers with a body that fails after its first piece, as a download whose store goes away does."""

    def __call__(self, environ, start_response):
        def pieces():
            yield b"the first piece"
            raise RuntimeError("the rest cannot be read")

        start_response("200 OK", [("Content-Length", "100")])
        return pieces()


def test_a_client_that_does_not_close_after_a_failed_response_holds_no_thread(worker):
    """A response that fails once its head has gone can only end its connection; gunicorn waited up to 2 s for
    the client to close in turn in the thread. The loop waits instead, as after a refused head."""
    worker.wsgi = FailingApp()
    failed = connect(worker)
    failed.sendall(REQUEST)
    turn(worker, lambda: _readable(failed))
    assert failed.recv(4096).startswith(b"HTTP/1.1 200")
    turn(worker, lambda: worker.busy == 0 and worker.nr_conns == 0, seconds=1.5)  # no thread waits for the client
    assert worker.lingering  # the socket does, until the client closes
    assert failed.recv(4096) == b""  # the answer is cut off, and says so
    failed.close()
    turn(worker, lambda: not worker.lingering, seconds=1)


def test_the_worker_tells_the_master_it_lives_at_most_so_often_and_always_within_its_timeout(worker):
    """gunicorn's loop notifies the master at every turn (a syscall each); once per half timeout is what the
    master needs, and the loop turns at least once a second."""
    worker.timeout = 4  # gunicorn gives a worker half of the configured timeout; half of that, 2 s, is over the cap
    worker.notify()
    first = worker.tmp.last_update()
    worker.notify()
    assert worker.tmp.last_update() == first
    time.sleep(1.05)
    worker.notify()
    assert worker.tmp.last_update() > first


def test_the_threads_upload_buffers_are_given_back_once_the_worker_idles_and_not_before(worker):
    """scratch.py: a thread keeps its buffer from one upload to the next; the loop drops its pages when every
    thread has been idle for IDLE_RELEASE_SECONDS."""
    used = []
    app = worker.wsgi

    class Uploading:
        release = app.release  # what the fixture's teardown lets go

        def __call__(self, environ, start_response):
            with scratch(4096) as buffer:
                buffer[:] = b"\xff" * 4096
                used.append(buffer.obj)
            return app(environ, start_response)  # waits for the test's release

    worker.wsgi = Uploading()
    client = connect(worker)
    client.sendall(REQUEST)
    turn(worker, lambda: worker.busy == 1 and bool(used))
    waiting = time.monotonic() + worker_module.IDLE_RELEASE_SECONDS + 0.2
    turn(worker, lambda: time.monotonic() > waiting)  # a busy worker keeps its buffers
    assert used[0][:4096] == b"\xff" * 4096
    app.release.set()
    assert answers(client, 1).startswith(b"HTTP/1.1 200")
    turn(worker, lambda: worker.busy == 0)
    answered = time.monotonic()
    assert used[0][:4096] == b"\xff" * 4096
    turn(worker, lambda: used[0][:4096] == bytes(4096))  # dropped pages read as zeros
    assert time.monotonic() - answered >= worker_module.IDLE_RELEASE_SECONDS


# -- a file response to a client slower than the disk: the event loop finishes sending it, no thread waits


class FileApp(App):
    """Answers each request with the same file, as a download does (wsgi.file_wrapper, which the server sends
    with sendfile), and notes each body's close and each access line with what had been sent by then."""

    def __init__(self, path):
        super().__init__()
        self.path, self.size = path, path.stat().st_size
        self.closed: list[int] = []  # per response, what sendfile had sent when the body was closed
        self.closed_on: list[str] = []  # and the thread that closed it
        self.logged: list[int] = []  # likewise, when the access line was written
        self.hold_close: threading.Event | None = None  # when set, each close waits for it (a slow close)

    def __call__(self, environ, start_response):
        start_response("200 OK", [("Content-Length", str(self.size))])
        body = environ["wsgi.file_wrapper"](open(self.path, "rb"), 8192)  # noqa: SIM115  # the server closes it
        close, sock = body.close, environ["gunicorn.socket"]

        def closing():
            if self.hold_close is not None:
                self.hold_close.wait(10)
            close()
            self.closed.append(sock.sendfile_sent)
            self.closed_on.append(threading.current_thread().name)

        body.close = closing
        return body


@pytest.fixture
def download(worker, tmp_path, monkeypatch):
    """The worker serving a 16 MiB file (more than loopback's buffers take), its access log noted
    (FileApp.logged); the idle timeout long enough that only a test that shortens it sees it."""
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(16 << 20))
    app = FileApp(path)
    worker.wsgi = handing_off(app)
    worker.wsgi.release = app.release  # for the fixture's teardown
    monkeypatch.setattr(IdleTimeoutSocket, "idle_timeout", 30.0)
    monkeypatch.setattr(
        worker.log._log, "access", lambda resp, req, environ, took: app.logged.append(resp.sock.sendfile_sent)
    )
    return worker, app


def _slow_reader(worker) -> socket.socket:
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connections = worker.nr_conns
    client.connect(worker.sockets[0].getsockname())
    client.settimeout(10)
    turn(worker, lambda: worker.nr_conns == connections + 1)
    return client


def _read_response(client: socket.socket, size: int) -> bytes:
    received = bytearray()
    while not received.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in received:
        received += client.recv(65536)
    body = received[received.index(b"\r\n\r\n") + 4 :]
    while len(body) < size and (piece := client.recv(1 << 20)):
        body += piece
    return bytes(body)


def test_a_download_to_a_slow_reader_is_finished_by_the_loop_and_holds_no_thread(download):
    worker, app = download
    client = _slow_reader(worker)
    client.sendall(REQUEST)
    turn(worker, lambda: worker.sending and worker.busy == 0)  # the thread is free, the client has read nothing
    assert app.closed == [] and app.logged == []  # both wait for the last byte
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_response(client, app.size)))
    reader.start()
    turn(worker, lambda: not worker.sending, seconds=20)
    turn(worker, lambda: worker.keepalived_conns)  # released once what waited for the last byte has run
    reader.join(10)
    assert received == [app.path.read_bytes()]
    assert app.closed == [app.size] and app.logged == [app.size]  # the access line, then the close, once sent
    assert app.closed_on[0].startswith("wopihost-sent")  # on the closing thread, not in the loop
    assert worker.nr_conns == 1 and len(worker.keepalived_conns) == 1  # kept alive, as after any response
    client.sendall(REQUEST)  # and it serves its next request
    reader = threading.Thread(target=lambda: received.append(_read_response(client, app.size)))
    reader.start()
    turn(worker, lambda: len(app.closed) == 2, seconds=20)
    reader.join(10)
    assert received[1] == received[0]
    client.close()


def test_a_download_to_a_reader_that_stalls_is_dropped_by_the_loop_after_the_idle_timeout(download, monkeypatch):
    worker, app = download
    monkeypatch.setattr(IdleTimeoutSocket, "idle_timeout", 1.0)
    client = _slow_reader(worker)
    client.sendall(REQUEST)
    turn(worker, lambda: worker.sending)
    started = time.monotonic()
    turn(worker, lambda: worker.nr_conns == 0)
    assert 0.9 < time.monotonic() - started < 6  # an idle timeout after the last byte the client took
    assert not worker.sending and worker.busy == 0
    turn(worker, lambda: app.closed)  # on the closing thread
    assert len(app.closed) == 1 and 0 < app.closed[0] < app.size  # closed, having sent what the client took
    assert app.logged == app.closed
    with client:
        while client.recv(1 << 20):  # what the buffers held, then the end of the connection
            pass


def test_a_slow_close_after_a_download_holds_up_neither_the_loop_nor_other_connections(download):
    """What waits for a download's last byte runs on the worker's closing thread: a recording reads again what
    was sent, which for a large file takes a while, and the loop goes on serving every other connection."""
    worker, app = download
    app.hold_close = threading.Event()
    first = _slow_reader(worker)
    first.sendall(REQUEST)
    turn(worker, lambda: worker.sending)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_response(first, app.size)))
    reader.start()
    turn(worker, lambda: not worker.sending, seconds=20)  # all sent: its close now waits
    reader.join(10)
    second = _slow_reader(worker)
    second.sendall(REQUEST)
    turn(worker, lambda: worker.sending)  # handed to the loop too
    reader = threading.Thread(target=lambda: received.append(_read_response(second, app.size)))
    reader.start()
    turn(worker, lambda: not reader.is_alive(), seconds=20)
    assert received == [app.path.read_bytes()] * 2
    assert app.closed == []  # the second download was served while the first one's close still waited
    app.hold_close.set()
    turn(worker, lambda: len(worker.keepalived_conns) == 2)  # both closed, then kept alive
    assert app.closed == [app.size, app.size] and app.logged == [app.size, app.size]
    assert all(name.startswith("wopihost-sent") for name in app.closed_on)
    first.close()
    second.close()


def test_a_download_to_a_reader_that_keeps_up_is_sent_by_its_thread(download, monkeypatch):
    """Each time the download fills the socket, its thread waits a moment for room (KEEP_SENDING_MS) instead of
    handing the rest to the loop, whose turn at each refill would cost more than the sending."""
    monkeypatch.setattr(worker_module, "KEEP_SENDING_MS", 5000)  # room comes within it, however busy the machine
    worker, app = download
    client = connect(worker)
    client.sendall(REQUEST)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_response(client, app.size)))
    reader.start()
    handed_off = []
    turn(worker, lambda: handed_off.append(bool(worker.sending)) or not reader.is_alive(), seconds=20)
    assert received == [app.path.read_bytes()] and not any(handed_off)
    turn(worker, lambda: len(worker.keepalived_conns) == 1)
    assert app.closed == [app.size] and app.logged == [app.size]
    assert not app.closed_on[0].startswith("wopihost-sent")  # closed by the request's thread, once all was sent
    client.close()


def test_a_thread_sending_a_download_gives_it_to_the_loop_when_a_client_waits_to_be_accepted(download, monkeypatch):
    """A worker accepts only while it has a thread free: with every thread sending a download, a new client
    makes them leave the rest to the loop at once, however patient they would be with the readers. (Once one
    has, the client is accepted, and the others may go on.)"""
    monkeypatch.setattr(worker_module, "KEEP_SENDING_MS", 60_000)
    worker, app = download
    readers = [_slow_reader(worker) for _ in range(worker.cfg.threads)]
    for reader in readers:
        reader.sendall(REQUEST)
    turn(worker, lambda: worker.busy == worker.cfg.threads)
    time.sleep(0.2)
    worker.wait_for_and_dispatch_events(0.05)
    assert not worker.sending and worker.busy == worker.cfg.threads  # each thread waits for its reader
    waiting = socket.create_connection(worker.sockets[0].getsockname(), timeout=10)
    turn(worker, lambda: worker.sending and worker.nr_conns == len(readers) + 1)  # handed off; the client accepted
    for client in [*readers, waiting]:
        client.close()


def test_a_download_whose_connection_ends_is_finished_by_its_thread(download):
    """After a response with Connection: close, the connection is closed with a linger, which the loop must
    not do: the thread sends the rest itself, then closes."""
    worker, app = download
    client = _slow_reader(worker)
    client.sendall(REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    turn(worker, lambda: worker.busy == 1)
    time.sleep(0.3)
    worker.wait_for_and_dispatch_events(0.05)
    assert not worker.sending and worker.busy == 1  # the thread still sends
    assert _read_response(client, app.size) == app.path.read_bytes()
    assert client.recv(10) == b""  # then closed
    turn(worker, lambda: worker.nr_conns == 0)
    assert app.closed == [app.size] and app.logged == [app.size]


# -- a response's head leaves with the first piece of its body


def _loopback(buffers: int | None = None) -> tuple[socket.socket, socket.socket]:
    """The accepted (worker's) end and the client's end of one loopback TCP connection; with `buffers`, the
    worker's send buffer and the client's receive buffer that small."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.socket()
        if buffers:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
        client.connect(server.getsockname())
        accepted, _ = server.accept()
    if buffers:
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
    client.settimeout(10)
    return accepted, client


@pytest.fixture
def tcp():
    """A worker-side IdleTimeoutSocket and the client's end of one loopback TCP connection."""
    accepted, client = _loopback()
    sock = IdleTimeoutSocket.adopt(accepted)
    sock.settimeout(10)
    with sock, client:
        yield sock, client


HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0.2)[0])


def _receive(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        data += sock.recv(size - len(data)) or b"!"  # a closed connection ends the read as a mismatch
    return bytes(data)


def test_a_response_head_waits_for_the_first_piece_of_its_body(tcp):
    sock, client = tcp
    sock.new_response()
    sock.sendall(HEAD)
    assert not _readable(client)
    sock.sendall(b"body")
    assert client.recv(1000) == HEAD + b"body"  # one segment: one read gets both
    sock.end_response()
    assert not _readable(client)


def test_the_next_response_head_is_held_again(tcp):
    sock, client = tcp
    for _ in range(2):
        sock.new_response()
        sock.sendall(HEAD)
        assert not _readable(client)
        sock.sendall(b"body")
        sock.end_response()
        assert _receive(client, len(HEAD) + 4) == HEAD + b"body"


def test_a_response_without_a_body_sends_its_head_when_it_ends(tcp):
    sock, client = tcp
    sock.new_response()
    sock.sendall(HEAD)
    sock.end_response()
    assert _receive(client, len(HEAD)) == HEAD


def test_a_failed_response_drops_its_held_head(tcp):
    sock, client = tcp
    sock.new_response()
    sock.sendall(HEAD)
    sock.end_response(failed=True)
    sock.sendall(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")  # what gunicorn writes next, if anything
    assert _receive(client, 38) == b"HTTP/1.1 500 Internal Server Error\r\n\r\n"


def test_a_held_head_goes_before_a_send_and_a_sendfile(tcp, tmp_path):
    sock, client = tcp
    sock.new_response()
    sock.sendall(HEAD)
    sock.send(b"body")
    assert _receive(client, len(HEAD) + 4) == HEAD + b"body"
    content = tmp_path / "blob"
    content.write_bytes(b"f" * 100_000)
    sock.new_response()
    sock.sendall(HEAD)
    with open(content, "rb") as file:
        sock.sendfile(file, 10, 50_000)
    sock.end_response()
    assert _receive(client, len(HEAD) + 50_000) == HEAD + b"f" * 50_000
    assert sock.sendfile_sent == 50_000
    assert not _readable(client)


def test_a_large_body_after_a_held_head_arrives_whole_and_in_order(tcp):
    sock, client = tcp
    body = os.urandom(8 << 20)  # far more than the socket buffers: sendmsg sends it in parts
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(_receive(client, len(HEAD) + len(body))))
    reader.start()
    sock.new_response()
    sock.sendall(HEAD)
    sock.sendall(body)
    sock.end_response()
    reader.join()
    assert received == HEAD + body


# -- a listener bound to a loopback address gives its connections WOPIHOST_LOOPBACK_TCP_CONGESTION


def _congestion(sock: socket.socket) -> str:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()


SYSTEM_CONGESTION = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()


@pytest.fixture
def chosen(monkeypatch):
    """WOPIHOST_LOOPBACK_TCP_CONGESTION set to an algorithm other than the system's, so that a test sees whether
    it was used: Reno, which every process may choose, unless the system's is Reno."""
    choice = "cubic" if SYSTEM_CONGESTION == "reno" else "reno"
    with socket.socket() as probe:
        try:
            probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, choice.encode())
        except OSError:
            pytest.skip(f"this kernel does not let this process choose {choice}")
    monkeypatch.setenv("WOPIHOST_LOOPBACK_TCP_CONGESTION", choice)
    return choice


def _accepted(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(listener.getsockname()[:2])
    accepted, _ = listener.accept()
    return accepted, client


@pytest.mark.parametrize("system", [False, True], ids=["chosen", "system"])
def test_the_connections_of_a_loopback_listener_get_the_chosen_congestion_control(
    chosen, monkeypatch, listener, system
):
    """Through the worker's own setup: `system` leaves the system's choice."""
    if system:
        monkeypatch.setenv("WOPIHOST_LOOPBACK_TCP_CONGESTION", "system")
    worker = _worker(1, listener)
    try:
        accepted, client = _accepted(listener)
        with accepted, client:
            assert _congestion(accepted) == (SYSTEM_CONGESTION if system else chosen)
    finally:
        _stop(worker)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("0.0.0.0", False), ("::", False)])
def test_only_a_listener_bound_to_a_loopback_address_is_changed(chosen, host, loopback):
    """A listener on every address also serves other machines, over networks that congestion control is for."""
    try:
        listener = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError:
        pytest.skip(f"cannot listen on {host} here")
    with listener:
        worker_module.use_congestion_control(listener, chosen, logging.getLogger("test"))
        accepted, client = _accepted(listener)
        with accepted, client:
            assert _congestion(accepted) == (chosen if loopback else SYSTEM_CONGESTION)


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", False),
        ("192.168.0.5", False),
        ("2001:db8::1", False),
        ("::ffff:10.1.2.3", False),
        ("0.0.0.0", False),
    ],
)
def test_loopback_addresses(host, loopback):
    assert worker_module._loopback(host) is loopback


def test_a_unix_socket_listener_is_left_alone(tmp_path, caplog):
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "sock"))
        listener.listen()
        worker_module.use_congestion_control(listener, "reno", logging.getLogger("test"))
    assert not caplog.records


def test_a_congestion_control_the_kernel_refuses_is_reported_and_the_system_s_stays(caplog):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with caplog.at_level(logging.WARNING):
            worker_module.use_congestion_control(listener, "nosuchalgo", logging.getLogger("test"))
        accepted, client = _accepted(listener)
        with accepted, client:
            assert _congestion(accepted) == SYSTEM_CONGESTION
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "WOPIHOST_LOOPBACK_TCP_CONGESTION: cannot use nosuchalgo on 127.0.0.1 (this kernel has no such algorithm); "
        "its connections keep the system's choice"
    )


def test_a_congestion_control_this_server_may_not_choose_is_reported():
    """An unprivileged server may choose only what net.ipv4.tcp_allowed_congestion_control lists."""
    proc = Path("/proc/sys/net/ipv4")
    allowed = (proc / "tcp_allowed_congestion_control").read_text().split()
    refused = [name for name in (proc / "tcp_available_congestion_control").read_text().split() if name not in allowed]
    if os.geteuid() != 0 or not refused:
        pytest.skip("needs root, to become an unprivileged user, and an algorithm only root may choose")
    script = f"""
import logging, os, socket
from wopihost.worker import use_congestion_control
os.setuid(65534)
logging.basicConfig(format="%(message)s")
with socket.create_server(("127.0.0.1", 0)) as listener:
    use_congestion_control(listener, {refused[0]!r}, logging.getLogger())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stderr == (
        f"WOPIHOST_LOOPBACK_TCP_CONGESTION: cannot use {refused[0]} on 127.0.0.1 (not in "
        "net.ipv4.tcp_allowed_congestion_control, which is all this server may choose); its connections keep "
        "the system's choice\n"
    )


def test_a_download_over_a_unix_socket_arrives_whole(tmp_path):
    """A server bound to a Unix socket (WOPIHOST_BIND=unix:...) sends files with sendfile too."""
    left, right = socket.socketpair()
    sock = IdleTimeoutSocket.adopt(left)
    data = os.urandom(4 << 20)  # far more than a Unix socket's buffer
    content = tmp_path / "blob"
    content.write_bytes(data)
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(_receive(right, len(data))))
    reader.start()
    with sock, right, open(content, "rb") as file:
        sock.settimeout(10)
        sock.new_response()
        assert sock.sendfile(file, 0, len(data)) == len(data)
        reader.join()
    assert received == data


# -- a file sent with sendfile: each wait for the client, not the whole transfer, bounded by the idle timeout


@pytest.fixture
def impatient_tcp(monkeypatch):
    """As `tcp`, the worker's socket with an idle timeout of half a second and small buffers on both
    ends, so that a few hundred KiB fill them."""
    monkeypatch.setattr(IdleTimeoutSocket, "idle_timeout", 0.5)
    accepted, client = _loopback(buffers=4096)
    sock = IdleTimeoutSocket.adopt(accepted)
    sock.setblocking(True)  # what gunicorn does before each request: here, the idle timeout
    with sock, client:
        yield sock, client


def test_a_sendfile_to_a_reader_that_stalls_ends_after_the_idle_timeout(impatient_tcp, tmp_path):
    sock, client = impatient_tcp
    content = tmp_path / "blob"
    content.write_bytes(os.urandom(8 << 20))
    sock.new_response()
    raised: list[BaseException] = []

    def send():
        with open(content, "rb") as file:
            try:
                sock.sendfile(file, 0, 8 << 20)
            except BaseException as exc:
                raised.append(exc)

    sender = threading.Thread(target=send)
    started = time.monotonic()
    sender.start()
    sender.join(10)
    if sender.is_alive():  # a sendfile that would wait forever: the client leaves, so that the test ends
        client.close()
        sender.join()
        pytest.fail("the sendfile went on waiting for a client that read nothing")
    assert 0.4 < time.monotonic() - started < 3  # one idle timeout without room in the buffers, not several
    assert len(raised) == 1 and isinstance(raised[0], BrokenPipeError)
    assert 0 < sock.sendfile_sent < 8 << 20  # what the buffers took before the client stalled
    assert sock.gettimeout() == 0.5  # still the idle timeout, for what gunicorn does next


def test_a_sendfile_to_a_slow_but_steady_reader_outlasts_the_idle_timeout(impatient_tcp, tmp_path, monkeypatch):
    sock, client = impatient_tcp
    # 2 s here, forty of the reader's pauses, so that a late wake-up on a loaded machine is not a stall
    monkeypatch.setattr(IdleTimeoutSocket, "idle_timeout", 2.0)
    sock.setblocking(True)
    data = os.urandom(256 << 10)
    content = tmp_path / "blob"
    content.write_bytes(data)
    received = bytearray()

    def read_slowly():
        while len(received) < len(data) and (piece := client.recv(4096)):
            received.extend(piece)
            time.sleep(0.05)  # well under the idle timeout each time, 64 times or more: well over it in all

    reader = threading.Thread(target=read_slowly)
    reader.start()
    started = time.monotonic()
    with open(content, "rb") as file:
        assert sock.sendfile(file, 0, len(data)) == len(data)
    reader.join()
    assert time.monotonic() - started > 2  # the whole transfer took longer than the idle timeout
    assert received == data and sock.sendfile_sent == len(data)


def test_the_date_header_is_formatted_once_a_second_and_always_shows_the_current_second():
    formatted: list[float] = []
    now = [1_700_000_000.2]

    def http_date(timestamp: float) -> str:
        formatted.append(timestamp)
        return email.utils.formatdate(timestamp, usegmt=True)

    date = DateOfTheSecond(http_date, clock=lambda: now[0])
    assert date() == "Tue, 14 Nov 2023 22:13:20 GMT"
    now[0] = 1_700_000_000.999
    assert date() == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert len(formatted) == 1
    now[0] = 1_700_000_001.0
    assert date() == "Tue, 14 Nov 2023 22:13:21 GMT"
    assert len(formatted) == 2
    assert date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"  # a time given is formatted as asked


def test_gunicorn_dates_its_responses_with_the_current_second():
    before = time.time()
    header = util.http_date()
    after = time.time()
    assert isinstance(util.http_date, DateOfTheSecond)
    assert header in {email.utils.formatdate(int(t), usegmt=True) for t in (before, after)}


def test_a_settled_config_reads_every_setting_as_gunicorn_s_config_does():
    config = Config()
    config.set("threads", 7)
    config.set("limit_request_line", 123)
    settled = SettledConfig(config)
    for name in sorted(config.settings):
        assert getattr(settled, name) == getattr(config, name), name
        assert getattr(settled, name) == getattr(config, name), name  # the second read, from the instance
    assert (settled.threads, settled.limit_request_line, bool(settled.is_ssl)) == (7, 123, False)
    with pytest.raises(AttributeError):
        settled.no_such_setting  # noqa: B018  # the read is the test


@pytest.mark.parametrize(
    "url, compiled",
    [
        ("", ["sqlite"]),
        ("sqlite:////nonexistent/dir/db.sqlite3", ["sqlite"]),
        ("postgresql+psycopg://nobody@127.0.0.1:1/nothing-listens-there", ["postgresql"]),
        ("nosuchdb://x", []),
    ],
    ids=["default", "sqlite-file", "postgresql", "unknown-dialect"],
)
def test_the_master_compiles_the_hot_statements_before_it_forks(url, compiled):
    """gunicorn's master imports the worker module: the statements are compiled there, for the database the
    workers will use, without connecting to it; a URL it cannot use is left to the workers to report."""
    script = "import wopihost.worker, wopihost.prepared as p; print(sorted({n for s in p._MADE for n in s._compiled}))"
    env = {**os.environ, "WOPIHOST_DATABASE_URL": url}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == repr(compiled)
