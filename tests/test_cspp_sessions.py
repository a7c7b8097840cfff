"""CreateUploadSession, UpdateUploadSession and committing a session (docs/cspp-plus.md §1.5-1.7, §4)."""

import io
import os
import re
import resource
from datetime import timedelta

import pytest
import sqlalchemy as sa

from wopihost import chunked, chunkindex, sessions
from wopihost.gc import collect
from wopihost.models import SessionChunk, UploadSession

from .cspp_helpers import (
    chunk_frames,
    chunk_id,
    create_session,
    full_file,
    put_chunked,
    sequence_number,
    update_session,
    upload,
)
from .helpers import revoke_or_expire, stored_blobs, while_the_body_comes

# docs/cspp-plus.md §4.5: two Chunk frames, "hello" and "world", 74 bytes.
HELLO_WORLD = chunk_frames([("yuaC02qCaDdD4BrH0R6UXA==", b"hello"), ("Jb4/r1zZ3xx+kzfTbN35Qg==", b"world")])


@pytest.fixture
def locked(wopi):
    assert wopi.lock("L").status_int == 200
    return wopi


# -- CreateUploadSession ----------------------------------------------------------------


def test_create_gives_unique_url_and_header_safe_tokens(wopi):
    tokens = {create_session(wopi) for _ in range(3)}  # several sessions of one user and file at once
    assert len(tokens) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9]+", token) for token in tokens)


def test_create_needs_write_permission(make_file, client_for):
    response = client_for(make_file(), can_write=False).op("CREATE_UPLOAD_SESSION")
    assert response.status_int == 404


def test_create_answers_only_the_token(wopi):
    response = wopi.op("CREATE_UPLOAD_SESSION")
    assert list(response.json) == ["UploadSessionToken"]
    assert response.content_type == "application/json"


# -- UpdateUploadSession ----------------------------------------------------------------


def test_pieces_append_in_order(wopi):
    token = create_session(wopi)
    first = update_session(wopi, token, 0, HELLO_WORLD[:30])  # cuts inside the first ChunkId (docs/cspp-plus.md §4.5)
    assert first.status_int == 200
    assert first.headers["X-WOPI-UploadSessionCurrentOffset"] == "30"
    second = update_session(wopi, token, 30, HELLO_WORLD[30:])
    assert second.headers["X-WOPI-UploadSessionCurrentOffset"] == "74"


@pytest.mark.parametrize("offset", [0, 29, 31, 1000])
def test_wrong_offset_is_400_with_the_current_offset(wopi, offset):
    token = create_session(wopi)
    update_session(wopi, token, 0, HELLO_WORLD[:30])
    response = update_session(wopi, token, offset, HELLO_WORLD[30:])
    assert response.status_int == 400
    assert response.headers["X-WOPI-UploadSessionCurrentOffset"] == "30"
    assert "X-WOPI-ContentRangeOffset" in response.headers["X-WOPI-FailureReason"]
    assert update_session(wopi, token, 30, HELLO_WORLD[30:]).status_int == 200  # nothing was stored


@pytest.mark.parametrize("offset", ["-1", "abc", "1.5", ""])
def test_a_malformed_offset_is_400_with_the_current_offset_of_a_live_session(wopi, offset):
    """The client can resynchronise from the answer, as after a wrong offset (the validator's
    UpdateUploadSession tests send -1)."""
    token = create_session(wopi)
    update_session(wopi, token, 0, HELLO_WORLD[:30])
    response = wopi.op(
        "UPDATE_UPLOAD_SESSION",
        HELLO_WORLD[30:],
        X_WOPI_UploadSessionToken=token,
        X_WOPI_ContentRangeOffset=offset,
        X_WOPI_ContentRangeLength=str(len(HELLO_WORLD) - 30),
    )
    assert response.status_int == 400
    assert response.headers["X-WOPI-UploadSessionCurrentOffset"] == "30"
    unknown = wopi.op(
        "UPDATE_UPLOAD_SESSION",
        b"x",
        X_WOPI_UploadSessionToken="A" * 22,
        X_WOPI_ContentRangeOffset=offset,
        X_WOPI_ContentRangeLength="1",
    )
    assert unknown.status_int == 400 and "X-WOPI-UploadSessionCurrentOffset" not in unknown.headers


@pytest.mark.parametrize("declared", [10, 40])
def test_body_length_differing_from_the_header_is_400(wopi, declared):
    token = create_session(wopi)
    response = update_session(wopi, token, 0, HELLO_WORLD[:20], length=declared)
    assert response.status_int == 400
    assert "X-WOPI-ContentRangeLength" in response.headers["X-WOPI-FailureReason"]
    assert update_session(wopi, token, 0, HELLO_WORLD).headers["X-WOPI-UploadSessionCurrentOffset"] == "74"


@pytest.mark.parametrize(
    "headers",
    [
        {"X_WOPI_ContentRangeOffset": "0", "X_WOPI_ContentRangeLength": "5"},  # no token
        {"X_WOPI_UploadSessionToken": "t", "X_WOPI_ContentRangeLength": "5"},
        {"X_WOPI_UploadSessionToken": "t", "X_WOPI_ContentRangeOffset": "0"},
        {"X_WOPI_UploadSessionToken": "t", "X_WOPI_ContentRangeOffset": "-1", "X_WOPI_ContentRangeLength": "5"},
        {"X_WOPI_UploadSessionToken": "t", "X_WOPI_ContentRangeOffset": "0", "X_WOPI_ContentRangeLength": "five"},
    ],
)
def test_missing_or_malformed_headers_are_400(wopi, headers):
    response = wopi.op("UPDATE_UPLOAD_SESSION", b"hello", **headers)
    assert response.status_int == 400
    assert response.headers["X-WOPI-FailureReason"]


def test_unknown_token_is_410(wopi):
    response = update_session(wopi, "no-such-session", 0, b"x")
    assert response.status_int == 410
    assert response.headers["X-WOPI-FailureReason"]


