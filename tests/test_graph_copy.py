"""POST {item}/copy (docs/graph.md §3.7): a file, or a folder with everything in it, copied, each file with a blob
of its own, before the 202 that carries the monitor URL; the monitor, the conflict behaviours, and every check a
write makes."""

from __future__ import annotations

import os
import resource
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
import webtest

from wopihost.app import create_app
from wopihost.config import Settings
from wopihost.logs import REDACTED, redact
from wopihost.models import Folder, Lock
from wopihost.repository import load_file, lock_folder
from wopihost.storage import Blob

from .conftest import PG_URL
from .helpers import GraphClient, graph_error, postgres_lock_waiters, stored_blobs, wait_until
from .test_graph_items import PUBLIC, item, mkdir, put, revoke

KEY = "@microsoft.graph.conflictBehavior"


def copy(graph: GraphClient, source: str, body: dict | None = None, conflict: str | None = None, drive="me/drive"):
    """POST {drive}/{source}/copy (source: `items/{id}` or `root:/{path}:`) with `body`."""
    query = "" if conflict is None else f"?{KEY}={conflict}"
    return graph.post_json(f"{drive}/{source}/copy{query}".lstrip("/"), {} if body is None else body)


def copied(graph: GraphClient, response) -> dict:
    """The item a 202 copy made, as its monitor reports it."""
    assert response.status_int == 202, response.body
    status = monitor(graph, response.headers["Location"])
    assert status.status_int == 200, status.body
    return graph.get(f"me/drive/items/{status.json['resourceId']}").json


def monitor(graph: GraphClient, location: str):
    """GET the monitor URL with no token: it is its own credential."""
    return GraphClient(graph.testapp, None, graph.drive_id).get(location)


# -- the copy and its monitor ----------------------------------------------------------------------------------


def test_a_file_is_copied_into_a_folder_and_the_monitor_reports_it_done(graph, services, clock):
    source = put(graph, "a.txt", b"hello").json
    dest = mkdir(graph, "dest").json
    clock.advance(minutes=5)
    response = copy(graph, f"items/{source['id']}", {"parentReference": {"driveId": graph.drive_id, "id": dest["id"]}})
    assert response.status_int == 202
    assert response.body == b"" and "Content-Type" not in response.headers
    location = response.headers["Location"]
    assert location.startswith(f"{PUBLIC}/v1.0/monitor/")

    status = monitor(graph, location)
    assert status.status_int == 200 and status.content_type == "application/json"
    new_id = status.json["resourceId"]
    assert status.json == {
        "operation": "itemCopy",
        "percentageComplete": 100.0,
        "resourceId": new_id,
        "status": "completed",
    }
    assert new_id != source["id"]

    made = graph.get(f"me/drive/items/{new_id}").json
    assert made["name"] == "a.txt" and made["size"] == 5
    assert made["parentReference"]["id"] == dest["id"]
    assert made["file"]["hashes"] == source["file"]["hashes"]  # the source's hashes: the same bytes
    assert made["cTag"].endswith(',1"')  # version 1
    assert made["createdDateTime"] == made["lastModifiedDateTime"] != source["createdDateTime"]  # made now
    assert made["createdBy"]["user"]["id"] == "alice"
    assert graph.get(f"me/drive/items/{new_id}/content").body == b"hello"
    assert graph.get(f"me/drive/items/{source['id']}").json == {**source, **{"@microsoft.graph.downloadUrl": ANY}}


class _Any:
    def __eq__(self, other) -> bool:
        return True


ANY = _Any()


def test_the_copy_has_a_blob_of_its_own(graph, services):
    """Deleting either file releases its own blob; the other stays whole."""
    source = put(graph, "a.txt", b"shared?").json
    before = stored_blobs(services)
    made = copied(graph, copy(graph, f"items/{source['id']}", {"name": "b.txt"}))
    after = stored_blobs(services)
    assert len(after - before) == 1
    assert graph.delete(f"me/drive/items/{source['id']}").status_int == 204
    assert graph.get(f"me/drive/items/{made['id']}/content").body == b"shared?"
    assert len(stored_blobs(services)) == len(after) - 1
    assert graph.delete(f"me/drive/items/{made['id']}").status_int == 204
    assert len(stored_blobs(services)) == len(after) - 2


