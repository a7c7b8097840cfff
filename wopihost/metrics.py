"""Prometheus metrics: what requests, proofs and sweeps did, and the state the database holds.

Requests are observed once each, in one place (Observer, the outermost WSGI layer), when the response has
been sent: a counter by operation and status, a latency histogram and byte counters by operation. The
operation is one of a fixed set of names (operations.py), so that no client can grow the number of series.

Under gunicorn each worker process counts for itself, in prometheus_client's multiprocess mode (files in
PROMETHEUS_MULTIPROC_DIR, which wopihost/server.py prepares before any worker starts), and whichever
process answers a scrape reads them all. What is held in the database (upload sessions, locks) is read
from it at scrape time instead, so it is right across workers and nodes.

A request is tallied in plain Python, and the tallies are added to prometheus_client's values once a second
(FLUSH_SECONDS), before a scrape this process answers, and when the process exits: each value a request moves
costs a lock, a getpid and a write to the shared file, 7% of a CheckFileInfo's CPU when done per request. So a
scrape answered by another worker may lag up to a second behind, and a worker killed outright (SIGKILL) loses
what it counted in its last second.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Sequence
from wsgiref.simple_server import WSGIRequestHandler, make_server

import sqlalchemy as sa
from flask import Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from .gc import Collected, Interrupted
from .logs import FILE_ID, OPERATION
from .models import CoauthLock, Lock, UploadSession
from .operations import UNMATCHED, describe
from .proofcheck import PROOF_FAILED
from .services import Services
from .wsgibody import Watched

log = logging.getLogger("wopihost.metrics")
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# From a CheckFileInfo (milliseconds) to a GetFile or commit of gigabytes (minutes).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
SESSION_KINDS = ("cspp", "graph")
FLUSH_SECONDS = 1.0
FLUSHER = "wopihost-metrics-flush"  # the name of a flusher thread, with its Metrics' id


class _Tally:
    """What the requests of one operation and status did since the last flush."""

    __slots__ = ("count", "seconds", "buckets", "bytes_in", "bytes_out")

    def __init__(self):
        self.count, self.seconds, self.bytes_in, self.bytes_out = 0, 0.0, 0, 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf


class Metrics:
    """One application's metrics. `registry` is what a scrape reads: this process's own metrics, or every
    worker's in multiprocess mode; the database's state either way."""

    def __init__(self, services: Services):
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._tallying = threading.Lock()
        self._flusher_pid: int | None = None  # the process whose flusher thread runs, if one does
        flush = _flush_if_alive(weakref.ref(self))  # weakly: an app that is dropped goes
        atexit.register(flush)  # a worker's last counts, when it exits as asked
        directory = os.environ.get(MULTIPROCESS_DIR)
        self.registry = CollectorRegistry()
        self.registry.register(_FlushFirst(flush))  # first: a registry collects in the order it was given
        own = CollectorRegistry() if directory else self.registry
        self.requests = Counter(
            "wopihost_requests",
            "Requests answered, by operation and HTTP status",
            ["operation", "status"],
            registry=own,
        )
        self.duration = Histogram(
            "wopihost_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by operation",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.bytes_in = Counter(
            "wopihost_request_body_bytes",
            "Request body bytes, as declared by Content-Length, by operation",
            ["operation"],
            registry=own,
        )
        self.bytes_out = Counter(
            "wopihost_response_body_bytes", "Response body bytes sent, by operation", ["operation"], registry=own
        )
        self.proof_failures = Counter(
            "wopihost_proof_failures", "WOPI requests refused for their proof signature", registry=own
        )
        self.sweeps = Counter(
            "wopihost_gc_sweeps", "Periodic garbage collections, by result (ok, failed)", ["result"], registry=own
        )
        self.swept = Counter(
            "wopihost_gc_deleted", "What periodic garbage collection deleted, by kind", ["kind"], registry=own
        )
        self.last_sweep = Gauge(
            "wopihost_gc_last_sweep_timestamp_seconds",
            "When a worker last finished a garbage collection (Unix time)",
            registry=own,
            multiprocess_mode="max",
        )
        for result in ("ok", "failed"):
            self.sweeps.labels(result)
        for kind in Collected.__dataclass_fields__:
            self.swept.labels(kind)
        if directory:
            MultiProcessCollector(self.registry, directory)
        self.registry.register(StateCollector(services))

    def observe(self, operation: str, status: str, seconds: float, bytes_in: int, bytes_out: int) -> None:
        bucket = bisect_left(LATENCY_BUCKETS, seconds)  # the first bound >= seconds, as Histogram.observe finds it
        with self._tallying:
            tally = self._tallies.get((operation, status))
            if tally is None:
                tally = self._tallies[operation, status] = _Tally()
            tally.count += 1
            tally.seconds += seconds
            tally.buckets[bucket] += 1
            tally.bytes_in += bytes_in
            tally.bytes_out += bytes_out
            if self._flusher_pid != os.getpid():  # none yet in this process, or it ended when nothing was left
                self._start_flusher()

    def flush(self) -> None:
        """Add what was tallied since the last flush to the metrics."""
        with self._tallying:
            tallies, self._tallies = self._tallies, {}
        for (operation, status), tally in tallies.items():
            self.requests.labels(operation, status).inc(tally.count)
            duration = self.duration.labels(operation)
            # Histogram has no public way to add many observations at once; these are the values its observe()
            # moves (tests/test_metrics.py checks the exposition against observe()'s).
            duration._sum.inc(tally.seconds)
            for value, count in zip(duration._buckets, tally.buckets, strict=True):
                if count:
                    value.inc(count)
            if tally.bytes_in:
                self.bytes_in.labels(operation).inc(tally.bytes_in)
            if tally.bytes_out:
                self.bytes_out.labels(operation).inc(tally.bytes_out)

    def _start_flusher(self) -> None:
        """With _tallying held. The thread holds the Metrics weakly, so that an app that is dropped goes."""
        self._flusher_pid = os.getpid()
        threading.Thread(
            target=_flush_every_second, args=(weakref.ref(self),), name=f"{FLUSHER}-{id(self):x}", daemon=True
        ).start()

    def sweep_done(self, outcome: Collected | Interrupted) -> None:
        """gc.Sweeper's report: what one sweep deleted, or the failure that ended it partway, after deleting what
        it says (counted too: those blobs are gone all the same)."""
        if isinstance(outcome, Interrupted):
            self.sweeps.labels("failed").inc()
            collected = outcome.done
        else:
            self.sweeps.labels("ok").inc()
            self.last_sweep.set(time.time())
            collected = outcome
        for kind, count in vars(collected).items():
            if count:
                self.swept.labels(kind).inc(count)

    def response(self) -> Response:
        """GET /metrics."""
        return Response(
            generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"}
        )


def _flush_if_alive(ref: weakref.ref[Metrics]) -> Callable[[], None]:
    def flush() -> None:
        metrics = ref()
        if metrics is not None:
            metrics.flush()

    return flush


def _flush_every_second(ref: weakref.ref[Metrics]) -> None:
    """A flusher thread: it ends once a second has passed with nothing tallied, and observe() starts another."""
    while True:
        time.sleep(FLUSH_SECONDS)
        metrics = ref()
        if metrics is None:
            return
        with metrics._tallying:
            if not metrics._tallies:
                metrics._flusher_pid = None
                return
        try:
            metrics.flush()
        except Exception as exc:  # (the file of values cannot grow: a full disk) the thread goes on, or none would
            log.warning("metrics: cannot write this worker's counts: %s", exc)
        del metrics


class _FlushFirst:
    """A collector that collects nothing: it flushes this process's tallies before the registry reads the rest."""

    def __init__(self, flush: Callable[[], None]):
        self._flush = flush

    def describe(self):
        return []

    def collect(self):
        self._flush()
        return []


