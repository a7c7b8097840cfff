"""Tables. The schema is created and changed only through Alembic (migrations/)."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .extents import Extents

# Named constraints make Alembic migrations portable between SQLite and PostgreSQL.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

USER_ID_LENGTH = 64
ID_LENGTH = 22
NAME_LENGTH = 512
LOCK_ID_LENGTH = 1024
USER_INFO_LENGTH = 1024
STREAM_ID_LENGTH = 256
PROPERTY_NAME_LENGTH = 256


class StoredStream:
    """Where a stream's bytes are: the whole of `blob`, or (`extents` set, `blob` "") ranges of blobs."""

    blob: str
    size: int
    extents: str | None

    @property
    def content(self) -> Extents:
        return Extents.stored(self.blob, self.size, self.extents)

    def keep_blob(self, name: str, size: int) -> None:
        self.blob, self.size, self.extents = name, size, None

    def keep_extents(self, extents: Extents) -> None:
        self.blob, self.size, self.extents = "", extents.length, extents.to_db()


def name_key(name: str) -> str:
    """Names are unique per folder ignoring case, as Windows compares them: one character against one, by
    Unicode's simple case folding. Python's casefold() is the full folding, which would make "Maße" and
    "Masse", or "ﬁle" and "file", one name where Windows (and rclone's OneDrive backend) keeps two."""
    composed = unicodedata.normalize("NFC", name)
    key = composed.casefold()
    if len(key) != len(composed):  # a character folded to several ("ß" to "ss"): fold each on its own
        key = composed.translate({ord(char): _fold_simply(char) for char in set(composed)})
    return key if len(key) <= NAME_LENGTH else fit_key(key)


def _fold_simply(char: str) -> str:
    """A character's simple case folding: its full folding where that is one character (the two agree
    there), else its lower case where that is one ("ẞ" to "ß"), else itself ("ß", "ﬁ", "İ")."""
    folded = char.casefold()
    if len(folded) == 1:
        return folded
    lowered = char.lower()
    return lowered if len(lowered) == 1 else char


def fit_key(key: str) -> str:
    """A key longer than its column is cut short and ends in a digest of the whole, still one key for one name.
    No valid name needs it now, but the full folding of migrations before 0013 could triple a name."""
    if len(key) <= NAME_LENGTH:
        return key
    return key[: NAME_LENGTH - 65] + "#" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class Base(DeclarativeBase):
    metadata = metadata


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(USER_ID_LENGTH), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    user_info: Mapped[str | None] = mapped_column(Text)  # PutUserInfo, per user
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Drive(Base):
    """A tree of folders and files; its root folder is its folder with no parent.

    Every user has one personal drive (`owner_id` set). Shared drives (`kind` "site" or "group", no owner)
    are made by an admin and reached by their members (DriveMember).
    """

    __tablename__ = "drives"
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="personal", server_default="personal")
    name: Mapped[str] = mapped_column(String(256), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)


