"""Helpers for the CSPP Plus tests: build requests with the client-side wire helpers, read the answers."""

from __future__ import annotations

from wopihost.cspp.chunkid import chunk_id
from wopihost.cspp.chunking import signature_of
from wopihost.cspp.signatures import ChunkSignature, Signature
from wopihost.cspp.wire import chunk_frames, put_chunked_body, read_response, request_body

from .helpers import FIXTURES_DIR

FIXTURES = FIXTURES_DIR / "office-zip-chunking"


def full_file(*payloads: bytes) -> tuple[Signature, list[tuple[str, bytes]]]:
    """A FullFile-style signature over `payloads` (one chunk each) and the chunks themselves."""
    chunks = [(chunk_id(p), p) for p in payloads]
    return Signature("FullFile", tuple(ChunkSignature(c, len(p)) for c, p in chunks)), chunks


def fixture_stream(document: str, version: int, stream: str) -> tuple[bytes, Signature, list[tuple[str, bytes]]]:
    path = FIXTURES / document / f"Version{version}" / stream / "FileStream"
    data = path.read_bytes()
    with path.open("rb") as f:
        signature = signature_of(f)
    return data, signature, [(c.chunk_id, data[o : o + c.length]) for o, c in signature.spans()]


def put_chunked(
    wopi,
    signatures: dict,
    chunks=(),
    sequence: int | None = None,
    session: str | None = None,
    properties=(),
    body: bytes | None = None,
    **headers,
):
    if sequence is None:
        sequence = sequence_number(wopi)
    body = put_chunked_body(signatures, chunks, properties, session) if body is None else body
    headers = {"X_WOPI_SequenceNumber": str(sequence), **headers}
    return wopi.contents_op("PUT_CHUNKED_FILE", body, **headers)


def sequence_number(wopi) -> int:
    response = wopi.op("GET_SEQUENCE_NUMBER")
    assert response.status_int == 200, response.headers
    return int(response.headers["X-WOPI-SequenceNumber"])


def get_chunked(wopi, filters: list[dict], properties=()):
    response = wopi.op(
        "GET_CHUNKED_FILE", request_body({"ContentPropertiesToReturn": list(properties), "ContentFilters": filters})
    )
    if response.status_int != 200:
        return response, None, None
    message, frames = read_response(response.body)
    return response, message, {c: payload for c, _, payload in frames}


def stream_filter(stream_id: str = "MainContent", chunks: str = "All", known=(), scheme: str = "Zip") -> dict:
    return {
        "StreamId": stream_id,
        "ChunkingScheme": scheme,
        "ChunksToReturn": chunks,
        "AlreadyKnownChunks": list(known),
    }


def create_session(wopi) -> str:
    response = wopi.op("CREATE_UPLOAD_SESSION")
    assert response.status_int == 200, response.headers
    return response.json["UploadSessionToken"]


def update_session(wopi, token: str, offset: int, body: bytes, length: int | None = None):
    return wopi.op(
        "UPDATE_UPLOAD_SESSION",
        body,
        X_WOPI_UploadSessionToken=token,
        X_WOPI_ContentRangeOffset=str(offset),
        X_WOPI_ContentRangeLength=str(len(body) if length is None else length),
    )


def upload(wopi, chunks, piece: int = 1 << 20) -> str:
    """A session holding `chunks` as Chunk frames, sent in pieces of `piece` bytes."""
    token, stream = create_session(wopi), chunk_frames(chunks)
    for offset in range(0, len(stream), piece):
        response = update_session(wopi, token, offset, stream[offset : offset + piece])
        assert response.status_int == 200, response.headers
    return token


__all__ = ["chunk_frames", "chunk_id", "read_response", "request_body"]
