import io
import json
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wopihost.cspp.chunkid import EMPTY_CHUNK_ID, ChunkHasher, chunk_id, encode_chunk_id
from wopihost.cspp.frames import ChunkData, ChunkEnd, ChunkStart, FrameDecoder, MessageJSON
from wopihost.cspp.signatures import (
    ChunkMismatchError,
    ChunkSignature,
    MissingChunkError,
    ReassemblyError,
    Signature,
    SignatureError,
    chunks_to_send,
    read_pieces,
    reassemble,
)

from .test_frames import COMMIT_MESSAGE, SESSION_STREAM, sample_body


def sig_of(*parts, scheme="FullFile"):
    return Signature(scheme, tuple(ChunkSignature(chunk_id(part), len(part)) for part in parts))


# JSON shapes (docs/cspp-plus.md §3.5)


def test_put_chunked_file_sample_signatures_parse():
    # The signatures of the PutChunkedFile MessageJSON sample in docs/cspp-plus.md §1.3.
    sample = json.loads("""[
      {"StreamId": "MainContent", "ChunkingScheme": "Zip", "ChunkSignatures": [
        {"ChunkId": "x528z/NDWJ8VewQfBqTVsQ==", "Length": 35},
        {"ChunkId": "yuaC02qCaDdD4BrH0R6UXA==", "Length": 5}]},
      {"StreamId": "AlternateStream", "ChunkingScheme": "FullFile",
       "ChunkSignatures": [{"ChunkId": "sUIRbBoCFUe5wEQDA+mgxQ==", "Length": 23}]}]""")
    parsed = [Signature.from_json(item) for item in sample]
    assert parsed == [
        (
            "MainContent",
            Signature(
                "Zip", (ChunkSignature("x528z/NDWJ8VewQfBqTVsQ==", 35), ChunkSignature("yuaC02qCaDdD4BrH0R6UXA==", 5))
            ),
        ),
        ("AlternateStream", Signature("FullFile", (ChunkSignature("sUIRbBoCFUe5wEQDA+mgxQ==", 23),))),
    ]
    assert [sig.to_json(stream) for stream, sig in parsed] == sample


chunk_signatures = st.builds(
    ChunkSignature,
    st.binary(min_size=16, max_size=16).map(encode_chunk_id),
    st.integers(0, 2**64 - 1),
)
signatures = st.builds(
    Signature, st.sampled_from(["Zip", "FullFile"]), st.lists(chunk_signatures, max_size=6).map(tuple)
)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=20), signatures)
def test_json_round_trip(stream_id, signature):
    wire = json.loads(json.dumps(signature.to_json(stream_id)))
    assert Signature.from_json(wire) == (stream_id, signature)


def valid():
    return {
        "StreamId": "MainContent",
        "ChunkingScheme": "Zip",
        "ChunkSignatures": [{"ChunkId": EMPTY_CHUNK_ID, "Length": 0}],
    }


def with_change(path, value):
    obj = valid()
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


BAD_SIGNATURES = {
    "not an object": [valid()],
    "no StreamId": with_change(["StreamId"], KeyError),
    "StreamId not a string": with_change(["StreamId"], 5),
    "StreamId empty": with_change(["StreamId"], ""),
    "no ChunkingScheme": with_change(["ChunkingScheme"], KeyError),
    "scheme lower case": with_change(["ChunkingScheme"], "zip"),
    "scheme null": with_change(["ChunkingScheme"], None),
    "scheme list": with_change(["ChunkingScheme"], ["Zip"]),
    "no ChunkSignatures": with_change(["ChunkSignatures"], KeyError),
    "ChunkSignatures null": with_change(["ChunkSignatures"], None),
    "chunk not an object": with_change(["ChunkSignatures", 0], "GQn1a/wGJyPHUei0Ze5yiw=="),
    "no ChunkId": with_change(["ChunkSignatures", 0, "ChunkId"], KeyError),
    "ChunkId placeholder": with_change(["ChunkSignatures", 0, "ChunkId"], "R3ZBz20okt9LmDaePUpB8Q--"),
    "ChunkId number": with_change(["ChunkSignatures", 0, "ChunkId"], 1),
    "no Length": with_change(["ChunkSignatures", 0, "Length"], KeyError),
    "Length negative": with_change(["ChunkSignatures", 0, "Length"], -1),
    "Length float": with_change(["ChunkSignatures", 0, "Length"], 5.0),
    "Length bool": with_change(["ChunkSignatures", 0, "Length"], True),
    "Length string": with_change(["ChunkSignatures", 0, "Length"], "5"),
    "Length too big": with_change(["ChunkSignatures", 0, "Length"], 2**64),
}


