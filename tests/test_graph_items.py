"""The Graph face without upload sessions: drives, item addressing, driveItem JSON, children and paging,
folders, PATCH, DELETE, content and download URLs, simple upload, token scope, error JSON."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
import sqlalchemy as sa
import webtest

from wopihost import db as wopihost_db
from wopihost import quickxor
from wopihost.app import create_app
from wopihost.ids import new_id
from wopihost.models import File, Folder, name_key
from wopihost.repository import lock_folder

from .conftest import PG_URL
from .helpers import (
    GraphClient,
    graph_error,
    postgres_lock_waiters,
    statements_sent,
    stored_blobs,
    wait_until,
    while_the_body_comes,
)

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PUBLIC = "https://wopi.example.test"


# -- helpers --------------------------------------------------------------------------------------


def put(graph: GraphClient, path: str, data: bytes = b"data", drive: str = "me/drive", query: str = ""):
    """Simple upload of `data` to root:/{path}."""
    return graph.put(f"{drive}/root:/{quote(path)}:/content{query}", data)


def mkdir(graph: GraphClient, name: str, parent: str = "root", drive: str = "me/drive", **extra):
    return graph.post_json(f"{drive}/{parent}/children", {"name": name, "folder": {}, **extra})


def item(graph: GraphClient, path: str, drive: str = "me/drive"):
    return graph.get(f"{drive}/root:/{quote(path)}:")


def revoke(services, token: str) -> None:
    with services.db.write() as s:
        assert services.tokens.revoke(s, token=token) == 1


@pytest.fixture
def quota_app(settings, clock):
    """An app whose drives hold 1000 bytes (WOPIHOST_DRIVE_QUOTA), a Graph client for alice and its services."""
    app = create_app(settings.with_changes(drive_quota=1000), clock)
    services = app.extensions["wopihost"]
    issued, drive_id = services.issue_api_token("alice", True)
    yield GraphClient(webtest.TestApp(app), issued.token, drive_id), services
    services.db.dispose()


# -- prefixes and drives ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/v1.0", "/v2.0", "/_api/v2.0"])
def test_every_version_prefix_serves_the_same_drive(graph, graph_for, prefix):
    assert put(graph, "a.txt", b"abc").status_int == 201
    other = graph_for(prefix=prefix)
    assert other.get("me/drive").json["id"] == graph.drive_id
    assert [i["name"] for i in other.get("me/drive/root/children").json["value"]] == ["a.txt"]
    assert other.get("me/drive/root:/a.txt:/content").body == b"abc"
    assert mkdir(other, "made there").status_int == 201
    assert item(graph, "made there").json["folder"] == {"childCount": 0}


@pytest.mark.parametrize("drive", ["me/drive", "drives/{id}", "users/alice/drive"])
def test_drive_prefixes_reach_the_own_drive(graph, drive):
    drive = drive.format(id=graph.drive_id)
    assert graph.get(drive).json["id"] == graph.drive_id
    root = graph.get(f"{drive}/root")
    assert root.status_int == 200
    assert root.json["id"] == graph.get("me/drive/root").json["id"]


def test_users_drive_of_another_user_is_forbidden(graph, graph_for):
    graph_for("bob")
    response = graph.get("users/bob/drive/root")
    assert response.status_int == 403
    assert graph_error(response) == ("accessDenied", None)


def test_drives_id_of_another_users_personal_drive_is_forbidden(graph, graph_for):
    bob = graph_for("bob")
    response = graph.get(f"drives/{bob.drive_id}")
    assert response.status_int == 403
    assert graph_error(response) == ("accessDenied", None)
    assert graph_error(graph.get(f"drives/{bob.drive_id}/root/children"))[0] == "accessDenied"


def test_drives_with_an_unknown_id_is_not_found(graph):
    for drive_id in (new_id(), "nope"):
        response = graph.get(f"drives/{drive_id}")
        assert response.status_int == 404
        assert graph_error(response) == ("itemNotFound", None)


def test_drive_json_of_a_personal_drive_without_quota(graph, services, make_file, settings):
    make_file(b"x" * 11, "one.docx")
    assert put(graph, "two.txt", b"y" * 5).status_int == 201
    body = graph.get("me/drive").json
    assert body["id"] == graph.drive_id
    assert body["driveType"] == "personal"
    assert body["owner"] == {"user": {"id": "alice", "displayName": services.user("alice").display_name}}
    quota = body["quota"]
    assert quota["used"] == 16
    assert quota["state"] == "normal" and quota["deleted"] == 0
    if services.blobs.free_space() is None:  # an object store does not say: no limits shown
        assert "total" not in quota and "remaining" not in quota
        return
    assert quota["remaining"] > 0
    assert quota["total"] == quota["used"] + quota["remaining"]
    free = shutil.disk_usage(settings.blob_dir).free - settings.min_free_space
    assert abs(quota["remaining"] - free) < 16 << 20


def test_drive_quota_counts_only_this_drive(graph, graph_for):
    bob = graph_for("bob")
    assert put(bob, "b.txt", b"b" * 100).status_int == 201
    assert put(graph, "a.txt", b"a" * 7).status_int == 201
    assert graph.get("me/drive").json["quota"]["used"] == 7


@pytest.mark.parametrize(
    "used, state",
    [(899, "normal"), (900, "nearing"), (989, "nearing"), (990, "critical"), (1000, "exceeded"), (1200, "exceeded")],
)
def test_drive_json_with_a_quota(quota_app, used, state):
    graph, services = quota_app
    services.add_file("alice", "fill.bin", io.BytesIO(b"x" * used))
    quota = graph.get("me/drive").json["quota"]
    assert quota == {"total": 1000, "used": used, "remaining": max(1000 - used, 0), "deleted": 0, "state": state}


def test_simple_upload_over_the_quota_is_refused(quota_app):
    graph, _ = quota_app
    assert put(graph, "a.bin", b"x" * 900).status_int == 201
    response = put(graph, "b.bin", b"x" * 101)
    assert response.status_int == 507
    assert graph_error(response) == ("quotaLimitReached", None)
    assert item(graph, "b.bin").status_int == 404
    assert put(graph, "a.bin", b"x" * 1000).status_int == 200  # replacing frees the old bytes


def test_a_simple_upload_beside_a_file_of_its_name_over_the_quota_is_refused_before_its_body(quota_app, monkeypatch):
    """With rename, the file of the name stays: its bytes are not freed, and a declared length that would not fit is
    refused before any byte is stored, as every declared length is (docs/graph.md §3.6)."""
    graph, services = quota_app
    assert put(graph, "a.bin", b"x" * 900).status_int == 201
    stored, write = [], services.blobs.write
    monkeypatch.setattr(services.blobs, "write", lambda *args: stored.append(args) or write(*args))
    response = put(graph, "a.bin", b"y" * 500, query="?@microsoft.graph.conflictBehavior=rename")
    assert (response.status_int, graph_error(response)[0]) == (507, "quotaLimitReached"), response.body
    assert stored == []
    assert [child["name"] for child in graph.get("me/drive/root/children").json["value"]] == ["a.bin"]


def test_chunked_simple_upload_over_the_quota_is_refused(quota_app):
    graph, _ = quota_app
    request = webtest.TestRequest.blank("/v1.0/me/drive/root:/big.bin:/content", method="PUT", headers=graph.headers())
    request.environ.pop("CONTENT_LENGTH", None)
    request.environ.update(
        {"wsgi.input": io.BytesIO(b"x" * 5000), "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}
    )
    response = graph.testapp.do_request(request, status="*", expect_errors=True)
    assert response.status_int == 507
    assert graph_error(response) == ("quotaLimitReached", None)
    assert graph.get("me/drive").json["quota"]["used"] == 0


# -- shared drives -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, via", [("site", "sites"), ("group", "groups")])
def test_shared_drive_for_a_member(services, graph_for, kind, via):
    drive = services.drives.create_shared(kind, "Team")
    services.drives.add_member(drive.id, "bob")
    bob = graph_for("bob")
    body = bob.get(f"{via}/{drive.id}/drive").json
    assert body["id"] == drive.id
    assert body["driveType"] == "documentLibrary"
    assert body["owner"] == {"group": {"id": drive.id, "displayName": "Team"}}
    created = put(bob, "shared.txt", b"hi", drive=f"{via}/{drive.id}/drive")
    assert created.status_int == 201
    assert created.json["parentReference"]["driveId"] == drive.id
    assert created.json["parentReference"]["driveType"] == "documentLibrary"
    assert created.json["createdBy"]["user"]["id"] == "bob"
    assert bob.get(f"drives/{drive.id}/root:/shared.txt:/content").body == b"hi"
    assert item(bob, "shared.txt").status_int == 404  # not in bob's own drive


@pytest.mark.parametrize("kind, via", [("site", "sites"), ("group", "groups")])
def test_shared_drive_refuses_non_members(services, graph, kind, via):
    drive = services.drives.create_shared(kind, "Team")
    services.drives.add_member(drive.id, "bob")
    for path in (f"{via}/{drive.id}/drive", f"{via}/{drive.id}/drive/root/children", f"drives/{drive.id}"):
        response = graph.get(path)
        assert response.status_int == 403, path
        assert graph_error(response) == ("accessDenied", None)


@pytest.mark.parametrize("what", ["a new file", "a new version"])
def test_a_member_removed_while_a_simple_upload_comes_writes_nothing(services, graph_for, what):
    """Bob was a member when the upload began, and no longer is when its body is in."""
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "bob")
    bob = graph_for("bob")
    existing = put(bob, "plan.txt", b"plan", drive=f"drives/{drive.id}").json
    path = "root:/late.txt:/content" if what == "a new file" else f"items/{existing['id']}/content"
    blobs = stored_blobs(services)
    answer = while_the_body_comes(
        lambda held: bob.put_from(f"drives/{drive.id}/{path}", held, 4096),
        b"x" * 4096,
        lambda: services.drives.remove_member(drive.id, "bob"),
    )
    assert answer.status_int == 403 and graph_error(answer) == ("accessDenied", None), answer.body
    alice = graph_for("alice")
    services.drives.add_member(drive.id, "alice")
    assert alice.get(f"drives/{drive.id}/root:/late.txt:").status_int == 404
    assert alice.get(f"drives/{drive.id}/items/{existing['id']}/content").body == b"plan"
    assert stored_blobs(services) == blobs


@pytest.mark.parametrize("what", ["a new file", "a new version"])
def test_an_api_token_revoked_while_a_simple_upload_comes_writes_nothing(services, graph, what):
    """The API token was live when the upload began, and is revoked before its body is in: 401, nothing lands."""
    existing = put(graph, "plan.txt", b"plan").json
    path = "root:/late.txt:/content" if what == "a new file" else f"items/{existing['id']}/content"
    blobs = stored_blobs(services)

    def revoke() -> None:
        with services.db.write() as s:
            assert services.tokens.revoke(s, token=graph.token) == 1

    answer = while_the_body_comes(lambda held: graph.put_from(f"me/drive/{path}", held, 4096), b"x" * 4096, revoke)
    assert answer.status_int == 401 and graph_error(answer)[0] == "unauthenticated", answer.body
    assert [f.name for f in services.files.list()] == ["plan.txt"]
    assert services.files.get(existing["id"]).size == 4
    assert stored_blobs(services) == blobs


@pytest.mark.parametrize("in_its_place", [True, False], ids=["another in its place", "nothing in its place"])
def test_a_simple_upload_by_path_lands_in_the_folder_at_the_path_when_its_bytes_are_in(services, graph, in_its_place):
    """The folder docs is renamed away while the body of a PUT root:/docs/new.txt:/content comes, and maybe another
    folder made in its place: the file lands in the folder at the path once its bytes are in, as a request a moment
    later would, or finds none and makes it again, as any upload to a path whose folders are missing; never in the
    folder that has gone elsewhere."""
    docs = mkdir(graph, "docs").json["id"]
    root = graph.get("me/drive/root").json["id"]
    blobs = stored_blobs(services)
    placed = []

    def meddle() -> None:
        services.tree.update(graph.drive_id, docs, "alice", name="was-docs")
        if in_its_place:
            placed.append(services.tree.create_folder(root, "docs", "fail", "alice")[0].id)

    answer = while_the_body_comes(
        lambda held: graph.put_from("me/drive/root:/docs/new.txt:/content", held, 4096), b"x" * 4096, meddle
    )
    assert graph.get("me/drive/root:/was-docs:/children").json["value"] == []
    if not in_its_place:
        made = graph.get("me/drive/root:/docs").json["id"]
        assert made != docs
        assert (answer.status_int, answer.json["parentReference"]["id"]) == (201, made), answer.body
        assert len(stored_blobs(services) - blobs) == 1
        return
    assert (answer.status_int, answer.json["parentReference"]["id"]) == (201, placed[0]), answer.body
    assert graph.get("me/drive/root:/docs/new.txt:/content").body == b"x" * 4096


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_simple_upload_by_path_that_waits_for_its_folder_lands_in_the_folder_at_the_path_then(
    services, graph, database
):
    """The race itself: the upload's bytes are in and it waits for the folder docs, which another transaction holds,
    renames away and renames the folder other into its name; then it gets the folder and lands in other, now at the
    path."""
    docs, other = mkdir(graph, "docs").json["id"], mkdir(graph, "other").json["id"]
    answers = []
    with services.db.write() as s:
        lock_folder(s, docs)  # as another change in that folder holds it
        asking = threading.Thread(target=lambda: answers.append(put(graph, "docs/new.txt", b"new")))
        asking.start()
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1), "the upload never waited"
        for folder_id, name in ((docs, "was-docs"), (other, "docs")):
            renamed = s.get_one(Folder, folder_id)
            renamed.name, renamed.name_key = name, name_key(name)
            s.flush()  # each name is taken in turn: (folder, name) is unique
    asking.join(30)
    assert (answers[0].status_int, answers[0].json["parentReference"]["id"]) == (201, other), answers[0].body
    assert graph.get("me/drive/root:/was-docs:/children").json["value"] == []


_CHANGES = {  # what bob asks of the file docs/a.txt (or the folder docs) of a shared drive: method, item, body
    "rename": ("PATCH", "a.txt", {"name": "b.txt"}),
    "move": ("PATCH", "a.txt", {"parentReference": {"path": "/drive/root:/other"}}),
    "rename and move a folder": ("PATCH", "docs", {"name": "gone", "parentReference": {"path": "/drive/root:/other"}}),
    "fileSystemInfo": ("PATCH", "a.txt", {"fileSystemInfo": {"lastModifiedDateTime": "2001-02-03T04:05:06Z"}}),
    "replace": ("PATCH", "a.txt", {"name": "keep.txt", "@microsoft.graph.conflictBehavior": "replace"}),
    "delete a file": ("DELETE", "a.txt", None),
    "delete a folder": ("DELETE", "docs", None),
}


@pytest.mark.parametrize("lost", ["a member removed", "the API token revoked"])
@pytest.mark.parametrize("change", _CHANGES)
def test_a_patch_or_delete_whose_user_loses_the_drive_before_it_is_saved_changes_nothing(
    services, graph_for, monkeypatch, change, lost
):
    """Bob's PATCH or DELETE is checked as it comes; he is taken out of the shared drive (or his token revoked)
    before the change is saved: it must not be (403, or 401), as an upload would not land."""
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "bob")
    bob, where = graph_for("bob"), f"drives/{drive.id}"
    mkdir(bob, "docs", drive=where)
    mkdir(bob, "other", drive=where)
    put(bob, "docs/a.txt", b"plan", drive=where)
    put(bob, "docs/keep.txt", b"kept", drive=where)
    method, name, body = _CHANGES[change]
    url = f"{where}/items/{item(bob, 'docs' if name == 'docs' else 'docs/a.txt', drive=where).json['id']}"
    before = {path: item(bob, path, drive=where).json for path in ("docs", "docs/a.txt", "docs/keep.txt")}
    blobs = stored_blobs(services)

    def take_it_away() -> None:
        if lost == "a member removed":
            services.drives.remove_member(drive.id, "bob")
        else:
            revoke(services, bob.token)

    def after(real):
        def changed(*args, **kwargs):
            take_it_away()  # after the request's checks, before the transaction that saves the change
            return real(*args, **kwargs)

        return changed

    for domain_call in ("update", "delete"):
        monkeypatch.setattr(services.tree, domain_call, after(getattr(services.tree, domain_call)))
    answer = bob.patch_json(url, body) if method == "PATCH" else bob.delete(url)
    expected = (403, "accessDenied") if lost == "a member removed" else (401, "unauthenticated")
    assert (answer.status_int, graph_error(answer)[0]) == expected, answer.body
    alice = graph_for("alice")
    services.drives.add_member(drive.id, "alice")
    for path, was in before.items():
        now = item(alice, path, drive=where).json
        assert {k: now[k] for k in ("id", "name", "eTag", "parentReference", "fileSystemInfo")} == {
            k: was[k] for k in ("id", "name", "eTag", "parentReference", "fileSystemInfo")
        }, path
    assert alice.get(f"{where}/root:/other:/children").json["value"] == []
    assert alice.get(f"{where}/root:/docs/a.txt:/content").body == b"plan"
    assert stored_blobs(services) == blobs


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_a_member_removed_while_a_patch_or_delete_waits_for_its_folder_changes_nothing(
    services, graph_for, database, method
):
    """The race itself: bob's request, checked, waits for the folder another transaction holds; he is taken out
    of the drive meanwhile (nothing of his removal waits for that folder), and then it gets the folder: 403."""
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "bob")
    bob, where = graph_for("bob"), f"drives/{drive.id}"
    docs = mkdir(bob, "docs", drive=where).json["id"]
    url = f"{where}/items/{put(bob, 'docs/a.txt', b'plan', drive=where).json['id']}"
    answers = []
    with services.db.write() as s:
        lock_folder(s, docs)  # as another change in that folder holds it
        asking = threading.Thread(
            target=lambda: answers.append(
                bob.patch_json(url, {"name": "b.txt"}) if method == "PATCH" else bob.delete(url)
            )
        )
        asking.start()
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1), "the request never waited"
        services.drives.remove_member(drive.id, "bob")
    asking.join(30)
    assert answers[0].status_int == 403 and graph_error(answers[0])[0] == "accessDenied", answers[0].body
    alice = graph_for("alice")
    services.drives.add_member(drive.id, "alice")
    assert [c["name"] for c in alice.get(f"{where}/items/{docs}/children").json["value"]] == ["a.txt"]


@pytest.mark.parametrize("lost", ["a member removed", "the API token revoked"])
@pytest.mark.parametrize("conflict", ["fail", "replace"])
def test_a_folder_whose_user_loses_the_drive_before_it_is_made_is_not_made(
    services, graph_for, monkeypatch, conflict, lost
):
    """As a PATCH: bob's new folder is checked as the request comes, and again as it is made; nor does `replace`
    answer with the folder of that name once he has lost the drive."""
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "bob")
    bob, where = graph_for("bob"), f"drives/{drive.id}"
    name = "new" if conflict == "fail" else mkdir(bob, "there", drive=where).json["name"]
    create_folder = services.tree.create_folder

    def made_as_bob_loses_it(*args, **kwargs):
        if lost == "a member removed":
            services.drives.remove_member(drive.id, "bob")
        else:
            revoke(services, bob.token)
        return create_folder(*args, **kwargs)

    monkeypatch.setattr(services.tree, "create_folder", made_as_bob_loses_it)
    answer = mkdir(bob, name, drive=where, **{"@microsoft.graph.conflictBehavior": conflict})
    expected = (403, "accessDenied") if lost == "a member removed" else (401, "unauthenticated")
    assert (answer.status_int, graph_error(answer)[0]) == expected, answer.body
    monkeypatch.undo()
    alice = graph_for("alice")
    services.drives.add_member(drive.id, "alice")
    listed = [child["name"] for child in alice.get(f"{where}/root/children").json["value"]]
    assert listed == ([] if conflict == "fail" else ["there"])


def everything(graph: GraphClient, folder: str = "root", under: str = "") -> dict[str, str]:
    """Every item of the drive below `folder`, by its path: its id."""
    found = {}
    for child in graph.get(f"me/drive/{folder}/children").json["value"]:
        found[under + child["name"]] = child["id"]
        if "folder" in child:
            found |= everything(graph, f"items/{child['id']}", f"{under}{child['name']}/")
    return found


_BY_PATH = {  # a change asked by path: method, item below me/drive/, body, and the item the path leads to
    "rename": ("PATCH", "root:/docs/a.txt:", {"name": "c.txt"}, "docs/a.txt"),
    "move to a path": ("PATCH", "root:/docs/a.txt:", {"parentReference": {"path": "/drive/root:/dest"}}, "dest"),
    "delete a file": ("DELETE", "root:/docs/a.txt:", None, "docs/a.txt"),
    "delete a folder": ("DELETE", "root:/dest:", None, "dest"),
    "make a folder in it": ("POST", "root:/dest:/children", {"name": "new", "folder": {}}, "dest"),
}


@pytest.mark.parametrize("in_its_place", [True, False], ids=["another in its place", "nothing in its place"])
@pytest.mark.parametrize("change", _BY_PATH)
def test_a_change_by_path_acts_on_what_is_at_the_path_when_it_is_saved(
    services, graph, monkeypatch, change, in_its_place
):
    """The item a request names by its path is renamed away (to was-…) after the request found it and before its
    change is saved, and maybe another put in its place: the change acts on what is at the path as it is saved,
    as a request a moment later would (Graph's semantics), or finds nothing there (404); never on the item that
    has gone elsewhere."""
    docs = mkdir(graph, "docs").json["id"]
    mkdir(graph, "dest")
    put(graph, "docs/a.txt", b"old")
    method, url, body, at = _BY_PATH[change]
    before = everything(graph)
    folder, _, name = at.rpartition("/")
    was = f"{folder}/was-{name}".lstrip("/")
    real = {call: getattr(services.tree, call) for call in ("update", "delete", "create_folder")}
    placed = []

    def meddle() -> None:
        real["update"](graph.drive_id, before[at], "alice", name=f"was-{name}")
        if in_its_place and at == "docs/a.txt":
            placed.append(services.files.create("alice", docs, "a.txt", io.BytesIO(b"new")).id)
        elif in_its_place:
            placed.append(real["create_folder"](graph.get("me/drive/root").json["id"], name, "fail", "alice")[0].id)

    def after_a_meddling(call):
        def changed(*args, **kwargs):
            meddle()  # after the request found the item, before the transaction that saves its change
            return call(*args, **kwargs)

        return changed

    for call, function in real.items():
        monkeypatch.setattr(services.tree, call, after_a_meddling(function))
    if method == "DELETE":
        answer = graph.delete(f"me/drive/{url}")
    else:
        answer = (graph.patch_json if method == "PATCH" else graph.post_json)(f"me/drive/{url}", body)
    monkeypatch.undo()
    meddled = {path.replace(at, was, 1) if path.startswith(at) else path: id for path, id in before.items()}
    if not in_its_place:
        assert answer.status_int == 404 and graph_error(answer)[0] == "itemNotFound", answer.body
        assert everything(graph) == meddled
        return
    expected = {**meddled, at: placed[0]}
    if change == "rename":
        assert (answer.status_int, answer.json["id"]) == (200, placed[0]), answer.body
        expected["docs/c.txt"] = expected.pop("docs/a.txt")
    elif change == "move to a path":
        assert (answer.status_int, answer.json["parentReference"]["id"]) == (200, placed[0]), answer.body
        expected["dest/a.txt"] = expected.pop("docs/a.txt")
    elif change.startswith("delete"):
        assert answer.status_int == 204, answer.body
        del expected[at]
    else:
        assert (answer.status_int, answer.json["parentReference"]["id"]) == (201, placed[0]), answer.body
        expected["dest/new"] = answer.json["id"]
    assert everything(graph) == expected
    assert graph.get(f"me/drive/root:/{was}:").json["id"] == before[at]


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("method", ["PATCH", "DELETE", "POST"])
def test_a_change_by_path_that_waits_for_its_folder_acts_on_what_is_at_the_path_then(services, graph, database, method):
    """The race itself: the request has found docs/a.txt (or docs, for a new folder in it) and waits for the folder
    another transaction holds, which renames it away and another item into its name; then it gets the folder and
    acts on the other item, now at the path."""
    mkdir(graph, "docs")
    mkdir(graph, "other")
    put(graph, "docs/a.txt", b"a")
    put(graph, "docs/c.txt", b"c")
    before = everything(graph)
    at, other = ("docs", "other") if method == "POST" else ("docs/a.txt", "docs/c.txt")
    answers = []
    with services.db.write() as s:
        lock_folder(s, before["docs"])  # as another change in that folder holds it
        asking = threading.Thread(
            target=lambda: answers.append(
                graph.patch_json("me/drive/root:/docs/a.txt:", {"name": "d.txt"})
                if method == "PATCH"
                else graph.delete("me/drive/root:/docs/a.txt:")
                if method == "DELETE"
                else mkdir(graph, "new", parent="root:/docs:")
            )
        )
        asking.start()
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1), "the request never waited"
        for item_id, name in ((before[at], f"was-{at.rpartition('/')[2]}"), (before[other], at.rpartition("/")[2])):
            renamed = s.get(File, item_id) or s.get_one(Folder, item_id)
            renamed.name, renamed.name_key = name, name_key(name)
            s.flush()  # each name is taken in turn: (folder, name) is unique
    asking.join(30)
    answer = answers[0]
    now = everything(graph)
    if method == "POST":
        assert (answer.status_int, answer.json["parentReference"]["id"]) == (201, before["other"]), answer.body
        assert now["docs/new"] == answer.json["id"] and "was-docs/new" not in now
    elif method == "PATCH":
        assert (answer.status_int, answer.json["id"]) == (200, before["docs/c.txt"]), answer.body
        assert (now["docs/was-a.txt"], now["docs/d.txt"]) == (before["docs/a.txt"], before["docs/c.txt"])
    else:
        assert answer.status_int == 204, answer.body
        assert now["docs/was-a.txt"] == before["docs/a.txt"] and before["docs/c.txt"] not in now.values()


@pytest.mark.parametrize("kind, via, other", [("site", "sites", "groups"), ("group", "groups", "sites")])
def test_shared_drive_unknown_id_or_other_kind_is_not_found(services, graph_for, kind, via, other):
    drive = services.drives.create_shared(kind, "Team")
    services.drives.add_member(drive.id, "bob")
    bob = graph_for("bob")
    for path in (f"{via}/{new_id()}/drive", f"{other}/{drive.id}/drive", f"{via}/{bob.drive_id}/drive"):
        response = bob.get(path)
        assert response.status_int == 404, path
        assert graph_error(response) == ("itemNotFound", None)


@pytest.mark.parametrize("path", ["me/drives", "drives"])
def test_drives_lists_the_own_drive_first_then_the_shared_ones_of_the_user(services, graph_for, path):
    alice = graph_for("alice")
    site = services.drives.create_shared("site", "Team")
    services.drives.create_shared("group", "Not alice's")
    services.drives.add_member(site.id, "alice")
    listed = alice.get(path)
    assert listed.status_int == 200
    assert [(d["id"], d["driveType"]) for d in listed.json["value"]] == [
        (alice.drive_id, "personal"),
        (site.id, "documentLibrary"),
    ]
    assert graph_for("bob").get(path).json["value"][0]["owner"]["user"]["id"] == "bob"


# -- item addressing -------------------------------------------------------------------------------


@pytest.fixture
def nested(graph):
    """root/dir/sub/a!b c.txt; returns the ids of dir, sub and the file."""
    dir_id = mkdir(graph, "dir").json["id"]
    sub_id = mkdir(graph, "sub", parent=f"items/{dir_id}").json["id"]
    file_id = put(graph, "dir/sub/a!b c.txt", b"nested").json["id"]
    return dir_id, sub_id, file_id


@pytest.mark.parametrize(
    "path",
    [
        "root:/dir/sub/a!b c.txt:",
        "root:/dir/sub/a!b c.txt",  # no closing colon: the rest of the URL is the path
        "root:/dir/sub/a%21b%20c.txt:",
        "root%3A%2Fdir%2Fsub%2Fa%21b%20c.txt%3A",
        "items/root:/dir/sub/a!b c.txt:",
        "items/root%3A%2Fdir%2Fsub%2Fa%21b%20c.txt%3A",
        "items/{dir}:/sub/a!b c.txt:",
        "items/{dir}%3A%2Fsub%2Fa%21b%20c.txt%3A",
        "items/{sub}:/a!b c.txt:",
        "items/{file}",
        "root:/DIR/Sub/A!B C.TXT:",  # names ignore case
    ],
)
def test_item_addressing_forms(graph, nested, path):
    dir_id, sub_id, file_id = nested
    response = graph.get("me/drive/" + path.format(dir=dir_id, sub=sub_id, file=file_id))
    assert response.status_int == 200, response
    assert response.json["id"] == file_id
    assert response.json["name"] == "a!b c.txt"


@pytest.mark.parametrize(
    "path",
    [
        "root:/dir/sub/a!b c.txt:/content",
        "root%3A%2Fdir%2Fsub%2Fa%21b%20c.txt%3A/content",
        "items/root%3A%2Fdir%2Fsub%2Fa%21b%20c.txt%3A/content",
        "items/{dir}:/sub/a!b c.txt:/content",
        "items/{file}/content",
    ],
)
def test_content_action_after_every_addressing_form(graph, nested, path):
    dir_id, sub_id, file_id = nested
    response = graph.get("me/drive/" + path.format(dir=dir_id, sub=sub_id, file=file_id))
    assert response.status_int == 200
    assert response.body == b"nested"


@pytest.mark.parametrize(
    "path",
    [
        "root/children",
        "root:/dir/sub:/children",
        "items/{sub}/children",
        "items/{dir}:/sub:/children",
        "items/root:/dir/sub:/children",
        "items/root%3A%2Fdir%2Fsub%3A/children",
    ],
)
def test_children_action_after_every_addressing_form(graph, nested, path):
    dir_id, sub_id, file_id = nested
    names = [i["name"] for i in graph.get("me/drive/" + path.format(dir=dir_id, sub=sub_id)).json["value"]]
    assert names == (["dir"] if path == "root/children" else ["a!b c.txt"])


@pytest.mark.parametrize("root", ["root", "items/root", "root:", "root:/:", "items/root:/:"])
def test_root_addressing_forms(graph, root):
    body = graph.get(f"me/drive/{root}").json
    assert body["name"] == "root" and body["root"] == {}


def test_unicode_names_in_paths(graph):
    created = put(graph, "Ünïcödé 日本.txt", b"u")
    assert created.status_int == 201
    assert created.json["name"] == "Ünïcödé 日本.txt"
    assert (
        graph.get("me/drive/root:/%C3%9Cn%C3%AFc%C3%B6d%C3%A9%20%E6%97%A5%E6%9C%AC.txt:").json["id"]
        == created.json["id"]
    )


def test_missing_items_are_not_found(graph, nested):
    _, sub_id, file_id = nested
    for path in (
        "root:/nope:",
        "root:/dir/nope/a!b c.txt:",
        f"items/{new_id()}",
        "items/not-an-id",
        f"items/{file_id}:/below:",
        "root:/dir/sub/a!b c.txt/x",
    ):
        response = graph.get(f"me/drive/{path}")
        assert response.status_int == 404, path
        assert graph_error(response) == ("itemNotFound", None)


def test_items_of_another_drive_are_not_found(graph, graph_for):
    file_id = put(graph, "a.txt").json["id"]
    bob = graph_for("bob")
    for path in (f"me/drive/items/{file_id}", f"me/drive/items/{file_id}/content"):
        response = bob.get(path)
        assert response.status_int == 404
        assert graph_error(response) == ("itemNotFound", None)


def test_dot_segments_in_a_path_are_refused(graph, nested):
    response = graph.get("me/drive/root:/dir/../dir/sub:")
    assert response.status_int == 400
    assert graph_error(response) == ("invalidRequest", "invalidPath")


@pytest.mark.parametrize("escapes", ["%C3", "%FF%FE", "%ED%A0%80"])
def test_a_path_that_is_not_utf8_is_400_not_a_name_with_replacement_characters(graph, escapes):
    response = graph.put(f"me/drive/root:/a{escapes}.txt:/content", b"data")
    assert response.status_int == 400
    assert graph_error(response) == ("invalidRequest", "invalidPath")
    assert graph.get("me/drive/root/children").json["value"] == []


@pytest.mark.parametrize("control", ["%0A", "%0D%0A", "%09"])
def test_a_name_with_a_line_break_is_read_as_any_other_name_not_a_routing_404(graph, control):
    """Werkzeug's path converter stops at a newline; the name reached the host's checks only without one."""
    response = graph.put(f"me/drive/root:/a{control}b.txt:/content", b"data")
    assert response.status_int == 400, response
    assert graph_error(response)[0] == "invalidRequest"
    assert "URL" not in response.json["error"]["message"]
    response = graph.get(f"me/drive/root:/a{control}b.txt:")
    assert response.status_int == 404
    assert response.json["error"]["message"].startswith("no item named")


def test_a_trailing_slash_after_an_item_is_the_item(graph, nested):
    """As after a drive (me/drive/) or an action (root/children/), one trailing slash changes nothing."""
    _, sub_id, _ = nested
    for path, expected in (("root/", "root"), ("root:/dir/sub:/", "sub"), (f"items/{sub_id}/", "sub")):
        response = graph.get(f"me/drive/{path}")
        assert response.status_int == 200, (path, response)
        assert response.json["name"] == expected
    response = graph.get("me/drive/root//")
    assert response.status_int == 400
    assert graph_error(response) == ("invalidRequest", None)


# -- driveItem JSON ----------------------------------------------------------------------------------


def test_root_item_json(graph, nested):
    body = graph.get("me/drive/root").json
    assert body["name"] == "root"
    assert body["root"] == {}
    assert body["folder"] == {"childCount": 1}
    assert body["parentReference"] == {"driveId": graph.drive_id, "driveType": "personal"}
    assert "file" not in body and "@microsoft.graph.downloadUrl" not in body


def test_file_item_json(graph, services, nested):
    dir_id, sub_id, file_id = nested
    body = graph.get(f"me/drive/items/{file_id}").json
    alice = {"user": {"id": "alice", "displayName": services.user("alice").display_name}}
    assert body["id"] == file_id and body["name"] == "a!b c.txt" and body["size"] == 6
    assert body["parentReference"] == {
        "driveId": graph.drive_id,
        "driveType": "personal",
        "id": sub_id,
        "path": f"/drives/{graph.drive_id}/root:/dir/sub",
    }
    assert body["file"] == {
        "mimeType": "text/plain",
        "hashes": {
            "quickXorHash": quickxor.b64digest(b"nested"),
            "sha256Hash": hashlib.sha256(b"nested").hexdigest().upper(),
        },
    }
    assert body["createdBy"] == alice and body["lastModifiedBy"] == alice
    for stamp in (
        body["createdDateTime"],
        body["lastModifiedDateTime"],
        body["fileSystemInfo"]["createdDateTime"],
        body["fileSystemInfo"]["lastModifiedDateTime"],
    ):
        assert TIMESTAMP.match(stamp), stamp
    assert "folder" not in body and "root" not in body and "description" not in body


def test_folder_item_json(graph, nested):
    dir_id, sub_id, _ = nested
    assert put(graph, "dir/b.txt").status_int == 201
    body = graph.get(f"me/drive/items/{dir_id}").json
    assert body["name"] == "dir" and body["size"] == len(b"nested") + len(b"data")  # all below it
    assert body["folder"] == {"childCount": 2}
    assert body["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:"
    assert body["parentReference"]["id"] == graph.get("me/drive/root").json["id"]
    assert "file" not in body and "root" not in body and "@microsoft.graph.downloadUrl" not in body
    assert TIMESTAMP.match(body["createdDateTime"]) and TIMESTAMP.match(body["lastModifiedDateTime"])


def test_timestamps_are_utc_with_milliseconds(graph, clock):
    expected = clock.now().strftime("%Y-%m-%dT%H:%M:%S.") + f"{clock.now().microsecond // 1000:03d}Z"
    body = put(graph, "a.txt").json
    assert body["createdDateTime"] == expected
    assert body["lastModifiedDateTime"] == expected


def test_replacing_content_moves_last_modified_only(graph, clock):
    before = put(graph, "a.txt", b"one").json
    clock.advance(minutes=5)
    after = graph.put(f"me/drive/items/{before['id']}/content", b"two").json
    assert after["createdDateTime"] == before["createdDateTime"]
    assert after["lastModifiedDateTime"] > before["lastModifiedDateTime"]
    assert after["fileSystemInfo"]["lastModifiedDateTime"] == after["lastModifiedDateTime"]


def test_lastmodifiedby_is_the_user_who_replaced_the_content(services, graph_for):
    drive = services.drives.create_shared("site", "Team")
    for user in ("alice", "bob"):
        services.drives.add_member(drive.id, user)
    alice, bob = graph_for("alice"), graph_for("bob")
    where = f"drives/{drive.id}"
    assert put(alice, "a.txt", b"1", drive=where).status_int == 201
    body = put(bob, "a.txt", b"2", drive=where).json
    assert body["createdBy"]["user"]["id"] == "alice"
    assert body["lastModifiedBy"]["user"]["id"] == "bob"


def test_etag_and_ctag_are_quoted_and_contain_a_comma(graph, nested):
    _, sub_id, file_id = nested
    body = graph.get(f"me/drive/items/{file_id}").json
    for tag in (body["eTag"], body["cTag"]):
        assert tag.startswith('"') and tag.endswith('"') and "," in tag
    assert body["eTag"] != body["cTag"]
    folder = graph.get(f"me/drive/items/{sub_id}").json
    assert folder["eTag"].startswith('"') and folder["eTag"].endswith('"') and "," in folder["eTag"]
    assert "cTag" not in folder  # as in Graph: a folder has no content tag


def test_rename_changes_etag_not_ctag(graph):
    before = put(graph, "a.txt").json
    after = graph.patch_json(f"me/drive/items/{before['id']}", {"name": "b.txt"}).json
    assert after["eTag"] != before["eTag"]
    assert after["cTag"] == before["cTag"]
    assert graph.get(f"me/drive/items/{before['id']}").json["eTag"] == after["eTag"]


def test_content_change_changes_etag_and_ctag(graph):
    before = put(graph, "a.txt", b"one").json
    after = graph.put(f"me/drive/items/{before['id']}/content", b"two").json
    assert after["eTag"] != before["eTag"]
    assert after["cTag"] != before["cTag"]


def test_reading_does_not_change_tags(graph):
    before = put(graph, "a.txt").json
    graph.get(f"me/drive/items/{before['id']}/content")
    after = graph.get(f"me/drive/items/{before['id']}").json
    assert (after["eTag"], after["cTag"]) == (before["eTag"], before["cTag"])


def test_folder_changes_change_its_etag(graph):
    before = mkdir(graph, "dir").json
    described = graph.patch_json(f"me/drive/items/{before['id']}", {"description": "d"}).json
    assert described["eTag"] != before["eTag"]
    unchanged = graph.get(f"me/drive/items/{before['id']}").json
    assert unchanged["eTag"] == described["eTag"]


def test_folder_rename_changes_etag_within_the_same_millisecond(graph):
    before = mkdir(graph, "dir").json
    after = graph.patch_json(f"me/drive/items/{before['id']}", {"name": "renamed"}).json
    assert after["eTag"] != before["eTag"]
    stale = graph.patch_json(f"me/drive/items/{before['id']}", {"name": "again"}, headers={"If-Match": before["eTag"]})
    assert stale.status_int == 412


# -- download URLs -----------------------------------------------------------------------------------


def download_url(graph: GraphClient, file_id: str) -> str:
    url = graph.get(f"me/drive/items/{file_id}").json["@microsoft.graph.downloadUrl"]
    assert re.fullmatch(re.escape(PUBLIC) + r"/v1\.0/downloads/[A-Za-z0-9._-]+", url), url
    return url[len(PUBLIC) :]


def test_download_url_works_without_authorization(graph, testapp):
    file_id = put(graph, "a.txt", b"download me").json["id"]
    response = testapp.get(download_url(graph, file_id))
    assert response.status_int == 200
    assert response.body == b"download me"


def test_download_url_is_in_children_and_upload_answers(graph, testapp):
    created = put(graph, "a.txt", b"abc").json
    listed = graph.get("me/drive/root/children").json["value"][0]
    for body in (created, listed):
        url = body["@microsoft.graph.downloadUrl"]
        assert url.startswith(PUBLIC + "/v1.0/downloads/")
        assert testapp.get(url[len(PUBLIC) :]).body == b"abc"


def test_download_url_fails_after_the_token_is_revoked(graph, services, testapp):
    file_id = put(graph, "a.txt").json["id"]
    url = download_url(graph, file_id)
    revoke(services, graph.token)
    response = testapp.get(url, expect_errors=True)
    assert response.status_int == 401
    assert graph_error(response) == ("unauthenticated", None)


def test_download_url_expires_after_an_hour(graph, testapp, clock):
    file_id = put(graph, "a.txt").json["id"]
    url = download_url(graph, file_id)
    clock.advance(minutes=59)
    assert testapp.get(url).status_int == 200
    clock.advance(minutes=1)
    response = testapp.get(url, expect_errors=True)
    assert response.status_int == 401
    assert graph_error(response) == ("unauthenticated", None)


def test_download_url_with_a_tampered_ticket_is_refused(graph, testapp):
    url = download_url(graph, put(graph, "a.txt").json["id"])
    tampered = url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb")
    upper = url.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1].upper()
    for bad in (tampered, "/v1.0/downloads/garbage", upper):
        response = testapp.get(bad, expect_errors=True)
        assert response.status_int == 401, bad
        assert graph_error(response) == ("unauthenticated", None)


def test_download_url_serves_the_current_content_and_ranges(graph, testapp):
    file_id = put(graph, "a.txt", b"old").json["id"]
    url = download_url(graph, file_id)
    graph.put(f"me/drive/items/{file_id}/content", b"0123456789")
    assert testapp.get(url).body == b"0123456789"
    partial = testapp.get(url, headers={"Range": "bytes=3-4"})
    assert partial.status_int == 206 and partial.body == b"34"


@pytest.mark.parametrize("headers", [{}, {"Range": "bytes=0-2"}], ids=["whole", "range"])
def test_content_if_match_takes_the_etag_or_the_ctag_and_refuses_any_other(graph, headers):
    item = put(graph, "secret.txt", b"top secret").json
    path = f"me/drive/items/{item['id']}/content"
    for tag in (item["eTag"], item["cTag"], "*"):
        assert graph.get(path, {"If-Match": tag, **headers}).status_int in (200, 206), tag
    refused = graph.get(path, {"If-Match": '"not-the-tag"', **headers})
    assert refused.status_int == 412 and b"top" not in refused.body
    assert graph_error(refused)[0] == "preconditionFailed"


@pytest.mark.parametrize("headers", [{}, {"Range": "bytes=0-2"}], ids=["whole", "range"])
def test_content_if_none_match_takes_the_etag_or_the_ctag(graph, testapp, headers):
    """As Graph documents the download: an If-None-Match with the item's current eTag or cTag gets 304, with
    nothing of the content; a tag of another version gets the content."""
    item = put(graph, "a.txt", b"top secret").json
    for url in (f"me/drive/items/{item['id']}/content", download_url(graph, item["id"])):
        for tag in (item["eTag"], item["cTag"], f"W/{item['eTag']}", f'"other", {item["eTag"]}', "*"):
            response = graph.get(url, {"If-None-Match": tag, **headers})
            assert response.status_int == 304 and response.body == b"", (url, tag)
    renamed = graph.patch_json(f"me/drive/items/{item['id']}", {"name": "b.txt"}).json
    assert graph.get(f"me/drive/items/{item['id']}/content", {"If-None-Match": renamed["eTag"]}).status_int == 304
    changed = graph.put(f"me/drive/items/{item['id']}/content", b"new").json
    for tag in (item["eTag"], item["cTag"]):
        response = graph.get(f"me/drive/items/{item['id']}/content", {"If-None-Match": tag})
        assert response.status_int == 200 and response.body == b"new", tag
    assert graph.get(f"me/drive/items/{item['id']}/content", {"If-None-Match": changed["eTag"]}).status_int == 304


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_item_if_none_match_with_a_current_tag_is_304_and_a_stale_one_gets_the_item(graph, kind):
    """As Graph documents GET driveItem: the item's current eTag or cTag in If-None-Match gets 304 with no body,
    by id or by path, read as the content's is (a weak tag, a list, `*`)."""
    item = (put(graph, "a.txt") if kind == "file" else mkdir(graph, "a.txt")).json
    tags = [item["eTag"], f"W/{item['eTag']}", f'"other", {item["eTag"]}', "*"]
    if kind == "file":
        tags.append(item["cTag"])
    for url in (f"me/drive/items/{item['id']}", "me/drive/root:/a.txt"):
        for tag in tags:
            response = graph.get(url, {"If-None-Match": tag})
            assert response.status_int == 304 and response.body == b"", (url, tag)
    renamed = graph.patch_json(f"me/drive/items/{item['id']}", {"name": "b.txt"}).json
    response = graph.get(f"me/drive/items/{item['id']}", {"If-None-Match": item["eTag"]})
    assert response.status_int == 200 and response.json["name"] == "b.txt"
    assert graph.get(f"me/drive/items/{item['id']}", {"If-None-Match": renamed["eTag"]}).status_int == 304


def test_item_if_match_with_a_stale_tag_is_412(graph):
    item = put(graph, "a.txt").json
    changed = graph.put(f"me/drive/items/{item['id']}/content", b"new").json
    refused = graph.get(f"me/drive/items/{item['id']}", {"If-Match": item["eTag"]})
    assert refused.status_int == 412
    assert graph_error(refused) == ("preconditionFailed", "entityTagDoesNotMatch")
    for tag in (changed["eTag"], changed["cTag"], "*"):
        assert graph.get(f"me/drive/items/{item['id']}", {"If-Match": tag}).json["size"] == 3, tag


def test_download_url_of_a_deleted_file_is_not_found(graph, testapp):
    file_id = put(graph, "a.txt").json["id"]
    url = download_url(graph, file_id)
    assert graph.delete(f"me/drive/items/{file_id}").status_int == 204
    response = testapp.get(url, expect_errors=True)
    assert response.status_int == 404
    assert graph_error(response) == ("itemNotFound", None)


# -- children and paging -----------------------------------------------------------------------------


def test_children_are_ordered_by_name_ignoring_case(graph):
    for name in ("b.txt", "C.txt", "a.txt"):
        put(graph, name)
    for name in ("B2", "A folder"):
        mkdir(graph, name)
    listed = graph.get("me/drive/root/children").json
    assert [i["name"] for i in listed["value"]] == ["A folder", "a.txt", "b.txt", "B2", "C.txt"]
    assert "@odata.nextLink" not in listed


def test_children_of_an_empty_folder(graph):
    folder_id = mkdir(graph, "empty").json["id"]
    assert graph.get(f"me/drive/items/{folder_id}/children").json["value"] == []


def test_children_paging_yields_every_child_once(graph):
    expected = {put(graph, f"f{i}.txt").json["id"] for i in range(4)}
    expected |= {mkdir(graph, f"d{i}").json["id"] for i in range(3)}
    url, pages, seen = "me/drive/root/children?$top=3", [], []
    while url:
        body = graph.get(url).json
        pages.append(len(body["value"]))
        seen += [i["id"] for i in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            assert url.startswith(f"{PUBLIC}/v1.0/me/drive/root/children?") and "$skiptoken=" in url
            assert "$top=3" in url
    assert pages == [3, 3, 1]
    assert len(seen) == 7 and set(seen) == expected


def test_children_paging_keeps_the_order(graph):
    for name in ("e", "B", "a", "D", "c"):
        put(graph, f"{name}.txt")
    url, names = "me/drive/root/children?$top=2", []
    while url:
        body = graph.get(url).json
        names += [i["name"] for i in body["value"]]
        url = body.get("@odata.nextLink")
    assert names == ["a.txt", "B.txt", "c.txt", "D.txt", "e.txt"]


def follow(graph: GraphClient, url: str) -> list[dict]:
    """Every child, following @odata.nextLink; each link must be a well-formed absolute URL."""
    found = []
    while url:
        body = graph.get(url).json
        found += body["value"]
        url = body.get("@odata.nextLink")
        if url:
            assert re.fullmatch(re.escape(PUBLIC) + r"/[!-~]+", url) and "#" not in url, url
    return found


def test_children_paging_with_special_characters_in_child_names(graph):
    names = ["a&b.txt", "a+b.txt", "a#b.txt", "a%b.txt", "é ü.txt", "a=b;c.txt"]
    ids = {put(graph, name).json["id"] for name in names}
    found = follow(graph, "me/drive/root/children?$top=1")
    assert len(found) == len(names) and {i["id"] for i in found} == ids


@pytest.mark.parametrize("folder", ["a#b", "sp ace", "é", "100%"])
def test_children_paging_of_a_folder_addressed_by_a_path_with_special_characters(graph, folder):
    mkdir(graph, folder)
    ids = {mkdir(graph, f"s{i}", parent=f"root:/{quote(folder)}:").json["id"] for i in range(3)}
    found = follow(graph, f"me/drive/root:/{quote(folder)}:/children?$top=1")
    assert len(found) == 3 and {i["id"] for i in found} == ids


def test_children_carry_full_item_json(graph):
    mkdir(graph, "dir")
    put(graph, "dir/x.txt")
    put(graph, "f.txt", b"abc")
    folder, file = graph.get("me/drive/root/children").json["value"]
    assert folder["folder"] == {"childCount": 1} and "file" not in folder
    assert file["size"] == 3 and file["file"]["mimeType"] == "text/plain"
    assert file["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:"


def test_children_page_of_exactly_top_items_has_no_next_link(graph):
    for i in range(3):
        put(graph, f"f{i}.txt")
    assert "@odata.nextLink" not in graph.get("me/drive/root/children?$top=3").json


def test_children_default_page_is_200(graph, services):
    with services.db.read() as s:
        root_id = services.tree.root(s, graph.drive_id).id
    for i in range(201):
        services.tree.create_folder(root_id, f"f{i:03d}", "fail")
    first = graph.get("me/drive/root/children").json
    assert len(first["value"]) == 200
    assert "$top=200" in first["@odata.nextLink"]
    second = graph.get(first["@odata.nextLink"]).json
    assert [i["name"] for i in second["value"]] == ["f200"]
    assert "@odata.nextLink" not in second


@pytest.mark.parametrize("expand", ["$expand=children", "expand=children", "$expand=thumbnails,children($select=id)"])
@pytest.mark.parametrize("path", ["root", "root:/dir", "root:/dir:", "items/{id}", "items/{id}:/"])
def test_an_item_with_expand_children_carries_its_children(graph, expand, path):
    """GET {item}?$expand=children, as Graph answers it (and the SDKs ask for it): the item with its children,
    the first page of them, then a children@odata.nextLink to {item}/children for the rest."""
    folder = mkdir(graph, "dir").json
    path = path.format(id=folder["id"])
    expected = [mkdir(graph, f"f{i:03d}", parent="root:/dir:").json["id"] for i in range(3)]
    if path == "root":
        expected = [folder["id"]]
    body = graph.get(f"me/drive/{path}?{expand}").json
    assert [child["id"] for child in body["children"]] == expected
    assert "children@odata.nextLink" not in body


def test_expand_children_pages_past_200_through_the_children_of_the_item(graph, services):
    folder = mkdir(graph, "big").json
    for i in range(203):
        services.tree.create_folder(folder["id"], f"f{i:03d}", "fail")
    for path in (
        "root:/big",
        f"items/{folder['id']}",
        "root:/big:",
        f"items/{folder['id']}:",
        f"items/{folder['id']}:/",
    ):
        body = graph.get(f"me/drive/{path}?$expand=children").json
        assert [child["name"] for child in body["children"]] == [f"f{i:03d}" for i in range(200)]
        rest = follow(graph, body["children@odata.nextLink"])
        assert [child["name"] for child in rest] == ["f200", "f201", "f202"]


@pytest.mark.parametrize("path", ["root/", "root:/dir:/", "items/{id}/"])
def test_expand_children_of_a_path_with_a_trailing_slash_links_to_pages_that_exist(graph, path):
    """`root/` and `root:/dir:/` name what `root` and `root:/dir:` name: the nextLink of their children was
    `root//children` (400), and a client paging the listing stopped after its first page."""
    folder = mkdir(graph, "dir").json
    parent = "root" if path == "root/" else "root:/dir:"
    for i in range(3):
        mkdir(graph, f"f{i}", parent=parent)
    body = graph.get(f"me/drive/{path.format(id=folder['id'])}?$expand=children($top=2)").json
    rest = follow(graph, body["children@odata.nextLink"])
    names = [child["name"] for child in body["children"] + rest]
    assert names == (["dir", "f0", "f1", "f2"] if path == "root/" else ["f0", "f1", "f2"])


@pytest.mark.parametrize("expand", ["children($top=2)", "children(top=2)", "children($select=name;$top=2)"])
def test_expand_children_takes_its_top_and_links_to_the_next_pages(graph, expand):
    """`$top` inside the expansion is the size of the first page, and of the pages its nextLink leads to."""
    for i in range(5):
        mkdir(graph, f"f{i}", parent="root")
    body = graph.get(f"me/drive/root?$expand={quote(expand, safe='$=();')}").json
    assert [child["name"] for child in body["children"]] == ["f0", "f1"]
    link = body["children@odata.nextLink"]
    assert "$top=2" in link
    pages = []
    while link:
        page = graph.get(link).json
        pages.append([child["name"] for child in page["value"]])
        link = page.get("@odata.nextLink")
    assert pages == [["f2", "f3"], ["f4"]]
    if "select" in expand:  # carried into the link, as the expansion's $select is
        assert body["children"][0].keys() == {"id", "name"}
    assert "children@odata.nextLink" not in graph.get("me/drive/root?$expand=children($top=5)").json


@pytest.mark.parametrize("top", ["0", "-1", "abc", "1.5"])
def test_expand_children_with_a_bad_top_is_refused(graph, top):
    response = graph.get(f"me/drive/root?$expand=children($top={top})")
    assert (response.status_int, graph_error(response)) == (400, ("invalidRequest", None)), response.body


def test_a_folder_s_size_is_that_of_everything_below_it(graph):
    """OneDrive's folder size: the bytes of every file below the folder, at any depth."""
    for path, size in (("a/one.bin", 3), ("a/b/two.bin", 5), ("a/b/c/three.bin", 7), ("d/four.bin", 11)):
        assert put(graph, path, b"x" * size).status_int == 201
    mkdir(graph, "empty")
    assert item(graph, "a").json["size"] == 15
    assert item(graph, "a/b").json["size"] == 12
    assert graph.get("me/drive/root").json["size"] == 26
    listed = {c["name"]: c["size"] for c in graph.get("me/drive/root/children").json["value"]}
    assert listed == {"a": 15, "d": 11, "empty": 0}
    expanded = graph.get("me/drive/root:/a?$expand=children").json
    assert (expanded["size"], {c["name"]: c["size"] for c in expanded["children"]}) == (15, {"b": 12, "one.bin": 3})
    assert put(graph, "a/b/c/three.bin", b"x").status_int == 200  # replaced: 7 bytes less 1
    assert item(graph, "a").json["size"] == 9


def test_folder_sizes_of_a_listing_take_one_query_however_many_folders(graph, services, tmp_path):
    """No query per folder: listing 2 folders or 12, each with files and folders below, sends as many statements."""

    def listing(trace: str) -> list[str]:
        (tmp_path / trace).mkdir()  # a trace of its own: PostgreSQL's is appended to
        with statements_sent(services, tmp_path / trace) as sent:
            assert graph.get("me/drive/root/children").status_int == 200
        return sent

    for i in range(12):
        assert put(graph, f"f{i:02d}/deeper/x.bin", b"12").status_int == 201
        if i == 1:
            few = listing("few")
    assert {c["size"] for c in graph.get("me/drive/root/children").json["value"]} == {2}
    assert listing("many") == few


@pytest.mark.parametrize("select, summed", [("id,name", False), ("id,size", True), ("*", True)])
def test_folder_sizes_are_summed_only_when_selected(graph, services, tmp_path, select, summed):
    """The sum's query grows with what is below the folders: a $select without `size` does not pay for it."""
    assert put(graph, "f/deeper/x.bin", b"12").status_int == 201
    with statements_sent(services, tmp_path) as sent:
        listed = graph.get(f"me/drive/root/children?$select={select}")
        item = graph.get(f"me/drive/root:/f?$select={select}")
    assert listed.status_int == item.status_int == 200
    assert [child.get("size") for child in listed.json["value"]] == [2 if summed else None]
    assert item.json.get("size") == (2 if summed else None)
    assert sent.count("WITH") == (2 if summed else 0)  # the recursive sum, one for each answer


def test_expand_children_of_a_file_or_without_it_adds_nothing(graph):
    put(graph, "a.txt")
    assert "children" not in graph.get("me/drive/root:/a.txt?$expand=children").json
    assert "children" not in graph.get("me/drive/root").json


@pytest.mark.parametrize("order", ["name", "name asc", "name%20ASC", "NAME"])
def test_children_ordered_by_name_as_they_are_listed(graph, order):
    for name in ("b.txt", "a.txt"):
        put(graph, name)
    listed = graph.get(f"me/drive/root/children?$orderby={order}&$top=1")
    assert [i["name"] for i in listed.json["value"]] == ["a.txt"]
    assert [i["name"] for i in follow(graph, listed.json["@odata.nextLink"])] == ["b.txt"]


@pytest.mark.parametrize(
    "query",
    [
        "$orderby=name desc",
        "$orderby=lastModifiedDateTime desc",
        "orderby=size",
        "$filter=file ne null",
        "filter=x",
        # answered as if applied: a client paging with $skip got the first page again, and never an @odata.count
        "$skip=1",
        "skip=1",
        "$count=true",
        "$search=a",
    ],
)
def test_an_order_or_filter_the_host_cannot_apply_is_400_not_a_list_in_another_order(graph, query):
    put(graph, "a.txt")
    response = graph.get(f"me/drive/root/children?{quote(query, safe='=$')}")
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"


@pytest.mark.parametrize("options", ["$skip=1", "$orderby=name desc", "$filter=file ne null", "$count=true"])
def test_options_of_expanded_children_the_host_cannot_apply_are_400_as_on_children(graph, options):
    put(graph, "a.txt")
    response = graph.get(f"me/drive/root?$expand=children({quote(options, safe='=$')})")
    assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"


def test_count_false_is_what_is_answered_anyway(graph):
    put(graph, "a.txt")
    assert graph.get("me/drive/root/children?$count=false").status_int == 200


@pytest.mark.parametrize("top", ["1001", "0002000", "9" * 5000, "0" * 5000 + "2000"])  # int() takes 4300 digits
def test_a_top_above_the_maximum_is_the_maximum(graph, top):
    put(graph, "f.txt")
    response = graph.get(f"me/drive/root/children?$top={top}")
    assert response.status_int == 200 and [i["name"] for i in response.json["value"]] == ["f.txt"]


@pytest.mark.parametrize("top", ["0", "-1", "abc", "", "1.5", "000", "0" * 5000])
def test_children_bad_top_is_refused(graph, top):
    response = graph.get(f"me/drive/root/children?$top={top}")
    assert response.status_int == 400
    assert graph_error(response) == ("invalidRequest", None)


def test_children_bad_skiptoken_is_refused(graph):
    response = graph.get("me/drive/root/children?$skiptoken=garbage")
    assert response.status_int == 400
    assert graph_error(response) == ("invalidRequest", None)


def test_children_of_a_file_is_refused(graph):
    file_id = put(graph, "a.txt").json["id"]
    response = graph.get(f"me/drive/items/{file_id}/children")
    assert response.status_int == 400
    assert graph_error(response) == ("invalidRequest", None)


# -- create folder -----------------------------------------------------------------------------------


def test_create_folder(graph):
    response = mkdir(graph, "New")
    assert response.status_int == 201
    body = response.json
    assert body["name"] == "New" and body["folder"] == {"childCount": 0}
    assert graph.get(f"me/drive/items/{body['id']}").json["name"] == "New"
    assert graph.get("me/drive/root").json["folder"] == {"childCount": 1}


def test_create_folder_in_a_folder_by_path(graph):
    mkdir(graph, "outer")
    response = mkdir(graph, "inner", parent="root:/outer:")
    assert response.status_int == 201
    assert response.json["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:/outer"
    assert item(graph, "outer/inner").json["id"] == response.json["id"]


@pytest.mark.parametrize("taken", ["folder", "file"])
@pytest.mark.parametrize(
    "extra", [{}, {"@microsoft.graph.conflictBehavior": "fail"}, {"@name.conflictBehavior": "fail"}]
)
def test_create_folder_fails_on_a_taken_name(graph, taken, extra):
    if taken == "folder":
        mkdir(graph, "Taken")
    else:
        put(graph, "Taken")
    response = mkdir(graph, "tAKEN", **extra)
    assert response.status_int == 409
    assert graph_error(response) == ("nameAlreadyExists", None)
    assert len(graph.get("me/drive/root/children").json["value"]) == 1


@pytest.mark.parametrize("key", ["@microsoft.graph.conflictBehavior", "@name.conflictBehavior"])
def test_create_folder_rename_counts_from_one(graph, key):
    mkdir(graph, "Docs")
    first = mkdir(graph, "Docs", **{key: "rename"})
    second = mkdir(graph, "docs", **{key: "rename"})
    assert (first.status_int, first.json["name"]) == (201, "Docs 1")
    assert (second.status_int, second.json["name"]) == (201, "docs 2")


@pytest.mark.parametrize(
    ("query", "body", "name"),
    [
        ("rename", None, "Docs 1"),  # in the query, as Graph's documents put it
        ("rename", "fail", "Docs 1"),  # the query's counts over the body's
        ("fail", "rename", None),
    ],
)
def test_create_folder_takes_the_conflict_behaviour_from_the_query(graph, query, body, name):
    mkdir(graph, "Docs")
    extra = {} if body is None else {"@microsoft.graph.conflictBehavior": body}
    response = graph.post_json(
        f"me/drive/root/children?@microsoft.graph.conflictBehavior={query}", {"name": "Docs", "folder": {}, **extra}
    )
    if name is None:
        assert (response.status_int, graph_error(response)[0]) == (409, "nameAlreadyExists")
    else:
        assert (response.status_int, response.json["name"]) == (201, name)


def test_create_folder_rename_puts_the_number_at_the_end_of_a_dotted_name(graph):
    """A folder has no extension to keep last: "My Folder" becomes "My Folder 1", and "v1.2" "v1.2 1"."""
    mkdir(graph, "v1.2")
    assert mkdir(graph, "v1.2", **{"@microsoft.graph.conflictBehavior": "rename"}).json["name"] == "v1.2 1"


def test_the_longest_names_with_ligatures_are_stored_and_still_clash_ignoring_case(graph):
    """Full case folding made "ﬃ" "ffi", and the longest such names three times longer than the database's
    key column; folded one character for one, they still are one name in any case."""
    name, other_case = "D" + "ﬃ" * 249, "d" + "ﬃ" * 249
    assert put(graph, name + ".txt").status_int == 201
    assert mkdir(graph, name).status_int == 201
    assert graph_error(mkdir(graph, other_case)) == ("nameAlreadyExists", None)  # the same name, case aside
    assert put(graph, other_case + ".TXT", b"again").status_int == 200  # replaces the same file
    assert item(graph, name + ".txt").json["size"] == 5
    assert mkdir(graph, name[:-1] + "x").status_int == 201  # one character apart: another name


def test_names_windows_keeps_apart_are_two_items_and_paths_still_ignore_case(graph):
    """Uploads by path, as rclone copies a folder: "Maße.txt" and "Masse.txt" are two files on Windows, so
    two here, not one overwritten by the other; a path still finds a name in other letter case."""
    pairs = [("Maße.txt", "Masse.txt"), ("ﬁle.txt", "file.txt"), ("Straße", "Strasse")]
    mkdir(graph, "dir")
    for name in (name for pair in pairs for name in pair):
        assert put(graph, f"dir/{name}", name.encode()).status_int == 201
    listed = graph.get("me/drive/root:/dir:/children").json["value"]
    assert {i["name"]: i["size"] for i in listed} == {name: len(name.encode()) for pair in pairs for name in pair}
    assert mkdir(graph, "Straße").status_int == mkdir(graph, "Strasse").status_int == 201
    assert graph_error(mkdir(graph, "STRASSE")) == ("nameAlreadyExists", None)
    assert item(graph, "dir/MASSE.TXT").json["name"] == "Masse.txt"
    assert item(graph, "dir/MAẞE.txt").json["name"] == "Maße.txt"
    put(graph, "dir/é.txt")
    assert item(graph, "DIR/É.TXT").json["name"] == "é.txt"


def test_create_folder_rename_of_a_free_name_keeps_it(graph):
    response = mkdir(graph, "Free", **{"@microsoft.graph.conflictBehavior": "rename"})
    assert (response.status_int, response.json["name"]) == (201, "Free")


def test_create_folder_replace_answers_the_existing_folder(graph):
    existing = mkdir(graph, "Docs").json
    put(graph, "Docs/keep.txt")
    response = mkdir(graph, "docs", **{"@microsoft.graph.conflictBehavior": "replace"})
    assert response.status_int == 200
    assert response.json["id"] == existing["id"]
    assert response.json["folder"] == {"childCount": 1}
    assert len(graph.get("me/drive/root/children").json["value"]) == 1


def test_create_folder_replace_of_a_free_name_creates_it(graph):
    response = mkdir(graph, "Docs", **{"@microsoft.graph.conflictBehavior": "replace"})
    assert response.status_int == 201


def test_create_folder_sets_file_system_info_and_description(graph, clock):
    """A new folder takes the writable properties of the driveItem it is created from, as Graph's does
    (a backup made with the SDK keeps its folders' times)."""
    info = {"createdDateTime": "2001-02-03T04:05:06.789Z", "lastModifiedDateTime": "2002-03-04T05:06:07+01:00"}
    made = mkdir(graph, "Old", fileSystemInfo=info, description="kept")
    assert made.status_int == 201
    expected = {"createdDateTime": "2001-02-03T04:05:06.789Z", "lastModifiedDateTime": "2002-03-04T04:06:07.000Z"}
    for body in (made.json, item(graph, "Old").json):
        assert body["fileSystemInfo"] == expected
        assert body["description"] == "kept"
        assert body["lastModifiedDateTime"] == TIMESTAMP_NOW(clock)
    renamed = mkdir(graph, "Old", fileSystemInfo=info, **{"@microsoft.graph.conflictBehavior": "rename"})
    assert renamed.json["name"] == "Old 1" and renamed.json["fileSystemInfo"] == expected


def TIMESTAMP_NOW(clock) -> str:
    now = clock.now()
    return now.strftime("%Y-%m-%dT%H:%M:%S") + f".{now.microsecond // 1000:03d}Z"


@pytest.mark.parametrize(
    "extra",
    [
        {"fileSystemInfo": {"lastModifiedDateTime": "yesterday"}},
        {"fileSystemInfo": {"createdDateTime": "1500-01-01T00:00:00Z"}},
        {"fileSystemInfo": []},
        {"description": 5},
        {"description": "\ud800"},
    ],
)
def test_create_folder_with_bad_properties_is_400_and_makes_nothing(graph, extra):
    response = graph.post_json("me/drive/root/children", {"name": "d", "folder": {}, **extra})
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"
    assert item(graph, "d").status_int == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "NoFacet"},
        {"folder": {}},
        {"name": 5, "folder": {}},
        {"name": "a/b", "folder": {}},
        {"name": "a:b", "folder": {}},
        {"name": "", "folder": {}},
        {"name": "CON", "folder": {}},
        {"name": "trailing.", "folder": {}},
        {"name": "x", "folder": {}, "@microsoft.graph.conflictBehavior": "overwrite"},
    ],
)
def test_create_folder_bad_requests(graph, body):
    response = graph.post_json("me/drive/root/children", body)
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"
    assert graph.get("me/drive/root/children").json["value"] == []


def test_create_folder_under_a_file_is_refused(graph):
    file_id = put(graph, "a.txt").json["id"]
    response = mkdir(graph, "x", parent=f"items/{file_id}")
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"


def test_create_folder_under_a_missing_parent_is_not_found(graph):
    response = mkdir(graph, "x", parent="root:/missing:")
    assert response.status_int == 404
    assert graph_error(response) == ("itemNotFound", None)


# -- PATCH -------------------------------------------------------------------------------------------


def test_patch_renames_a_file(graph):
    file_id = put(graph, "a.txt", b"abc").json["id"]
    response = graph.patch_json(f"me/drive/items/{file_id}", {"name": "b.txt"})
    assert response.status_int == 200
    assert response.json["name"] == "b.txt" and response.json["id"] == file_id
    assert item(graph, "b.txt").json["id"] == file_id
    assert item(graph, "a.txt").status_int == 404
    assert graph.get("me/drive/root:/b.txt:/content").body == b"abc"


def _between_a_write_and_its_answer(monkeypatch, meanwhile) -> None:
    """`meanwhile()` runs once a Graph write has committed, before its answer describes the item."""
    from wopihost.graph import routes

    answer = routes.item_response

    def late_answer(*args, **kwargs):
        meanwhile()
        return answer(*args, **kwargs)

    monkeypatch.setattr(routes, "item_response", late_answer)


def test_the_answer_to_a_write_never_writes_the_item_back(graph, services, client_for, monkeypatch):
    """A write's answer described its item in a read transaction into which it merged the item as the write
    had left it, and which committed: an editor's save that landed in between was undone (the file's old
    version, size and blob back, that blob already released: the file could no longer be read)."""
    file_id = put(graph, "a.docx", b"old").json["id"]
    wopi = client_for(services.files.get(file_id))
    assert wopi.lock("L1").status_int == 200
    _between_a_write_and_its_answer(monkeypatch, lambda: wopi.put_file(b"saved meanwhile", lock="L1"))
    patched = graph.patch_json(f"me/drive/items/{file_id}", {"description": "notes"})
    assert patched.status_int == 200 and patched.json["description"] == "notes"
    assert wopi.get_file().body == b"saved meanwhile"
    assert graph.get(f"me/drive/items/{file_id}").json["size"] == len(b"saved meanwhile")


def test_the_answer_to_a_write_never_brings_a_file_deleted_meanwhile_back(graph, services, client_for, monkeypatch):
    file_id = put(graph, "a.docx", b"old").json["id"]
    wopi = client_for(services.files.get(file_id))
    _between_a_write_and_its_answer(monkeypatch, lambda: wopi.op("DELETE"))
    patched = graph.patch_json(f"me/drive/items/{file_id}", {"description": "notes"})
    assert patched.status_int == 200 and patched.json["description"] == "notes"  # the write's, as it left it
    assert graph.get(f"me/drive/items/{file_id}").status_int == 404
    assert item(graph, "a.docx").status_int == 404


@pytest.mark.parametrize("write", ["upload", "rename", "new folder"])
def test_a_write_whose_folder_is_deleted_before_its_answer_is_answered(graph, monkeypatch, write):
    """A write's answer is made after its commit: a folder deleted in between (a user deleting it while a
    client uploads into it) made a write that had taken effect answer 500, which a client retries. It is
    answered as it went, without the path of a folder that is gone."""
    folder = mkdir(graph, "dir").json["id"]
    file_id = put(graph, "dir/a.txt", b"abc").json["id"]
    _between_a_write_and_its_answer(
        monkeypatch, lambda: graph.delete(f"me/drive/items/{folder}").status_int == 204 or pytest.fail("kept")
    )
    if write == "upload":
        done = graph.put("me/drive/root:/dir/b.txt:/content", b"new")
    elif write == "rename":
        done = graph.patch_json(f"me/drive/items/{file_id}", {"name": "b.txt"})
    else:
        done = graph.post_json(f"me/drive/items/{folder}/children", {"name": "b.txt", "folder": {}})
    assert done.status_int == (200 if write == "rename" else 201) and done.json["name"] == "b.txt"
    assert done.json["parentReference"]["id"] == folder and "path" not in done.json["parentReference"]
    assert graph.get(f"me/drive/items/{folder}").status_int == 404


def test_patch_renames_a_folder_and_its_children_paths_follow(graph):
    folder_id = mkdir(graph, "old").json["id"]
    file_id = put(graph, "old/a.txt").json["id"]
    response = graph.patch_json(f"me/drive/items/{folder_id}", {"name": "new"})
    assert (response.status_int, response.json["name"]) == (200, "new")
    assert (
        graph.get(f"me/drive/items/{file_id}").json["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:/new"
    )


def test_patch_rename_to_own_name_in_other_case(graph):
    file_id = put(graph, "a.txt").json["id"]
    response = graph.patch_json(f"me/drive/items/{file_id}", {"name": "A.TXT"})
    assert (response.status_int, response.json["name"]) == (200, "A.TXT")


@pytest.mark.parametrize("taken", ["Other.txt", "other.TXT"])
def test_patch_rename_to_a_taken_name_conflicts(graph, taken):
    file_id = put(graph, "a.txt").json["id"]
    mkdir(graph, "Other.txt") if taken == "other.TXT" else put(graph, "Other.txt")
    response = graph.patch_json(f"me/drive/items/{file_id}", {"name": taken})
    assert response.status_int == 409
    assert graph_error(response) == ("nameAlreadyExists", None)
    assert graph.get(f"me/drive/items/{file_id}").json["name"] == "a.txt"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "a/b"},
        {"name": ""},
        {"name": 3},
        {"description": 3},
        {"parentReference": "x"},
        {"fileSystemInfo": []},
        {"fileSystemInfo": {"createdDateTime": "yesterday"}},
        {"parentReference": {"path": "/somewhere"}},
        {"parentReference": {"id": 5}},
        {"parentReference": {"path": ["/drive/root:"]}},
    ],
)
def test_patch_bad_requests(graph, body):
    file_id = put(graph, "a.txt").json["id"]
    response = graph.patch_json(f"me/drive/items/{file_id}", body)
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"
    assert graph.get(f"me/drive/items/{file_id}").json["name"] == "a.txt"