@pytest.mark.parametrize(
    "source, drive",
    [
        ("root:/docs/a.txt:", "me/drive"),
        ("items/root:/docs/a.txt:", "me/drive"),
        ("ID", "me/drive"),
        ("ID", "drives/DRIVE"),
        ("ID", "users/alice/drive"),
    ],
)
def test_every_item_addressing_form_copies(graph, source, drive):
    folder = mkdir(graph, "docs").json
    file = put(graph, "docs/a.txt", b"abc").json
    source = f"items/{file['id']}" if source == "ID" else source
    body = {"parentReference": {"path": "/drive/root:"}, "name": "b.txt"}
    made = copied(graph, copy(graph, source, body, drive=drive.replace("DRIVE", graph.drive_id)))
    assert made["name"] == "b.txt" and made["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:"
    assert graph.get("me/drive/root:/b.txt:/content").body == b"abc"
    assert folder["id"] != made["parentReference"]["id"]


def test_without_a_parent_reference_the_copy_goes_beside_its_source(graph):
    mkdir(graph, "docs")
    put(graph, "docs/a.txt", b"abc")
    made = copied(graph, copy(graph, "root:/docs/a.txt:", {"name": "A copy.txt"}))
    assert made["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:/docs"
    assert graph.get("me/drive/root:/docs/A copy.txt:/content").body == b"abc"


def test_a_parent_reference_by_path_is_percent_encoded_as_answers_give_it(graph):
    mkdir(graph, "my docs")
    put(graph, "a.txt", b"abc")
    made = copied(graph, copy(graph, "root:/a.txt:", {"parentReference": {"path": "/drive/root:/my%20docs"}}))
    assert made["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:/my%20docs"


@pytest.mark.parametrize("in_its_place", [True, False], ids=["another in its place", "nothing in its place"])
@pytest.mark.parametrize("source", ["root:/a.txt:", "root:/docs:"], ids=["a file", "a folder"])
def test_a_copy_to_a_parent_reference_path_lands_in_the_folder_at_the_path_when_it_is_saved(
    graph, services, monkeypatch, source, in_its_place
):
    """The folder dest a parentReference.path names is renamed away after the request found it and before the copy
    is made, and maybe another folder made in its place: the copy lands in the folder at the path then, as a copy
    asked a moment later would, or finds none (404, nothing copied, no blob kept); never in the folder that has
    gone elsewhere."""
    mkdir(graph, "docs")
    put(graph, "docs/b.txt", b"bee")
    put(graph, "a.txt", b"abc")
    dest, root = mkdir(graph, "dest").json["id"], graph.get("me/drive/root").json["id"]
    blobs, placed = stored_blobs(services), []
    real = {"files": services.files.copy, "tree": services.tree.copy_folder}

    def after_a_meddling(call):
        def copied_then(*args, **kwargs):
            services.tree.update(graph.drive_id, dest, "alice", name="was-dest")
            if in_its_place:
                placed.append(services.tree.create_folder(root, "dest", "fail", "alice")[0].id)
            return call(*args, **kwargs)

        return copied_then

    monkeypatch.setattr(services.files, "copy", after_a_meddling(real["files"]))
    monkeypatch.setattr(services.tree, "copy_folder", after_a_meddling(real["tree"]))
    response = copy(graph, source, {"parentReference": {"path": "/drive/root:/dest"}})
    monkeypatch.undo()
    assert graph.get(f"me/drive/items/{dest}/children").json["value"] == []
    if not in_its_place:
        assert response.status_int == 404 and graph_error(response)[0] == "itemNotFound", response.body
        assert stored_blobs(services) == blobs
        return
    made = copied(graph, response)
    assert made["parentReference"]["id"] == placed[0]
    name = source.strip(":").rpartition("/")[2]
    assert graph.get(f"me/drive/root:/dest/{name}:").json["id"] == made["id"]


def test_an_empty_file_is_copied(graph):
    put(graph, "empty.txt", b"")
    made = copied(graph, copy(graph, "root:/empty.txt:", {"name": "empty 2.txt"}))
    assert made["size"] == 0 and graph.get(f"me/drive/items/{made['id']}/content").body == b""


def test_a_copy_into_a_shared_drive_the_user_is_a_member_of(services, graph):
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "alice")
    put(graph, "a.txt", b"abc")
    body = {"parentReference": {"driveId": drive.id, "path": f"/drives/{drive.id}/root:"}}
    response = copy(graph, "root:/a.txt:", body)
    assert response.status_int == 202, response.body
    new_id = monitor(graph, response.headers["Location"]).json["resourceId"]
    made = graph.get(f"drives/{drive.id}/items/{new_id}").json
    assert made["parentReference"]["driveId"] == drive.id and made["name"] == "a.txt"
    assert graph.get(f"drives/{drive.id}/items/{new_id}/content").body == b"abc"


def test_another_drives_id_without_a_folder_in_it_is_400_and_copies_nothing(settings, clock):
    """Without `id` or `path` a copy goes beside its source, in the source's drive: a `driveId` naming another
    drive does not say where in that one, and must not let the copy land beside the source with the other
    drive's quota checked (the personal drive here has room for no copy)."""
    app = create_app(settings.with_changes(drive_quota=1000), clock)
    services = app.extensions["wopihost"]
    try:
        issued, drive_id = services.issue_api_token("alice", True)
        graph = GraphClient(webtest.TestApp(app), issued.token, drive_id)
        team = services.drives.create_shared("site", "Team")
        services.drives.add_member(team.id, "alice")
        put(graph, "a.bin", b"x" * 600)
        blobs = stored_blobs(services)
        response = copy(graph, "root:/a.bin:", {"name": "b.bin", "parentReference": {"driveId": team.id}})
        assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"
        assert item(graph, "b.bin").status_int == 404 and stored_blobs(services) == blobs
        assert graph.get(f"drives/{team.id}/root/children").json["value"] == []
    finally:
        services.db.dispose()


# -- conflicts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("conflict", [None, "fail"])
def test_the_same_name_in_the_same_folder_fails_by_default(graph, services, conflict):
    put(graph, "a.txt", b"abc")
    blobs = stored_blobs(services)
    response = copy(graph, "root:/a.txt:", {}, conflict)
    assert response.status_int == 409 and graph_error(response) == ("nameAlreadyExists", None)
    other = put(graph, "B.txt", b"other").json
    response = copy(graph, "root:/a.txt:", {"name": "b.TXT"}, conflict)
    assert response.status_int == 409 and graph_error(response) == ("nameAlreadyExists", None)
    assert graph.get(f"me/drive/items/{other['id']}/content").body == b"other"
    assert len(stored_blobs(services) - blobs) == 1  # B.txt's


def test_rename_gives_the_copy_a_free_name(graph):
    put(graph, "a.txt", b"abc")
    assert copied(graph, copy(graph, "root:/a.txt:", {}, "rename"))["name"] == "a 1.txt"
    assert copied(graph, copy(graph, "root:/a.txt:", {}, "rename"))["name"] == "a 2.txt"


def test_the_conflict_behaviour_may_be_in_the_body_and_the_querys_counts(graph):
    put(graph, "a.txt", b"abc")
    assert copied(graph, copy(graph, "root:/a.txt:", {KEY: "rename"}))["name"] == "a 1.txt"
    assert copy(graph, "root:/a.txt:", {KEY: "rename"}, "fail").status_int == 409


def test_replace_deletes_the_file_of_that_name_and_the_copy_is_a_new_item(graph, services):
    put(graph, "a.txt", b"abc")
    theirs = put(graph, "b.txt", b"theirs, longer").json
    blobs = stored_blobs(services)
    made = copied(graph, copy(graph, "root:/a.txt:", {"name": "B.txt"}, "replace"))
    assert made["id"] != theirs["id"] and made["name"] == "B.txt"
    assert graph.get(f"me/drive/items/{theirs['id']}").status_int == 404
    assert graph.get("me/drive/root:/b.txt:/content").body == b"abc"
    assert len(stored_blobs(services)) == len(blobs)  # the replaced file's blob went, the copy's came


@pytest.mark.parametrize("conflict", ["replace", "fail"])
def test_a_file_is_never_replaced_by_a_copy_of_itself_nor_a_folder(graph, conflict):
    source = put(graph, "a.txt", b"abc").json
    mkdir(graph, "b.txt")
    for body in ({}, {"name": "b.txt"}):
        response = copy(graph, "root:/a.txt:", body, conflict)
        assert response.status_int == 409 and graph_error(response) == ("nameAlreadyExists", None)
    assert item(graph, "a.txt").json["id"] == source["id"]
    assert graph.get("me/drive/root:/b.txt:").json["folder"] == {"childCount": 0}


def test_replace_of_a_locked_file_is_423(graph, services, clock):
    put(graph, "a.txt", b"abc")
    theirs = put(graph, "b.txt", b"theirs").json["id"]
    with services.db.write() as s:
        s.add(Lock(file_id=theirs, lock_id="L1", expires_at=clock.now() + timedelta(minutes=30)))
    response = copy(graph, "root:/a.txt:", {"name": "b.txt"}, "replace")
    assert response.status_int == 423 and graph_error(response)[0] == "resourceLocked"
    assert graph.get(f"me/drive/items/{theirs}/content").body == b"theirs"


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_copy_that_fails_in_its_transaction_leaves_no_blob(graph, services, clock, database):
    """The copy's bytes are made, then the file it would replace is locked before it lands: 423, and the new
    blob is deleted with the transaction that failed."""
    put(graph, "a.txt", b"abc")
    theirs = put(graph, "b.txt", b"theirs").json["id"]
    blobs = stored_blobs(services)
    answers = []
    with services.db.write() as s:
        load_file(s, theirs)  # the row lock a WOPI Lock takes first
        copying = threading.Thread(
            target=lambda: answers.append(copy(graph, "root:/a.txt:", {"name": "b.txt"}, "replace"))
        )
        copying.start()
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1), "the copy never waited"
        s.add(Lock(file_id=theirs, lock_id="L1", expires_at=clock.now() + timedelta(minutes=30)))
    copying.join(30)
    assert answers[0].status_int == 423, answers[0].body
    assert graph.get(f"me/drive/items/{theirs}/content").body == b"theirs"
    assert stored_blobs(services) == blobs


# -- refusals --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"parentReference": {"id": "x" * 22}}, 404, "itemNotFound"),
        ({"parentReference": {"path": "/drive/root:/nowhere"}}, 404, "itemNotFound"),
        ({"parentReference": {"path": "/drive/root:/a.txt"}}, 400, "invalidRequest"),  # a file
        ({"parentReference": {"path": "/drives/someother/root:"}}, 400, "invalidRequest"),
        ({"parentReference": {"id": 7}}, 400, "invalidRequest"),
        ({"parentReference": {"driveId": 7}}, 400, "invalidRequest"),
        ({"parentReference": {"driveId": "x" * 22}}, 404, "itemNotFound"),
        ({"parentReference": "root"}, 400, "invalidRequest"),
        ({"name": "b/c.txt"}, 400, "invalidRequest"),
        ({"name": "b.txt."}, 400, "invalidRequest"),
        ({"name": 7}, 400, "invalidRequest"),
        ({"name": "b.txt", "childrenOnly": True}, 400, "invalidRequest"),
        ([], 400, "invalidRequest"),
    ],
)
def test_a_bad_request_is_a_graph_error_and_makes_nothing(graph, services, body, status, code):
    put(graph, "a.txt", b"abc")
    blobs = stored_blobs(services)
    response = copy(graph, "root:/a.txt:", body)
    assert response.status_int == status, response.body
    assert graph_error(response)[0] == code
    assert [f.name for f in services.files.list()] == ["a.txt"]
    assert stored_blobs(services) == blobs