class StateCollector:
    """Upload sessions and locks as the database holds them, read when scraped (one statement each)."""

    def __init__(self, services: Services):
        self._db, self._clock = services.db, services.clock

    def describe(self):
        return []  # no reading of the database when registered

    def collect(self):
        now = self._clock.now()
        up = GaugeMetricFamily("wopihost_database_up", "Whether this scrape could read the database's state")
        try:
            with self._db.read() as s:
                received = sa.func.coalesce(sa.func.sum(UploadSession.received), 0)
                sessions = s.execute(
                    sa.select(UploadSession.kind, sa.func.count(), received)
                    .where(UploadSession.expires_at > now, UploadSession.result.is_(None))
                    .group_by(UploadSession.kind)
                ).all()
                locks = s.execute(
                    sa.union_all(
                        sa.select(sa.literal("wopi"), sa.func.count()).where(Lock.expires_at > now),
                        sa.select(sa.literal("coauth"), sa.func.count()).where(CoauthLock.expires_at > now),
                    )
                ).all()
        except Exception as exc:  # a scrape says what it can, and that the database did not answer
            log.warning("metrics: cannot read upload sessions and locks: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        open_sessions = GaugeMetricFamily(
            "wopihost_upload_sessions", "Open upload sessions, by kind (cspp, graph)", labels=["kind"]
        )
        session_bytes = GaugeMetricFamily(
            "wopihost_upload_session_bytes", "Bytes received by open upload sessions, by kind", labels=["kind"]
        )
        by_kind = {kind: (count, received) for kind, count, received in sessions}
        for kind in SESSION_KINDS:
            count, received = by_kind.get(kind, (0, 0))
            open_sessions.add_metric([kind], count)
            session_bytes.add_metric([kind], received)
        held = GaugeMetricFamily(
            "wopihost_locks_held", "Unexpired locks: WOPI locks (one per file) and coauth lock holders", labels=["kind"]
        )
        for kind, count in locks:
            held.add_metric([kind], count)
        yield from (open_sessions, session_bytes, held)


