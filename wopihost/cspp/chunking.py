"""Chunking a stream (docs/cspp-plus.md §3.1-3.3, §5.6-5.7): Zip by the boundary-set algorithm, else FullFile.

Zip chunks are, for each local entry in file order, its local header ``[lfh, data)`` and its data
``[data, next boundary)``, then the central directory with whatever follows it ``[cd_offset, EOF)``. That is
the boundary set {every lfh offset, every data offset, cd_offset}, sorted, with empty ranges dropped: a data
descriptor joins its entry's data chunk and an empty entry gives no data chunk. It reproduces Microsoft's
boundaries on every reference Office file.

Only the end-of-central-directory records, the central directory and the local headers are read, from a
seekable binary file object that the caller owns. Anything that is not a consistent single-disk zip (bytes
before the first entry or after the EOCD comment, overlaps, offsets outside the file, more than MAX_ZIP_ENTRIES
entries ...) is FullFile: one chunk for the whole stream. An empty stream is one empty chunk, scheme FullFile
(docs/cspp-plus.md §5.6).
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from .chunkid import ChunkHasher
from .signatures import FULL_FILE, ZIP, ChunkSignature, Signature, read_pieces

_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD64_LOCATOR = struct.Struct("<4sIQI")
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL_HEADER = struct.Struct("<4s4xHH8xIIHHHH6xI")  # flags, method, sizes, lengths, disk, lfh offset
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, name length, extra length
_EXTRA_HEADER = struct.Struct("<HH")

_EOCD_SIG = b"PK\x05\x06"
_EOCD64_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64_SIG = b"PK\x06\x06"
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL_SIG = b"PK\x03\x04"
_ZIP64_EXTRA_ID = 0x0001
_MAX_COMMENT = 0xFFFF
# The most entries a stream chunked as Zip may have: a zip's own limit without zip64, far past Office's files (a
# few hundred to a few thousand). Each gives up to two chunks, some 50 bytes each in a signature's JSON: past it, a
# crafted file of tiny entries (78 bytes each) would make a signature of millions of chunks, costly to build and
# larger than the 16 MiB MessageJSON a client (or this host) accepts. Such a stream is FullFile.
MAX_ZIP_ENTRIES = 0xFFFF


class _NotZip(Exception):
    """Raised inside the zip reader to fall back to FullFile."""


def chunk_ranges(fileobj: BinaryIO, size: int | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The chunking scheme of the stream in ``fileobj`` and its chunks as (offset, length), in order.

    ``size`` is the stream's length if the caller knows it; otherwise the file's end is sought.
    """
    if size is None:
        size = fileobj.seek(0, os.SEEK_END)
    if size == 0:
        return FULL_FILE, [(0, 0)]
    starts = zip_boundaries(fileobj, size)
    if starts is None:
        return FULL_FILE, [(0, size)]
    return ZIP, [(start, end - start) for start, end in zip(starts, starts[1:] + [size])]


def zip_boundaries(fileobj: BinaryIO, size: int | None = None) -> list[int] | None:
    """The sorted start offsets of the Zip chunks of ``fileobj``, or None if it is not a consistent zip."""
    if size is None:
        size = fileobj.seek(0, os.SEEK_END)
    try:
        cd_offset, cd_size, count = _read_end_records(fileobj, size)
        if count > MAX_ZIP_ENTRIES:
            raise _NotZip
        entries = _read_central_directory(fileobj, cd_offset, cd_size, count)
        return _boundaries(fileobj, entries, cd_offset)
    except _NotZip:
        return None


def signature_of(fileobj: BinaryIO, size: int | None = None) -> Signature:
    """Chunk the stream in ``fileobj`` and hash every chunk, reading the bytes once, in pieces."""
    scheme, ranges = chunk_ranges(fileobj, size)
    fileobj.seek(0)
    chunks = []
    for offset, length in ranges:
        hasher = ChunkHasher()
        got = 0
        for piece in read_pieces(fileobj, length):
            hasher.update(piece)
            got += len(piece)
        if got != length:
            raise ValueError(f"the file ends at byte {offset + got}, inside chunk [{offset}, {offset + length})")
        chunks.append(ChunkSignature(hasher.chunk_id(), length))
    return Signature(scheme, tuple(chunks))


def _read_at(fileobj: BinaryIO, offset: int, length: int) -> bytes:
    fileobj.seek(offset)
    data = fileobj.read(length)
    if len(data) != length:
        raise _NotZip
    return data