def test_an_unknown_source_is_404_and_a_body_is_required(graph):
    response = copy(graph, "root:/nothing.txt:", {})
    assert response.status_int == 404 and graph_error(response)[0] == "itemNotFound"
    put(graph, "a.txt", b"abc")
    response = graph.post("me/drive/root:/a.txt:/copy")
    assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"
    response = copy(graph, "root:/a.txt:", {"name": "b.txt"}, "sideways")
    assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"


def test_a_read_only_token_cannot_copy(graph, graph_for):
    put(graph, "a.txt", b"abc")
    reader = graph_for("alice", can_write=False)
    response = copy(reader, "root:/a.txt:", {"name": "b.txt"})
    assert response.status_int == 403 and graph_error(response) == ("accessDenied", None)
    assert item(graph, "b.txt").status_int == 404


def test_a_copy_into_a_drive_the_user_does_not_reach_is_403(services, graph):
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "bob")
    put(graph, "a.txt", b"abc")
    response = copy(graph, "root:/a.txt:", {"parentReference": {"driveId": drive.id}})
    assert response.status_int == 403 and graph_error(response) == ("accessDenied", None)


@pytest.mark.parametrize("what", ["a file", "a folder"])
def test_a_member_removed_from_the_source_drive_while_its_bytes_are_copied_copies_nothing_out(
    services, graph_for, monkeypatch, what
):
    """Bob copies out of a shared drive into his own; he leaves it while the bytes are copied: the copy, made of
    what he no longer reaches, must not land in his drive (403, no item, no blob), as an upload would not."""
    team = services.drives.create_shared("site", "Team")
    services.drives.add_member(team.id, "bob")
    bob = graph_for("bob")
    if what == "a folder":
        mkdir(bob, "docs", drive=f"drives/{team.id}")
    put(bob, "docs/a.txt" if what == "a folder" else "a.txt", b"secret", drive=f"drives/{team.id}")
    if what == "a folder":
        put(bob, "docs/b.txt", b"plans", drive=f"drives/{team.id}")
    source = "root:/docs:" if what == "a folder" else "root:/a.txt:"
    dest = mkdir(bob, "mine").json
    blobs = stored_blobs(services)
    copy_content = services.files.copy_content

    def copied_as_bob_leaves(file_id, *seen):
        blob = copy_content(file_id, *seen)
        services.drives.remove_member(team.id, "bob")  # at a folder's second file, he has left already: None
        return blob

    monkeypatch.setattr(services.files, "copy_content", copied_as_bob_leaves)
    body = {"parentReference": {"driveId": bob.drive_id, "id": dest["id"]}}
    response = copy(bob, source, body, drive=f"drives/{team.id}")
    assert response.status_int == 403 and graph_error(response) == ("accessDenied", None), response.body
    assert bob.get(f"me/drive/items/{dest['id']}/children").json["value"] == []
    assert stored_blobs(services) == blobs


