import base64
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wopihost.cspp.chunkid import (
    EMPTY_CHUNK_ID,
    ChunkHasher,
    ChunkIdError,
    chunk_id,
    chunk_id_raw,
    decode_chunk_id,
    encode_chunk_id,
)

# Spec §3.4: input, h1, h2, ChunkId.
VECTORS = [
    (b"", 0x232706FC6BF50919, 0x8B72EE65B4E851C7, "GQn1a/wGJyPHUei0Ze5yiw=="),
    (b"foobar", 0x86C057A503EDDE99, 0x65178FE24E37629A, "md7tA6VXwIaaYjdO4o8XZQ=="),
    (b"hello", 0x3768826AD382E6CA, 0x5C941ED1C71AE043, "yuaC02qCaDdD4BrH0R6UXA=="),
    (b"world", 0x1CDFD95CAF3FBE25, 0x42F9DD6CD337937E, "Jb4/r1zZ3xx+kzfTbN35Qg=="),
    (b"SampleTextVersion-1", 0x14D8759B8696943A, 0x3ED0B6CFF865B864, "OpSWhpt12BRkuGX4z7bQPg=="),
    (b"Alt_SampleTextVersion-1", 0x4715021A6C1142B1, 0xC5A0E9030344C0B9, "sUIRbBoCFUe5wEQDA+mgxQ=="),
    (bytes(range(191)), 0x71043A03B5BB462F, 0xFE7D0AD0A893B638, "L0a7tQM6BHE4tpOo0Ap9/g=="),
    (bytes(range(192)), 0x02D13F94B2A31A54, 0x0EA393DB758D85D3, "VBqjspQ/0QLThY1125OjDg=="),
    (bytes(i % 251 for i in range(1000)), 0x933A2FD941EFD7FE, 0x0E436A670A76D2D8, "/tfvQdkvOpPY0nYKZ2pDDg=="),
]


@pytest.mark.parametrize("data, h1, h2, expected", VECTORS, ids=lambda v: None)
def test_vectors_one_shot(data, h1, h2, expected):
    assert chunk_id_raw(data) == struct.pack("<QQ", h1, h2)
    assert chunk_id(data) == expected
    assert chunk_id(memoryview(data)) == expected
    assert decode_chunk_id(expected) == struct.pack("<QQ", h1, h2)
    assert encode_chunk_id(struct.pack("<QQ", h1, h2)) == expected


@pytest.mark.parametrize("data, h1, h2, expected", VECTORS, ids=lambda v: None)
def test_vectors_incremental_split_everywhere(data, h1, h2, expected):
    for cut in range(len(data) + 1):
        hasher = ChunkHasher()
        hasher.update(data[:cut])
        hasher.update(memoryview(data)[cut:])
        assert hasher.chunk_id() == expected, cut
        assert hasher.raw() == struct.pack("<QQ", h1, h2)


def test_empty_constant_and_foo_bar():
    assert chunk_id(b"") == EMPTY_CHUNK_ID
    hasher = ChunkHasher()
    assert hasher.chunk_id() == EMPTY_CHUNK_ID
    hasher.update(b"foo")
    hasher.update(b"bar")
    assert hasher.chunk_id() == "md7tA6VXwIaaYjdO4o8XZQ=="


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000), max_size=6))
def test_incremental_equals_one_shot(data, cuts):
    hasher = ChunkHasher()
    previous = 0
    for cut in sorted(min(c, len(data)) for c in cuts) + [len(data)]:
        hasher.update(data[previous:cut])
        previous = cut
    assert hasher.chunk_id() == chunk_id(data)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_base64_round_trip(raw):
    text = encode_chunk_id(raw)
    assert len(text) == 24 and text.endswith("==")
    assert text == base64.b64encode(raw).decode()
    assert decode_chunk_id(text) == raw


@pytest.mark.parametrize(
    "text",
    [
        "",
        "GQn1a/wGJyPHUei0Ze5yiw=",  # 23 chars
        "GQn1a/wGJyPHUei0Ze5yiw==\n",
        " GQn1a/wGJyPHUei0Ze5yiw==",
        "GQn1a_wGJyPHUei0Ze5yiw==",  # base64url alphabet
        "GQn1a-wGJyPHUei0Ze5yiw==",
        "GQn1a/wGJyPHUei0Ze5yiz==",  # non-zero trailing bits: not the canonical encoding of 16 bytes
        "GQn1a/wGJyPHUei0Ze5yiwAA",  # no padding
        "R3ZBz20okt9LmDaePUpB8Q--",  # doc placeholders (docs/cspp-plus.md §5.22)
        "--QQQbM2oyjAXOFHEnVJ7Q2cbb/",
        "GQn1a/wGJyPHUei0Ze5yiw==GQn1a/wGJyPHUei0Ze5yiw==",
        "GQn1a/wGJyPHUei0Ze5yi\u00e9==",
    ],
)
def test_decode_rejects_malformed(text):
    with pytest.raises(ChunkIdError):
        decode_chunk_id(text)


@pytest.mark.parametrize("value", [None, 5, b"GQn1a/wGJyPHUei0Ze5yiw=="])
def test_decode_rejects_non_strings(value):
    with pytest.raises(ChunkIdError):
        decode_chunk_id(value)


@pytest.mark.parametrize("raw", [b"", b"x" * 15, b"x" * 17])
def test_encode_rejects_wrong_length(raw):
    with pytest.raises(ChunkIdError):
        encode_chunk_id(raw)


def test_chunk_id_error_is_a_value_error():
    assert issubclass(ChunkIdError, ValueError)
