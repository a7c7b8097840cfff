"""Check-then-act under real concurrency: threads on one app, each request in its own transaction, on SQLite
and on PostgreSQL's READ COMMITTED. (Races between gunicorn workers are in tests/e2e/test_hardening_e2e.py.)"""

from __future__ import annotations

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from wopihost.app import create_app
from wopihost.errors import WopiError
from wopihost.locks import live_lock
from wopihost.models import Drive, UploadSession, User, WorkbookSession
from wopihost.repository import lock_folder
from wopihost.sessions import delete_session
from wopihost.uploads import Target

from .cspp_helpers import create_session, update_session
from .helpers import postgres_lock_waiters, wait_until, waits_for_its_turn_to_write


def test_first_sightings_of_a_user_racing_make_one_user_and_one_drive(services, make_file):
    file = make_file()
    start = threading.Barrier(8)

    def issue(_):
        start.wait()
        return services.issue_token(file.id, "newcomer", True)

    with ThreadPoolExecutor(8) as pool:
        issued = list(pool.map(issue, range(8)))
    assert len({i.token for i in issued}) == 8
    with services.db.read() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(User).where(User.id == "newcomer")) == 1
        assert s.scalar(sa.select(sa.func.count()).select_from(Drive).where(Drive.owner_id == "newcomer")) == 1


def test_sweeping_never_takes_the_pieces_of_a_session_being_committed(wopi, services, clock, database):
    token = create_session(wopi)
    assert update_session(wopi, token, 0, b"piece").status_int == 200
    with services.db.read() as s:
        (piece,) = services.sessions.stream(s, token).blobs
    swept: list[int] = []
    with services.db.write() as s:  # what a commit does: hold the live session, hand its pieces on, delete it
        services.sessions.get(s, token, wopi.file_id)
        clock.advance(minutes=31)  # meanwhile the session's time runs out and a sweep starts
        sweeper = threading.Thread(target=lambda: swept.append(services.sessions.sweep()))
        sweeper.start()
        if database.startswith("sqlite"):  # the sweep waits for the committing transaction's turn to write
            assert wait_until(lambda: waits_for_its_turn_to_write(sweeper))
        else:  # the sweep leaves the session's row, which the commit holds, to it, and ends at once
            sweeper.join(10)
            assert swept == [0]
        delete_session(s, token)  # the pieces now belong to the file
    sweeper.join()
    assert services.blobs.exists(piece)


@pytest.mark.parametrize("table", ["upload", "workbook"])
def test_a_sweep_leaves_the_rows_another_holds_and_waits_for_none(services, clock, database, table):
    """Two nodes sweep at once, or a sweep meets a deletion holding a file's sessions: had a sweep waited for
    the rows another holds, two taking the same rows in different orders deadlocked on PostgreSQL. A sweep takes
    the expired rows nobody holds and leaves the others to their holder (or to the next sweep)."""
    if not database.startswith("postgresql"):
        pytest.skip("SQLite serialises write transactions: no row locks to order")
    model, sweep = {
        "upload": (UploadSession, services.sessions.sweep),
        "workbook": (WorkbookSession, services.workbooks.sweep),
    }[table]
    key = sa.inspect(model).primary_key[0]
    now = clock.now()
    with services.db.write() as s:  # "z" first in the table and in expiry: any plan not ordered by key takes it first
        # (expired for longer than an upload session's PIECE_GRACE)
        for name, expired in (("z", now - timedelta(hours=2, minutes=2)), ("a", now - timedelta(hours=2, minutes=1))):
            row = {"created_at": now, "expires_at": expired, "user_id": "alice", "file_id": "f"}
            if model is WorkbookSession:
                row |= {"persist": True, "base_version": 1}
            s.add(model(**{key.name: name}, **row))
    swept: list[int] = []
    sweeper = threading.Thread(target=lambda: swept.append(sweep()))
    with services.db.write() as s:
        s.scalars(sa.select(key).where(key == "a").with_for_update()).one()  # another sweep's first row
        sweeper.start()
        sweeper.join(10)
        assert swept == [1], "the sweep waited for the row another holds"  # "z" only
    with services.db.read() as s:
        assert list(s.scalars(sa.select(key))) == ["a"]  # its holder's, or the next sweep's
    assert sweep() == 1