def test_a_copy_of_another_drives_item_is_404(graph, graph_for):
    bob = graph_for("bob")
    theirs = put(bob, "a.txt", b"bob's").json["id"]
    response = copy(graph, f"items/{theirs}", {"name": "b.txt"})
    assert response.status_int == 404 and graph_error(response)[0] == "itemNotFound"


def test_a_copy_through_a_share_link_is_not_supported(services, graph, graph_for):
    source = put(graph, "a.txt", b"abc").json
    link = services.shares.link(source["id"], "ReadWrite", "alice")
    response = copy(graph_for("bob"), f"shares/{link.id}/driveItem", {"name": "b.txt"}, drive="")
    assert response.status_int == 405 and graph_error(response) == ("notSupported", None)


def test_a_copy_over_the_quota_is_507(settings, clock):
    app = create_app(settings.with_changes(drive_quota=1000), clock)
    services = app.extensions["wopihost"]
    try:
        issued, drive_id = services.issue_api_token("alice", True)
        graph = GraphClient(webtest.TestApp(app), issued.token, drive_id)
        put(graph, "a.bin", b"x" * 600)
        blobs = stored_blobs(services)
        response = copy(graph, "root:/a.bin:", {"name": "b.bin"})
        assert response.status_int == 507 and graph_error(response) == ("quotaLimitReached", None)
        assert item(graph, "b.bin").status_int == 404 and stored_blobs(services) == blobs
        put(graph, "c.bin", b"x" * 300)
        assert copy(graph, "root:/c.bin:", {"name": "a.bin"}, "replace").status_int == 202  # replacing frees
    finally:
        services.db.dispose()


