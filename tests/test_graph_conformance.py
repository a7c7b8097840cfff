"""Graph conformance odds: malformed entity tags (400 malformedEntityTag), the `root` alias in a
parentReference, and $select on driveItem reads (docs/graph.md §3, §3.1, §3.3, §3.7, §6, §9)."""

from __future__ import annotations

import pytest

from .helpers import graph_error
from .test_graph_copy import copied, copy
from .test_graph_items import item, mkdir, put

# -- If-Match / If-None-Match that are not entity tags ------------------------------------------------------

MALFORMED = [
    "abc",  # not quoted, as a hand-made client might send the bare tag
    '"abc',  # unclosed
    '"a"b"',  # a quote inside
    '"a" "b"',  # two tags without a comma between
    "W/abc",
    'w/"abc"',  # W/ is case-sensitive
    '"a",*',  # * only alone
    '"a\x01"',  # a control character
]


def _writes(graph, file_id: str):
    """Each write that takes If-Match, as (what, a function of the headers that makes the request)."""
    return [
        ("patch", lambda h: graph.patch_json(f"me/drive/items/{file_id}", {"name": "renamed.txt"}, headers=h)),
        ("delete", lambda h: graph.delete(f"me/drive/items/{file_id}", headers=h)),
        ("put by id", lambda h: graph.put(f"me/drive/items/{file_id}/content", b"new", headers=h)),
        ("put by path", lambda h: graph.put("me/drive/root:/a.txt:/content", b"new", headers=h)),
        ("session", lambda h: graph.post_json("me/drive/root:/a.txt:/createUploadSession", {}, headers=h)),
        ("get", lambda h: graph.get(f"me/drive/items/{file_id}", headers=h)),
        ("content", lambda h: graph.get(f"me/drive/items/{file_id}/content", headers=h)),
    ]


@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_entity_tag_is_400_malformed_entity_tag_and_changes_nothing(graph, header, value):
    """Graph's inner code for a header that is not an entity tag list is malformedEntityTag, on a 400: the
    request is wrong, not the item's state, so a 412 (the item changed: read it again) would mislead."""
    before = put(graph, "a.txt", b"old").json
    for what, request in _writes(graph, before["id"]):
        response = request({header: value})
        assert response.status_int == 400, (what, response)
        assert graph_error(response) == ("invalidRequest", "malformedEntityTag"), what
    after = item(graph, "a.txt").json
    assert (after["id"], after["eTag"], after["name"]) == (before["id"], before["eTag"], "a.txt")
    assert graph.get("me/drive/root:/a.txt:/content").body == b"old"


def test_a_well_formed_tag_that_does_not_match_is_still_412(graph):
    """On every route, a download's too, with the inner code entityTagDoesNotMatch."""
    before = put(graph, "a.txt", b"old").json
    for what, request in _writes(graph, before["id"]):
        response = request({"If-Match": '"{nope},1"'})
        assert response.status_int == 412, (what, response)
        assert graph_error(response) == ("preconditionFailed", "entityTagDoesNotMatch"), what


@pytest.mark.parametrize("tag", ["eTag", "cTag"])
def test_an_entity_tag_list_matches_on_any_of_its_tags(graph, tag):
    """RFC 9110 §13.1.1: If-Match is a list, and it holds if any tag in it matches; the tags' own commas (inside
    their quotes) do not split it. Empty elements are ignored (§5.6.1.2)."""
    body = put(graph, "a.txt", b"old").json
    listed = f' , "{{other}},1",{body[tag]} ,'
    response = graph.patch_json(f"me/drive/items/{body['id']}", {"name": "b.txt"}, headers={"If-Match": listed})
    assert response.status_int == 200, response
    assert response.json["name"] == "b.txt"


