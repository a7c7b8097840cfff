"""A file uploaded in many fragments: its content is the session's pieces, merged into few blobs first, since
every read of a file opens all its blobs at once (a descriptor each)."""

import io
import os
import resource

import pytest

from wopihost import sessions

from .cspp_helpers import create_session, update_session
from .helpers import stored_blobs
from .test_descriptors import blob_fds
from .test_graph_uploads import content_of, data, new_session


def upload_in_fragments(graph, content: bytes, step: int) -> str:
    url = new_session(graph)
    for first in range(0, len(content), step):
        response = graph.upload(url, content[first : first + step], first, len(content))
    assert response.status_int == 201, response.body
    return response.json["id"]


def blobs_of(services, item_id: str) -> set[str]:
    return services.files.get(item_id).content.blobs


@pytest.mark.parametrize(("fragments", "blobs"), [(4, 4), (5, 2), (4 * 4 + 3, 2), (4 * 4 * 4 + 1, 2)])
def test_a_file_of_many_fragments_spans_at_most_max_blobs_blobs(graph, services, monkeypatch, fragments, blobs):
    monkeypatch.setattr(sessions, "MAX_BLOBS", 4)  # runs of 4 pieces: 19 fragments merge twice, 65 three times
    content = data(fragments * 3)
    item = upload_in_fragments(graph, content, 3)
    assert len(blobs_of(services, item)) == blobs
    assert content_of(graph, item) == content
    assert stored_blobs(services) == blobs_of(services, item)  # no piece, no copy left over


def test_a_file_of_more_fragments_than_descriptors_can_be_read(graph, services):
    """More fragments than the process may open descriptors (systemd's default soft limit is 1,024): a read
    that opened a descriptor per piece failed (EMFILE, 500), and every other request of the worker with it."""
    content = data(sessions.MAX_BLOBS * 3)
    item = upload_in_fragments(graph, content, 2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + sessions.MAX_BLOBS, hard))
    try:
        assert content_of(graph, item) == content
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def three_pieces(request, kind: str) -> str:
    """A session of either kind holding three pieces, not yet complete; its token."""
    content = data(9)
    if kind == "cspp":
        wopi = request.getfixturevalue("wopi")
        token = create_session(wopi)
        for first in range(0, 6, 2):
            assert update_session(wopi, token, first, content[first : first + 2]).status_int == 200
        return token
    graph = request.getfixturevalue("graph")
    url = new_session(graph)
    for first in range(0, 6, 2):  # three pieces of the nine bytes, the session not yet whole
        assert graph.upload(url, content[first : first + 2], first, len(content)).status_int == 202
    return url.rsplit("/", 1)[1]


@pytest.mark.parametrize("kind", ["graph", "cspp"])
def test_a_merge_that_finds_its_pieces_gone_drops_its_copies(request, services, monkeypatch, kind):
    """Two copies of the final fragment complete one session at once (or two PutChunkedFiles commit it): the
    second merge may find the pieces it read already merged and deleted by the first. It then leaves the
    session as the other left it."""
    monkeypatch.setattr(sessions, "MAX_BLOBS", 2)
    token = three_pieces(request, kind)
    before = stored_blobs(services)
    with services.db.read() as s:
        gone = services.sessions.stream(s, token)[-1].blob
    services.blobs.delete(gone)  # as the first merge deletes what it merged, once committed
    services.sessions.merge_pieces(token)
    assert stored_blobs(services) == before - {gone}  # no copy left behind
    with services.db.read() as s:
        assert [extent.blob for extent in services.sessions.stream(s, token)][-1] == gone  # rows as they were


def test_a_merge_whose_pieces_were_merged_and_grown_again_meanwhile_takes_nothing(services, make_file, monkeypatch):
    """A merge read the session's pieces; another merged them (and was refused), and the client sent as many again
    before the first merge landed. It counted the rows, found the same number, and replaced the new pieces with
    its copies of the old: bytes the session had received were gone, and every commit after was refused."""
    monkeypatch.setattr(sessions, "MAX_BLOBS", 2)
    file = make_file(b"")
    token, end = services.sessions.create(file.id, "alice"), 0

    def append(n: int) -> None:
        nonlocal end
        for _ in range(n):
            end = services.sessions.append(token, file.id, end, 1, io.BytesIO(bytes([65 + end % 26])))

    append(5)
    real, copies = type(services.blobs).concat, []

    def concat(self, opened, extents):
        copies.append(extents)
        if len(copies) == 4:  # the slow merge copies its own copies now: meanwhile another merges, and 3 more come
            monkeypatch.setattr(type(services.blobs), "concat", real)
            services.sessions.merge_pieces(token)
            append(3)
            monkeypatch.setattr(type(services.blobs), "concat", concat)
        return real(self, opened, extents)

    monkeypatch.setattr(type(services.blobs), "concat", concat)
    services.sessions.merge_pieces(token)
    with services.db.read() as s:
        stream = services.sessions.stream(s, token)
    assert sum(extent.length for extent in stream) == end == 8
    with services.blobs.open(stream.blobs) as opened:
        assert b"".join(opened.pieces(stream)) == b"ABCDEFGH"


def test_committing_an_incomplete_session_copies_nothing(graph, services, monkeypatch):
    """POST to the upload URL of a session with bytes still to come is 400: its pieces were merged first all the
    same, so that whoever held the URL could have the host copy everything received, again and again."""
    monkeypatch.setattr(sessions, "MAX_BLOBS", 2)
    url = new_session(graph)
    for first in range(3):
        assert graph.upload(url, b"x", first, 4).status_int == 202
    before = stored_blobs(services)
    refused = graph.post_json(url, {})
    assert refused.status_int == 400 and "uploadSessionIncomplete" in refused.text
    assert stored_blobs(services) == before
    done = graph.upload(url, b"y", 3, 4)
    assert done.status_int == 201  # completing it still merges its pieces
    assert len(blobs_of(services, done.json["id"])) <= 2 and stored_blobs(services) == blobs_of(
        services, done.json["id"]
    )
    assert content_of(graph, done.json["id"]) == b"xxxy"


@pytest.mark.local_storage  # where a held blob is an open descriptor
def test_a_merge_holds_no_more_copies_than_it_keeps(graph, services, settings, monkeypatch):
    """Every copy a merge made stayed held until the end, a descriptor each in the local store: tens of thousands
    of fragments made a first level of hundreds of copies, past the process's limit again. Only the last level,
    which the rows will name, needs holding."""
    monkeypatch.setattr(sessions, "MAX_BLOBS", 4)
    real = type(services.blobs).concat
    held: list[int] = []

    def counted(self, opened, extents):
        blob = real(self, opened, extents)
        held.append(len(blob_fds(settings)))
        return blob

    monkeypatch.setattr(type(services.blobs), "concat", counted)
    content = data(4**4 + 1)  # 257 fragments: levels of 65, 17, 5 and 2 copies
    item = upload_in_fragments(graph, content, 1)
    assert len(held) == 65 + 17 + 5 + 2
    assert max(held) <= 4 + 1 + 4  # a run open, its copy, and the last level's copies
    assert content_of(graph, item) == content
    assert stored_blobs(services) == blobs_of(services, item)