def test_patch_moves_by_parent_id(graph):
    dest_id = mkdir(graph, "dest").json["id"]
    file_id = put(graph, "a.txt").json["id"]
    body = graph.patch_json(f"me/drive/items/{file_id}", {"parentReference": {"id": dest_id}}).json
    assert body["parentReference"]["id"] == dest_id
    assert body["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:/dest"
    assert item(graph, "dest/a.txt").json["id"] == file_id
    assert item(graph, "a.txt").status_int == 404


@pytest.mark.parametrize(
    "path", ["/drive/root:/dest/inner", "/drives/{drive}/root:/dest/inner", "/drive/root:/dest/inner/"]
)
def test_patch_moves_by_parent_path(graph, path):
    mkdir(graph, "dest")
    inner_id = mkdir(graph, "inner", parent="root:/dest:").json["id"]
    folder_id = mkdir(graph, "moving").json["id"]
    put(graph, "moving/a.txt")
    reference = {"path": path.format(drive=graph.drive_id)}
    response = graph.patch_json(f"me/drive/items/{folder_id}", {"parentReference": reference})
    assert response.status_int == 200
    assert response.json["parentReference"]["id"] == inner_id
    assert item(graph, "dest/inner/moving/a.txt").status_int == 200


def test_a_parent_path_is_percent_encoded_both_ways(graph):
    """As Graph's itemReference has it: "/drive/root:/Documents/my%20file.docx"."""
    folder_id = mkdir(graph, "my docs#1%").json["id"]
    file_id = put(graph, "a.txt").json["id"]
    inside = put(graph, "my docs#1%/b.txt").json
    assert inside["parentReference"] == {**inside["parentReference"], "id": folder_id}
    assert inside["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:/my%20docs%231%25"
    moved = graph.patch_json(
        f"me/drive/items/{file_id}", {"parentReference": {"path": inside["parentReference"]["path"]}}
    )
    assert moved.status_int == 200 and moved.json["parentReference"] == inside["parentReference"]


@pytest.mark.parametrize("name", ["%00", "\ud800"])
def test_a_parent_path_holding_what_no_name_can_is_400(graph, name):
    file_id = put(graph, "a.txt").json["id"]
    response = graph.patch_json(f"me/drive/items/{file_id}", {"parentReference": {"path": f"/drive/root:/{name}"}})
    assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"
    assert item(graph, "a.txt").json["id"] == file_id


def test_patch_moves_to_the_root_by_path(graph):
    mkdir(graph, "dir")
    file_id = put(graph, "dir/a.txt").json["id"]
    response = graph.patch_json(f"me/drive/items/{file_id}", {"parentReference": {"path": "/drive/root:"}})
    assert response.status_int == 200
    assert item(graph, "a.txt").json["id"] == file_id


def test_patch_moves_and_renames_at_once(graph):
    dest_id = mkdir(graph, "dest").json["id"]
    file_id = put(graph, "a.txt").json["id"]
    response = graph.patch_json(
        f"me/drive/items/{file_id}", {"name": "b.txt", "parentReference": {"id": dest_id, "driveId": graph.drive_id}}
    )
    assert response.status_int == 200
    assert item(graph, "dest/b.txt").json["id"] == file_id


def test_patch_move_onto_a_taken_name_conflicts(graph):
    mkdir(graph, "dest")
    put(graph, "dest/A.TXT")
    file_id = put(graph, "a.txt").json["id"]
    response = graph.patch_json(f"me/drive/items/{file_id}", {"parentReference": {"path": "/drive/root:/dest"}})
    assert response.status_int == 409
    assert graph_error(response) == ("nameAlreadyExists", None)
    assert item(graph, "a.txt").json["id"] == file_id


def test_patch_move_into_itself_or_its_subtree_is_refused(graph):
    top_id = mkdir(graph, "top").json["id"]
    mid_id = mkdir(graph, "mid", parent=f"items/{top_id}").json["id"]
    low_id = mkdir(graph, "low", parent=f"items/{mid_id}").json["id"]
    for target in (top_id, mid_id, low_id):
        response = graph.patch_json(f"me/drive/items/{top_id}", {"parentReference": {"id": target}})
        assert response.status_int == 400, target
        assert graph_error(response)[0] == "invalidRequest"
    assert item(graph, "top/mid/low").json["id"] == low_id


def test_patch_move_to_another_drive_is_refused(graph, graph_for):
    bob = graph_for("bob")
    bob_root = bob.get("me/drive/root").json["id"]
    file_id = put(graph, "a.txt").json["id"]
    response = graph.patch_json(
        f"me/drive/items/{file_id}", {"parentReference": {"driveId": bob.drive_id, "id": bob_root}}
    )
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"
    assert item(graph, "a.txt").json["id"] == file_id
    assert bob.get("me/drive/root/children").json["value"] == []


def test_patch_move_into_a_file_is_refused(graph):
    target_id = put(graph, "target.txt").json["id"]
    file_id = put(graph, "a.txt").json["id"]
    response = graph.patch_json(f"me/drive/items/{file_id}", {"parentReference": {"id": target_id}})
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"


def test_patch_sets_file_system_info(graph):
    file_id = put(graph, "a.txt").json["id"]
    info = {"createdDateTime": "2020-01-02T03:04:05.678901Z", "lastModifiedDateTime": "2021-06-07T10:11:12+02:00"}
    body = graph.patch_json(f"me/drive/items/{file_id}", {"fileSystemInfo": info}).json
    expected = {"createdDateTime": "2020-01-02T03:04:05.678Z", "lastModifiedDateTime": "2021-06-07T08:11:12.000Z"}
    assert body["fileSystemInfo"] == expected
    assert graph.get(f"me/drive/items/{file_id}").json["fileSystemInfo"] == expected


def test_patch_sets_the_description(graph):
    folder_id = mkdir(graph, "dir").json["id"]
    file_id = put(graph, "a.txt").json["id"]
    for item_id in (folder_id, file_id):
        body = graph.patch_json(f"me/drive/items/{item_id}", {"description": "about it"}).json
        assert body["description"] == "about it"
        assert graph.get(f"me/drive/items/{item_id}").json["description"] == "about it"


def test_patch_if_match_mismatch_fails(graph):
    file_id = put(graph, "a.txt").json["id"]
    response = graph.patch_json(
        f"me/drive/items/{file_id}", {"name": "b.txt"}, headers={"If-Match": '"{' + file_id + '},99"'}
    )
    assert response.status_int == 412
    assert graph_error(response) == ("preconditionFailed", "entityTagDoesNotMatch")
    assert graph.get(f"me/drive/items/{file_id}").json["name"] == "a.txt"


@pytest.mark.parametrize("tag", ["eTag", "cTag"])
def test_patch_if_match_current_tag_succeeds(graph, tag):
    body = put(graph, "a.txt").json
    response = graph.patch_json(f"me/drive/items/{body['id']}", {"name": "b.txt"}, headers={"If-Match": body[tag]})
    assert (response.status_int, response.json["name"]) == (200, "b.txt")


def test_patch_if_match_old_etag_after_a_rename_fails(graph):
    body = put(graph, "a.txt").json
    graph.patch_json(f"me/drive/items/{body['id']}", {"name": "b.txt"})
    response = graph.patch_json(f"me/drive/items/{body['id']}", {"name": "c.txt"}, headers={"If-Match": body["eTag"]})
    assert response.status_int == 412


@pytest.mark.parametrize("body", [{"name": "x"}, {"parentReference": {"path": "/drive/root:/dir"}}])
def test_patch_root_is_forbidden(graph, body):
    mkdir(graph, "dir")
    response = graph.patch_json("me/drive/root", body)
    assert response.status_int == 403
    assert graph_error(response) == ("accessDenied", None)
    assert graph.get("me/drive/root").json["name"] == "root"


@pytest.mark.parametrize("body", [{"name": "b.txt"}, {"parentReference": {"path": "/drive/root:/dest"}}])
def test_patch_wopi_locked_file_is_refused(graph, services, client_for, body):
    mkdir(graph, "dest")
    file_id = put(graph, "a.txt").json["id"]
    assert client_for(services.files.get(file_id)).lock("L1").status_int == 200
    response = graph.patch_json(f"me/drive/items/{file_id}", body)
    assert response.status_int == 423
    assert graph_error(response) == ("resourceLocked", None)
    assert item(graph, "a.txt").json["id"] == file_id


# -- DELETE ------------------------------------------------------------------------------------------


def test_delete_a_file(graph, settings, services):
    before = stored_blobs(services)
    file_id = put(graph, "a.txt", b"bye").json["id"]
    assert stored_blobs(services) != before
    response = graph.delete(f"me/drive/items/{file_id}")
    assert response.status_int == 204 and response.body == b""
    assert graph.get(f"me/drive/items/{file_id}").status_int == 404
    assert stored_blobs(services) == before


def test_delete_a_folder_recursively(graph, settings, services):
    keep = put(graph, "keep.txt", b"keep").json["id"]
    before = stored_blobs(services)
    top = mkdir(graph, "top").json["id"]
    sub = mkdir(graph, "sub", parent="root:/top:").json["id"]
    deep = mkdir(graph, "deep", parent="root:/top/sub:").json["id"]
    files = [
        put(graph, path, path.encode()).json["id"]
        for path in ("top/a.txt", "top/sub/b.txt", "top/sub/deep/c.txt", "top/sub/deep/d.txt")
    ]
    assert len(stored_blobs(services) - before) == 4
    assert graph.delete("me/drive/root:/top:").status_int == 204
    for item_id in (top, sub, deep, *files):
        assert graph.get(f"me/drive/items/{item_id}").status_int == 404
    assert stored_blobs(services) == before
    assert [i["id"] for i in graph.get("me/drive/root/children").json["value"]] == [keep]
    assert graph.get(f"me/drive/items/{keep}/content").body == b"keep"


def test_delete_root_is_forbidden(graph):
    put(graph, "a.txt")
    for path in ("me/drive/root", "me/drive/items/root"):
        response = graph.delete(path)
        assert response.status_int == 403
        assert graph_error(response) == ("accessDenied", None)
    assert len(graph.get("me/drive/root/children").json["value"]) == 1


def test_delete_a_locked_file_is_refused(graph, services, client_for):
    file_id = put(graph, "a.txt").json["id"]
    client_for(services.files.get(file_id)).lock("L1")
    response = graph.delete(f"me/drive/items/{file_id}")
    assert response.status_int == 423
    assert graph_error(response) == ("resourceLocked", None)
    assert graph.get(f"me/drive/items/{file_id}").status_int == 200


def test_delete_a_folder_with_a_locked_file_below_deletes_nothing(graph, services, client_for, settings):
    mkdir(graph, "top")
    mkdir(graph, "sub", parent="root:/top:")
    free = put(graph, "top/free.txt").json["id"]
    locked = put(graph, "top/sub/locked.txt").json["id"]
    blobs = stored_blobs(services)
    client_for(services.files.get(locked)).lock("L1")
    response = graph.delete("me/drive/root:/top:")
    assert response.status_int == 423
    assert graph_error(response) == ("resourceLocked", None)
    for path in ("top", "top/sub", "top/free.txt", "top/sub/locked.txt"):
        assert item(graph, path).status_int == 200, path
    assert graph.get(f"me/drive/items/{free}/content").body == b"data"
    assert stored_blobs(services) == blobs


def test_an_expired_wopi_lock_no_longer_blocks(graph, services, client_for, clock):
    file_id = put(graph, "a.txt").json["id"]
    client_for(services.files.get(file_id)).lock("L1")
    assert graph.patch_json(f"me/drive/items/{file_id}", {"name": "b.txt"}).status_int == 423
    clock.advance(minutes=31)
    assert graph.patch_json(f"me/drive/items/{file_id}", {"name": "b.txt"}).status_int == 200
    assert graph.delete(f"me/drive/items/{file_id}").status_int == 204


def test_delete_with_a_mismatched_if_match_fails(graph):
    body = put(graph, "a.txt").json
    response = graph.delete(f"me/drive/items/{body['id']}", headers={"If-Match": '"nope,1"'})
    assert response.status_int == 412
    assert graph_error(response) == ("preconditionFailed", "entityTagDoesNotMatch")
    assert graph.delete(f"me/drive/items/{body['id']}", headers={"If-Match": body["eTag"]}).status_int == 204


def test_delete_a_missing_item_is_not_found(graph):
    response = graph.delete(f"me/drive/items/{new_id()}")
    assert response.status_int == 404
    assert graph_error(response) == ("itemNotFound", None)


# -- content -----------------------------------------------------------------------------------------


def test_get_content(graph):
    put(graph, "a.bin", b"0123456789")
    response = graph.get("me/drive/root:/a.bin:/content")
    assert response.status_int == 200
    assert response.body == b"0123456789"
    assert response.headers["Content-Length"] == "10"


@pytest.mark.parametrize(
    "range_, body, content_range",
    [("bytes=2-5", b"2345", "bytes 2-5/10"), ("bytes=7-", b"789", "bytes 7-9/10"), ("bytes=-2", b"89", "bytes 8-9/10")],
)
def test_get_content_range(graph, range_, body, content_range):
    put(graph, "a.bin", b"0123456789")
    response = graph.get("me/drive/root:/a.bin:/content", headers={"Range": range_})
    assert response.status_int == 206
    assert response.body == body
    assert response.headers["Content-Range"] == content_range


def test_an_upload_in_a_transfer_coding_the_host_does_not_decode_is_501(graph):
    response = graph.put("me/drive/root:/a.bin:/content", b"coded", headers={"Transfer-Encoding": "gzip, chunked"})
    assert response.status_int == 501 and graph_error(response)[0] == "notSupported"
    assert item(graph, "a.bin").status_int == 404


@pytest.mark.parametrize("range_", ["bytes=0-1,5-6", "bytes=5-6,0-1", "bytes=-2,0-1", "bytes=0-3,2-5"])
def test_get_content_ignores_several_ranges(graph, range_):
    put(graph, "a.bin", b"0123456789")
    response = graph.get("me/drive/root:/a.bin:/content", headers={"Range": range_})
    assert response.status_int == 200 and response.body == b"0123456789" and "Content-Range" not in response.headers


def test_get_content_unsatisfiable_range(graph):
    put(graph, "a.bin", b"0123456789")
    response = graph.get("me/drive/root:/a.bin:/content", headers={"Range": "bytes=50-60"})
    assert response.status_int == 416
    assert graph_error(response)[0] == "invalidRange"


def test_get_content_of_a_folder_is_refused(graph):
    mkdir(graph, "dir")
    for path in ("me/drive/root:/dir:/content", "me/drive/root/content"):
        response = graph.get(path)
        assert response.status_int == 400
        assert graph_error(response) == ("invalidRequest", None)


# -- simple upload -----------------------------------------------------------------------------------


def test_simple_upload_creates_a_file(graph, services, client_for):
    response = put(graph, "new.txt", b"hello")
    assert response.status_int == 201
    body = response.json
    assert body["name"] == "new.txt" and body["size"] == 5
    assert body["file"]["hashes"]["sha256Hash"] == hashlib.sha256(b"hello").hexdigest().upper()
    assert graph.get(f"me/drive/items/{body['id']}/content").body == b"hello"
    wopi = client_for(services.files.get(body["id"]))
    assert wopi.check_file_info().json["Size"] == 5
    assert wopi.get_file().body == b"hello"


def test_simple_upload_into_a_subfolder(graph):
    folder_id = mkdir(graph, "dir").json["id"]
    response = graph.put(f"me/drive/items/{folder_id}:/a.txt:/content", b"x")
    assert response.status_int == 201
    assert response.json["parentReference"]["id"] == folder_id


def test_simple_upload_replaces_an_existing_file(graph):
    first = put(graph, "a.txt", b"one").json
    response = put(graph, "A.TXT", b"second")
    assert response.status_int == 200
    assert response.json["id"] == first["id"]
    assert response.json["name"] == "a.txt"
    assert response.json["size"] == 6
    assert response.json["file"]["hashes"]["sha256Hash"] == hashlib.sha256(b"second").hexdigest().upper()
    assert graph.get(f"me/drive/items/{first['id']}/content").body == b"second"
    assert len(graph.get("me/drive/root/children").json["value"]) == 1


def test_simple_upload_replace_keeps_blobs_tidy(graph, settings, services):
    before = stored_blobs(services)
    put(graph, "a.txt", b"one")
    put(graph, "a.txt", b"two")
    assert len(stored_blobs(services) - before) == 1


def test_simple_upload_fail_on_a_taken_name(graph):
    put(graph, "a.txt", b"one")
    response = put(graph, "a.txt", b"two", query="?@microsoft.graph.conflictBehavior=fail")
    assert response.status_int == 409
    assert graph_error(response) == ("nameAlreadyExists", None)
    assert graph.get("me/drive/root:/a.txt:/content").body == b"one"


def test_simple_upload_fail_on_a_free_name_creates(graph):
    response = put(graph, "a.txt", b"one", query="?@microsoft.graph.conflictBehavior=fail")
    assert response.status_int == 201


def test_simple_upload_rename_on_a_taken_name(graph):
    put(graph, "a.txt", b"one")
    first = put(graph, "a.txt", b"two", query="?@microsoft.graph.conflictBehavior=rename")
    second = put(graph, "a.txt", b"three", query="?@microsoft.graph.conflictBehavior=rename")
    assert (first.status_int, first.json["name"]) == (201, "a 1.txt")
    assert (second.status_int, second.json["name"]) == (201, "a 2.txt")
    assert graph.get("me/drive/root:/a.txt:/content").body == b"one"
    assert graph.get("me/drive/root:/a 1.txt:/content").body == b"two"


def test_simple_upload_bad_conflict_behaviour(graph):
    response = put(graph, "a.txt", b"one", query="?@microsoft.graph.conflictBehavior=sometimes")
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"


def test_simple_upload_never_replaces_a_folder(graph):
    mkdir(graph, "Name")
    response = put(graph, "name", b"x")
    assert response.status_int == 409
    assert graph_error(response) == ("nameAlreadyExists", None)
    assert "folder" in item(graph, "name").json


def test_simple_upload_by_item_id_replaces(graph):
    first = put(graph, "a.txt", b"one").json
    response = graph.put(f"me/drive/items/{first['id']}/content", b"replaced")
    assert response.status_int == 200
    assert response.json["id"] == first["id"] and response.json["size"] == 8
    assert graph.get("me/drive/root:/a.txt:/content").body == b"replaced"


def test_simple_upload_bumps_the_wopi_version(graph, services, client_for):
    first = put(graph, "a.txt", b"one").json
    wopi = client_for(services.files.get(first["id"]))
    version = wopi.check_file_info().json["Version"]
    put(graph, "a.txt", b"two")
    assert wopi.check_file_info().json["Version"] != version
    assert wopi.get_file().body == b"two"


def test_simple_upload_by_item_id_of_a_folder_is_refused(graph):
    folder_id = mkdir(graph, "dir").json["id"]
    response = graph.put(f"me/drive/items/{folder_id}/content", b"x")
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"


@pytest.mark.parametrize("how", ["path", "id"])
def test_simple_upload_of_zero_bytes(graph, how):
    if how == "path":
        response = put(graph, "empty.txt", b"")
        assert response.status_int == 201
    else:
        file_id = put(graph, "empty.txt", b"full").json["id"]
        response = graph.put(f"me/drive/items/{file_id}/content", b"")
        assert response.status_int == 200
    assert response.json["size"] == 0
    assert response.json["file"]["hashes"]["sha256Hash"] == hashlib.sha256(b"").hexdigest().upper()
    assert graph.get("me/drive/root:/empty.txt:/content").body == b""


def test_simple_upload_over_4_mib_is_refused(graph):
    response = put(graph, "big.bin", b"x" * ((4 << 20) + 1))
    assert response.status_int == 413
    assert graph_error(response)[0] == "requestSizeExceeded"
    assert item(graph, "big.bin").status_int == 404


def test_simple_upload_over_the_max_file_size_is_refused(graph, settings, services):
    before = stored_blobs(services)
    response = put(graph, "big.bin", b"x" * ((1 << 20) + 1))
    assert response.status_int == 413
    assert graph_error(response)[0] == "requestSizeExceeded"
    assert item(graph, "big.bin").status_int == 404
    assert stored_blobs(services) == before


def test_simple_upload_replacement_over_the_max_file_size_keeps_the_old_content(graph):
    file_id = put(graph, "a.bin", b"old").json["id"]
    response = graph.put(f"me/drive/items/{file_id}/content", b"x" * ((1 << 20) + 1))
    assert response.status_int == 413
    assert graph.get(f"me/drive/items/{file_id}/content").body == b"old"


def test_simple_upload_of_exactly_the_max_file_size(graph):
    response = put(graph, "max.bin", b"x" * (1 << 20))
    assert (response.status_int, response.json["size"]) == (201, 1 << 20)


def tree_of(graph: GraphClient, folder: str = "root") -> dict:
    """The names below a folder, each folder's as a dict of what is in it, each file's as its size."""
    found = {}
    for child in graph.get(f"me/drive/items/{folder}/children").json["value"]:
        found[child["name"]] = tree_of(graph, child["id"]) if "folder" in child else child["size"]
    return found


def test_a_simple_upload_makes_the_missing_folders_of_its_path(graph):
    """OneDrive makes the folders a path names that are not there yet, as the file lands."""
    mkdir(graph, "a")
    response = put(graph, "a/b/c/new.txt", b"hello")
    assert response.status_int == 201, response.body
    assert response.json["parentReference"]["path"].endswith("/root:/a/b/c")
    c = item(graph, "a/b/c").json
    assert (c["id"], c["folder"]["childCount"]) == (response.json["parentReference"]["id"], 1)
    assert tree_of(graph) == {"a": {"b": {"c": {"new.txt": 5}}}}
    below = graph.put(f"me/drive/items/{c['id']}:/d/e.txt:/content", b"xy")  # below an item by id too
    assert below.status_int == 201, below.body
    assert put(graph, "a/b/c/new.txt", b"again").status_int == 200  # the same path again: the file replaced
    assert tree_of(graph) == {"a": {"b": {"c": {"d": {"e.txt": 2}, "new.txt": 5}}}}


@pytest.mark.parametrize(
    "path, status, code",
    [
        ("file.txt/a.txt", 409, "nameAlreadyExists"),  # a file cannot hold one
        ("FILE.TXT/deeper/a.txt", 409, "nameAlreadyExists"),
        ("new/CON/a.txt", 400, "invalidRequest"),  # names.check's rules, as for any new folder
        ("new/end./a.txt", 400, "invalidRequest"),
    ],
)
def test_a_path_whose_folders_cannot_be_made_leaves_nothing(graph, path, status, code):
    put(graph, "file.txt")
    response = put(graph, path, b"x")
    assert (response.status_int, graph_error(response)[0]) == (status, code), response.body
    assert tree_of(graph) == {"file.txt": 4}


def test_if_match_on_a_path_through_missing_folders_fails_and_makes_none(graph):
    """No file is where no folder is yet: If-Match fails (412), before and as the upload lands."""
    refused = graph.put("me/drive/root:/x/y/z.txt:/content", b"x", {"If-Match": "*"})
    assert (refused.status_int, graph_error(refused)[0]) == (412, "preconditionFailed"), refused.body
    assert tree_of(graph) == {}
    made = graph.put("me/drive/root:/x/y/z.txt:/content", b"x", {"If-None-Match": "*"})
    assert made.status_int == 201, made.body


@pytest.mark.parametrize("meanwhile", ["token revoked", "a file takes a folder's name"])
def test_an_upload_refused_as_it_lands_leaves_none_of_its_folders(graph, services, meanwhile):
    """The folders are made in the transaction that lands the file: refused there, none of them stays."""
    mkdir(graph, "a")

    def change() -> None:
        if meanwhile == "token revoked":
            revoke(services, graph.token)
        else:
            assert put(graph, "a/b", b"in the way").status_int == 201

    answer = while_the_body_comes(
        lambda held: graph.put_from("me/drive/root:/a/b/c/late.txt:/content", held, 4096), b"x" * 4096, change
    )
    if meanwhile == "token revoked":
        assert answer.status_int == 401, answer.body
        assert [f.name for f in services.files.list()] == []
        with services.db.read() as s:
            assert [f.name for f in s.scalars(sa.select(Folder).where(Folder.parent_id.is_not(None)))] == ["a"]
    else:
        assert (answer.status_int, graph_error(answer)[0]) == (409, "nameAlreadyExists"), answer.body
        assert tree_of(graph) == {"a": {"b": 10}}


def test_uploads_racing_to_make_the_same_folder_land_in_one(graph, database):
    """Two uploads at once under the same missing folders: the second finds the first's folders and uses them."""
    for round_ in range(5):
        start = threading.Barrier(2)

        def upload(name: str, round_: int = round_) -> int:
            start.wait()
            return put(graph, f"r{round_}/shared/{name}", name.encode()).status_int

        with ThreadPoolExecutor(2) as pool:
            answers = sorted(pool.map(upload, ("a.txt", "b.txt")))
        assert answers == [201, 201], answers
    assert tree_of(graph) == {f"r{i}": {"shared": {"a.txt": 5, "b.txt": 5}} for i in range(5)}


@pytest.mark.parametrize("name", ["a:b.txt", "CON.txt", "bad|name", "end."])
def test_simple_upload_with_an_invalid_name_is_refused(graph, name):
    response = graph.put(f"me/drive/root:/{quote(name)}:/content", b"x")  # a ":" ends the path: 400 as well
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"
    assert graph.get("me/drive/root/children").json["value"] == []


@pytest.mark.parametrize("how", ["path", "id"])
def test_simple_upload_over_a_locked_file_is_refused(graph, services, client_for, how):
    file_id = put(graph, "a.txt", b"one").json["id"]
    client_for(services.files.get(file_id)).lock("L1")
    response = put(graph, "a.txt", b"two") if how == "path" else graph.put(f"me/drive/items/{file_id}/content", b"two")
    assert response.status_int == 423
    assert graph_error(response) == ("resourceLocked", None)
    assert graph.get(f"me/drive/items/{file_id}/content").body == b"one"


def test_simple_upload_if_match(graph):
    body = put(graph, "a.txt", b"one").json
    stale = graph.put(f"me/drive/items/{body['id']}/content", b"two", headers={"If-Match": '"{x},0"'})
    assert stale.status_int == 412
    assert graph_error(stale) == ("preconditionFailed", "entityTagDoesNotMatch")
    fresh = graph.put("me/drive/root:/a.txt:/content", b"three", headers={"If-Match": body["cTag"]})
    assert fresh.status_int == 200
    assert graph.get(f"me/drive/items/{body['id']}/content").body == b"three"


@pytest.mark.parametrize(
    "conflict", ["", "?@microsoft.graph.conflictBehavior=replace", "?@microsoft.graph.conflictBehavior=fail"]
)
def test_simple_upload_if_match_on_a_path_with_no_file_creates_nothing(graph, conflict):
    """If-Match holds only for a file that exists (RFC 9110 §13.1.1): an update made on a tag of a file deleted
    meanwhile must not bring it back."""
    body = put(graph, "a.txt", b"one").json
    assert graph.delete(f"me/drive/items/{body['id']}").status_int == 204
    for tag in (body["eTag"], body["cTag"], "*"):
        response = graph.put(f"me/drive/root:/a.txt:/content{conflict}", b"two", headers={"If-Match": tag})
        assert response.status_int == 412, tag
        assert graph_error(response) == ("preconditionFailed", "entityTagDoesNotMatch")
    assert item(graph, "a.txt").status_int == 404
    assert graph.put("me/drive/root:/a.txt:/content", b"two", headers={"If-None-Match": "*"}).status_int == 201


def test_simple_upload_if_match_is_checked_before_a_rename(graph):
    put(graph, "a.txt", b"one")
    response = put(graph, "a.txt", b"two", query="?@microsoft.graph.conflictBehavior=rename")
    assert response.status_int == 201 and response.json["name"] == "a 1.txt"
    stale = graph.put(
        "me/drive/root:/a.txt:/content?@microsoft.graph.conflictBehavior=rename",
        b"three",
        headers={"If-Match": '"{x},0"'},
    )
    assert stale.status_int == 412
    assert [i["name"] for i in graph.get("me/drive/root/children").json["value"]] == ["a 1.txt", "a.txt"]


# -- token scope and authentication ------------------------------------------------------------------


def test_read_only_token_can_read(graph, graph_for):
    file_id = put(graph, "a.txt", b"ro").json["id"]
    reader = graph_for(can_write=False)
    assert reader.get("me/drive").status_int == 200
    assert reader.get("me/drive/root/children").json["value"][0]["id"] == file_id
    assert reader.get(f"me/drive/items/{file_id}").status_int == 200
    assert reader.get(f"me/drive/items/{file_id}/content").body == b"ro"


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post_json", "me/drive/root/children", {"name": "x", "folder": {}}),
        ("put", "me/drive/root:/new.txt:/content", b"x"),
        ("put", "me/drive/root:/a.txt:/content", b"x"),
        ("put", "me/drive/items/{id}/content", b"x"),
        ("patch_json", "me/drive/items/{id}", {"name": "b.txt"}),
        ("delete", "me/drive/items/{id}", None),
    ],
)
def test_read_only_token_cannot_write(graph, graph_for, method, path, body):
    file_id = put(graph, "a.txt", b"ro").json["id"]
    reader = graph_for(can_write=False)
    call = getattr(reader, method)
    response = call(path.format(id=file_id)) if body is None else call(path.format(id=file_id), body)
    assert response.status_int == 403
    assert graph_error(response) == ("accessDenied", None)
    assert [i["name"] for i in graph.get("me/drive/root/children").json["value"]] == ["a.txt"]
    assert graph.get(f"me/drive/items/{file_id}/content").body == b"ro"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer ", "Bearer garbage", "Basic YWxpY2U6cHc=", "garbage"]
)
def test_missing_or_bad_authorization_is_unauthenticated(testapp, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = testapp.get("/v1.0/me/drive/root", headers=headers, expect_errors=True)
    assert response.status_int == 401
    assert graph_error(response) == ("unauthenticated", None)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_wopi_token_as_bearer_is_unauthenticated(testapp, services, make_file):
    file = make_file()
    token = services.issue_token(file.id, "alice", True).token
    client = GraphClient(testapp, token, "")
    for path in ("me/drive", f"me/drive/items/{file.id}", f"me/drive/items/{file.id}/content"):
        response = client.get(path)
        assert response.status_int == 401, path
        assert graph_error(response) == ("unauthenticated", None)


def test_revoked_token_is_unauthenticated(graph, services):
    assert graph.get("me/drive").status_int == 200
    revoke(services, graph.token)
    response = graph.get("me/drive")
    assert response.status_int == 401
    assert graph_error(response) == ("unauthenticated", None)


def test_expired_token_is_unauthenticated(graph, clock, settings):
    clock.advance(seconds=settings.token_ttl + 1)
    response = graph.get("me/drive")
    assert response.status_int == 401
    assert graph_error(response) == ("unauthenticated", None)


def test_revoking_one_token_leaves_others(graph, graph_for, services):
    other = graph_for()
    revoke(services, graph.token)
    assert other.get("me/drive").status_int == 200


def test_shared_drive_membership_is_checked_on_every_request(services, graph_for):
    drive = services.drives.create_shared("group", "Team")
    services.drives.add_member(drive.id, "bob")
    bob = graph_for("bob")
    assert bob.get(f"groups/{drive.id}/drive/root").status_int == 200
    assert services.drives.remove_member(drive.id, "bob") == 0  # bob held no WOPI token for it
    response = bob.get(f"groups/{drive.id}/drive/root")
    assert response.status_int == 403
    assert graph_error(response) == ("accessDenied", None)


def test_read_only_member_of_a_shared_drive_cannot_write(services, graph_for):
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "bob")
    reader = graph_for("bob", can_write=False)
    assert reader.get(f"sites/{drive.id}/drive/root/children").status_int == 200
    response = put(reader, "x.txt", drive=f"sites/{drive.id}/drive")
    assert response.status_int == 403
    assert graph_error(response) == ("accessDenied", None)


