"""The folder tree of a drive, item by item: find by id or path, list, make folders, move, rename, delete.

An item is a File or a Folder row; file and folder ids are alike and never collide, so an
id names one item. Names are unique per folder across files and folders, ignoring case.
Every change that depends on what a name means locks the folder the name is in first
(repository.lock_folder), and folders before files, in id order where there are several,
so that concurrent changes in any workers serialise instead of deadlocking. A folder's
move also takes its drive's row first: whether it would go below itself depends on
folders it does not lock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock
from .db import Database
from .errors import WopiError, bad_request, invalid_name, name_taken, not_found
from .files import Files
from .ids import is_id, new_id
from .models import Drive, File, Folder, name_key
from .names import InvalidName, check, counted, counted_folder
from .repository import bytewise, file_named, folder_named, load_file, lock_folder, locking
from .repository import name_taken as name_taken_in
from .storage import Storage

Item = File | Folder


class Tree:
    def __init__(self, db: Database, blobs: Storage, clock: Clock, files: Files):
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.files = files

    # -- finding ------------------------------------------------------------------------

    @staticmethod
    def item(s: Session, drive_id: str, item_id: str) -> Item:
        """The item `item_id` of the drive; 404 itemNotFound if there is none."""
        if is_id(item_id):
            folder = s.get(Folder, item_id)
            if folder is not None and folder.drive_id == drive_id:
                return folder
            file = s.get(File, item_id)
            if file is not None and s.get_one(Folder, file.folder_id).drive_id == drive_id:
                return file
        raise not_found("no such item in this drive")

    @staticmethod
    def root(s: Session, drive_id: str) -> Folder:
        return s.scalars(sa.select(Folder).where(Folder.drive_id == drive_id, Folder.parent_id.is_(None))).one()

    def resolve(self, s: Session, start: Item, path: list[str]) -> Item:
        """The item at `path` (names) below the folder `start`; 404 if any step is missing."""
        item = start
        for name in path:
            if not isinstance(item, Folder):
                raise not_found(f"{item.name} is a file, not a folder")
            child = self.child(s, item.id, name)
            if child is None:
                raise not_found(f"no item named {name} on that path")
            item = child
        return item

    def find(self, s: Session, start: Item, path: list[str]) -> Item | None:
        """The item at `path` below `start`, or None."""
        try:
            return self.resolve(s, start, path)
        except WopiError:
            return None

    def parent_of_new(self, s: Session, start: Item, path: list[str]) -> tuple[Folder, str]:
        """The folder a new item at `path` below `start` goes in, and its checked name; the folder must
        exist."""
        if not path:
            raise bad_request("the path names no item")
        parent = self.resolve(s, start, path[:-1])
        if not isinstance(parent, Folder):
            raise not_found(f"{parent.name} is a file, not a folder")
        try:
            return parent, check(path[-1])
        except InvalidName as exc:
            raise invalid_name(exc) from None

    @staticmethod
    def child(s: Session, folder_id: str, name: str) -> Item | None:
        key = name_key(name)
        folder = s.scalars(sa.select(Folder).where(Folder.parent_id == folder_id, Folder.name_key == key)).first()
        if folder is not None:
            return folder
        return s.scalars(sa.select(File).where(File.folder_id == folder_id, File.name_key == key)).first()

    @staticmethod
    def path_of(s: Session, folder: Folder) -> list[str]:
        """The names from the drive's root down to `folder` (empty for the root)."""
        names = []
        while folder.parent_id is not None:
            names.append(folder.name)
            folder = s.get_one(Folder, folder.parent_id)
        return names[::-1]

    @staticmethod
    def child_counts(s: Session, folder_ids: list[str]) -> dict[str, int]:
        """How many items each folder holds, in two statements however many folders."""
        counts = dict.fromkeys(folder_ids, 0)
        if folder_ids:
            for parent in (Folder.parent_id, File.folder_id):
                query = sa.select(parent, sa.func.count()).where(parent.in_(folder_ids)).group_by(parent)
                for folder_id, n in s.execute(query):
                    counts[cast(str, folder_id)] += n  # one of folder_ids: never NULL
        return counts

    def children(self, s: Session, folder: Folder, top: int, after: tuple[str, str] | None) -> list[Item]:
        """Up to `top` items of the folder in (name, id) order, starting after the (name key, id) `after`:
        keyset paging, so a page is as cheap at the end of a large folder as at its start."""
        found: list[Item] = []
        for model, parent in ((Folder, Folder.parent_id), (File, File.folder_id)):
            key = (bytewise(s, model.name_key), bytewise(s, model.id))  # the order `sorted` merges them in
            query = sa.select(model).where(parent == folder.id)
            if after is not None:
                query = query.where(sa.tuple_(*key) > sa.tuple_(*after))
            found += s.scalars(query.order_by(*key).limit(top))
        return sorted(found, key=lambda item: (item.name_key, item.id))[:top]

    # -- changing -------------------------------------------------------------------------

    def create_folder(
        self, parent_id: str, name: str, conflict: str, user_id: str | None = None
    ) -> tuple[Folder, bool]:
        """A new folder in `parent_id`; whether it is new. A taken name fails (409 nameAlreadyExists),
        gets a free name ("rename"), or (`replace`) an existing folder of that name is the answer."""
        try:
            name = check(name)
        except InvalidName as exc:
            raise invalid_name(exc) from None
        with self.db.write() as s:
            parent = lock_folder(s, parent_id)
            if conflict == "rename":
                name = self._free_name(s, parent.id, name, counted_folder)
            else:
                existing = folder_named(s, parent.id, name)
                if existing is not None and conflict == "replace":
                    return existing, False
                if existing is not None or name_taken_in(s, parent.id, name):
                    raise name_taken(name)
            now = self.clock.now()
            folder = Folder(
                id=new_id(),
                drive_id=parent.drive_id,
                parent_id=parent.id,
                name=name,
                name_key=name_key(name),
                created_at=now,
                modified_at=now,
                created_by=user_id,
            )
            s.add(folder)
            s.flush()
            return folder, True

    def update(
        self,
        drive_id: str,
        item_id: str,
        user_id: str,
        *,
        name: str | None = None,
        parent_id: str | None = None,
        description: str | None = None,
        fs_created: datetime | None = None,
        fs_modified: datetime | None = None,
        if_match: Callable[[Item], None] | None = None,
        conflict: str = "fail",
    ) -> Item:
        """Rename, move (to `parent_id`, in the same drive) and set what the client says of an item. A taken
        name fails (409 nameAlreadyExists), gets a free name ("rename"), or (`replace`) the file that has it
        is deleted in the same transaction, as Graph's conflictBehavior says; a folder is never replaced."""
        if name is not None:
            try:
                name = check(name)
            except InvalidName as exc:
                raise invalid_name(exc) from None
        with self.db.write() as s:
            if parent_id is not None and isinstance(self.item(s, drive_id, item_id), Folder):
                # Folder moves in one drive take turns: two moves, each checked against the other's
                # old place, could otherwise put two folders inside each other.
                s.execute(locking(s, sa.select(Drive.id).where(Drive.id == drive_id)))
            item = self._lock_with_folders(s, drive_id, item_id, parent_id)
            if if_match is not None:
                if_match(item)
            if isinstance(item, Folder) and item.parent_id is None and (name is not None or parent_id is not None):
                raise WopiError(403, "the root of a drive cannot be renamed or moved", code="accessDenied")
            old_parent = _parent_id(item)
            new_parent = parent_id or old_parent
            # new_parent is None only for a drive's root, which is neither moved nor renamed (refused above)
            if new_parent is not None and new_parent != old_parent:
                self._check_move(s, drive_id, item, new_parent)
            new_name = item.name if name is None else name
            unused: set[str] = set()
            # a change of case alone is a rename too
            if new_parent is not None and (new_parent, new_name) != (old_parent, item.name):
                if conflict == "rename":
                    style = counted if isinstance(item, File) else counted_folder
                    new_name = self._free_name(s, new_parent, new_name, style, ignore_id=item.id)
                elif name_taken_in(s, new_parent, new_name, ignore_id=item.id):
                    if conflict != "replace":
                        raise name_taken(new_name)
                    unused = self._replace(s, item, new_parent, new_name)
                if isinstance(item, File):
                    self.files.check_writable(s, item)
                    item.folder_id = new_parent
                    item.sequence_number += 1  # CSPP: a rename is a change of the file
                else:
                    item.parent_id = new_parent
                item.name, item.name_key = new_name, name_key(new_name)
            if description is not None:
                item.description = description
            if fs_created is not None:
                item.fs_created_at = fs_created
            if fs_modified is not None:
                item.fs_modified_at = fs_modified
            if isinstance(item, Folder):
                item.modified_at = self.clock.now()
                item.version += 1
        for blob in unused:
            self.blobs.release(blob)
        return item

    def _free_name(
        self, s: Session, folder_id: str, name: str, style: Callable[[str, int], str], ignore_id: str | None = None
    ) -> str:
        """`name` or its first free numbered form in `folder_id`, as conflictBehavior "rename" names an item."""
        try:  # the number may make what follows a dot longer than check() lets an extension be
            return check(self.files.free_name(s, folder_id, name, ignore_id, style=style))
        except InvalidName as exc:
            raise invalid_name(exc) from None

    def _replace(self, s: Session, item: Item, folder_id: str, name: str) -> set[str]:
        """Delete the file named `name` in `folder_id` (locked by the caller) whose place `item` takes; its blobs,
        to release once committed. 409 if a folder has the name or `item` is a folder: Graph replaces files only
        (so never an ancestor of `item`); 423 if the file is under a WOPI or coauth lock."""
        # Its row is locked after the moved file's, not in id order, and cannot deadlock: a transaction holding
        # a file's row while it waits for another took that file's folder first, and this one holds it.
        existing = file_named(s, folder_id, name) if isinstance(item, File) else None
        if existing is None:
            raise name_taken(name)
        unused = self.files.delete_in(s, existing)
        s.flush()  # the row goes before the moved file takes its name: (folder, name) is unique
        return unused

    def delete(self, drive_id: str, item_id: str, if_match: Callable[[Item], None] | None = None) -> None:
        """Delete an item; a folder with everything in it. Nothing is deleted if any file in it is locked."""
        with self.db.write() as s:
            item = self.item(s, drive_id, item_id)
            if isinstance(item, Folder):
                if item.parent_id is None:
                    raise WopiError(403, "the root of a drive cannot be deleted", code="accessDenied")
                folders = self._lock_subtree(s, drive_id, item)
                item = folders[0]
            else:
                item = self._lock_with_folders(s, drive_id, item_id, None)
            if if_match is not None:
                if_match(item)
            if isinstance(item, File):
                unused = self.files.delete_in(s, item)
            else:
                unused = set()
                for file in s.scalars(
                    locking(s, sa.select(File).where(File.folder_id.in_([f.id for f in folders])).order_by(File.id))
                ):
                    unused |= self.files.delete_in(s, file)
                for folder in reversed(folders):  # children before parents
                    s.delete(folder)
                    s.flush()
        for blob in unused:
            self.blobs.release(blob)

    def _lock_subtree(self, s: Session, drive_id: str, top: Folder) -> list[Folder]:
        """Lock the folder `top` is in, `top` and every folder below it, in id order as every change takes
        its folders (so a move inside the subtree cannot deadlock with this), and return `top` and the
        folders below it, parents before children. Nothing can be added below `top` while they are held."""
        held: set[str] = set()
        parent_id = cast(str, top.parent_id)  # `top` is never a drive's root: delete refuses that
        while True:
            wanted = {parent_id, *self._subtree(s, top.id)}
            if wanted <= held:
                break
            for folder_id in sorted(wanted - held):  # a folder moved in meanwhile is locked late: rare
                try:
                    lock_folder(s, folder_id)
                except WopiError:
                    if folder_id in (top.id, parent_id):
                        raise
                    continue  # deleted meanwhile, with what was in it: the next round lists the subtree without it
                held.add(folder_id)
            parent_id = cast(str, s.scalar(sa.select(Folder.parent_id).where(Folder.id == top.id)))  # moved meanwhile?
        folders = [s.get_one(Folder, folder_id) for folder_id in self._subtree(s, top.id)]
        for folder in folders:
            s.refresh(folder)  # as committed before the locks, not as first read
        return folders

    @staticmethod
    def _subtree(s: Session, top_id: str) -> list[str]:
        """The ids of `top_id` and every folder below it, parents before children."""
        ids, i = [top_id], 0
        while i < len(ids):
            ids += s.scalars(sa.select(Folder.id).where(Folder.parent_id == ids[i]).order_by(Folder.id))
            i += 1
        return ids

    def _lock_with_folders(self, s: Session, drive_id: str, item_id: str, other_folder: str | None) -> Item:
        """The item, locked after the folders a change to it may touch: the folder it is in, the folder
        `other_folder` (a move's destination), and the item itself if it is a folder, in id order."""
        while True:
            item = self.item(s, drive_id, item_id)
            parent = _parent_id(item)
            wanted = {f for f in (parent, other_folder, item.id if isinstance(item, Folder) else None) if f}
            for folder_id in sorted(wanted):
                lock_folder(s, folder_id)
            item = s.get_one(Folder, item_id) if isinstance(item, Folder) else load_file(s, item_id)
            s.refresh(item)
            if _parent_id(item) == parent:  # not moved while we waited
                return item

    def _check_move(self, s: Session, drive_id: str, item: Item, new_parent_id: str) -> None:
        destination = s.get(Folder, new_parent_id)
        if destination is None or destination.drive_id != drive_id:
            raise WopiError(400, "the new parent is not a folder of this drive", code="invalidRequest")
        if isinstance(item, Folder):  # the destination's ancestors, up to the root (a tree has no cycles)
            folder: Folder | None = destination
            while folder is not None:
                if folder.id == item.id:
                    raise WopiError(400, "a folder cannot be moved into itself", code="invalidRequest")
                folder = s.get(Folder, folder.parent_id) if folder.parent_id else None


def _parent_id(item: Item) -> str | None:
    return item.folder_id if isinstance(item, File) else item.parent_id
