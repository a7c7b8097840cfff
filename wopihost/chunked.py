"""CSPP Plus incremental file transfer (docs/cspp-plus.md §1-§5): chunked reads and saves.

A file's content is MainContent (the `files` row) plus alternate streams and content
properties. Every stream keeps the signature that describes it: as the client
uploaded it with PutChunkedFile, or chunked by us from the bytes when they came some
other way.

A save writes no content. Each new stream is kept as the extents its chunks already
occupy: in the upload session's pieces, the request body and the file's current
blobs, all fsynced before the commit. The session's pieces thereby become the file's
(a session of more than MAX_BLOBS pieces, each of which the commit opens, has them copied
into that many first, as a Graph session's: sessions.merge_pieces), and a blob goes once
no stream of the file uses it. Kept in place, a file can hold more disk than it needs
(frame headers, replaced chunks sharing a blob with kept ones), and saves that each bring
a few chunks leave a stream in more and more blobs, every one of which a read opens: a
save that would leave its blobs more than twice the size of its streams, its streams in
too many pieces, or a stream in more than MAX_BLOBS blobs, copies the changed streams
into new blobs instead.

PutChunkedFile never looks a ChunkId up outside the file it saves: a chunk comes from
the request's frames, the committed upload session's frames, or the file's own
current streams. SpookyHash is not collision-resistant, and this way no ChunkId can
ever reach another file's bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Generator, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import chunkindex
from .clock import Clock
from .config import Settings
from .cspp.chunkid import EMPTY_CHUNK_ID
from .cspp.chunking import signature_of
from .cspp.frames import (
    END_FRAME,
    ChunkRangeStart,
    ChunkStart,
    FrameDecoder,
    FrameError,
    MessageJSON,
    chunk_frame,
    chunk_range_frame,
    message_frame,
    parse_json,
)
from .cspp.signatures import ChunkSignature, Signature, SignatureError
from .db import Database
from .errors import WopiError, bad_request
from .extents import MAX_BLOBS, Extent, Extents, open_extents
from .faults import InsufficientStorage, Unavailable, changing_too_often, outcome_unknown
from .locks import require_write_access
from .models import STREAM_ID_LENGTH, AlternateStream, ContentProperty, File, StoredStream
from .prepared import Statements
from .repository import drop_alternate_streams, hold_folder, load_file, load_file_in_folder, unreferenced
from .sessions import UploadSessions, delete_session
from .storage import Blob, Opened, Readable, Storage, TooLarge, discard
from .text import text_problem

MAIN = "MainContent"
KEEP, DELETE = "KeepOnContentChange", "DeleteOnContentChange"
ITEM_TTL = timedelta(days=30)  # alternate streams and content properties expire 30 days after their last update
MAX_ALTERNATE_STREAMS = 256
MAX_PROPERTIES = 256
MAX_PROPERTY_NAME = 256
MAX_PROPERTY_VALUE_BYTES = 1024
MAX_MESSAGE_BODY = 16 << 20  # GetChunkedFile / GetChunks request bodies: JSON only
IN_PLACE_SLACK = 1 << 20  # kept in place, a small file may use this much more than twice its size


# -- signatures as stored ---------------------------------------------------------


def signature_to_db(signature: Signature) -> str:
    return json.dumps([[chunk.chunk_id, chunk.length] for chunk in signature.chunks], separators=(",", ":"))


def signature_from_db(scheme: str, text: str) -> Signature:
    return Signature(scheme, tuple(ChunkSignature(chunk_id, length) for chunk_id, length in json.loads(text)))


@dataclass(frozen=True)
class Stream:
    stream_id: str
    content: Extents
    signature: Signature

    @cached_property
    def locations(self) -> dict[str, Extents]:
        """Where each of the stream's chunks lies (worked out once: GetChunks asks for each range)."""
        return {chunk.chunk_id: self.content.slice(offset, chunk.length) for offset, chunk in self.signature.spans()}


@dataclass(frozen=True)
class NewStream:
    """A stream as a save leaves it: where its bytes lie, and the blob they were copied to, if they were."""

    content: Extents
    copy: Blob | None
    signature: Signature


@dataclass
class Snapshot:
    """One consistent view of a file: its row, its live streams and properties, and their blobs held open."""

    file: File
    streams: dict[str, Stream]
    properties: dict[str, ContentProperty]
    opened: Opened

    def close(self) -> None:
        self.opened.close()