# -- error answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("GET", "/v1.0/me/drive/root/bogus", None, 400, "invalidRequest"),
        ("GET", "/v1.0/me/drive/root:/a.txt:/bogus", None, 400, "invalidRequest"),
        ("GET", "/v1.0/me/drive/items/", None, 400, "invalidRequest"),
        ("GET", "/v1.0/me/drive/bogus", None, 404, "itemNotFound"),
        ("GET", "/v1.0/nothing/here", None, 404, "itemNotFound"),
        ("GET", "/v2.0/me", None, 404, "itemNotFound"),
        ("GET", "/_api/v2.0/me/photos", None, 404, "itemNotFound"),
        ("DELETE", "/v1.0/me/drive", None, 405, "notSupported"),
        ("POST", "/v1.0/me/drive/root", b"{}", 405, "notSupported"),
        ("PATCH", "/v1.0/me/drive/root/children", b"{}", 405, "notSupported"),
        ("DELETE", "/v1.0/me/drive/root/content", None, 405, "notSupported"),
        ("POST", "/v1.0/downloads/whatever", b"", 405, "notSupported"),
        ("PATCH", "/v1.0/me/drive/root:/a.txt:", b"{not json", 400, "invalidRequest"),
        ("PATCH", "/v1.0/me/drive/root:/a.txt:", b"[1, 2]", 400, "invalidRequest"),
        ("PATCH", "/v1.0/me/drive/root:/a.txt:", b'"text"', 400, "invalidRequest"),
        ("PATCH", "/v1.0/me/drive/root:/a.txt:", b"", 400, "invalidRequest"),
        ("POST", "/v1.0/me/drive/root/children", b"\xff\xfe", 400, "invalidRequest"),
        ("POST", "/v1.0/me/drive/root/children", b"[" * 100000, 400, "invalidRequest"),
        ("POST", "/v1.0/me/drive/root/children", b"null", 400, "invalidRequest"),
        (
            "PATCH",
            "/v1.0/me/drive/root:/a.txt:",
            b'{"description": "' + b"x" * (1 << 20) + b'"}',
            413,
            "requestSizeExceeded",
        ),
    ],
)
def test_errors_are_graph_json(graph, testapp, method, path, body, status, code):
    put(graph, "a.txt")
    headers = {"Authorization": f"Bearer {graph.token}", "Content-Type": "application/json"}
    response = testapp.request(path, method=method, body=body or b"", headers=headers, expect_errors=True)
    assert response.status_int == status, response
    assert graph_error(response)[0] == code
    assert item(graph, "a.txt").json["name"] == "a.txt"


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("DELETE", "me/drive", "GET, HEAD"),
        ("POST", "me/drives", "GET, HEAD"),
        ("POST", "me/drive/root", "DELETE, GET, HEAD, PATCH, PUT"),
        ("DELETE", "me/drive/root/children", "GET, HEAD, POST"),
        ("PATCH", "me/drive/root:/a.txt:/content", "GET, HEAD, PUT"),
        ("GET", "me/drive/root:/a.txt:/copy", "POST"),
        ("PUT", "downloads/x", "GET, HEAD"),
        ("PATCH", "uploadSessions/x", "DELETE, GET, HEAD, POST, PUT"),
    ],
)
def test_a_405_says_which_methods_the_resource_takes(graph, method, path, allowed):
    """RFC 9110 §15.5.6: a 405 carries Allow."""
    put(graph, "a.txt")
    response = graph.testapp.request(
        f"/v1.0/{path}", method=method, headers={"Authorization": f"Bearer {graph.token}"}, expect_errors=True
    )
    assert response.status_int == 405
    assert graph_error(response) == ("notSupported", None)
    assert response.headers["Allow"] == allowed


