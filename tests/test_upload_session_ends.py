"""How upload sessions of both kinds end other than by completing: with their file, by expiry, by cancelling
(docs/graph.md §4.5, docs/cspp-plus.md §1.7), and what they count towards meanwhile."""

import contextlib
import io
import os
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from wopihost.ids import new_id
from wopihost.models import Folder, UploadSession, WorkbookSession
from wopihost.repository import load_file_in_folder
from wopihost.sessions import UploadSessions

from .conftest import PG_URL
from .helpers import graph_error, postgres_lock_waiters, stored_blobs, wait_until
from .test_graph_uploads import create, data, new_session, simple_upload


def fragment_of_each(graph, urls: list[str], total: int) -> None:
    for url in urls:
        assert graph.upload(url, data(3), 0, total).status_int == 202


@pytest.mark.parametrize("how", ["item", "folder"])
def test_a_graph_session_made_for_a_file_ends_with_it(graph, services, settings, how):
    """A session made for an existing file (items/{id}/createUploadSession) can no longer become that file once
    it is deleted: it no longer counts towards the user's limits, its pieces go with the file's content, and its
    URL answers 404 itemNotFound, as a cancelled session's."""
    baseline = stored_blobs(services)
    assert graph.post_json("me/drive/root/children", {"name": "top", "folder": {}}).status_int == 201
    target = simple_upload(graph, "top/target.bin", b"old content")["id"]
    limit = settings.max_upload_sessions_per_user
    services.sessions.max_bytes_per_user = limit * 3  # both limits reached
    urls = [new_session(graph, f"me/drive/items/{target}", {"item": {"fileSize": 9}}) for _ in range(limit)]
    fragment_of_each(graph, urls, 9)
    refused = graph.post_json("me/drive/root:/other.bin:/createUploadSession", {})
    assert refused.status_int == 429, refused.body
    address = f"me/drive/items/{target}" if how == "item" else "me/drive/root:/top:"
    assert graph.delete(address).status_int == 204
    assert stored_blobs(services) == baseline  # no piece left behind
    for answer in (
        graph.testapp.get(graph.url(urls[0]), expect_errors=True),
        graph.upload(urls[0], data(3), 3, 9),
        graph.testapp.post(graph.url(urls[0]), expect_errors=True),
    ):
        assert answer.status_int == 404 and graph_error(answer)[0] == "itemNotFound", answer
    url = new_session(graph, "me/drive/root:/other.bin:")
    assert graph.upload(url, data(3), 0, 3).status_int == 201  # and its bytes fit in the user's limit


def test_a_graph_session_that_became_a_deleted_file_answers_that_it_is_gone(graph, services):
    """A completed session is kept only to answer a repeated final fragment (and its status): it holds no piece
    and counts towards no limit, so it is left to expire. Its file deleted, the repeat is 404 itemNotFound."""
    url = new_session(graph)
    made = graph.upload(url, data(6), 0, 6)
    assert made.status_int == 201
    assert graph.delete(f"me/drive/items/{made.json['id']}").status_int == 204
    again = graph.upload(url, data(6), 0, 6)
    assert again.status_int == 404 and graph_error(again)[0] == "itemNotFound", again
    status = graph.testapp.get(graph.url(url))
    assert status.json["nextExpectedRanges"] == []


