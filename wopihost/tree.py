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
from .errors import WopiError, bad_request, checked_name, name_taken, not_found
from .files import Admit, Files, Locate, lock_folder_at
from .ids import is_id, new_id
from .models import Drive, File, Folder, name_key
from .names import counted, counted_folder
from .repository import bytewise, file_named, folder_named, load_file, lock_folder, locking
from .repository import name_taken as name_taken_in
from .storage import Blob, Storage, discard

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
        return parent, checked_name(path[-1])

    def existing_part(self, s: Session, start: Item, names: list[str]) -> tuple[Folder, list[str]]:
        """The deepest folder of the path `names` below the folder `start` that exists, and the (checked) names
        of the folders below it still to make (make_path) for an item to go there. 409 nameAlreadyExists if a
        file has a name the path needs, as make_path answers it; 404 if `start` is a file."""
        if not isinstance(start, Folder):
            raise not_found(f"{start.name} is a file, not a folder")
        names = [checked_name(name) for name in names]
        folder = start
        for i, name in enumerate(names):
            child = self.child(s, folder.id, name)
            if child is None:
                return folder, names[i:]
            if not isinstance(child, Folder):
                raise name_taken(name)
            folder = child
        return folder, []

    def folder_for_new(self, s: Session, start: Item, names: list[str], user_id: str | None) -> Folder | None:
        """The folder at `names` below `start` that a new item goes in, its missing folders made as OneDrive
        makes them for an upload to a path: in a write transaction, by make_path, so that they land with the
        item or not at all. A read transaction (a check before a body is read) makes nothing: None says that a
        folder is still to be made, in which no name is taken yet. Errors as existing_part's."""
        folder, missing = self.existing_part(s, start, names)
        if not missing:
            return folder
        if not s.info.get("write"):
            return None
        # from `start`: the folders of the whole path are locked as they are followed again
        return s.get_one(Folder, self.make_path(s, start.id, names, user_id))

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

    @staticmethod
    def sizes(s: Session, folder_ids: list[str]) -> dict[str, int]:
        """The bytes of the files below each folder, at any depth, as OneDrive reports a folder's size: one
        recursive query for a page of folders (whose cost grows with what is below them, as the drive's quota
        sum's does with the drive), not one per folder."""
        sizes = dict.fromkeys(folder_ids, 0)
        for chunk in _chunks(folder_ids):
            top = sa.select(Folder.id.label("top"), Folder.id.label("id")).where(Folder.id.in_(chunk))
            start = top.cte("below", recursive=True)
            below = start.union_all(sa.select(start.c.top, Folder.id).where(Folder.parent_id == start.c.id))
            query = (
                sa.select(below.c.top, sa.func.sum(File.size))
                .join(File, File.folder_id == below.c.id)
                .group_by(below.c.top)
            )
            for folder_id, size in s.execute(query):
                sizes[folder_id] = int(size)
        return sizes

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
        self,
        parent_id: str | Locate,
        name: str,
        conflict: str,
        user_id: str | None = None,
        *,
        description: str | None = None,
        fs_created: datetime | None = None,
        fs_modified: datetime | None = None,
        admit: Admit | None = None,
        numbering: Callable[[str, int], str] = counted_folder,
    ) -> tuple[Folder, bool]:
        """A new folder in `parent_id` (a folder's id, or what finds it: Locate), with what the client says of it
        (as `update` sets it); whether it is new. A taken name fails (409 nameAlreadyExists), gets a free name
        ("rename": its first free `numbering`, OneDrive's unless a face numbers its own way), or (`replace`) an
        existing folder of that name is the answer, unchanged. `admit` as in `update`, with the parent."""
        name = checked_name(name)
        with self.db.write() as s:
            parent = lock_folder_at(s, parent_id)
            if admit is not None:  # the parent's is the one row lock taken (the new row's keys only KEY SHARE theirs)
                admit(s, parent.id, 0)
            if conflict == "rename":
                name = self._free_name(s, parent.id, name, numbering)
            else:
                existing = folder_named(s, parent.id, name)
                if existing is not None and conflict == "replace":
                    return existing, False
                if existing is not None or name_taken_in(s, parent.id, name):
                    raise name_taken(name)
            folder = _new_folder(parent, name, user_id, self.clock.now())
            folder.description, folder.fs_created_at, folder.fs_modified_at = description, fs_created, fs_modified
            s.add(folder)
            s.flush()
            return folder, True

    def make_path(self, s: Session, top_id: str, names: list[str], user_id: str | None) -> str:
        """The id of the folder at `names` below the folder `top_id`, its missing folders made in `s`'s write
        transaction, so that they appear with what the caller puts in them or not at all. The folders of the path
        that exist are locked in id order, as every change takes them, and the path is followed again until it
        still leads through them (a folder of it renamed, moved or made meanwhile); 409 if a file has a name the
        path needs."""
        names = [checked_name(name) for name in names]
        held: set[str] = set()
        point = s.begin_nested()
        while True:
            found = [top_id]
            for name in names:
                child = folder_named(s, found[-1], name)
                if child is None:
                    break
                found.append(child.id)
            wanted = set(found) - held
            if not wanted:
                break
            if held and min(wanted) < max(held):
                # The path changed while its folders were waited for, and leads through one that locking now would
                # take out of id order: it may be held by a change waiting for one held here (on PostgreSQL, a
                # deadlock). Let go of them all (the savepoint's row locks go with it) and take them again in order.
                point.rollback()
                point, held = s.begin_nested(), set()
                continue
            for folder_id in sorted(wanted):
                try:
                    lock_folder(s, folder_id)
                except WopiError:
                    if folder_id == top_id:
                        raise
                    continue  # deleted meanwhile: the next round follows the path without it
                held.add(folder_id)
        point.commit()  # its locks are the transaction's until it ends
        parent = s.get_one(Folder, found[-1])
        now = self.clock.now()
        for name in names[len(found) - 1 :]:
            if name_taken_in(s, parent.id, name):  # a file's
                raise name_taken(name)
            parent = _new_folder(parent, name, user_id, now)
            s.add(parent)
            s.flush()
        return parent.id

    def copy_folder(
        self,
        folder_id: str,
        destination_id: str | Locate,
        name: str | None,
        user_id: str,
        conflict: str,
        limit: int,
        fits: Callable[[Session, int], None],
        admit: Admit,
    ) -> Folder:
        """A copy of the folder `folder_id` and everything below it, named `name`, in the folder `destination_id`
        (of any drive; its id, or what finds it: Locate, asked again where the copy lands); with `name` None
        (Graph's childrenOnly), copies of what is in it, put in `destination_id` itself. The folder the copies are
        in is the answer. Every file gets a blob of its own and `user_id` as its owner, as Files.copy makes one.

        A taken name is judged by `conflict`, for the top folder or each child: "rename" takes a free name, "fail"
        refuses (409), and "replace" deletes a file a copied file's name is taken by, but never a folder nor for a
        folder (Graph's replace is for files: a folder in conflict fails). 400 for a copy into the folder itself or
        below it, or of more than `limit` items (all of it is copied in this request). `fits(s, growth)` checks
        the bytes the copy adds before any is copied, and `admit` (as in Files.put_named) once they are, in the
        transaction that lands every row: all of the copy appears at once, or none of it."""
        if name is not None:
            name = checked_name(name)
        with self.db.read() as s:
            top = s.get(Folder, folder_id)
            if top is None:  # deleted since the request found it
                raise not_found("the folder to copy no longer exists")
            folders, files = self._below(s, top.id, limit)
            landing: list[Item] = [top] if name is not None else self._children_of(top.id, folders, files)
            names = {top.id: name} if name is not None else {item.id: item.name for item in landing}
            destination = lock_folder_at(s, destination_id)
            self._check_not_below(s, top.id, destination, "copied")
            replaced = self._claims(s, destination.id, landing, names, conflict, user_id)
            fits(s, sum(file.size for file in files) - sum(file.size for file in replaced))
        made: dict[str, Blob] = {}
        unused: set[str] = set()
        landed, failure = False, None
        try:
            for file in files:
                try:
                    made[file.id] = self.files.copy_content(file.id, file)
                except WopiError as exc:
                    if exc.status != 404:
                        raise  # deleted meanwhile: the copy is of the folder without it
                for blob in made.values():  # a large folder's copies may take longer than a hold's lease
                    blob.keep()
            landing = [item for item in landing if isinstance(item, Folder) or item.id in made]
            with self.db.write() as s:
                if destination.drive_id == top.drive_id:  # whether it is below `top` is asked as a move asks it
                    _take_drive_turn(s, top.drive_id)
                destination = lock_folder_at(s, destination_id)
                self._check_not_below(s, top.id, destination, "copied")
                replaced = self._claims(s, destination.id, landing, names, conflict, user_id)
                admit(s, destination.id, sum(b.size for b in made.values()) - sum(f.size for f in replaced))
                for file in replaced:
                    unused |= self.files.delete_in(s, file)
                s.flush()  # the rows go before the copies take their names: (folder, name) is unique
                copied = self._land(s, destination, top, landing, names, folders, files, made, conflict, user_id)
            landed = True
        except BaseException as exc:
            failure = exc
            raise
        finally:
            for blob in made.values():
                blob.release()
                if not landed:
                    discard(self.blobs, blob.name, failure)
        for blob_name in unused:
            self.blobs.release(blob_name)
        return copied

    def _below(self, s: Session, top_id: str, limit: int) -> tuple[list[Folder], list[File]]:
        """The folders below `top_id`, parents before children, and the files in it and in them; 400 if they are
        more than `limit` together, found out before more rows than that are read."""
        folders: list[Folder] = []
        level = [top_id]
        while level:
            found = [f for ids in _chunks(level) for f in s.scalars(sa.select(Folder).where(Folder.parent_id.in_(ids)))]
            folders += found
            _check_count(len(folders), limit)
            level = [folder.id for folder in found]
        ids = [top_id, *(folder.id for folder in folders)]
        count = sum(
            cast(int, s.scalar(sa.select(sa.func.count()).where(File.folder_id.in_(chunk)))) for chunk in _chunks(ids)
        )
        _check_count(len(folders) + count, limit)
        return folders, [
            f for chunk in _chunks(ids) for f in s.scalars(sa.select(File).where(File.folder_id.in_(chunk)))
        ]

    @staticmethod
    def _children_of(top_id: str, folders: list[Folder], files: list[File]) -> list[Item]:
        return [*(f for f in folders if f.parent_id == top_id), *(f for f in files if f.folder_id == top_id)]

    def _claims(
        self, s: Session, folder_id: str, landing: list[Item], names: dict[str, str], conflict: str, user_id: str
    ) -> list[File]:
        """The files in `folder_id` that the copies of `landing` (to be named `names`) replace; 409 or 423 where
        they may not (Files.claim_name), and a folder's copy treats "replace" as "fail", as Graph does."""
        replaced = []
        for item in landing:
            behaviour = "fail" if isinstance(item, Folder) and conflict == "replace" else conflict
            existing = self.files.claim_name(s, folder_id, names[item.id], behaviour, user_id)
            if existing is not None:
                replaced.append(existing)
        return replaced

    def _land(
        self,
        s: Session,
        destination: Folder,
        top: Folder,
        landing: list[Item],
        names: dict[str, str],
        folders: list[Folder],
        files: list[File],
        made: dict[str, Blob],
        conflict: str,
        user_id: str,
    ) -> Folder:
        """Insert the rows of the copy (`made`: the new blobs of the files by the source's ids) below `destination`,
        locked by the caller; the folder the copies are in."""
        now = self.clock.now()
        new_ids = {top.id: destination.id}  # of each source folder, its copy's
        by_id = {destination.id: destination}  # the copies, by their ids

        def add(item: Item, parent_id: str, name: str) -> None:
            if isinstance(item, Folder):
                copy = _new_folder(by_id[parent_id], name, user_id, now)
                s.add(copy)
                by_id[copy.id] = copy
                new_ids[item.id] = copy.id
            elif item.id in made:
                blob = made[item.id]
                self.files.insert(s, parent_id, name, user_id, blob.name, blob.size, blob.sha256, blob.quickxor)

        for item in landing:  # one at a time, so that each free name is free of the others' too
            name = names[item.id]
            if conflict == "rename":
                style = counted_folder if isinstance(item, Folder) else counted
                name = self._free_name(s, destination.id, name, style)
            add(item, destination.id, name)
            s.flush()
        placed = {item.id for item in landing}
        for folder in folders:  # parents first: each one's parent has its copy by then
            if folder.id not in placed:
                add(folder, new_ids[cast(str, folder.parent_id)], folder.name)
        s.flush()
        for file in files:
            if file.id not in placed:
                add(file, new_ids[file.folder_id], file.name)
        return by_id[new_ids[top.id]]

    def update(
        self,
        drive_id: str,
        item_id: str | Locate,
        user_id: str,
        *,
        name: str | None = None,
        parent_id: str | Locate | None = None,
        description: str | None = None,
        fs_created: datetime | None = None,
        fs_modified: datetime | None = None,
        if_match: Callable[[Item], None] | None = None,
        conflict: str = "fail",
        admit: Admit | None = None,
    ) -> Item:
        """Rename, move (to `parent_id`, in the same drive) and set what the client says of an item. A taken
        name fails (409 nameAlreadyExists), gets a free name ("rename"), or (`replace`) the file that has it
        is deleted in the same transaction, as Graph's conflictBehavior says; a folder is never replaced.
        `admit` as in Files.put_named, with the folder the item ends up in (the root: itself) and no growth:
        whoever asked may have lost the drive since their request was checked. The item and the new parent are
        given by id or by what finds them (Locate), asked once their folders are locked."""
        if name is not None:
            name = checked_name(name)
        locate = self._locator(drive_id, item_id)
        destination = None if parent_id is None else _folder_id_of(parent_id)
        with self.db.write() as s:
            # Folder moves in one drive take turns: two moves, each checked against the other's
            # old place, could otherwise put two folders inside each other.
            turn = destination is not None and isinstance(locate(s), Folder)
            if turn:
                _take_drive_turn(s, drive_id)
            item, moved_to = self._lock_with_folders(s, locate, destination)
            if moved_to is not None and isinstance(item, Folder) and not turn:
                # A path that named a file names a folder now (rare): the turn is taken after its folders, and
                # PostgreSQL may find this waiting on a move that waits on them (a deadlock: 503, retry).
                _take_drive_turn(s, drive_id)
            if if_match is not None:
                if_match(item)
            if isinstance(item, Folder) and item.parent_id is None and (name is not None or parent_id is not None):
                raise WopiError(403, "the root of a drive cannot be renamed or moved", code="accessDenied")
            old_parent = _parent_id(item)
            new_parent = moved_to or old_parent
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
            if admit is not None:  # once every row lock is taken (the replaced file's too): see Files.put_named
                admit(s, new_parent or item.id, 0)
        for blob in unused:
            self.blobs.release(blob)
        return item

    def _free_name(
        self, s: Session, folder_id: str, name: str, style: Callable[[str, int], str], ignore_id: str | None = None
    ) -> str:
        """`name` or its first free numbered form in `folder_id`, as conflictBehavior "rename" names an item."""
        # the number may make what follows a dot longer than check() lets an extension be
        return checked_name(self.files.free_name(s, folder_id, name, ignore_id, style=style))

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

    def delete(
        self,
        drive_id: str,
        item_id: str | Locate,
        if_match: Callable[[Item], None] | None = None,
        admit: Admit | None = None,
    ) -> None:
        """Delete an item (by id, or what finds it: Locate); a folder with everything in it. Nothing is deleted if
        any file in it is locked. `admit` as in `update`, with the folder the item was in."""
        locate = self._locator(drive_id, item_id)
        with self.db.write() as s:
            item = locate(s)
            folders: list[Folder] = []
            while not folders:
                if isinstance(item, File):
                    item, _ = self._lock_with_folders(s, locate, None)
                    if isinstance(item, File):
                        break
                    continue  # its path names a folder now
                if item.parent_id is None:
                    raise WopiError(403, "the root of a drive cannot be deleted", code="accessDenied")
                locked = self._lock_subtree(s, drive_id, item)
                item = locate(s)  # what its path names once its folder is held, which no rename gets past
                if item.id == locked[0].id:
                    folders, item = locked, locked[0]
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
            if admit is not None:  # once every row lock is taken (each file's in the folder too)
                admit(s, cast(str, _parent_id(item)), 0)  # a drive's root is never deleted: refused above
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

    def _locator(self, drive_id: str, item_id: str | Locate) -> Locate:
        if isinstance(item_id, str):
            return lambda s: self.item(s, drive_id, item_id)
        return item_id

    def _lock_with_folders(
        self, s: Session, locate: Locate, destination: Callable[[Session], str] | None
    ) -> tuple[Item, str | None]:
        """The item `locate` finds, locked after the folders a change to it may touch: the folder it is in, the
        folder `destination` names (a move's; its id is the second answer), and the item itself if it is a folder,
        in id order. Once they are held, the item cannot be renamed or moved, nor the destination moved: they are
        asked again, and if either has moved meanwhile (or a path names another item now), the folders of what is
        found now are locked too."""
        while True:
            item = locate(s)
            parent = _parent_id(item)
            other = None if destination is None else destination(s)
            wanted = {f for f in (parent, other, item.id if isinstance(item, Folder) else None) if f}
            for folder_id in sorted(wanted):
                lock_folder(s, folder_id)
            item = s.get_one(Folder, item.id) if isinstance(item, Folder) else load_file(s, item.id)
            s.refresh(item)
            if _parent_id(item) != parent:  # moved while we waited
                continue
            if locate(s).id == item.id and (destination is None or destination(s) == other):
                return item, other

    def _check_move(self, s: Session, drive_id: str, item: Item, new_parent_id: str) -> None:
        destination = s.get(Folder, new_parent_id)
        if destination is None or destination.drive_id != drive_id:
            raise WopiError(400, "the new parent is not a folder of this drive", code="invalidRequest")
        if isinstance(item, Folder):
            self._check_not_below(s, item.id, destination, "moved")

    @staticmethod
    def _check_not_below(s: Session, folder_id: str, destination: Folder, done: str) -> None:
        """400 if `destination` is the folder `folder_id` or below it, where it cannot be `done` (moved, copied)."""
        folder: Folder | None = destination  # up its ancestors to the root (a tree has no cycles)
        while folder is not None:
            if folder.id == folder_id:
                raise WopiError(400, f"a folder cannot be {done} into itself", code="invalidRequest")
            folder = s.get(Folder, folder.parent_id) if folder.parent_id else None