@pytest.mark.filterwarnings("ignore::webtest.lint.WSGIWarning")  # webtest's lint does not know PROPFIND
@pytest.mark.parametrize("method", ["OPTIONS", "PROPFIND", "TRACE", "MKCOL"])
@pytest.mark.parametrize("path", ["me/drive", "me/drive/root", "me/drive/root:/a.txt:/content"])
def test_a_method_no_resource_takes_is_501_not_a_405_with_another_allow(graph, method, path):
    """It was a 405 whose Allow listed every method of the API (PUT, DELETE, ... on /me/drive), where a 405 of
    DELETE on the same resource says GET, HEAD: RFC 9110 §15.6.2's 501 is for a method no resource takes."""
    put(graph, "a.txt")
    response = graph.testapp.request(
        f"/v1.0/{path}", method=method, headers={"Authorization": f"Bearer {graph.token}"}, expect_errors=True
    )
    assert response.status_int == 501 and "Allow" not in response.headers
    assert graph_error(response) == ("notSupported", None)


@pytest.mark.parametrize("path", ["/v1.0/", "/v1.0", "/_api/v2.0/"])
def test_bare_prefix_is_graph_json_not_found(graph, testapp, path):
    response = testapp.get(path, headers={"Authorization": f"Bearer {graph.token}"}, expect_errors=True)
    assert response.status_int == 404
    assert graph_error(response) == ("itemNotFound", None)


