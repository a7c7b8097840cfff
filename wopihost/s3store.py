"""File content in an S3-compatible object store: the blob store of nodes that share nothing but the database
and a bucket (issue 16).

Each blob is one immutable object, `PREFIX/blobs/<name[:2]>/<name>`, named by a random id. An object becomes
visible whole, when its PutObject or CompleteMultipartUpload is acknowledged, or never: a failed write aborts its
multipart upload, and `sweep_tmp` aborts those of writers that died.

A writer *holds* its new object from before it can become visible until `Blob.release()` with a row of the
database (holds.py): gc takes no blob whose hold is live. A killed writer's hold lives on until its lease ends.

boto3 is imported when an S3Store is made, not with this module: the local default does not pay for it.
"""

from __future__ import annotations

import io
import logging
import math
import mimetypes
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from .extents import Extent
from .faults import InsufficientStorage, Unavailable
from .ids import is_id, new_id
from .scratch import scratch
from .storage import PIECE, Blob, Hashes, Opened, Readable, TooLarge

if TYPE_CHECKING:
    from .holds import Hold, Holds

log = logging.getLogger("wopihost.s3store")

MIB = 1 << 20
MIN_PART = 5 * MIB  # S3's least size of a multipart upload's part, but the last (EntityTooSmall)
MAX_COPY_PART = 5 << 30  # S3's largest part (UploadPartCopy included)
MAX_PUT = 5 << 30  # S3's largest PutObject
MAX_PARTS = 10_000
READ_AHEAD = 16 * MIB  # what one GET of a seekable reader asks for (S3Opened.readinto)
NAME_LENGTH = 32
_MISSING = {"NoSuchKey", "NotFound", "404"}
# The error of a HEAD has no body: a missing object and a missing bucket are both a bare 404, which only asking for
# the bucket tells apart. Every other request names NoSuchBucket.
_BARE_404 = {"NotFound", "404"}
# a full store (RGW's quota is a 403, a full cluster a 507; MinIO's and AWS's codes alike): retrying will not help
_FULL = {"QuotaExceeded", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "InsufficientCapacity"}
_client_lock = threading.Lock()  # boto3 sessions are not thread-safe; the clients they make are


class MissingBucket(Unavailable):
    """The bucket of WOPIHOST_STORAGE_URL does not exist (deleted, or misnamed): a 503 like any store that cannot
    serve, whose reason says so rather than pass for a missing object. The answer leaves the bucket's name to the
    log, /healthz and doctor."""

    def __init__(self, bucket: str, what: str):
        # nothing serves until an admin creates or renames it: sooner than a minute is no use
        super().__init__(f"the storage bucket does not exist (while {what})", retry_after=60)
        self.bucket = bucket