def test_a_launch_token_issued_as_its_user_leaves_the_drive_is_revoked_with_the_others(services, clock, database):
    """The launch API finds its caller a member and issues a token in one transaction: a removal of the member
    meanwhile (PostgreSQL, READ COMMITTED) revoked the tokens it could see, and this one, committed after, lived."""
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "alice")
    file = services.files.create("alice", services.containers.root_of(drive.id).id, "Plan.docx", io.BytesIO(b"x"))
    removed: list = []
    remover = threading.Thread(target=lambda: removed.append(services.drives.remove_member(drive.id, "alice")))
    with services.db.write() as s:  # what LaunchLinks.issue does: find the membership, then issue the token
        services.drives.reachable(s, "alice", drive.id)
        remover.start()
        # the removal waits for this transaction: for its turn to write, or for the membership's row
        if database.startswith("sqlite"):
            assert wait_until(lambda: waits_for_its_turn_to_write(remover))
        else:
            assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1 or not remover.is_alive())
        issued = services.tokens.issue(s, file.id, "alice", "w", clock.now() + timedelta(hours=10))
    remover.join()
    assert removed == [1]
    with services.db.read() as s, pytest.raises(WopiError) as refused:
        services.tokens.verify(s, issued.token, file.id)
    assert refused.value.status == 401


def test_an_incremental_save_and_a_save_as_beside_it_do_not_deadlock(services, database, client_for, monkeypatch):
    """PutChunkedFile's commit locked the file's row and updated it twice, and PostgreSQL checks a row's foreign
    key again on a second update in one transaction: it then waited for the folder, which a PutRelativeFile beside
    the file held while it waited for the file's row. PostgreSQL broke the circle, and one of them answered 503
    (Office's incremental saves beside a "Save a copy": most of both). The commit now holds the folder first, as
    every writer of a file does."""
    from wopihost.chunked import ChunkedFiles

    from .cspp_helpers import full_file, put_chunked

    file = services.add_file("alice", "Doc.docx", io.BytesIO(b""))
    saver, copier = client_for(file), client_for(file)
    assert saver.lock("L").status_int == 200
    holding, go_on, answers = threading.Event(), threading.Event(), {}
    check = ChunkedFiles._check

    def held_in_the_commit(self, s, *args):
        found = check(self, s, *args)
        if s.info.get("write"):  # the commit's transaction, its locks taken
            holding.set()
            go_on.wait(30)
        return found

    monkeypatch.setattr(ChunkedFiles, "_check", held_in_the_commit)
    main, chunks = full_file(b"saved incrementally")
    save = threading.Thread(
        target=lambda: answers.update(save=put_chunked(saver, {"MainContent": main}, chunks, X_WOPI_Lock="L"))
    )
    save.start()
    assert holding.wait(30)
    copy = threading.Thread(
        target=lambda: answers.update(
            copy=copier.op("PUT_RELATIVE", b"a copy", X_WOPI_SuggestedTarget=".docx", X_WOPI_Size="6")
        )
    )
    copy.start()
    if database.startswith("sqlite"):  # SQLite's writers take turns
        assert wait_until(lambda: waits_for_its_turn_to_write(copy))
    else:  # the copy waits for a lock the commit holds
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1)
    go_on.set()
    save.join(30)
    copy.join(30)
    assert answers["save"].status_int == 200, answers["save"].headers
    assert answers["copy"].status_int == 200, answers["copy"].headers
    assert saver.get_file().body == b"saved incrementally"


def _session_through_a_link(services) -> tuple[str, str, str, str]:
    """Bob's upload session for a new file in alice's folder Shared, made through a read-write link to it, with
    every byte in: its token, the link's id, the folder's id and alice's drive's id."""
    shared = services.add_file("alice", "a.txt", io.BytesIO(b"shared"), folder=["Shared"]).folder_id
    link = services.shares.link(shared, "ReadWrite", "alice")
    drive = services.drives.personal("alice").id
    services.drives.personal("bob")
    token, _ = services.uploads.create("bob", Target(drive, folder_id=shared, name="late.txt", share_link=link.id), 3)
    services.sessions.append(token, None, 0, 3, io.BytesIO(b"abc"), 3, "the Content-Range")
    return token, link.id, shared, drive


def test_revoking_a_link_waits_for_an_upload_through_it_that_found_it_live(settings, clock, database):
    """A completion has checked the link and waits for its drive's quota; a revoke meanwhile returns only once
    the file has landed, never before (PostgreSQL, READ COMMITTED; SQLite's writers take turns whole)."""
    if not database.startswith("postgresql"):
        pytest.skip("SQLite serialises write transactions: no row locks to order them")
    app = create_app(settings.with_changes(drive_quota=1 << 20), clock)
    services = app.extensions["wopihost"]
    try:
        token, link, _, drive = _session_through_a_link(services)
        completed: list = []
        revoked: list = []
        with services.db.write() as s:
            services.drives.quota(s, drive)  # another upload into the drive, committing: the quota's turn is its
            completing = threading.Thread(target=lambda: completed.append(services.uploads.complete(token)[1]))
            completing.start()
            assert wait_until(lambda: _waiters(database) == 1)
            revoking = threading.Thread(target=lambda: revoked.append(services.shares.revoke(link)))
            revoking.start()
            assert wait_until(lambda: _waiters(database) == 2 or not revoking.is_alive())
            assert revoking.is_alive(), "revoke() returned while an upload it had let through was still to land"
        completing.join()
        revoking.join()
        assert completed == [True] and revoked == [1]
    finally:
        services.db.dispose()