def test_token_of_another_file_is_410(wopi, make_file, client_for):
    other = client_for(make_file(name="Other.docx"))
    token = create_session(other)
    assert update_session(wopi, token, 0, b"x").status_int == 410
    assert update_session(other, token, 0, b"x").status_int == 200


def test_update_of_a_deleted_files_session_is_404(wopi, services):
    token = create_session(wopi)
    services.files.delete(wopi.file_id)
    assert update_session(wopi, token, 0, b"x").status_int == 404


def test_update_needs_write_permission(wopi, services, client_for):
    token = create_session(wopi)
    reader = client_for(services.files.get(wopi.file_id), can_write=False)
    assert update_session(reader, token, 0, b"x").status_int == 404


def test_session_over_the_size_limit_is_413(wopi, settings):
    limit = settings.max_upload_session_size
    token = create_session(wopi)
    response = update_session(wopi, token, 0, b"x" * (limit + 1))
    assert response.status_int == 413
    assert response.headers["X-WOPI-UploadSessionCurrentOffset"] == "0"


def test_a_users_open_sessions_are_bounded(wopi, settings, make_file, client_for, clock):
    limit = settings.max_upload_sessions_per_user
    first = create_session(wopi)
    clock.advance(minutes=10)
    for _ in range(limit - 1):
        create_session(wopi)
    refused = wopi.op("CREATE_UPLOAD_SESSION")
    assert refused.status_int == 429
    assert f"{limit} open upload sessions" in refused.headers["X-WOPI-FailureReason"]
    assert refused.headers["Retry-After"] == str(20 * 60)  # when the oldest one expires
    assert create_session(client_for(make_file(name="Bob.docx", owner="bob"), user="bob"))  # others are not bound
    clock.advance(minutes=20, seconds=1)  # the first session has expired, the others have not
    assert update_session(wopi, first, 0, b"x").status_int == 410
    assert wopi.op("CREATE_UPLOAD_SESSION").status_int == 200
    assert wopi.op("CREATE_UPLOAD_SESSION").status_int == 429


def test_a_users_session_bytes_are_bounded_across_sessions(wopi, services, settings):
    services.sessions.max_bytes_per_user = 100
    one, two = create_session(wopi), create_session(wopi)
    assert update_session(wopi, one, 0, b"x" * 60).status_int == 200
    before = len(stored_blobs(services))
    refused = update_session(wopi, two, 0, b"y" * 41)
    assert refused.status_int == 413
    assert refused.headers["X-WOPI-UploadSessionCurrentOffset"] == "0"
    assert "100 bytes" in refused.headers["X-WOPI-FailureReason"]
    assert len(stored_blobs(services)) == before  # nothing was kept
    assert update_session(wopi, two, 0, b"y" * 40).status_int == 200


def test_idle_session_expires_after_30_minutes(wopi, clock):
    token = create_session(wopi)
    update_session(wopi, token, 0, HELLO_WORLD[:30])
    clock.advance(minutes=29, seconds=59)
    assert update_session(wopi, token, 30, HELLO_WORLD[30:40]).status_int == 200
    clock.advance(minutes=30)
    assert update_session(wopi, token, 40, HELLO_WORLD[40:]).status_int == 410


def test_updates_keep_a_session_alive_past_30_minutes(wopi, clock):
    token = create_session(wopi)
    for offset in range(0, 74, 10):  # 8 updates, 20 minutes apart: 2 h 40 min in all
        clock.advance(minutes=20)
        assert update_session(wopi, token, offset, HELLO_WORLD[offset : offset + 10]).status_int == 200
    clock.advance(minutes=20)
    wopi.lock("L")  # the file is not empty: saving it needs a lock
    signature, _ = full_file(b"hello")
    assert put_chunked(wopi, {"MainContent": signature}, session=token, X_WOPI_Lock="L").status_int == 200
    assert wopi.get_file().body == b"hello"


def test_zero_length_update_only_slides_the_expiry(wopi, clock):
    token = create_session(wopi)
    update_session(wopi, token, 0, HELLO_WORLD[:30])
    clock.advance(minutes=25)
    response = update_session(wopi, token, 30, b"")
    assert response.status_int == 200 and response.headers["X-WOPI-UploadSessionCurrentOffset"] == "30"
    clock.advance(minutes=25)
    assert update_session(wopi, token, 30, HELLO_WORLD[30:]).status_int == 200


def chunked_update(wopi, token: str, offset: int, length: int, body: bytes):
    """UpdateUploadSession with a chunked body: no Content-Length to check the declared length against."""
    return wopi.raw_post(
        "",
        io.BytesIO(body),
        None,
        X_WOPI_Override="UPDATE_UPLOAD_SESSION",
        X_WOPI_UploadSessionToken=token,
        X_WOPI_ContentRangeOffset=str(offset),
        X_WOPI_ContentRangeLength=str(length),
    )


@pytest.mark.parametrize("length, body", [(10, HELLO_WORLD[30:]), (44, HELLO_WORLD[30:40]), (0, HELLO_WORLD[30:])])
def test_a_chunked_body_of_another_length_is_400_with_the_current_offset(wopi, length, body):
    token = create_session(wopi)
    assert update_session(wopi, token, 0, HELLO_WORLD[:30]).status_int == 200
    response = chunked_update(wopi, token, 30, length, body)
    assert response.status_int == 400 and "X-WOPI-ContentRangeLength" in response.headers["X-WOPI-FailureReason"]
    assert response.headers["X-WOPI-UploadSessionCurrentOffset"] == "30"
    assert chunked_update(wopi, token, 30, 44, HELLO_WORLD[30:]).headers["X-WOPI-UploadSessionCurrentOffset"] == "74"


