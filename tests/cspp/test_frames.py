import array
import json
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wopihost.cspp.chunkid import ChunkIdError, chunk_id, chunk_id_raw
from wopihost.cspp.frames import (
    END_FRAME,
    ChunkData,
    ChunkEnd,
    ChunkRangeStart,
    ChunkStart,
    EndFrame,
    FrameDecoder,
    FrameError,
    MessageJSON,
    chunk_frame,
    chunk_range_frame,
    encode_body,
    message_frame,
)

HEADER = struct.Struct(">IIQ")


def header(ftype, ext, size):
    return HEADER.pack(ftype, ext, size)


def hexbytes(text):
    return bytes.fromhex(text.replace("|", " "))


def normalize(events, complete=True):
    """Events as comparable tuples, each chunk's payload joined; checks the event grammar on the way."""
    out = []
    current = None
    for event in events:
        if isinstance(event, ChunkData):
            assert current is not None
            assert isinstance(event.data, memoryview)
            current[-1] += bytes(event.data)
            continue
        assert current is None or isinstance(event, ChunkEnd)
        if isinstance(event, MessageJSON):
            out.append(("message", event.value))
        elif isinstance(event, ChunkStart):
            current = ["chunk", event.chunk_id, event.size, b""]
        elif isinstance(event, ChunkRangeStart):
            current = ["range", event.chunk_id, event.offset, event.length, event.end_of_chunk, b""]
        elif isinstance(event, ChunkEnd):
            assert current is not None
            out.append(tuple(current))
            current = None
        else:
            assert isinstance(event, EndFrame)
            out.append(("end",))
    assert current is None or not complete
    return out


def decode(stream, cuts=(), mode="body", **limits):
    decoder = FrameDecoder(mode, **limits)
    events = []
    previous = 0
    for cut in sorted(cuts) + [len(stream)]:
        events += decoder.feed(stream[previous:cut])
        previous = cut
    decoder.close()
    return normalize(events)


def raises_frame_error(stream, mode="body", **limits):
    decoder = FrameDecoder(mode, **limits)
    with pytest.raises(FrameError) as info:
        decoder.feed(stream)
        decoder.close()
    reason = info.value.reason
    assert reason and reason.isascii() and "\n" not in reason and str(info.value) == reason
    return reason


# Spec §2.4: a PutChunkedFile body.

SAMPLE = b"SampleTextVersion-1"
SAMPLE_MESSAGE_TEXT = (
    b'{"ContentProperties":[],"Signatures":[{"StreamId":"MainContent","ChunkingScheme":"FullFile",'
    b'"ChunkSignatures":[{"ChunkId":"OpSWhpt12BRkuGX4z7bQPg==","Length":19}]}],'
    b'"UploadSessionTokenToCommit":null}'
)
SAMPLE_MESSAGE = {
    "ContentProperties": [],
    "Signatures": [
        {
            "StreamId": "MainContent",
            "ChunkingScheme": "FullFile",
            "ChunkSignatures": [{"ChunkId": "OpSWhpt12BRkuGX4z7bQPg==", "Length": 19}],
        }
    ],
    "UploadSessionTokenToCommit": None,
}
SAMPLE_ID = hexbytes("3a 94 96 86 9b 75 d8 14 64 b8 65 f8 cf b6 d0 3e")


def sample_body():
    return b"".join(encode_body(SAMPLE_MESSAGE, [chunk_frame("OpSWhpt12BRkuGX4z7bQPg==", SAMPLE)]))