@pytest.mark.parametrize(
    "path, version", [("/beta/me/drive", "/beta"), ("/v3.0/me/drive/root", "/v3.0"), ("/_api/v1.0/", "/_api/v1.0")]
)
def test_another_api_version_is_a_graph_404_naming_those_served(graph, testapp, path, version):
    response = testapp.get(path, headers={"Authorization": f"Bearer {graph.token}"}, expect_errors=True)
    assert response.status_int == 404
    assert graph_error(response) == ("itemNotFound", None)
    assert response.json["error"]["message"].endswith(f"/v1.0, /v2.0, /_api/v2.0, not {version}")


def test_a_path_of_no_api_version_is_not_graphs(testapp):
    response = testapp.get("/very/unknown", expect_errors=True)
    assert response.status_int == 404 and response.content_type != "application/json"


def test_an_error_message_spells_a_name_as_it_is_not_as_question_marks(graph):
    """The domain's reason is made ASCII for WOPI's X-WOPI-FailureReason; Graph's JSON message needs not."""
    assert put(graph, "Отчёт 日本.txt").status_int == 201
    response = graph.post_json("me/drive/root/children", {"name": "Отчёт 日本.txt", "folder": {}})
    assert response.status_int == 409
    assert "Отчёт 日本.txt" in response.json["error"]["message"]
    response = graph.get(f"me/drive/root:/{quote('Ünïcödé/' + 'é' * 2000)}:")
    assert response.status_int == 404
    assert "Ünïcödé" in response.json["error"]["message"]
    assert len(response.json["error"]["message"]) <= 500


