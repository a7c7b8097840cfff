"""PATCH of a driveItem onto a name that is taken: @microsoft.graph.conflictBehavior fail, replace and rename
(docs/graph.md §3.3), given in the query as Graph documents it or in the body as its SDKs send it."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest

from wopihost.models import Lock
from wopihost.repository import load_file

from .conftest import PG_URL
from .helpers import graph_error, postgres_lock_waiters, stored_blobs, wait_until
from .test_graph_items import item, mkdir, put

KEY = "@microsoft.graph.conflictBehavior"


def patch(graph, item_id: str, body: dict, conflict: str | None = None, where: str = "query", **kwargs):
    """PATCH items/{item_id} with `conflict` in the query or (where="body") in the JSON body."""
    if conflict is not None and where == "body":
        return graph.patch_json(f"me/drive/items/{item_id}", {**body, KEY: conflict}, **kwargs)
    query = "" if conflict is None else f"?{KEY}={conflict}"
    return graph.patch_json(f"me/drive/items/{item_id}{query}", body, **kwargs)


def listing(graph, path: str = "") -> dict[str, str]:
    """Name -> id of the items in the folder at `path` (the root if empty)."""
    url = f"me/drive/root:/{path}:/children" if path else "me/drive/root/children"
    return {child["name"]: child["id"] for child in graph.get(url).json["value"]}


def content(graph, item_id: str) -> bytes:
    return graph.get(f"me/drive/items/{item_id}/content").body


# -- fail ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["query", "body"])
@pytest.mark.parametrize("move", [False, True])
def test_fail_answers_409_name_already_exists_and_changes_nothing(graph, where, move):
    mkdir(graph, "dest")
    mine = put(graph, "a.txt", b"mine").json["id"]
    theirs = put(graph, "dest/B.txt" if move else "B.txt", b"theirs").json["id"]
    body = {"name": "b.TXT", **({"parentReference": {"path": "/drive/root:/dest"}} if move else {})}
    response = patch(graph, mine, body, "fail", where)
    assert response.status_int == 409
    assert graph_error(response) == ("nameAlreadyExists", None)
    assert item(graph, "a.txt").json["id"] == mine
    assert item(graph, "dest/B.txt" if move else "B.txt").json["id"] == theirs
    assert content(graph, theirs) == b"theirs"


# -- replace -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["query", "body"])
@pytest.mark.parametrize("move", [False, True])
def test_replace_deletes_the_file_of_that_name_and_takes_its_place(graph, services, where, move):
    before = stored_blobs(services)
    mkdir(graph, "dest")
    mine = put(graph, "a.txt", b"mine").json
    kept = stored_blobs(services)
    theirs = put(graph, "dest/B.txt" if move else "B.txt", b"theirs").json["id"]
    body = {"name": "b.TXT", **({"parentReference": {"path": "/drive/root:/dest"}} if move else {})}
    response = patch(graph, mine["id"], body, "replace", where)
    assert response.status_int == 200, response.body
    assert response.json["id"] == mine["id"] and response.json["name"] == "b.TXT"  # the name as asked for
    assert response.json["size"] == 4 and response.json["cTag"] == mine["cTag"]  # its own content, unchanged
    assert response.json["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:" + ("/dest" if move else "")
    assert graph.get(f"me/drive/items/{theirs}").status_int == 404
    assert {name: i for name, i in listing(graph, "dest" if move else "").items() if name != "dest"} == {
        "b.TXT": mine["id"]
    }
    assert "a.txt" not in listing(graph)
    assert content(graph, mine["id"]) == b"mine"
    assert stored_blobs(services) == kept and kept != before  # the replaced file's content is gone from the store


@pytest.mark.parametrize(
    "address", ["me/drive/root:/a.txt:", "drives/{drive}/items/{id}", "drives/{drive}/root:/a.txt:"]
)
def test_replace_in_the_query_of_every_addressing_form(graph, address):
    mine = put(graph, "a.txt", b"mine").json["id"]
    theirs = put(graph, "b.txt", b"theirs").json["id"]
    url = address.format(drive=graph.drive_id, id=mine)
    response = graph.patch_json(f"{url}?{KEY}=replace", {"name": "b.txt"})
    assert (response.status_int, response.json["id"]) == (200, mine)
    assert graph.get(f"me/drive/items/{theirs}").status_int == 404
    assert listing(graph) == {"b.txt": mine}


def test_the_query_wins_over_the_body(graph):
    mine = put(graph, "a.txt").json["id"]
    put(graph, "b.txt")
    response = graph.patch_json(f"me/drive/items/{mine}?{KEY}=fail", {"name": "b.txt", KEY: "replace"})
    assert graph_error(response) == ("nameAlreadyExists", None)
    assert set(listing(graph)) == {"a.txt", "b.txt"}


def test_replace_of_its_own_name_in_another_case_is_a_rename(graph):
    mine = put(graph, "a.txt", b"mine").json["id"]
    response = patch(graph, mine, {"name": "A.TXT"}, "replace")
    assert (response.status_int, response.json["name"]) == (200, "A.TXT")
    assert listing(graph) == {"A.TXT": mine}
    assert content(graph, mine) == b"mine"


@pytest.mark.parametrize("moving, there", [("file", "folder"), ("folder", "file"), ("folder", "folder")])
def test_replace_never_replaces_a_folder_nor_moves_one_over_anything(graph, moving, there):
    """Graph replaces files only: a folder of the name, or a folder moving, is 409 as with fail."""
    mkdir(graph, "dest")

    def make(kind: str, folder: str) -> str:
        """A file named x in `folder`, or a folder named x with a file in it."""
        if kind == "file":
            return put(graph, f"{folder}x").json["id"]
        made = mkdir(graph, "x", parent=f"root:/{folder}:" if folder else "root").json["id"]
        put(graph, f"{folder}x/inside.txt")
        return made

    mine, theirs = make(moving, ""), make(there, "dest/")
    response = patch(graph, mine, {"parentReference": {"path": "/drive/root:/dest"}}, "replace")
    assert response.status_int == 409
    assert graph_error(response) == ("nameAlreadyExists", None)
    assert item(graph, "x").json["id"] == mine
    assert item(graph, "dest/x").json["id"] == theirs
    for path, kind in (("x", moving), ("dest/x", there)):
        assert item(graph, f"{path}/inside.txt").status_int == (200 if kind == "folder" else 404)


def test_replace_never_replaces_the_folder_the_file_is_in(graph):
    top = mkdir(graph, "top").json["id"]
    mine = put(graph, "top/a.txt", b"mine").json["id"]
    response = patch(graph, mine, {"name": "top", "parentReference": {"path": "/drive/root:"}}, "replace")
    assert graph_error(response) == ("nameAlreadyExists", None)
    assert item(graph, "top").json["id"] == top
    assert item(graph, "top/a.txt").json["id"] == mine


@pytest.mark.parametrize("locked", ["theirs", "mine"])
def test_replace_where_either_file_is_locked_changes_nothing(graph, services, client_for, locked):
    """The file that would be replaced is deleted before the moving file is found locked: the transaction
    is undone whole, and neither file nor any content is lost."""
    dest = mkdir(graph, "dest").json["id"]
    mine = put(graph, "a.txt", b"mine").json["id"]
    theirs = put(graph, "dest/a.txt", b"theirs").json["id"]
    blobs = stored_blobs(services)
    assert client_for(services.files.get(mine if locked == "mine" else theirs)).lock("L1").status_int == 200
    response = patch(graph, mine, {"parentReference": {"path": "/drive/root:/dest"}}, "replace")
    assert response.status_int == 423
    assert graph_error(response) == ("resourceLocked", None)
    assert listing(graph) == {"a.txt": mine, "dest": dest}
    assert listing(graph, "dest") == {"a.txt": theirs}
    assert (content(graph, mine), content(graph, theirs)) == (b"mine", b"theirs")
    assert stored_blobs(services) == blobs


def test_replace_with_a_stale_if_match_changes_nothing(graph):
    mine = put(graph, "a.txt", b"mine").json["id"]
    theirs = put(graph, "b.txt", b"theirs").json["id"]
    response = patch(graph, mine, {"name": "b.txt"}, "replace", headers={"If-Match": '"{' + mine + '},99"'})
    assert response.status_int == 412
    assert listing(graph) == {"a.txt": mine, "b.txt": theirs}


# -- rename --------------------------------------------------------------------------------------------------


def test_rename_gives_a_file_the_first_free_counted_name(graph):
    mkdir(graph, "dest")
    put(graph, "dest/a.txt")
    put(graph, "dest/A 1.txt")
    mine = put(graph, "a.txt", b"mine").json["id"]
    response = patch(graph, mine, {"parentReference": {"path": "/drive/root:/dest"}}, "rename", "body")
    assert (response.status_int, response.json["name"], response.json["id"]) == (200, "a 2.txt", mine)
    assert item(graph, "dest/a 2.txt").json["id"] == mine
    assert content(graph, mine) == b"mine"


def test_rename_puts_a_folders_number_at_the_end_of_its_whole_name(graph):
    mkdir(graph, "v1.2")
    mine = mkdir(graph, "other").json["id"]
    response = patch(graph, mine, {"name": "v1.2"}, "rename")
    assert (response.status_int, response.json["name"]) == (200, "v1.2 1")


@pytest.mark.parametrize("name", ["free.txt", "A.TXT"])
def test_rename_keeps_a_name_that_is_free_or_its_own(graph, name):
    mine = put(graph, "a.txt").json["id"]
    response = patch(graph, mine, {"name": name}, "rename")
    assert (response.status_int, response.json["name"]) == (200, name)
    assert listing(graph) == {name: mine}


# -- bad values ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where, value", [("query", "overwrite"), ("query", ""), ("body", "Replace"), ("body", 5)])
@pytest.mark.parametrize("taken", [True, False])
def test_an_unknown_conflict_behaviour_is_400_whether_or_not_the_name_is_taken(graph, where, value, taken):
    mine = put(graph, "a.txt").json["id"]
    if taken:
        put(graph, "b.txt")
    response = patch(graph, mine, {"name": "b.txt"}, value, where)
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"
    assert listing(graph)["a.txt"] == mine


# -- concurrency ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_replace_sees_a_lock_taken_while_it_waited_for_the_file(graph, services, clock, database):
    """A WOPI Lock holds the file's row while it writes its lock. The replace waits for that row and then
    reads the lock as committed (READ COMMITTED): 423, and nothing moved."""
    mine = put(graph, "a.txt", b"mine").json["id"]
    theirs = put(graph, "b.txt", b"theirs").json["id"]
    answers = []
    with services.db.write() as s:
        load_file(s, theirs)  # the row lock a WOPI Lock takes first
        replacing = threading.Thread(target=lambda: answers.append(patch(graph, mine, {"name": "b.txt"}, "replace")))
        replacing.start()
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1), "the PATCH never waited"
        s.add(Lock(file_id=theirs, lock_id="L1", expires_at=clock.now() + timedelta(minutes=30)))
    replacing.join(30)
    assert answers[0].status_int == 423, answers[0].body
    assert listing(graph) == {"a.txt": mine, "b.txt": theirs}
    assert content(graph, theirs) == b"theirs"