@pytest.mark.local_storage
def test_a_copy_that_would_fill_the_disk_is_507_and_leaves_nothing(graph, services):
    put(graph, "a.txt", b"abc")
    blobs = stored_blobs(services)
    services.blobs.min_free = 1 << 60  # more than any disk has, whatever others write meanwhile
    response = copy(graph, "root:/a.txt:", {"name": "b.txt"})
    assert response.status_int == 507 and graph_error(response)[0] == "insufficientStorage"
    services.blobs.min_free = 0
    assert item(graph, "b.txt").status_int == 404 and stored_blobs(services) == blobs


# -- the monitor URL -------------------------------------------------------------------------------------------


def test_the_monitor_is_a_credential_that_expires_and_goes_with_its_token(graph, graph_for, services, clock):
    put(graph, "a.txt", b"abc")
    location = copy(graph, "root:/a.txt:", {"name": "b.txt"}).headers["Location"]
    assert monitor(graph, location).status_int == 200
    assert monitor(graph, location).json == monitor(graph, location).json  # the same answer every time
    response = monitor(graph, location[:-2] + ("AA" if not location.endswith("AA") else "BB"))
    assert response.status_int == 401 and graph_error(response)[0] == "unauthenticated"
    assert monitor(graph, f"{PUBLIC}/v1.0/monitor/nothing").status_int == 401
    assert GraphClient(graph.testapp, None, graph.drive_id).post(location).status_int == 405
    clock.advance(minutes=61)
    response = monitor(graph, location)
    assert response.status_int == 401 and graph_error(response)[0] == "unauthenticated"

    other = graph_for("alice")
    location = copy(other, "root:/a.txt:", {"name": "c.txt"}).headers["Location"]
    revoke(services, other.token)
    assert monitor(graph, location).status_int == 401


def test_the_monitor_url_is_redacted_in_logs_as_a_ticket(graph):
    put(graph, "a.txt", b"abc")
    ticket = copy(graph, "root:/a.txt:", {"name": "b.txt"}).headers["Location"].rsplit("/", 1)[1]
    line = redact(f'127.0.0.1 "GET /v1.0/monitor/{ticket} HTTP/1.1" 200 99 1ms override=-')
    assert ticket.split(".")[-1] not in line and REDACTED in line


def test_every_prefix_serves_the_monitor(graph):
    put(graph, "a.txt", b"abc")
    location = copy(graph, "root:/a.txt:", {"name": "b.txt"}).headers["Location"]
    for prefix in ("/v2.0", "/_api/v2.0"):
        assert monitor(graph, location.replace("/v1.0/", prefix + "/")).json["status"] == "completed"


# -- folders ---------------------------------------------------------------------------------------------------


def make_tree(graph: GraphClient, top: str = "docs") -> dict:
    """A folder `top` holding a.txt, an empty folder and sub/b.txt, sub/deeper/c.bin; the folder's item."""
    folder = mkdir(graph, top).json
    mkdir(graph, "empty", f"items/{folder['id']}")
    sub = mkdir(graph, "sub", f"items/{folder['id']}").json
    mkdir(graph, "deeper", f"items/{sub['id']}")
    put(graph, f"{top}/a.txt", b"alpha")
    put(graph, f"{top}/sub/b.txt", b"bravo")
    put(graph, f"{top}/sub/deeper/c.bin", b"\x00charlie")
    return folder


TREE = {
    "a.txt": b"alpha",
    "empty": None,
    "sub": None,
    "sub/b.txt": b"bravo",
    "sub/deeper": None,
    "sub/deeper/c.bin": b"\x00charlie",
}


def contents(graph: GraphClient, folder_id: str, drive: str = "me/drive") -> tuple[dict, set[str]]:
    """What is below a folder, by path: a file's bytes, None for a folder; and the ids of those items."""
    found: dict = {}
    ids: set[str] = set()
    for child in graph.get(f"{drive}/items/{folder_id}/children").json["value"]:
        ids.add(child["id"])
        if "folder" in child:
            found[child["name"]] = None
            below, below_ids = contents(graph, child["id"], drive)
            found.update({f"{child['name']}/{path}": data for path, data in below.items()})
            ids |= below_ids
        else:
            found[child["name"]] = graph.get(f"{drive}/items/{child['id']}/content").body
    return found, ids