def test_error_json_carries_the_client_request_id(graph):
    response = graph.get("me/drive/root:/missing:", headers={"client-request-id": "abc-123"})
    assert response.status_int == 404
    assert response.json["error"]["innerError"]["client-request-id"] == "abc-123"
    assert response.headers["request-id"] == response.json["error"]["innerError"]["request-id"]


def test_each_error_has_its_own_request_id(graph):
    first, second = graph.get("me/drive/root:/x:"), graph.get("me/drive/root:/x:")
    assert graph_error(first) == graph_error(second) == ("itemNotFound", None)
    assert first.json["error"]["innerError"]["request-id"] != second.json["error"]["innerError"]["request-id"]


def test_error_answers_carry_no_wopi_headers(graph):
    response = graph.get("me/drive/root:/missing:")
    assert "X-WOPI-FailureReason" not in response.headers


# -- found in review: access after removal, bodies, odd input, collation --------------------------------


def test_a_download_url_stops_working_when_its_user_leaves_the_shared_drive(services, graph):
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "alice")
    file_id = put(graph, "team.txt", b"team only", drive=f"drives/{drive.id}").json["id"]
    url = graph.get(f"drives/{drive.id}/items/{file_id}").json["@microsoft.graph.downloadUrl"]
    assert graph.testapp.get(graph.url(url)).body == b"team only"
    services.drives.remove_member(drive.id, "alice")
    refused = graph.testapp.get(graph.url(url), expect_errors=True)
    assert refused.status_int == 403 and graph_error(refused)[0] == "accessDenied"