class S3Store:
    """Blobs as objects under `s3://bucket/prefix` (a storage.Storage).

    Credentials, endpoint, region and addressing style come from the standard AWS variables and config file
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, `addressing_style` in
    ~/.aws/config) unless given here. Timeouts and attempts are always ours: botocore's retry mode "standard"
    (back-off with jitter, on throttling, 5xx and connection errors) with `max_attempts` in all.
    """

    # A deleted object is gone for a reader that is still reading it: gc waits out the grace period after
    # finding a blob unreferenced (gc.py), and release() leaves blobs to it.
    deleted_stays_readable = False

    def __init__(
        self,
        url: str,
        holds: Holds,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 4,
        part_size: int = 8 * MIB,
        download_endpoint_url: str | None = None,
    ):
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
        if part_size < MIN_PART:
            raise ValueError(f"the part size must be at least {MIN_PART} bytes (S3's least part)")
        if addressing_style not in (None, "auto", "path", "virtual"):
            raise ValueError(f"addressing style {addressing_style!r} is none of auto, path, virtual")
        self.bucket = parts.netloc
        prefix = parts.path.strip("/")
        self._root = f"{prefix}/" if prefix else ""
        self.part_size, self.holds = part_size, holds

        import boto3.session  # type: ignore[import-untyped]  # here, not at the top: see the module's docstring
        from botocore.config import Config  # type: ignore[import-untyped]

        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            # None leaves the config file's s3 settings (addressing_style) in force
            s3={"addressing_style": addressing_style} if addressing_style else None,
        )
        with _client_lock:
            session = boto3.session.Session()
            self._s3 = session.client(
                "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
            )
            # Presigning makes no request: this client only signs URLs for the address clients reach the store at.
            self._presigner = (
                session.client(
                    "s3",
                    endpoint_url=download_endpoint_url,
                    region_name=region or None,
                    config=config.merge(Config(signature_version="s3v4")),  # SigV4 URLs, which say when they expire
                )
                if download_endpoint_url
                else None
            )

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self._root}')"

    # -- keys

    def key(self, name: str) -> str:
        return f"{self._root}blobs/{name[:2]}/{name}"

    def _name(self, key: str) -> str | None:
        name = key.rsplit("/", 1)[-1]
        return name if is_id(name, NAME_LENGTH) and key == self.key(name) else None

    # -- writing

    def write(self, source: Readable, limit: int, sha256: bool = True, quickxor: bool = True) -> Blob:
        """Stream `source` into a new, held object; at most `limit` bytes (else TooLarge, and nothing is left).

        What crosses the network: the content, one part (part_size bytes, the only buffer) at a time: a body
        shorter than one part, or limited to less than two, is one PutObject, a longer one a multipart upload,
        completed only once every part is stored. The object is acknowledged by the store when this returns.
        S3 takes at most MAX_PARTS parts: a write whose limit is more than that many part_size parts uses parts
        of limit / MAX_PARTS, so that it cannot be refused after 10,000 of them were sent. The hashes as in
        BlobStore.write.
        """
        hashes = Hashes(sha256, quickxor)
        size = 0

        def fill() -> int:
            nonlocal size
            got = 0
            while got < len(buffer) and (n := source.readinto(buffer[got:])):
                got += n
                if size + got > limit:
                    raise TooLarge(limit)
                # a slow client can take longer than half the lease to send one part; a clock check until then
                hold.refresh()
            hashes.update(buffer[:got])
            size += got
            return got

        name = new_id(NAME_LENGTH)
        key = self.key(name)
        hold = self.holds.hold(name)
        try:
            # A body known to fit in less than two parts (an upload session's piece: `limit` is its declared
            # length) goes up as one PutObject from a buffer of its size: 1 request, not 3 for a multipart upload,
            # whose create and complete cost more than the data on a nearby store (but none larger than S3 takes).
            part = min(max(self.part_size, -(-limit // MAX_PARTS)), MAX_COPY_PART)
            with scratch(limit + 1 if limit < min(2 * part, MAX_PUT) else part) as buffer:
                n = fill()
                if n < len(buffer):  # the whole body in one part: one request, nothing to abort
                    with self._faults(f"storing {name}"):
                        self._s3.put_object(Bucket=self.bucket, Key=key, Body=_View(buffer[:n]))
                else:
                    with self._multipart(key, hold) as upload:
                        while n:
                            upload.part(buffer[:n])
                            n = fill()
        except BaseException:
            hold.close()
            raise
        return Blob(name, size, hashes.sha256(), hold, hashes.quickxor())

    def concat(self, opened: Opened, extents: Iterable[Any]) -> Blob:
        """A new, held object made of `extents` (.blob, .offset, .length) of stored objects. No SHA-256.

        What crosses the host: S3 copies a part of at least 5 MiB server-side (UploadPartCopy with a byte
        range), but every part but the last must be that large. So a run of extents smaller than 5 MiB is
        read (ranged GETs) and uploaded as one part, topped up to 5 MiB from the next large extent when there
        is one (the large extent's rest is then copied): at most about 5 MiB per run of small extents passes
        through the host, none of a large extent beyond that top-up, and at most one part is in memory.
        Everything smaller than one part in all is read and PUT as one object. Zero extents: an empty object.
        """
        assert isinstance(opened, S3Opened)  # opened by this store
        segments = [(e.blob, e.offset, e.length) for e in extents if e.length]
        total = sum(length for _, _, length in segments)
        gather = max(self.part_size, math.ceil(total / (MAX_PARTS - 1)))
        plan = plan_parts(segments, gather)
        if len(plan) > MAX_PARTS:
            raise ValueError(f"{len(segments)} extents make {len(plan)} parts, more than S3's {MAX_PARTS}")
        name = new_id(NAME_LENGTH)
        key = self.key(name)
        hold = self.holds.hold(name)
        try:
            if len(plan) <= 1 and (not plan or plan[0][0] == "upload"):
                with self._gathered(opened, plan[0][1] if plan else []) as data, self._faults(f"storing {name}"):
                    self._s3.put_object(Bucket=self.bucket, Key=key, Body=_View(data))
            else:
                with self._multipart(key, hold) as upload:
                    for kind, pieces in plan:
                        if kind == "copy":
                            upload.copy(self.key(pieces[0][0]), pieces[0][1], pieces[0][2])
                        else:
                            with self._gathered(opened, pieces) as data:
                                upload.part(data)
        except BaseException:
            hold.close()
            raise
        return Blob(name, total, "", hold)

    @contextmanager
    def _gathered(self, opened: S3Opened, pieces: list[tuple[str, int, int]]) -> Iterator[memoryview]:
        """`pieces` read into the thread's buffer (scratch.py): one ranged GET of exactly each (readinto would read
        ahead past it)."""
        with scratch(sum(length for _, _, length in pieces)) as buffer:
            at = 0
            for data in opened.pieces(Extent(blob, offset, length) for blob, offset, length in pieces):
                buffer[at : at + len(data)] = data
                at += len(data)
            yield buffer

    @contextmanager
    def _multipart(self, key: str, hold: Hold) -> Iterator[_Upload]:
        """A multipart upload to `key`, completed when the block ends, aborted if it fails."""
        with self._faults(f"starting an upload to {key}"):
            upload_id = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        upload = _Upload(self, key, upload_id, hold)
        try:
            yield upload
            hold.refresh(force=True)  # AWS dates a completed object at its upload's start: the lease starts now
            try:
                with self._faults(f"completing {key}"):
                    self._s3.complete_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": upload.parts}
                    )
            except FileNotFoundError as exc:
                # NoSuchUpload: aborted meanwhile (a sweep that took this writer for dead), or completed by a
                # first try whose answer botocore did not get; either way this write cannot say it made the object
                raise Unavailable(f"the object store lost the upload to {key} as it completed it") from exc
        except BaseException:
            try:
                with self._faults(f"aborting the upload to {key}"):
                    self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception as exc:  # the write's own error is the one to report; sweep_tmp aborts it later
                log.warning("could not abort the multipart upload to %s (%s): sweep_tmp will", key, exc)
            raise

    # -- holds

    @contextmanager
    def unheld(self, names: Iterable[str]) -> Iterator[list[str]]:
        """The names among `names` that no live writer holds.

        Nothing needs holding for the block on S3: a writer only ever holds a new name, and holds it before
        its object can be seen, so a name seen in `listing` without a live hold can never gain one. Its
        writer, if any, let go after its database transaction (or died and its lease ran out).
        """
        names = list(dict.fromkeys(names))
        live = self.holds.live(names)
        yield [name for name in names if name not in live]

    # -- reading

    def open(self, names: Iterable[str] = ()) -> S3Opened:
        """Blobs to read. S3 holds nothing open: each name is HEADed now, to fail early if it is missing."""
        return S3Opened(self, names)

    def _head(self, name: str) -> int:
        with self._faults(f"reading {name}"):
            return self._s3.head_object(Bucket=self.bucket, Key=self.key(name))["ContentLength"]

    def _get(self, name: str, offset: int, length: int):
        """The streaming body of bytes [offset, offset + length) of `name` (length > 0): one ranged GET."""
        with self._faults(f"reading {name}"):
            response = self._s3.get_object(
                Bucket=self.bucket, Key=self.key(name), Range=f"bytes={offset}-{offset + length - 1}"
            )
        return response["Body"]

    # -- removing

    def delete(self, name: str) -> None:
        """Remove the object now. A GET already streaming it may finish; any later one is FileNotFoundError."""
        with self._faults(f"deleting {name}"):
            self._s3.delete_object(Bucket=self.bucket, Key=self.key(name))

    def release(self, name: str) -> None:
        """Nothing now: a download may still be reading it. gc deletes it once it has stayed unreferenced for
        the grace period."""

    def exists(self, name: str) -> bool:
        try:
            self._head(name)
        except FileNotFoundError:
            return False
        return True

    def listing(self, older_than: float) -> Iterator[str]:
        """Names of the blobs stored before epoch time `older_than` (by the store's LastModified)."""
        for page in self._pages("list_objects_v2", Prefix=f"{self._root}blobs/"):
            for item in page.get("Contents", ()):
                name = self._name(item["Key"])
                if name is not None and item["LastModified"].timestamp() < older_than:
                    yield name

    def partial_writes(self) -> list[str]:
        """The keys of the multipart uploads under the prefix not completed nor aborted."""
        return sorted(
            upload["Key"]
            for page in self._pages("list_multipart_uploads", Prefix=f"{self._root}blobs/")
            for upload in page.get("Uploads", ())
        )

    def sweep_tmp(self, older_than: float = 3600) -> int:
        """Abort multipart uploads started more than `older_than` seconds ago (by the store's clock) whose
        writer's hold is not live (it died), and delete the holds whose lease ended; returns how many. Any node
        may run it at any time."""
        uploads, now = [], 0.0
        for page in self._pages("list_multipart_uploads", Prefix=f"{self._root}blobs/"):
            now = max(now, _date(page))
            uploads += page.get("Uploads", ())
        old = [u for u in uploads if now - u["Initiated"].timestamp() > older_than]
        live = self.holds.live(name for u in old if (name := self._name(u["Key"])) is not None)
        removed = 0
        for upload in old:
            if self._name(upload["Key"]) in live:
                continue
            with suppress(FileNotFoundError), self._faults(f"aborting the upload to {upload['Key']}"):
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                removed += 1
        return removed + self.holds.sweep()

    # -- state

    def health(self) -> str:
        """ "ok", "full" (the store or its quota refuses the probe object), "no bucket" when the bucket does not
        exist (the log names it), or "not writable" when the probe cannot be written and deleted for another reason. Never raises."""
        try:
            with self.write(io.BytesIO(b"health"), 16, sha256=False, quickxor=False) as probe:
                self.delete(probe.name)
        except MissingBucket as exc:
            log.warning("the object store is not writable: %s", exc)
            return "no bucket"  # /healthz is public: the log and doctor name it
        except InsufficientStorage as exc:
            log.warning("the object store is full: %s", exc)
            return "full"
        except Exception as exc:  # an outage, refused credentials, or what the store says that _faults maps to none
            log.warning("the object store is not writable: %s", exc)
            return "not writable"
        return "ok"

    def free_space(self) -> int | None:
        return None  # an object store does not say

    def download_url(self, name: str, ttl: float, filename: str) -> str | None:
        """A presigned GET of the object for `ttl` seconds, served as an attachment named `filename`, when the
        store has an address for clients (download_endpoint_url); signed here, without asking the store. Such
        a URL cannot be revoked before it expires, and keeps serving the object for as long as gc leaves it."""
        if self._presigner is None:
            return None
        params = {
            "Bucket": self.bucket,
            "Key": self.key(name),
            "ResponseContentDisposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
            "ResponseContentType": mimetypes.guess_type(filename)[0] or "application/octet-stream",
        }
        return self._presigner.generate_presigned_url("get_object", Params=params, ExpiresIn=int(ttl))

    # -- requests

    def _no_bucket(self) -> bool:
        """Whether the store says the bucket does not exist (a HEAD of it is 404). Any other answer or failure is
        False: the request that asked keeps its own error."""
        from botocore import exceptions as e  # type: ignore[import-untyped]

        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except e.ClientError as exc:
            return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) == 404
        except e.BotoCoreError:
            return False
        return False

    def _pages(self, operation: str, **kwargs) -> Iterator[dict]:
        pages = iter(self._s3.get_paginator(operation).paginate(Bucket=self.bucket, **kwargs))
        while True:
            with self._faults(f"listing {kwargs.get('Prefix', '')}"):
                page = next(pages, None)
            if page is None:
                return
            yield page

    @contextmanager
    def _faults(self, what: str) -> Iterator[None]:
        """The store's failures as the faults the faces answer: InsufficientStorage (507) for a full store or
        quota, MissingBucket (503) for a bucket that does not exist, FileNotFoundError for a missing object or
        upload, and Unavailable (503) for any other error (an outage, throttling, refused credentials or none to
        be had, after botocore's retries)."""
        from botocore import exceptions as e

        try:
            yield
        except e.ClientError as exc:
            error = exc.response.get("Error", {})
            code, status = error.get("Code", ""), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket" or code in _BARE_404 and self._no_bucket():
                log.error(
                    "the object store has no bucket %r (while %s): create it, or name the right one in "
                    "WOPIHOST_STORAGE_URL",
                    self.bucket,
                    what,
                )
                raise MissingBucket(self.bucket, what) from exc
            if code in _MISSING or code == "NoSuchUpload":
                raise FileNotFoundError(f"the object store has no {what.split(' ', 1)[-1]} ({code})") from exc
            if code in _FULL or status == 507:
                raise InsufficientStorage(
                    f"the object store refuses {what}: it is full or over quota ({code or status})"
                ) from exc
            # Anything else too: no client's input reaches the store (its keys are ours), so an error it answers
            # (a proxy's 400, a region the store disagrees with, a code of a store this knows nothing of) is the
            # deployment's, which an admin fixes, not the request's.
            raise Unavailable(f"the object store cannot serve {what} now ({code or status})") from exc
        except (e.ConnectionError, e.HTTPClientError, e.IncompleteReadError) as exc:
            raise Unavailable(f"the object store is unreachable while {what} ({type(exc).__name__})") from exc
        except (e.NoCredentialsError, e.CredentialRetrievalError) as exc:
            # none found, or temporary ones (an instance role's, a container's, a credential_process's) that
            # botocore could not renew on the request that found them about to expire
            raise Unavailable(f"no credentials for the object store while {what} ({type(exc).__name__})") from exc


class _Upload:
    """The parts of one multipart upload, numbered in order."""

    def __init__(self, store: S3Store, key: str, upload_id: str, hold: Hold):
        self.store, self.key, self.upload_id, self.hold = store, key, upload_id, hold
        self.parts: list[dict] = []

    def part(self, data: memoryview) -> None:
        """Upload `data` (uploaded from the buffer itself, never copied)."""
        number = len(self.parts) + 1
        with self.store._faults(f"storing part {number} of {self.key}"):
            etag = self.store._s3.upload_part(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=_View(data)
            )["ETag"]
        self.parts.append({"PartNumber": number, "ETag": etag})
        self.hold.refresh()

    def copy(self, source: str, offset: int, length: int) -> None:
        """Bytes [offset, offset + length) of the object `source`, copied by the store: nothing crosses the host."""
        number = len(self.parts) + 1
        with self.store._faults(f"copying part {number} of {self.key}"):
            result = self.store._s3.upload_part_copy(
                Bucket=self.store.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.store.bucket, "Key": source},
                CopySourceRange=f"bytes={offset}-{offset + length - 1}",
            )["CopyPartResult"]
        self.parts.append({"PartNumber": number, "ETag": result["ETag"]})  # RGW's is unquoted: passed as given
        self.hold.refresh()


