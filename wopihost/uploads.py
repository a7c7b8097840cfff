"""Resumable uploads in byte ranges (Graph's createUploadSession, docs/graph.md §4), on the upload
sessions that CSPP Plus uses too (sessions.py).

A session is made for a new file (a folder and a name) or for an existing file. Its
fragments arrive in order, each stored as one fsynced piece by one compare-and-set. When
the last byte is in (or, for a deferCommit session, when the client says so) the session
becomes the file: the file's content is the session's pieces as they lie, so completing
a session of any size writes a few rows and no content (of more than MAX_BLOBS pieces, they
are first joined into that many: sessions.merge_pieces). The file is then an ordinary
file of the host, WOPI's included: new version, new sequence number, and its CSPP
signature chunked from the bytes when first asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock, parse_iso
from .db import Database
from .drives import Drives
from .errors import WopiError, not_found
from .files import Admit, Files, lock_folder_at
from .models import File, Folder, UploadSession, name_key
from .names import counted
from .repository import file_named, load_file, load_file_in_folder, lock_folder
from .sessions import OffsetMismatch, UploadSessions, delete_session, total_mismatch
from .shares import require_link_reach
from .storage import Readable
from .tree import Tree


@dataclass(frozen=True)
class Target:
    """What a session becomes: `file_id` (an existing file) or a new file `name` in `folder_id`, with what
    the client said of it. Kept as JSON in the session row."""

    drive_id: str
    file_id: str | None = None
    folder_id: str | None = None
    name: str | None = None
    # Folders below `folder_id` the file goes in that were missing at create: made as it lands, at completion, so a
    # session that fails, is cancelled or expires leaves no folder behind (docs/graph.md §4.1)
    path: list[str] | None = None
    conflict: str = "replace"  # what Graph does when the client says nothing (docs/graph.md §4.2)
    defer: bool = False
    description: str | None = None
    fs_created: str | None = None  # ISO 8601, as parsed from the request
    fs_modified: str | None = None
    # The file an If-Match at create accepted, and what its tag named then (Held): completion refuses to
    # replace another file that has taken its name, or that file changed as the tag says (412).
    expect_file: str | None = None
    expect_sequence: int | None = None
    expect_version: int | None = None
    share_link: str | None = None  # made through this share link, not as a member of the drive

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Target:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Held:
    """What an If-Match at create holds the file it accepted to until completion, as the face reads its tag:
    the file's sequence number (a tag of the item, which a rename or move changes too) or its version (a tag
    of its content); neither for `*`, which holds only that it is still that file."""

    sequence: int | None = None
    version: int | None = None


@dataclass(frozen=True)
class Status:
    expires_at: datetime
    received: int
    total: int | None
    finished: bool
    # made through a share link: what answers for it names nothing the link does not reach (docs/graph.md §11)
    through_link: bool = False
    drive_id: str | None = None  # of its file (a Graph session's; a CSPP session has no target)


@dataclass(frozen=True)
class Progress:
    """What a fragment did: `file` is set once the session has become a file (`created`: a new one)."""

    status: Status
    file: File | None = None
    created: bool = False


READ_OUT_PIECE = 64 << 10  # what a repeated fragment's body is read in, to be thrown away (Uploads._read_out)


def range_error(inner: str, reason: str, status: int = 416) -> WopiError:
    return WopiError(status, reason, code=f"invalidRange/{inner}")


def _fragment_too_large(length: int, most: int) -> WopiError:
    return WopiError(
        413,
        f"a fragment may have at most {most} bytes, this one has {length}",
        code="requestSizeExceeded/maxFragmentLengthExceeded",
    )


class Uploads:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        sessions: UploadSessions,
        files: Files,
        drives: Drives,
        tree: Tree,
        max_file_size: int,
        max_fragment: int,
    ):
        self.db = db
        self.clock = clock
        self.sessions = sessions
        self.files = files
        self.drives = drives
        self.tree = tree
        self.max_file_size = max_file_size
        self.max_fragment = max_fragment

    def create(
        self,
        user_id: str,
        target: Target,
        file_size: int | None = None,
        if_match: Callable[[File | None], Held | None] | None = None,
    ) -> tuple[str, Status]:
        """A new session (docs/graph.md §4.1): its token and status. The declared `file_size` is checked
        against the largest file and the drive's quota before any byte is sent. `if_match` checks the file
        that would be replaced as it is now, or None where there is none, and says what of it must still hold
        at completion (None: nothing, as for If-None-Match alone)."""
        with self.db.read() as s:
            existing: File | None
            if target.file_id is not None:
                existing = load_file(s, target.file_id)
            else:
                assert target.folder_id is not None and target.name is not None  # a new file's target names both
                # a folder still to make holds no file
                existing = None if target.path else file_named(s, target.folder_id, target.name)
            if if_match is not None:
                held = if_match(existing)
                if held is not None and existing is not None:
                    target = replace(
                        target, expect_file=existing.id, expect_sequence=held.sequence, expect_version=held.version
                    )
            if file_size is not None:
                self._check_size(file_size)
                # only a file the upload replaces frees its bytes: rename and fail leave the one of that name
                replaced = existing if target.file_id is not None or target.conflict == "replace" else None
                self.drives.check_room(s, target.drive_id, file_size - (replaced.size if replaced else 0))
        token = self.sessions.create(target.file_id, user_id, kind="graph", target=target.to_json(), total=file_size)
        return token, self.status(token)

    def status(self, token: str) -> Status:
        with self.db.read() as s:
            return _status(self.sessions.state(s, token, None))

    def put(
        self, token: str, first: int, last: int, total: int, body: Readable, declared: int | None = None
    ) -> Progress:
        """A fragment: bytes first..last (inclusive) of `total`, all or nothing; `declared` is the body's
        length where known beforehand. The final fragment sent again is answered as its first copy was, or
        is being, whatever its body holds, once it has come whole (_again)."""
        with self.db.read() as s:
            state = self.sessions.state(s, token, None)
        if state.result is not None or _whole(state, last, total):
            return self._again(token, state, last, total, body)
        if state.total is not None and total != state.total:
            raise total_mismatch(total, state.total)
        self._check_size(total)
        length = last - first + 1
        if declared is not None and declared != length:
            raise WopiError(400, f"the body has {declared} bytes, the Content-Range {length}", code="invalidRequest")
        if length > self.max_fragment:
            raise _fragment_too_large(length, self.max_fragment)
        self._check_offset(first, state.received)
        try:
            end = self.sessions.append(token, None, first, length, body, total, "the Content-Range")
        except OffsetMismatch as exc:  # another request stored this range first
            with self.db.read() as s:
                state = self.sessions.state(s, token, None)
            if state.result is not None or _whole(state, last, total):  # ... and it was the last
                return self._again(token, state, last, total, body)
            self._check_offset(exc.offset, exc.received)
            raise
        if end == total and not Target.from_json(state.target).defer:
            file, created = self.complete(token)
            return Progress(self.status(token), file, created)
        # as the compare-and-set left it (its expiry is its own `now` + ttl, a moment earlier)
        return Progress(Status(self.clock.now() + self.sessions.ttl, end, total, False, **_of_target(state)))

    def commit(self, token: str) -> Progress:
        """The holder of the upload URL completes the session (a deferCommit one, or one whose completion
        failed), and is answered as a final fragment is."""
        with self.db.read() as s:
            state = self.sessions.state(s, token, None)
        file, created = self.complete(token)
        return Progress(replace(_status(state), finished=True), file, created)

    def _again(self, token: str, state, last: int, total: int, body: Readable) -> Progress:
        """A fragment for a session that holds every byte (its copy was stored first), or has become a file:
        the final one again gets what its first copy got (_repeated, _final_again), any other range 416. Its body
        is read first, and thrown away: a copy that breaks off is a broken request (400), which must neither
        complete the session nor take its answer (201) from the copy that was whole, still under way."""
        if state.result is not None and (total != state.total or last != total - 1):
            raise range_error("fragmentOverlap", "the upload session is complete; this range was received")
        self._read_out(body)
        if state.result is not None:
            with self.db.read() as s:
                return self._repeated(s, state)
        return self._final_again(token, state)

    def _read_out(self, body: Readable) -> None:
        """Read `body` to its end (a fragment may be at most max_fragment bytes: 413 past that)."""
        view, read = memoryview(bytearray(READ_OUT_PIECE)), 0
        while n := body.readinto(view):
            read += n
            if read > self.max_fragment:
                raise _fragment_too_large(read, self.max_fragment)

    def _final_again(self, token: str, state) -> Progress:
        """The final fragment again, for a session that holds every byte and is no file yet: its bytes were
        stored in one transaction and the file is made in another, which failed (a 5xx, which a client
        retries as it was; 409, 412, 423 or 507, answered again unless their cause is gone) or is still
        under way in another worker (complete() waits for its row lock and answers with its file). A
        deferCommit session answers as its last fragment did: nothing is made until the client says so."""
        if Target.from_json(state.target).defer:
            return Progress(_status(state))
        file, created = self.complete(token)
        return Progress(self.status(token), file, created)

    def _repeated(self, s, state) -> Progress:
        """The final fragment again, for a session that has become a file (msgraph-core always sends it twice,
        the second time with or without its bytes): the file."""
        return Progress(_status(state), self._result(s, state, None), created=False)

    def complete(
        self,
        token: str,
        user_id: str | None = None,
        redirect: Redirect | None = None,
        if_match: Callable[[File | None], None] | None = None,
        admit: Admit | None = None,
    ) -> tuple[File, bool]:
        """The session becomes its file (or, with `redirect`, the file that function names); whether the
        file is new. A session that has already become a file answers with it. `user_id` is who asks (None:
        the holder of the upload URL, which is the session's own credential); `if_match` checks a file
        that would be replaced; `admit` (as in Files.put_named, with no growth: the quota is checked here)
        whether who asks may still make it, once every other lock is taken."""
        unused: list[str] = []
        if self._all_in(token):  # an incomplete session is refused below: copying its pieces would be for nothing
            self.sessions.merge_pieces(token)  # before they become the file's content: every read opens them all
        try:
            with self.db.write() as s:
                self._lock_own_file(s, token, redirect)
                row = self.sessions.get_graph(s, token)
                if user_id is not None and row.user_id != user_id:
                    raise WopiError(403, "the upload session is another user's", code="accessDenied")
                if row.result is not None:
                    return self._result(s, row, redirect), False
                if row.total is None or row.received != row.total:
                    raise WopiError(
                        400,
                        f"the upload session has {row.received} of {row.total} bytes",
                        code="invalidRequest/uploadSessionIncomplete",
                    )
                assert row.target is not None  # every Graph session has one (kind checked by get_graph)
                target = Target.from_json(row.target)
                if redirect is not None:
                    target = redirect(s, target)
                if target.path:  # its folders, made with the file, or not at all
                    assert target.folder_id is not None  # a new file's target names its folder
                    folder_id = self.tree.make_path(s, target.folder_id, target.path, row.user_id)
                    target = replace(target, folder_id=folder_id, path=None)
                file, created, unused = self._become_file(s, row, target, if_match)
                if admit is not None:
                    admit(s, file.folder_id, 0)
                self.sessions.finish_in(s, row, file.id)
                row.target = target.to_json()  # as it became the file (redirected?): what a repeat is judged by
        except WopiError as error:
            if error.status in (409, 412, 423, 507):  # the session stays for another try (sourceUrl)
                self.sessions.touch(token, None)
            raise
        for name in unused:
            self.files.blobs.release(name)
        return file, created

    def _all_in(self, token: str) -> bool:
        """Whether session `token` holds every byte and is no file yet (its errors, 404 or 410, as `complete`'s)."""
        with self.db.read() as s:
            row = self.sessions.get_graph(s, token)
            return row.result is None and row.total is not None and row.received == row.total

    def _lock_own_file(self, s: Session, token: str, redirect: Redirect | None) -> None:
        """The file a session made for one becomes (and its folder), locked before the session's row, as a deletion
        of the file locks them before it ends the file's sessions (sessions.end_with_file): locked the other way
        round, a completion and a deletion at once would deadlock on PostgreSQL. 404 if the file is gone. With
        `redirect`, the folder the file goes to as well, the two in id order as every change takes several
        (tree.py): two commits into each other's folders would deadlock otherwise."""
        target = s.scalar(sa.select(UploadSession.target).where(UploadSession.token == token))
        file_id = Target.from_json(target).file_id if target is not None else None
        if redirect is None:
            if file_id is not None:
                load_file_in_folder(s, file_id)
            return
        while True:
            point = s.begin_nested()
            own = s.scalar(sa.select(File.folder_id).where(File.id == file_id)) if file_id is not None else None
            if file_id is not None and own is None:
                raise not_found()
            there = redirect.where(s)[0].id
            for folder_id in sorted({there} | ({own} if own is not None else set())):
                lock_folder(s, folder_id)
            moved = file_id is not None and load_file(s, file_id).folder_id != own
            if not moved and redirect.where(s)[0].id == there:
                point.commit()  # its locks are the transaction's until it ends
                return
            point.rollback()  # moved meanwhile: let go of them all and take them again in order

    def _result(self, s, row, redirect: Redirect | None) -> File:
        """The file a finished session became, for whoever may still reach it, and only where a redirect
        asks for it there (a finished session is not a way to reach a file somewhere else)."""
        file = load_file(s, row.result)
        self._reach(
            s, row, Target.from_json(row.target), file.folder_id, s.get(Folder, file.folder_id).drive_id, file.id
        )
        if redirect is not None:
            target = redirect(s, Target.from_json(row.target))
            if (file.folder_id, name_key(file.name)) != (target.folder_id, name_key(target.name or "")):
                raise WopiError(409, "the upload session has already become another file", code="conflict")
        return file

    def cancel(self, token: str) -> None:
        with self.db.write() as s:
            blobs = delete_session(s, self.sessions.get_graph(s, token).token)
        for name in blobs:
            self.files.blobs.release(name)

    def _become_file(
        self, s, row: UploadSession, target: Target, if_match: Callable[[File | None], None] | None
    ) -> tuple[File, bool, list[str]]:
        assert row.total is not None  # complete() checked the session is whole
        extents, digest = self.sessions.content(s, row.token)
        existing: File | None
        if target.file_id is not None:
            existing = load_file_in_folder(s, target.file_id)
            self._reach(s, row, target, existing.folder_id, target.drive_id, existing.id)
            if if_match is not None:
                if_match(existing)
            self.files.check_writable(s, existing)
        else:
            assert target.folder_id is not None and target.name is not None  # a new file's target names both
            existing = self.files.claim_name(s, target.folder_id, target.name, target.conflict, row.user_id, if_match)
            self._reach(s, row, target, target.folder_id, target.drive_id)  # the folder locked first: see require_reach
        if (target.expect_file is not None or target.expect_sequence is not None) and (
            existing is None
            or target.expect_file not in (None, existing.id)  # None: a session made before it was kept
            or target.expect_sequence not in (None, existing.sequence_number)
            or target.expect_version not in (None, existing.version)
        ):
            raise WopiError(
                412,
                "the file changed since the upload session was created with If-Match",
                code="preconditionFailed/entityTagDoesNotMatch",
            )
        # last: the quota's lock (drives.py) is taken after every row lock
        self.drives.check_room(s, target.drive_id, row.total - (existing.size if existing is not None else 0))
        if existing is None:
            assert target.folder_id is not None and target.name is not None  # as above: no file_id
            name = self.files.free_name(s, target.folder_id, target.name, style=counted)
            file = self.files.insert(s, target.folder_id, name, row.user_id, "", row.total, "", digest, extents)
            unused: list[str] = []
        else:
            file = existing
            unused = self.files.set_content(s, file, row.user_id, "", row.total, "", digest, extents)
        _describe(file, target)
        return file, existing is None, unused

    def _reach(
        self, s, row: UploadSession, target: Target, folder_id: str, drive_id: str, file_id: str | None = None
    ) -> None:
        """Whoever made the session may still write there (require_reach), as they made it."""
        require_reach(s, self.drives, row.user_id, target.share_link, drive_id, folder_id, file_id)

    def _check_size(self, total: int) -> None:
        if total > self.max_file_size:
            raise WopiError(
                400,
                f"the declared file size {total} is larger than the largest allowed, {self.max_file_size} bytes",
                code="invalidRequest/maxFileSizeExceeded",
            )
        self.sessions.check_total(total)

    @staticmethod
    def _check_offset(first: int, received: int) -> None:
        if first < received:
            raise range_error("fragmentOverlap", f"bytes {first}.. overlap the {received} bytes received")
        if first > received:
            raise range_error("fragmentOutOfOrder", f"the next fragment starts at byte {received}, not {first}")


def require_reach(
    s, drives: Drives, user_id: str, share_link: str | None, drive_id: str, folder_id: str, file_id: str | None = None
) -> None:
    """`user_id` may still write the file `file_id`, or put a new one in `folder_id`, of the drive `drive_id`: as
    a member of the drive (one may have been removed meanwhile), or through the share link `share_link` (revoked
    meanwhile, or the folder moved out of what it shares?); 403 otherwise. Asked in the transaction that lands an
    upload (a session's or a simple one), once the folder's and the file's rows are locked, so that the folder
    is where it is found, and before the quota's lock, the last taken (drives.py)."""
    if share_link is None:
        drives.reachable(s, user_id, drive_id)
    else:
        require_link_reach(s, share_link, folder_id, writing=True, file_id=file_id)


def _whole(state, last: int, total: int) -> bool:
    """Whether a fragment ending at `last` of `total` is the final one of a session that holds all its bytes
    but has not become a file."""
    return state.result is None and state.total == total == state.received and last == total - 1


def _status(state) -> Status:
    return Status(state.expires_at, state.received, state.total, state.result is not None, **_of_target(state))


def _of_target(state) -> dict:
    if state.target is None:
        return {}
    target = Target.from_json(state.target)
    return {"through_link": target.share_link is not None, "drive_id": target.drive_id}


def _describe(item: File | Folder, target: Target) -> None:
    if target.description is not None:
        item.description = target.description
    if target.fs_created is not None:
        item.fs_created_at = parse_iso(target.fs_created)
    if target.fs_modified is not None:
        item.fs_modified_at = parse_iso(target.fs_modified)


@dataclass(frozen=True)
class Redirect:
    """For Graph's commit through @microsoft.graph.sourceUrl: the session's bytes go to the name in the folder
    of `drive_id` that `where` finds (a path's: asked in the transaction that completes the session, once the
    folder is locked, so that it names what is at the path then: files.Locate) instead of where the session
    was made for, reached as the commit reaches it (as a member of the drive, or through `share_link`), however
    the session was made."""

    drive_id: str
    where: Callable[[Session], tuple[Folder, str]]
    conflict: str
    share_link: str | None = None

    def __call__(self, s: Session, target: Target) -> Target:
        found: list[tuple[Folder, str]] = []

        def folder_at(s: Session) -> Folder:
            found.append(self.where(s))
            return found[-1][0]

        folder = lock_folder_at(s, folder_at)  # its last answer is the one it found the folder locked by
        return replace(
            target,
            drive_id=self.drive_id,
            file_id=None,
            folder_id=folder.id,
            name=found[-1][1],
            path=None,
            conflict=self.conflict,
            share_link=self.share_link,
            expect_file=None,
            expect_sequence=None,
            expect_version=None,
        )
