"""Streams kept where their chunks lie (chunked.py, extents.py): what a save writes, shares, copies and frees."""

import pytest

from wopihost.gc import collect
from wopihost.models import AlternateStream, File

from .cspp_helpers import full_file, get_chunked, put_chunked, stream_filter, upload
from .helpers import stored_blobs, stored_bytes

CHUNKS = [bytes([65 + i]) * 3000 for i in range(6)]  # 6 chunks of 3000 bytes: 3032-byte frames


def rows(services, file_id) -> tuple[File, dict[str, AlternateStream]]:
    with services.db.read() as s:
        alternates = {a.stream_id: a for a in s.query(AlternateStream).filter_by(file_id=file_id)}
        return s.get(File, file_id), alternates


@pytest.fixture
def empty(make_file, client_for):
    """An unlocked empty file (its first PutChunkedFile needs no lock), and no other file."""
    return client_for(make_file(b"", name="New.docx"))


def test_a_committed_session_becomes_the_file_without_a_copy(empty, services, settings):
    signature, chunks = full_file(*CHUNKS)
    old = stored_blobs(services)
    token = upload(empty, chunks, piece=4096)  # every chunk's payload crosses a piece boundary
    pieces = stored_blobs(services) - old
    assert len(pieces) == 5

    response = put_chunked(empty, {"MainContent": signature}, session=token)
    assert response.status_int == 200, response.headers
    assert stored_blobs(services) == pieces  # nothing written, the empty old content gone
    file, _ = rows(services, empty.file_id)
    assert file.blob == "" and file.content.blobs == pieces and file.size == 18000

    data = b"".join(CHUNKS)
    assert empty.get_file().body == data
    ranged = empty.get_file(Range="bytes=2990-9010")
    assert ranged.status_int == 206 and ranged.body == data[2990:9011]
    _, message, frames = get_chunked(empty, [stream_filter(scheme="FullFile")])
    assert [frames[c.chunk_id] for c in signature.chunks] == CHUNKS


def test_a_delta_save_keeps_the_unchanged_chunks_where_they_are(empty, services, settings):
    v1, chunks = full_file(*CHUNKS[:3])
    assert put_chunked(empty, {"MainContent": v1}, session=upload(empty, chunks)).status_int == 200
    first = stored_blobs(services)
    assert empty.lock("L").status_int == 200

    v2, new = full_file(CHUNKS[0], b"changed", CHUNKS[2])
    token = upload(empty, [new[1]])  # only the new chunk travels
    response = put_chunked(empty, {"MainContent": v2}, session=token, X_WOPI_Lock="L")
    assert response.status_int == 200, response.headers
    second = stored_blobs(services) - first
    assert len(second) == 1 and stored_blobs(services) == first | second
    file, _ = rows(services, empty.file_id)
    assert file.content.blobs == first | second
    assert empty.get_file().body == CHUNKS[0] + b"changed" + CHUNKS[2]

    # Content from outside replaces every stream: all their blobs go, the new content is one blob.
    assert empty.put_file(b"plain", lock="L").status_int == 200
    (only,) = stored_blobs(services)
    file, _ = rows(services, empty.file_id)
    assert (file.blob, file.extents) == (only, None) and empty.get_file().body == b"plain"


def test_a_save_that_would_keep_much_more_than_it_needs_copies(empty, services, settings):
    unused, used = b"u" * 1_500_000, b"s" * 10_000  # 1.5 MB kept for 10 kB: more than 2 x 10 kB + 1 MiB
    signature, chunks = full_file(used)
    _, others = full_file(unused)
    token = upload(empty, others + chunks, piece=2 << 20)  # one piece, nearly all of it a chunk nobody uses
    assert put_chunked(empty, {"MainContent": signature}, session=token).status_int == 200
    (copy,) = stored_blobs(services)
    file, _ = rows(services, empty.file_id)
    assert (file.blob, file.extents) == (copy, None) and stored_bytes(services) == 10_000
    assert empty.get_file().body == used


def test_a_save_from_tiny_pieces_copies(empty, services, settings):
    signature, chunks = full_file(b"t" * 65536)
    # 33 pieces for one chunk: too many to keep, and too few for the commit to merge them first (MAX_BLOBS)
    token = upload(empty, chunks, piece=2048)
    assert put_chunked(empty, {"MainContent": signature}, session=token).status_int == 200
    (copy,) = stored_blobs(services)
    assert rows(services, empty.file_id)[0].blob == copy and stored_bytes(services) == 65536
    assert empty.get_file().body == b"t" * 65536


def test_streams_of_one_file_share_a_blob_until_its_last_user_goes(make_file, client_for, services, settings, clock):
    file = make_file(b"", name="New.docx")
    empty = client_for(file)
    main, hello = full_file(b"hello")
    alternate, world = full_file(b"world")
    token = upload(empty, hello + world)  # one piece holds both
    response = put_chunked(empty, {"MainContent": main, "Alt": alternate}, session=token)
    assert response.status_int == 200, response.headers
    (piece,) = stored_blobs(services)
    file, alternates = rows(services, empty.file_id)
    assert file.content.blobs == alternates["Alt"].content.blobs == {piece}
    assert empty.lock("L").status_int == 200

    # The alternate stream is deleted; MainContent still uses the piece, so it stays.
    assert put_chunked(empty, {"MainContent": main, "Alt": full_file()[0]}, X_WOPI_Lock="L").status_int == 200
    assert stored_blobs(services) == {piece} and rows(services, empty.file_id)[1] == {}
    assert collect(services, grace=0).blobs == 0  # nor does garbage collection take it
    assert empty.get_file().body == b"hello"

    # An alternate stream that expires after 30 days leaves MainContent's bytes alone too.
    token = upload(empty, world)
    assert put_chunked(empty, {"MainContent": main, "Alt": alternate}, session=token, X_WOPI_Lock="L").status_int == 200
    assert len(stored_blobs(services)) == 2
    clock.advance(days=31)
    later = client_for(file)  # the first token has expired meanwhile
    assert later.lock("L").status_int == 200
    assert put_chunked(later, {"MainContent": main}, X_WOPI_Lock="L").status_int == 200
    assert stored_blobs(services) == {piece} and later.get_file().body == b"hello"


def test_deleting_the_file_frees_every_blob_its_streams_used(empty, services, settings):
    main, hello = full_file(b"hello")
    alternate, world = full_file(b"world")
    token = upload(empty, hello, piece=16)
    response = put_chunked(empty, {"MainContent": main, "Alt": alternate}, session=token, body=None, chunks=world)
    assert response.status_int == 200, response.headers
    _, alternates = rows(services, empty.file_id)
    assert alternates["Alt"].extents is not None  # kept in the request body's spool
    assert stored_blobs(services)
    assert empty.op("DELETE").status_int == 200
    assert stored_blobs(services) == set()
