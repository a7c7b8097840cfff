import io
import struct
import zipfile
import zlib
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wopihost.cspp.chunkid import EMPTY_CHUNK_ID, chunk_id
from wopihost.cspp.chunking import MAX_ZIP_ENTRIES, chunk_ranges, signature_of, zip_boundaries
from wopihost.cspp.signatures import ChunkSignature, Signature, chunks_to_send, reassemble

from ..helpers import FIXTURES_DIR

FIXTURES = FIXTURES_DIR / "office-zip-chunking"
FILE_STREAMS = sorted(FIXTURES.glob("*/Version*/*/FileStream"))


def test_fixtures_are_there():
    assert len(FILE_STREAMS) == 12


def assert_tiles(ranges, size):
    """The ranges tile [0, size) in order: no gaps, no overlaps, no empty range unless the stream is empty."""
    assert ranges[0][0] == 0
    for (offset, length), (next_offset, _) in zip(ranges, ranges[1:]):
        assert offset + length == next_offset
    assert ranges[-1][0] + ranges[-1][1] == size
    assert size == 0 or all(length > 0 for _, length in ranges)


@pytest.mark.parametrize("path", FILE_STREAMS, ids=lambda p: "/".join(p.parts[-4:-1]))
def test_office_files_chunk_like_microsoft(path):
    expected = [int(line) for line in (path.parent / "ChunkIds.txt").read_text().split()]
    with path.open("rb") as f:
        scheme, ranges = chunk_ranges(f)
        assert zip_boundaries(f) == expected
        signature = signature_of(f)
    assert scheme == "Zip"
    assert [offset for offset, _ in ranges] == expected
    assert_tiles(ranges, path.stat().st_size)
    data = path.read_bytes()
    assert signature == Signature("Zip", tuple(ChunkSignature(chunk_id(data[o : o + n]), n) for o, n in ranges))


def test_worked_example_offsets():
    path = FIXTURES / "NonZeroByteExcel" / "Version1" / "MainContent" / "FileStream"
    with path.open("rb") as f:
        scheme, ranges = chunk_ranges(f)
    assert [o for o, _ in ranges] == [
        0,
        569,
        919,
        1480,
        1724,
        1769,
        2549,
        2869,
        3112,
        3166,
        3846,
        3895,
        5578,
        5621,
        6309,
        6359,
        6517,
        6828,
        7159,
        7469,
        7862,
    ]
    assert ranges[0] == (0, 30 + 19 + 520) and ranges[1] == (569, 350) and ranges[-1] == (7862, 8524 - 7862)


def excel_signature(version, stream):
    with (FIXTURES / "NonZeroByteExcel" / version / stream / "FileStream").open("rb") as f:
        return signature_of(f)


def test_delta_from_version1_to_version2_is_18_chunks():
    needed = set()
    for stream in ("MainContent", "AltContent"):
        known = {chunk.chunk_id for chunk in excel_signature("Version1", stream).chunks}
        needed |= {chunk.chunk_id for _, chunk in chunks_to_send(excel_signature("Version2", stream), known)}
    assert len(needed) == 18


def test_delta_to_the_same_version_is_empty():
    signature = excel_signature("Version3", "MainContent")
    assert chunks_to_send(signature, {chunk.chunk_id for chunk in signature.chunks}) == []


# Spec §3.6: a tiny zip.

TINY_ZIP = bytes.fromhex(
    "504b03041400000000000000210086a61036050000000500000005000000612e74787468656c6c6f"
    "504b0304140000000000000021004311773a050000000500000005000000622e747874776f726c64"
    "504b010214001400000000000000210086a610360500000005000000050000000000000000000000800100000000612e747874"
    "504b01021400140000000000000021004311773a0500000005000000050000000000000000000000800128000000622e747874"
    "504b0506000000000200020066000000500000000000"
)