def test_put_chunked_file_example_bytes():
    body = sample_body()
    assert len(SAMPLE_MESSAGE_TEXT) == 199
    assert len(body) == 282
    assert body[0x00:0x10] == hexbytes("00 00 00 02 00 00 00 00 00 00 00 00 00 00 00 c7")
    assert body[0x10:0x20] == hexbytes("7b 22 43 6f 6e 74 65 6e 74 50 72 6f 70 65 72 74")
    assert body[0x10 : 0x10 + 199] == SAMPLE_MESSAGE_TEXT
    assert body[0xD0:] == hexbytes(
        "22 3a 6e 75 6c 6c 7d|00 00 00 03 00 00 00 10 00"
        "00 00 00 00 00 00 13|3a 94 96 86 9b 75 d8 14 64"
        "b8 65 f8 cf b6 d0 3e|53 61 6d 70 6c 65 54 65 78"
        "74 56 65 72 73 69 6f 6e 2d 31|00 00 00 01 00 00"
        "00 00 00 00 00 00 00 00 00 00"
    )
    assert chunk_id_raw(SAMPLE) == SAMPLE_ID


def test_put_chunked_file_example_decodes_at_every_split():
    body = sample_body()
    expected = [("message", SAMPLE_MESSAGE), ("chunk", SAMPLE_ID, 19, SAMPLE), ("end",)]
    for cut in range(len(body) + 1):
        assert decode(body, [cut]) == expected
    assert decode(body, range(len(body))) == expected  # one byte at a time


# Spec §2.5: a ChunkRange frame.

RANGE_CHUNK = bytes(i % 251 for i in range(1000))
RANGE_ID = hexbytes("fe d7 ef 41 d9 2f 3a 93 d8 d2 76 0a 67 6a 43 0e")


def test_chunk_range_example_bytes():
    assert chunk_id(RANGE_CHUNK) == "/tfvQdkvOpPY0nYKZ2pDDg=="
    tail = b"".join(chunk_range_frame("/tfvQdkvOpPY0nYKZ2pDDg==", 600, RANGE_CHUNK[600:], end_of_chunk=True))
    assert (
        tail
        == hexbytes(
            "00 00 00 04  00 00 00 24  00 00 00 00 00 00 01 90"
            "fe d7 ef 41 d9 2f 3a 93 d8 d2 76 0a 67 6a 43 0e"
            "00 00 00 00 00 00 02 58"
            "00 00 00 00 00 00 01 90"
            "00 00 00 01"
        )
        + RANGE_CHUNK[600:]
    )
    head = b"".join(chunk_range_frame(RANGE_ID, 0, RANGE_CHUNK[:600], end_of_chunk=False))
    assert head[:52] == hexbytes(
        "00 00 00 04 00 00 00 24 00 00 00 00 00 00 02 58"
        + RANGE_ID.hex()
        + "00 00 00 00 00 00 00 00"
        + "00 00 00 00 00 00 02 58"
        + "00 00 00 00"
    )
    assert head[52:] == RANGE_CHUNK[:600]

    response = {"ChunkRangeCollection": [{"StreamId": "MainContent", "ChunkIds": ["/tfvQdkvOpPY0nYKZ2pDDg=="]}]}
    body = message_frame(response) + head + tail + END_FRAME
    assert decode(body, [100, 170, 200, 700]) == [
        ("message", response),
        ("range", RANGE_ID, 0, 600, False, RANGE_CHUNK[:600]),
        ("range", RANGE_ID, 600, 400, True, RANGE_CHUNK[600:]),
        ("end",),
    ]


# docs/cspp-plus.md §4.5: an upload-session stream sent in two pieces, then the committing PutChunkedFile.

SESSION_STREAM = hexbytes(
    "00 00 00 03 00 00 00 10 00 00 00 00 00 00 00 05"
    "ca e6 82 d3 6a 82 68 37 43 e0 1a c7 d1 1e 94 5c"
    "68 65 6c 6c 6f|00 00 00 03 00 00 00 10 00 00 00"
    "00 00 00 00 05|25 be 3f af 5c d9 df 1c 7e 93 37"
    "d3 6c dd f9 42|77 6f 72 6c 64"
)