class DriveMember(Base):
    __tablename__ = "drive_members"
    drive_id: Mapped[str] = mapped_column(ForeignKey("drives.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)


class Folder(Base):
    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("parent_id", "name_key"),)
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    drive_id: Mapped[str] = mapped_column(ForeignKey("drives.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("folders.id"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    modified_at: Mapped[datetime | None] = mapped_column(DateTime)  # None: never changed since created
    version: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")  # moves with every change
    created_by: Mapped[str | None] = mapped_column(String(USER_ID_LENGTH))  # None: the drive's owner
    description: Mapped[str | None] = mapped_column(Text)
    # Graph's fileSystemInfo: the times a client says the item has on its own disk (None: ours)
    fs_created_at: Mapped[datetime | None] = mapped_column(DateTime)
    fs_modified_at: Mapped[datetime | None] = mapped_column(DateTime)


class File(StoredStream, Base):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("folder_id", "name_key"),)
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    folder_id: Mapped[str] = mapped_column(ForeignKey("folders.id"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    size: Mapped[int] = mapped_column(BigInteger)
    # Version changes with every content change; the sequence number (CSPP) also with renames.
    version: Mapped[int] = mapped_column(BigInteger)
    sequence_number: Mapped[int] = mapped_column(BigInteger)
    blob: Mapped[str] = mapped_column(String(64))  # MainContent (see StoredStream)
    extents: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(44))  # base64, as CheckFileInfo's SHA256
    # Graph's quickXorHash (quickxor.py): base64; "" where unknown, as the SHA-256 (and in files stored before 0015)
    quickxor: Mapped[str] = mapped_column(String(28), server_default="")
    # CSPP Plus: MainContent's signature as JSON [[ChunkId, Length], ...] and its scheme; what a client
    # uploaded with PutChunkedFile is kept as uploaded, anything else is chunked by us.
    main_scheme: Mapped[str | None] = mapped_column(String(16))
    main_signature: Mapped[str | None] = mapped_column(Text)
    coauth_table_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    modified_at: Mapped[datetime] = mapped_column(DateTime)
    modified_by: Mapped[str | None] = mapped_column(String(USER_ID_LENGTH))  # None: the owner
    description: Mapped[str | None] = mapped_column(Text)
    fs_created_at: Mapped[datetime | None] = mapped_column(DateTime)  # see Folder
    fs_modified_at: Mapped[datetime | None] = mapped_column(DateTime)


class Lock(Base):
    """At most one WOPI lock per file; a row whose expiry has passed counts as no lock."""

    __tablename__ = "locks"
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    lock_id: Mapped[str] = mapped_column(String(LOCK_ID_LENGTH))
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    user_name: Mapped[str | None] = mapped_column(String(256))  # X-WOPI-LockUserVisible: who may be named


class AccessToken(Base):
    """Every token we issue, so that it can be revoked; no FK to files so a deleted file gives 404, not 401.
    A WOPI token names its file; an API token (Graph) names none (`file_id` "") and reaches the user's drives."""

    __tablename__ = "access_tokens"
    __table_args__ = (Index(None, "file_id", "user_id"),)
    jti: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(32))  # the resource: see tokens.py
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    can_write: Mapped[bool] = mapped_column(Boolean)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    # the token this one was issued under (the launch API's, under its API token): revoked with it
    parent_jti: Mapped[str | None] = mapped_column(String(ID_LENGTH), index=True)


class FileRevocation(Base):
    """`wopihost token revoke --file`: the tokens issued up to `revoked_at` (to `user_id`, or to anyone: "") are
    refused on the file from then on, those handed out for it from another token (a container's, a sibling's)
    too, which share that token's row and so have none of their own to revoke (tokens.py). No FK: a deleted
    file's revocation goes as the others do, once no token it could refuse is live (Tokens.purge)."""

    __tablename__ = "file_revocations"
    file_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(DateTime)


class AlternateStream(StoredStream, Base):
    """A CSPP Plus stream other than MainContent: its bytes (see StoredStream) and the signature that describes it."""

    __tablename__ = "alternate_streams"
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(STREAM_ID_LENGTH), primary_key=True)
    blob: Mapped[str] = mapped_column(String(64))
    extents: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    scheme: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(Text)  # JSON [[ChunkId, Length], ...]
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ContentProperty(Base):
    __tablename__ = "content_properties"
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(PROPERTY_NAME_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    retention: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class UploadSession(Base):
    """An upload session: `received` bytes of a stream, kept as pieces on disk.

    kind "cspp": a CSPP Plus session of `file_id`, carrying Chunk frames. kind "graph": a Graph
    createUploadSession, `total` bytes of a file's content, to become the file `file_id` (an existing
    item) or a new file as `target` (JSON) says; `result` is the file it became, kept until expiry so
    that a repeated final request gets the same answer.
    """

    __tablename__ = "upload_sessions"
    __table_args__ = (Index(None, "user_id", "expires_at"),)  # a user's live sessions, counted on each update
    token: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    # no FK: a Graph session outlives the file it became (to answer a repeated final request); an unfinished one, of
    # either kind, ends with its file (sessions.end_with_file)
    file_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), index=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    kind: Mapped[str] = mapped_column(String(8), default="cspp", server_default="cspp")
    total: Mapped[int | None] = mapped_column(BigInteger)
    target: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    # A CSPP session's frames decoded so far, as its pieces arrived (chunkindex.py): the stream up to `indexed`, a
    # frame boundary, holds `indexed_frames` frames, whose chunks are its SessionChunk rows; `frame_error` says why
    # the stream cannot be read, once it is known that it cannot.
    indexed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    indexed_frames: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    frame_error: Mapped[str | None] = mapped_column(Text)


class UploadPiece(Base):
    """One acknowledged UpdateUploadSession body: bytes [offset, offset + length) of the session stream."""

    __tablename__ = "upload_pieces"
    token: Mapped[str] = mapped_column(ForeignKey("upload_sessions.token", ondelete="CASCADE"), primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    length: Mapped[int] = mapped_column(BigInteger)
    blob: Mapped[str] = mapped_column(String(64))
    # the QuickXorHash of the piece alone (base64): a Graph session's file hash is combined from them at completion
    # without reading the content again; "" in a CSPP session, whose stream is frames, not the file
    quickxor: Mapped[str] = mapped_column(String(28), server_default="")


class SessionChunk(Base):
    """A chunk an upload session's frames carry: its payload is bytes [start, start + size) of the stream."""

    __tablename__ = "upload_session_chunks"
    token: Mapped[str] = mapped_column(ForeignKey("upload_sessions.token", ondelete="CASCADE"), primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    matches: Mapped[bool] = mapped_column(Boolean)  # the payload hashes to chunk_id


class CoauthLock(Base):
    """A CSPP Plus coauthoring lock: many `Coauth` holders, or one `CoauthExclusive`, each with its own expiry."""

    __tablename__ = "coauth_locks"
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    lock_id: Mapped[str] = mapped_column(String(LOCK_ID_LENGTH), primary_key=True)
    lock_type: Mapped[str] = mapped_column(String(16))
    lock_metadata: Mapped[str] = mapped_column(Text)
    user_friendly_name: Mapped[str] = mapped_column(String(256))
    acquired_at: Mapped[datetime] = mapped_column(DateTime)  # CoauthLockTime: first acquired, never moved
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class WorkbookSession(Base):
    """A Graph workbook session on one file. A persistent one writes to the file; a non-persistent one works
    on its own copy, `blob` (made from the file's `base_version`), which goes when the session does."""

    __tablename__ = "workbook_sessions"
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)  # no FK: Files.delete_in ends it
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    persist: Mapped[bool] = mapped_column(Boolean)
    blob: Mapped[str | None] = mapped_column(String(64))
    base_version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class WorkbookOperation(Base):
    """A long-running workbook operation (createSession with Prefer: respond-async): its status, polled by
    any worker; `session_id` once it succeeded, `error` (JSON) once it failed. `heartbeat_at` is renewed by the
    thread running it: one silent too long has lost its worker. NULL in an operation older than the column (or
    made by a node not yet upgraded), whose last sign of life is then its `created_at`."""

    __tablename__ = "workbook_operations"
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    persist: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))  # notStarted | running | succeeded | failed
    session_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)


class ShareLink(Base):
    """A link that opens one file or folder with the rights of its `url_type` (ReadOnly, ReadWrite), for
    whoever holds it, until it is revoked. No FK: a link to a deleted item resolves to nothing."""

    __tablename__ = "share_links"
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    url_type: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class Activity(Base):
    """An activity a WOPI client reported on a file (AddActivities): a comment, a mention ... kept as sent."""

    __tablename__ = "activities"
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the client's Id
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the activity's JSON
    received_at: Mapped[datetime] = mapped_column(DateTime)


class UnreferencedBlob(Base):
    """A blob gc found that nothing refers to, and when it first found it so. In a store where a deleted blob is
    gone for its readers too (an object store), gc deletes a blob only once it has stayed unreferenced for the
    grace period, so that a download that opened it before the commit that replaced it can finish."""

    __tablename__ = "unreferenced_blobs"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime)


class BlobHold(Base):
    """A writer's hold on the new object it is writing to an object store (holds.py): gc takes no blob held
    here until `held_until`, a lease its writer moves on while it writes and ends by deleting the row."""

    __tablename__ = "blob_holds"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    held_until: Mapped[datetime] = mapped_column(DateTime)
