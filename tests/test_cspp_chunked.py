"""PutChunkedFile, GetChunkedFile, GetChunks, GetSequenceNumber (docs/cspp-plus.md §1.1-1.4, §3, §5)."""

import io
import os
import resource
import zipfile
from contextlib import contextmanager
from datetime import timedelta

import pytest

from wopihost import chunked, chunkindex
from wopihost.cspp.chunkid import EMPTY_CHUNK_ID, chunk_id
from wopihost.cspp.frames import END_FRAME, message_frame
from wopihost.cspp.signatures import ChunkSignature, Signature

from .cspp_helpers import (
    FIXTURES,
    fixture_stream,
    full_file,
    get_chunked,
    put_chunked,
    put_chunked_body,
    read_response,
    request_body,
    sequence_number,
    stream_filter,
    upload,
)
from .helpers import revoke_or_expire, stored_blobs, stored_bytes, while_the_body_comes

HELLO, WORLD = chunk_id(b"hello"), chunk_id(b"world")


@pytest.fixture
def locked(wopi):
    assert wopi.lock("L").status_int == 200
    return wopi


def save(wopi, signatures: dict, chunks=(), **kwargs):
    response = put_chunked(wopi, signatures, chunks, X_WOPI_Lock="L", **kwargs)
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    return response


# -- GetSequenceNumber ------------------------------------------------------------------


def test_sequence_number_starts_at_1_and_rises_with_every_change(wopi):
    assert sequence_number(wopi) == 1
    wopi.lock("L")
    wopi.put_file(b"new", lock="L")
    assert sequence_number(wopi) == 2
    wopi.op("RENAME_FILE", X_WOPI_RequestedName="Renamed", X_WOPI_Lock="L")
    assert sequence_number(wopi) == 3
    assert wopi.check_file_info().json["SequenceNumber"] == 3
    assert wopi.op("GET_SEQUENCE_NUMBER").headers["X-WOPI-ItemVersion"] == "2"  # a rename keeps the version


def test_reads_and_locks_do_not_change_the_sequence_number(wopi):
    wopi.lock("L")
    wopi.get_file()
    get_chunked(wopi, [stream_filter()])
    wopi.op("UNLOCK", X_WOPI_Lock="L")
    assert sequence_number(wopi) == 1


# -- PutChunkedFile: basics -------------------------------------------------------------


def test_save_inline_chunks(locked):
    signature, chunks = full_file(b"hello", b"world")
    response = save(locked, {"MainContent": signature}, chunks)
    assert response.headers["X-WOPI-SequenceNumber"] == "2"
    assert response.headers["X-WOPI-ItemVersion"] == "2"
    assert "X-WOPI-Lock" not in response.headers
    assert response.body == b""
    assert locked.get_file().body == b"helloworld"
    info = locked.check_file_info().json
    assert info["Size"] == 10 and info["Version"] == "2" and info["SequenceNumber"] == 2


def test_sequence_number_rises_even_when_content_is_unchanged(locked):
    signature, chunks = full_file(b"hello")
    first = save(locked, {"MainContent": signature}, chunks)
    second = save(locked, {"MainContent": signature})  # chunks known from the file itself
    assert int(second.headers["X-WOPI-SequenceNumber"]) > int(first.headers["X-WOPI-SequenceNumber"])
    assert second.headers["X-WOPI-ItemVersion"] == first.headers["X-WOPI-ItemVersion"]  # same bytes


def test_new_main_content_resets_the_file_system_time_a_client_set(make_file, client_for, graph, clock):
    """As PutFile does (docs/graph.md §3, fileSystemInfo): Graph showed the time set before the save."""
    file = make_file()
    set_time = {"fileSystemInfo": {"lastModifiedDateTime": "2020-01-02T03:04:05.000Z"}}
    assert graph.patch_json(f"me/drive/items/{file.id}", set_time).status_int == 200
    clock.advance(minutes=5)
    wopi = client_for(file)
    assert wopi.lock("L").status_int == 200
    signature, chunks = full_file(b"new content")
    save(wopi, {"MainContent": signature}, chunks)
    item = graph.get(f"me/drive/items/{file.id}").json
    assert item["fileSystemInfo"]["lastModifiedDateTime"] == item["lastModifiedDateTime"] > "2020-01-02"


def test_a_chunked_save_leaves_graph_no_hash_of_the_old_content(make_file, client_for, graph):
    """A chunked save does not hash the bytes (that would cost more than the save): Graph then shows no hash at
    all, never the old content's, which rclone would take for a corrupted transfer."""
    file = make_file()
    assert graph.put(f"me/drive/items/{file.id}/content", b"old content").json["file"]["hashes"]["quickXorHash"]
    wopi = client_for(file)
    assert wopi.lock("L").status_int == 200
    signature, chunks = full_file(b"new content")
    save(wopi, {"MainContent": signature}, chunks)
    assert "hashes" not in graph.get(f"me/drive/items/{file.id}").json["file"]


def test_new_main_content_is_last_modified_by_the_user_who_saved_it(make_file, client_for, graph):
    """As PutFile does: Graph's lastModifiedBy named whoever changed the content before the save."""
    file = make_file()  # alice's
    wopi = client_for(file, user="bob")
    assert wopi.lock("L").status_int == 200
    signature, chunks = full_file(b"bob's content")
    save(wopi, {"MainContent": signature}, chunks)
    assert graph.get(f"me/drive/items/{file.id}").json["lastModifiedBy"]["user"]["id"] == "bob"


def test_wrong_sequence_number_is_412_with_the_current_one(locked):
    signature, chunks = full_file(b"hello")
    for sent in (0, 2, 99):
        response = put_chunked(locked, {"MainContent": signature}, chunks, sequence=sent, X_WOPI_Lock="L")
        assert response.status_int == 412
        assert response.headers["X-WOPI-SequenceNumber"] == "1"
        assert response.body == b""
    assert locked.get_file().body == b"hello world"