COMMIT_MESSAGE = {
    "ContentProperties": [{"Name": "p1", "Value": "v1", "Retention": "KeepOnContentChange"}],
    "Signatures": [
        {
            "StreamId": "MainContent",
            "ChunkingScheme": "FullFile",
            "ChunkSignatures": [{"ChunkId": "yuaC02qCaDdD4BrH0R6UXA==", "Length": 5}],
        },
        {
            "StreamId": "AltStream1",
            "ChunkingScheme": "FullFile",
            "ChunkSignatures": [{"ChunkId": "Jb4/r1zZ3xx+kzfTbN35Qg==", "Length": 5}],
        },
    ],
    "UploadSessionTokenToCommit": "3f2c9a7e0b1d4c6e8a5b7d9f1e2c4a6b",
}


def test_upload_session_example():
    encoded = b"".join(b"".join(chunk_frame(chunk_id(word), word)) for word in (b"hello", b"world"))
    assert encoded == SESSION_STREAM and len(SESSION_STREAM) == 74

    decoder = FrameDecoder("session")
    first = decoder.feed(SESSION_STREAM[:30])  # cuts inside the first frame's ChunkId
    assert first == [] and decoder.complete_offset == 0 and decoder.bytes_fed == 30
    second = decoder.feed(SESSION_STREAM[30:])
    assert decoder.complete_offset == 74
    decoder.close()
    assert normalize(second) == [
        ("chunk", chunk_id_raw(b"hello"), 5, b"hello"),
        ("chunk", chunk_id_raw(b"world"), 5, b"world"),
    ]

    body = b"".join(encode_body(COMMIT_MESSAGE))
    assert len(body) == 444 and len(message_frame(COMMIT_MESSAGE)) == 16 + 412
    assert decode(body) == [("message", COMMIT_MESSAGE), ("end",)]


def test_session_stream_may_stop_inside_a_frame_until_closed():
    decoder = FrameDecoder("session")
    decoder.feed(SESSION_STREAM[:50])
    assert decoder.complete_offset == 37
    with pytest.raises(FrameError, match="middle of a frame"):
        decoder.close()


def test_empty_session_is_valid():
    assert decode(b"", mode="session") == []


# Spec §2.3: every rule is a FrameError.

MSG = message_frame({})
CHUNK = b"".join(chunk_frame(chunk_id(b"abc"), b"abc"))

BAD_BODIES = {
    "empty body": b"",
    "ends inside the first header": MSG[:10],
    "ends inside the JSON": message_frame({"a": 1})[:-1],
    "ends inside a chunk header": MSG + CHUNK[:20],
    "ends inside a chunk payload": MSG + CHUNK[:-1],
    "ends inside the EndFrame": MSG + END_FRAME[:15],
    "no EndFrame": MSG + CHUNK,
    "frame type 0": header(0, 0, 0),
    "frame type 5 after the message": MSG + header(5, 0, 0) + END_FRAME,
    "frame type 2**32-1": MSG + header(0xFFFFFFFF, 0, 0),
    "EndFrame with an extended header": MSG + header(1, 16, 0) + bytes(16),
    "MessageJSON with an extended header": header(2, 16, 2) + bytes(16) + b"{}" + END_FRAME,
    "Chunk with a 0-byte extended header": MSG + header(3, 0, 0) + END_FRAME,
    "Chunk with a 36-byte extended header": MSG + header(3, 36, 0) + bytes(36) + END_FRAME,
    "ChunkRange with a 16-byte extended header": MSG + header(4, 16, 0) + bytes(16) + END_FRAME,
    "EndFrame with a payload": MSG + header(1, 0, 1) + b"x",
    "first frame is a Chunk": CHUNK + END_FRAME,
    "first frame is the EndFrame": END_FRAME,
    "second MessageJSON": MSG + CHUNK + MSG + END_FRAME,
    "two MessageJSON in a row": MSG + MSG + END_FRAME,
    "JSON not UTF-8": header(2, 0, 3) + b'"\xff"' + END_FRAME,
    "JSON in UTF-16": header(2, 0, 6) + '"ab"'.encode("utf-16-le")[:6] + END_FRAME,
    "JSON empty": header(2, 0, 0) + END_FRAME,
    "JSON truncated": header(2, 0, 5) + b'{"a":' + END_FRAME,
    "JSON NaN": header(2, 0, 3) + b"NaN" + END_FRAME,
    "JSON two values": header(2, 0, 4) + b"{}{}" + END_FRAME,
    "JSON nested too deeply": header(2, 0, 200000) + b"[" * 100000 + b"]" * 100000 + END_FRAME,
    "JSON integer too long": header(2, 0, 5000) + b"1" * 5000 + END_FRAME,
    "ChunkRange Length differs from PayloadSize": MSG
    + header(4, 36, 3)
    + struct.pack(">16sQQI", bytes(16), 0, 4, 1)
    + b"abc"
    + END_FRAME,
    "ChunkRange Flags 2": MSG + header(4, 36, 3) + struct.pack(">16sQQI", bytes(16), 0, 3, 2) + b"abc" + END_FRAME,
}