def update_while_it_comes(wopi, token: str, offset: int, piece: bytes, meanwhile):
    """An UpdateUploadSession of `piece`, answered once `meanwhile()` has run with half of it read."""
    return while_the_body_comes(
        lambda held: wopi.raw_post(
            "",
            held,
            len(piece),
            X_WOPI_Override="UPDATE_UPLOAD_SESSION",
            X_WOPI_UploadSessionToken=token,
            X_WOPI_ContentRangeOffset=str(offset),
            X_WOPI_ContentRangeLength=str(len(piece)),
        ),
        piece,
        meanwhile,
    )


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_token_revoked_or_expired_while_the_piece_comes_stores_nothing(wopi, services, clock, how):
    """The token was live when UpdateUploadSession began, and is not once its piece is in: 401, as PutFile's, and
    the session is as it was (its bytes, its chunk index, its expiry: no client at work slid it)."""
    token = create_session(wopi)
    assert update_session(wopi, token, 0, HELLO_WORLD[:30]).status_int == 200
    before, (session,) = stored_blobs(services), services.sessions.list()
    wopi.token = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(minutes=10)).token
    piece = HELLO_WORLD[30:]

    def meanwhile() -> None:
        revoke_or_expire(services, clock, wopi.token, how)

    answer = update_while_it_comes(wopi, token, 30, piece, meanwhile)
    assert answer.status_int == 401 and answer.headers["X-WOPI-FailureReason"]
    assert stored_blobs(services) == before
    (after,) = services.sessions.list()
    assert (after.received, after.expires_at) == (30, session.expires_at)
    with services.db.read() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(SessionChunk)) == 0  # "hello" is only at byte 37
    wopi.token = services.issue_token(wopi.file_id, "alice", True).token
    assert update_session(wopi, token, 30, piece).headers["X-WOPI-UploadSessionCurrentOffset"] == "74"


# -- committing a session ---------------------------------------------------------------


@pytest.fixture
def empty(make_file, client_for):
    """An unlocked empty file: the first PutChunkedFile needs no lock (lock table row 1)."""
    return client_for(make_file(b"", name="New.docx"))


@pytest.mark.parametrize("cut", range(0, 75))
def test_session_split_at_every_byte_commits_exactly(empty, cut):
    token = create_session(empty)
    assert update_session(empty, token, 0, HELLO_WORLD[:cut]).status_int == 200
    assert update_session(empty, token, cut, HELLO_WORLD[cut:]).status_int == 200
    main, _ = full_file(b"hello")
    alt, _ = full_file(b"world")
    response = put_chunked(empty, {"MainContent": main, "AltStream1": alt}, session=token)
    assert response.status_int == 200, response.headers
    assert empty.get_file().body == b"hello"


def test_worked_example_of_4_5(empty, services):
    """docs/cspp-plus.md §4.5: the session holds hello and world; the commit adds a property and an alternate stream."""
    token = create_session(empty)
    update_session(empty, token, 0, HELLO_WORLD[:30])
    update_session(empty, token, 30, HELLO_WORLD[30:])
    main, _ = full_file(b"hello")
    alt, _ = full_file(b"world")
    response = put_chunked(
        empty,
        {"MainContent": main, "AltStream1": alt},
        session=token,
        properties=[{"Name": "p1", "Value": "v1", "Retention": "KeepOnContentChange"}],
    )
    assert response.status_int == 200
    assert empty.get_file().body == b"hello"
    assert update_session(empty, token, 74, b"more").status_int == 410  # the session is gone
    assert services.sessions.list() == []


def test_committed_session_cannot_be_committed_again(empty):
    token = upload(empty, [("yuaC02qCaDdD4BrH0R6UXA==", b"hello")])
    main, _ = full_file(b"hello")
    assert put_chunked(empty, {"MainContent": main}, session=token).status_int == 200
    empty.lock("L")
    response = put_chunked(empty, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    assert response.status_int == 410


def test_unknown_session_at_commit_is_410(locked):
    main, _ = full_file(b"hello")
    assert put_chunked(locked, {"MainContent": main}, session="nope", X_WOPI_Lock="L").status_int == 410


def test_failed_commit_keeps_the_session_and_a_retry_after_more_chunks_succeeds(locked, services):
    token = upload(locked, [("yuaC02qCaDdD4BrH0R6UXA==", b"hello")])
    stale = sequence_number(locked) - 1
    main, _ = full_file(b"hello", b"world")
    response = put_chunked(locked, {"MainContent": main}, sequence=stale, session=token, X_WOPI_Lock="L")
    assert response.status_int == 412
    missing = put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    assert missing.status_int == 400  # "world" is in neither the request, the session nor the file
    assert "Jb4/r1zZ3xx+kzfTbN35Qg==" in missing.headers["X-WOPI-FailureReason"]
    offset = len(chunk_frames([("yuaC02qCaDdD4BrH0R6UXA==", b"hello")]))
    assert (
        update_session(locked, token, offset, chunk_frames([("Jb4/r1zZ3xx+kzfTbN35Qg==", b"world")])).status_int == 200
    )
    assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 200
    assert locked.get_file().body == b"helloworld"


def test_failed_commit_slides_the_session_expiry(locked, clock):
    token = upload(locked, [("yuaC02qCaDdD4BrH0R6UXA==", b"hello")])
    main, _ = full_file(b"hello")
    clock.advance(minutes=25)
    assert put_chunked(locked, {"MainContent": main}, sequence=999, session=token, X_WOPI_Lock="L").status_int == 412
    clock.advance(minutes=25)  # 50 minutes after the last update, 25 after the failed commit
    locked.lock("L")  # the WOPI lock has its own 30 minutes; an editor keeps refreshing it
    assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 200


@pytest.mark.parametrize("meanwhile", ["a save", "another lock"])
def test_a_commit_refused_by_its_transaction_slides_the_session_expiry(locked, services, clock, monkeypatch, meanwhile):
    """The file changes between the commit's first read, which passes, and its transaction, which refuses it (412
    for a save meanwhile, 409 for another lock): the session stays for the retry, and its 30 minutes restart as
    after a commit refused at its first read."""
    token = upload(locked, [("yuaC02qCaDdD4BrH0R6UXA==", b"hello")])
    real = chunkindex.session_chunks

    def then_the_file_changes(*args):
        if meanwhile == "a save":
            assert locked.put_file(b"saved meanwhile", lock="L").status_int == 200
        else:
            assert locked.op("UNLOCK", X_WOPI_Lock="L").status_int == 200
            assert locked.lock("M").status_int == 200
        return real(*args)

    monkeypatch.setattr(chunkindex, "session_chunks", then_the_file_changes)
    main, _ = full_file(b"hello")
    clock.advance(minutes=25)
    refused = put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    assert refused.status_int == (412 if meanwhile == "a save" else 409)
    monkeypatch.undo()
    clock.advance(minutes=25)  # 50 minutes after the last update, 25 after the refused commit
    lock = "L" if meanwhile == "a save" else "M"
    locked.lock(lock)  # the WOPI lock has its own 30 minutes; an editor keeps refreshing it
    assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock=lock).status_int == 200
    assert locked.get_file().body == b"hello"