@pytest.mark.parametrize("value", [None, "", "one", "-1", "1.0"])
def test_missing_or_malformed_sequence_number_is_400(locked, value):
    signature, chunks = full_file(b"hello")
    headers = {"X_WOPI_Lock": "L"} if value is None else {"X_WOPI_Lock": "L", "X_WOPI_SequenceNumber": value}
    from wopihost.cspp.wire import put_chunked_body

    response = locked.contents_op("PUT_CHUNKED_FILE", put_chunked_body({"MainContent": signature}, chunks), **headers)
    assert response.status_int == 400
    assert "X-WOPI-SequenceNumber" in response.headers["X-WOPI-FailureReason"]


def test_only_listed_streams_change_and_empty_signature_deletes_a_stream(locked):
    main, main_chunks = full_file(b"hello")
    alt, alt_chunks = full_file(b"world")
    save(locked, {"MainContent": main, "Alt": alt}, main_chunks + alt_chunks)
    alt2, alt2_chunks = full_file(b"WORLD")
    save(locked, {"Alt": alt2}, alt2_chunks)  # MainContent left out: carried over (docs/cspp-plus.md §5.2)
    _, message, _ = get_chunked(locked, [stream_filter("MainContent"), stream_filter("Alt")])
    assert [s["ChunkSignatures"][0]["ChunkId"] for s in message["Signatures"]] == [HELLO, chunk_id(b"WORLD")]
    save(locked, {"Alt": Signature("FullFile", ())})
    _, message, _ = get_chunked(locked, [stream_filter("Alt")])
    assert message["Signatures"] == [{"StreamId": "Alt", "ChunkingScheme": "Zip", "ChunkSignatures": []}]
    assert locked.get_file().body == b"hello"


@pytest.mark.parametrize(
    "signature", [Signature("FullFile", ()), Signature("FullFile", (ChunkSignature(EMPTY_CHUNK_ID, 0),))]
)
@pytest.mark.parametrize("send_frame", [True, False])
def test_empty_main_content(locked, signature, send_frame):
    save(locked, {"MainContent": signature}, [(EMPTY_CHUNK_ID, b"")] if send_frame else [])
    assert locked.get_file().body == b""
    assert locked.check_file_info().json["Size"] == 0


def test_chunks_from_the_files_own_streams_need_not_be_sent(locked):
    signature, chunks = full_file(b"hello", b"world")
    save(locked, {"MainContent": signature}, chunks)
    swapped = Signature("FullFile", tuple(reversed(signature.chunks)))
    save(locked, {"MainContent": swapped})
    assert locked.get_file().body == b"worldhello"


def test_chunks_from_another_file_are_never_used(locked, make_file, client_for):
    other = client_for(make_file(b"", name="Other.docx"))
    signature, chunks = full_file(b"secret")
    assert put_chunked(other, {"MainContent": signature}, chunks).status_int == 200
    response = put_chunked(locked, {"MainContent": signature}, X_WOPI_Lock="L")  # no bytes sent
    assert response.status_int == 400
    assert chunk_id(b"secret") in response.headers["X-WOPI-FailureReason"]


def test_missing_chunk_is_400_and_nothing_changes(locked, settings, services):
    signature, chunks = full_file(b"hello", b"world")
    blobs = len(stored_blobs(services))
    response = put_chunked(locked, {"MainContent": signature}, chunks[:1], X_WOPI_Lock="L")
    assert response.status_int == 400
    assert WORLD in response.headers["X-WOPI-FailureReason"]
    assert locked.get_file().body == b"hello world" and sequence_number(locked) == 1
    assert len(stored_blobs(services)) == blobs


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_token_revoked_or_expired_while_the_save_comes_saves_nothing(locked, services, clock, how):
    """The token was live when PutChunkedFile began, and is not once its body is in: 401, nothing changes."""
    locked.token = services.issue_token(locked.file_id, "alice", True, clock.now() + timedelta(minutes=10)).token
    signature, chunks = full_file(b"hello", b"there" * 1000)
    body = put_chunked_body({"MainContent": signature}, chunks)
    blobs = stored_blobs(services)

    def meanwhile() -> None:
        revoke_or_expire(services, clock, locked.token, how)

    headers = {"X-WOPI-Override": "PUT_CHUNKED_FILE", "X-WOPI-Lock": "L", "X-WOPI-SequenceNumber": "1"}
    answer = while_the_body_comes(
        lambda held: locked.raw_post("/contents", held, len(body), **headers), body, meanwhile
    )
    assert answer.status_int == 401 and answer.headers["X-WOPI-FailureReason"]
    assert stored_blobs(services) == blobs
    file = services.files.get(locked.file_id)
    assert (file.version, file.sequence_number, file.size) == (1, 1, len(b"hello world"))


def test_a_body_of_more_chunk_frames_than_a_save_can_name_is_400(locked, monkeypatch):
    """Every chunk found is kept until the commit: a body of 32-byte empty chunks took gigabytes of memory."""
    monkeypatch.setattr(chunkindex, "MAX_CHUNK_FRAMES", 2)
    signature, chunks = full_file(b"hello", b"world")
    assert put_chunked(locked, {"MainContent": signature}, chunks, X_WOPI_Lock="L").status_int == 200
    signature, chunks = full_file(b"one", b"two", b"three")
    response = put_chunked(locked, {"MainContent": signature}, chunks, X_WOPI_Lock="L")
    assert response.status_int == 400
    assert "more than 2 Chunk frames" in response.headers["X-WOPI-FailureReason"]
    assert locked.get_file().body == b"helloworld"


def test_signature_length_that_does_not_match_the_chunk_is_400(locked):
    bad = Signature("FullFile", (ChunkSignature(HELLO, 6),))
    response = put_chunked(locked, {"MainContent": bad}, [(HELLO, b"hello")], X_WOPI_Lock="L")
    assert response.status_int == 400
    assert "6" in response.headers["X-WOPI-FailureReason"]


