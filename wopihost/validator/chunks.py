"""CSPP Plus bodies as the validator writes and reads them: GetChunkedFile and PutChunkedFile requests
built from a test's content streams, and a GetChunkedFile response taken apart for the frames check.

A stream is given in the definitions either as text (FullFile chunking: one chunk holding the UTF-8 text,
none when it is empty) or as a pre-chunked Zip resource. A PutChunkedFile names every chunk of the new
content in its signatures but carries only the "delta": chunks not in the content the host is known to
have. Keys are written in the order .NET's DataContractJsonSerializer writes them (alphabetical); the frame
codec is wopihost's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cspp.chunkid import chunk_id, encode_chunk_id
from ..cspp.frames import (
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
from .definitions import Request
from .resources import Resources


class BodyError(ValueError):
    """The request's definition cannot make a body (the validator throws while building it)."""


def stream_chunks(resources: Resources, scheme: str, text: str | None, resource_id: str | None) -> list[bytes]:
    """The chunks of one stream, in order."""
    if scheme == "Zip":
        return resources.zip_chunks(resource_id)
    data = (text or "").encode("utf-8")
    return [data] if data else []


def _unique(chunks: list[bytes]) -> dict[str, bytes]:
    """ChunkId -> chunk, in first-seen order (the validator's blob dictionaries)."""
    found: dict[str, bytes] = {}
    for chunk in chunks:
        found.setdefault(chunk_id(chunk), chunk)
    return found


def get_chunked_file_body(request: Request, resources: Resources) -> bytes:
    if not request.content_filters:
        raise BodyError("GetChunkedFile needs ContentFilters")
    filters = []
    for item in request.content_filters:
        known = _unique(stream_chunks(resources, item.scheme, item.existing_content, item.existing_resource_id))
        filters.append(
            {
                "AlreadyKnownChunks": list(known),
                "ChunkingScheme": item.scheme,
                "ChunksToReturn": item.chunks_to_return,
                "StreamId": item.stream_id,
            }
        )
    message = {"ContentFilters": filters, "ContentPropertiesToReturn": list(request.content_properties_to_return or ())}
    return message_frame(message) + END_FRAME


def put_chunked_file_body(request: Request, resources: Resources) -> bytes:
    if not request.content_streams:
        raise BodyError("PutChunkedFile needs ContentStreams")
    signatures: list[dict] = []
    delta: dict[str, bytes] = {}
    for stream in request.content_streams:
        new = stream_chunks(resources, stream.scheme, stream.new_content, stream.new_resource_id)
        known = _unique(
            stream_chunks(resources, stream.scheme, stream.last_known_content, stream.last_known_resource_id)
        )
        chunk_signatures = []
        for chunk in new:
            cid = chunk_id(chunk)
            chunk_signatures.append({"ChunkId": cid, "Length": len(chunk)})
            if cid not in known:
                delta.setdefault(cid, chunk)
        signatures.append(
            {"ChunkSignatures": chunk_signatures, "ChunkingScheme": stream.scheme, "StreamId": stream.stream_id}
        )
    properties = [
        {"Name": p.name, "Retention": p.retention, "Value": p.value} for p in request.content_properties or ()
    ]
    message = {
        "ContentProperties": properties,
        "Signatures": signatures,
        "UploadSessionTokenToCommit": request.upload_session_token,
    }
    frames = b"".join(piece for cid, chunk in delta.items() for piece in chunk_frame(cid, chunk))
    return message_frame(message) + frames + END_FRAME


@dataclass
class ChunkFrame:
    chunk_id: str  # from the extended header
    payload: bytes


@dataclass
class ParsedBody:
    messages: list  # the MessageJSON values
    chunks: list[ChunkFrame]  # Chunk frames; ChunkRange frames are not kept, as the validator ignores them


def read_body(body: bytes) -> ParsedBody:
    """Decode a framed response body; FrameError when it is not well framed."""
    decoder = FrameDecoder("body")
    parsed = ParsedBody([], [])
    current: bytearray | None = None
    current_id = ""
    for event in decoder.feed(body):
        if isinstance(event, MessageJSON):
            parsed.messages.append(event.value)
        elif isinstance(event, ChunkStart):
            current, current_id = bytearray(), encode_chunk_id(event.chunk_id)
        elif isinstance(event, ChunkRangeStart):
            current = None
        elif isinstance(event, ChunkData):
            if current is not None:
                current += event.data
        elif isinstance(event, ChunkEnd):
            if current is not None:
                parsed.chunks.append(ChunkFrame(current_id, bytes(current)))
            current = None
    decoder.close()
    return parsed
