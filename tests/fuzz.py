"""Hypothesis strategies for WOPI requests a hostile or broken client could send: any override, headers with
hostile values, and bodies that are noise, JSON or CSPP frames (well formed, mutated or cut off). Shared by
the in-process fuzz test and the one against gunicorn."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from wopihost.cspp.chunkid import chunk_id
from wopihost.cspp.frames import END_FRAME, message_frame
from wopihost.cspp.wire import chunk_frames

# DELETE is left out: a deleted file would turn every later example into a 404.
OVERRIDES = [
    "LOCK",
    "GET_LOCK",
    "REFRESH_LOCK",
    "UNLOCK",
    "PUT_RELATIVE",
    "RENAME_FILE",
    "PUT_USER_INFO",
    "PUT",
    "GET_SEQUENCE_NUMBER",
    "GET_CHUNKED_FILE",
    "GET_CHUNKS",
    "PUT_CHUNKED_FILE",
    "CREATE_UPLOAD_SESSION",
    "UPDATE_UPLOAD_SESSION",
    "GET_COAUTH_LOCK",
    "REFRESH_COAUTH_LOCK",
    "UNLOCK_COAUTH_LOCK",
    "GET_COAUTH_TABLE",
    "lock",
    "",
    "X" * 300,
]
HEADERS = [
    "X-WOPI-Lock",
    "X-WOPI-OldLock",
    "X-WOPI-SuggestedTarget",
    "X-WOPI-RelativeTarget",
    "X-WOPI-OverwriteRelativeTarget",
    "X-WOPI-Size",
    "X-WOPI-RequestedName",
    "X-WOPI-MaxExpectedSize",
    "X-COOL-WOPI-Timestamp",
    "Range",
    "If-Range",
    "Authorization",
    "X-WOPI-SequenceNumber",
    "X-WOPI-UploadSessionToken",
    "X-WOPI-ContentRangeOffset",
    "X-WOPI-ContentRangeLength",
    "X-WOPI-CoauthLockId",
    "X-WOPI-CoauthLockType",
    "X-WOPI-CoauthLockExpirationTimeout",
    "X-WOPI-CoauthLockMetadata",
    "X-WOPI-CoauthTableVersion",
    "X-WOPI-Editors",
]
NASTY_VALUES = [
    "",
    "0",
    "-1",
    "1" * 19,
    "9" * 20,
    "9" * 5000,
    "+2AA-",
    "+2AA-.docx",
    "+AAA-",
    "a\x7fb",
    "..",
    "../../etc/passwd",
    "CON.docx",
    "true",
    "True",
    "bytes=0-0,5-",
    "bytes=-0",
    "Coauth",
    "CoauthExclusive",
    "600",
    "3601",
    "Bearer",
    "\xe9" * 300,
    "L" * 1025,
]
# Header values as a WSGI server delivers them: latin-1 text without line breaks.
values = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=80)
header_values = values | st.sampled_from(NASTY_VALUES)
headers = st.dictionaries(st.sampled_from(HEADERS), header_values, max_size=6)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "a\x00b", "MainContent", "Zip", "FullFile", "All", "KeepOnContentChange"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Signatures",
                    "ContentProperties",
                    "ContentFilters",
                    "StreamId",
                    "ChunkingScheme",
                    "ChunkSignatures",
                    "ChunkId",
                    "Length",
                    "Offset",
                    "Name",
                    "Value",
                    "Retention",
                    "UploadSessionTokenToCommit",
                    "ChunksToReturn",
                    "AlreadyKnownChunks",
                    "ChunkRangesToReturn",
                    "ContentPropertiesToReturn",
                    "CoauthLockMetadata",
                ]
            )
            | st.text(max_size=8),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)
payloads = st.binary(max_size=64)
chunks = st.lists(payloads.map(lambda p: (chunk_id(p), p)), max_size=3)


def _json_bytes(value) -> bytes:
    return json.dumps(value).encode()


@st.composite
def _mutated(draw, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[position:]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


framed = st.builds(
    lambda message, chunks, end: message_frame(message) + chunk_frames(chunks) + (END_FRAME if end else b""),
    json_values,
    chunks,
    st.booleans(),
)
bodies = (
    st.binary(max_size=128)
    | json_values.map(_json_bytes)
    | framed
    | framed.flatmap(_mutated)
    | chunks.map(chunk_frames)
)