@pytest.mark.parametrize("refusal", ["commit of a missing chunk", "update at a wrong offset", "update past the limit"])
def test_every_request_refused_with_a_live_session_slides_its_expiry(locked, settings, clock, refusal):
    """The client that got the 400 or 413 is at work with the session (it resynchronises, sends the chunk that
    was missing): the session's 30 minutes restart whatever the answer, not only after a piece kept."""
    token = upload(locked, [("yuaC02qCaDdD4BrH0R6UXA==", b"hello")])
    end = len(chunk_frames([("yuaC02qCaDdD4BrH0R6UXA==", b"hello")]))
    clock.advance(minutes=25)
    if refusal == "commit of a missing chunk":
        main, _ = full_file(b"hello", b"world")
        assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 400
    elif refusal == "update at a wrong offset":
        assert update_session(locked, token, 0, b"x").status_int == 400
    else:
        assert update_session(locked, token, end, b"x" * settings.max_upload_session_size).status_int == 413
    clock.advance(minutes=25)  # 50 minutes after the last piece kept, 25 after the refused request
    assert update_session(locked, token, end, b"").status_int == 200


def test_expired_session_at_commit_is_410(locked, clock):
    token = upload(locked, [("yuaC02qCaDdD4BrH0R6UXA==", b"hello")])
    clock.advance(minutes=31)
    locked.lock("L")
    main, _ = full_file(b"hello")
    assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 410


def test_a_session_swept_while_the_commit_reads_it_is_410(locked, services, clock, monkeypatch):
    """A sweep (another node's, whose clock says the session expired) deletes the session between the commit's read
    of its row and index and its read of the pieces. Under READ COMMITTED those were an empty stream, which the
    index said held a frame (a 500); the read is one snapshot now, and the commit finds the session gone."""
    token = upload(locked, [("yuaC02qCaDdD4BrH0R6UXA==", b"hello")])
    real = chunkindex.recorded

    def recorded_then_swept(s, session):
        index = real(s, session)
        assert services.sessions.sweep(now=clock.now() + timedelta(minutes=31) + sessions.PIECE_GRACE) == 1
        return index

    monkeypatch.setattr(chunkindex, "recorded", recorded_then_swept)
    main, _ = full_file(b"hello")
    response = put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    assert response.status_int == 410
    monkeypatch.undo()
    assert locked.get_file().body == b"hello world" and sequence_number(locked) == 1


def test_session_ending_inside_a_frame_fails_only_at_commit(locked):
    token = create_session(locked)
    assert update_session(locked, token, 0, HELLO_WORLD[:50]).status_int == 200
    main, _ = full_file(b"hello")
    response = put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    assert response.status_int == 400
    assert "upload session" in response.headers["X-WOPI-FailureReason"]
    assert update_session(locked, token, 50, HELLO_WORLD[50:]).status_int == 200
    assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 200


def test_session_with_a_non_chunk_frame_is_400_at_commit(locked):
    from wopihost.cspp.frames import END_FRAME

    token = create_session(locked)
    update_session(locked, token, 0, HELLO_WORLD + END_FRAME)
    main, _ = full_file(b"hello")
    assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 400


def test_chunk_whose_payload_does_not_match_its_id_is_400(locked):
    token = create_session(locked)
    update_session(locked, token, 0, chunk_frames([("yuaC02qCaDdD4BrH0R6UXA==", b"HELLO")]))
    main, _ = full_file(b"hello")
    response = put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    assert response.status_int == 400
    assert "hash" in response.headers["X-WOPI-FailureReason"]
    assert locked.get_file().body == b"hello world"


# -- the chunk index: frames decoded as the pieces arrive (wopihost/chunkindex.py) -------------------------------

THREE = chunk_frames(
    [("yuaC02qCaDdD4BrH0R6UXA==", b"hello"), ("Jb4/r1zZ3xx+kzfTbN35Qg==", b"world"), (chunk_id(b"again"), b"again")]
)
FRAME = len(THREE) // 3  # 37 bytes each: the 16-byte header, the 16-byte ChunkId and a 5-byte payload
BAD_TYPE = THREE[: 2 * FRAME + 3] + bytes([9]) + THREE[2 * FRAME + 4 :]  # frame 3's FrameType (big-endian) is 9
BAD_ID = THREE[: FRAME + 32] + b"WORLD" + THREE[FRAME + 37 :]  # frame 2's payload no longer hashes to its id
SHORT = THREE[:-3]  # the stream stops 3 bytes before frame 3 ends