def test_tiny_zip_example():
    assert len(TINY_ZIP) == 204
    with zipfile.ZipFile(io.BytesIO(TINY_ZIP)) as archive:  # the transcription is a real zip
        assert archive.read("a.txt") == b"hello" and archive.read("b.txt") == b"world"
    scheme, ranges = chunk_ranges(io.BytesIO(TINY_ZIP))
    assert (scheme, ranges) == ("Zip", [(0, 35), (35, 5), (40, 35), (75, 5), (80, 124)])
    assert signature_of(io.BytesIO(TINY_ZIP)) == Signature(
        "Zip",
        (
            ChunkSignature("x528z/NDWJ8VewQfBqTVsQ==", 35),
            ChunkSignature("yuaC02qCaDdD4BrH0R6UXA==", 5),
            ChunkSignature("9S6IIyRgbBW/7qgUR3j7qQ==", 35),
            ChunkSignature("Jb4/r1zZ3xx+kzfTbN35Qg==", 5),
            ChunkSignature("tUwgf0wXVmaSBl2nqQSCcQ==", 124),
        ),
    )


# Empty and non-zip streams (docs/cspp-plus.md §5.6).


def test_empty_stream():
    assert chunk_ranges(io.BytesIO()) == ("FullFile", [(0, 0)])
    assert signature_of(io.BytesIO()) == Signature("FullFile", (ChunkSignature(EMPTY_CHUNK_ID, 0),))


def test_text_is_full_file():
    data = b"SampleTextVersion-1"
    assert chunk_ranges(io.BytesIO(data)) == ("FullFile", [(0, 19)])
    expected = Signature("FullFile", (ChunkSignature("OpSWhpt12BRkuGX4z7bQPg==", 19),))
    assert signature_of(io.BytesIO(data)) == expected


def test_size_argument_bounds_the_stream():
    f = io.BytesIO(TINY_ZIP + b"ignored")
    assert chunk_ranges(f, len(TINY_ZIP))[0] == "Zip"
    assert signature_of(f, len(TINY_ZIP)) == signature_of(io.BytesIO(TINY_ZIP))
    with pytest.raises(ValueError):
        signature_of(io.BytesIO(b"short"), 10)


def patched(data, offset, fmt, *values):
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


EOCD_AT = 182
CD_AT = 80
INCONSISTENT_ZIPS = {
    "bytes before the first entry": b"MZ" + TINY_ZIP,
    "bytes after the EOCD": TINY_ZIP + b"\0",
    "truncated": TINY_ZIP[:-1],
    "only the EOCD": TINY_ZIP[EOCD_AT:],
    "no entries": bytes.fromhex("504b0506000000000000000000000000000000000000"),
    "CD offset off by one": patched(TINY_ZIP, EOCD_AT + 16, "<I", CD_AT + 1),
    "CD size off by one": patched(TINY_ZIP, EOCD_AT + 12, "<I", 101),
    "entry count too high": patched(TINY_ZIP, EOCD_AT + 8, "<HH", 3, 3),
    "entry count too low": patched(TINY_ZIP, EOCD_AT + 8, "<HH", 1, 1),
    "second disk": patched(TINY_ZIP, EOCD_AT + 4, "<H", 1),
    "entries on several disks": patched(TINY_ZIP, EOCD_AT + 8, "<H", 1),
    "bad CD signature": patched(TINY_ZIP, CD_AT, "<I", 0),
    "bad local header signature": patched(TINY_ZIP, 40, "<I", 0),
    "two entries on one local header": patched(TINY_ZIP, CD_AT + 51 + 42, "<I", 0),
    "local header offset past the CD": patched(TINY_ZIP, CD_AT + 51 + 42, "<I", 190),
    "data overlaps the next entry": patched(TINY_ZIP, CD_AT + 20, "<I", 6),
    "local name runs into the next entry": patched(TINY_ZIP, 26, "<H", 200),
    "first entry not at 0": patched(TINY_ZIP, CD_AT + 42, "<I", 40),
    "comment length past EOF": patched(TINY_ZIP, EOCD_AT + 20, "<H", 1),
    "zip64 entry without a zip64 extra": patched(TINY_ZIP, CD_AT + 42, "<I", 0xFFFFFFFF),
}