def test_a_folder_is_copied_with_everything_in_it(graph, services):
    source = make_tree(graph)
    dest = mkdir(graph, "dest").json
    before, source_ids = contents(graph, source["id"])
    blobs = stored_blobs(services)
    body = {"parentReference": {"id": dest["id"]}, "name": "docs copy"}
    made = copied(graph, copy(graph, f"items/{source['id']}", body))
    assert made["name"] == "docs copy" and made["parentReference"]["id"] == dest["id"] and made["id"] != source["id"]
    assert made["folder"] == {"childCount": 3} and made["createdBy"]["user"]["id"] == "alice"
    copy_tree, copy_ids = contents(graph, made["id"])
    assert before == copy_tree == TREE
    assert not copy_ids & source_ids  # every item new
    assert graph.get("me/drive/root:/dest/docs copy/sub/deeper/c.bin:").json["createdBy"]["user"]["id"] == "alice"
    assert contents(graph, source["id"]) == (TREE, source_ids)  # the source as it was
    assert len(stored_blobs(services) - blobs) == 3  # a blob for each file copied

    assert graph.delete(f"me/drive/items/{source['id']}").status_int == 204
    assert contents(graph, made["id"]) == (TREE, copy_ids)
    assert len(stored_blobs(services)) == len(blobs)
    assert graph.delete(f"me/drive/items/{made['id']}").status_int == 204
    assert len(stored_blobs(services)) == len(blobs) - 3


def test_a_folder_is_copied_beside_itself_by_path_and_into_another_drive(services, graph):
    make_tree(graph)
    made = copied(graph, copy(graph, "root:/docs:", {"name": "docs 2"}))
    assert made["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:"
    assert contents(graph, made["id"])[0] == TREE

    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "alice")
    body = {"parentReference": {"driveId": drive.id, "path": f"/drives/{drive.id}/root:"}}
    response = copy(graph, "root:/docs:", body)
    assert response.status_int == 202, response.body
    new_id = monitor(graph, response.headers["Location"]).json["resourceId"]
    assert contents(graph, new_id, f"drives/{drive.id}")[0] == TREE
    team = graph.get(f"drives/{drive.id}/root:/docs/sub/deeper:").json
    assert team["parentReference"]["driveId"] == drive.id


def test_children_only_copies_what_is_in_the_folder_into_the_destination(graph):
    source = make_tree(graph)
    dest = mkdir(graph, "dest").json
    put(graph, "dest/mine.txt", b"mine")
    response = copy(graph, f"items/{source['id']}", {"parentReference": {"id": dest["id"]}, "childrenOnly": True})
    assert response.status_int == 202, response.body
    assert monitor(graph, response.headers["Location"]).json["resourceId"] == dest["id"]
    assert contents(graph, dest["id"])[0] == {**TREE, "mine.txt": b"mine"}
    assert contents(graph, source["id"])[0] == TREE


@pytest.mark.parametrize("conflict", [None, "fail", "replace"])
def test_a_taken_folder_name_fails_and_replace_never_replaces_a_folder(graph, services, conflict):
    make_tree(graph)
    dest = mkdir(graph, "dest").json
    theirs = mkdir(graph, "DOCS", f"items/{dest['id']}").json
    put(graph, "dest/DOCS/keep.txt", b"keep")
    put(graph, "dest/file", b"a file")
    blobs = stored_blobs(services)
    for name in ("docs", "file"):  # taken by a folder, by a file
        response = copy(graph, "root:/docs:", {"parentReference": {"id": dest["id"]}, "name": name}, conflict)
        assert response.status_int == 409 and graph_error(response) == ("nameAlreadyExists", None)
    response = copy(graph, "root:/docs:", {}, conflict)  # beside itself, under its own name
    assert response.status_int == 409
    assert contents(graph, dest["id"])[0] == {"DOCS": None, "DOCS/keep.txt": b"keep", "file": b"a file"}
    assert graph.get(f"me/drive/items/{theirs['id']}").status_int == 200
    assert stored_blobs(services) == blobs


def test_rename_gives_the_folder_a_free_name(graph):
    make_tree(graph)
    assert copied(graph, copy(graph, "root:/docs:", {}, "rename"))["name"] == "docs 1"
    made = copied(graph, copy(graph, "root:/docs:", {}, "rename"))
    assert made["name"] == "docs 2" and contents(graph, made["id"])[0] == TREE


def test_children_only_judges_each_child(graph, services):
    source = make_tree(graph)
    dest = mkdir(graph, "dest").json
    theirs = put(graph, "dest/A.TXT", b"theirs").json
    reference = {"parentReference": {"id": dest["id"]}, "childrenOnly": True}
    blobs = stored_blobs(services)
    response = copy(graph, f"items/{source['id']}", reference)  # fail: a.txt is taken
    assert response.status_int == 409 and graph_error(response) == ("nameAlreadyExists", None)
    assert contents(graph, dest["id"])[0] == {"A.TXT": b"theirs"} and stored_blobs(services) == blobs

    assert copy(graph, f"items/{source['id']}", reference, "replace").status_int == 202  # the file is replaced
    assert contents(graph, dest["id"])[0] == TREE
    assert graph.get(f"me/drive/items/{theirs['id']}").status_int == 404
    assert len(stored_blobs(services) - blobs) == 3 and len(blobs - stored_blobs(services)) == 1

    response = copy(graph, f"items/{source['id']}", reference, "replace")  # now folders are in the way: fail
    assert response.status_int == 409 and graph_error(response) == ("nameAlreadyExists", None)
    assert contents(graph, dest["id"])[0] == TREE

    assert copy(graph, f"items/{source['id']}", reference, "rename").status_int == 202
    names = {path for path in contents(graph, dest["id"])[0] if "/" not in path}
    assert names == {"a.txt", "empty", "sub", "a 1.txt", "empty 1", "sub 1"}
    assert graph.get("me/drive/root:/dest/sub 1/deeper/c.bin:/content").body == b"\x00charlie"