def test_an_upload_whose_link_is_revoked_while_it_waits_for_its_folder_does_not_land(services, database):
    """A completion waits for its folder's lock; a revoke commits meanwhile: the completion, reading the link
    once the folder is its, finds it revoked (PostgreSQL, READ COMMITTED)."""
    if not database.startswith("postgresql"):
        pytest.skip("SQLite serialises write transactions: no row locks to order them")
    token, link, shared, _ = _session_through_a_link(services)
    outcome: list = []
    with services.db.write() as s:
        lock_folder(s, shared)  # another change in the folder holds it
        completing = threading.Thread(
            target=lambda: outcome.append(_status_of(lambda: services.uploads.complete(token)))
        )
        completing.start()
        assert wait_until(lambda: _waiters(database) == 1)
        assert services.shares.revoke(link) == 1
    completing.join()
    assert outcome == [403]
    with services.db.read() as s:
        assert services.tree.child(s, shared, "late.txt") is None


def test_revoking_a_token_waits_for_a_save_that_found_it_live(services, wopi, database):
    """A save's commit (PutFile's, PutRelativeFile's) has found its token live; a revoke meanwhile returns only
    once the save has landed, never before (PostgreSQL, READ COMMITTED)."""
    if not database.startswith("postgresql"):
        pytest.skip("SQLite serialises write transactions: no row locks to order them")
    with services.db.read() as s:
        grant = services.tokens.verify(s, wopi.token, wopi.file_id)
    revoked: list = []

    def revoke() -> None:
        with services.db.write() as s:
            revoked.append(services.tokens.revoke(s, token=wopi.token))

    revoking = threading.Thread(target=revoke)

    def save(t) -> None:  # what a save's commit does once it holds its file's row: check the token, then write
        services.tokens.require_live(t, grant)
        revoking.start()
        assert wait_until(lambda: _waiters(database) == 1 or not revoking.is_alive())
        assert revoking.is_alive(), "the token was revoked while a save it had let through was still to land"

    services.db.transact(save)
    revoking.join()
    assert revoked == [1]
    assert wopi.get_file().status_int == 401


def test_crossed_folder_moves_never_put_two_folders_inside_each_other(services, graph):
    """Move a into b/inner and b into a/inner at once, over and over: one move wins, the other is refused
    (a folder cannot go below itself), and the tree stays a tree."""

    def mkdir(parent: str, name: str) -> str:
        answer = graph.post_json(f"me/drive/items/{parent}/children", {"name": name, "folder": {}})
        assert answer.status_int == 201, answer.body
        return answer.json["id"]

    root = graph.get("me/drive/root").json["id"]
    for round_ in range(20):  # a and b in different folders: the two moves share no folder to lock
        a, b = mkdir(mkdir(root, f"p{round_}"), "a"), mkdir(mkdir(root, f"q{round_}"), "b")
        a_inner, b_inner = mkdir(a, "inner"), mkdir(b, "inner")
        start = threading.Barrier(2)

        def move(item: str, into: str):
            start.wait()
            return services.tree.update(graph.drive_id, item, "alice", parent_id=into)

        with ThreadPoolExecutor(2) as pool:
            moves = [pool.submit(move, a, b_inner), pool.submit(move, b, a_inner)]
        outcomes = sorted("moved" if move.exception() is None else str(move.exception().status) for move in moves)
        assert outcomes == ["400", "moved"], outcomes
        with services.db.read() as s:
            for folder_id in (a, b, a_inner, b_inner):
                seen = set()
                while folder_id != root:  # every folder still reaches the root
                    assert folder_id not in seen, "a cycle"
                    seen.add(folder_id)
                    folder_id = services.tree.item(s, graph.drive_id, folder_id).parent_id