def test_inline_chunk_that_does_not_hash_to_its_id_is_400(locked):
    signature = Signature("FullFile", (ChunkSignature(HELLO, 5),))
    response = put_chunked(locked, {"MainContent": signature}, [(HELLO, b"HELLO")], X_WOPI_Lock="L")
    assert response.status_int == 400
    assert locked.get_file().body == b"hello world"


def test_main_content_over_the_size_limit_is_413(locked, settings):
    big = b"x" * (settings.max_file_size + 1)
    signature, chunks = full_file(big)
    assert put_chunked(locked, {"MainContent": signature}, chunks, X_WOPI_Lock="L").status_int == 413


def test_an_alternate_stream_repeating_one_chunk_past_the_size_limit_is_413_and_writes_nothing(
    locked, settings, services
):
    """Its bytes lying in many session pieces, such a stream would have been copied whole to a new blob:
    256 KiB uploaded made a 64 MiB stream."""
    payload = bytes(range(256)) * 1024
    token = upload(locked, [(chunk_id(payload), payload)], piece=32 << 10)
    before = stored_bytes(services)
    repeated = Signature("FullFile", (ChunkSignature(chunk_id(payload), len(payload)),) * 256)
    response = put_chunked(locked, {"Alt": repeated}, session=token, X_WOPI_Lock="L")
    assert response.status_int == 413
    assert "Alt" in response.headers["X-WOPI-FailureReason"]
    assert stored_bytes(services) == before and sequence_number(locked) == 1
    _, message, _ = get_chunked(locked, [stream_filter("Alt")])
    assert message["Signatures"][0]["ChunkSignatures"] == []


def test_a_stream_left_in_more_blobs_than_a_read_should_open_is_copied_into_one(locked, services, monkeypatch):
    """Each save brings its new chunks in a blob of its own and keeps the others where they lie; a read opens
    every blob of a stream at once, a descriptor each."""
    monkeypatch.setattr(chunked, "MAX_BLOBS", 2)
    payloads = [b"hello", b"world", b"again", b"more!"]
    for n in range(2, len(payloads) + 1):
        signature, chunks = full_file(*payloads[:n])
        save(locked, {"MainContent": signature}, chunks if n == 2 else chunks[-1:])
        spanned = services.files.get(locked.file_id).content.blobs
        assert len(spanned) == (n - 1 if n - 1 <= 2 else 1), n  # in place while within the limit, then one copy
    assert locked.get_file().body == b"".join(payloads)


def test_changed_streams_together_over_the_session_size_limit_are_413(locked, settings):
    payload = b"x" * 1024
    whole = Signature("FullFile", (ChunkSignature(chunk_id(payload), len(payload)),) * (settings.max_file_size // 1024))
    streams = {f"S{i}": whole for i in range(settings.max_upload_session_size // settings.max_file_size + 1)}
    response = put_chunked(locked, streams, [(chunk_id(payload), payload)], X_WOPI_Lock="L")
    assert response.status_int == 413
    assert "together" in response.headers["X-WOPI-FailureReason"]
    assert sequence_number(locked) == 1


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"", "frames"),
        (b"not frames at all", "frames"),
        (message_frame({"Signatures": []}) + END_FRAME, "Signatures"),
        (message_frame({"ContentProperties": []}) + END_FRAME, "Signatures"),
        (message_frame([1, 2]) + END_FRAME, "object"),
        (
            message_frame({"Signatures": [{"StreamId": "MainContent", "ChunkingScheme": "Rar", "ChunkSignatures": []}]})
            + END_FRAME,
            "ChunkingScheme",
        ),
        (
            message_frame(
                {
                    "Signatures": [
                        {
                            "StreamId": "MainContent",
                            "ChunkingScheme": "Zip",
                            "ChunkSignatures": [{"ChunkId": "R3ZBz20okt9LmDaePUpB8Q--", "Length": 1}],
                        }
                    ]
                }
            )
            + END_FRAME,
            "ChunkId",
        ),
        (
            message_frame({"Signatures": [{"StreamId": "A", "ChunkingScheme": "Zip", "ChunkSignatures": []}] * 2})
            + END_FRAME,
            "twice",
        ),
        (
            message_frame(
                {
                    "Signatures": [{"StreamId": "A", "ChunkingScheme": "Zip", "ChunkSignatures": []}],
                    "UploadSessionTokenToCommit": 7,
                }
            )
            + END_FRAME,
            "UploadSessionTokenToCommit",
        ),
    ],
)
def test_malformed_bodies_are_400_with_a_reason(locked, body, reason):
    response = put_chunked(locked, {}, body=body, X_WOPI_Lock="L")
    assert response.status_int == 400
    assert reason in response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize("token", [None, ""])
def test_null_or_empty_session_token_means_no_session(locked, token):
    signature, chunks = full_file(b"hello")
    message = {
        "ContentProperties": [],
        "Signatures": [signature.to_json("MainContent")],
        "UploadSessionTokenToCommit": token,
    }
    from wopihost.cspp.wire import chunk_frames

    save(locked, {}, body=message_frame(message) + chunk_frames(chunks) + END_FRAME)
    assert locked.get_file().body == b"hello"


def test_keys_written_the_dotnet_way_are_read(locked):
    """The validator's serializer sorts keys and escapes '/' (docs/cspp-plus.md §1.3)."""
    text = (
        '{"ContentProperties":[],"Signatures":[{"ChunkSignatures":[{"ChunkId":"Jb4\\/r1zZ3xx+kzfTbN35Qg==",'
        '"Length":5}],"ChunkingScheme":"FullFile","StreamId":"MainContent"}],"UploadSessionTokenToCommit":""}'
    )
    from wopihost.cspp.frames import chunk_frame

    frame = b"".join(chunk_frame(WORLD, b"world"))
    body = message_frame(__import__("json").loads(text)) + frame + END_FRAME
    save(locked, {}, body=body)
    assert locked.get_file().body == b"world"


def test_read_only_token_cannot_save(make_file, client_for):
    reader = client_for(make_file(b""), can_write=False)
    signature, chunks = full_file(b"hello")
    assert put_chunked(reader, {"MainContent": signature}, chunks).status_int == 404


# -- PutChunkedFile: the lock table (docs/cspp-plus.md §1.3) -------------------------------------------


def test_row0_both_lock_headers_is_400(locked):
    signature, chunks = full_file(b"hello")
    response = put_chunked(locked, {"MainContent": signature}, chunks, X_WOPI_Lock="L", X_WOPI_CoauthLockId="C")
    assert response.status_int == 400


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X_WOPI_Lock": "whatever"},
        {"X_WOPI_CoauthLockId": "C"},
        {"X_WOPI_Lock": "", "X_WOPI_CoauthLockId": "", "X_WOPI_Editors": ""},
    ],
)
def test_row1_unlocked_empty_file_takes_any_save(make_file, client_for, headers):
    new = client_for(make_file(b"", name="New.docx"))
    signature, chunks = full_file(b"hello")
    assert put_chunked(new, {"MainContent": signature}, chunks, **headers).status_int == 200