def test_a_json_body_sent_chunked_is_read_to_its_limit_only(graph):
    """No Content-Length: the body is read up to 1 MiB and refused past it, not buffered whole."""
    body = b'{"name": "x", "folder": {}, "pad": "' + b"a" * (2 << 20) + b'"}'
    request = webtest.TestRequest.blank(
        graph.url("me/drive/root/children"),
        method="POST",
        headers={**graph.headers(), "Content-Type": "application/json"},
    )
    request.environ["wsgi.input"] = io.BytesIO(body)
    request.environ["wsgi.input_terminated"] = True
    request.environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    request.environ.pop("CONTENT_LENGTH", None)
    answer = graph.testapp.do_request(request, status="*", expect_errors=True)
    assert answer.status_int == 413 and graph_error(answer)[0] == "requestSizeExceeded"
    assert graph.get("me/drive/root:/x:").status_int == 404


@pytest.mark.parametrize(
    "path, body",
    [
        ("me/drive/root/children?$top=%C2%B2", None),  # "²" is a digit to Python, not a number
        ("me/drive/root:/a%00b:", None),
        ("me/drive/root/children?$skiptoken=" + "A" * 22 + ".%00", None),
        ("me/drive/root", {"description": "\ud800"}),
        ("me/drive/root", {"description": "a\x00b"}),
        ("me/drive/root", {"fileSystemInfo": {"createdDateTime": "0001-01-01T00:00:00+01:00"}}),
        ("me/drive/root", {"fileSystemInfo": {"lastModifiedDateTime": "9999-12-31T23:59:59-01:00"}}),
        ("me/drive/root", {"fileSystemInfo": {"lastModifiedDateTime": "1200-01-01T00:00:00Z"}}),
    ],
)
def test_input_the_database_cannot_take_is_400(graph, path, body):
    if body is None:
        answer = graph.get(path)
    else:
        raw = json.dumps(body).encode()  # json.dumps escapes a lone surrogate as \ud800, as a client would
        answer = graph.testapp.patch(
            graph.url(path), raw, headers={**graph.headers(), "Content-Type": "application/json"}, expect_errors=True
        )
    assert answer.status_int == 400, answer.body
    assert graph_error(answer)[0] == "invalidRequest"