@pytest.mark.parametrize("kind", ["cspp", "graph"])
def test_a_session_asked_for_as_its_file_is_deleted_is_not_made(
    services, graph, client_for, make_file, monkeypatch, kind
):
    """The file was there when CreateUploadSession (createUploadSession of items/{id}) looked, and is deleted
    before the session is recorded: 404, and no session is left to count towards the user's limits until it
    expires."""
    file = make_file()
    real = UploadSessions.create

    def deleted_first(self, *args, **kwargs):
        services.files.delete(file.id)  # another request, in another worker, between the look and the record
        return real(self, *args, **kwargs)

    monkeypatch.setattr(UploadSessions, "create", deleted_first)
    if kind == "cspp":
        answer = client_for(file).op("CREATE_UPLOAD_SESSION")
        assert answer.status_int == 404 and answer.headers["X-WOPI-FailureReason"]
    else:
        answer = create(graph, f"me/drive/items/{file.id}")
        assert answer.status_int == 404 and graph_error(answer)[0] == "itemNotFound", answer
    assert services.sessions.list() == []


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_session_completing_as_its_file_is_deleted_takes_the_locks_in_the_deletions_order(services, graph, database):
    """A deletion locks the file (after its folder), then ends the file's sessions, locking their rows. The last
    fragment of a session made for that file, arriving meanwhile, must wait for the file before it locks its
    session's row: locked the other way round, the two wait for each other until PostgreSQL aborts one (503)."""
    target = simple_upload(graph, "target.bin", b"old content")["id"]
    url = new_session(graph, f"me/drive/items/{target}", {"item": {"fileSize": 6}})
    assert graph.upload(url, data(3), 0, 6).status_int == 202
    token = url.rsplit("/", 1)[-1]
    answers = []
    with services.db.write() as s:
        file = load_file_in_folder(s, target)  # as the deletion does first
        last = threading.Thread(target=lambda: answers.append(graph.upload(url, data(6)[3:], 3, 6)))
        last.start()
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1), "the fragment never waited"
        # the session's row is free while the completion waits: the deletion takes it, as end_with_file does
        locked = sa.select(UploadSession).where(UploadSession.token == token).with_for_update(nowait=True)
        assert s.scalars(locked).one().token == token
        unused = services.files.delete_in(s, file)
    last.join(30)
    for name in unused:
        services.blobs.release(name)
    assert answers[0].status_int == 404 and graph_error(answers[0])[0] == "itemNotFound", answers[0].body
    assert graph.testapp.get(graph.url(url), expect_errors=True).status_int == 404  # ended with the file


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_session_committed_through_source_url_as_its_file_is_deleted_takes_the_locks_in_that_order(
    services, graph, database
):
    """The same for a deferred session made for a file and committed through sourceUrl elsewhere: that commit
    locked the session's row first, then the target's folder, which the deletion of the file held (its own
    folder), waiting in turn for the session's row: a deadlock, one of them 503."""
    target = simple_upload(graph, "target.bin", b"old content")["id"]
    url = new_session(graph, f"me/drive/items/{target}", {"item": {"fileSize": 6}, "deferCommit": True})
    assert graph.upload(url, data(6), 0, 6).status_int == 202
    token = url.rsplit("/", 1)[-1]
    answers = []
    commit = {"@microsoft.graph.sourceUrl": url}
    with services.db.write() as s:
        file = load_file_in_folder(s, target)  # as the deletion does first
        last = threading.Thread(target=lambda: answers.append(graph.put_json("me/drive/root:/placed.bin", commit)))
        last.start()
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1), "the commit never waited"
        locked = sa.select(UploadSession).where(UploadSession.token == token).with_for_update(nowait=True)
        assert s.scalars(locked).one().token == token  # free: the commit waits for the file before it
        unused = services.files.delete_in(s, file)
    last.join(30)
    for name in unused:
        services.blobs.release(name)
    assert answers[0].status_int == 404 and graph_error(answers[0])[0] == "itemNotFound", answers[0].body
    assert graph.get("me/drive/root:/placed.bin").status_int == 404


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_two_source_url_commits_into_each_others_folder_never_deadlock(services, graph, database, monkeypatch):
    """A commit through sourceUrl of a session made for a file locks that file's folder and the folder the file
    goes to: taken in the order asked (its own first), two commits into each other's folder each held one and
    waited for the other, until PostgreSQL aborted one (503). They are taken in id order, as every change does."""
    for name in ("a", "b"):
        assert graph.post_json("me/drive/root/children", {"name": name, "folder": {}}).status_int == 201
    urls = []
    for path in ("a/x.bin", "b/y.bin"):
        item = simple_upload(graph, path, b"old")["id"]
        url = new_session(graph, f"me/drive/items/{item}", {"item": {"fileSize": 6}, "deferCommit": True})
        assert graph.upload(url, data(6), 0, 6).status_int == 202
        urls.append(url)
    # In id order the second waits for the first's folder before it gets here: the barrier then breaks (5 s)
    together = threading.Barrier(2, timeout=5)
    get_graph = UploadSessions.get_graph

    def both_locking_first(self, s, token):
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()  # both hold what they lock before the session's row
        return get_graph(self, s, token)

    monkeypatch.setattr(UploadSessions, "get_graph", both_locking_first)
    answers = {}

    def commit(url: str, path: str) -> None:
        answers[path] = graph.put_json(f"me/drive/root:/{path}", {"@microsoft.graph.sourceUrl": url})

    threads = [
        threading.Thread(target=commit, args=(urls[0], "b/from-x.bin")),
        threading.Thread(target=commit, args=(urls[1], "a/from-y.bin")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert {path: answer.status_int for path, answer in answers.items()} == {"b/from-x.bin": 201, "a/from-y.bin": 201}


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("kind", ["upload", "workbook"])
def test_a_folder_deletion_and_a_sweep_of_expired_sessions_never_wait_for_each_other(services, clock, database, kind):
    """A folder's deletion ends its files' sessions file by file, each file's in key order, so across the folder
    not in key order; the sweep of expired sessions locks them in key order. With the keys crossed (the second
    file's session first), each waited for the other until PostgreSQL aborted one (503, or a failed sweep). The
    sweep now leaves the rows the deletion holds to it. The deletion is held between the two files' sessions by
    another transaction holding a live session of the other kind, which the deletion ends on its way."""
    first, second = sorted(
        (services.add_file("alice", name, io.BytesIO(b"x"), folder=["F"]) for name in ("a.xlsx", "b.xlsx")),
        key=lambda file: file.id,
    )  # the deletion's order
    lower, higher = sorted(new_id() for _ in range(2))
    past = clock.now() - timedelta(minutes=1)
    with services.db.write() as s:
        for key, file in ((higher, first), (lower, second)):  # the second file's session comes first by key
            if kind == "upload":
                s.add(
                    UploadSession(
                        token=key, file_id=file.id, user_id="alice", created_at=past, expires_at=past, kind="graph"
                    )
                )
            else:
                s.add(workbook_session(key, file.id, expires_at=past))
        if kind == "upload":  # held: a live workbook session of the first file, ended after its upload sessions
            held_key = new_id()
            s.add(workbook_session(held_key, first.id, expires_at=clock.now() + timedelta(minutes=5)))
            held = ("workbook_sessions", "id", held_key)
        folder = s.get_one(Folder, first.folder_id)
    if kind == "workbook":  # held: a live CSPP session of the second file, ended before its workbook sessions
        held = ("upload_sessions", "token", services.sessions.create(second.id, "alice"))
    sweep = services.sessions.sweep if kind == "upload" else services.workbooks.sweep
    errors: dict[str, BaseException] = {}

    def run(name: str, work) -> threading.Thread:
        def catching() -> None:
            try:
                work()
            except BaseException as exc:
                errors[name] = exc

        thread = threading.Thread(target=catching)
        thread.start()
        return thread

    blocker = sa.create_engine(database, poolclass=sa.pool.NullPool)
    try:
        with blocker.begin() as conn:
            table, column, key = held
            conn.execute(sa.text(f"SELECT 1 FROM {table} WHERE {column} = :key FOR UPDATE"), {"key": key})
            deleting = run("delete", lambda: services.tree.delete(folder.drive_id, folder.id))
            assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1), "the deletion never waited"
            sweeping = run("sweep", sweep)
            sweeping.join(10)
            assert not sweeping.is_alive(), "the sweep waited for the deletion"
        deleting.join(30)
    finally:
        blocker.dispose()
    assert not errors, errors
    with services.db.read() as s:
        left = [*s.scalars(sa.select(UploadSession.token)), *s.scalars(sa.select(WorkbookSession.id))]
    assert left == []


def workbook_session(key: str, file_id: str, expires_at) -> WorkbookSession:
    return WorkbookSession(
        id=key,
        file_id=file_id,
        user_id="alice",
        persist=True,
        blob=None,
        base_version=1,
        created_at=expires_at,
        expires_at=expires_at,
    )