def name_request(_exc=None) -> None:
    """Flask's teardown_request hook, which runs for every request, routed or not: its operation and file id
    (OPERATION, FILE_ID) go into its environ, for Observer and the access log."""
    routed = request._get_current_object()  # type: ignore[attr-defined]  # (Flask's documented way past the proxy, which costs per access)
    routed.environ[OPERATION], routed.environ[FILE_ID] = describe(routed)


class Observer:
    """The outermost WSGI layer: observes each request once its response has been sent, under the name Flask
    gave it (name_request)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    def __call__(self, environ, start_response):
        exchange = _Exchange(self.metrics, environ, start_response)
        body = self.app(environ, exchange.start_response)
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and isinstance(body, wrapper):
            # The server sends it itself (sendfile), without iterating it: observed when the server closes it.
            exchange.close_body = getattr(body, "close", None)
            body.close = exchange.close_file
            return body
        return Watched(body, exchange.count, exchange.counted)


class _Exchange:
    """One request and its response, from arrival until the server closes the response."""

    __slots__ = ("metrics", "environ", "started", "_start_response", "status", "headers", "close_body", "sent")
    headers: Sequence[tuple[str, str]]

    def __init__(self, metrics: Metrics, environ: dict, start_response):
        self.metrics, self.environ, self._start_response = metrics, environ, start_response
        self.started = time.perf_counter()
        self.status, self.headers, self.close_body, self.sent = "500", (), None, 0

    def start_response(self, status: str, headers, exc_info=None):
        self.status, self.headers = status[:3], headers
        return self._start_response(status, headers, exc_info)

    def count(self, piece: bytes) -> None:
        self.sent += len(piece)

    def counted(self) -> None:
        self.done(self.sent)

    def done(self, sent: int) -> None:
        environ = self.environ
        length = environ.get("CONTENT_LENGTH", "")
        self.metrics.observe(
            environ.get(OPERATION, UNMATCHED),
            self.status,
            time.perf_counter() - self.started,
            int(length) if length.isdigit() else 0,
            sent,
        )
        if PROOF_FAILED in environ:
            self.metrics.proof_failures.inc()

    def close_file(self) -> None:
        try:
            if self.close_body is not None:
                self.close_body()
        finally:
            self.done(self._sent_by_server())

    def _sent_by_server(self) -> int:
        """What the server sent of a body it was handed whole: our worker's socket counts what sendfile sent
        (wopihost/worker.py); otherwise the server wrote it all, or gave up partway and we cannot tell."""
        sent = getattr(self.environ.get("gunicorn.socket"), "sendfile_sent", None)
        if sent is not None:
            return sent
        length = next((value for name, value in self.headers if name.lower() == "content-length"), "")
        return int(length) if length.isdigit() else 0


# -- a separate address (WOPIHOST_METRICS_BIND) ---------------------------------------------------------


class _ReusePortServer(ThreadingWSGIServer):
    # Every worker listens on the address (the kernel gives each connection to one of them), and each answers
    # for all: a scrape reaches a live worker however many there are, and whatever restarts.
    allow_reuse_port = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # wsgiref would write a plain line to stderr for each scrape
        pass


def serve_separately(metrics: Metrics, host: str, port: int):
    """Answer scrapes on host:port from a thread of this process; returns the server (shutdown() stops it)."""
    server_class: type[_ReusePortServer] = type(
        "Server", (_ReusePortServer,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET}
    )
    server = make_server(host, port, make_wsgi_app(metrics.registry), server_class, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="wopihost-metrics", daemon=True).start()
    return server
