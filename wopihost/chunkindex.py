"""Where the chunks of a framed stream lie (docs/cspp-plus.md §1.3, §1.5): found as the stream's bytes go by.

A PutChunkedFile body is decoded when it arrives. An upload session's stream is decoded piece by piece, while
each UpdateUploadSession body is being stored: the chunks its frames complete, with their places in the stream
and whether each payload hashes to its ChunkId, are recorded in the database in the transaction that keeps the
piece, with where decoding stopped (the start of a frame the piece leaves unfinished). So a commit reads the
index, not the session's bytes, and takes as long whatever the session's size: any node can serve any piece or
the commit, since nothing stays in one node's memory between requests. (A session of more than MAX_BLOBS pieces
is the exception: the commit first copies them into that many, sessions.merge_pieces. Every place here counts
from the start of the stream, not of a piece, so the index holds for the copies.)

The next piece resumes at that frame boundary, reading the unfinished frame's first part back from the store:
at most one frame. Past MAX_CARRY (a chunk larger than any real client sends), or past MAX_BLOBS pieces holding
one frame (a client sending tiny pieces, each of which would open them all and read them back), pieces stop
decoding, and the commit decodes the rest; the result is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .cspp.chunkid import ChunkHasher, encode_chunk_id
from .cspp.frames import ChunkData, ChunkEnd, ChunkRangeStart, ChunkStart, FrameDecoder, FrameError, MessageJSON
from .errors import bad_request
from .extents import MAX_BLOBS, Extent, Extents
from .models import SessionChunk, UploadPiece, UploadSession
from .storage import Opened, Readable, Storage

MAX_CARRY = 16 << 20  # the most of an unfinished frame a piece reads back to resume decoding
# The most Chunk frames a body or a session may hold. Each found chunk is kept (in memory, and a row for a session)
# until the commit, and an empty chunk's frame is 32 bytes: without a bound, a body or session of the size
# allowed would take gigabytes of memory. A save's MessageJSON (at most 16 MiB) cannot name as many chunks (a
# ChunkSignature takes at least 49 of its bytes), so no frame past the bound could be of use.
MAX_CHUNK_FRAMES = 1 << 19


@dataclass(frozen=True)
class FoundChunk:
    chunk_id: str
    start: int  # where the payload starts in the stream
    size: int
    matches: bool  # the payload hashes to chunk_id


class ChunkScanner:
    """A frame decoder that hashes each chunk's payload as it goes by: the chunks (and the MessageJSON) of the
    frames fed so far. FrameError on a framing error, or on a ChunkRange frame, which cannot be uploaded."""

    def __init__(self, mode: Literal["body", "session"], max_payload: int, offset: int = 0, frames: int = 0):
        self.decoder = FrameDecoder(mode, max_payload_size=max_payload, offset=offset, frames=frames)
        self.chunks: list[FoundChunk] = []
        self.message: Any = None
        self._chunk: tuple[str, int, int, ChunkHasher] | None = None  # the chunk whose payload is arriving
        self._chunk_frames = frames  # those before `offset`: a resumed stream is a session's, Chunk frames only

    def feed(self, data) -> None:
        for event in self.decoder.feed(data):
            if isinstance(event, ChunkData):
                assert self._chunk is not None  # the decoder yields a chunk's data only after its ChunkStart
                self._chunk[3].update(event.data)
            elif isinstance(event, ChunkStart):
                self._chunk_frames += 1
                if self._chunk_frames > MAX_CHUNK_FRAMES:
                    raise FrameError(f"more than {MAX_CHUNK_FRAMES} Chunk frames, more than a save can name")
                self._chunk = (encode_chunk_id(event.chunk_id), event.stream_offset, event.size, ChunkHasher())
            elif isinstance(event, ChunkEnd):
                assert self._chunk is not None  # likewise its ChunkEnd
                chunk_id, start, size, hasher = self._chunk
                self.chunks.append(FoundChunk(chunk_id, start, size, hasher.chunk_id() == chunk_id))
                self._chunk = None
            elif isinstance(event, MessageJSON):
                self.message = event.value
            elif isinstance(event, ChunkRangeStart):
                raise FrameError("a ChunkRange frame cannot be uploaded; send Chunk frames")

    def close(self) -> None:
        self.decoder.close()


@dataclass
class Decoded:
    message: Any
    chunks: dict[str, Extents]  # ChunkId -> where its payload lies (the last frame's, if one comes twice)
    mismatched: list[str]  # ChunkIds whose payload does not hash to them


def _decoded(message: Any, chunks: Iterable[FoundChunk], extents: Extents) -> Decoded:
    found = list(chunks)
    return Decoded(
        message,
        {chunk.chunk_id: extents.slice(chunk.start, chunk.size) for chunk in found},
        [chunk.chunk_id for chunk in found if not chunk.matches],
    )


def _scan(scanner: ChunkScanner, opened: Opened, extents: Extents, what: str) -> ChunkScanner:
    """`scanner` fed `extents` to their end; 400 naming `what` on a framing error, or a stream stopping mid-frame."""
    try:
        for piece in opened.pieces(extents):
            scanner.feed(piece)
        scanner.close()
    except FrameError as exc:
        raise bad_request(f"the {what} frames cannot be read: {exc.reason}") from None
    return scanner


def decode_body(opened: Opened, extents: Extents, max_payload: int) -> Decoded:
    """Decode a framed request body lying in `extents`, hashing each chunk; 400 on any framing error."""
    scanner = _scan(ChunkScanner("body", max_payload), opened, extents, "request")
    return _decoded(scanner.message, scanner.chunks, extents)


@dataclass(frozen=True)
class SessionIndex:
    """What a session's pieces recorded as they arrived: its stream is decoded up to `indexed`, where
    `frames` frames carrying `chunks` end; `error` says why it cannot be read, if known."""

    indexed: int
    frames: int
    error: str | None
    chunks: list[FoundChunk]


def recorded(s: Session, session: UploadSession) -> SessionIndex:
    # Only the chunks that end by `indexed` as the session row said: under READ COMMITTED a piece kept since that
    # row was read may have added rows of its own (all ending past it, their headers being past it), for bytes this
    # commit does not take (it answers 409: the session grew).
    ends_in_time = SessionChunk.start + SessionChunk.size <= session.indexed
    query = sa.select(SessionChunk).where(SessionChunk.token == session.token, ends_in_time)
    rows = s.scalars(query.order_by(SessionChunk.start))
    chunks = [FoundChunk(row.chunk_id, row.start, row.size, row.matches) for row in rows]
    return SessionIndex(session.indexed, session.indexed_frames, session.frame_error, chunks)


def session_chunks(index: SessionIndex, opened: Opened, stream: Extents, max_payload: int) -> Decoded:
    """The chunks of a session's whole stream (`stream`, its pieces all in `opened`): those its pieces recorded,
    and those of whatever they left to decode (nothing, unless a frame was longer than MAX_CARRY). 400 if the
    frames cannot be read, or the stream stops inside a frame."""
    if index.error:
        raise bad_request(f"the upload session frames cannot be read: {index.error}")
    rest = stream.slice(index.indexed, stream.length - index.indexed)
    scanner = _scan(ChunkScanner("session", max_payload, index.indexed, index.frames), opened, rest, "upload session")
    return _decoded(None, index.chunks + scanner.chunks, stream)


class PieceIndexer:
    """Indexes one UpdateUploadSession piece as it is stored (an UploadSessions.append observer).

    `start` (before the body is read) reads back the frame the earlier pieces left unfinished; `watch` wraps the
    body so that every byte stored is decoded on its way; `record`, in the transaction that keeps the piece,
    stores the chunks found and where decoding stopped. A framing error is recorded, not raised: the piece is
    kept, and the commit answers 400 with the reason, as it would had it decoded the stream itself.
    """

    def __init__(self, blobs: Storage, session: Any, pieces: list[UploadPiece], max_payload: int):
        self._blobs, self._token = blobs, session.token
        self._pieces = pieces  # the session's pieces that hold the unfinished frame, if any
        self._scanner = ChunkScanner("session", max_payload, session.indexed, session.indexed_frames)
        self._error: str | None = None

    def start(self) -> None:
        if not self._pieces:
            return
        held = Extents(Extent(piece.blob, 0, piece.length) for piece in self._pieces)
        skip = self._scanner.decoder.bytes_fed - self._pieces[0].offset  # where the frame starts in the first
        with self._blobs.open() as opened:
            for piece in self._pieces:  # whole blobs: their sizes are known
                opened.add(piece.blob, piece.length)
            for data in opened.pieces(held.slice(skip, held.length - skip)):
                self._feed(data)

    def watch(self, body: Readable) -> Readable:
        return _Tee(body, self._feed)

    def _feed(self, data) -> None:
        if self._error is None:
            try:
                self._scanner.feed(data)
            except FrameError as exc:
                self._error = exc.reason

    def record(self, s: Session) -> None:
        decoder = self._scanner.decoder
        s.execute(
            sa.update(UploadSession)
            .where(UploadSession.token == self._token)
            .values(indexed=decoder.complete_offset, indexed_frames=decoder.complete_frames, frame_error=self._error)
        )
        if self._scanner.chunks:
            s.execute(
                sa.insert(SessionChunk),
                [
                    {
                        "token": self._token,
                        "start": c.start,
                        "chunk_id": c.chunk_id,
                        "size": c.size,
                        "matches": c.matches,
                    }
                    for c in self._scanner.chunks
                ],
            )


def indexer_for(s: Session, blobs: Storage, session: Any, max_payload: int) -> PieceIndexer | None:
    """The indexer of the next piece of `session` (a state row), or None when pieces are no longer decoded (a
    framing error is recorded, or the unfinished frame is longer than MAX_CARRY or held by more than MAX_BLOBS
    pieces: each piece opens them all to read it back)."""
    if session.frame_error or session.received - session.indexed > MAX_CARRY:
        return None
    # only the pieces that hold the unfinished frame: reading every piece of the session would grow with it
    holding = UploadPiece.offset + UploadPiece.length > session.indexed
    query = sa.select(UploadPiece).where(UploadPiece.token == session.token, holding).order_by(UploadPiece.offset)
    pieces = list(s.scalars(query.limit(MAX_BLOBS + 1)))
    return PieceIndexer(blobs, session, pieces, max_payload) if len(pieces) <= MAX_BLOBS else None


class _Tee:
    """A body that hands every byte read from it to `see` as well."""

    def __init__(self, body: Readable, see: Callable[[memoryview], None]):
        self.body, self.see = body, see
        self.length = getattr(body, "length", None)  # what a store checks for room before reading

    def readinto(self, buffer: memoryview, /) -> int:
        n = self.body.readinto(buffer)
        if n:
            self.see(memoryview(buffer)[:n])
        return n