def _read_end_records(fileobj: BinaryIO, size: int) -> tuple[int, int, int]:
    """(cd_offset, cd_size, entry count) from the EOCD and any zip64 records.

    The central directory must end exactly where the (zip64) end records begin: this is what rejects bytes
    prepended to the archive and offsets that point outside it.
    """
    if size < _EOCD.size:
        raise _NotZip
    tail_len = min(size, _EOCD.size + _MAX_COMMENT)
    tail_start = size - tail_len
    tail = _read_at(fileobj, tail_start, tail_len)
    # The EOCD is the last signature whose comment ends exactly at EOF; a signature inside the comment
    # almost never has a comment length that fits as well.
    pos = tail.rfind(_EOCD_SIG, 0, tail_len - _EOCD.size + 4)
    while pos >= 0:
        (comment_len,) = struct.unpack_from("<H", tail, pos + 20)
        if pos + _EOCD.size + comment_len == tail_len:
            break
        pos = tail.rfind(_EOCD_SIG, 0, pos + 3)
    else:
        raise _NotZip
    _, disk, cd_disk, disk_count, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, pos)
    if disk or cd_disk or disk_count != count:
        raise _NotZip
    eocd_at = tail_start + pos

    locator_at = eocd_at - _EOCD64_LOCATOR.size
    locator = _read_at(fileobj, locator_at, _EOCD64_LOCATOR.size) if locator_at >= 0 else b""
    if not locator.startswith(_EOCD64_LOCATOR_SIG):
        if cd_offset + cd_size != eocd_at:
            raise _NotZip
        return cd_offset, cd_size, count
    _, eocd64_disk, eocd64_at, disks = _EOCD64_LOCATOR.unpack(locator)
    if eocd64_disk or disks != 1 or eocd64_at + _EOCD64.size > locator_at:
        raise _NotZip
    sig, record_size, _, _, disk, cd_disk, disk_count, count, cd_size, cd_offset = _EOCD64.unpack(
        _read_at(fileobj, eocd64_at, _EOCD64.size)
    )
    if sig != _EOCD64_SIG or eocd64_at + 12 + record_size != locator_at:
        raise _NotZip
    if disk or cd_disk or disk_count != count or cd_offset + cd_size != eocd64_at:
        raise _NotZip
    return cd_offset, cd_size, count


def _read_central_directory(fileobj: BinaryIO, cd_offset: int, cd_size: int, count: int) -> list[tuple[int, int]]:
    """(lfh_offset, compressed_size) of each central-directory entry."""
    entries = []
    fileobj.seek(cd_offset)
    left = cd_size
    for _ in range(count):
        if left < _CENTRAL_HEADER.size:
            raise _NotZip
        header = fileobj.read(_CENTRAL_HEADER.size)
        if len(header) != _CENTRAL_HEADER.size:
            raise _NotZip
        sig, _, _, compressed, uncompressed, name_len, extra_len, comment_len, disk, lfh_offset = (
            _CENTRAL_HEADER.unpack(header)
        )
        variable_len = name_len + extra_len + comment_len
        left -= _CENTRAL_HEADER.size + variable_len
        if sig != _CENTRAL_SIG or left < 0:
            raise _NotZip
        variable = fileobj.read(variable_len)
        if len(variable) != variable_len:
            raise _NotZip
        if 0xFFFFFFFF in (compressed, uncompressed, lfh_offset) or disk == 0xFFFF:
            compressed, lfh_offset, disk = _apply_zip64_extra(
                variable[name_len : name_len + extra_len], compressed, uncompressed, lfh_offset, disk
            )
        if disk:
            raise _NotZip
        entries.append((lfh_offset, compressed))
    if left:
        raise _NotZip
    return entries


def _apply_zip64_extra(
    extra: bytes, compressed: int, uncompressed: int, lfh_offset: int, disk: int
) -> tuple[int, int, int]:
    """Replace the 32-bit fields set to 0xFFFFFFFF (and a 0xFFFF disk) by the zip64 extra field's values."""
    pos = 0
    while pos + _EXTRA_HEADER.size <= len(extra):
        header_id, data_len = _EXTRA_HEADER.unpack_from(extra, pos)
        pos += _EXTRA_HEADER.size
        if header_id == _ZIP64_EXTRA_ID:
            data = extra[pos : pos + data_len]
            wanted = [uncompressed == 0xFFFFFFFF, compressed == 0xFFFFFFFF, lfh_offset == 0xFFFFFFFF]
            need = 8 * sum(wanted) + (4 if disk == 0xFFFF else 0)
            if len(data) < need:
                raise _NotZip
            values = list(struct.unpack_from(f"<{sum(wanted)}Q", data))
            if wanted[0]:
                values.pop(0)
            if wanted[1]:
                compressed = values.pop(0)
            if wanted[2]:
                lfh_offset = values.pop(0)
            if disk == 0xFFFF:
                (disk,) = struct.unpack_from("<I", data, 8 * sum(wanted))
            return compressed, lfh_offset, disk
        pos += data_len
    raise _NotZip


def _boundaries(fileobj: BinaryIO, entries: list[tuple[int, int]], cd_offset: int) -> list[int]:
    entries.sort()
    # Every local header must lie before the CD, and the first at 0: no bytes before the first entry.
    if not entries or entries[0][0] != 0 or entries[-1][0] + _LOCAL_HEADER.size > cd_offset:
        raise _NotZip
    starts = []
    for index, (lfh_offset, compressed) in enumerate(entries):
        next_start = entries[index + 1][0] if index + 1 < len(entries) else cd_offset
        if lfh_offset + _LOCAL_HEADER.size > next_start:
            raise _NotZip
        sig, name_len, extra_len = _LOCAL_HEADER.unpack(_read_at(fileobj, lfh_offset, _LOCAL_HEADER.size))
        data_offset = lfh_offset + _LOCAL_HEADER.size + name_len + extra_len
        if sig != _LOCAL_SIG or data_offset + compressed > next_start:
            raise _NotZip
        starts.append(lfh_offset)
        if data_offset < next_start:
            starts.append(data_offset)
    starts.append(cd_offset)
    return starts