def test_children_only_replacing_a_locked_file_is_423_and_copies_nothing(graph, services, clock):
    source = make_tree(graph)
    dest = mkdir(graph, "dest").json
    theirs = put(graph, "dest/a.txt", b"theirs").json["id"]
    with services.db.write() as s:
        s.add(Lock(file_id=theirs, lock_id="L1", expires_at=clock.now() + timedelta(minutes=30)))
    blobs = stored_blobs(services)
    body = {"parentReference": {"id": dest["id"]}, "childrenOnly": True}
    response = copy(graph, f"items/{source['id']}", body, "replace")
    assert response.status_int == 423 and graph_error(response)[0] == "resourceLocked"
    assert contents(graph, dest["id"])[0] == {"a.txt": b"theirs"} and stored_blobs(services) == blobs


@pytest.mark.parametrize(
    "target, body",
    [
        ("docs", {}),
        ("docs/sub", {}),
        ("docs/sub/deeper", {}),
        ("docs", {"childrenOnly": True}),
        ("docs/sub", {"childrenOnly": True}),
    ],
)
def test_a_folder_is_never_copied_into_itself_or_below_it(graph, services, target, body):
    make_tree(graph)
    blobs = stored_blobs(services)
    body = {"parentReference": {"path": f"/drive/root:/{target}"}, **body}
    for conflict in ("fail", "rename"):
        response = copy(graph, "root:/docs:", body, conflict)
        assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"
    assert contents(graph, item(graph, "docs").json["id"])[0] == TREE and stored_blobs(services) == blobs


def test_the_root_is_never_copied(graph):
    mkdir(graph, "docs")
    for body in ({}, {"parentReference": {"path": "/drive/root:/docs"}}, {"childrenOnly": True}):
        response = copy(graph, "root", body, "rename")
        assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"


@pytest.mark.parametrize(
    "body",
    [
        {"childrenOnly": "yes"},
        {"childrenOnly": True, "name": "other"},
        {"name": "a/b"},
        {"parentReference": {"path": "/drive/root:/docs/a.txt"}},
    ],
)
def test_a_bad_folder_copy_is_400_and_makes_nothing(graph, services, body):
    make_tree(graph)
    blobs = stored_blobs(services)
    response = copy(graph, "root:/docs:", body)
    assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"
    assert [child["name"] for child in graph.get("me/drive/root/children").json["value"]] == ["docs"]
    assert stored_blobs(services) == blobs


def test_a_folder_deleted_after_its_copy_was_asked_for_is_404(graph, services, monkeypatch):
    """The request finds the folder; another deletes it before the copy reads what is below it."""
    make_tree(graph)
    dest = mkdir(graph, "dest").json
    copy_folder = services.tree.copy_folder

    def deleted_first(folder_id, *args):
        services.tree.delete(graph.drive_id, folder_id)
        return copy_folder(folder_id, *args)

    monkeypatch.setattr(services.tree, "copy_folder", deleted_first)
    response = copy(graph, "root:/docs:", {"parentReference": {"id": dest["id"]}})
    assert response.status_int == 404 and graph_error(response)[0] == "itemNotFound", response.body
    assert graph.get(f"me/drive/items/{dest['id']}/children").json["value"] == []


@contextmanager
def graph_with(settings, clock, **changes):
    """alice's Graph client on an app with these settings changed, and its services."""
    app = create_app(settings.with_changes(**changes), clock)
    services = app.extensions["wopihost"]
    try:
        issued, drive_id = services.issue_api_token("alice", True)
        yield GraphClient(webtest.TestApp(app), issued.token, drive_id), services
    finally:
        services.db.dispose()


def test_a_folder_copy_over_the_quota_is_507_and_makes_nothing(settings, clock):
    with graph_with(settings, clock, drive_quota=1000) as (graph, services):
        mkdir(graph, "docs")
        mkdir(graph, "sub", "root:/docs:")
        put(graph, "docs/a.bin", b"x" * 300)
        put(graph, "docs/sub/b.bin", b"x" * 300)
        blobs = stored_blobs(services)
        response = copy(graph, "root:/docs:", {"name": "docs 2"})
        assert response.status_int == 507 and graph_error(response) == ("quotaLimitReached", None)
        assert item(graph, "docs 2").status_int == 404 and stored_blobs(services) == blobs
        assert graph.delete("me/drive/root:/docs/sub/b.bin:").status_int == 204
        assert copied(graph, copy(graph, "root:/docs:", {"name": "docs 2"}))["folder"]["childCount"] == 2