class Framed:
    """A framed response body (MessageJSON frame, chunk frames, EndFrame) read from a snapshot's blobs.

    It owns the snapshot: the server closes the body when the response is done or the client went away,
    and that releases the blobs. Whoever holds it before a server does must close it if they fail.
    """

    def __init__(self, snapshot: Snapshot, pieces: Generator[bytes, None, None], length: int):
        self.file, self.length = snapshot.file, length
        self._snapshot, self._pieces = snapshot, pieces

    def __iter__(self) -> Iterator[bytes]:
        return self._pieces

    def close(self) -> None:
        try:
            self._pieces.close()
        finally:
            self._snapshot.close()


@contextmanager
def _released_on_error(snapshot: Snapshot) -> Iterator[None]:
    """Close `snapshot` if the block fails; on success its blobs go on to whatever the block handed them."""
    try:
        yield
    except BaseException:
        snapshot.close()
        raise


# -- request messages -------------------------------------------------------------


def _list(message: dict, name: str, required: bool = True) -> list:
    value = message.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise bad_request(f"MessageJSON field {name} must be an array")
    return value


def _optional(item: dict, name: str, default: Any) -> Any:
    """An optional field of a MessageJSON object, `default` if it is absent or null: a serializer that writes
    an unset field as null (.NET's and others' default) means the field's default, as leaving it out does."""
    value = item.get(name)
    return default if value is None else value


def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise bad_request(f"MessageJSON: {what} must be an object")
    return value


def _stream_ids(filters: list[dict], what: str) -> list[str]:
    ids = []
    for item in filters:
        stream_id = item.get("StreamId")
        if not isinstance(stream_id, str) or not stream_id:
            raise bad_request(f"MessageJSON: every {what} needs a StreamId string")
        if stream_id in ids:
            raise bad_request(f"MessageJSON: StreamId {stream_id[:60]} appears twice in {what}")
        ids.append(stream_id)
    return ids


@dataclass(frozen=True)
class PutRequest:
    signatures: dict[str, Signature]
    properties: list[tuple[str, str, str]]  # (Name, Value, Retention)
    session_token: str | None

    @classmethod
    def parse(cls, message: Any) -> PutRequest:
        message = _object(message, "the message")
        entries = _list(message, "Signatures")
        if not entries:
            raise bad_request("MessageJSON Signatures must name at least one stream")
        # Counted here, before any transaction: the commit's write transaction, which on SQLite holds up every
        # writer of the host, would otherwise go through thousands of streams or properties before counting them.
        if len(entries) > MAX_ALTERNATE_STREAMS + 1:
            raise bad_request(
                f"MessageJSON Signatures may name MainContent and at most {MAX_ALTERNATE_STREAMS} alternate streams"
            )
        signatures = {}
        for entry in entries:
            try:
                stream_id, signature = Signature.from_json(entry)
            except SignatureError as exc:
                raise bad_request(f"MessageJSON Signatures: {exc}") from None
            if stream_id in signatures:
                raise bad_request(f"MessageJSON: StreamId {stream_id[:60]} appears twice in Signatures")
            if len(stream_id) > STREAM_ID_LENGTH:
                raise bad_request(f"MessageJSON: a StreamId is longer than {STREAM_ID_LENGTH} characters")
            _check_text(stream_id, "a StreamId")
            signatures[stream_id] = signature
        items = _list(message, "ContentProperties", required=False)
        if len(items) > MAX_PROPERTIES:
            raise bad_request(f"MessageJSON ContentProperties may hold at most {MAX_PROPERTIES} properties")
        properties = [_property(_object(item, "a content property")) for item in items]
        token = message.get("UploadSessionTokenToCommit")
        if token is not None and not isinstance(token, str):
            raise bad_request("MessageJSON UploadSessionTokenToCommit must be a string")
        return cls(signatures, properties, token or None)