def test_a_weak_tag_never_passes_if_match_but_matches_if_none_match(graph):
    """If-Match compares strongly (a weak tag never matches), If-None-Match weakly (RFC 9110 §13.1.1, §13.1.2)."""
    body = put(graph, "a.txt", b"old").json
    weak = "W/" + body["eTag"]
    renamed = graph.patch_json(f"me/drive/items/{body['id']}", {"name": "b.txt"}, headers={"If-Match": weak})
    assert renamed.status_int == 412
    assert graph.delete(f"me/drive/items/{body['id']}", headers={"If-Match": weak}).status_int == 412
    assert graph.delete(f"me/drive/items/{body['id']}", headers={"If-None-Match": weak}).status_int == 412
    assert graph.get(f"me/drive/items/{body['id']}", headers={"If-None-Match": weak}).status_int == 304
    assert graph.delete(f"me/drive/items/{body['id']}", headers={"If-Match": body["eTag"]}).status_int == 204


# -- parentReference {"id": "root"} -----------------------------------------------------------------------------


@pytest.mark.parametrize("reference", [{"id": "root"}, {"id": "root", "driveId": "{drive}"}])
def test_a_move_to_the_root_alias_moves_into_the_root(graph, reference):
    """A URL names the root `items/root`; a parentReference may name it the same way, since no item has that id."""
    mkdir(graph, "sub")
    moved = put(graph, "sub/a.txt", b"abc").json
    reference = {key: value.format(drive=graph.drive_id) for key, value in reference.items()}
    response = graph.patch_json(f"me/drive/items/{moved['id']}", {"parentReference": reference})
    assert response.status_int == 200, response
    assert response.json["parentReference"]["id"] == graph.get("me/drive/root").json["id"]
    assert item(graph, "a.txt").json["id"] == moved["id"]
    assert item(graph, "sub/a.txt").status_int == 404


def test_a_copy_to_the_root_alias_lands_in_the_root_of_the_drive_named(services, graph):
    mkdir(graph, "sub")
    put(graph, "sub/a.txt", b"abc")
    made = copied(graph, copy(graph, "root:/sub/a.txt:", {"parentReference": {"id": "root"}}))
    assert made["parentReference"]["id"] == graph.get("me/drive/root").json["id"]
    assert graph.get("me/drive/root:/a.txt:/content").body == b"abc"
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "alice")
    response = copy(graph, "root:/sub/a.txt:", {"parentReference": {"driveId": drive.id, "id": "root"}})
    assert response.status_int == 202, response
    assert graph.get(f"drives/{drive.id}/root:/a.txt:/content").body == b"abc"


# -- $select --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", ["$select=name,size", "%24select=name,size", "select=name,size", "$select= NAME ,Size"]
)
def test_select_answers_the_properties_it_names_and_the_id(graph, query):
    """As OneDrive documents `select=name,size`: only those, and the id. The Graph SDKs send `%24select`."""
    made = put(graph, "a.txt", b"abc").json
    for path in ["me/drive/root:/a.txt:", f"me/drive/items/{made['id']}", f"drives/{graph.drive_id}/root:/a.txt:"]:
        response = graph.get(f"{path}?{query}")
        assert response.status_int == 200, response
        assert response.json == {"id": made["id"], "name": "a.txt", "size": 3}, path
    root = graph.get(f"me/drive/root?{query}").json
    assert set(root) == {"id", "name", "size"} and root["name"] == "root"


def test_select_shapes_every_child_and_is_carried_to_the_next_page(graph):
    for name in ("a.txt", "b.txt", "c.txt"):
        put(graph, name, b"abc")
    mkdir(graph, "sub")
    first = graph.get("me/drive/root/children?%24select=name,folder&%24top=2").json
    assert [set(child) for child in first["value"]] == [{"id", "name"}] * 2
    second = graph.get(first["@odata.nextLink"]).json
    assert [set(child) for child in second["value"]] == [{"id", "name"}, {"id", "name", "folder"}]
    assert second["value"][1] == {**second["value"][1], "name": "sub", "folder": {"childCount": 0}}