def commit_reason(client, pieces: list[bytes]) -> tuple[int, str]:
    token, offset = create_session(client), 0
    for piece in pieces:
        assert update_session(client, token, offset, piece).status_int == 200
        offset += len(piece)
    main, _ = full_file(b"hello", b"world", b"again")
    response = put_chunked(client, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    return response.status_int, response.headers.get("X-WOPI-FailureReason", "")


WHOLE = {
    BAD_TYPE: "the upload session frames cannot be read: frame 3 has unknown FrameType 9",
    SHORT: f"the upload session frames cannot be read: the stream ends in the middle of a frame (at byte {len(SHORT)})",
    BAD_ID: "the payload of chunk Jb4/r1zZ3xx+kzfTbN35Qg== does not hash to its ChunkId",
}


@pytest.mark.parametrize("stream", WHOLE, ids=["bad-type", "short", "bad-id"])
@pytest.mark.parametrize(
    "cuts",
    [
        (),
        (1,),
        (FRAME - 3,),
        (FRAME + 20,),
        (2 * FRAME,),
        (2 * FRAME + 1,),
        (7, 40, 100),
        (FRAME + 5, FRAME + 10, FRAME + 20),
    ],
)
@pytest.mark.parametrize("carry", ["indexed", "beyond MAX_CARRY"])
def test_a_stream_in_pieces_fails_as_it_would_whole(locked, monkeypatch, stream, cuts, carry):
    """Frame numbers and byte offsets in the reason are the whole stream's, however the pieces cut it, whether the
    pieces decoded their frames or a frame too long to carry left the decoding to the commit."""
    if carry != "indexed":
        monkeypatch.setattr(chunkindex, "MAX_CARRY", 2)
    bounds = [0, *cuts, len(stream)]
    pieces = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    assert commit_reason(locked, pieces) == (400, WHOLE[stream])
    assert locked.get_file().body == b"hello world"  # nothing changed


@pytest.mark.parametrize("cuts", [(), (FRAME,), (FRAME + 5, 2 * FRAME + 1)])
@pytest.mark.parametrize("carry", ["indexed", "beyond MAX_CARRY"])
def test_a_session_of_more_chunk_frames_than_a_save_can_name_is_400(locked, monkeypatch, cuts, carry):
    """Every chunk found is kept until the commit: 32-byte empty chunks filling a session took gigabytes."""
    monkeypatch.setattr(chunkindex, "MAX_CHUNK_FRAMES", 2)
    if carry != "indexed":
        monkeypatch.setattr(chunkindex, "MAX_CARRY", 2)
    bounds = [0, *cuts, len(THREE)]
    reason = "the upload session frames cannot be read: more than 2 Chunk frames, more than a save can name"
    assert commit_reason(locked, [THREE[a:b] for a, b in zip(bounds, bounds[1:])]) == (400, reason)
    assert locked.get_file().body == b"hello world"  # nothing changed


@pytest.mark.parametrize("cut", range(1, len(THREE)))
def test_a_stream_cut_anywhere_commits_from_its_index(locked, services, cut):
    assert commit_reason(locked, [THREE[:cut], THREE[cut:]]) == (200, "")
    assert locked.get_file().body == b"helloworldagain"


def test_a_commit_reads_none_of_the_sessions_bytes(empty, services, monkeypatch):
    """Its time does not grow with the session: what the pieces indexed is read from the database."""
    token = upload(empty, [(chunk_id(bytes([n]) * 1000), bytes([n]) * 1000) for n in range(40)], piece=3001)
    pieces = {extent.blob for extent in session_stream(services, token)}
    opened_type = type(services.blobs.open())
    real = opened_type.pieces
    read: list[str] = []

    def pieces_spy(self, extents, *args):
        read.extend(extent.blob for extent in extents)
        return real(self, extents, *args)

    monkeypatch.setattr(opened_type, "pieces", pieces_spy)
    main, _ = full_file(*(bytes([n]) * 1000 for n in range(40)))
    assert put_chunked(empty, {"MainContent": main}, session=token).status_int == 200
    assert read and not pieces & set(read)  # the request body was decoded; no piece was read
    monkeypatch.undo()
    assert empty.get_file().body == b"".join(bytes([n]) * 1000 for n in range(40))


def test_a_session_from_before_the_index_commits_by_decoding_it(locked, services):
    """A session open across the upgrade that added the index has nothing indexed: its commit decodes it all."""
    token = upload(locked, [("yuaC02qCaDdD4BrH0R6UXA==", b"hello"), ("Jb4/r1zZ3xx+kzfTbN35Qg==", b"world")], piece=30)
    with services.db.write() as s:
        s.execute(sa.delete(SessionChunk))
        s.execute(sa.update(UploadSession).values(indexed=0, indexed_frames=0, frame_error=None))
    main, _ = full_file(b"hello", b"world")
    assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 200
    assert locked.get_file().body == b"helloworld"


def test_a_commit_takes_only_the_chunks_its_session_row_counted(locked, services):
    """Under READ COMMITTED a piece may be kept between a commit's read of the session row and of its chunks: the
    chunks that piece recorded are not the commit's (it then answers 409, the session having grown)."""
    token = create_session(locked)
    assert update_session(locked, token, 0, THREE[:FRAME]).status_int == 200
    with services.db.read() as s:
        row = services.sessions.get(s, token, locked.file_id)
        as_read = UploadSession(token=token, indexed=row.indexed, indexed_frames=row.indexed_frames)
    assert update_session(locked, token, FRAME, THREE[FRAME:]).status_int == 200  # two more chunks recorded
    with services.db.read() as s:
        assert [chunk.chunk_id for chunk in chunkindex.recorded(s, as_read).chunks] == ["yuaC02qCaDdD4BrH0R6UXA=="]
        assert len(chunkindex.recorded(s, services.sessions.get(s, token, locked.file_id)).chunks) == 3


def session_stream(services, token):
    with services.db.read() as s:
        return services.sessions.stream(s, token)


# -- a session of many pieces: copied into at most MAX_BLOBS blobs before the commit opens them ------------------

MANY = [bytes([n]) * 100 for n in range(12)]  # 12 frames of 132 bytes


def upload_in(client, stream: bytes, pieces: int, token: str | None = None, start: int = 0) -> str:
    """`stream` sent as `pieces` pieces of about equal size, from `start` of the session `token` (a new one)."""
    token = token or create_session(client)
    bounds = [start + len(stream) * n // pieces for n in range(pieces + 1)]
    for a, b in zip(bounds, bounds[1:]):
        assert update_session(client, token, a, stream[a - start : b - start]).status_int == 200
    return token


def at_most(monkeypatch, blobs: int) -> None:
    """extents.MAX_BLOBS as the commit and the merge read it."""
    monkeypatch.setattr(chunked, "MAX_BLOBS", blobs)
    monkeypatch.setattr(sessions, "MAX_BLOBS", blobs)


def file_blobs(services, client) -> set[str]:
    return services.files.get(client.file_id).content.blobs


def limit_descriptors_to_what_is_open_and(more: int) -> None:
    """The process may open `more` descriptors than it has open now, and a few for what else runs in it (the
    threads an earlier test of this pytest worker left, which in a whole-suite run took the last of 8)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + more + 24, hard))


def test_a_session_of_more_pieces_than_descriptors_commits(locked, services):
    """The commit opened each of its session's pieces, a descriptor each: thousands of small UpdateUploadSessions
    took it past the process's limit (1,024 under systemd), and it failed (EMFILE, a 500), every other request of
    the worker with it. Chunks come from the session, the request and the file, as from a session of few pieces."""
    save, kept = full_file(b"hello", b"world")
    assert put_chunked(locked, {"MainContent": save}, kept, X_WOPI_Lock="L").status_int == 200
    token = upload_in(locked, chunk_frames([(chunk_id(p), p) for p in MANY]), 3 * sessions.MAX_BLOBS)
    main, inline = full_file(b"world", *MANY, b"inline")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit_descriptors_to_what_is_open_and(sessions.MAX_BLOBS)  # a run of pieces being copied, the copy, the request
    try:
        response = put_chunked(locked, {"MainContent": main}, inline[-1:], session=token, X_WOPI_Lock="L")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert response.status_int == 200, response.headers
    assert locked.get_file().body == b"world" + b"".join(MANY) + b"inline"
    assert len(file_blobs(services, locked)) <= sessions.MAX_BLOBS
    assert stored_blobs(services) == file_blobs(services, locked)  # no piece, no copy left over
    assert services.sessions.list() == []


def test_one_frame_in_more_pieces_than_descriptors_is_stored_and_commits(locked, services):
    """Each piece read back the frame the earlier ones left unfinished, opening every piece that held it: a chunk
    sent in tiny pieces took that past the process's descriptor limit (a 500, for every later piece too). Past
    MAX_BLOBS pieces holding one frame, pieces are no longer decoded; the commit decodes the rest."""
    payload = os.urandom(16 << 10)
    stream = chunk_frames([(chunk_id(payload), payload)])
    token, piece = create_session(locked), len(stream) // (3 * sessions.MAX_BLOBS) + 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit_descriptors_to_what_is_open_and(sessions.MAX_BLOBS)
    try:
        for offset in range(0, len(stream), piece):
            response = update_session(locked, token, offset, stream[offset : offset + piece])
            assert response.status_int == 200, (offset // piece, response.headers)
        main, _ = full_file(payload)
        response = put_chunked(locked, {"MainContent": main}, [], session=token, X_WOPI_Lock="L")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert response.status_int == 200, response.headers
    assert locked.get_file().body == payload


@pytest.mark.parametrize("pieces", [4, 5, 4 * 4 + 3, 4 * 4 * 4 + 1])
def test_a_session_of_many_pieces_is_saved_in_at_most_max_blobs_blobs(locked, services, monkeypatch, pieces):
    at_most(monkeypatch, 4)  # runs of 4 pieces: 19 pieces merge twice, 65 three times
    token = upload_in(locked, THREE, pieces)
    main, _ = full_file(b"hello", b"world", b"again")
    assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 200
    assert locked.get_file().body == b"helloworldagain"
    assert len(file_blobs(services, locked)) <= 4
    assert stored_blobs(services) == file_blobs(services, locked)


def test_a_merged_session_resumes_its_unfinished_frame(locked, services, monkeypatch):
    """A commit refused after the merge (here: the stream stops inside a frame) keeps the merged session, and the
    next piece goes on decoding where the index says, now inside one of the copies."""
    at_most(monkeypatch, 4)
    cut = FRAME + 20  # inside the second frame
    token = upload_in(locked, THREE[:cut], 9)
    main, _ = full_file(b"hello", b"world", b"again")
    refused = put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    assert refused.status_int == 400 and "middle of a frame" in refused.headers["X-WOPI-FailureReason"]
    assert len(session_stream(services, token)) <= 4  # merged
    upload_in(locked, THREE[cut:], 2, token, cut)
    with services.db.read() as s:
        assert services.sessions.get(s, token, locked.file_id).indexed == len(THREE)  # decoded on, not at commit
    assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 200
    assert locked.get_file().body == b"helloworldagain"


def test_a_piece_whose_frame_is_merged_while_it_starts_reads_the_copies(locked, services, monkeypatch):
    """A piece reads back the unfinished frame's start from the pieces that hold it; a commit may merge them (and
    delete them) in between. The piece then reads the copies, and is kept, not refused as though the session
    were gone."""
    at_most(monkeypatch, 4)
    cut = FRAME + 20
    token = upload_in(locked, THREE[:cut], 9)
    real = chunkindex.PieceIndexer.start
    merged = []

    def merged_first(self):
        if not merged:
            merged.append(services.sessions.merge_pieces(token))
        return real(self)

    monkeypatch.setattr(chunkindex.PieceIndexer, "start", merged_first)
    assert update_session(locked, token, cut, THREE[cut:]).status_int == 200
    assert merged and len(session_stream(services, token)) <= 5
    main, _ = full_file(b"hello", b"world", b"again")
    assert put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 200
    assert locked.get_file().body == b"helloworldagain"


@pytest.mark.parametrize("meanwhile", ["piece added", "swept"])
def test_a_session_changed_while_merged_drops_the_copies(locked, services, clock, monkeypatch, meanwhile):
    """The commit's merge copies outside any transaction. A piece kept meanwhile, or the session swept (or
    committed by another request), and the copies are dropped: the commit goes on as without a merge, with the
    session as it is then."""
    at_most(monkeypatch, 4)
    token = upload_in(locked, THREE[: 2 * FRAME], 6)
    real = type(services.blobs).concat
    changed = []

    def change_first(self, opened, extents):
        if not changed:
            if meanwhile == "swept":
                changed.append(services.sessions.sweep(now=clock.now() + timedelta(minutes=31) + sessions.PIECE_GRACE))
            else:
                changed.append(update_session(locked, token, 2 * FRAME, THREE[2 * FRAME :]).status_int)
        return real(self, opened, extents)

    monkeypatch.setattr(type(services.blobs), "concat", change_first)
    main, _ = full_file(b"hello", b"world", b"again")
    response = put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    monkeypatch.undo()
    if meanwhile == "swept":
        assert changed == [1] and response.status_int == 410
        assert locked.get_file().body == b"hello world"
    else:
        assert changed == [200] and response.status_int == 200  # the session as it then was, merged again
        assert locked.get_file().body == b"helloworldagain"
    assert stored_blobs(services) == file_blobs(services, locked)  # no copy left over


def test_a_commit_whose_merge_was_dropped_merges_again_before_it_opens_the_pieces(locked, services, monkeypatch):
    """A piece kept during the commit's merge drops the copies. The commit went on with the session unmerged,
    every piece of it open; another commit of the same session (a client's retry) could then merge it, the
    pieces deleted, and the first commit's file named them: 200, and the file's bytes gone for good."""
    at_most(monkeypatch, 4)
    token = upload_in(locked, THREE[: 2 * FRAME], 6)
    concat, chunks = type(services.blobs).concat, chunkindex.session_chunks
    piece = []

    def a_piece_first(self, opened, extents):
        if not piece:
            piece.append(update_session(locked, token, 2 * FRAME, THREE[2 * FRAME :]).status_int)
        return concat(self, opened, extents)

    def merged_by_a_retry(*args):
        services.sessions.merge_pieces(token)  # what another PutChunkedFile of the session does first
        return chunks(*args)

    monkeypatch.setattr(type(services.blobs), "concat", a_piece_first)
    monkeypatch.setattr(chunkindex, "session_chunks", merged_by_a_retry)
    main, _ = full_file(b"hello", b"world", b"again")
    response = put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    monkeypatch.undo()
    assert piece == [200] and response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    assert file_blobs(services, locked) <= stored_blobs(services)
    assert locked.get_file().body == b"helloworldagain"


def test_a_session_merged_by_another_request_before_its_pieces_are_opened_commits(locked, services, monkeypatch):
    """A commit read the session's pieces, and another request merged them before it opened them: 410, as if the
    session were gone, though it was there, merged. It reads the session again."""
    if not services.blobs.deleted_stays_readable:
        pytest.skip("an object store keeps merged pieces until gc: the commit reads the session as it read it")
    at_most(monkeypatch, 4)
    token = upload_in(locked, THREE[: 2 * FRAME], 4)
    read = chunked.ChunkedFiles._session
    meanwhile = []

    def merged_meanwhile(self, s, *args):
        index_and_stream = read(self, s, *args)
        if not meanwhile:  # a piece kept and the session merged by another commit, once this one has read it
            meanwhile.append(update_session(locked, token, 2 * FRAME, THREE[2 * FRAME :]).status_int)
            services.sessions.merge_pieces(token)
        return index_and_stream

    monkeypatch.setattr(chunked.ChunkedFiles, "_session", merged_meanwhile)
    main, _ = full_file(b"hello", b"world", b"again")
    response = put_chunked(locked, {"MainContent": main}, session=token, X_WOPI_Lock="L")
    monkeypatch.undo()
    assert meanwhile == [200] and response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    assert locked.get_file().body == b"helloworldagain"
    assert stored_blobs(services) == file_blobs(services, locked)


def test_a_piece_kept_after_the_merge_is_409_and_the_retry_commits(locked, services, monkeypatch):
    """The commit takes the session as it read it after the merge: a piece kept after that is not its own, and it
    answers 409 (the session grew), as for a session of few pieces. The retry commits the whole session."""
    at_most(monkeypatch, 4)
    token = upload_in(locked, THREE[: 2 * FRAME], 6)
    real = chunkindex.session_chunks

    def then_a_piece(*args):
        assert update_session(locked, token, 2 * FRAME, THREE[2 * FRAME :]).status_int == 200
        return real(*args)

    monkeypatch.setattr(chunkindex, "session_chunks", then_a_piece)
    two, _ = full_file(b"hello", b"world")
    grew = put_chunked(locked, {"MainContent": two}, session=token, X_WOPI_Lock="L")
    assert grew.status_int == 409 and "grew" in grew.headers["X-WOPI-FailureReason"]
    monkeypatch.setattr(chunkindex, "session_chunks", real)
    assert len(session_stream(services, token)) == 3  # the two copies and the piece kept after them
    three, _ = full_file(b"hello", b"world", b"again")
    assert put_chunked(locked, {"MainContent": three}, session=token, X_WOPI_Lock="L").status_int == 200
    assert locked.get_file().body == b"helloworldagain"
    assert stored_blobs(services) == file_blobs(services, locked)


# -- a deleted file's sessions ------------------------------------------------------------


@pytest.mark.parametrize("how", ["DeleteFile", "Graph item", "Graph folder"])
def test_a_deleted_files_sessions_end_with_it(services, settings, make_file, client_for, graph, how):
    """Nothing can commit a deleted file's sessions: they no longer count towards the user's limits, and their
    pieces go with the file's content, not at the sweep 30 minutes later."""
    other = client_for(make_file(name="Other.docx"))
    baseline = stored_blobs(services)
    doomed = client_for(services.add_file("alice", "Doomed.docx", io.BytesIO(b"doomed"), folder=["top"]))
    limit = settings.max_upload_sessions_per_user
    services.sessions.max_bytes_per_user = limit * len(HELLO_WORLD)  # both limits reached
    for _ in range(limit):
        assert update_session(doomed, create_session(doomed), 0, HELLO_WORLD).status_int == 200
    assert other.op("CREATE_UPLOAD_SESSION").status_int == 429
    if how == "DeleteFile":
        assert doomed.op("DELETE").status_int == 200
    elif how == "Graph item":
        assert graph.delete(f"me/drive/items/{doomed.file_id}").status_int == 204
    else:
        assert graph.delete("me/drive/root:/top:").status_int == 204
    assert stored_blobs(services) == baseline  # no piece left behind
    token = create_session(other)
    assert update_session(other, token, 0, HELLO_WORLD).status_int == 200
    assert [session.token for session in services.sessions.list()] == [token]
    other.lock("L")
    main, _ = full_file(b"hello")
    assert put_chunked(other, {"MainContent": main}, session=token, X_WOPI_Lock="L").status_int == 200


# -- sweeping -----------------------------------------------------------------------------


def test_gc_deletes_expired_sessions_and_their_pieces(wopi, services, settings, clock):
    before = len(stored_blobs(services))
    live, dead = create_session(wopi), create_session(wopi)
    update_session(wopi, live, 0, HELLO_WORLD)
    update_session(wopi, dead, 0, HELLO_WORLD)
    clock.advance(minutes=20)
    update_session(wopi, live, 74, b"")
    clock.advance(minutes=15)  # dead: 35 idle minutes; live: 15
    assert update_session(wopi, dead, 74, b"").status_int == 410
    # kept for PIECE_GRACE past its expiry: a piece begun while it was live may still be coming
    assert collect(services, grace=3600).sessions == 0
    clock.advance(minutes=60)  # dead: past its grace; live: expired 45 minutes ago, within it
    assert len(stored_blobs(services)) == before + 2
    done = collect(services, grace=3600)
    assert done.sessions == 1
    assert [s.token for s in services.sessions.list()] == [live]
    assert len(stored_blobs(services)) == before + 1
    assert update_session(wopi, dead, 74, b"").status_int == 410


def test_a_piece_begun_before_its_session_expired_is_kept_when_it_lands_after(wopi, services, clock):
    """The client was not idle: its piece took the session past its 30 minutes. It got 410, and the session was
    lost with every byte it held; the sweep could even delete the session under the piece."""
    token = create_session(wopi)
    assert update_session(wopi, token, 0, HELLO_WORLD[:30]).status_int == 200
    clock.advance(minutes=25)
    piece = HELLO_WORLD[30:]

    def meanwhile() -> None:
        clock.advance(minutes=6)  # the session's expiry passes as the piece comes
        assert services.sessions.sweep() == 0

    answer = update_while_it_comes(wopi, token, 30, piece, meanwhile)
    assert answer.status_int == 200, answer.headers
    [session] = services.sessions.list()
    assert session.received == len(HELLO_WORLD) and session.expires_at == clock.now() + timedelta(minutes=30)
    assert update_session(wopi, token, len(HELLO_WORLD), b"").status_int == 200  # live: slid by the piece


@pytest.mark.parametrize("limit", ["bytes", "sessions"])
def test_a_session_a_slow_piece_brings_back_counts_towards_the_users_limits(wopi, services, clock, settings, limit):
    """Expired, a session no longer counted towards its user's limits, and new sessions could take its room; a
    piece begun before the expiry then brought it back over them. It is counted as its piece lands: one that
    fits the limits is kept, one that does not finds the session gone (410), as at any time after its expiry."""
    services.sessions.max_bytes_per_user = 100
    revived = create_session(wopi)
    assert update_session(wopi, revived, 0, b"x" * 50).status_int == 200
    clock.advance(minutes=25)

    def meanwhile() -> None:
        clock.advance(minutes=6)  # the session's expiry passes as the piece comes
        if limit == "bytes":
            assert update_session(wopi, create_session(wopi), 0, b"y" * 50).status_int == 200
        else:
            for _ in range(settings.max_upload_sessions_per_user):
                assert wopi.op("CREATE_UPLOAD_SESSION").status_int == 200

    answer = update_while_it_comes(wopi, revived, 50, b"x" * 10, meanwhile)
    assert answer.status_int == 410, answer.headers
    live = [s for s in services.sessions.list() if s.expires_at > clock.now()]
    assert revived not in [s.token for s in live]
    assert sum(s.received for s in live) <= 100 and len(live) <= settings.max_upload_sessions_per_user


def test_gc_deletes_unreferenced_blobs_only_after_the_grace_period(wopi, services, settings):
    with services.blobs.write(io.BytesIO(b"orphan"), 100) as orphan:
        pass  # written and let go, never recorded: what a crash between write and commit leaves
    assert collect(services, grace=3600).blobs == 0  # too young: maybe a commit about to record it
    # where a delete would take a blob from a reader (S3), a first pass only finds it unreferenced
    passes = 1 if services.blobs.deleted_stays_readable else 2
    assert [collect(services, grace=0).blobs for _ in range(passes)] == [0] * (passes - 1) + [1]
    assert not services.blobs.exists(orphan.name)
    assert wopi.get_file().body == b"hello world"  # referenced blobs stay
