"""The domain objects one process needs, built once from the settings (by the app and by the CLI)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .activities import Activities
from .chunked import ChunkedFiles
from .clock import Clock
from .coauth import CoauthLocks
from .config import MissingDataDir, Settings, missing
from .containers import Containers
from .db import Database
from .discovery import DiscoveryCache
from .drives import Drives
from .files import Files
from .launches import PATH as HOST_PAGE_PATH
from .launches import LaunchLinks
from .locks import Locks
from .models import File, User
from .prepared import Statements
from .proofcheck import ProofCheck, discovery_cache
from .sessions import UploadSessions
from .shares import ShareLinks, share_url
from .storage import Readable, Storage, open_storage
from .tokens import API, FILE_URL, Grant, IssuedToken, Tokens, container
from .tree import Tree
from .uploads import Uploads
from .users import check_user_info, ensure_user, root_folder_id
from .workbooks import Workbooks


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    blobs: Storage
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
    containers: Containers
    shares: ShareLinks
    activities: Activities
    launches: LaunchLinks
    discovery: DiscoveryCache | None  # the WOPI client's, when WOPIHOST_DISCOVERY_URL names one

    @classmethod
    def create(cls, settings: Settings, clock: Clock | None = None, make_data_dir: bool = True) -> Services:
        """`make_data_dir` False (the commands that only look, or change the database alone): a data directory
        that does not exist is not made, and is refused (MissingDataDir) where the database or the content is
        kept there; one made by mistake (a WOPIHOST_DATA_DIR mistyped) would hide the mistake."""
        clock = clock or Clock()
        if make_data_dir or not missing(settings.data_dir):
            # the node's own directory (SQLite's database by default, local content, temporary files), whatever
            # the storage: a path that cannot be a directory (one through a file) is reported as such, by mkdir's
            # error, not as a database that cannot open; a missing one only the commands that set a host up make
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        else:
            refuse_missing_data_dir(settings, content=True)
        db = Database(settings.database_url, settings.database_busy_timeout, settings.sqlite_cache_size)
        blobs = open_storage(settings, db, clock)
        sessions = UploadSessions(
            db,
            blobs,
            clock,
            settings.upload_session_ttl,
            settings.max_upload_session_size,
            settings.max_upload_sessions_per_user,
            settings.max_upload_bytes_per_user,
        )
        files = Files(db, blobs, clock, settings.max_file_size)
        tokens = Tokens(settings.secret_key, clock)
        drives = Drives(db, clock, settings.drive_quota, tokens)
        tree = Tree(db, blobs, clock, files)
        discovery = discovery_cache(settings, clock)
        return cls(
            settings=settings,
            clock=clock,
            db=db,
            blobs=blobs,
            tokens=tokens,
            files=files,
            locks=Locks(db, clock),
            sessions=sessions,
            chunked=ChunkedFiles(db, blobs, clock, sessions, settings),
            coauth=CoauthLocks(db, clock),
            proofs=ProofCheck(settings, clock, discovery),
            drives=drives,
            tree=tree,
            uploads=Uploads(
                db, clock, sessions, files, drives, tree, settings.max_file_size, settings.max_fragment_size
            ),
            workbooks=Workbooks(
                db,
                blobs,
                clock,
                files,
                settings.max_workbook_size,
                settings.workbook_persistent_ttl,
                settings.workbook_temporary_ttl,
                settings.max_workbook_sessions_per_user,
                settings.workbook_memory,
                settings.workbook_seconds,
            ),
            containers=Containers(db, tree, files),
            shares=ShareLinks(db, clock),
            activities=Activities(db, clock),
            launches=LaunchLinks(db, tokens, drives, clock),
            discovery=discovery,
        )

    # -- URLs ---------------------------------------------------------------------

    def wopi_src(self, file_id: str) -> str:
        return f"{self.settings.public_url}/wopi/files/{file_id}"

    def host_page_url(self, action: str, file_id: str, grant: Grant) -> str:
        """HostViewUrl / HostEditUrl: the integrator's own host page if WOPIHOST_HOST_PAGE_URL names one, else a
        launch link of the built-in one that opens with the caller's token."""
        if self.settings.host_page_url:
            return self.settings.host_page_url.format(action=action, file_id=file_id)
        return self.launch_url(action, self.launches.for_grant(grant, file_id))

    @functools.cached_property
    def post_message_origin(self) -> str:
        """CheckFileInfo's PostMessageOrigin: the origin of the host page, the only one a WOPI client posts to."""
        parts = urlsplit(self.settings.host_page_url or self.settings.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    def launch_url(self, action: str, ticket: str) -> str:
        return f"{self.settings.public_url}{HOST_PAGE_PATH}/{action}/{ticket}"

    def file_url(self, grant, file_id: str) -> str:
        """CheckFileInfo's FileUrl: the file's content, with no token, for WOPIHOST_FILE_URL_TTL."""
        ticket = self.tokens.ticket(grant, file_id, timedelta(seconds=self.settings.file_url_ttl), FILE_URL)
        return f"{self.settings.public_url}/wopi/download/{ticket}"

    def share_url(self, link_id: str) -> str:
        return share_url(self.settings.public_url, link_id)

    # -- operations that span several domain objects ------------------------------

    def add_file(self, owner_id: str, name: str, source: Readable, folder: list[str] | None = None) -> File:
        """A new file in the owner's root folder, or in the folder at the path `folder` below it (made where
        missing); the owner is created if new. The content is written first, and the owner, the folders and the
        file land in one transaction: a failure (a source that cannot be read, a name a file has) leaves nothing."""

        def place(s: Session) -> str:
            ensure_user(s, owner_id, self.clock.now())
            return self.tree.make_path(s, root_folder_id(s, owner_id), folder or [], owner_id)

        return self.files.create(owner_id, place, name, source)

    def issue_token(
        self, file_id: str, user_id: str, can_write: bool, expires_at: datetime | None = None, folders: str = ""
    ) -> IssuedToken:
        """A WOPI token for a file; `folders` (FOLDER_RIGHTS) is what the containers above it may be used
        for through the tokens its responses hand out (none: their names only)."""
        return self._issue(file_id, user_id, "w" if can_write else "r", expires_at, folders)

    def issue_container_token(
        self, folder_id: str, user_id: str, rights: str, expires_at: datetime | None = None
    ) -> IssuedToken:
        """A WOPI token for a container (folder): `rights` (FOLDER_RIGHTS) there and below, none above."""
        return self._issue(container(folder_id), user_id, rights, expires_at, "")

    def _issue(self, resource: str, user_id: str, rights: str, expires_at: datetime | None, reach: str) -> IssuedToken:
        with self.db.write() as s:
            ensure_user(s, user_id, self.clock.now())
            expires_at = expires_at or self.clock.now() + timedelta(seconds=self.settings.token_ttl)
            return self.tokens.issue(s, resource, user_id, rights, expires_at, reach)

    def issue_api_token(
        self, user_id: str, can_write: bool, expires_at: datetime | None = None
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

    def put_user_info(self, user_id: str, text: str, admit: Callable[[Statements], None] | None = None) -> None:
        """PutUserInfo. `admit(t)` whether the change may still land, asked in its transaction (as Files.put asks
        it): the token may have been revoked while the body came."""
        with self.db.write() as s:
            ensure_user(s, user_id, self.clock.now()).user_info = check_user_info(text)
            Statements.ask(s, admit)


def refuse_missing_data_dir(settings: Settings, content: bool) -> None:
    """MissingDataDir if the data directory does not exist and holds what is needed: the SQLite database, or
    (`content`) the files' contents in the local store."""
    if not missing(settings.data_dir):
        return
    url = sa.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and Path(url.database or "").resolve().is_relative_to(settings.data_dir):
        raise MissingDataDir(settings.data_dir, "the database is kept")
    if content and not settings.storage_url:
        raise MissingDataDir(settings.data_dir, "the files' contents are kept")