def test_a_folder_with_more_items_than_max_copy_items_is_refused(settings, clock):
    assert Settings.from_env({}).max_copy_items == 500
    assert Settings.from_env({"WOPIHOST_MAX_COPY_ITEMS": "20"}).max_copy_items == 20
    with graph_with(settings, clock, max_copy_items=6) as (graph, services):
        source = make_tree(graph)  # 6 items below it
        assert copied(graph, copy(graph, "root:/docs:", {"name": "docs 2"}))["name"] == "docs 2"
        put(graph, "docs/sub/deeper/one more.txt", b"7")
        blobs = stored_blobs(services)
        for body in ({"name": "docs 3"}, {"childrenOnly": True, "parentReference": {"path": "/drive/root:"}}):
            response = copy(graph, f"items/{source['id']}", body, "rename")
            assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"
            assert "WOPIHOST_MAX_COPY_ITEMS" in response.json["error"]["message"]
        mkdir(graph, "many")
        for n in range(7):
            mkdir(graph, f"{n}", "root:/many:")
        response = copy(graph, "root:/many:", {"name": "many 2"})  # folders count too
        assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"
        assert item(graph, "docs 3").status_int == 404 and item(graph, "many 2").status_int == 404
        assert stored_blobs(services) == blobs


@pytest.mark.local_storage
def test_a_folder_copy_that_would_fill_the_disk_is_507_and_leaves_nothing(graph, services):
    make_tree(graph)
    blobs = stored_blobs(services)
    services.blobs.min_free = 1 << 60
    response = copy(graph, "root:/docs:", {"name": "docs 2"})
    assert response.status_int == 507 and graph_error(response)[0] == "insufficientStorage"
    services.blobs.min_free = 0
    assert item(graph, "docs 2").status_int == 404 and stored_blobs(services) == blobs


@pytest.mark.local_storage  # where each copy made is held by an open descriptor until the copy lands
def test_a_folder_copy_past_the_descriptor_limit_is_503_and_leaves_nothing(graph, services):
    """Each file's copy stays open until the copy lands: a folder of more files than the process may still open
    failed with EMFILE, a 500. Now 503, as for any passing shortage of the host's, and nothing is left."""
    assert mkdir(graph, "many").status_int == 201
    for i in range(40):
        assert graph.put(f"me/drive/root:/many/{i}.txt:/content", b"%d" % i).status_int == 201
    blobs = stored_blobs(services)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 20, hard))
    try:
        response = copy(graph, "root:/many:", {"name": "many 2"})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert response.status_int == 503 and graph_error(response)[0] == "serviceNotAvailable", response.body
    assert "too many files open" in response.json["error"]["message"]
    assert item(graph, "many 2").status_int == 404 and stored_blobs(services) == blobs


def test_a_folder_copy_keeps_holding_the_copies_it_has_made(graph, monkeypatch):
    """A large folder's copies may take longer than an S3 hold's lease (holds.py): held only while each was
    written, the first ones lapsed, gc deleted them, and the copy landed rows naming objects that were gone.
    Every copy made is kept after each next one."""
    make_tree(graph)
    kept: list[str] = []
    monkeypatch.setattr(Blob, "keep", lambda self: kept.append(self.name))
    assert copied(graph, copy(graph, "root:/docs:", {"name": "docs 2"}))["name"] == "docs 2"
    assert len(kept) == 1 + 2 + 3 and len(set(kept)) == 3


def test_a_read_only_token_cannot_copy_a_folder(graph, graph_for):
    make_tree(graph)
    response = copy(graph_for("alice", can_write=False), "root:/docs:", {"name": "docs 2"})
    assert response.status_int == 403 and graph_error(response) == ("accessDenied", None)
    assert item(graph, "docs 2").status_int == 404


def test_a_folder_copy_through_a_share_link_is_not_supported(services, graph, graph_for):
    source = make_tree(graph)
    link = services.shares.link(source["id"], "ReadWrite", "alice")
    for body in ({"name": "docs 2"}, {"childrenOnly": True}):
        response = copy(graph_for("bob"), f"shares/{link.id}/driveItem", body, drive="")
        assert response.status_int == 405 and graph_error(response) == ("notSupported", None)
    assert item(graph, "docs 2").status_int == 404


def test_a_folder_copy_into_a_drive_the_user_does_not_reach_is_403(services, graph):
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "bob")
    make_tree(graph)
    response = copy(graph, "root:/docs:", {"parentReference": {"driveId": drive.id}})
    assert response.status_int == 403 and graph_error(response) == ("accessDenied", None)


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_folder_copy_whose_token_is_revoked_before_it_lands_leaves_nothing(graph, services, database):
    """The bytes are copied, the destination's row is held while the token is revoked: 401, no row, no blob."""
    make_tree(graph)
    dest = mkdir(graph, "dest").json
    blobs = stored_blobs(services)
    answers = []
    with services.db.write() as s:
        lock_folder(s, dest["id"])
        copying = threading.Thread(
            target=lambda: answers.append(copy(graph, "root:/docs:", {"parentReference": {"id": dest["id"]}}))
        )
        copying.start()
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1), "the copy never waited"
        assert len(stored_blobs(services) - blobs) == 3  # its bytes are in
        revoke(services, graph.token)
    copying.join(30)
    assert answers[0].status_int == 401, answers[0].body
    with services.db.read() as s:
        assert not s.scalars(sa.select(Folder).where(Folder.parent_id == dest["id"])).all()
    assert stored_blobs(services) == blobs