def test_row2_unlocked_non_empty_file_is_409_with_empty_lock(wopi):
    signature, chunks = full_file(b"hello")
    response = put_chunked(wopi, {"MainContent": signature}, chunks)
    assert response.status_int == 409
    assert response.headers["X-WOPI-Lock"] == ""
    assert "X-WOPI-ConflictingMechanism" not in response.headers


def test_row4_matching_wopi_lock_saves(locked):
    signature, chunks = full_file(b"hello")
    assert put_chunked(locked, {"MainContent": signature}, chunks, X_WOPI_Lock="L").status_int == 200


@pytest.mark.parametrize("headers", [{"X_WOPI_Lock": "other"}, {"X_WOPI_CoauthLockId": "C"}, {}])
def test_row5_wopi_lock_mismatch_is_409_naming_it(locked, headers):
    signature, chunks = full_file(b"hello")
    response = put_chunked(locked, {"MainContent": signature}, chunks, **headers)
    assert response.status_int == 409
    assert response.headers["X-WOPI-Lock"] == "L"
    assert response.headers["X-WOPI-ConflictingMechanism"] == "WOPI-Lock"


def coauth(wopi, lock_id: str, lock_type: str = "Coauth", timeout: int = 600):
    return wopi.op(
        "GET_COAUTH_LOCK",
        X_WOPI_CoauthLockId=lock_id,
        X_WOPI_CoauthLockType=lock_type,
        X_WOPI_CoauthLockExpirationTimeout=str(timeout),
    )


def test_row6_exclusive_holder_saves(wopi):
    assert coauth(wopi, "X", "CoauthExclusive").status_int == 200
    signature, chunks = full_file(b"hello")
    assert put_chunked(wopi, {"MainContent": signature}, chunks, X_WOPI_CoauthLockId="X").status_int == 200


@pytest.mark.parametrize("headers", [{"X_WOPI_CoauthLockId": "C"}, {"X_WOPI_Lock": "L"}, {}])
def test_row7_anyone_else_under_an_exclusive_lock_is_409(wopi, headers):
    coauth(wopi, "X", "CoauthExclusive")
    coauth(wopi, "C", "Coauth")  # even a valid Coauth lock does not do
    signature, chunks = full_file(b"hello")
    response = put_chunked(wopi, {"MainContent": signature}, chunks, **headers)
    assert response.status_int == 409
    assert response.headers["X-WOPI-ConflictingMechanism"] == "WOPI-CoauthExclusiveLock"
    assert "X-WOPI-Lock" not in response.headers


def test_row8_live_coauth_lock_saves(wopi):
    coauth(wopi, "C1")
    coauth(wopi, "C2")
    signature, chunks = full_file(b"hello")
    assert put_chunked(wopi, {"MainContent": signature}, chunks, X_WOPI_CoauthLockId="C2").status_int == 200


def test_row9_unknown_or_expired_coauth_lock_is_409(wopi, clock):
    coauth(wopi, "C1", timeout=60)
    coauth(wopi, "C2", timeout=600)
    signature, chunks = full_file(b"hello")
    assert put_chunked(wopi, {"MainContent": signature}, chunks, X_WOPI_CoauthLockId="C3").status_int == 409
    clock.advance(seconds=61)
    response = put_chunked(wopi, {"MainContent": signature}, chunks, X_WOPI_CoauthLockId="C1")
    assert response.status_int == 409
    assert "X-WOPI-Lock" not in response.headers and "X-WOPI-ConflictingMechanism" not in response.headers


@pytest.mark.parametrize("headers", [{"X_WOPI_Lock": "L"}, {}])
def test_row10_coauth_locks_with_a_wopi_lock_or_nothing_is_409(wopi, headers):
    coauth(wopi, "C1")
    signature, chunks = full_file(b"hello")
    response = put_chunked(wopi, {"MainContent": signature}, chunks, **headers)
    assert response.status_int == 409
    assert "X-WOPI-Lock" not in response.headers


def test_lock_check_comes_before_the_sequence_number(wopi):
    signature, chunks = full_file(b"hello")
    assert put_chunked(wopi, {"MainContent": signature}, chunks, sequence=0).status_int == 409


# -- content properties -----------------------------------------------------------------


def test_properties_are_upserted_and_returned(locked):
    signature, chunks = full_file(b"hello")
    save(
        locked,
        {"MainContent": signature},
        chunks,
        properties=[
            {"Name": "keep", "Value": "1", "Retention": "KeepOnContentChange"},
            {"Name": "drop", "Value": "2", "ContentPropertyRetention": "DeleteOnContentChange"},
            {"Name": "default", "Value": "3"},
        ],
    )
    save(
        locked,
        {"MainContent": signature},
        properties=[{"Name": "keep", "Value": "1b", "Retention": "KeepOnContentChange"}],
    )
    _, message, _ = get_chunked(locked, [stream_filter()], properties=["keep", "drop", "default", "absent"])
    assert message["ContentProperties"] == [
        {"Name": "keep", "Value": "1b", "Retention": "KeepOnContentChange"},
        {"Name": "drop", "Value": "2", "Retention": "DeleteOnContentChange"},
        {"Name": "default", "Value": "3", "Retention": "DeleteOnContentChange"},
    ]
    _, message, _ = get_chunked(locked, [stream_filter()])
    assert message["ContentProperties"] == []