@pytest.mark.parametrize("data", INCONSISTENT_ZIPS.values(), ids=INCONSISTENT_ZIPS.keys())
def test_inconsistent_zips_fall_back_to_full_file(data):
    assert zip_boundaries(io.BytesIO(data)) is None
    assert chunk_ranges(io.BytesIO(data)) == ("FullFile", [(0, len(data))])


def test_a_zip_of_more_entries_than_a_signature_should_hold_is_full_file():
    """78 bytes an entry: a 1 GiB file of 14 million tiny entries made a signature of 28 million chunks, minutes
    to build and a MessageJSON past the 16 MiB a client accepts. Past 65,535 entries a stream is FullFile."""

    def zip_of(entries: int) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for n in range(entries):
                archive.writestr(f"{n:x}", b"x")
        return out.getvalue()

    most = zip_of(MAX_ZIP_ENTRIES)
    scheme, ranges = chunk_ranges(io.BytesIO(most))
    assert scheme == "Zip" and len(ranges) == 2 * MAX_ZIP_ENTRIES + 1
    more = zip_of(MAX_ZIP_ENTRIES + 1)
    assert chunk_ranges(io.BytesIO(more)) == ("FullFile", [(0, len(more))])


def test_comment_holding_an_eocd_signature():
    comment = b"PK\x05\x06" + bytes(30)
    data = patched(TINY_ZIP, EOCD_AT + 20, "<H", len(comment)) + comment
    assert chunk_ranges(io.BytesIO(data)) == ("Zip", [(0, 35), (35, 5), (40, 35), (75, 5), (80, 124 + 34)])


def with_zip64_end_records(data):
    """The same archive with a zip64 EOCD record and locator, and the EOCD fields set to their sentinels."""
    eocd_at = data.rindex(b"PK\x05\x06")
    _, _, _, _, count, cd_size, cd_offset, _ = struct.unpack_from("<4sHHHHIIH", data, eocd_at)
    record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd_at, 1)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:eocd_at] + record + locator + eocd


def test_zip64_end_records():
    data = with_zip64_end_records(TINY_ZIP)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("b.txt") == b"world"
    expected = [(0, 35), (35, 5), (40, 35), (75, 5), (80, len(data) - 80)]
    assert chunk_ranges(io.BytesIO(data)) == ("Zip", expected)
    broken_locator = patched(data, len(data) - 22 - 20 + 8, "<Q", EOCD_AT + 1)
    assert zip_boundaries(io.BytesIO(broken_locator)) is None
    huge_offset = patched(data, len(data) - 22 - 20 + 8, "<Q", 2**64 - 1)
    assert zip_boundaries(io.BytesIO(huge_offset)) is None


# Zips written by Python's zipfile: stored and deflated, with and without data descriptors, empty entries,
# comments, zip64 records.


class Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors (flag bit 3)."""

    def __init__(self):
        self.buffer = io.BytesIO()

    def writable(self):
        return True

    def write(self, data):
        return self.buffer.write(data)

    def tell(self):
        raise OSError("unseekable")


zip_entries = st.lists(
    st.tuples(
        st.text("abcdefghij/._", min_size=1, max_size=12),
        st.just(b"") | st.binary(max_size=400) | st.binary(min_size=1, max_size=8).map(lambda b: b * 100),
        st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
        st.binary(max_size=10),
    ),
    max_size=6,
    unique_by=lambda entry: entry[0],
)


def build_zip(entries, comment, descriptors, zip64):
    target = Unseekable() if descriptors else io.BytesIO()
    limit = 1 if zip64 == "everywhere" else zipfile.ZIP64_LIMIT  # tiny limit: zip64 extras and end records
    with mock.patch.object(zipfile, "ZIP64_LIMIT", limit):
        with zipfile.ZipFile(target, "w") as archive:
            archive.comment = comment
            for name, content, method, entry_comment in entries:
                info = zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 6))
                info.compress_type = method
                info.comment = entry_comment
                with archive.open(info, "w", force_zip64=zip64 != "no") as handle:
                    handle.write(content)
    return (target.buffer if descriptors else target).getvalue()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# zipfile cannot read back an archive whose comment holds an EOCD signature (test_comment_holding_...).
@given(
    zip_entries,
    st.binary(max_size=30).filter(lambda c: b"PK\x05\x06" not in c),
    st.booleans(),
    st.sampled_from(["no", "local", "everywhere"]),
)
def test_zipfile_archives_chunk_at_entry_boundaries_and_reassemble(entries, comment, descriptors, zip64):
    data = build_zip(entries, comment, descriptors, zip64)
    scheme, ranges = chunk_ranges(io.BytesIO(data))
    if not entries:
        assert scheme == "FullFile"  # an archive with no entries has no local header at 0
        return
    assert scheme == "Zip"
    assert_tiles(ranges, len(data))
    starts = {offset: length for offset, length in ranges}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        assert ranges[-1][0] == archive.start_dir
        has_data = [info.compress_size > 0 or bool(info.flag_bits & 8) for info in infos]
        assert len(ranges) == 1 + len(infos) + sum(has_data)
        next_starts = [info.header_offset for info in infos[1:]] + [archive.start_dir]
        for info, next_start, (_, content, _, _) in zip(infos, next_starts, entries):
            assert data[info.header_offset : info.header_offset + 4] == b"PK\x03\x04"
            data_offset = info.header_offset + starts[info.header_offset]
            if info.compress_size > 0 or info.flag_bits & 8:
                assert data_offset + starts[data_offset] == next_start
                assert_entry_data(data[data_offset:next_start], info, content)
            else:  # an empty entry: its header chunk runs up to the next entry or the CD
                assert data_offset == next_start

    signature = signature_of(io.BytesIO(data))
    assert [c.length for c in signature.chunks] == [length for _, length in ranges]
    pieces = {chunk_id(data[o : o + n]): data[o : o + n] for o, n in ranges}
    out = io.BytesIO()
    reassemble(signature, pieces, out)
    assert out.getvalue() == data


def assert_entry_data(chunk, info, content):
    """An entry's data chunk is its compressed bytes, then its data descriptor if it has one."""
    if info.compress_type == zipfile.ZIP_DEFLATED:
        inflater = zlib.decompressobj(-15)
        assert inflater.decompress(chunk) == content
        descriptor = inflater.unused_data
    else:
        assert chunk[: len(content)] == content
        descriptor = chunk[len(content) :]
    if info.flag_bits & 8:
        assert descriptor[:4] == b"PK\x07\x08" and len(descriptor) in (16, 24)
    else:
        assert descriptor == b""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zip_entries, st.booleans(), st.sampled_from(["no", "everywhere"]), st.data())
def test_damaged_zips_never_raise(entries, descriptors, zip64, data):
    archive = bytearray(build_zip(entries, b"", descriptors, zip64))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if not archive:
            break
        # Damage the end records and central directory more often than the payloads.
        tail_bias = data.draw(st.booleans(), label="tail")
        low = max(0, len(archive) - 120) if tail_bias else 0
        position = data.draw(st.integers(low, len(archive) - 1), label="position")
        action = data.draw(st.sampled_from(["flip", "set", "delete", "insert"]), label="action")
        if action == "flip":
            archive[position] ^= data.draw(st.integers(1, 255), label="xor")
        elif action == "set":
            words = [b"\xff\xff\xff\xff", b"\0\0\0\0", b"PK\x03\x04", b"PK\x05\x06", b"PK\x06\x07"]
            archive[position : position + 4] = data.draw(st.sampled_from(words), label="word")
        elif action == "delete":
            del archive[position : position + data.draw(st.integers(1, 30), label="count")]
        else:
            archive[position:position] = data.draw(st.binary(min_size=1, max_size=30), label="bytes")
    stream = bytes(archive)
    scheme, ranges = chunk_ranges(io.BytesIO(stream))
    assert scheme in ("Zip", "FullFile")
    assert_tiles(ranges, len(stream))