def test_select_of_properties_the_host_has_not_leaves_them_out_rather_than_refusing(graph):
    """Clients select what Graph has and the host lacks (webUrl, ...): an answer without them, never a 400."""
    made = put(graph, "a.txt", b"abc").json
    response = graph.get("me/drive/root:/a.txt:?$select=id,name,webUrl,parentReference/path,,")
    assert response.status_int == 200, response
    assert set(response.json) == {"id", "name", "parentReference"}
    assert response.json["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:"
    assert graph.get("me/drive/root:/a.txt:?$select=*").json == graph.get("me/drive/root:/a.txt:").json
    assert graph.get("me/drive/root:/a.txt:?$select=").json == graph.get("me/drive/root:/a.txt:").json
    assert made["id"] == response.json["id"]


def test_the_download_url_comes_with_select_only_when_named(graph):
    """@microsoft.graph.downloadUrl is an annotation: with a $select, Graph sends it only if it is named."""
    made = put(graph, "a.txt", b"abc").json
    assert "@microsoft.graph.downloadUrl" not in graph.get(f"me/drive/items/{made['id']}?$select=id,name").json
    named = graph.get(f"me/drive/items/{made['id']}?$select=id,@microsoft.graph.downloadUrl").json
    assert set(named) == {"id", "@microsoft.graph.downloadUrl"}
    assert graph.get(named["@microsoft.graph.downloadUrl"]).body == b"abc"


def test_select_with_expand_children_keeps_the_children_shaped_by_their_own_select(graph):
    mkdir(graph, "docs")
    for name in ("a.txt", "b.txt"):
        put(graph, f"docs/{name}", b"abc")
    body = graph.get("me/drive/root:/docs:?$select=name&$expand=children($select=name,size)").json
    assert set(body) == {"id", "name", "children"}
    assert [set(child) for child in body["children"]] == [{"id", "name", "size"}] * 2
    whole = graph.get("me/drive/root:/docs:?$select=name&$expand=children").json
    assert set(whole["children"][0]) >= {"id", "name", "size", "eTag", "file", "parentReference"}


def test_select_on_a_drive(graph):
    drive = graph.get("me/drive?$select=id,quota").json
    assert set(drive) == {"id", "quota"} and drive["id"] == graph.drive_id
    assert [set(d) for d in graph.get("me/drives?$select=name").json["value"]] == [{"id", "name"}]


# -- {users|sites|groups}/{id}/drives ---------------------------------------------------------------------------


def _steady(drive: dict) -> dict:
    """A drive object without its quota, which follows the disk's free space (other writers share the disk)."""
    return {key: value for key, value in drive.items() if key != "quota"}


def test_a_site_or_group_lists_its_one_drive_and_a_user_their_drives(services, graph, graph_for):
    """GET /sites/{id}/drives is how the SDKs and rclone find a site's document libraries: here, the one shared
    drive of that id. users/{own id}/drives is me/drives."""
    site, group = services.drives.create_shared("site", "Team"), services.drives.create_shared("group", "Crew")
    for drive in (site, group):
        services.drives.add_member(drive.id, "alice")
    for kind, drive in (("sites", site), ("groups", group)):
        response = graph.get(f"{kind}/{drive.id}/drives")
        assert response.status_int == 200, response
        assert [d["id"] for d in response.json["value"]] == [drive.id]
        assert _steady(response.json["value"][0]) == _steady(graph.get(f"{kind}/{drive.id}/drive").json)
        assert graph.get(f"{kind}/{drive.id}/drives?$select=name").json == {
            "value": [{"id": drive.id, "name": drive.name}]
        }
    for path in ("users/alice/drives", "users/me/drives"):
        assert [_steady(d) for d in graph.get(path).json["value"]] == [
            _steady(d) for d in graph.get("me/drives").json["value"]
        ]
    assert graph_error(graph.get(f"groups/{site.id}/drives")) == ("itemNotFound", None)
    assert graph.get(f"groups/{site.id}/drives").status_int == 404
    assert graph.get("sites/nosuchsite/drives").status_int == 404
    bob = graph_for("bob")
    assert graph_error(bob.get(f"sites/{site.id}/drives"))[0] == "accessDenied"
    assert graph_error(bob.get("users/alice/drives"))[0] == "accessDenied"
    assert graph.post(f"sites/{site.id}/drives").status_int == 405