@pytest.mark.parametrize("stream", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies(stream):
    raises_frame_error(stream)
    # Split anywhere, the same stream fails the same way.
    for cut in range(0, len(stream), max(1, len(stream) // 40)):
        decoder = FrameDecoder()
        with pytest.raises(FrameError):
            decoder.feed(stream[:cut])
            decoder.feed(stream[cut:])
            decoder.close()


BAD_SESSIONS = {
    "MessageJSON": MSG,
    "EndFrame": CHUNK + END_FRAME,
    "ChunkRange": CHUNK + b"".join(chunk_range_frame(bytes(16), 0, b"ab", end_of_chunk=True)),
    "unknown type": CHUNK + header(9, 0, 0),
    "ends in a header": CHUNK + CHUNK[:31],
    "ends in a payload": CHUNK + CHUNK[:33],
}


@pytest.mark.parametrize("stream", BAD_SESSIONS.values(), ids=BAD_SESSIONS.keys())
def test_bad_sessions(stream):
    raises_frame_error(stream, mode="session")


def test_reasons_are_specific():
    assert "middle of a frame" in raises_frame_error(MSG + CHUNK[:-1])
    assert "no EndFrame" in raises_frame_error(MSG + CHUNK)
    assert "unknown FrameType 7" in raises_frame_error(MSG + header(7, 0, 0))
    assert "ExtendedHeaderSize 5" in raises_frame_error(MSG + header(3, 5, 0))
    assert "not MessageJSON" in raises_frame_error(CHUNK)
    assert "second MessageJSON" in raises_frame_error(MSG + MSG)
    assert "UTF-8" in raises_frame_error(header(2, 0, 1) + b"\xff" + END_FRAME)
    assert "only Chunk frames" in raises_frame_error(MSG, mode="session")


def test_utf8_bom_is_stripped():
    text = b'\xef\xbb\xbf{"a":"\xc3\xa9"}'
    assert decode(header(2, 0, len(text)) + text + END_FRAME) == [("message", {"a": "\u00e9"}), ("end",)]


def test_bytes_after_end_frame_are_ignored():
    decoder = FrameDecoder()
    events = decoder.feed(MSG + END_FRAME + b"garbage that is not a frame")
    assert normalize(events) == [("message", {}), ("end",)] and decoder.ended
    assert decoder.feed(b"\x00" * 100) == []
    decoder.close()
    assert decoder.complete_offset == len(MSG + END_FRAME)


@pytest.mark.parametrize("mode, prefix", [("body", MSG), ("session", b"")])
def test_payload_limit_is_checked_on_the_fixed_header(mode, prefix):
    decoder = FrameDecoder(mode, max_payload_size=1000)
    decoder.feed(prefix)
    with pytest.raises(FrameError, match="exceeds the limit"):
        decoder.feed(header(3, 16, 1001))  # refused before the ChunkId or any payload arrives
    decoder = FrameDecoder(mode, max_payload_size=1000)
    events = decoder.feed(prefix + header(3, 16, 1000) + bytes(16))
    assert isinstance(events[-1], ChunkStart)


def test_message_limit():
    assert decode(message_frame("x" * 98) + END_FRAME, max_message_size=100)[0] == ("message", "x" * 98)
    decoder = FrameDecoder(max_message_size=100)
    with pytest.raises(FrameError, match="exceeds the limit"):
        decoder.feed(header(2, 0, 101))
    decoder = FrameDecoder(max_payload_size=10, max_message_size=100)
    decoder.feed(header(2, 0, 100))  # the two limits are separate


def test_declared_sizes_are_not_allocated():
    decoder = FrameDecoder(max_message_size=1 << 30)
    tracemalloc.start()
    try:
        decoder.feed(header(2, 0, (1 << 30) - 1) + b'"' + b"x" * 100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_large_chunk_streams_through_without_copies():
    piece = bytes(range(256)) * 4096  # 1 MiB, fed 64 times
    decoder = FrameDecoder("session")
    decoder.feed(header(3, 16, 64 * len(piece)) + bytes(16))
    tracemalloc.start()
    try:
        for index in range(64):
            assert decoder.feed(b"") == []
            events = decoder.feed(piece)
            assert events[0].data.obj is piece and len(events[0].data) == len(piece)
            assert events[1:] == ([ChunkEnd()] if index == 63 else [])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024
    assert decoder.feed(b"") == []
    decoder.close()


def test_payload_views_point_into_the_fed_buffer():
    stream = MSG + CHUNK + END_FRAME
    events = FrameDecoder().feed(stream)
    data = [event for event in events if isinstance(event, ChunkData)]
    assert len(data) == 1 and data[0].data.obj is stream and data[0].data == b"abc"


def test_errors_are_sticky_and_feed_after_close_is_misuse():
    decoder = FrameDecoder()
    with pytest.raises(FrameError) as first:
        decoder.feed(header(0, 0, 0))
    with pytest.raises(FrameError) as again:
        decoder.feed(MSG)
    assert again.value is first.value
    with pytest.raises(FrameError):
        decoder.close()
    decoder = FrameDecoder()
    decoder.feed(MSG + END_FRAME)
    decoder.close()
    with pytest.raises(RuntimeError):
        decoder.feed(b"")


def test_mode_is_checked():
    with pytest.raises(ValueError):
        FrameDecoder("response")


def test_feed_accepts_any_byte_buffer():
    stream = bytearray(MSG + CHUNK + END_FRAME)
    assert (
        decode(stream)
        == decode(memoryview(stream))
        == [("message", {}), ("chunk", chunk_id_raw(b"abc"), 3, b"abc"), ("end",)]
    )
    words = array.array("I", message_frame("ab") + END_FRAME)  # 4-byte items: counted as bytes all the same
    assert normalize(FrameDecoder().feed(words)) == [("message", "ab"), ("end",)]


# Encoder


def test_end_frame_bytes():
    assert END_FRAME == hexbytes("00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00")


def test_message_frame_is_compact_ascii_json():
    frame = message_frame({"a": [1, "\u00e9\ud800"], "b": None})
    assert frame[16:] == b'{"a":[1,"\\u00e9\\ud800"],"b":null}'
    assert frame[:16] == header(2, 0, len(frame) - 16)
    with pytest.raises(ValueError):
        message_frame(float("nan"))


def test_chunk_frame_from_pieces():
    pieces = [b"ab", bytearray(b"cd"), memoryview(b"e"), b""]
    out = list(chunk_frame(chunk_id(b"abcde"), pieces, size=5))
    assert all(type(piece) is bytes for piece in out)
    assert out[1] is pieces[0]  # bytes pass through uncopied
    assert b"".join(out) == b"".join(chunk_frame(chunk_id_raw(b"abcde"), b"abcde"))


@pytest.mark.parametrize("pieces, size", [([b"ab", b"cd"], 3), ([b"ab"], 3)])
def test_chunk_frame_size_mismatch(pieces, size):
    with pytest.raises(ValueError, match="declared"):
        list(chunk_frame(bytes(16), pieces, size=size))


def test_chunk_frame_argument_errors():
    with pytest.raises(ValueError):
        chunk_frame(bytes(16), [b"x"])  # size required for pieces
    with pytest.raises(ValueError):
        chunk_frame(bytes(16), b"abc", size=4)
    with pytest.raises(ChunkIdError):
        chunk_frame(bytes(15), b"")
    with pytest.raises(ChunkIdError):
        chunk_frame("not a chunk id", b"")
    with pytest.raises(ValueError):
        chunk_range_frame(bytes(16), -1, b"", end_of_chunk=False)


# Properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
raw_ids = st.binary(min_size=16, max_size=16)
payloads = st.binary(max_size=300)
chunk_specs = st.tuples(st.just("chunk"), raw_ids, payloads)
range_specs = st.tuples(st.just("range"), raw_ids, st.integers(0, 2**64 - 1), st.booleans(), payloads)


def encode_spec(spec, split_at):
    """One frame's bytes, with its payload handed to the encoder in two pieces."""
    payload = spec[-1]
    pieces = [payload[:split_at], payload[split_at:]]
    if spec[0] == "chunk":
        frame = chunk_frame(spec[1], pieces, size=len(payload))
        expected = ("chunk", spec[1], len(payload), payload)
    else:
        frame = chunk_range_frame(spec[1], spec[2], pieces, end_of_chunk=spec[3], size=len(payload))
        expected = ("range", spec[1], spec[2], len(payload), spec[3], payload)
    return b"".join(frame), expected


def cut_points(data, length):
    return data.draw(st.lists(st.integers(0, length), max_size=8), label="cuts")


@settings(max_examples=150, deadline=None)
@given(json_values, st.lists(chunk_specs | range_specs, max_size=5), st.integers(0, 300), st.data())
def test_body_round_trip(message, specs, split_at, data):
    frames, expected = zip(*[encode_spec(spec, split_at) for spec in specs]) if specs else ((), ())
    body = b"".join(encode_body(message, [[frame] for frame in frames]))
    assert decode(body, cut_points(data, len(body))) == [("message", message), *expected, ("end",)]


@settings(max_examples=150, deadline=None)
@given(st.lists(chunk_specs, max_size=6), st.integers(0, 300), st.data())
def test_session_round_trip_and_complete_offset(specs, split_at, data):
    encoded = [encode_spec(spec, split_at) for spec in specs]
    stream = b"".join(frame for frame, _ in encoded)
    frame_ends = [0]
    for frame, _ in encoded:
        frame_ends.append(frame_ends[-1] + len(frame))
    decoder = FrameDecoder("session")
    events = []
    previous = 0
    for cut in sorted(cut_points(data, len(stream))) + [len(stream)]:
        events += decoder.feed(stream[previous:cut])
        previous = cut
        assert decoder.complete_offset == max(end for end in frame_ends if end <= cut)
    decoder.close()
    assert normalize(events) == [expected for _, expected in encoded]


@settings(max_examples=150, deadline=None)
@given(st.lists(chunk_specs, min_size=1, max_size=6), st.binary(min_size=16, max_size=40), st.data())
def test_a_session_resumed_at_a_frame_boundary_decodes_as_the_whole(specs, tail, data):
    """An upload session's pieces are decoded by separate requests: one resumed where another's frames ended (offset,
    frames) gives the events, stream offsets, complete offsets and errors of a single decoder over the stream."""
    stream = b"".join(encode_spec(spec, 0)[0] for spec in specs) + tail  # the tail: noise, or the start of a frame

    def run(decoder, data_):
        """The chunks begun (stream offset, size) and the error, fed a byte at a time: none is lost to the error."""
        events, error = [], None
        try:
            for at in range(len(data_)):
                events += decoder.feed(data_[at : at + 1])
            decoder.close()
        except FrameError as exc:
            error = exc.reason
        return [(e.stream_offset, e.size) for e in events if isinstance(e, ChunkStart)], error

    whole_starts, whole_error = run(FrameDecoder("session"), stream)
    first = FrameDecoder("session")
    cut = data.draw(st.integers(0, len(stream)), label="cut")
    try:
        first_starts = [(e.stream_offset, e.size) for e in first.feed(stream[:cut]) if isinstance(e, ChunkStart)]
    except FrameError as exc:
        assert exc.reason == whole_error  # failed before the cut, as the whole did
        return
    resume = first.complete_offset
    # a frame begun before the cut and not finished is decoded again after it
    first_starts = [(start, size) for start, size in first_starts if start + size <= resume]
    resumed = FrameDecoder("session", offset=resume, frames=first.complete_frames)
    rest_starts, rest_error = run(resumed, stream[resume:])
    assert first_starts + rest_starts == whole_starts
    assert rest_error == whole_error


def test_only_a_session_stream_resumes():
    with pytest.raises(ValueError):
        FrameDecoder("body", offset=10)
    with pytest.raises(ValueError):
        FrameDecoder("body", frames=1)


def feed_all(stream, cuts, mode):
    """Decode, allowing only FrameError to escape."""
    decoder = FrameDecoder(mode, max_payload_size=1 << 20, max_message_size=1 << 16)
    events = []
    previous = 0
    try:
        for cut in sorted(cuts) + [len(stream)]:
            events += decoder.feed(stream[previous:cut])
            previous = cut
        decoder.close()
    except FrameError as error:
        assert error.reason.isascii() and "\n" not in error.reason
        normalize(events, complete=False)
    else:
        normalize(events)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["body", "session"]), st.data())
def test_random_bytes_raise_only_frame_error(stream, mode, data):
    feed_all(stream, cut_points(data, len(stream)), mode)


# Random frame-shaped input gets past the first header far more often than random bytes do.
loose_frames = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2, 3, 4, 5, 0xFFFFFFFF]),
        st.sampled_from([0, 16, 36, 1, 0xFFFFFFFF]),
        st.integers(0, 40) | st.just(2**64 - 1),
        st.binary(max_size=60),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(loose_frames, st.sampled_from(["body", "session"]), st.data())