class S3Opened:
    """The S3 counterpart of extents.OpenBlobs: names and sizes, read with ranged GETs.

    S3 keeps nothing open: a blob deleted after it was opened here is gone for every later read
    (FileNotFoundError), so the domain must not delete what a reader may still need.
    """

    def __init__(self, store: S3Store, names: Iterable[str] = ()):
        self._store = store
        self._sizes: dict[str, int] = {}
        # readinto's GET: name, next offset, end, body, and how much it asked for
        self._stream: tuple[str, int, int, Any, int] | None = None
        for name in dict.fromkeys(names):
            self.add(name)

    def add(self, name: str, size: int | None = None) -> None:
        """Open `name`: HEAD it, to fail early if it is missing, unless its size is given."""
        if name not in self._sizes:
            self._sizes[name] = self._store._head(name) if size is None else size

    def adopt(self, other: S3Opened) -> None:
        self._sizes.update(other._sizes)
        other._sizes.clear()

    def subset(self, names: Iterable[str]) -> S3Opened:
        other = S3Opened(self._store)
        other._sizes = {name: self._sizes[name] for name in names}
        return other

    def size(self, name: str) -> int:
        """The object's size: HEAD once, then remembered."""
        self.add(name)
        return self._sizes[name]

    def pieces(self, extents: Iterable[Any], piece: int = PIECE) -> Iterator[bytes]:
        """The bytes of `extents`, in pieces of at most `piece` bytes: one ranged GET per extent, streamed."""
        for extent in extents:
            if not extent.length:
                continue
            body = self._store._get(extent.blob, extent.offset, extent.length)
            try:
                left = extent.length
                while left:
                    with self._store._faults(f"reading {extent.blob}"):
                        data = body.read(min(piece, left))
                    if not data:
                        raise OSError(f"blob {extent.blob} ends before offset {extent.offset + extent.length}")
                    left -= len(data)
                    yield data
            finally:
                body.close()

    def readinto(self, name: str, offset: int, buffer) -> int:
        """Bytes of `name` from `offset` into `buffer`; fewer at the object's end, 0 past it.

        A seekable reader (a GetFile, with or without a Range) reads on from where it stopped: its reads are
        served from one ranged GET, kept open while the reads continue it, rather than one GET per buffer. One
        from the start of the object (a whole download) asks for READ_AHEAD bytes; one from elsewhere (a Range,
        a zip's directory) for a piece, and each that continues the last for twice as much, up to READ_AHEAD:
        a reader that stops after a few bytes has not asked the store for 16 MiB, and one going on through a
        large file soon makes few GETs.
        """
        view = memoryview(buffer).cast("B")
        length = min(len(view), self.size(name) - offset)
        if length <= 0:
            return 0
        if self._stream is None or self._stream[:2] != (name, offset) or self._stream[2] - offset < length:
            last = self._stream
            if last is not None and last[:2] == (name, offset):
                window = min(READ_AHEAD, 2 * last[4])
            else:
                window = READ_AHEAD if offset == 0 else PIECE
            self._end_stream()
            end = min(self.size(name), offset + max(length, window))
            self._stream = (name, offset, end, self._store._get(name, offset, end - offset), window)
        body = self._stream[3]
        got = 0
        try:
            with self._store._faults(f"reading {name}"):
                while got < length and (data := body.read(min(PIECE, length - got))):
                    view[got : got + len(data)] = data
                    got += len(data)
        except BaseException:
            self._end_stream()
            raise
        self._stream = (name, offset + got, *self._stream[2:])
        return got

    def _end_stream(self) -> None:
        if self._stream is not None:
            self._stream[3].close()
            self._stream = None

    def whole_file(self, name: str) -> None:
        return None  # no local file to sendfile: the content is streamed with pieces()

    def close(self) -> None:
        self._end_stream()
        self._sizes.clear()

    def __enter__(self) -> S3Opened:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


