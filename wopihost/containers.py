"""WOPI containers: the folder tree as WOPI sees it (docs/wopi.md §4).

A container is a folder; a drive's root folder is its root container. Everything here is
the tree's own rules (tree.py, files.py) in WOPI's terms: names that a suggested target
adjusts and a specific one refuses, a delete that refuses a container that is not empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .db import Database
from .errors import WopiError, bad_request, not_found
from .files import Admit, Files, Target
from .ids import is_id
from .models import Drive, File, Folder
from .names import InvalidName, Named, check, encode_utf7, numbered_folder, sanitize, split_extension
from .repository import lock_folder
from .tree import Tree

ROOT_NAME = "root"  # what a root container is called where its drive has no name (Graph calls it that too)
CONTAINER_NAME = Named("the container name", folder=True)  # how a refused name is spoken of
# WOPI's free names for containers, in suggested mode and in a 409's X-WOPI-ValidRelativeTarget alike: ' (n)' at the
# end, as its files get them (Files.free_name), not OneDrive's ' 1' that Graph's folders get
FREE_NAME = numbered_folder


@dataclass(frozen=True)
class Container:
    folder: Folder
    name: str

    @property
    def id(self) -> str:
        return self.folder.id

    @property
    def is_root(self) -> bool:
        return self.folder.parent_id is None


def container_not_found() -> WopiError:
    """Every container operation's 404 for a container that is not there (deleted, or never one)."""
    return not_found("container not found")


@contextmanager
def _as_container() -> Iterator[None]:
    """The 404 of the folder tree's writers for a folder that is gone (lock_folder's, in a folder's words), in a
    container's: the folder the operation works in is the only row they look up that can be missing."""
    try:
        yield
    except WopiError as exc:
        if exc.status != 404:
            raise
        raise container_not_found() from None


def invalid_container_name(reason: str) -> WopiError:
    return bad_request(reason, {"X-WOPI-InvalidContainerNameError": reason})


def container_name(name: str) -> str:
    """`name` as names.check makes it valid, 400 as WOPI refuses a container's name otherwise."""
    try:
        return check(name, CONTAINER_NAME)
    except InvalidName as exc:
        raise invalid_container_name(str(exc)) from None


class Containers:
    """The container operations. The writers take `admit(s, folder_id, 0)`: whether the caller may still make
    the change (its token may have been revoked while the change waited for a row another writer held), asked
    in the change's transaction once it holds its rows."""

    def __init__(self, db: Database, tree: Tree, files: Files):
        self.db = db
        self.tree = tree
        self.files = files

    def get(self, folder_id: str) -> Container:
        with self.db.read() as s:
            return self._container(s, _folder(s, folder_id))

    def ancestors(self, folder_id: str) -> list[Container]:
        """The containers above `folder_id`, root first; none for a root."""
        with self.db.read() as s:
            folder, found = _folder(s, folder_id), []
            while folder.parent_id is not None:
                folder = s.get_one(Folder, folder.parent_id)
                found.append(self._container(s, folder))
            return found[::-1]

    def root_of(self, drive_id: str) -> Container:
        with self.db.read() as s:
            return self._container(s, self.tree.root(s, drive_id))

    def children(self, folder_id: str, extensions: set[str] | None) -> tuple[list[Container], list[File]]:
        """Everything in a container, folders and files in name order; files only of `extensions`
        (lower case, with their dot) when given."""
        with self.db.read() as s:
            folder = _folder(s, folder_id)
            folders = s.scalars(sa.select(Folder).where(Folder.parent_id == folder.id).order_by(Folder.name_key))
            files = s.scalars(sa.select(File).where(File.folder_id == folder.id).order_by(File.name_key))
            return (
                [self._container(s, f) for f in folders],
                [f for f in files if extensions is None or split_extension(f.name)[1].lower() in extensions],
            )

    def create_child(
        self, parent_id: str, name: str, suggested: bool, user_id: str, admit: Admit | None = None
    ) -> Container:
        """CreateChildContainer: a suggested name is made valid and free, a specific one is used as it is
        (400 if it is not a valid name, 409 with a free name to retry with if it is taken)."""
        if suggested:
            made = sanitize(name, fallback="New folder")
            with _as_container():
                folder, _ = self.tree.create_folder(
                    parent_id, made, "rename", user_id, numbering=FREE_NAME, admit=admit
                )
            return self.get(folder.id)
        name = container_name(name)
        try:
            with _as_container():
                folder, _ = self.tree.create_folder(parent_id, name, "fail", user_id, admit=admit)
        except WopiError as exc:
            if exc.code != "nameAlreadyExists":
                raise
            with self.db.read() as s:
                free = self.files.free_name(s, parent_id, name, style=FREE_NAME)
            raise WopiError(409, exc.reason, {"X-WOPI-ValidRelativeTarget": encode_utf7(free)}) from None
        return self.get(folder.id)

    def create_file(
        self,
        parent_id: str,
        target: Target,
        user_id: str,
        admit: Admit | None = None,
        may_overwrite: Callable[[Session, File], bool] = lambda s, file: True,
    ) -> File:
        """CreateChildFile: a new, empty file in the container, named as PutRelativeFile names them; a file of
        that name is overwritten (if asked) only if `may_overwrite(s, file)`."""
        with _as_container():
            return self.files.create_relative(
                parent_id, user_id, target, BytesIO(b""), may_overwrite=may_overwrite, admit=admit
            )

    def rename(self, folder_id: str, name: str, user_id: str, admit: Admit | None = None) -> Container:
        """RenameContainer: 400 for a name that is not valid, 409 if it is taken or the container is a root."""
        container = self.get(folder_id)  # 404 for a deleted container, whatever the name
        name = container_name(name)
        if container.is_root:
            raise WopiError(409, "a root container cannot be renamed")
        self.tree.update(container.folder.drive_id, folder_id, user_id, name=name, admit=admit)  # 409 if taken
        return self.get(folder_id)

    def delete(self, folder_id: str, admit: Admit | None = None) -> None:
        """DeleteContainer: only an empty container, never a root (409 otherwise)."""
        with _as_container(), self.db.write() as s:
            # Locked, nothing can be created in the folder or moved into it or out of it meanwhile.
            folder = lock_folder(s, folder_id)
            if folder.parent_id is None:
                raise WopiError(409, "a root container cannot be deleted")
            if admit is not None:
                admit(s, folder.parent_id, 0)
            if any(self.tree.child_counts(s, [folder.id]).values()):
                raise WopiError(409, "the container is not empty")
            s.delete(folder)

    def _container(self, s, folder: Folder) -> Container:
        if folder.parent_id is not None:
            return Container(folder, folder.name)
        return Container(folder, s.get(Drive, folder.drive_id).name or ROOT_NAME)


def _folder(s, folder_id: str) -> Folder:
    folder = s.get(Folder, folder_id) if is_id(folder_id) else None
    if folder is None:
        raise container_not_found()
    return folder