def test_frame_shaped_noise_raises_only_frame_error(frames, mode, data):
    start = MSG if mode == "body" and data.draw(st.booleans(), label="message first") else b""
    stream = start + b"".join(header(t, e, s) + rest for t, e, s, rest in frames)
    feed_all(stream, cut_points(data, len(stream)), mode)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.lists(chunk_specs | range_specs, max_size=3), st.sampled_from(["body", "session"]), st.data())
def test_mutated_streams_raise_only_frame_error(message, specs, mode, data):
    frames = [encode_spec(spec, 0)[0] for spec in specs]
    stream = bytearray(b"".join(encode_body(message, [[f] for f in frames])) if mode == "body" else b"".join(frames))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        position = data.draw(st.integers(0, len(stream)), label="position")
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]), label="action")
        if action == "flip" and position < len(stream):
            stream[position] ^= data.draw(st.integers(1, 255), label="xor")
        elif action == "insert":
            stream[position:position] = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
        elif action == "delete":
            del stream[position : position + data.draw(st.integers(1, 8), label="count")]
        elif action == "truncate":
            del stream[position:]
    feed_all(bytes(stream), cut_points(data, len(stream)), mode)


def test_message_json_survives_all_json_types():
    value = {"a": [1, 2.5, True, None, "s", {"b": []}], "big": 2**70}
    assert decode(message_frame(value) + END_FRAME) == [("message", value), ("end",)]
    assert json.loads(message_frame(value)[16:]) == value
