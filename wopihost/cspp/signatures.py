"""Stream signatures (docs/cspp-plus.md §3.5), the delta a client needs, and reassembly of a stream from its
chunks (§3.3).

A signature is the ordered list of (ChunkId, Length) of one stream plus its chunking scheme. On the wire::

    {"StreamId": "MainContent", "ChunkingScheme": "Zip",
     "ChunkSignatures": [{"ChunkId": "<24-char base64>", "Length": 569}, ...]}

The stream is the concatenation of its chunks in signature order; a ChunkId may appear more than once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from .chunkid import ChunkHasher, ChunkIdError, chunk_id, decode_chunk_id

ZIP = "Zip"
FULL_FILE = "FullFile"
SCHEMES = (ZIP, FULL_FILE)

PIECE_SIZE = 1 << 20
_MAX_LENGTH = (1 << 64) - 1


class SignatureError(ValueError):
    """A signature JSON object that does not have the wire shape of docs/cspp-plus.md §3.5."""


@dataclass(frozen=True, slots=True)
class ChunkSignature:
    chunk_id: str  # the Base64 ChunkId
    length: int

    def to_json(self) -> dict[str, Any]:
        return {"ChunkId": self.chunk_id, "Length": self.length}

    @classmethod
    def from_json(cls, obj: Any) -> ChunkSignature:
        if not isinstance(obj, dict):
            raise SignatureError("a ChunkSignature must be an object")
        raw_id = _field(obj, "ChunkId", "ChunkSignature")
        try:
            decode_chunk_id(raw_id)
        except ChunkIdError as error:
            raise SignatureError(str(error)) from None
        length = _field(obj, "Length", "ChunkSignature")
        if type(length) is not int or not 0 <= length <= _MAX_LENGTH:
            raise SignatureError(f"ChunkSignature Length must be an integer from 0 to 2^64-1, not {length!r}")
        return cls(raw_id, length)


@dataclass(frozen=True, slots=True)
class Signature:
    scheme: str  # "Zip" or "FullFile"
    chunks: tuple[ChunkSignature, ...]

    @property
    def length(self) -> int:
        """The stream's total length."""
        return sum(chunk.length for chunk in self.chunks)

    def spans(self) -> Iterator[tuple[int, ChunkSignature]]:
        """Each chunk with its start offset in the stream, in order."""
        offset = 0
        for chunk in self.chunks:
            yield offset, chunk
            offset += chunk.length

    def to_json(self, stream_id: str) -> dict[str, Any]:
        return {
            "StreamId": stream_id,
            "ChunkingScheme": self.scheme,
            "ChunkSignatures": [chunk.to_json() for chunk in self.chunks],
        }

    @classmethod
    def from_json(cls, obj: Any) -> tuple[str, Signature]:
        """Parse one entry of a ``Signatures`` array; returns its StreamId and the signature."""
        if not isinstance(obj, dict):
            raise SignatureError("a signature must be an object")
        stream_id = _field(obj, "StreamId", "signature")
        if not isinstance(stream_id, str) or not stream_id:
            raise SignatureError("StreamId must be a non-empty string")
        scheme = _field(obj, "ChunkingScheme", "signature")
        if scheme not in SCHEMES:
            raise SignatureError(f"ChunkingScheme must be Zip or FullFile, not {str(scheme)[:40]!r}")
        chunks = _field(obj, "ChunkSignatures", "signature")
        if not isinstance(chunks, list):
            raise SignatureError("ChunkSignatures must be an array")
        return stream_id, cls(scheme, tuple(ChunkSignature.from_json(chunk) for chunk in chunks))


def _field(obj: dict[str, Any], name: str, what: str) -> Any:
    try:
        return obj[name]
    except KeyError:
        raise SignatureError(f"{what} has no {name}") from None


def chunks_to_send(signature: Signature, known_ids: Collection[str]) -> list[tuple[int, ChunkSignature]]:
    """The chunks of ``signature`` not in ``known_ids``, each distinct ChunkId once, first appearance first.

    Each comes with its offset in the stream (that of its first appearance), so the bytes can be read there.
    """
    seen = set(known_ids)
    needed = []
    for offset, chunk in signature.spans():
        if chunk.chunk_id not in seen:
            seen.add(chunk.chunk_id)
            needed.append((offset, chunk))
    return needed