def test_put_file_clears_alternate_streams_and_delete_on_change_properties(locked):
    main, main_chunks = full_file(b"hello")
    alt, alt_chunks = full_file(b"world")
    save(
        locked,
        {"MainContent": main, "Alt": alt},
        main_chunks + alt_chunks,
        properties=[
            {"Name": "keep", "Value": "1", "Retention": "KeepOnContentChange"},
            {"Name": "drop", "Value": "2", "Retention": "DeleteOnContentChange"},
        ],
    )
    before = sequence_number(locked)
    assert locked.put_file(b"edited elsewhere", lock="L").status_int == 200
    assert sequence_number(locked) > before
    _, message, _ = get_chunked(locked, [stream_filter("Alt")], properties=["keep", "drop"])
    assert message["ContentProperties"] == [{"Name": "keep", "Value": "1", "Retention": "KeepOnContentChange"}]
    assert message["Signatures"][0]["ChunkSignatures"] == []


def test_put_file_releases_the_chunks_of_the_old_content_and_of_the_alternate_streams(locked, services):
    main, main_chunks = full_file(b"hello")
    alt, alt_chunks = full_file(b"world")
    save(locked, {"MainContent": main}, main_chunks)
    save(locked, {"MainContent": main, "Alt": alt}, alt_chunks)  # the alternate stream's bytes: a blob of its own
    assert locked.put_file(b"edited elsewhere", lock="L").status_int == 200
    file = services.files.get(locked.file_id)
    assert file.extents is None and stored_blobs(services) == {file.blob}
    assert locked.get_file().body == b"edited elsewhere"
    assert locked.check_file_info().json["Version"] == str(file.version)


def test_properties_and_alternate_streams_expire_after_30_days(locked, clock, services, client_for):
    main, main_chunks = full_file(b"hello")
    alt, alt_chunks = full_file(b"world")
    save(
        locked,
        {"MainContent": main, "Alt": alt},
        main_chunks + alt_chunks,
        properties=[{"Name": "p", "Value": "v", "Retention": "KeepOnContentChange"}],
    )
    clock.advance(days=29, hours=23)
    _, message, _ = get_chunked(client_for(services.files.get(locked.file_id)), [stream_filter("Alt")], ["p"])
    assert message["ContentProperties"] and message["Signatures"][0]["ChunkSignatures"]
    clock.advance(hours=1, seconds=1)
    fresh = client_for(services.files.get(locked.file_id))  # a month later: a new token, as an editor gets
    _, message, _ = get_chunked(fresh, [stream_filter("Alt")], properties=["p"])
    assert message["ContentProperties"] == [] and message["Signatures"][0]["ChunkSignatures"] == []


@pytest.mark.parametrize(
    "prop, reason",
    [
        ({"Name": "n" * 257, "Value": "v"}, "Name"),
        ({"Name": "", "Value": "v"}, "Name"),
        ({"Name": "big", "Value": "é" * 513}, "Value"),
        ({"Name": "n", "Value": 5}, "Value"),
    ],
)
def test_property_limits_are_400(locked, prop, reason):
    signature, chunks = full_file(b"hello")
    response = put_chunked(locked, {"MainContent": signature}, chunks, properties=[prop], X_WOPI_Lock="L")
    assert response.status_int == 400
    assert reason in response.headers["X-WOPI-FailureReason"]


def test_at_most_256_properties(locked):
    signature, chunks = full_file(b"hello")
    props = [{"Name": f"p{i}", "Value": "v"} for i in range(256)]
    save(locked, {"MainContent": signature}, chunks, properties=props)
    response = put_chunked(
        locked, {"MainContent": signature}, properties=[{"Name": "one more", "Value": "v"}], X_WOPI_Lock="L"
    )
    assert response.status_int == 400
    assert "256" in response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize(
    "message",
    [
        {
            "Signatures": [
                {"StreamId": f"S{i}", "ChunkingScheme": "FullFile", "ChunkSignatures": []} for i in range(258)
            ]
        },
        {
            "Signatures": [{"StreamId": "S", "ChunkingScheme": "FullFile", "ChunkSignatures": []}],
            "ContentProperties": [{"Name": "p", "Value": f"v{i}"} for i in range(257)],
        },
    ],
)
def test_a_save_listing_more_than_256_streams_or_properties_is_400_before_its_commit(locked, message):
    """Even deleting streams that do not exist, or setting one property again and again: each one listed cost the
    commit's write transaction a lookup."""
    response = put_chunked(locked, {}, body=message_frame(message) + END_FRAME, X_WOPI_Lock="L")
    assert response.status_int == 400
    assert "256" in response.headers["X-WOPI-FailureReason"]
    assert sequence_number(locked) == 1
    _, answer, _ = get_chunked(locked, [stream_filter()], properties=["p"])
    assert answer["ContentProperties"] == []


def test_at_most_256_alternate_streams(locked):
    signature, chunks = full_file(b"x")
    streams = {f"S{i}": signature for i in range(257)}
    response = put_chunked(locked, streams, chunks, X_WOPI_Lock="L")
    assert response.status_int == 400
    assert "256" in response.headers["X-WOPI-FailureReason"]


# -- GetChunkedFile -----------------------------------------------------------------------