def test_a_parent_reference_path_into_another_drive_is_400(services, graph):
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "alice")
    assert mkdir(graph, "d", drive=f"drives/{drive.id}").status_int == 201
    assert mkdir(graph, "d").status_int == 201
    file_id = put(graph, "a.txt").json["id"]
    refused = graph.patch_json(
        f"me/drive/items/{file_id}", {"parentReference": {"path": f"/drives/{drive.id}/root:/d"}}
    )
    assert refused.status_int == 400 and graph_error(refused)[0] == "invalidRequest"
    moved = graph.patch_json(
        f"me/drive/items/{file_id}", {"parentReference": {"path": f"/drives/{graph.drive_id}/root:/d"}}
    )
    assert moved.status_int == 200 and moved.json["parentReference"]["path"].endswith("root:/d")


def test_paging_follows_code_points_whatever_the_database_collation(database, settings, clock):
    """On PostgreSQL, in a database whose collation sorts by language (as many installations do), paging a
    folder still returns every child exactly once."""
    if not database.startswith("postgresql"):
        pytest.skip("SQLite compares bytes; the collation question is PostgreSQL's")
    admin = sa.create_engine(sa.make_url(database).set(query={}), isolation_level="AUTOCOMMIT")
    name = f"wopihost_icu_{os.getpid()}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C.UTF-8'"
        )
    url = sa.make_url(database).set(database=name, query={}).render_as_string(hide_password=False)
    try:
        wopihost_db.upgrade(url)
        app = create_app(settings.with_changes(database_url=url), clock)
        services = app.extensions["wopihost"]
        issued, drive_id = services.issue_api_token("alice", True)
        graph = GraphClient(webtest.TestApp(app), issued.token, drive_id)
        names = ["a c", "a-c", "a.b.txt", "a_b.txt", "ab.txt", "E.txt", "é", "ä.txt", "Z", "z1"]
        for n in names:
            assert put(graph, n).status_int == 201
        seen, url_ = [], "me/drive/root/children?$top=2"
        while url_:
            page = graph.get(url_).json
            seen += [child["name"] for child in page["value"]]
            url_ = page.get("@odata.nextLink")
        assert sorted(seen) == sorted(names) and len(seen) == len(names)
        services.db.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# -- races with another worker, on PostgreSQL (READ COMMITTED): SQLite's writers take turns ---------------------

needs_postgresql = pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
on_postgresql = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


def _blocks_another(engine, pid: int) -> bool:
    """Whether some session waits for the PostgreSQL backend `pid`'s locks (polled up to 20 s)."""
    deadline = time.monotonic() + 20
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
            if conn.execute(query, {"pid": pid}).scalar_one():
                return True
            time.sleep(0.05)
    return False


@needs_postgresql
@on_postgresql
def test_a_folder_whose_subfolder_is_deleted_meanwhile_is_deleted_all_the_same(graph, database):
    """The DELETE lists the folders below before it locks them; one deleted in between is no reason for a 404
    that leaves the rest (a sync client takes 404 for "already gone")."""
    top_id = mkdir(graph, "P").json["id"]
    while True:  # folders are locked in id order: the DELETE of D must wait at P before it locks D or S
        d_id = mkdir(graph, "D", parent="root:/P:").json["id"]
        s_id = mkdir(graph, "S", parent="root:/P/D:").json["id"]
        if top_id < d_id and top_id < s_id:
            break
        assert graph.delete(f"me/drive/items/{d_id}").status_int == 204
    engine = sa.create_engine(database)
    holder = engine.connect()
    try:
        pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        holder.execute(sa.text("SELECT id FROM folders WHERE id = :id FOR UPDATE"), {"id": top_id})
        answers = {}
        deleting = threading.Thread(target=lambda: answers.update(d=graph.delete(f"me/drive/items/{d_id}")))
        deleting.start()
        assert _blocks_another(engine, pid), "the DELETE of D never waited for P"
        assert graph.delete(f"me/drive/items/{s_id}").status_int == 204  # another client, meanwhile
        holder.rollback()
        deleting.join(30)
    finally:
        holder.close()
        engine.dispose()
    assert answers["d"].status_int == 204, answers["d"].body
    assert item(graph, "P/D").status_int == 404


@needs_postgresql
@on_postgresql
def test_a_read_sees_one_state_though_another_worker_commits_halfway(graph, services, database):
    """An item's read takes statements one after another (the file, its folder, the path above): a DELETE of the
    folder committed between two of them must not show half-way (it was a 500: the folder was gone)."""
    folder_id = mkdir(graph, "gone").json["id"]
    file_id = graph.put("me/drive/root:/gone/a.txt:/content", b"abc").json["id"]
    reader, deleted = threading.get_ident(), []

    def after(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() == reader and not deleted and "FROM files" in statement and file_id in str(parameters):
            other = threading.Thread(target=lambda: deleted.append(graph.delete(f"me/drive/items/{folder_id}")))
            other.start()
            other.join(30)

    sa.event.listen(services.db.engine, "after_cursor_execute", after)
    try:
        response = graph.get(f"me/drive/items/{file_id}")
    finally:
        sa.event.remove(services.db.engine, "after_cursor_execute", after)
    assert deleted[0].status_int == 204, "the other worker's DELETE did not happen"
    assert response.status_int == 200 and response.json["parentReference"]["id"] == folder_id  # as it was
    assert graph.get(f"me/drive/items/{file_id}").status_int == 404  # and as it is now


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_an_upload_whose_path_changes_as_it_waits_takes_its_folders_in_id_order(services, graph, database):
    """An upload to root:/x/b/f.txt waits for the root (a change holds it); meanwhile b is made in x, with an id
    below the root's, and a change that locks b, then the root (in id order, as every change takes them), begins.
    The upload, let in, finds b on its path: were it to lock b then, after the root, it and that change would each
    wait for the other (PostgreSQL: a deadlock, one of them 503). It lets go of its folders and takes them again
    in id order instead: both land."""
    root = graph.get("me/drive/root").json["id"]
    x, b = "z" * 22, "0" * 22  # above and below any root's id
    with services.db.write() as s:
        now = services.clock.now()
        s.add(
            Folder(
                id=x, drive_id=graph.drive_id, parent_id=root, name="x", name_key="x", created_at=now, modified_at=now
            )
        )
    outcome: dict[str, object] = {}

    def run(name: str, work) -> threading.Thread:
        def target() -> None:
            try:
                outcome[name] = work()
            except Exception as exc:  # a deadlock's is Unavailable (503)
                outcome[name] = exc

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    def other_change() -> str:
        with services.db.write() as s:
            lock_folder(s, b)
            locked.set()
            lock_folder(s, root)
        return "done"

    locked = threading.Event()
    with services.db.write() as s:
        lock_folder(s, root)
        upload = run("upload", lambda: put(graph, "x/b/f.txt", b"hi").status_int)
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 1), (
            "the upload never waited for the root"
        )
        with services.db.write() as made:
            made.add(
                Folder(
                    id=b, drive_id=graph.drive_id, parent_id=x, name="b", name_key="b", created_at=now, modified_at=now
                )
            )
        change = run("change", other_change)
        assert locked.wait(60)
        assert wait_until(lambda: postgres_lock_waiters(database, [os.getpid()]) == 2), "the change never waited"
    upload.join(60)
    change.join(60)
    assert outcome == {"upload": 201, "change": "done"}, outcome
    assert graph.get("me/drive/root:/x/b/f.txt:").json["parentReference"]["id"] == b
