"""The client side of the CSPP Plus wire format, for tests, benchmarks and test rigs: bodies in, bodies out.

Pure functions over bytes; they build what Office sends and read what a host answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .chunkid import encode_chunk_id
from .frames import (
    END_FRAME,
    ChunkData,
    ChunkEnd,
    ChunkRangeStart,
    ChunkStart,
    FrameDecoder,
    MessageJSON,
    chunk_frame,
    message_frame,
)
from .signatures import Signature


def chunk_frames(chunks: Iterable[tuple[str, bytes]]) -> bytes:
    """Chunk frames for (ChunkId, payload) pairs: an upload-session stream, or the middle of a body."""
    return b"".join(piece for chunk_id, payload in chunks for piece in chunk_frame(chunk_id, payload))


def rechunk(parts: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The concatenation of `parts`, cut into pieces of `size` bytes (the last may be shorter).

    How a client sends a long upload-session stream: UpdateUploadSession pieces cut frames anywhere.
    """
    buffer = bytearray()
    for part in parts:
        view = memoryview(part)
        while view:
            take = min(size - len(buffer), len(view))
            buffer += view[:take]
            view = view[take:]
            if len(buffer) == size:
                yield bytes(buffer)
                buffer = bytearray()
    if buffer:
        yield bytes(buffer)


def put_chunked_body(
    signatures: dict[str, Signature],
    chunks: Iterable[tuple[str, bytes]] = (),
    properties: Iterable[dict] = (),
    session_token: str | None = None,
) -> bytes:
    """A PutChunkedFile request body."""
    message = {
        "ContentProperties": list(properties),
        "Signatures": [signature.to_json(stream_id) for stream_id, signature in signatures.items()],
        "UploadSessionTokenToCommit": session_token,
    }
    return message_frame(message) + chunk_frames(chunks) + END_FRAME


def request_body(message: dict) -> bytes:
    """A GetChunkedFile or GetChunks request body: the MessageJSON and the EndFrame."""
    return message_frame(message) + END_FRAME


def read_response(body: bytes) -> tuple[Any, list[tuple[str, dict, bytes]]]:
    """A framed response: its MessageJSON and, per chunk frame, (ChunkId, range info, payload)."""
    decoder = FrameDecoder("body")
    message: Any = None
    frames: list[tuple[str, dict, bytes]] = []
    current: tuple[str, dict] | None = None
    data = bytearray()
    for event in decoder.feed(body):
        if isinstance(event, MessageJSON):
            message = event.value
        elif isinstance(event, ChunkStart):
            current, data = (encode_chunk_id(event.chunk_id), {}), bytearray()
        elif isinstance(event, ChunkRangeStart):
            current = (
                encode_chunk_id(event.chunk_id),
                {"offset": event.offset, "length": event.length, "end_of_chunk": event.end_of_chunk},
            )
            data = bytearray()
        elif isinstance(event, ChunkData):
            data += event.data
        elif isinstance(event, ChunkEnd):
            assert current is not None  # the decoder ends only a chunk it started
            frames.append((*current, bytes(data)))
    decoder.close()
    return message, frames
