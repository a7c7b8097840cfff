"""Check-then-act under real concurrency: threads on one app, each request in its own transaction, on SQLite
and on PostgreSQL's READ COMMITTED. (Races between gunicorn workers are in tests/e2e/test_hardening_e2e.py.)"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from wopihost.models import Drive, User

from .cspp_helpers import create_session, update_session


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


def test_sweeping_never_takes_the_pieces_of_a_session_being_committed(wopi, services, clock, settings):
    token = create_session(wopi)
    assert update_session(wopi, token, 0, b"piece").status_int == 200
    with services.db.read() as s:
        (piece,) = services.sessions.stream(s, token).blobs
    with services.db.write() as s:  # what a commit does: hold the live session, hand its pieces on, delete it
        services.sessions.get(s, token, wopi.file_id)
        clock.advance(minutes=31)  # meanwhile the session's time runs out and a sweep starts
        sweeper = threading.Thread(target=services.sessions.sweep)
        sweeper.start()
        time.sleep(0.5)  # the sweep waits for the committing transaction
        services.sessions.delete_in(s, token)  # the pieces now belong to the file
    sweeper.join()
    assert services.blobs.path(piece).exists()


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