def _check_text(value: str, what: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise bad_request(f"MessageJSON: {what} {problem}")


def _property(item: dict) -> tuple[str, str, str]:
    name, value = item.get("Name"), item.get("Value")
    if not isinstance(name, str) or not name or len(name) > MAX_PROPERTY_NAME:
        raise bad_request(f"a content property Name must be a string of 1 to {MAX_PROPERTY_NAME} characters")
    _check_text(name, "a content property Name")
    if not isinstance(value, str):
        raise bad_request(f"content property {name[:60]}: Value must be a string")
    _check_text(value, f"content property {name[:60]}: Value")
    if len(value.encode("utf-8")) > MAX_PROPERTY_VALUE_BYTES:
        raise bad_request(
            f"content property {name[:60]}: Value must be a string of at most {MAX_PROPERTY_VALUE_BYTES} bytes"
        )
    # The data-model page says ContentPropertyRetention, the samples and the validator say Retention (§5.1).
    retention = item.get("Retention", item.get("ContentPropertyRetention"))
    return name, value, retention if retention in (KEEP, DELETE) else DELETE


def read_message(body: bytes) -> Any:
    """The MessageJSON of a GetChunkedFile or GetChunks request: framed, or (tolerated) bare JSON."""
    if body.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        try:
            return parse_json(body)
        except FrameError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc.reason}") from None
    decoder = FrameDecoder("body", max_message_size=MAX_MESSAGE_BODY)
    try:
        events = decoder.feed(body)
        decoder.close()
    except FrameError as exc:
        raise bad_request(f"the request frames cannot be read: {exc.reason}") from None
    if any(isinstance(event, (ChunkStart, ChunkRangeStart)) for event in events):
        raise bad_request("this request carries no chunk frames")
    first = events[0]
    assert isinstance(first, MessageJSON)  # a body's decoder yields its MessageJSON first or raises FrameError
    return first.value


# -- the operations ---------------------------------------------------------------