Segment = tuple[str, int, int]  # blob, offset, length


def plan_parts(segments: list[Segment], gather: int) -> list[tuple[str, list[Segment]]]:
    """The parts of a concatenation: ("copy", [segment]) copied by the store, or ("upload", segments) read and
    uploaded through the host, at most `gather` bytes (>= MIN_PART). Every part but the last is >= MIN_PART.

    Small segments are gathered into parts of up to `gather` bytes. A run of them still short of MIN_PART is
    topped up to exactly MIN_PART from a large neighbour that keeps MIN_PART or more for its own copy, so little
    crosses the host; a neighbour too short to spare that joins the run instead.
    """
    plan: list[tuple[str, list[Segment]]] = []
    pending: list[Segment] = []
    pending_size = 0

    def flush() -> None:
        nonlocal pending_size
        if pending:
            plan.append(("upload", pending.copy()))
            pending.clear()
            pending_size = 0

    for blob, offset, left in segments:
        while left:
            need = MIN_PART - pending_size  # > 0 while the run could not be a part of its own
            top_up = bool(pending) and need > 0 and left - need >= MIN_PART
            if left >= MIN_PART and need <= 0 or left >= MIN_PART and not pending:
                flush()
                n = min(left, MAX_COPY_PART)
                plan.append(("copy", [(blob, offset, n)]))
            else:
                n = need if top_up else min(left, gather - pending_size)
                pending.append((blob, offset, n))
                pending_size += n
                if top_up or pending_size >= gather:
                    flush()
            offset += n
            left -= n
    flush()
    return plan


class _View(io.RawIOBase):
    """A read-only, seekable file over a memoryview, so that botocore sends (and re-sends on a retry) the part
    straight from the write's buffer rather than from a copy."""

    def __init__(self, view: memoryview):
        super().__init__()
        self._view, self._position = view, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._position + size)
        data = bytes(self._view[self._position : end])
        self._position = max(self._position, end)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def __len__(self) -> int:
        return len(self._view)


def _date(page: dict) -> float:
    """The store's clock, from a response's Date header (local time if it gave none)."""
    date = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return time.time()