def test_a_new_folder_and_a_folder_move_into_its_parent_never_deadlock(services, graph, database):
    """A new folder's row names its drive (a foreign key: PostgreSQL takes FOR KEY SHARE on the drive's row as it
    is inserted). A folder move holds its drive's row for its turn and then waits for the destination, which the
    new folder's transaction holds: the drive's turn must not keep the new folder waiting for the move, or the two
    wait for each other (PostgreSQL detects it and fails one: 503)."""
    if not database.startswith("postgresql"):
        pytest.skip("SQLite serialises write transactions: no row locks to cross")
    root = graph.get("me/drive/root").json["id"]
    parent = graph.post_json(f"me/drive/items/{root}/children", {"name": "p", "folder": {}}).json["id"]
    moving = graph.post_json(f"me/drive/items/{root}/children", {"name": "m", "folder": {}}).json["id"]
    failed: dict[str, Exception | None] = {}

    def run(name: str, change) -> threading.Thread:
        def target() -> None:
            try:
                change()
                failed[name] = None
            except Exception as exc:  # a deadlock's is Unavailable
                failed[name] = exc

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    with services.db.write() as s:
        lock_folder(s, parent)  # another change in the folder holds it: both below wait for it, the creation first
        creating = run("create", lambda: services.tree.create_folder(parent, "new", "fail"))
        assert wait_until(lambda: _waiters(database) == 1), "the creation never waited for the folder"
        move = run("move", lambda: services.tree.update(graph.drive_id, moving, "alice", parent_id=parent))
        assert wait_until(lambda: _waiters(database) == 2), "the move never waited for the folder"
    creating.join(60)
    move.join(60)
    assert failed == {"create": None, "move": None}
    names = {child["name"] for child in graph.get(f"me/drive/items/{parent}/children").json["value"]}
    assert names == {"new", "m"}


def test_claiming_a_name_in_a_folder_does_not_lock_the_item_of_that_name(services, graph, database):
    """A new item named like an existing folder locks only the parent. A delete or move of that folder locks
    it and its parent in id order, so the folder may be locked first: were the claim to lock it too, the
    two would wait for each other (PostgreSQL; SQLite's writers take turns whole)."""
    if not database.startswith("postgresql"):
        pytest.skip("SQLite serialises write transactions: no row locks to cross")
    root = graph.get("me/drive/root").json["id"]
    parent = graph.post_json(f"me/drive/items/{root}/children", {"name": "p", "folder": {}}).json["id"]
    child = graph.post_json(f"me/drive/items/{parent}/children", {"name": "x", "folder": {}}).json["id"]
    outcome = []
    with services.db.write() as s:
        lock_folder(s, child)  # as a delete of x holds it, before the parent's lock
        claim = threading.Thread(
            target=lambda: outcome.append(_status_of(lambda: services.tree.create_folder(parent, "x", "fail")))
        )
        claim.start()
        claim.join(timeout=60)
        assert not claim.is_alive(), "the claim waits for the folder's lock"
        lock_folder(s, parent)  # the delete goes on
    assert outcome == [409]


def _waiters(database: str) -> int:
    """How many of this process's connections wait for a lock."""
    return postgres_lock_waiters(database, [os.getpid()])


def _status_of(call) -> int | None:
    try:
        call()
    except Exception as exc:  # the domain's error, with its status
        return getattr(exc, "status", None)
    return None


def test_parallel_uploads_cannot_both_take_the_last_room_of_a_quota(settings, clock):
    """Two uploads into different folders of a drive with room for one: one fits, the other gets 507."""
    import webtest

    from wopihost.app import create_app

    from .helpers import GraphClient

    app = create_app(settings.with_changes(drive_quota=1000), clock)
    services = app.extensions["wopihost"]
    issued, drive_id = services.issue_api_token("alice", True)
    graph = GraphClient(webtest.TestApp(app), issued.token, drive_id)
    try:
        for round_ in range(5):
            for name in ("a", "b"):
                assert (
                    graph.post_json("me/drive/root/children", {"name": f"{name}{round_}", "folder": {}}).status_int
                    == 201
                )
            start = threading.Barrier(2)

            def upload(folder: str) -> int:
                start.wait()
                return graph.put(f"me/drive/root:/{folder}{round_}/f.bin:/content", b"x" * 700).status_int

            with ThreadPoolExecutor(2) as pool:
                answers = sorted(pool.map(upload, ("a", "b")))
            assert answers == [201, 507], answers
            for name in ("a", "b"):
                graph.delete(f"me/drive/root:/{name}{round_}")
    finally:
        services.db.dispose()


def test_racing_locks_with_different_ids_have_exactly_one_winner(services, make_file):
    """Under READ COMMITTED a lock transition that waited for the file's row must still see the lock the
    winner took (locks.py reads after taking the row lock, in a statement of its own)."""
    file = make_file()
    start = threading.Barrier(16)
    results: list = []

    def attempt(i: int) -> None:
        start.wait()
        try:
            services.locks.lock(file.id, f"lock-{i}")
            results.append(f"lock-{i}")
        except WopiError as exc:
            results.append(exc.status)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1 and results.count(409) == 15, results
    with services.db.read() as s:
        assert live_lock(s, file.id, services.clock.now()).lock_id == winners[0]
