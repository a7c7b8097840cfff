"""How upload sessions of both kinds end other than by completing: with their file, by expiry, by cancelling
(docs/graph.md §4.5, docs/cspp-plus.md §1.7), and what they count towards meanwhile."""

import os
import threading

import pytest
import sqlalchemy as sa

from wopihost.models import UploadSession
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
        file = services.files.load_in_locked_folder(s, target)  # as the deletion does first
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
