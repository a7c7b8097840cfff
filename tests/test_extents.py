"""Extents (extents.py) against a plain bytes model: slicing, merging, storing, and reading them as a file."""

import io
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from wopihost.extents import Extent, Extents, ExtentsReader, open_extents
from wopihost.storage import BlobStore

BLOBS = {"a": bytes(range(256)) * 3, "b": b"0123456789" * 20, "c": b"", "d": os.urandom(1000)}


@st.composite
def extents(draw) -> Extents:
    out = []
    for name in draw(st.lists(st.sampled_from(sorted(BLOBS)), max_size=8)):
        size = len(BLOBS[name])
        offset = draw(st.integers(0, size))
        out.append(Extent(name, offset, draw(st.integers(0, size - offset))))
    return Extents(out)


def model(sequence) -> bytes:
    return b"".join(BLOBS[e.blob][e.offset : e.offset + e.length] for e in sequence)


@given(extents(), st.data())
def test_slice_is_the_bytes_between(sequence, data):
    whole = model(sequence)
    start = data.draw(st.integers(0, len(whole)))
    length = data.draw(st.integers(0, len(whole) - start))
    part = sequence.slice(start, length)
    assert model(part) == whole[start : start + length] and part.length == length
    assert all(e.length > 0 for e in part)


def test_slice_outside_the_sequence_is_an_error():
    sequence = Extents([Extent("a", 0, 10)])
    for start, length in ((5, 6), (11, 0), (-1, 2)):
        try:
            sequence.slice(start, length)
        except ValueError:
            continue
        raise AssertionError(f"slice({start}, {length}) did not fail")


@given(extents())
def test_joined_keeps_the_bytes_and_merges_neighbours(sequence):
    joined = Extents.joined(sequence)
    assert model(joined) == model(sequence)
    assert all(e.length for e in joined)
    assert not any(a.blob == b.blob and a.offset + a.length == b.offset for a, b in zip(joined, joined[1:]))


@given(extents())
def test_stored_form_round_trips(sequence):
    assert Extents.stored("", 0, sequence.to_db()) == sequence
    assert Extents.stored("x", 7, None) == Extents([Extent("x", 0, 7)])


@settings(max_examples=50, deadline=None)
@given(extents(), st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 700)), max_size=6))
def test_reader_reads_and_seeks_like_the_bytes(tmp_path_factory, sequence, reads):
    store = BlobStore(tmp_path_factory.mktemp("blobs"), tmp_path_factory.mktemp("tmp"))
    names = {name: store.write(io.BytesIO(data), len(data), sha256=False).name for name, data in BLOBS.items()}
    stored = Extents(Extent(names[e.blob], e.offset, e.length) for e in sequence)
    whole = model(sequence)
    with io.BufferedReader(ExtentsReader(store.open(stored.blobs), stored)) as reader:
        assert reader.read() == whole
        for position, size in reads:
            reader.seek(position)
            assert reader.read(size) == whole[position : position + size]
        if len(whole) >= 3:
            assert reader.seek(-3, io.SEEK_END) == len(whole) - 3 and reader.read() == whole[-3:]


def test_a_whole_blob_opens_as_the_blob_itself(tmp_path):
    store = BlobStore(tmp_path / "blobs", tmp_path / "tmp")
    blob = store.write(io.BytesIO(b"whole"), 10, sha256=False)
    whole = open_extents(store.open([blob.name]), Extents([Extent(blob.name, 0, 5)]))
    with whole:
        assert whole.fileno() >= 0 and whole.read() == b"whole"  # a real file: the server may sendfile it
    part = open_extents(store.open([blob.name]), Extents([Extent(blob.name, 1, 3)]))
    with part:
        assert part.read() == b"hol"


def test_a_blob_unlinked_after_opening_stays_readable(tmp_path):
    store = BlobStore(tmp_path / "blobs", tmp_path / "tmp")
    blob = store.write(io.BytesIO(b"still here"), 20, sha256=False)
    opened = store.open([blob.name])
    store.delete(blob.name)
    with open_extents(opened, Extents([Extent(blob.name, 0, 5), Extent(blob.name, 6, 4)])) as reader:
        assert reader.read() == b"stillhere"