def _take_drive_turn(s: Session, drive_id: str) -> None:
    """Hold the drive's row until the commit, as folder moves (and copies) in one drive take turns. FOR NO KEY
    UPDATE, not FOR UPDATE: a new folder's row names its drive, and PostgreSQL checks that foreign key with FOR KEY
    SHARE on the drive's row, which FOR UPDATE would make wait; a transaction creating a folder in the folder a
    move waits for would then wait for the move, each for the other."""
    s.execute(locking(s, sa.select(Drive.id).where(Drive.id == drive_id), key_share=True))


def _new_folder(parent: Folder, name: str, user_id: str | None, now: datetime) -> Folder:
    return Folder(
        id=new_id(),
        drive_id=parent.drive_id,
        parent_id=parent.id,
        name=name,
        name_key=name_key(name),
        created_at=now,
        modified_at=now,
        created_by=user_id,
    )


def _chunks(ids: list[str], size: int = 500) -> list[list[str]]:
    """`ids` in lists short enough for one IN each, well within every database's limit on bound parameters."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise WopiError(
            400,
            f"the folder holds more than {limit} items, the most one copy takes (WOPIHOST_MAX_COPY_ITEMS): "
            "copy the folders in it one by one",
            code="invalidRequest",
        )


def _folder_id_of(folder: str | Locate) -> Callable[[Session], str]:
    """A folder's id, or what finds the folder, as what gives its id in a transaction."""
    if isinstance(folder, str):
        return lambda s: folder
    return lambda s: folder(s).id


def _parent_id(item: Item) -> str | None:
    return item.folder_id if isinstance(item, File) else item.parent_id