class ChunkedFiles:
    def __init__(self, db: Database, blobs: Storage, clock: Clock, sessions: UploadSessions, settings: Settings):
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.sessions = sessions
        self.settings = settings

    # reading

    def snapshot(self, file_id: str, only: Collection[str] | None = None) -> Snapshot:
        """The file's current content with its blobs held open (retried if a commit swaps one meanwhile): every
        stream's, or MainContent's and those of the streams `only` names, as a read of some streams needs (a file
        may span more blobs than a process may open)."""
        for _ in range(5):
            with self.db.read() as s:
                file = load_file(s, file_id)
                cutoff = self.clock.now() - ITEM_TTL
                alternates = list(
                    s.scalars(
                        sa.select(AlternateStream).where(
                            AlternateStream.file_id == file_id, AlternateStream.updated_at > cutoff
                        )
                    )
                )
                properties = {
                    p.name: p
                    for p in s.scalars(
                        sa.select(ContentProperty).where(
                            ContentProperty.file_id == file_id, ContentProperty.updated_at > cutoff
                        )
                    )
                }
                # Under READ COMMITTED each statement may see a later commit: if the file moved on
                # meanwhile, these rows could mix two versions.
                if s.scalar(sa.select(File.sequence_number).where(File.id == file_id)) != file.sequence_number:
                    continue
            contents = {a.stream_id: a.content for a in alternates}
            main = file.content
            held = [main, *(content for stream_id, content in contents.items() if only is None or stream_id in only)]
            try:
                opened = self.blobs.open(name for content in held for name in content.blobs)
            except FileNotFoundError:
                continue
            snapshot = Snapshot(
                file,
                {
                    a.stream_id: Stream(a.stream_id, contents[a.stream_id], signature_from_db(a.scheme, a.signature))
                    for a in alternates
                },
                properties,
                opened,
            )
            with _released_on_error(snapshot):
                snapshot.streams[MAIN] = Stream(MAIN, main, self._main_signature(file, main, opened))
            return snapshot
        raise changing_too_often()

    def _main_signature(self, file: File, main: Extents, opened: Opened) -> Signature:
        """MainContent's signature; chunked from the bytes (and remembered) if no client uploaded one."""
        if file.main_signature is not None:
            assert file.main_scheme is not None  # the two columns are written together
            return signature_from_db(file.main_scheme, file.main_signature)
        with open_extents(opened.subset(main.blobs), main) as content:
            signature = signature_of(content, file.size)
        # Remembered only if the content is still the one we chunked (every content change moves the sequence
        # number), and only if the database can take it now: a read does not fail for want of a cache entry.
        with suppress(InsufficientStorage, Unavailable), self.db.write() as s:
            s.execute(
                sa.update(File)
                .where(File.id == file.id, File.sequence_number == file.sequence_number, File.main_signature.is_(None))
                .values(main_scheme=signature.scheme, main_signature=signature_to_db(signature))
            )
        return signature

    def get_chunked_file(self, file_id: str, message: Any) -> Framed:
        """GetChunkedFile: the response, its MessageJSON frame and then the chunks the client lacks."""
        message = _object(message, "the message")
        wanted_properties = _list(message, "ContentPropertiesToReturn")
        if not all(isinstance(name, str) for name in wanted_properties):
            raise bad_request("ContentPropertiesToReturn must be an array of property name strings")
        filters = [_object(item, "a ContentFilter") for item in _list(message, "ContentFilters")]
        if not filters:
            raise bad_request("MessageJSON ContentFilters must name at least one stream")
        stream_ids = _stream_ids(filters, "ContentFilters")
        wanted = []
        for item in filters:
            mode, known = _optional(item, "ChunksToReturn", "All"), _optional(item, "AlreadyKnownChunks", [])
            if mode not in ("All", "None", "LastZipChunk"):
                raise bad_request("ChunksToReturn must be All, None or LastZipChunk")
            if not isinstance(known, list) or not all(isinstance(k, str) for k in known):
                raise bad_request("AlreadyKnownChunks must be an array of ChunkId strings")
            wanted.append((mode, set(known)))
        snapshot = self.snapshot(file_id, stream_ids)
        with _released_on_error(snapshot):
            return self._chunked_file(snapshot, stream_ids, wanted, wanted_properties)

    @staticmethod
    def _chunked_file(
        snapshot: Snapshot, stream_ids: list[str], wanted: list[tuple[str, set[str]]], wanted_properties: list
    ) -> Framed:
        """`wanted`: each stream's ChunksToReturn and AlreadyKnownChunks, in the order of `stream_ids`."""
        signatures, to_send, sent = [], [], set()
        for stream_id, (mode, known) in zip(stream_ids, wanted):
            stream = snapshot.streams.get(stream_id)
            if stream is None:  # a stream that does not exist: Zip, no chunks (docs/cspp-plus.md §1.2)
                signatures.append({"StreamId": stream_id, "ChunkingScheme": "Zip", "ChunkSignatures": []})
                continue
            signature = stream.signature
            signatures.append(signature.to_json(stream_id))
            if mode == "All":
                chunks = signature.chunks
            elif mode == "LastZipChunk" and signature.scheme == "Zip" and signature.chunks:
                chunks = signature.chunks[-1:]
            else:
                chunks = ()
            locations = stream.locations
            for chunk in chunks:
                if chunk.chunk_id not in known and chunk.chunk_id not in sent:
                    sent.add(chunk.chunk_id)
                    to_send.append((chunk.chunk_id, locations[chunk.chunk_id]))
        properties = [
            {"Name": name, "Value": snapshot.properties[name].value, "Retention": snapshot.properties[name].retention}
            for name in dict.fromkeys(wanted_properties)
            if name in snapshot.properties
        ]
        message = message_frame({"ContentProperties": properties, "Signatures": signatures})
        return Framed(
            snapshot,
            _chunk_frames(message, snapshot.opened, to_send),
            _framed_length(message, [extents.length for _, extents in to_send], 16),
        )

    def get_chunks(self, file_id: str, message: Any) -> Framed:
        """GetChunks: the response, its MessageJSON frame and then the requested chunk ranges."""
        message = _object(message, "the message")
        filters = [_object(item, "a ContentFilter") for item in _list(message, "ContentFilters")]
        if not filters:
            raise bad_request("MessageJSON ContentFilters must name at least one stream")
        stream_ids = _stream_ids(filters, "ContentFilters")
        requested = []
        for stream_id, item in zip(stream_ids, filters):
            for entry in _list(item, "ChunkRangesToReturn"):
                entry = _object(entry, "a chunk range")
                chunk_id, offset, length = entry.get("ChunkId"), entry.get("Offset", 0), entry.get("Length", -1)
                if not isinstance(chunk_id, str) or type(offset) is not int or type(length) is not int:
                    raise bad_request("a chunk range needs a ChunkId string and integer Offset and Length")
                if offset < 0 or length < -1:
                    raise bad_request("a chunk range needs Offset >= 0 and Length >= -1")
                requested.append((stream_id, chunk_id, offset, length))
        snapshot = self.snapshot(file_id, stream_ids)
        with _released_on_error(snapshot):
            return self._chunk_ranges(snapshot, stream_ids, requested)

    @staticmethod
    def _chunk_ranges(snapshot: Snapshot, stream_ids: list[str], requested) -> Framed:
        collection: dict[str, list[str]] = {stream_id: [] for stream_id in stream_ids}
        ranges = []
        for stream_id, chunk_id, offset, length in requested:
            stream = snapshot.streams.get(stream_id)
            where = stream.locations.get(chunk_id) if stream else None
            if where is None:  # the file changed since the client saw this chunk: left out (docs/cspp-plus.md §1.4)
                continue
            if offset > where.length:
                raise bad_request(f"Offset {offset} is past the end of chunk {chunk_id} ({where.length} bytes)")
            end = where.length if length == -1 else min(where.length, offset + length)
            ranges.append((chunk_id, offset, where.slice(offset, end - offset), end == where.length))
            if chunk_id not in collection[stream_id]:
                collection[stream_id].append(chunk_id)
        message = message_frame(
            {
                "ChunkRangeCollection": [
                    {"StreamId": stream_id, "ChunkIds": ids} for stream_id, ids in collection.items()
                ]
            }
        )
        return Framed(
            snapshot,
            _range_frames(message, snapshot.opened, ranges),
            _framed_length(message, [extents.length for _, _, extents, _ in ranges], 36),
        )

    # writing

    def update_upload_session(
        self,
        token: str,
        file_id: str,
        offset: int,
        length: int,
        body: Readable,
        admit: Callable[[Statements], None] | None = None,
    ) -> int:
        """UpdateUploadSession: store a piece of the session's stream, indexing the chunks its frames complete
        (chunkindex.py) on the way; returns the new end of the stream. `admit` is asked as the piece is kept
        (UploadSessions.append)."""
        limit = self.settings.max_upload_session_size

        def observe(s: Session, state: Any) -> chunkindex.PieceIndexer | None:
            return chunkindex.indexer_for(s, self.blobs, state, limit)

        with self.sessions.used(token, file_id):
            return self.sessions.append(token, file_id, offset, length, body, observe=observe, admit=admit)

    def put_chunked_file(
        self,
        file_id: str,
        body: Readable,
        lock_id: str | None,
        coauth_lock_id: str | None,
        sequence_number: int,
        admit: Callable[[Statements], None] | None = None,
        user_id: str | None = None,
    ) -> File:
        """PutChunkedFile, in the order of docs/cspp-plus.md §1.3: frames, locks, sequence number, session,
        chunks, size. `admit(t)` whether the save may still land, asked in the commit's transaction once its rows
        are locked (the token may have been revoked while the body came). `user_id` saves: new MainContent is
        last modified by them, as after PutFile."""
        limit = self.settings.max_upload_session_size
        try:
            spool = self.blobs.write(body, limit, sha256=False, quickxor=False)
        except TooLarge:
            raise WopiError(413, f"the request is larger than the limit of {limit} bytes") from None
        unused = [spool.name]  # deleted at the end; after a commit, what the file does not use
        try:
            with ExitStack() as held, ExitStack() as reading:
                held.enter_context(spool)  # the new blobs stay held (see Blob) until the commit is over
                opened = reading.enter_context(self.blobs.open([spool.name]))  # which can fail: spool held first
                inline = chunkindex.decode_body(opened, Extents([Extent(spool.name, 0, spool.size)]), limit)
                request = PutRequest.parse(inline.message)
                token = request.session_token
                # from here the request uses the session: refused, the session stays for the client's retry
                held.enter_context(self.sessions.used(token, file_id))
                index, session_stream = self._open_session(
                    token, file_id, opened, lock_id, coauth_lock_id, sequence_number
                )
                chunks = dict(inline.chunks)
                mismatched = list(inline.mismatched)
                if index is not None:  # a session's
                    session = chunkindex.session_chunks(index, opened, session_stream, limit)
                    chunks = {**session.chunks, **chunks}
                    mismatched += session.mismatched
                if mismatched and self.settings.verify_chunk_ids:
                    raise bad_request(f"the payload of chunk {mismatched[0]} does not hash to its ChunkId")
                # MainContent's blobs only: a file may span more blobs than a process may open (_open_planned)
                snapshot = self.snapshot(file_id, only=())
                opened.adopt(snapshot.opened)
                plan = self._plan(snapshot, request, chunks)
                self._open_planned(plan, opened, file_id, lock_id, coauth_lock_id, sequence_number)
                streams = self._place(plan, snapshot, opened)
                copies = [new.copy for new in streams.values() if new is not None and new.copy is not None]
                for copy in copies:
                    held.enter_context(copy)
                    unused.append(copy.name)
                file, unused = self._commit(
                    file_id,
                    lock_id,
                    coauth_lock_id,
                    sequence_number,
                    request,
                    streams,
                    token,
                    session_stream,
                    spool.name,
                    admit,
                    user_id,
                )
            return file
        except BaseException as exc:
            if outcome_unknown(exc):
                unused = []  # the commit may have landed, naming the spool and copies: gc deletes what no row names
            raise
        finally:
            for name in unused:
                self.blobs.release(name)

    def _open_session(
        self,
        token: str | None,
        file_id: str,
        opened: Opened,
        lock_id: str | None,
        coauth_lock_id: str | None,
        sequence_number: int,
    ) -> tuple[chunkindex.SessionIndex | None, Extents]:
        """The file's checks, then the session's chunk index and stream with its pieces open in `opened`: at most
        MAX_BLOBS of them, a descriptor each (thousands would take the worker past its limit), so more are merged
        first. Another request may merge them meanwhile (a commit of the same session: its pieces are then gone,
        the rows name the copies), or add one during the merge (which drops its copies): read again. Once they are
        open, only a piece added can make a session merge, which the commit finds (the session grew: 409)."""
        for _ in range(4):
            with self.db.read() as s:
                self._check(s, file_id, lock_id, coauth_lock_id, sequence_number)
                if not token:
                    return None, Extents()
                index, stream = self._session(s, token, file_id)
            if len(stream) > MAX_BLOBS:
                self.sessions.merge_pieces(token)
                continue
            try:
                for piece in stream:
                    opened.add(piece.blob, piece.length)
            except FileNotFoundError:  # merged by another request, or swept or committed: the rows say which
                continue
            return index, stream
        raise WopiError(409, "the upload session kept changing while it was being committed; retry")

    def _session(self, s: Session, token: str, file_id: str) -> tuple[chunkindex.SessionIndex, Extents]:
        """The session's chunk index and where its stream lies; 410 unless it is live and this file's. One
        snapshot with the row (db.read): a sweep meanwhile is found by the commit (410)."""
        index = chunkindex.recorded(s, self.sessions.get(s, token, file_id))
        return index, self.sessions.stream(s, token)

    def _check(
        self, s: Session, file_id: str, lock_id: str | None, coauth_lock_id: str | None, sequence_number: int
    ) -> File:
        file = load_file_in_folder(s, file_id, hold_folder)  # the folder first, as every writer (the commit)
        require_write_access(s, file, self.clock.now(), lock_id, coauth_lock_id, unlocked_ok=file.size == 0)
        if sequence_number != file.sequence_number:
            raise WopiError(
                412,
                "X-WOPI-SequenceNumber does not match the file's",
                {"X-WOPI-SequenceNumber": str(file.sequence_number)},
            )
        return file

    def _plan(
        self, snapshot: Snapshot, request: PutRequest, chunks: dict[str, Extents]
    ) -> dict[str, tuple[Extents, Signature] | None]:
        """Where each changed stream's bytes lie: {StreamId: (extents, signature)}, None for a deleted stream."""
        own_chunks: dict[str, Extents] = {}
        for stream in snapshot.streams.values():
            own_chunks = {**stream.locations, **own_chunks}
        plan: dict[str, tuple[Extents, Signature] | None] = {}
        # A signature may repeat a chunk any number of times: bounded here, a few bytes sent cannot become
        # streams (which a save may copy to new blobs) far larger than anything a client could upload.
        total = 0
        for stream_id, signature in request.signatures.items():
            if not signature.chunks and stream_id != MAIN:
                plan[stream_id] = None
                continue
            if signature.length > self.settings.max_file_size:
                raise WopiError(
                    413, f"{stream_id[:60]} would be larger than the limit of {self.settings.max_file_size} bytes"
                )
            total += signature.length
            if total > self.settings.max_upload_session_size:
                raise WopiError(
                    413,
                    f"the changed streams would be larger than the limit of {self.settings.max_upload_session_size}"
                    " bytes together",
                )
            mine = snapshot.streams[stream_id].locations if stream_id in snapshot.streams else {}
            parts: list[Extent] = []
            for chunk in signature.chunks:
                where = _first(chunk.chunk_id, chunks, mine, own_chunks, _EMPTY)
                if where is None:
                    raise bad_request(f"chunk {chunk.chunk_id} is not in the request, the upload session or the file")
                if where.length != chunk.length:
                    raise bad_request(
                        f"chunk {chunk.chunk_id} is {where.length} bytes, its signature says {chunk.length}"
                    )
                parts.extend(where)
            plan[stream_id] = (Extents.joined(parts), signature)
        return plan

    def _open_planned(
        self,
        plan: dict[str, tuple[Extents, Signature] | None],
        opened: Opened,
        file_id: str,
        lock_id: str | None,
        coauth_lock_id: str | None,
        sequence_number: int,
    ) -> None:
        """Open the blobs the changed streams will lie in (a copy reads them, `_place` weighs them), and none of
        the kept streams'. One of the file's own was opened after the snapshot: if a commit meanwhile released
        it, the file has moved on, and the client hears so as from the commit (412, or 409 for a new lock)."""
        try:
            for name in set().union(*(extents.blobs for extents, _ in filter(None, plan.values()))):
                opened.add(name)
        except FileNotFoundError:
            with self.db.read() as s:
                self._check(s, file_id, lock_id, coauth_lock_id, sequence_number)
            raise changing_too_often() from None

    def _place(
        self, plan: dict[str, tuple[Extents, Signature] | None], snapshot: Snapshot, opened: Opened
    ) -> dict[str, NewStream | None]:
        """Keep the changed streams where their bytes lie, or (see the module's notes) copy them to new blobs.
        Weighed are the blobs the changed streams lie in, against every stream's bytes in them: copying can
        shrink only those (and the kept streams' blobs are not open, _open_planned)."""
        changed = [item for item in plan.values() if item is not None]
        blobs = set().union(*(extents.blobs for extents, _ in changed))
        footprint = sum(opened.size(name) for name in blobs)
        contents = [stream.content for stream_id, stream in snapshot.streams.items() if stream_id not in plan]
        contents += [extents for extents, _ in changed]
        length = sum(extent.length for extents in contents for extent in extents if extent.blob in blobs)
        pieces = sum(len(extents) for extents, _ in changed)
        chunk_count = sum(len(signature.chunks) for _, signature in changed)
        scattered = any(len(extents.blobs) > MAX_BLOBS for extents, _ in changed)  # each read would open them all
        if footprint <= 2 * length + IN_PLACE_SLACK and pieces <= 4 * chunk_count + 16 and not scattered:
            return {stream_id: item and NewStream(item[0], None, item[1]) for stream_id, item in plan.items()}
        placed: dict[str, NewStream | None] = {}
        try:
            for stream_id, item in plan.items():
                if item is None:
                    placed[stream_id] = None
                    continue
                copy = self.blobs.concat(opened, item[0])
                placed[stream_id] = NewStream(Extents([Extent(copy.name, 0, copy.size)]), copy, item[1])
        except BaseException as exc:
            for new in placed.values():
                if new is not None and new.copy is not None:
                    discard(self.blobs, new.copy.name, exc)
                    new.copy.release()
            raise
        return placed

    def _commit(
        self,
        file_id,
        lock_id,
        coauth_lock_id,
        sequence_number,
        request: PutRequest,
        streams: dict[str, NewStream | None],
        token,
        session_stream: Extents,
        spool: str,
        admit: Callable[[Statements], None] | None,
        user_id: str | None,
    ) -> tuple[File, list[str]]:
        """Check again and switch the file to the new streams in one transaction; returns the unused blobs."""
        with self.db.write() as s:
            file = self._check(s, file_id, lock_id, coauth_lock_id, sequence_number)
            now = self.clock.now()
            released = {spool}  # blobs that may have lost their last user
            if token:
                if self.sessions.get(s, token, file_id).received != session_stream.length:
                    raise WopiError(409, "the upload session grew while it was being committed; retry")
                released.update(delete_session(s, token))
            Statements.ask(s, admit)  # once the file's and the session's rows are locked: see Tokens.require_live
            released |= self._expire(s, file_id, now)
            alternates = [stream_id for stream_id in streams if stream_id != MAIN]
            rows = {
                row.stream_id: row
                for row in s.scalars(
                    sa.select(AlternateStream).where(
                        AlternateStream.file_id == file_id, AlternateStream.stream_id.in_(alternates)
                    )
                )
            }
            for stream_id, new in streams.items():
                if stream_id == MAIN:
                    assert new is not None  # MainContent is changed, never deleted (_plan)
                    # Version follows MainContent's bytes (docs/cspp-plus.md §5.17): equal signatures, equal bytes.
                    # main_scheme is written together with main_signature
                    old = (
                        signature_from_db(cast(str, file.main_scheme), file.main_signature)
                        if file.main_signature
                        else None
                    )
                    if old is None or old.chunks != new.signature.chunks:
                        file.version += 1
                        file.modified_at, file.modified_by = now, user_id
                        file.fs_modified_at = None  # a time a client set was that of the old content (as PutFile)
                    released |= file.content.blobs
                    _keep(file, new)
                    file.sha256 = file.quickxor = ""
                    file.main_scheme, file.main_signature = new.signature.scheme, signature_to_db(new.signature)
                    continue
                row = rows.get(stream_id)
                if row is not None:
                    released |= row.content.blobs
                if new is None:
                    if row is not None:
                        s.delete(row)
                    continue
                if row is None:
                    row = AlternateStream(file_id=file_id, stream_id=stream_id)
                    s.add(row)
                _keep(row, new)
                row.scheme, row.signature, row.updated_at = new.signature.scheme, signature_to_db(new.signature), now
            for name, value, retention in request.properties:
                prop = s.get(ContentProperty, (file_id, name))
                if prop is None:
                    prop = ContentProperty(file_id=file_id, name=name)
                    s.add(prop)
                prop.value, prop.retention, prop.updated_at = value, retention, now
            s.flush()
            self._check_limits(s, file_id)
            file.sequence_number += 1
            unused = unreferenced(s, file_id, released)
        return file, unused

    def _expire(self, s: Session, file_id: str, now: datetime) -> set[str]:
        """Drop alternate streams and properties not updated for 30 days; returns the blobs that freed."""
        cutoff = now - ITEM_TTL
        s.execute(
            sa.delete(ContentProperty).where(ContentProperty.file_id == file_id, ContentProperty.updated_at <= cutoff)
        )
        return drop_alternate_streams(s, file_id, AlternateStream.updated_at <= cutoff)

    @staticmethod
    def _check_limits(s: Session, file_id: str) -> None:
        for table, limit, what in (
            (AlternateStream, MAX_ALTERNATE_STREAMS, "alternate streams"),
            (ContentProperty, MAX_PROPERTIES, "content properties"),
        ):
            count = s.execute(
                sa.select(sa.func.count()).select_from(table).where(table.file_id == file_id)
            ).scalar_one()
            if count > limit:
                raise bad_request(f"the file would have {count} {what}, more than {limit}")


