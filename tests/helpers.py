"""Test helpers shared by the test modules."""

from __future__ import annotations

import inspect
import io
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import psutil
import pytest
import sqlalchemy as sa
import webtest

from wopihost.writers import WriterQueue

if TYPE_CHECKING:
    from wopihost.localserver import LocalServer

T = TypeVar("T")
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"  # see fixtures/README.md
TEST_SECRET = "test-secret-at-least-32-characters"  # the settings fixture's token secret (32 at least)


def wait_until(predicate, timeout: float = 60, interval: float = 0.05):
    """The first true value of predicate(), tried every `interval` seconds for up to `timeout`; None if none."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def postgres_lock_waiters(url: str, pids: Iterable[int]) -> int:
    """How many of these processes' PostgreSQL connections wait for a lock another holds (pg_stat_activity, matched
    by the connections' own ports): a test's race is then known to have come to the lock it is about."""
    server_port = sa.make_url(url).port or 5432
    ports = {
        connection.laddr.port
        for pid in pids
        for connection in psutil.Process(pid).net_connections("tcp")
        if connection.raddr and connection.raddr.port == server_port
    }
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            waiting = conn.scalars(sa.text("SELECT client_port FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))
            return len(ports.intersection(waiting))
    finally:
        engine.dispose()


def waits_for_its_turn_to_write(thread: threading.Thread) -> bool:
    """Whether `thread` waits for its turn among SQLite's writers (WriterQueue.turn): while it writes, that
    function's frame is suspended and off the thread's stack."""
    turn = inspect.unwrap(WriterQueue.turn).__code__
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code is turn:
            return True
        frame = frame.f_back
    return False


def waits_for_another_writer(database: str, thread: threading.Thread) -> bool:
    """Whether `thread` waits for what another writer holds: SQLite's writers' turn, or (the one connection of
    this process that waits) a PostgreSQL row lock."""
    if database.startswith("sqlite"):
        return waits_for_its_turn_to_write(thread)
    return postgres_lock_waiters(database, [os.getpid()]) == 1


class HeldBody(io.RawIOBase):
    """A request body whose client sends the first half of `data`, then the rest only once `go` is set: the
    request is in flight, its body half read, once `halfway` is set."""

    def __init__(self, data: bytes):
        self.data, self.sent = data, 0
        self.halfway, self.go = threading.Event(), threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        half = len(self.data) // 2
        if self.sent >= half:
            self.halfway.set()
            assert self.go.wait(60), "the test never let the rest of the body come"
        n = min(len(buffer), (half if self.sent < half else len(self.data)) - self.sent)
        buffer[:n] = self.data[self.sent : self.sent + n]
        self.sent += n
        return n


def while_the_body_comes(send: Callable[[HeldBody], T], data: bytes, meanwhile: Callable[[], object]) -> T:
    """What `send(body)` answers, a request whose body carries `data` (sent from another thread), when
    `meanwhile()` has run with half of the body read and the rest still to come."""
    body = HeldBody(data)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(send, body)
        wait_until(lambda: body.halfway.is_set() or answer.done(), timeout=30)
        if not body.halfway.is_set():
            raise AssertionError(f"the request was answered before its body was read: {answer.result()}")
        try:
            meanwhile()
        finally:
            body.go.set()
        return answer.result(timeout=60)


def raw_utf8(name: str) -> str:
    """A header value carrying `name`'s raw UTF-8 bytes (as some WOPI clients send names instead of UTF-7), spelt
    as a WSGI server hands it over: those bytes read as Latin-1."""
    return name.encode("utf-8").decode("latin-1")


def revoke_or_expire(services, clock, token: str, how: str) -> None:
    """Take a token of 10 minutes away: revoked, or (`how` "expired") by advancing the clock past it."""
    if how == "revoked":
        with services.db.write() as s:
            assert services.tokens.revoke(s, token=token) == 1
    else:
        clock.advance(minutes=11)  # a lock, for 30 minutes, still holds


def live_workers(server: LocalServer) -> set[int]:
    live = set()
    for worker in server.workers():
        try:
            if worker.status() != psutil.STATUS_ZOMBIE:
                live.add(worker.pid)
        except psutil.NoSuchProcess:  # reaped meanwhile
            pass
    return live


def wait_for_respawn(server: LocalServer, victim: psutil.Process) -> None:
    def respawned():
        live = live_workers(server)
        return len(live) == 2 and victim.pid not in live

    if not wait_until(respawned):
        pytest.fail(
            f"gunicorn did not replace the killed worker {victim.pid}: {live_workers(server)}\n"
            f"{server.log_text()[-3000:]}"
        )


class DatabaseProxy:
    """A loopback TCP proxy to the database server of `database`, which a test's connections reach through `url`:
    each connection is relayed by `relay(client, server)`, the subclass's."""

    def __init__(self, database: str):
        url = sa.make_url(database)
        self._target = (url.host or "127.0.0.1", url.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = url.set(host="127.0.0.1", port=self._listener.getsockname()[1]).render_as_string(False)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self._target)
            threading.Thread(target=self.relay, args=(client, server), daemon=True).start()

    def relay(self, client: socket.socket, server: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._listener.close()


@contextmanager
def writes_held(database: str, file_id: str) -> Iterator[None]:
    """Another writer holding what a write to `file_id` must wait for: SQLite's write lock, or PostgreSQL's
    lock on the file's row. wopihost's writers wait for it, up to their busy timeout."""
    if database.startswith("sqlite"):
        blocker = sqlite3.connect(sa.make_url(database).database, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            yield
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        return
    engine = sa.create_engine(database)
    try:
        with engine.connect() as blocker:
            blocker.execute(sa.text("SELECT id FROM files WHERE id = :id FOR UPDATE"), {"id": file_id})
            yield
            blocker.rollback()
    finally:
        engine.dispose()


def abandoned_partial_write(tmp_dir: Path) -> Path:
    """A partial write a dead process left in the local store's `tmp_dir` two hours ago: old enough to sweep."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_dir / "abandoned.part"
    path.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(path, (two_hours_ago, two_hours_ago))
    return path


def settle(services) -> None:
    """Let released blobs go. The local store deletes them at once; where a delete would take a blob from a reader
    still reading it (an object store), gc deletes them once two passes have found them unreferenced: run two
    with no grace."""
    from wopihost.gc import orphaned_blobs

    if not services.blobs.deleted_stays_readable:
        for _ in range(2):
            orphaned_blobs(services, grace=0)


def stored_blobs(services) -> set[str]:
    """The names of the blobs the store holds, once what was released has gone (settle)."""
    settle(services)
    return set(services.blobs.listing(time.time() + 3600))


def stored_bytes(services) -> int:
    """The bytes the store holds in all, once what was released has gone (settle)."""
    names = stored_blobs(services)
    with services.blobs.open(names) as opened:
        return sum(opened.size(name) for name in names)


def storage_of(env: dict):
    """The store a server with these settings (a LocalServer's env) keeps its content in."""
    from wopihost.clock import Clock
    from wopihost.config import Settings
    from wopihost.db import Database
    from wopihost.storage import open_storage

    settings = Settings.from_env(env)
    return open_storage(settings, Database(settings.database_url), Clock())


_PQ_STATEMENT = re.compile(r'\tF\t\d+\t(?:Parse\t\s*"[^"]*"|Query\t)\s*"([^"]*)')  # a statement sent (libpq's trace)


@contextmanager
def statements_sent(services, trace_dir: Path) -> Iterator[list[str]]:
    """The statements the database driver sends while the block runs, as the database received them (libpq's
    protocol trace on PostgreSQL), with their SQL first words: `["SELECT", "BEGIN", ...]`; the list is filled
    when the block ends. Counted at the driver, so a read that does not go through SQLAlchemy's execution
    counts too; the settings of connecting (PRAGMA, SET) do not."""
    services.db.dispose()  # every connection from here on is a new one, traced
    sent: list[str] = []
    trace = trace_dir / "libpq.trace"

    def traced(dbapi_connection, _record):
        if services.db.is_sqlite:
            dbapi_connection.set_trace_callback(sent.append)
        else:
            dbapi_connection.pgconn.trace(os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND))

    words: list[str] = []
    sa.event.listen(services.db.engine, "connect", traced)
    try:
        yield words
    finally:
        sa.event.remove(services.db.engine, "connect", traced)
        services.db.dispose()
    if not services.db.is_sqlite and trace.exists():
        sent = [match[1] for match in map(_PQ_STATEMENT.search, trace.read_text().splitlines()) if match]
    words += [" ".join(text.split()[:1]).upper() for text in sent]
    words[:] = [word for word in words if word not in ("PRAGMA", "SET")]


@dataclass
class WopiClient:
    """Speaks WOPI to the app for one file and one token; never raises on an error status."""

    testapp: webtest.TestApp
    file_id: str
    token: str

    def url(self, suffix: str = "", token: str | None = None) -> str:
        return f"/wopi/files/{self.file_id}{suffix}?access_token={self.token if token is None else token}"

    def check_file_info(self, **headers):
        return self.testapp.get(self.url(), headers=headers, expect_errors=True)

    def get_file(self, **headers):
        return self.testapp.get(self.url("/contents"), headers=_h(headers), expect_errors=True)

    def put_file(self, body: bytes, lock: str | None = None, **headers):
        headers = {"X-WOPI-Override": "PUT", **_h(headers)}
        if lock is not None:
            headers["X-WOPI-Lock"] = lock
        return self.testapp.post(self.url("/contents"), body, headers=headers, expect_errors=True)

    def op(self, override: str, body: bytes = b"", **headers):
        """POST /wopi/files/<id> with X-WOPI-Override; keyword X_WOPI_Lock means header X-WOPI-Lock."""
        return self.testapp.post(
            self.url(), body, headers={"X-WOPI-Override": override, **_h(headers)}, expect_errors=True
        )

    def contents_op(self, override: str, body: bytes = b"", **headers):
        """POST /wopi/files/<id>/contents with X-WOPI-Override (PUT_CHUNKED_FILE)."""
        return self.testapp.post(
            self.url("/contents"), body, headers={"X-WOPI-Override": override, **_h(headers)}, expect_errors=True
        )

    def lock(self, lock_id: str, **headers):
        return self.op("LOCK", X_WOPI_Lock=lock_id, **headers)

    def raw_post(self, suffix: str, body, content_length: int | None, terminated: bool = False, **headers):
        """A POST whose body is any file-like `body`; no Content-Length means chunked transfer.

        `terminated` marks the input as gunicorn does (wsgi.input_terminated), so that
        Werkzeug passes the raw stream through instead of limiting it itself.
        """
        request = webtest.TestRequest.blank(self.url(suffix), method="POST", headers=_h(headers))
        request.environ["wsgi.input"] = body
        request.environ["wsgi.input_terminated"] = terminated
        if content_length is None:
            request.environ.pop("CONTENT_LENGTH", None)
            request.environ.setdefault("HTTP_TRANSFER_ENCODING", "chunked")
            request.environ["wsgi.input_terminated"] = True
        else:
            request.environ["CONTENT_LENGTH"] = str(content_length)
        return self.testapp.do_request(request, status="*", expect_errors=True)

    def put_file_from(self, body, length: int, lock: str | None = None):
        """PutFile with any file-like `body` of `length` bytes."""
        headers = {"X-WOPI-Override": "PUT"} | ({"X-WOPI-Lock": lock} if lock is not None else {})
        return self.raw_post("/contents", body, length, **headers)


@dataclass
class GraphClient:
    """Speaks Graph to the app with one API token; never raises on an error status. Paths are relative to
    the version prefix ("me/drive/root"); an absolute URL from an answer (uploadUrl, nextLink) works too."""

    testapp: webtest.TestApp
    token: str | None
    drive_id: str
    prefix: str = "/v1.0"
    public_url: str = "https://wopi.example.test"

    def url(self, path: str) -> str:
        if path.startswith(self.public_url):
            return path[len(self.public_url) :]
        return path if path.startswith("/") else f"{self.prefix}/{path}"

    def headers(self, headers: dict[str, str] | None = None) -> dict[str, str]:
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**auth, **(headers or {})}

    def get(self, path: str, headers: dict[str, str] | None = None):
        return self.testapp.get(self.url(path), headers=self.headers(headers), expect_errors=True)

    def delete(self, path: str, headers: dict[str, str] | None = None):
        return self.testapp.delete(self.url(path), headers=self.headers(headers), expect_errors=True)

    def put(self, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        return self.testapp.put(self.url(path), body, headers=self.headers(headers), expect_errors=True)

    def post(self, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        return self.testapp.post(self.url(path), body, headers=self.headers(headers), expect_errors=True)

    def post_json(self, path: str, body, headers: dict[str, str] | None = None):
        return self.testapp.post_json(self.url(path), body, headers=self.headers(headers), expect_errors=True)

    def patch_json(self, path: str, body, headers: dict[str, str] | None = None):
        return self.testapp.patch_json(self.url(path), body, headers=self.headers(headers), expect_errors=True)

    def put_json(self, path: str, body, headers: dict[str, str] | None = None):
        return self.testapp.put_json(self.url(path), body, headers=self.headers(headers), expect_errors=True)

    def put_from(self, path: str, body, length: int, headers: dict[str, str] | None = None):
        """PUT with any file-like `body` of `length` bytes."""
        request = webtest.TestRequest.blank(self.url(path), method="PUT", headers=self.headers(headers))
        request.environ["wsgi.input"] = body
        request.environ["CONTENT_LENGTH"] = str(length)
        return self.testapp.do_request(request, status="*", expect_errors=True)

    def upload(self, upload_url: str, data: bytes, first: int, total: int, headers: dict[str, str] | None = None):
        """PUT one fragment to an upload URL, with no token (the URL is the credential)."""
        content_range = {"Content-Range": f"bytes {first}-{first + len(data) - 1}/{total}"}
        return self.testapp.put(
            self.url(upload_url), data, headers={**content_range, **(headers or {})}, expect_errors=True
        )


def graph_error(response) -> tuple[str, str | None]:
    """(error.code, error.innerError.code) of a Graph error answer, after checking its shape."""
    assert response.content_type == "application/json", response
    error = response.json["error"]
    assert isinstance(error["message"], str) and error["message"]
    inner = error["innerError"]
    assert inner["date"].endswith("Z") and inner["request-id"]
    return error["code"], inner.get("code")


def _h(headers: dict[str, str]) -> dict[str, str]:
    return {name.replace("_", "-"): value for name, value in headers.items()}


@contextmanager
def small_tmpfs(where: Path, mib: int = 24) -> Iterator[Path]:
    """A tmpfs of `mib` MiB mounted at `where` for the block (storage-fault tests); skips the test without root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


class Filler:
    """Takes every free byte of the file system `where` is on, and gives it back."""

    def __init__(self, where: Path):
        self.path = where / "filler"

    def fill(self) -> None:
        with open(self.path, "ab", buffering=0) as out:
            for size in (1 << 20, 4096, 1):
                try:
                    while True:
                        out.write(b"\0" * size)
                except OSError:
                    pass
        assert shutil.disk_usage(self.path.parent).free < 4096

    def free(self) -> None:
        self.path.unlink()


def descriptors_under(directory: str | os.PathLike[str], pid: int | str = "self") -> list[str]:
    """What a process holds open under a directory, read from /proc: what a test may count without
    another test's garbage, collected meanwhile, moving the figure."""
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed since the listing, as the listing's own descriptor is
            continue
        if target.startswith(str(directory)):
            held.append(target)
    return held
