"""What the host stands on failing: a full or read-only data directory, a locked or unreachable database.

Writes that cannot be stored get 507, a database or disk that cannot serve now 503 with Retry-After, and
the old content is intact in every case. The disk tests run on a small tmpfs that the test mounts, which
needs root; elsewhere they are skipped with that reason.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
import webtest

from wopihost import storage
from wopihost.app import create_app
from wopihost.config import Settings
from wopihost.extents import Extent, Extents
from wopihost.faults import InsufficientStorage
from wopihost.storage import PIECE, BlobStore

from .cspp_helpers import create_session, full_file, get_chunked, put_chunked, stream_filter, update_session
from .helpers import TEST_SECRET, Filler, GraphClient, WopiClient, graph_error, small_tmpfs, writes_held

SMALL_FS_MIB = 24


@pytest.fixture
def small_fs(tmp_path):
    with small_tmpfs(tmp_path / "small", SMALL_FS_MIB) as mount:
        yield mount


def settings_on(data_dir, database: str, **extra) -> Settings:
    return Settings.from_env(
        {
            "WOPIHOST_DATA_DIR": str(data_dir),
            "WOPIHOST_DATABASE_URL": database,
            "WOPIHOST_PUBLIC_URL": "https://wopi.example.test",
            "WOPIHOST_SECRET_KEY": TEST_SECRET,
            "WOPIHOST_CSPP_PLUS": "on",
            "WOPIHOST_SWEEP_INTERVAL": "0",
            "WOPIHOST_MIN_FREE_SPACE": "0",
            **extra,
        }
    )


class Host:
    """An app on the given settings, with one locked 11-byte file and a write token for it."""

    def __init__(self, settings: Settings):
        self.app = create_app(settings)
        self.services = self.app.extensions["wopihost"]
        self.file = self.services.add_file("alice", "Doc.docx", io.BytesIO(b"hello world"))
        token = self.services.issue_token(self.file.id, "alice", True).token
        self.wopi = WopiClient(webtest.TestApp(self.app), self.file.id, token)
        assert self.wopi.lock("L").status_int == 200

    def intact(self) -> bool:
        got = self.wopi.get_file()
        return got.body == b"hello world" and got.headers["X-WOPI-ItemVersion"] == "1"


@pytest.fixture
def full_disk_host(small_fs, database):
    """A host whose data directory (and SQLite database) lie on the small file system."""
    if database.startswith("sqlite"):
        path = small_fs / "wopihost.sqlite3"
        shutil.copy(sa.make_url(database).database, path)
        database = f"sqlite:///{path}"
    host = Host(settings_on(small_fs / "data", database))
    yield host
    host.services.db.dispose()


def assert_status(response, status: int, *words: str):
    assert response.status_int == status, response.headers
    for word in words:
        assert word in response.headers["X-WOPI-FailureReason"]


# -- a full disk -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [300_000, 100], ids=["large", "buffered"])  # the second fails only at the flush
def test_put_file_on_a_full_disk_is_507_and_keeps_the_old_content(full_disk_host, small_fs, size):
    host, filler = full_disk_host, Filler(small_fs)
    filler.fill()
    assert_status(host.wopi.put_file(os.urandom(size), lock="L"), 507, "full", "nothing was stored")
    assert host.intact()
    assert list((small_fs / "data" / "tmp").iterdir()) == []  # no partial write left behind
    filler.free()
    assert host.wopi.put_file(b"new content", lock="L").status_int == 200


def test_upload_session_on_a_full_disk_is_507_and_resumes(full_disk_host, small_fs):
    host, filler = full_disk_host, Filler(small_fs)
    token = create_session(host.wopi)
    assert update_session(host.wopi, token, 0, b"a" * 1000).status_int == 200
    filler.fill()
    refused = update_session(host.wopi, token, 1000, os.urandom(200_000))
    assert_status(refused, 507, "full")
    filler.free()
    resumed = update_session(host.wopi, token, 1000, b"b" * 1000)
    assert resumed.headers["X-WOPI-UploadSessionCurrentOffset"] == "2000"


def test_an_update_that_cannot_succeed_is_refused_before_its_body_is_written(full_disk_host, small_fs):
    host, filler = full_disk_host, Filler(small_fs)
    token = create_session(host.wopi)
    filler.fill()
    assert update_session(host.wopi, "x" * 22, 0, b"data" * 1000).status_int == 410  # not 507
    assert update_session(host.wopi, token, 5, b"data" * 1000).status_int == 400


def test_put_chunked_file_on_a_full_disk_is_507(full_disk_host, small_fs):
    host, filler = full_disk_host, Filler(small_fs)
    signature, chunks = full_file(os.urandom(300_000))
    filler.fill()
    assert_status(put_chunked(host.wopi, {"MainContent": signature}, chunks, X_WOPI_Lock="L"), 507)
    assert host.intact()


def test_lock_changes_on_a_full_disk_are_stored_or_507(full_disk_host, small_fs, database):
    host, filler = full_disk_host, Filler(small_fs)
    filler.fill()
    statuses, current = [], "L"
    for i in range(40):  # UnlockAndRelock, each to a new id: every one writes to the database
        response = host.wopi.op("LOCK", X_WOPI_Lock=f"L{i}", X_WOPI_OldLock=current)
        statuses.append(response.status_int)
        if response.status_int == 200:
            current = f"L{i}"
        elif response.status_int == 507:
            assert "full" in response.headers["X-WOPI-FailureReason"]
    assert set(statuses) <= {200, 507}, statuses
    if database.startswith("sqlite"):  # the database shares the full disk: its journal cannot grow for long
        assert 507 in statuses, statuses
    filler.free()
    assert host.wopi.op("GET_LOCK").headers["X-WOPI-Lock"] == current  # what was answered 200 was stored
    assert host.intact()


def test_a_copy_during_which_the_disk_fills_is_507_not_a_short_blob(small_fs, monkeypatch):
    """Where the kernel cannot copy_file_range between two files (FUSE, CIFS, older NFS), a copy goes through a
    buffer. A disk that filled during its last write wrote part of it and said so by the count alone: the copy
    was taken for whole, recorded at its full size, and its source released, the missing bytes lost for good."""
    store = BlobStore(small_fs / "blobs", small_fs / "tmp")
    size = 3 * PIECE
    with store.write(io.BytesIO(b"a" * size), size) as source:
        pass

    def unsupported(*args):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "copy_file_range", unsupported)
    filler = Filler(small_fs)
    filler.fill()
    os.truncate(filler.path, os.path.getsize(filler.path) - (size - PIECE // 2))  # the last piece fits by half
    with store.open([source.name]) as opened, pytest.raises(InsufficientStorage):
        store.concat(opened, Extents([Extent(source.name, 0, size)]))
    assert [p.name for p in (small_fs / "blobs").rglob("*") if p.is_file()] == [source.name]
    assert not list((small_fs / "tmp").iterdir())


def test_min_free_space_stops_a_copy_whose_room_another_write_takes(small_fs, monkeypatch):
    """A copy (a Graph copy, a merge of pieces, a chunked save's) was checked only up front: copies and writes
    side by side each passed that check, and together took the reserve kept for the database and logs."""
    store = BlobStore(small_fs / "blobs", small_fs / "tmp")
    size = 6 * PIECE
    with store.write(io.BytesIO(b"a" * size), size) as source:
        pass
    store.min_free = shutil.disk_usage(small_fs).free - size - PIECE  # room for the copy, up front
    monkeypatch.setattr(storage, "COPY_STEP", PIECE)
    copy_file_range = os.copy_file_range
    filler = small_fs / "another-write"

    def another_write_meanwhile(*args):
        if not filler.exists():
            filler.write_bytes(b"b" * 3 * PIECE)
        return copy_file_range(*args)

    monkeypatch.setattr(os, "copy_file_range", another_write_meanwhile)
    with store.open([source.name]) as opened, pytest.raises(InsufficientStorage):
        store.concat(opened, Extents([Extent(source.name, 0, size)]))
    assert [p.name for p in (small_fs / "blobs").rglob("*") if p.is_file()] == [source.name]
    assert not list((small_fs / "tmp").iterdir())


def test_min_free_space_refuses_writes_up_front(full_disk_host, small_fs):
    host = full_disk_host
    host.services.blobs.min_free = shutil.disk_usage(small_fs).free - 100_000
    assert_status(host.wopi.put_file(b"x" * 200_000, lock="L"), 507, "free")
    assert host.wopi.put_file(b"x" * 50_000, lock="L").status_int == 200


def test_min_free_space_stops_a_body_of_no_stated_length(full_disk_host, small_fs):
    """A chunked body (no Content-Length), or writes side by side that each passed the check up front, used
    to be stored down to a full disk, the reserve for the database and logs taken."""
    host = full_disk_host
    host.services.blobs.min_free = shutil.disk_usage(small_fs).free - 3 * PIECE
    response = host.wopi.raw_post(
        "/contents", io.BytesIO(b"x" * 6 * PIECE), None, X_WOPI_Override="PUT", X_WOPI_Lock="L"
    )
    assert_status(response, 507, "free")
    reason = response.headers["X-WOPI-FailureReason"]  # not "storing 0 more bytes would leave ..."
    assert reason.startswith(f"the data directory has less than {host.services.blobs.min_free} bytes free"), reason
    assert shutil.disk_usage(small_fs).free >= host.services.blobs.min_free
    assert host.intact() and not list((small_fs / "data" / "tmp").iterdir())


def test_healthz_reports_a_full_data_directory(full_disk_host, small_fs):
    host = full_disk_host
    assert host.wopi.testapp.get("/healthz").json["storage"] == "ok"
    host.services.blobs.min_free = shutil.disk_usage(small_fs).free + 1
    response = host.wopi.testapp.get("/healthz", expect_errors=True)
    assert response.status_int == 503 and response.json["storage"] == "full"


# -- a read-only data directory ------------------------------------------------------------------


@pytest.fixture
def read_only_host(small_fs, database):
    """A host with its data directory on the small file system and its database elsewhere."""
    host = Host(settings_on(small_fs / "data", database))
    yield host
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    host.services.db.dispose()


def test_read_only_data_directory(read_only_host, small_fs):
    host = read_only_host
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    response = host.wopi.put_file(b"new content", lock="L")
    assert_status(response, 503, "not writable")
    assert response.headers["Retry-After"]
    assert host.intact()
    health = host.wopi.testapp.get("/healthz", expect_errors=True)
    assert health.status_int == 503 and health.json == {**health.json, "database": "ok", "storage": "not writable"}


# -- the database --------------------------------------------------------------------------------


@pytest.fixture
def quick_host(database, tmp_path):
    host = Host(settings_on(tmp_path / "data", database, WOPIHOST_DATABASE_BUSY_TIMEOUT="200ms"))
    yield host
    host.services.db.dispose()


def test_database_locked_past_the_busy_timeout_is_503(quick_host, database):
    host = quick_host
    with writes_held(database, host.file.id):
        response = host.wopi.op("UNLOCK", X_WOPI_Lock="L")
        assert_status(response, 503, "locked")
        assert int(response.headers["Retry-After"]) > 0
    assert host.wopi.op("GET_LOCK").headers["X-WOPI-Lock"] == "L"  # nothing changed meanwhile
    assert host.wopi.op("UNLOCK", X_WOPI_Lock="L").status_int == 200


@contextmanager
def read_only_view(database: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """URLs of one database: one that writes it, and one for a worker that cannot. PostgreSQL's second answers
    as a standby does (every transaction read-only); SQLite's goes through a read-only bind mount of the file
    system the database is on (which needs root), with a connection kept open by the side so that the WAL
    files stay and reads go on."""
    url = sa.make_url(database)
    if not database.startswith("sqlite"):
        standby = url.update_query_dict({"options": url.query["options"] + " -cdefault_transaction_read_only=on"})
        yield database, standby.render_as_string(hide_password=False)
        return
    with small_tmpfs(tmp_path / "small") as fs:
        path = Path(shutil.copy(url.database, fs / "wopihost.sqlite3"))
        keeper = sqlite3.connect(path)
        keeper.execute("SELECT 1 FROM files").fetchall()
        view = tmp_path / "read-only"
        view.mkdir()
        subprocess.run(["mount", "--bind", str(fs), str(view)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
            yield f"sqlite:///{path}", f"sqlite:///{view / path.name}"
        finally:
            subprocess.run(["umount", "-l", str(view)], check=True)
            keeper.close()


def test_a_database_that_cannot_be_written_is_503_and_the_lock_stays(database, tmp_path):
    """A PostgreSQL standby after a failover; SQLite on a file system remounted read-only, where a new worker
    cannot even open the writers' files beside the database (writers.py)."""
    with read_only_view(database, tmp_path) as (writable, read_only):
        host = Host(settings_on(tmp_path / "data", writable))
        app = create_app(settings_on(tmp_path / "data", read_only))
        wopi = WopiClient(webtest.TestApp(app), host.file.id, host.wopi.token)
        try:
            assert wopi.op("GET_LOCK").headers["X-WOPI-Lock"] == "L"
            response = wopi.op("UNLOCK", X_WOPI_Lock="L")
            assert_status(response, 503, "cannot be written")
            assert response.headers["Retry-After"]
            assert host.wopi.op("GET_LOCK").headers["X-WOPI-Lock"] == "L"
        finally:
            app.extensions["wopihost"].db.dispose()
            host.services.db.dispose()


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres@127.0.0.1:1/test", "sqlite:///{tmp}/no/such/dir/db"])
def test_unreachable_database_is_503(tmp_path, sqlite_template, url):
    working = Host(settings_on(tmp_path / "data", f"sqlite:///{shutil.copy(sqlite_template, tmp_path)}"))
    working.services.db.dispose()
    app = create_app(settings_on(tmp_path / "data", url.format(tmp=tmp_path)))  # same secret, no database
    testapp = webtest.TestApp(app)
    response = testapp.get(working.wopi.url(), expect_errors=True)  # a token whose signature is good
    assert_status(response, 503, "database")
    assert response.headers["Retry-After"]
    health = testapp.get("/healthz", expect_errors=True)
    assert health.status_int == 503 and health.json["database"] == "unreachable"
    app.extensions["wopihost"].db.dispose()


@pytest.mark.local_storage
def test_a_file_whose_blob_cannot_be_opened_at_any_try_is_503_with_retry_after(database, tmp_path):
    """A reader whose blob is replaced (or gone) each time it opens it gave up with a 503 that had no Retry-After,
    unlike every other 503: GetFile, GetChunkedFile and Graph's content alike."""
    host = Host(settings_on(tmp_path / "data", database))
    try:
        for blob in host.services.files.get(host.file.id).content.blobs:
            host.services.blobs.path(blob).unlink()
        issued, _ = host.services.issue_api_token("alice", False)
        graph = GraphClient(host.wopi.testapp, issued.token, "")
        answers = {
            "GetFile": host.wopi.get_file(),
            "GetChunkedFile": get_chunked(host.wopi, [stream_filter()])[0],
            "Graph content": graph.get(f"me/drive/items/{host.file.id}/content"),
        }
        for what, response in answers.items():
            assert response.status_int == 503, what
            assert response.headers["Retry-After"] == "1", what
        for what in ("GetFile", "GetChunkedFile"):
            assert "changed too often" in answers[what].headers["X-WOPI-FailureReason"]
        assert graph_error(answers["Graph content"]) == ("serviceNotAvailable", None)
    finally:
        host.services.db.dispose()