_EMPTY = {EMPTY_CHUNK_ID: Extents()}  # the empty chunk needs no bytes from anywhere


def _keep(row: StoredStream, new: NewStream) -> None:
    if new.copy is not None:
        row.keep_blob(new.copy.name, new.copy.size)
    else:
        row.keep_extents(new.content)


def _first(chunk_id: str, *sources: dict[str, Extents]) -> Extents | None:
    """Where a chunk's bytes are, from the first source that has them (an empty chunk is a valid answer)."""
    for source in sources:
        where = source.get(chunk_id)
        if where is not None:
            return where
    return None


def _chunk_frames(message: bytes, opened: Opened, chunks) -> Generator[bytes, None, None]:
    """A response body: the MessageJSON frame, then one Chunk frame per (ChunkId, Extents), then EndFrame."""
    yield message
    for chunk_id, extents in chunks:
        yield from chunk_frame(chunk_id, opened.pieces(extents), size=extents.length)
    yield END_FRAME


def _range_frames(message: bytes, opened: Opened, ranges) -> Generator[bytes, None, None]:
    yield message
    for chunk_id, offset, extents, end in ranges:
        yield from chunk_range_frame(chunk_id, offset, opened.pieces(extents), end_of_chunk=end, size=extents.length)
    yield END_FRAME


def _framed_length(message: bytes, payload_lengths: list[int], extended_header: int) -> int:
    return len(message) + sum(16 + extended_header + n for n in payload_lengths) + len(END_FRAME)