def test_get_chunked_file_returns_signature_chunks_and_headers(locked):
    signature, chunks = full_file(b"hello", b"world")
    save(locked, {"MainContent": signature}, chunks)
    response, message, frames = get_chunked(locked, [stream_filter(scheme="FullFile")])
    assert response.headers["X-WOPI-SequenceNumber"] == "2"
    assert response.headers["X-WOPI-ItemVersion"] == locked.check_file_info().json["Version"]
    assert response.content_type == "application/octet-stream"
    assert message["Signatures"] == [signature.to_json("MainContent")]
    assert frames == {HELLO: b"hello", WORLD: b"world"}
    assert all(chunk_id(payload) == cid for cid, payload in frames.items())


def a_file_of_many_streams(locked, services) -> None:
    """MainContent ("hello", "world") and 40 alternate streams Alt0..Alt39 ("alternate <n>"), a blob each."""
    main, kept = full_file(b"hello", b"world")
    save(locked, {"MainContent": main}, kept)
    for n in range(40):  # a save each: a blob each
        alternate, chunks = full_file(b"alternate %d" % n)
        save(locked, {f"Alt{n}": alternate}, chunks)
    assert len(stored_blobs(services)) > 40


@contextmanager
def few_descriptors():
    """The process may open 24 more descriptors than it has open: fewer than the file's streams have blobs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 24, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_read_of_some_streams_opens_only_their_blobs(locked, services):
    """Every read opened the blobs of every stream of the file (up to 256 streams of 64 blobs each): once they
    were more than the process could open, every GetChunkedFile and GetChunks of the file was a 503, whichever
    stream it asked for, until a PutFile."""
    a_file_of_many_streams(locked, services)
    with few_descriptors():
        response, message, frames = get_chunked(locked, [stream_filter(scheme="FullFile")])
        alternate = get_chunked(locked, [stream_filter("Alt7", scheme="FullFile")])
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    assert frames == {HELLO: b"hello", WORLD: b"world"}
    assert alternate[0].status_int == 200 and list(alternate[2].values()) == [b"alternate 7"]


def test_a_save_of_some_streams_opens_only_the_blobs_it_uses(locked, services):
    """A save opened the blobs of every stream of the file, as reads did (above): once they were more than the
    process could open, every PutChunkedFile of the file was a 503. It now opens MainContent's and those its
    new streams lie in, wherever they come from: here a chunk of Alt3 becomes part of MainContent and of Alt7."""
    a_file_of_many_streams(locked, services)
    main, chunks = full_file(b"hello", b"alternate 3", b"again")
    alternate, _ = full_file(b"alternate 3", b"again")
    with few_descriptors():
        response = put_chunked(
            locked, {"MainContent": main, "Alt7": alternate}, [c for c in chunks if c[1] == b"again"], X_WOPI_Lock="L"
        )
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    assert get_chunked(locked, [stream_filter(scheme="FullFile")])[2] == dict(chunks)
    assert list(get_chunked(locked, [stream_filter("Alt7", scheme="FullFile")])[2].values()) == [
        b"alternate 3",
        b"again",
    ]
    assert list(get_chunked(locked, [stream_filter("Alt3", scheme="FullFile")])[2].values()) == [b"alternate 3"]


def test_a_save_whose_blob_a_concurrent_save_released_is_412(locked, services, monkeypatch):
    """The blobs a save takes from a stream other than MainContent are opened after its snapshot: a concurrent
    save that replaced that stream meanwhile released its blob. The save is answered as its commit would be."""
    a_file_of_many_streams(locked, services)
    main, chunks = full_file(b"hello", b"alternate 3")
    plan = chunked.ChunkedFiles._plan

    def replaced_meanwhile(self, *args):
        monkeypatch.setattr(chunked.ChunkedFiles, "_plan", plan)
        planned = plan(self, *args)
        save(locked, {"Alt3": full_file(b"new")[0]}, full_file(b"new")[1])  # Alt3's old blob is deleted
        return planned

    monkeypatch.setattr(chunked.ChunkedFiles, "_plan", replaced_meanwhile)
    before = sequence_number(locked)
    response = put_chunked(locked, {"MainContent": main}, [], sequence=before, X_WOPI_Lock="L")
    assert response.status_int == 412, response.headers.get("X-WOPI-FailureReason")
    assert response.headers["X-WOPI-SequenceNumber"] == str(before + 1)
    assert get_chunked(locked, [stream_filter(scheme="FullFile")])[2] == {HELLO: b"hello", WORLD: b"world"}


@pytest.mark.parametrize("mode, expected", [("None", 0), ("All", 2)])
def test_chunks_to_return(locked, mode, expected):
    signature, chunks = full_file(b"hello", b"world")
    save(locked, {"MainContent": signature}, chunks)
    assert len(get_chunked(locked, [stream_filter(chunks=mode)])[2]) == expected


@pytest.mark.parametrize(
    "fields",
    [{"ChunksToReturn": None}, {"AlreadyKnownChunks": None}, {"ChunksToReturn": None, "AlreadyKnownChunks": None}],
)
@pytest.mark.parametrize("absent", [False, True], ids=["null", "absent"])
def test_a_null_or_absent_filter_field_means_its_default(locked, fields, absent):
    """ChunksToReturn's default is All, AlreadyKnownChunks' no chunks (docs/cspp-plus.md §1.2); null is how
    many serializers write a field left unset, so it means the same as leaving the field out."""
    signature, chunks = full_file(b"hello", b"world")
    save(locked, {"MainContent": signature}, chunks)
    item = {key: value for key, value in stream_filter().items() if not (absent and key in fields)}
    response, _, frames = get_chunked(locked, [{**item, **({} if absent else fields)}])
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    assert frames == {HELLO: b"hello", WORLD: b"world"}


def test_already_known_chunks_are_not_sent(locked):
    signature, chunks = full_file(b"hello", b"world")
    save(locked, {"MainContent": signature}, chunks)
    _, message, frames = get_chunked(locked, [stream_filter(known=[HELLO])])
    assert frames == {WORLD: b"world"}
    assert len(message["Signatures"][0]["ChunkSignatures"]) == 2  # the signature is always whole
    assert get_chunked(locked, [stream_filter(known=[HELLO, WORLD])])[2] == {}


def test_a_chunk_used_twice_is_sent_once(locked):
    signature, chunks = full_file(b"hello", b"hello")
    save(locked, {"MainContent": signature, "Alt": signature}, chunks[:1])
    _, message, frames = get_chunked(locked, [stream_filter(), stream_filter("Alt")])
    assert list(frames) == [HELLO]


def test_stream_that_does_not_exist(wopi):
    _, message, frames = get_chunked(wopi, [stream_filter("Nope", scheme="FullFile")])
    assert message["Signatures"] == [{"StreamId": "Nope", "ChunkingScheme": "Zip", "ChunkSignatures": []}]
    assert frames == {}


def test_zero_byte_main_content_is_one_empty_chunk(make_file, client_for):
    empty = client_for(make_file(b""))
    _, message, frames = get_chunked(empty, [stream_filter()])
    assert message["Signatures"][0]["ChunkingScheme"] == "FullFile"
    assert message["Signatures"][0]["ChunkSignatures"] == [{"ChunkId": EMPTY_CHUNK_ID, "Length": 0}]
    assert frames == {EMPTY_CHUNK_ID: b""}


def test_scheme_follows_the_content_not_the_request(make_file, client_for):
    text = client_for(make_file(b"plain text", name="a.txt"))
    _, message, _ = get_chunked(text, [stream_filter(scheme="Zip")])
    assert message["Signatures"][0]["ChunkingScheme"] == "FullFile"
    data, _, _ = fixture_stream("NonZeroByteWord", 1, "MainContent")
    docx = client_for(make_file(data, name="b.docx"))
    _, message, frames = get_chunked(docx, [stream_filter(scheme="FullFile")])
    assert message["Signatures"][0]["ChunkingScheme"] == "Zip"
    expected = [int(n) for n in (FIXTURES / "NonZeroByteWord/Version1/MainContent/ChunkIds.txt").read_text().split()]
    lengths = [c["Length"] for c in message["Signatures"][0]["ChunkSignatures"]]
    assert [sum(lengths[:i]) for i in range(len(lengths))] == expected
    assert b"".join(frames[c["ChunkId"]] for c in message["Signatures"][0]["ChunkSignatures"]) == data


def test_last_zip_chunk(make_file, client_for):
    data, signature, _ = fixture_stream("NonZeroBytePpt", 1, "MainContent")
    ppt = client_for(make_file(data, name="p.pptx"))
    _, _, frames = get_chunked(ppt, [stream_filter(chunks="LastZipChunk")])
    last = signature.chunks[-1]
    assert frames == {last.chunk_id: data[-last.length :]}
    text = client_for(make_file(b"not a zip", name="t.txt"))
    _, message, frames = get_chunked(text, [stream_filter(chunks="LastZipChunk")])
    assert frames == {} and message["Signatures"][0]["ChunkingScheme"] == "FullFile"


def test_a_zip_saved_by_put_file_is_chunked_like_microsoft(make_file, client_for):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.txt", "hello")
        archive.writestr("b.txt", "world")
    wopi = client_for(make_file(out.getvalue(), name="z.docx"))
    _, message, frames = get_chunked(wopi, [stream_filter()])
    assert message["Signatures"][0]["ChunkingScheme"] == "Zip"
    assert len(message["Signatures"][0]["ChunkSignatures"]) == 5
    assert frames[HELLO] == b"hello"


@pytest.mark.parametrize(
    "message, reason",
    [
        ({"ContentPropertiesToReturn": [], "ContentFilters": []}, "ContentFilters"),
        ({"ContentPropertiesToReturn": []}, "ContentFilters"),
        ({"ContentFilters": [stream_filter()]}, "ContentPropertiesToReturn"),
        ({"ContentPropertiesToReturn": [], "ContentFilters": [stream_filter(), stream_filter()]}, "twice"),
        ({"ContentPropertiesToReturn": [], "ContentFilters": [stream_filter(chunks="Some")]}, "ChunksToReturn"),
        ({"ContentPropertiesToReturn": [], "ContentFilters": [{"ChunkingScheme": "Zip"}]}, "StreamId"),
        ({"ContentPropertiesToReturn": [["x"]], "ContentFilters": [stream_filter()]}, "ContentPropertiesToReturn"),
        ({"ContentPropertiesToReturn": [7], "ContentFilters": [stream_filter()]}, "ContentPropertiesToReturn"),
        # required, though it may be empty: null is no list (as for a field left out)
        ({"ContentPropertiesToReturn": None, "ContentFilters": [stream_filter()]}, "ContentPropertiesToReturn"),
        ({"ContentPropertiesToReturn": [], "ContentFilters": None}, "ContentFilters"),
        (
            {"ContentPropertiesToReturn": [], "ContentFilters": [{**stream_filter(), "ChunksToReturn": 7}]},
            "ChunksToReturn",
        ),
        (
            {"ContentPropertiesToReturn": [], "ContentFilters": [{**stream_filter(), "ChunksToReturn": ["All"]}]},
            "ChunksToReturn",
        ),
        (
            {"ContentPropertiesToReturn": [], "ContentFilters": [{**stream_filter(), "AlreadyKnownChunks": HELLO}]},
            "AlreadyKnownChunks",
        ),
        ({"ContentPropertiesToReturn": [], "ContentFilters": [stream_filter(known=[7])]}, "AlreadyKnownChunks"),
        (
            {"ContentPropertiesToReturn": [], "ContentFilters": [{**stream_filter(), "AlreadyKnownChunks": {}}]},
            "AlreadyKnownChunks",
        ),
    ],
)
def test_get_chunked_file_bad_requests_are_400(wopi, message, reason):
    response = wopi.op("GET_CHUNKED_FILE", request_body(message))
    assert response.status_int == 400
    assert reason in response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize("body", [b"", b"\x00\x00\x00\x09junk", message_frame({})])  # no EndFrame in the last
def test_get_chunked_file_bad_frames_are_400(wopi, body):
    assert wopi.op("GET_CHUNKED_FILE", body).status_int == 400


def test_bare_json_request_is_accepted(wopi):
    response = wopi.op(
        "GET_CHUNKED_FILE",
        b'{"ContentPropertiesToReturn":[],"ContentFilters":[{"StreamId":'
        b'"MainContent","ChunkingScheme":"Zip","ChunksToReturn":"None"}]}',
    )
    assert response.status_int == 200


def test_locks_never_affect_reads(wopi, make_file, client_for):
    wopi.lock("someone else")
    reader = client_for(make_file(name="R.docx"), can_write=False)
    assert get_chunked(wopi, [stream_filter()])[0].status_int == 200
    assert get_chunked(reader, [stream_filter()])[0].status_int == 200


# -- the delta round trip over Microsoft's Office files ------------------------------------


@pytest.mark.parametrize("document", ["NonZeroByteExcel", "NonZeroBytePpt", "NonZeroByteWord"])
def test_delta_round_trip(document, make_file, client_for):
    """Upload Version1, download knowing it, upload Version2 sending only new chunks, download Version2."""
    streams = sorted(p.name for p in (FIXTURES / document / "Version1").iterdir())
    writer = client_for(make_file(b"", name=f"{document}.bin"))
    v1 = {name: fixture_stream(document, 1, name) for name in streams}
    save_all = {name: signature for name, (_, signature, _) in v1.items()}
    assert put_chunked(writer, save_all, [c for _, _, chunks in v1.values() for c in chunks]).status_int == 200
    writer.lock("L")

    reader = client_for(writer.testapp.app.extensions["wopihost"].files.get(writer.file_id), user="bob")
    known = {name: [c.chunk_id for c in signature.chunks] for name, (_, signature, _) in v1.items()}
    assert get_chunked(reader, [stream_filter(n, known=known[n]) for n in streams])[2] == {}

    v2 = {name: fixture_stream(document, 2, name) for name in streams}
    old_ids = {cid for ids in known.values() for cid in ids}
    new_chunks = {cid: payload for _, _, chunks in v2.values() for cid, payload in chunks if cid not in old_ids}
    token = upload(writer, list(new_chunks.items()), piece=1000)
    save(writer, {name: signature for name, (_, signature, _) in v2.items()}, session=token)
    assert writer.get_file().body == v2["MainContent"][0]

    _, message, frames = get_chunked(reader, [stream_filter(n, known=known[n]) for n in streams])
    assert set(frames) == set(new_chunks)
    pool = {cid: payload for _, _, chunks in v1.values() for cid, payload in chunks} | frames
    for entry in message["Signatures"]:
        rebuilt = b"".join(pool[c["ChunkId"]] for c in entry["ChunkSignatures"])
        assert rebuilt == v2[entry["StreamId"]][0]
        assert entry == v2[entry["StreamId"]][1].to_json(entry["StreamId"])  # returned as uploaded


def test_excel_delta_from_version1_to_version2_is_18_chunks(make_file, client_for):
    writer = client_for(make_file(b"", name="Book.xlsx"))
    v2 = {name: fixture_stream("NonZeroByteExcel", 2, name) for name in ("MainContent", "AltContent")}
    assert (
        put_chunked(
            writer, {n: s for n, (_, s, _) in v2.items()}, [c for _, _, chunks in v2.values() for c in chunks]
        ).status_int
        == 200
    )
    v1 = {name: fixture_stream("NonZeroByteExcel", 1, name) for name in v2}
    filters = [stream_filter(n, known=[c.chunk_id for c in s.chunks]) for n, (_, s, _) in v1.items()]
    assert len(get_chunked(writer, filters)[2]) == 18


# -- GetChunks ------------------------------------------------------------------------------


def get_chunks(wopi, ranges, stream="MainContent"):
    message = {"ContentFilters": [{"StreamId": stream, "ChunkingScheme": "FullFile", "ChunkRangesToReturn": ranges}]}
    response = wopi.op("GET_CHUNKS", request_body(message))
    if response.status_int != 200:
        return response, None, None
    return response, *read_response(response.body)


@pytest.fixture
def thousand(locked):
    """MainContent is the 1000-byte chunk of docs/cspp-plus.md §2.5."""
    data = bytes(i % 251 for i in range(1000))
    signature, chunks = full_file(data)
    save(locked, {"MainContent": signature}, chunks)
    return locked, chunks[0][0], data


def test_get_chunks_ranges(thousand):
    wopi, cid, data = thousand
    response, message, frames = get_chunks(
        wopi, [{"ChunkId": cid, "Offset": 0, "Length": 600}, {"ChunkId": cid, "Offset": 600, "Length": -1}]
    )
    assert response.headers["X-WOPI-SequenceNumber"] == "2" and response.headers["X-WOPI-ItemVersion"]
    assert message == {"ChunkRangeCollection": [{"StreamId": "MainContent", "ChunkIds": [cid]}]}
    assert frames == [
        (cid, {"offset": 0, "length": 600, "end_of_chunk": False}, data[:600]),
        (cid, {"offset": 600, "length": 400, "end_of_chunk": True}, data[600:]),
    ]


def test_get_chunks_clamps_length_and_leaves_out_unknown_chunks(thousand):
    wopi, cid, data = thousand
    _, message, frames = get_chunks(
        wopi, [{"ChunkId": cid, "Offset": 990, "Length": 50}, {"ChunkId": HELLO, "Offset": 0, "Length": -1}]
    )
    assert message["ChunkRangeCollection"][0]["ChunkIds"] == [cid]
    assert frames == [(cid, {"offset": 990, "length": 10, "end_of_chunk": True}, data[990:])]


@pytest.mark.parametrize("offset, length", [(-1, 5), (0, -2), (1001, 1), ("0", 1)])
def test_get_chunks_bad_ranges_are_400(thousand, offset, length):
    wopi, cid, _ = thousand
    response, _, _ = get_chunks(wopi, [{"ChunkId": cid, "Offset": offset, "Length": length}])
    assert response.status_int == 400