@pytest.mark.parametrize("obj", BAD_SIGNATURES.values(), ids=BAD_SIGNATURES.keys())
def test_from_json_rejects(obj):
    with pytest.raises(SignatureError):
        Signature.from_json(obj)


def test_from_json_ignores_unknown_keys():
    obj = valid()
    obj["Extra"] = 1
    obj["ChunkSignatures"][0]["Other"] = "x"
    assert Signature.from_json(obj) == ("MainContent", Signature("Zip", (ChunkSignature(EMPTY_CHUNK_ID, 0),)))


# Deltas


def test_chunks_to_send_is_distinct_in_first_appearance_order():
    signature = sig_of(b"aa", b"b", b"aa", b"ccc", b"b", b"dddd")
    a, b, c, d = (ChunkSignature(chunk_id(p), len(p)) for p in (b"aa", b"b", b"ccc", b"dddd"))
    assert chunks_to_send(signature, []) == [(0, a), (2, b), (5, c), (9, d)]
    assert chunks_to_send(signature, {b.chunk_id, "not a chunk id"}) == [(0, a), (5, c), (9, d)]
    assert chunks_to_send(signature, [a.chunk_id, b.chunk_id, c.chunk_id, d.chunk_id]) == []
    assert signature.length == 13
    assert [offset for offset, _ in signature.spans()] == [0, 2, 3, 5, 8, 9]


def test_empty_stream_signature_sends_its_empty_chunk_unless_known():
    empty = Signature("FullFile", (ChunkSignature(EMPTY_CHUNK_ID, 0),))
    assert chunks_to_send(empty, []) == [(0, ChunkSignature(EMPTY_CHUNK_ID, 0))]
    assert chunks_to_send(empty, [EMPTY_CHUNK_ID]) == []
    assert chunks_to_send(Signature("Zip", ()), []) == []


# Reassembly


def test_reassemble_from_bytes_files_and_callables():
    parts = [b"hello ", b"world", b"hello ", b"!" * 3000000, b""]
    signature = sig_of(*parts)
    expected = b"".join(parts)
    by_id = {chunk_id(p): p for p in parts}

    out = io.BytesIO()
    assert reassemble(signature, by_id, out) == len(expected)
    assert out.getvalue() == expected

    files = {key: io.BytesIO(value) for key, value in by_id.items()}  # "hello " is read twice from one file
    out = io.BytesIO()
    reassemble(signature, files, out)
    assert out.getvalue() == expected

    out = io.BytesIO()
    reassemble(signature, lambda key: memoryview(by_id[key]), out)
    assert out.getvalue() == expected


def test_reassemble_reads_a_range_of_a_larger_file_and_restores_its_position():
    store = io.BytesIO(b"xxhelloyy")
    store.seek(2)
    out = io.BytesIO()
    reassemble(sig_of(b"hello", b"hello"), lambda key: store, out)
    assert out.getvalue() == b"hellohello" and store.tell() == 2


def test_missing_chunk():
    signature = sig_of(b"a", b"b")
    with pytest.raises(MissingChunkError) as info:
        reassemble(signature, {chunk_id(b"a"): b"a"}, io.BytesIO())
    assert info.value.chunk_id == chunk_id(b"b") and info.value.reason.isascii()
    with pytest.raises(MissingChunkError):
        reassemble(signature, lambda key: None, io.BytesIO())


@pytest.mark.parametrize(
    "wrap, stored",
    [
        (bytes, b"hell"),
        (bytes, b"hellp"),
        (bytes, b"hello!"),
        (io.BytesIO, b"hell"),
        (io.BytesIO, b"hellp"),
    ],
    ids=["bytes short", "bytes other", "bytes long", "file short", "file other"],
)
def test_mismatched_chunk(wrap, stored):
    signature = sig_of(b"hello")
    with pytest.raises(ChunkMismatchError) as info:
        reassemble(signature, {chunk_id(b"hello"): wrap(stored)}, io.BytesIO())
    assert info.value.chunk_id == chunk_id(b"hello")
    assert isinstance(info.value, ReassemblyError) and isinstance(info.value, ValueError)


