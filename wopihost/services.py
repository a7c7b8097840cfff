"""The domain objects one process needs, built once from the settings (by the app and by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

from .chunked import ChunkedFiles
from .clock import Clock
from .coauth import CoauthLocks
from .config import Settings
from .db import Database
from .drives import Drives
from .files import Files
from .locks import Locks
from .models import File, User
from .proofcheck import ProofCheck, discovery_cache
from .sessions import UploadSessions
from .storage import BlobStore
from .tokens import API, IssuedToken, Tokens
from .tree import Tree
from .uploads import Uploads
from .workbooks import Workbooks
from .users import check_user_info, ensure_user, root_folder_id


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    blobs: BlobStore
    tokens: Tokens
    files: Files
    locks: Locks
    sessions: UploadSessions
    chunked: ChunkedFiles
    coauth: CoauthLocks
    proofs: ProofCheck
    drives: Drives
    tree: Tree
    uploads: Uploads
    workbooks: Workbooks

    @classmethod
    def create(cls, settings: Settings, clock: Clock | None = None) -> "Services":
        clock = clock or Clock()
        db = Database(settings.database_url, settings.database_busy_timeout)
        blobs = BlobStore(settings.blob_dir, settings.tmp_dir, settings.min_free_space)
        sessions = UploadSessions(db, blobs, clock, settings.upload_session_ttl, settings.max_upload_session_size,
                                  settings.max_upload_sessions_per_user, settings.max_upload_bytes_per_user)
        files = Files(db, blobs, clock, settings.max_file_size)
        drives = Drives(db, clock, settings.drive_quota)
        return cls(settings=settings, clock=clock, db=db, blobs=blobs,
                   tokens=Tokens(settings.secret_key, clock),
                   files=files,
                   locks=Locks(db, clock),
                   sessions=sessions,
                   chunked=ChunkedFiles(db, blobs, clock, sessions, settings),
                   coauth=CoauthLocks(db, clock),
                   proofs=ProofCheck(settings, clock, discovery_cache(settings, clock)),
                   drives=drives,
                   tree=Tree(db, blobs, clock, files),
                   uploads=Uploads(db, clock, sessions, files, drives, settings.max_file_size,
                                   settings.max_fragment_size),
                   workbooks=Workbooks(db, blobs, clock, files, settings.max_workbook_size,
                                       settings.workbook_persistent_ttl, settings.workbook_temporary_ttl))

    # -- URLs ---------------------------------------------------------------------

    def wopi_src(self, file_id: str) -> str:
        return f"{self.settings.public_url}/wopi/files/{file_id}"

    def host_page_url(self, action: str, file_id: str) -> str:
        return self.settings.host_page_url.format(action=action, file_id=file_id)

    # -- operations that span several domain objects ------------------------------

    def add_file(self, owner_id: str, name: str, source: BinaryIO) -> File:
        """A new file in the owner's root folder (the owner is created if new)."""
        with self.db.write() as s:
            ensure_user(s, owner_id, self.clock.now())
            folder_id = root_folder_id(s, owner_id)
        return self.files.create(owner_id, folder_id, name, source)

    def issue_token(self, file_id: str, user_id: str, can_write: bool,
                    expires_at: datetime | None = None) -> IssuedToken:
        with self.db.write() as s:
            ensure_user(s, user_id, self.clock.now())
            expires_at = expires_at or self.clock.now() + timedelta(seconds=self.settings.token_ttl)
            return self.tokens.issue(s, file_id, user_id, can_write, expires_at)

    def issue_api_token(self, user_id: str, can_write: bool, expires_at: datetime | None = None
                        ) -> tuple[IssuedToken, str]:
        """An API token (Graph) for the user, and the id of the user's drive (made on first use)."""
        issued = self.issue_token(API, user_id, can_write, expires_at)
        return issued, self.drives.personal(user_id).id

    def user(self, user_id: str) -> User:
        with self.db.read() as s:
            user = s.get(User, user_id)
        if user is not None:
            return user
        with self.db.write() as s:  # a token's user always exists; this is for users made elsewhere
            return ensure_user(s, user_id, self.clock.now())

    def put_user_info(self, user_id: str, text: str) -> None:
        with self.db.write() as s:
            ensure_user(s, user_id, self.clock.now()).user_info = check_user_info(text)