# Reassembly

ChunkBytes = bytes | bytearray | memoryview | BinaryIO
ChunkSource = Mapping[str, ChunkBytes] | Callable[[str], ChunkBytes | None]


class ReassemblyError(ValueError):
    """A stream cannot be rebuilt from its chunks; ``reason`` is a short line fit for X-WOPI-FailureReason."""

    def __init__(self, reason: str, chunk_id: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.chunk_id = chunk_id


class MissingChunkError(ReassemblyError):
    """The source has no bytes for a ChunkId of the signature."""


class ChunkMismatchError(ReassemblyError):
    """A chunk's bytes do not have the length or the hash its signature gives."""


def read_pieces(fileobj: BinaryIO, length: int, offset: int | None = None) -> Iterator[bytes]:
    """Up to ``length`` bytes of ``fileobj`` in pieces of at most PIECE_SIZE, stopping early at EOF.

    Reading starts at ``offset`` if given (the seek happens when iteration starts, so several such
    generators over one file object may be built before any is consumed), else at the current position.
    """
    if offset is not None:
        fileobj.seek(offset)
    while length > 0:
        piece = fileobj.read(min(length, PIECE_SIZE))
        if not piece:
            return
        length -= len(piece)
        yield piece


def reassemble(
    signature: Signature,
    source: ChunkSource,
    out: BinaryIO,
    *,
    verify_hashes: bool = True,
) -> int:
    """Write the stream that ``signature`` describes to ``out``, chunk by chunk; returns the bytes written.

    ``source`` maps a ChunkId string to the chunk's bytes (a mapping, or a callable returning None when it
    has no such chunk). The bytes are a bytes-like object holding exactly the chunk, or a seekable binary
    file object from whose current position ``length`` bytes are read in pieces; its position is restored
    afterwards, so a ChunkId that appears several times reads the same bytes each time.

    Every chunk's length is checked and, unless ``verify_hashes`` is false, its ChunkId. On an error, ``out``
    already holds the chunks before the failing one (and possibly part of it): write to a temporary file and
    discard it on failure.
    """
    lookup = source.get if isinstance(source, Mapping) else source
    written = 0
    for chunk in signature.chunks:
        data = lookup(chunk.chunk_id)
        if data is None:
            raise MissingChunkError(f"chunk {chunk.chunk_id} is not available", chunk.chunk_id)
        if isinstance(data, (bytes, bytearray, memoryview)):
            written += _write_buffer(chunk, data, out, verify_hashes)
        else:
            written += _write_file(chunk, data, out, verify_hashes)
    return written


def _write_buffer(
    chunk: ChunkSignature,
    data: bytes | bytearray | memoryview,
    out: BinaryIO,
    verify: bool,
) -> int:
    size = memoryview(data).nbytes
    if size != chunk.length:
        raise ChunkMismatchError(
            f"chunk {chunk.chunk_id} has {size} bytes, its signature says {chunk.length}", chunk.chunk_id
        )
    if verify and chunk_id(data) != chunk.chunk_id:
        raise ChunkMismatchError(f"chunk {chunk.chunk_id} does not hash to its ChunkId", chunk.chunk_id)
    out.write(data)
    return size


def _write_file(chunk: ChunkSignature, fileobj: BinaryIO, out: BinaryIO, verify: bool) -> int:
    start = fileobj.tell()
    hasher = ChunkHasher() if verify else None
    size = 0
    for piece in read_pieces(fileobj, chunk.length):
        size += len(piece)
        if hasher is not None:
            hasher.update(piece)
        out.write(piece)
    fileobj.seek(start)
    if size != chunk.length:
        raise ChunkMismatchError(
            f"chunk {chunk.chunk_id} has only {size} bytes, its signature says {chunk.length}", chunk.chunk_id
        )
    if hasher is not None and hasher.chunk_id() != chunk.chunk_id:
        raise ChunkMismatchError(f"chunk {chunk.chunk_id} does not hash to its ChunkId", chunk.chunk_id)
    return size