def test_a_file_source_is_read_for_the_signature_length_only():
    out = io.BytesIO()
    reassemble(sig_of(b"hello"), {chunk_id(b"hello"): io.BytesIO(b"hello!")}, out)
    assert out.getvalue() == b"hello"


def test_verify_hashes_off_still_checks_lengths():
    signature = sig_of(b"hello")
    out = io.BytesIO()
    reassemble(signature, {chunk_id(b"hello"): b"HELLO"}, out, verify_hashes=False)
    assert out.getvalue() == b"HELLO"
    with pytest.raises(ChunkMismatchError):
        reassemble(signature, {chunk_id(b"hello"): io.BytesIO(b"HELL")}, io.BytesIO(), verify_hashes=False)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000), st.lists(st.integers(0, 5000), max_size=8), st.data())
def test_any_cut_of_a_stream_reassembles(stream, cuts, data):
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    parts = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    signature = sig_of(*parts)
    ids = [c.chunk_id for c in signature.chunks]
    known = data.draw(st.sets(st.sampled_from(ids)) if ids else st.just(set()), label="known")
    needed = chunks_to_send(signature, known)
    # The client side: known chunks plus the ones sent rebuild the stream.
    held = {c.chunk_id: stream[offset : offset + c.length] for offset, c in needed}
    held.update(
        {c.chunk_id: stream[offset : offset + c.length] for offset, c in signature.spans() if c.chunk_id in known}
    )
    out = io.BytesIO()
    reassemble(signature, held, out)
    assert out.getvalue() == stream
    assert len({c.chunk_id for _, c in needed}) == len(needed)


def test_read_pieces():
    f = io.BytesIO(bytes(range(256)) * 20000)  # 5,120,000 bytes
    pieces = list(read_pieces(f, 10 << 20, offset=10))  # asks for more than there is
    assert [len(p) for p in pieces] == [1 << 20] * 4 + [5120000 - 10 - (4 << 20)]
    assert b"".join(pieces) == f.getvalue()[10:]
    assert b"".join(read_pieces(f, 7, offset=3)) == f.getvalue()[3:10]
    gen = read_pieces(f, 5, offset=0)  # the seek waits for iteration
    f.seek(100)
    assert b"".join(gen) == f.getvalue()[:5]


# End to end: what PutChunkedFile will do with a decoded body or upload session.


def spool_chunks(stream, mode, pieces=7):
    """Decode a frame stream, spooling each chunk to a temp file while hashing it: the host's pattern."""
    decoder = FrameDecoder(mode)
    spooled, message = {}, None
    current = hasher = None
    for start in range(0, len(stream), pieces):
        for event in decoder.feed(stream[start : start + pieces]):
            if isinstance(event, MessageJSON):
                message = event.value
            elif isinstance(event, ChunkStart):
                current, hasher, expected_id = tempfile.TemporaryFile(), ChunkHasher(), event.chunk_id
            elif isinstance(event, ChunkData):
                current.write(event.data)
                hasher.update(event.data)
            elif isinstance(event, ChunkEnd):
                assert hasher.raw() == expected_id
                current.seek(0)
                spooled[hasher.chunk_id()] = current
    decoder.close()
    return message, spooled


def test_upload_session_commit_example():
    _, spooled = spool_chunks(SESSION_STREAM, "session")
    streams = {}
    for item in COMMIT_MESSAGE["Signatures"]:
        stream_id, signature = Signature.from_json(item)
        out = io.BytesIO()
        reassemble(signature, spooled, out)
        streams[stream_id] = out.getvalue()
    assert streams == {"MainContent": b"hello", "AltStream1": b"world"}


def test_put_chunked_file_example_body():
    message, spooled = spool_chunks(sample_body(), "body")
    (item,) = message["Signatures"]
    stream_id, signature = Signature.from_json(item)
    out = io.BytesIO()
    reassemble(signature, spooled, out)
    assert (stream_id, out.getvalue()) == ("MainContent", b"SampleTextVersion-1")


@given(st.lists(st.binary(max_size=50), max_size=20), st.integers(min_value=1, max_value=40))
def test_rechunk_cuts_anywhere_and_loses_nothing(parts, size):
    from wopihost.cspp.wire import rechunk

    pieces = list(rechunk(parts, size))
    assert b"".join(pieces) == b"".join(parts)
    assert all(len(p) == size for p in pieces[:-1]) and all(0 < len(p) <= size for p in pieces)
