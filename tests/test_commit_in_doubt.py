"""A write whose COMMIT the database carried out but whose answer never came back (the connection lost at that
moment): the request is a 503, as any lost connection, but the transaction may have committed, naming the blob
the request had just stored. That blob must stay (faults.outcome_unknown): deleted, the file would name content
that no longer exists, unreadable for good, and a Graph upload session would complete into such a file.

PostgreSQL only: the connection goes through a loopback proxy that loses the answer to one COMMIT. SQLite has no
connection to lose."""

from __future__ import annotations

import os
import select
import socket
import threading
from dataclasses import replace

import pytest
import sqlalchemy as sa
import webtest

from wopihost.app import create_app
from wopihost.gc import collect
from wopihost.models import WorkbookSession

from .cspp_helpers import full_file, put_chunked
from .helpers import DatabaseProxy, stored_blobs
from .test_graph_workbook import WB, create, patch, upload, values
from .test_storage_faults import Host, settings_on


class CommitAnswerLost(DatabaseProxy):
    """Once `arm()`ed, passes the COMMIT it waits for on to the database (with whatever the client sends after it,
    a pipeline's Sync), withholds the database's answers until the one to the COMMIT (the transaction has
    committed), and closes both connections without passing them on."""

    def __init__(self, database: str):
        super().__init__(database)
        self._armed = threading.Event()
        self.lost = threading.Event()

    def arm(self, after: bytes) -> None:
        """Lose the answer to the first COMMIT that comes after a statement holding `after` (reads commit too)."""
        self.lost.clear()
        self._after = after
        self._armed.set()

    def relay(self, client: socket.socket, server: socket.socket) -> None:
        seen = b""  # what the client sent since the proxy was armed
        withheld: bytes | None = None  # the database's answers since the COMMIT was passed on
        with client, server:
            while True:
                for source in select.select([client, server], [], [])[0]:
                    data = source.recv(1 << 16)
                    if not data:
                        return
                    if source is client and withheld is None and self._armed.is_set():
                        seen += data
                        if self._after in seen and b"COMMIT" in seen[seen.index(self._after) :]:
                            self._armed.clear()
                            withheld = b""
                    if source is server and withheld is not None:
                        withheld += data
                        if b"COMMIT\x00" in withheld:  # its CommandComplete: the transaction has committed
                            self.lost.set()
                            return  # the answers are dropped with both connections
                        continue
                    (server if source is client else client).sendall(data)


@pytest.fixture
def proxy(database):
    if database.startswith("sqlite"):
        pytest.skip("SQLite has no connection to lose")
    proxy = CommitAnswerLost(database)
    yield proxy
    proxy.close()


@pytest.fixture
def host(proxy, tmp_path):
    """A WOPI host whose database connections go through the proxy, with a locked file (test_storage_faults.Host)."""
    host = Host(settings_on(tmp_path / "data", proxy.url))
    yield host
    host.services.db.dispose()


@pytest.fixture
def settings(settings, proxy):
    """The suite's settings, the database reached through the proxy (and so the suite's app, services, graph)."""
    return settings.with_changes(database_url=proxy.url)


def test_a_put_file_whose_commit_answer_is_lost_keeps_the_content_it_committed(proxy, host):
    proxy.arm(after=b"UPDATE files")
    response = host.wopi.put_file(b"new content", lock="L")
    assert proxy.lost.is_set()
    assert response.status_int == 503 and response.headers["Retry-After"], response
    # The database committed the new content: it is there to read, and gc keeps it, as a row names it.
    for _ in range(2):
        got = host.wopi.get_file()
        assert got.status_int == 200 and got.body == b"new content", got
        assert got.headers["X-WOPI-ItemVersion"] == "2"
        collect(host.services, grace=0)
    assert len(stored_blobs(host.services)) == 1  # the old content's blob went, to gc


def test_a_chunked_save_whose_commit_answer_is_lost_keeps_the_content_it_committed(proxy, host):
    """CSPP Plus: the new content lies in the request's spool (inline chunks), which the file then names."""
    payload = os.urandom(300_000)
    signature, chunks = full_file(payload)
    proxy.arm(after=b"UPDATE files SET size")  # the save's, not the signature cache's
    response = put_chunked(host.wopi, {"MainContent": signature}, chunks, X_WOPI_Lock="L")
    assert proxy.lost.is_set()
    assert response.status_int == 503, response
    collect(host.services, grace=0)
    got = host.wopi.get_file()
    assert got.status_int == 200 and got.body == payload, got.status


def test_a_folder_copy_whose_commit_answer_is_lost_keeps_the_copies_it_committed(proxy, graph, services):
    assert graph.post_json("me/drive/root/children", {"name": "dir", "folder": {}}).status_int == 201
    assert graph.put("me/drive/root:/dir/a.txt:/content", b"abc").status_int == 201
    proxy.arm(after=b"INSERT INTO folders")
    response = graph.post_json("me/drive/root:/dir:/copy", {"name": "copy"})
    assert proxy.lost.is_set()
    assert response.status_int == 503, response.body
    collect(services, grace=0)
    content = graph.get("me/drive/root:/copy/a.txt:/content")
    assert content.status_int == 200 and content.body == b"abc", content.body


def test_a_fragment_whose_commit_answer_is_lost_is_kept_and_the_session_completes(proxy, graph, services):
    created = graph.post_json("me/drive/root:/big.bin:/createUploadSession", {})
    assert created.status_int == 200, created.body
    url = created.json["uploadUrl"]

    proxy.arm(after=b"INSERT INTO upload_pieces")
    first = graph.upload(url, b"a" * 1000, 0, 2000)
    assert proxy.lost.is_set()
    assert first.status_int == 503, first.body
    # The piece's row committed: the session says so, and its bytes are still there to complete the file.
    state = graph.testapp.get(graph.url(url))
    assert state.json["nextExpectedRanges"] == ["1000-1999"]
    collect(services, grace=0)
    done = graph.upload(url, b"b" * 1000, 1000, 2000)
    assert done.status_int == 201, done.body
    content = graph.get(f"me/drive/items/{done.json['id']}/content")
    assert content.status_int == 200 and content.body == b"a" * 1000 + b"b" * 1000


def test_a_workbook_session_whose_commit_answer_is_lost_keeps_its_copy(proxy, graph, services):
    """A non-persistent session's copy of the workbook, named by the session's row (the client never learnt the
    session's id, but the row holds the copy until it expires)."""
    upload(graph)
    proxy.arm(after=b"INSERT INTO workbook_sessions")
    response = graph.post_json(f"{WB}/createSession", {"persistChanges": False})
    assert proxy.lost.is_set()
    assert response.status_int == 503, response.body
    collect(services, grace=0)
    with services.db.read() as s:
        copies = set(s.scalars(sa.select(WorkbookSession.blob)))
    assert copies and copies <= stored_blobs(services)


def test_a_workbook_write_whose_commit_answer_is_lost_keeps_the_copy_it_committed(proxy, graph, services, settings):
    upload(graph)
    session = create(graph, persist=False)
    proxy.arm(after=b"UPDATE workbook_sessions SET blob")
    response = patch(graph, "A1", {"values": [[5]]}, session)
    assert proxy.lost.is_set()
    assert response.status_int == 503, response.body
    collect(services, grace=0)
    # another worker, which has not the workbook in memory: it reads the copy the session's row names
    other = create_app(settings)
    try:
        assert values(replace(graph, testapp=webtest.TestApp(other)), "A4", session) == [[10]]  # 5 + 2 + 3
    finally:
        other.extensions["wopihost"].db.dispose()
