"""Share links: WOPI GetShareUrl on files and containers, the browser page at /s/<link id>, Graph's
/shares/{shareId}/driveItem (read, list, download, and upload through a read-write link, checked again when
an upload lands), revocation, and `wopihost shares list|revoke`."""

from __future__ import annotations

import base64
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import webtest
from click.testing import CliRunner

from wopihost.app import create_app
from wopihost.cli import main
from wopihost.ids import new_id
from wopihost.models import File

from .helpers import TEST_SECRET, GraphClient, WopiClient, graph_error, stored_blobs, while_the_body_comes

PUBLIC = "https://wopi.example.test"
SHARE_PREFIX = f"{PUBLIC}/s/"
BOTH = ["ReadOnly", "ReadWrite"]


# -- helpers --------------------------------------------------------------------------------------


def ask_share_url(wopi: WopiClient, url_type: str | None):
    headers = {} if url_type is None else {"X_WOPI_UrlType": url_type}
    return wopi.op("GET_SHARE_URL", **headers)


def share_url(wopi: WopiClient, url_type: str = "ReadOnly") -> str:
    response = ask_share_url(wopi, url_type)
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    return response.json["ShareUrl"]


def local(url: str) -> str:
    """The path (and query) of an absolute URL of this host."""
    assert url.startswith(PUBLIC + "/"), url
    return url[len(PUBLIC) :]


def link_id(url: str) -> str:
    assert url.startswith(SHARE_PREFIX), url
    return url[len(SHARE_PREFIX) :]


def encoded(url: str) -> str:
    """Graph's share id for a sharing URL: u! + unpadded base64url."""
    return "u!" + base64.urlsafe_b64encode(url.encode("utf-8")).decode("ascii").rstrip("=")


def move(graph: GraphClient, item_id: str, folder_id: str) -> None:
    """alice moves an item of her drive into another folder."""
    moved = graph.patch_json(f"me/drive/items/{item_id}", {"parentReference": {"id": folder_id}})
    assert moved.status_int == 200, moved.body


def content_of(services, file_id: str) -> bytes:
    _, stream = services.files.open_content(file_id)
    with stream:
        return stream.read()


@dataclass
class Tree:
    """alice's drive:  outside.txt, Shared/{a & b.txt, Sub/deep.txt}, Private/secret.txt"""

    shared_file: File
    deep: File
    secret: File
    outside: File
    shared_folder: str
    sub_folder: str
    private_folder: str
    root_folder: str
    drive_id: str


@pytest.fixture
def tree(services) -> Tree:
    add = services.add_file
    shared_file = add("alice", "a & b.txt", io.BytesIO(b"shared bytes"), folder=["Shared"])
    deep = add("alice", "deep.txt", io.BytesIO(b"deep bytes"), folder=["Shared", "Sub"])
    secret = add("alice", "secret.txt", io.BytesIO(b"secret bytes"), folder=["Private"])
    outside = add("alice", "outside.txt", io.BytesIO(b"outside bytes"))
    return Tree(
        shared_file,
        deep,
        secret,
        outside,
        shared_file.folder_id,
        deep.folder_id,
        secret.folder_id,
        outside.folder_id,
        services.drives.personal("alice").id,
    )


def ancestors(services, testapp, file: File, folders: str) -> list[dict]:
    """EnumerateAncestors for alice's write token for a file, issued with `folders` rights on the containers
    above it."""
    token = services.issue_token(file.id, "alice", True, folders=folders).token
    response = testapp.get(f"/wopi/files/{file.id}/ancestry?access_token={token}", expect_errors=True)
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    return response.json["AncestorsWithRootFirst"]


def container_share(testapp, container_url: str, url_type: str | None):
    headers = {"X-WOPI-Override": "GET_SHARE_URL"}
    if url_type is not None:
        headers["X-WOPI-UrlType"] = url_type
    return testapp.post(local(container_url), b"", headers=headers, expect_errors=True)


@pytest.fixture
def folder_link(services, testapp, tree):
    """The share URL of the folder Shared, asked for through the container URL that EnumerateAncestors
    hands out."""

    def make(url_type: str = "ReadOnly") -> str:
        parent = ancestors(services, testapp, tree.shared_file, "lcmw")[-1]
        assert parent["Name"] == "Shared"
        response = container_share(testapp, parent["Url"], url_type)
        assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
        return response.json["ShareUrl"]

    return make


@pytest.fixture
def file_link(client_for, tree):
    """The share URL of Shared/a & b.txt, asked for with alice's write token."""

    def make(url_type: str = "ReadOnly") -> str:
        return share_url(client_for(tree.shared_file), url_type)

    return make


@pytest.fixture
def bob(graph_for) -> GraphClient:
    """A Graph client for bob, who is no member of alice's drive."""
    return graph_for("bob")


@pytest.fixture
def cli(settings):
    """`wopihost` in-process, on the same database and data directory as the app under test."""
    env = {
        "WOPIHOST_DATA_DIR": str(settings.data_dir),
        "WOPIHOST_DATABASE_URL": settings.database_url,
        "WOPIHOST_PUBLIC_URL": PUBLIC,
        "WOPIHOST_SECRET_KEY": TEST_SECRET,
        "WOPIHOST_CSPP_PLUS": "on",
        "WOPIHOST_SWEEP_INTERVAL": "0",
    }

    def run(*args: str, ok: bool = True):
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


# -- WOPI GetShareUrl on a file ---------------------------------------------------------------------


@pytest.mark.parametrize("url_type", BOTH)
def test_get_share_url_answers_an_absolute_url_under_the_share_path(wopi, testapp, services, url_type):
    response = ask_share_url(wopi, url_type)
    assert response.status_int == 200
    assert response.content_type == "application/json"
    assert set(response.json) == {"ShareUrl"}
    url = response.json["ShareUrl"]
    assert url.startswith(SHARE_PREFIX)
    assert "?" not in url and "access_token" not in url and wopi.token not in url
    [link] = services.shares.list(wopi.file_id)
    assert link.id == link_id(url) and link.url_type == url_type and link.created_by == "alice"
    page = testapp.get(local(url))
    assert page.status_int == 200 and "Doc.docx" in page.text
    assert ("view and edit" in page.text) == (url_type == "ReadWrite")


def test_asking_twice_gives_the_same_url_and_each_type_its_own(wopi, services, make_file, client_for):
    read_only = share_url(wopi, "ReadOnly")
    assert share_url(wopi, "ReadOnly") == read_only
    read_write = share_url(wopi, "ReadWrite")
    assert read_write != read_only and share_url(wopi, "ReadWrite") == read_write
    # a second token of the same user: still the same link
    again = client_for(services.files.get(wopi.file_id))
    assert share_url(again, "ReadOnly") == read_only
    assert len(services.shares.list(wopi.file_id)) == 2
    # another file, another link
    assert share_url(client_for(make_file(name="Other.docx")), "ReadOnly") != read_only


def test_each_user_gets_their_own_link_to_a_file(make_file, client_for, services):
    file = make_file()
    alices, bobs = share_url(client_for(file)), share_url(client_for(file, user="bob"))
    assert alices != bobs
    assert sorted(link.created_by for link in services.shares.list(file.id)) == ["alice", "bob"]


def test_racing_askers_get_one_link(make_file, services):
    file = make_file()
    start = threading.Barrier(8)

    def ask(_):
        start.wait()
        return services.shares.link(file.id, "ReadOnly", "alice").id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(ask, range(8)))
    assert len(ids) == 1
    assert [link.id for link in services.shares.list(file.id)] == list(ids)


def test_files_share_while_containers_are_off(settings, clock, tree):
    app = create_app(settings.with_changes(containers=False), clock)
    try:
        services, testapp = app.extensions["wopihost"], webtest.TestApp(app)
        wopi = WopiClient(
            testapp, tree.shared_file.id, services.issue_token(tree.shared_file.id, "alice", True, folders="lcmw").token
        )
        assert wopi.check_file_info().json["SupportedShareUrlTypes"] == BOTH
        assert testapp.get(local(share_url(wopi, "ReadWrite")) + "/content").body == b"shared bytes"
        container = services.issue_container_token(tree.shared_folder, "alice", "lcmw").token
        response = testapp.post(
            f"/wopi/containers/{tree.shared_folder}?access_token={container}",
            b"",
            headers={"X-WOPI-Override": "GET_SHARE_URL", "X-WOPI-UrlType": "ReadOnly"},
            expect_errors=True,
        )
        assert response.status_int == 501
        assert services.shares.list(tree.shared_folder) == []
    finally:
        app.extensions["wopihost"].db.dispose()


@pytest.mark.parametrize(
    "url_type", [None, "", "UnknownType", "readonly", "READWRITE", "Readwrite", "ReadOnly,ReadWrite", "Read Only"]
)
def test_get_share_url_refuses_a_missing_or_unknown_url_type_with_501(wopi, services, url_type):
    response = ask_share_url(wopi, url_type)
    assert response.status_int == 501
    assert response.headers["X-WOPI-FailureReason"]
    assert services.shares.list() == []


def test_a_read_only_token_gets_read_only_urls_only(make_file, client_for, services):
    reader = client_for(make_file(), can_write=False)
    response = ask_share_url(reader, "ReadWrite")
    assert response.status_int == 501
    assert response.headers["X-WOPI-FailureReason"]
    assert services.shares.list() == []
    url = share_url(reader, "ReadOnly")
    assert [link.url_type for link in services.shares.list()] == ["ReadOnly"]
    assert link_id(url)


def test_check_file_info_announces_the_share_url_types_the_token_may_ask_for(make_file, client_for):
    file = make_file()
    assert client_for(file).check_file_info().json["SupportedShareUrlTypes"] == BOTH
    assert client_for(file, can_write=False).check_file_info().json["SupportedShareUrlTypes"] == ["ReadOnly"]


def test_get_share_url_on_a_deleted_file_is_404(wopi, services):
    assert wopi.op("DELETE").status_int == 200
    response = ask_share_url(wopi, "ReadOnly")
    assert response.status_int == 404
    assert services.shares.list() == []


def test_get_share_url_with_a_bad_token_is_401(wopi, testapp, services):
    for token in ("not-a-token", wopi.token[:-2] + ("AA" if not wopi.token.endswith("AA") else "BB")):
        response = testapp.post(
            wopi.url(token=token),
            b"",
            headers={"X-WOPI-Override": "GET_SHARE_URL", "X-WOPI-UrlType": "ReadOnly"},
            expect_errors=True,
        )
        assert response.status_int == 401
    assert services.shares.list() == []


def test_a_token_for_another_file_cannot_share_this_one(wopi, make_file, services, testapp):
    other = services.issue_token(make_file(name="Other.docx").id, "alice", True).token
    response = testapp.post(
        wopi.url(token=other),
        b"",
        headers={"X-WOPI-Override": "GET_SHARE_URL", "X-WOPI-UrlType": "ReadOnly"},
        expect_errors=True,
    )
    assert response.status_int == 401
    assert services.shares.list() == []


def test_after_a_revoke_asking_again_gives_a_new_link_that_works(wopi, services, testapp):
    old = share_url(wopi)
    assert services.shares.revoke(link_id(old)) == 1
    new = share_url(wopi)
    assert new != old
    assert testapp.get(local(old), expect_errors=True).status_int == 404
    assert testapp.get(local(new)).status_int == 200


# -- WOPI GetShareUrl on a container ----------------------------------------------------------------


def test_container_share_url_through_the_urls_ancestry_hands_out(services, testapp, tree):
    [root, shared] = ancestors(services, testapp, tree.shared_file, "lcmw")
    assert shared["Name"] == "Shared"
    info = testapp.get(local(shared["Url"])).json
    assert info["SupportedShareUrlTypes"] == BOTH
    urls = {}
    for url_type in BOTH:
        response = container_share(testapp, shared["Url"], url_type)
        assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
        assert set(response.json) == {"ShareUrl"}
        urls[url_type] = response.json["ShareUrl"]
        assert urls[url_type].startswith(SHARE_PREFIX)
        assert container_share(testapp, shared["Url"], url_type).json["ShareUrl"] == urls[url_type]
    assert urls["ReadOnly"] != urls["ReadWrite"]
    links = services.shares.list(tree.shared_folder)
    assert sorted((link.id, link.url_type) for link in links) == sorted(
        (link_id(url), url_type) for url_type, url in urls.items()
    )
    page = testapp.get(local(urls["ReadOnly"]))
    assert "a &amp; b.txt" in page.text and "Sub/" in page.text


@pytest.mark.parametrize(
    "rights, types",
    # a read-write link to a folder also takes new files: "lw" cannot create them, so cannot share them
    [("lcmw", BOTH), ("lcw", BOTH), ("lw", ["ReadOnly"]), ("lc", ["ReadOnly"]), ("l", ["ReadOnly"]), ("cmw", [])],
)
def test_a_container_token_issued_directly_shares_by_its_rights(services, testapp, tree, rights, types):
    token = services.issue_container_token(tree.shared_folder, "alice", rights).token
    url = f"/wopi/containers/{tree.shared_folder}?access_token={token}"
    assert testapp.get(url).json["SupportedShareUrlTypes"] == types
    for url_type in BOTH:
        response = container_share(testapp, PUBLIC + url, url_type)
        assert response.status_int == (200 if url_type in types else 501)
    assert sorted(link.url_type for link in services.shares.list(tree.shared_folder)) == types


@pytest.mark.parametrize("url_type", [None, "UnknownType", "readwrite"])
def test_container_share_url_refuses_unknown_types(services, testapp, tree, url_type):
    shared = ancestors(services, testapp, tree.shared_file, "lcmw")[-1]
    response = container_share(testapp, shared["Url"], url_type)
    assert response.status_int == 501 and response.headers["X-WOPI-FailureReason"]
    assert services.shares.list() == []


@pytest.mark.parametrize("folders", ["", "c", "cmw"])
def test_a_container_token_without_the_list_right_cannot_share(services, testapp, tree, folders):
    shared = ancestors(services, testapp, tree.shared_file, folders)[-1]
    info = testapp.get(local(shared["Url"]))
    assert info.status_int == 200 and info.json["SupportedShareUrlTypes"] == []
    for url_type in BOTH:
        response = container_share(testapp, shared["Url"], url_type)
        assert response.status_int == 501 and response.headers["X-WOPI-FailureReason"]
    assert services.shares.list() == []


def test_a_container_token_that_lists_but_cannot_write_shares_read_only(services, testapp, tree):
    shared = ancestors(services, testapp, tree.shared_file, "l")[-1]
    assert testapp.get(local(shared["Url"])).json["SupportedShareUrlTypes"] == ["ReadOnly"]
    assert container_share(testapp, shared["Url"], "ReadWrite").status_int == 501
    assert container_share(testapp, shared["Url"], "ReadOnly").status_int == 200
    assert [link.url_type for link in services.shares.list(tree.shared_folder)] == ["ReadOnly"]


def test_container_share_url_of_a_deleted_container_is_404(services, testapp, tree, graph):
    shared = ancestors(services, testapp, tree.shared_file, "lcmw")[-1]
    services.tree.delete(tree.drive_id, tree.shared_folder)
    response = container_share(testapp, shared["Url"], "ReadOnly")
    assert response.status_int == 404
    assert services.shares.list() == []


# -- the browser page -------------------------------------------------------------------------------


def test_file_page_shows_the_escaped_name_and_a_download_link(tree, file_link, testapp):
    url = file_link()
    page = testapp.get(local(url))
    assert page.status_int == 200 and page.content_type == "text/html"
    assert "<h1>a &amp; b.txt</h1>" in page.text
    assert "a & b.txt" not in page.text
    assert f'href="{url}/content"' in page.text
    assert "12 bytes" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]  # no other site frames it


def test_a_share_url_with_a_slash_after_it_opens_the_page(tree, file_link, folder_link, testapp):
    """Graph and `wopihost shares revoke` read `https://host/s/{id}/` as the link; the page was a 404."""
    for url, title in ((file_link(), "a &amp; b.txt"), (folder_link(), "Shared")):
        page = testapp.get(local(url) + "/")
        assert page.status_int == 200 and f"<h1>{title}</h1>" in page.text
        assert f'href="{url}/' in page.text  # its links are the link's own, without the slash
    assert testapp.get(local(file_link()) + "/content/", expect_errors=True).status_int == 404


def test_a_path_with_doubled_slashes_is_no_redirect_that_repeats_its_credential(
    tree, file_link, client_for, testapp, graph_for
):
    """Werkzeug answered `/s/{id}//`, `/wopi//files/{id}?access_token=...` with its own 308 to the merged path:
    the link's id or the token in Location and in the body, cacheable, without the pages' headers."""
    link = local(file_link())
    wopi = client_for(tree.shared_file)
    for path in (
        link + "//",
        link.replace("/s/", "/s//"),
        f"/wopi//files/{tree.shared_file.id}?access_token={wopi.token}",
    ):
        answer = testapp.get(path, expect_errors=True)
        assert answer.status_int == 404 and "Location" not in answer.headers, path
        assert link.rsplit("/", 1)[1] not in answer.text and wopi.token not in answer.text
    # Graph's, after the version, are one: msgraph-sdk's adapter sends `/v1.0//me/drive` given a base URL ending
    # in a slash (GraphClientFactory's `host=`), and followed the redirect it got
    drive = graph_for("alice", prefix="/v1.0/").get("me/drive")
    assert drive.status_int == 200 and drive.json["driveType"] == "personal"


def test_file_content_is_the_exact_bytes_as_an_attachment_with_ranges(make_file, client_for, testapp):
    content = bytes(range(256)) * 4
    file = make_file(content, "Tom & Jerry.bin")
    url = share_url(client_for(file))
    download = testapp.get(local(url) + "/content")
    assert download.status_int == 200 and download.body == content
    assert download.content_type == "application/octet-stream"
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert 'filename="Tom & Jerry.bin"' in disposition
    assert "filename*=UTF-8''Tom%20%26%20Jerry.bin" in disposition
    assert download.headers["Accept-Ranges"] == "bytes"
    part = testapp.get(local(url) + "/content", headers={"Range": "bytes=10-19"})
    assert part.status_int == 206 and part.body == content[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(content)}"
    tail = testapp.get(local(url) + "/content", headers={"Range": "bytes=-5"})
    assert tail.status_int == 206 and tail.body == content[-5:]
    beyond = testapp.get(local(url) + "/content", headers={"Range": f"bytes={len(content)}-"}, expect_errors=True)
    assert beyond.status_int == 416


def test_file_content_of_a_non_ascii_name_and_conditional_requests(make_file, client_for, testapp):
    url = local(share_url(client_for(make_file(b"cv", "R\u00e9sum\u00e9 & co.txt"))))
    download = testapp.get(url + "/content")
    assert download.headers["Content-Disposition"] == (
        "attachment; filename=\"R_sum_ & co.txt\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%26%20co.txt"
    )
    assert "<h1>R\u00e9sum\u00e9 &amp; co.txt</h1>" in testapp.get(url).text
    etag = download.headers["ETag"]
    assert testapp.get(url + "/content", headers={"If-None-Match": etag}).status_int == 304
    head = testapp.head(url + "/content")
    assert head.status_int == 200 and head.headers["Content-Length"] == "2" and head.body == b""


def test_file_content_follows_the_file_as_it_changes(make_file, client_for, testapp):
    file = make_file(b"first")
    wopi = client_for(file)
    url = share_url(wopi)
    assert testapp.get(local(url) + "/content").body == b"first"
    assert wopi.lock("L1").status_int == 200
    assert wopi.put_file(b"second version", lock="L1").status_int == 200
    assert testapp.get(local(url) + "/content").body == b"second version"


def test_folder_page_lists_folders_and_files_and_opens_subfolders(tree, folder_link, testapp):
    url = folder_link()
    base = local(url)
    page = testapp.get(base)
    assert page.status_int == 200 and page.content_type == "text/html"
    assert "<h1>Shared</h1>" in page.text
    assert f'href="{url}/folders/{tree.sub_folder}">Sub/</a>' in page.text
    shared_row = f'href="{url}/files/{tree.shared_file.id}/content" download>a &amp; b.txt</a> (12 bytes)'
    assert shared_row in page.text
    for hidden in ("secret.txt", "Private", "outside.txt", "deep.txt"):
        assert hidden not in page.text
    sub = testapp.get(f"{base}/folders/{tree.sub_folder}")
    assert sub.status_int == 200
    assert "<h1>Sub</h1>" in sub.text
    assert f'href="{url}/files/{tree.deep.id}/content" download>deep.txt</a>' in sub.text
    download = testapp.get(f"{base}/files/{tree.deep.id}/content")
    assert download.body == b"deep bytes"
    assert download.headers["Content-Disposition"].startswith('attachment; filename="deep.txt"')
    assert testapp.get(f"{base}/files/{tree.shared_file.id}/content").body == b"shared bytes"
    part = testapp.get(f"{base}/files/{tree.deep.id}/content", headers={"Range": "bytes=0-3"})
    assert part.status_int == 206 and part.body == b"deep"
    # the folder link itself names no file
    assert testapp.get(f"{base}/content", expect_errors=True).status_int == 404
    # the shared folder by its own id
    assert "<h1>Shared</h1>" in testapp.get(f"{base}/folders/{tree.shared_folder}").text


def test_an_empty_shared_folder_says_so(services, testapp):
    file = services.add_file("alice", "x.txt", io.BytesIO(b"x"), folder=["Empty", "Inner"])
    parent = ancestors(services, testapp, file, "lcmw")[-2]
    assert parent["Name"] == "Empty"
    url = container_share(testapp, parent["Url"], "ReadOnly").json["ShareUrl"]
    services.files.delete(file.id)
    page = testapp.get(local(url))
    assert f'href="{url}/folders/{file.folder_id}">Inner/</a>' in page.text
    assert "(empty)" not in page.text
    assert "<li>(empty)</li>" in testapp.get(f"{local(url)}/folders/{file.folder_id}").text


def test_items_outside_the_shared_folder_are_not_found_through_the_link(tree, folder_link, testapp, services):
    base = local(folder_link())
    outside = [
        f"{base}/folders/{tree.private_folder}",
        f"{base}/folders/{tree.root_folder}",
        f"{base}/files/{tree.secret.id}/content",
        f"{base}/files/{tree.outside.id}/content",
        f"{base}/folders/{new_id()}",
        f"{base}/files/{new_id()}/content",
        f"{base}/folders/nope",
        f"{base}/files/nope/content",
        f"{base}/files/{tree.sub_folder}/content",
        f"{base}/folders/{tree.deep.id}",
    ]
    for path in outside:
        response = testapp.get(path, expect_errors=True)
        assert response.status_int == 404, path
        assert b"secret bytes" not in response.body and b"outside bytes" not in response.body
    # another user's drive too
    bobs = services.add_file("bob", "bob.txt", io.BytesIO(b"bob's"), folder=["B"])
    assert testapp.get(f"{base}/files/{bobs.id}/content", expect_errors=True).status_int == 404
    assert testapp.get(f"{base}/folders/{bobs.folder_id}", expect_errors=True).status_int == 404


def test_a_subfolder_moved_out_of_the_shared_folder_is_out_of_reach(tree, folder_link, testapp, graph):
    base = local(folder_link())
    assert testapp.get(f"{base}/folders/{tree.sub_folder}").status_int == 200
    move(graph, tree.sub_folder, tree.private_folder)
    assert testapp.get(f"{base}/folders/{tree.sub_folder}", expect_errors=True).status_int == 404
    assert testapp.get(f"{base}/files/{tree.deep.id}/content", expect_errors=True).status_int == 404
    assert "Sub/" not in testapp.get(base).text


def test_a_file_link_reaches_only_its_file(tree, file_link, testapp, services):
    base = local(file_link())
    sibling = services.add_file("alice", "sibling.txt", io.BytesIO(b"sibling bytes"), folder=["Shared"])
    assert sibling.folder_id == tree.shared_folder
    for other in (sibling.id, tree.deep.id, tree.secret.id, tree.outside.id):
        response = testapp.get(f"{base}/files/{other}/content", expect_errors=True)
        assert response.status_int == 404
    # nor any folder: its file's page under a folder id (its own folder's, or none at all) was a 200
    for folder in (tree.shared_folder, tree.private_folder, new_id(), "nope"):
        response = testapp.get(f"{base}/folders/{folder}", expect_errors=True)
        assert response.status_int == 404 and "a &amp; b.txt" not in response.text, folder
    assert testapp.get(f"{base}/content").body == b"shared bytes"


@pytest.mark.parametrize("link", ["{new}", "nope", "{new}x", "{new}/x"])
def test_an_unknown_link_is_not_found(testapp, link):
    link = link.format(new=new_id())
    for suffix in ("", "/content", f"/folders/{new_id()}", f"/files/{new_id()}/content"):
        assert testapp.get(f"/s/{link}{suffix}", expect_errors=True).status_int == 404


def test_a_revoked_link_is_not_found(tree, file_link, folder_link, testapp, services):
    urls = [file_link(), folder_link()]
    for url in urls:
        assert testapp.get(local(url)).status_int == 200
    for url in urls:
        assert services.shares.revoke(link_id(url)) == 1
        assert services.shares.revoke(link_id(url)) == 0  # already revoked
    file_base, folder_base = (local(url) for url in urls)
    for path in (
        file_base,
        f"{file_base}/content",
        folder_base,
        f"{folder_base}/folders/{tree.sub_folder}",
        f"{folder_base}/files/{tree.deep.id}/content",
    ):
        response = testapp.get(path, expect_errors=True)
        assert response.status_int == 404, path
        assert b"shared bytes" not in response.body and b"deep bytes" not in response.body


def test_revoking_by_item_revokes_every_link_to_it(tree, file_link, folder_link, testapp, services):
    read_only, read_write, folder = file_link("ReadOnly"), file_link("ReadWrite"), folder_link()
    assert services.shares.revoke(item_id=tree.shared_file.id) == 2
    assert testapp.get(local(read_only), expect_errors=True).status_int == 404
    assert testapp.get(local(read_write), expect_errors=True).status_int == 404
    assert testapp.get(local(folder)).status_int == 200


def test_a_link_revoked_with_the_cli_is_not_found(tree, file_link, testapp, cli):
    url = file_link()
    assert testapp.get(local(url) + "/content").body == b"shared bytes"
    assert "revoked 1 share link" in cli("shares", "revoke", url).output
    assert testapp.get(local(url), expect_errors=True).status_int == 404
    assert testapp.get(local(url) + "/content", expect_errors=True).status_int == 404


def test_a_deleted_shared_file_or_folder_is_not_found(tree, file_link, folder_link, testapp, services, client_for):
    file_url, folder_url = file_link(), folder_link()
    assert client_for(tree.shared_file).op("DELETE").status_int == 200
    assert testapp.get(local(file_url), expect_errors=True).status_int == 404
    services.add_file("alice", "a & b.txt", io.BytesIO(b"a namesake"), folder=["Shared"])  # a new file
    assert testapp.get(local(file_url), expect_errors=True).status_int == 404
    assert testapp.get(local(file_url) + "/content", expect_errors=True).status_int == 404
    # the folder's other file is still there, the deleted one is gone from it
    folder_page = testapp.get(local(folder_url))
    assert "a namesake" not in folder_page.text and "Sub/" in folder_page.text
    assert tree.shared_file.id not in folder_page.text
    assert testapp.get(f"{local(folder_url)}/files/{tree.shared_file.id}/content", expect_errors=True).status_int == 404
    services.tree.delete(tree.drive_id, tree.shared_folder)
    for path in (
        local(folder_url),
        f"{local(folder_url)}/folders/{tree.sub_folder}",
        f"{local(folder_url)}/files/{tree.deep.id}/content",
    ):
        assert testapp.get(path, expect_errors=True).status_int == 404, path


# -- the browser page's errors: a page that says what went wrong ----------------------------------------

PAGE_HEADERS = ("Content-Security-Policy", "Cache-Control", "Referrer-Policy", "X-Content-Type-Options")


def assert_error_page(response, status: int, message: str, like) -> None:
    """A small HTML page saying `message`, with the status and the security headers of the page `like`."""
    assert response.status_int == status, response.body
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert message in response.text, response.text
    assert response.text.startswith("<!doctype html>") and "<script" not in response.text.lower()
    for name in PAGE_HEADERS:
        assert response.headers[name] == like.headers[name], name
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "case, status, message",
    [
        ("unknown link", 404, "No such share link, or it has been revoked."),
        ("revoked link", 404, "No such share link, or it has been revoked."),
        ("deleted file", 404, "The shared item no longer exists."),
        ("outside the share", 404, "No such item here."),
        ("folder content", 404, "A shared folder has no content of its own."),
        ("path of no page", 404, "The requested URL was not found on the server."),
        ("POST", 405, "The method is not allowed for the requested URL."),
        ("range beyond the file", 416, "The server cannot provide the requested range."),
    ],
)
def test_a_share_pages_error_is_a_page_that_says_what_went_wrong(
    tree, file_link, folder_link, testapp, services, client_for, case, status, message
):
    """A browser shows an empty error body as a blank page: the person who opened the link learnt nothing."""
    file_url, folder_url = file_link(), folder_link()
    ok = testapp.get(local(file_url))  # the page it stands in for
    secret_query = "?access_token=SECRET-TOKEN&x=%3Cscript%3Ealert(1)%3C/script%3E"
    method, path, headers = "GET", local(file_url), {}
    if case == "unknown link":
        path = f"/s/{new_id()}"
    elif case == "revoked link":
        services.shares.revoke(link_id(file_url))
    elif case == "deleted file":
        assert client_for(tree.shared_file).op("DELETE").status_int == 200
    elif case == "outside the share":
        path = f"{local(folder_url)}/files/{tree.secret.id}/content"
    elif case == "folder content":
        path = f"{local(folder_url)}/content"
    elif case == "path of no page":
        path = f"{local(file_url)}/%3Cscript%3Ealert(1)%3C/script%3E"
    elif case == "POST":
        method = "POST"
    else:
        path, headers = f"{local(file_url)}/content", {"Range": "bytes=100-"}
    response = testapp.request(path + secret_query, method=method, headers=headers, expect_errors=True)
    assert_error_page(response, status, message, ok)
    for echoed in ("SECRET-TOKEN", "<script>", link_id(file_url), link_id(folder_url), "secret bytes"):
        assert echoed not in response.text  # neither what the client sent nor the link, the credential
    if case == "POST":
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}
    if case == "range beyond the file":
        assert response.headers["Content-Range"] == "bytes */12"


def test_options_on_a_share_page_is_a_method_it_does_not_take(testapp, tree, file_link, folder_link):
    """Flask's automatic OPTIONS answered 200 with none of the pages' headers (no CSP, no frame-ancestors, no
    Cache-Control); the pages have no CORS to preflight: 405 as for any method they do not take."""
    file_url, folder_url = local(file_link()), local(folder_link())
    ok = testapp.get(file_url)
    for path in (
        file_url,
        file_url + "/",
        file_url + "/content",
        f"{folder_url}/folders/{tree.sub_folder}",
        f"{folder_url}/files/{tree.deep.id}/content",
        f"/s/{new_id()}",
    ):
        response = testapp.request(path, method="OPTIONS", expect_errors=True)
        assert_error_page(response, 405, "The method is not allowed for the requested URL.", ok)
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}, path


def test_a_share_page_head_gets_the_error_pages_headers(testapp, tree, file_link):
    ok = testapp.get(local(file_link()))
    response = testapp.head(f"/s/{new_id()}", expect_errors=True)
    assert response.status_int == 404 and response.body == b""
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    for name in PAGE_HEADERS:
        assert response.headers[name] == ok.headers[name], name


def test_a_share_page_whose_database_cannot_serve_says_try_again_later(tmp_path, settings, clock):
    """A database that does not answer: 503 with Retry-After, as every 503 of the app, in a page."""
    app = create_app(settings.with_changes(database_url="postgresql+psycopg://postgres@127.0.0.1:1/test"), clock)
    try:
        response = webtest.TestApp(app).get(f"/s/{new_id()}", expect_errors=True)
        assert response.status_int == 503 and int(response.headers["Retry-After"]) > 0
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "<h1>Try again later</h1>" in response.text and "database" in response.text
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
    finally:
        app.extensions["wopihost"].db.dispose()


def test_share_urls_are_not_wopi_access_tokens(wopi, testapp):
    url = share_url(wopi, "ReadWrite")
    for token in (link_id(url), url, encoded(url)):
        for path in (wopi.url(token=token), wopi.url("/contents", token=token)):
            assert testapp.get(path, expect_errors=True).status_int == 401
        response = testapp.post(
            wopi.url("/contents", token=token), b"overwritten", headers={"X-WOPI-Override": "PUT"}, expect_errors=True
        )
        assert response.status_int == 401
    assert wopi.get_file().body == b"hello world"


# -- Graph: reading through a link ------------------------------------------------------------------


def test_bob_is_no_member_of_alices_drive(bob, tree):
    response = bob.get(f"drives/{tree.drive_id}/items/{tree.shared_file.id}")
    assert response.status_int == 403 and graph_error(response) == ("accessDenied", None)


def test_graph_resolves_a_file_link_by_id_and_by_encoded_url(bob, tree, file_link):
    url = file_link()
    for share_id in (link_id(url), encoded(url)):
        response = bob.get(f"shares/{share_id}/driveItem")
        assert response.status_int == 200, response.body
        item = response.json
        assert item["id"] == tree.shared_file.id and item["name"] == "a & b.txt" and item["size"] == 12
        assert "file" in item and "folder" not in item
        assert "@microsoft.graph.downloadUrl" not in item  # it would check bob's membership of the drive
        content = bob.get(f"shares/{share_id}/driveItem/content")
        assert content.status_int == 200 and content.body == b"shared bytes"
        part = bob.get(f"shares/{share_id}/driveItem/content", headers={"Range": "bytes=7-11"})
        assert part.status_int == 206 and part.body == b"bytes"


def test_graph_share_id_as_the_url_itself_or_with_other_prefixes(graph_for, tree, file_link):
    url = file_link()
    for prefix in ("/v1.0", "/v2.0"):
        client = graph_for("bob", prefix=prefix)
        assert client.get(f"shares/{encoded(url)}/driveItem").json["id"] == tree.shared_file.id


def test_graph_answers_through_a_link_name_no_folder_above_what_it_shares(services, client_for, bob, graph_for):
    """The link reaches nothing outside the item it shares, and shows no name of it: a driveItem's
    parentReference.path gave bob the names of every folder of alice's above the file (HR/Layoffs 2026/...)."""
    file = services.add_file("alice", "offer.docx", io.BytesIO(b"x"), folder=["HR", "Layoffs 2026", "Letters"])
    share_id = link_id(share_url(client_for(file), "ReadWrite"))
    item = bob.get(f"shares/{share_id}/driveItem").json
    assert "path" not in item["parentReference"] and item["parentReference"]["id"] == file.folder_id
    assert "Layoffs" not in json.dumps(item)
    put = bob.put(f"shares/{share_id}/driveItem/content", b"new")
    assert put.status_int == 200 and "Layoffs" not in put.text
    own = graph_for("alice").get(f"me/drive/items/{file.id}").json  # a member of the drive still sees it
    assert own["parentReference"]["path"].endswith("/root:/HR/Layoffs%202026/Letters")


@pytest.mark.parametrize("finish", ["last fragment", "repeated", "deferred"])
def test_an_upload_session_through_a_link_answers_with_no_folder_above_what_it_shares(
    services, client_for, bob, graph_for, finish
):
    """As every answer through a link: the driveItem the upload URL answers with once the session has become
    the file gave bob parentReference.path, the names of alice's folders above the file (HR/Layoffs 2026/...)."""
    file = services.add_file("alice", "offer.docx", io.BytesIO(b"x"), folder=["HR", "Layoffs 2026", "Letters"])
    share_id = link_id(share_url(client_for(file), "ReadWrite"))
    body = {"deferCommit": True} if finish == "deferred" else {}
    created = bob.post_json(f"shares/{share_id}/driveItem/createUploadSession", body)
    assert created.status_int == 200, created.body
    upload_url = created.json["uploadUrl"]
    answer = bob.upload(upload_url, b"new", 0, 3)
    if finish == "repeated":
        answer = bob.upload(upload_url, b"new", 0, 3)
    elif finish == "deferred":
        assert answer.status_int == 202
        answer = bob.testapp.post(bob.url(upload_url), b"", expect_errors=True)
    assert answer.status_int == 200, answer.body
    assert answer.json["id"] == file.id and answer.json["parentReference"]["id"] == file.folder_id
    assert "path" not in answer.json["parentReference"] and "Layoffs" not in answer.text
    own = graph_for("alice").get(f"me/drive/items/{file.id}").json  # a member of the drive still sees it
    assert own["parentReference"]["path"].endswith("/root:/HR/Layoffs%202026/Letters")


def test_graph_lists_a_folder_link_and_addresses_paths_below_it(bob, tree, folder_link):
    url = folder_link()
    for share_id in (link_id(url), encoded(url)):
        folder = bob.get(f"shares/{share_id}/driveItem")
        assert folder.status_int == 200
        assert folder.json["id"] == tree.shared_folder and folder.json["name"] == "Shared"
        assert folder.json["folder"]["childCount"] == 2
        children = bob.get(f"shares/{share_id}/driveItem/children")
        assert children.status_int == 200
        assert sorted((c["name"], c["id"]) for c in children.json["value"]) == sorted(
            [("Sub", tree.sub_folder), ("a & b.txt", tree.shared_file.id)]
        )
        deep = bob.get(f"shares/{share_id}/driveItem:/Sub/deep.txt:")
        assert deep.status_int == 200, deep.body
        assert deep.json["id"] == tree.deep.id and deep.json["size"] == 10
        assert bob.get(f"shares/{share_id}/driveItem:/Sub/deep.txt:/content").body == b"deep bytes"
        sub = bob.get(f"shares/{share_id}/driveItem:/Sub:/children")
        assert [c["name"] for c in sub.json["value"]] == ["deep.txt"]
        # a folder has no content
        assert bob.get(f"shares/{share_id}/driveItem/content").status_int == 400


def test_graph_paths_cannot_leave_the_shared_folder(bob, tree, folder_link):
    share_id = link_id(folder_link())
    for path in ("../Private/secret.txt", "..", "../outside.txt", "Private/secret.txt", "nope.txt"):
        response = bob.get(f"shares/{share_id}/driveItem:/{path}:")
        assert response.status_int in (400, 404), path
        assert b"secret" not in response.body
        assert bob.get(f"shares/{share_id}/driveItem:/{path}:/content").status_int in (400, 404), path


def test_graph_file_link_has_nothing_below_it(bob, tree, file_link):
    share_id = link_id(file_link())
    for path in ("deep.txt", "a & b.txt", "x"):
        response = bob.get(f"shares/{share_id}/driveItem:/{path}:")
        assert response.status_int == 404 and graph_error(response)[0] == "itemNotFound"
    response = bob.get(f"shares/{share_id}/driveItem/children")
    assert response.status_int == 400 and graph_error(response)[0] == "invalidRequest"


def test_graph_children_of_a_folder_link_page_through_next_links(bob, tree, folder_link):
    url = folder_link()
    for share_id in (link_id(url), encoded(url)):
        first = bob.get(f"shares/{share_id}/driveItem/children?$top=1")
        assert len(first.json["value"]) == 1
        following = bob.get(first.json["@odata.nextLink"])
        assert following.status_int == 200, following.body
        assert "@odata.nextLink" not in following.json
        names = {first.json["value"][0]["name"], following.json["value"][0]["name"]}
        assert names == {"Sub", "a & b.txt"}


def test_graph_answers_404_for_unknown_or_revoked_shares(bob, tree, file_link, services):
    url = file_link()
    unknown = [
        new_id(),
        "nope",
        encoded(f"{PUBLIC}/s/{new_id()}"),
        encoded(f"https://other.example/s/{link_id(url)}"),
        "u!!!!",
        "u!" + "A" * 7,
    ]
    for share_id in unknown:
        response = bob.get(f"shares/{share_id}/driveItem")
        assert response.status_int == 404, share_id
        assert graph_error(response)[0] == "itemNotFound"
    services.shares.revoke(link_id(url))
    for share_id in (link_id(url), encoded(url)):
        for suffix in ("", "/content"):
            response = bob.get(f"shares/{share_id}/driveItem{suffix}")
            assert response.status_int == 404
            assert graph_error(response)[0] == "itemNotFound"


def test_graph_answers_404_for_a_deleted_shared_item(bob, tree, file_link, folder_link, services):
    file_url, folder_url = file_link(), folder_link()
    services.files.delete(tree.shared_file.id)
    response = bob.get(f"shares/{link_id(file_url)}/driveItem")
    assert response.status_int == 404 and graph_error(response)[0] == "itemNotFound"
    services.tree.delete(tree.drive_id, tree.shared_folder)
    response = bob.get(f"shares/{link_id(folder_url)}/driveItem/children")
    assert response.status_int == 404 and graph_error(response)[0] == "itemNotFound"


def test_graph_shares_need_an_api_token(testapp, tree, file_link, bob, wopi):
    url = file_link()
    anonymous = GraphClient(testapp, None, "")
    for share_id in (link_id(url), encoded(url)):
        response = anonymous.get(f"shares/{share_id}/driveItem")
        assert response.status_int == 401 and graph_error(response)[0] == "unauthenticated"
        assert anonymous.get(f"shares/{share_id}/driveItem/content").status_int == 401
    # neither the link nor a WOPI token is an API token
    for token in (link_id(url), url, wopi.token):
        response = GraphClient(testapp, token, "").get(f"shares/{link_id(url)}/driveItem")
        assert response.status_int == 401


def test_graph_share_path_must_name_the_drive_item(bob, file_link):
    share_id = link_id(file_link())
    for suffix in ("", "/root", "/items"):
        assert bob.get(f"shares/{share_id}{suffix}").status_int == 404


# -- Graph: a read-only link cannot write -----------------------------------------------------------


def test_a_read_only_file_link_cannot_write(bob, tree, file_link, services):
    url = file_link("ReadOnly")
    for share_id in (link_id(url), encoded(url)):
        response = bob.put(f"shares/{share_id}/driveItem/content", b"overwritten")
        assert response.status_int == 403
        assert graph_error(response)[0] == "accessDenied"
        response = bob.post_json(f"shares/{share_id}/driveItem/createUploadSession", {})
        assert response.status_int == 403
        assert graph_error(response)[0] == "accessDenied"
    file = services.files.get(tree.shared_file.id)
    assert file.version == tree.shared_file.version
    assert content_of(services, tree.shared_file.id) == b"shared bytes"
    assert services.sessions.list() == []


def test_a_read_only_folder_link_cannot_add_files(bob, tree, folder_link, services, graph):
    share_id = link_id(folder_link("ReadOnly"))
    response = bob.put(f"shares/{share_id}/driveItem:/new.txt:/content", b"new")
    assert response.status_int == 403 and graph_error(response)[0] == "accessDenied"
    response = bob.post_json(f"shares/{share_id}/driveItem:/Sub/new.txt:/createUploadSession", {})
    assert response.status_int == 403 and graph_error(response)[0] == "accessDenied"
    response = bob.put(f"shares/{share_id}/driveItem:/Sub/deep.txt:/content", b"changed")
    assert response.status_int == 403 and graph_error(response)[0] == "accessDenied"
    assert graph.get("me/drive/root:/Shared/new.txt").status_int == 404
    assert graph.get("me/drive/root:/Shared/Sub/new.txt").status_int == 404
    assert content_of(services, tree.deep.id) == b"deep bytes"


@pytest.mark.parametrize("url_type", BOTH)
def test_no_link_renames_deletes_or_makes_folders(bob, tree, file_link, folder_link, graph, url_type):
    file_id, folder_id = link_id(file_link(url_type)), link_id(folder_link(url_type))
    for share_id in (file_id, folder_id):
        response = bob.patch_json(f"shares/{share_id}/driveItem", {"name": "renamed.txt"})
        assert response.status_int == 405 and graph_error(response)[0] == "notSupported"
        response = bob.delete(f"shares/{share_id}/driveItem")
        assert response.status_int == 405 and graph_error(response)[0] == "notSupported"
        assert response.headers["Allow"] == "GET, HEAD"
    response = bob.post_json(f"shares/{folder_id}/driveItem/children", {"name": "made", "folder": {}})
    assert response.status_int == 405 and graph_error(response)[0] == "notSupported"
    assert response.headers["Allow"] == "GET, HEAD"
    response = bob.delete(f"shares/{folder_id}/driveItem:/Sub/deep.txt:")
    assert response.status_int == 405 and graph_error(response)[0] == "notSupported"
    response = bob.get(f"shares/{file_id}/driveItem/workbook/worksheets")
    assert response.status_int == 405 and graph_error(response)[0] == "notSupported"
    response = bob.put_json(
        f"shares/{folder_id}/driveItem:/moved.txt:",
        {"@microsoft.graph.sourceUrl": f"{PUBLIC}/v1.0/uploadSessions/{new_id()}"},
    )
    assert response.status_int == 405 and graph_error(response)[0] == "notSupported"
    assert graph.get(f"me/drive/items/{tree.shared_file.id}").json["name"] == "a & b.txt"
    assert graph.get(f"me/drive/items/{tree.shared_folder}").json["name"] == "Shared"
    assert graph.get(f"me/drive/items/{tree.deep.id}").status_int == 200
    assert graph.get("me/drive/root:/Shared/made").status_int == 404


# -- Graph: writing through a read-write link -------------------------------------------------------


def test_a_read_write_file_link_uploads_new_content_in_a_session(bob, tree, file_link, services, client_for):
    url = file_link("ReadWrite")
    before = services.files.get(tree.shared_file.id)
    created = bob.post_json(f"shares/{encoded(url)}/driveItem/createUploadSession", {})
    assert created.status_int == 200, created.body
    upload_url = created.json["uploadUrl"]
    assert upload_url.startswith(f"{PUBLIC}/v1.0/uploadSessions/")
    content = b"new content, sent in two fragments"
    first = bob.upload(upload_url, content[:10], 0, len(content))
    assert first.status_int == 202
    assert content_of(services, tree.shared_file.id) == b"shared bytes"  # not yet
    last = bob.upload(upload_url, content[10:], 10, len(content))
    assert last.status_int == 200, last.body
    assert last.json["id"] == tree.shared_file.id and last.json["size"] == len(content)
    after = services.files.get(tree.shared_file.id)
    assert after.version == before.version + 1
    assert content_of(services, tree.shared_file.id) == content
    wopi = client_for(after)
    assert wopi.get_file().body == content
    assert wopi.check_file_info().json["Version"] == str(before.version + 1)
    assert bob.get(f"shares/{link_id(url)}/driveItem/content").body == content


def test_a_session_made_through_a_link_and_refused_at_completion_commits_into_the_users_own_drive(
    bob, graph, tree, folder_link, services
):
    """docs/graph.md 4.2, 4.4: a fail conflict does not lose the upload, the bytes can be committed with
    @microsoft.graph.sourceUrl into the committer's drive, whatever the session was made for. Through a link
    the sourceUrl commit (not a link's operation) was checked against the link, which does not reach bob's own
    drive: 403, and the bytes could only be given up."""
    share_id = link_id(folder_link("ReadWrite"))
    conflict = {"item": {"@microsoft.graph.conflictBehavior": "fail"}}
    created = bob.post_json(f"shares/{share_id}/driveItem:/Sub/deep.txt:/createUploadSession", conflict)
    upload_url = created.json["uploadUrl"]
    refused = bob.upload(upload_url, b"bob's bytes", 0, 11)
    assert refused.status_int == 409 and graph_error(refused)[0] == "nameAlreadyExists"
    committed = bob.put_json("me/drive/root:/mine.txt", {"@microsoft.graph.sourceUrl": upload_url})
    assert committed.status_int == 201, committed.body
    assert committed.json["parentReference"]["driveId"] == bob.drive_id
    assert bob.get("me/drive/root:/mine.txt:/content").body == b"bob's bytes"
    assert content_of(services, tree.deep.id) == b"deep bytes"
    again = bob.put_json("me/drive/root:/mine.txt", {"@microsoft.graph.sourceUrl": upload_url})  # a retry
    assert again.status_int == 200 and again.json["id"] == committed.json["id"], again.body
    repeated = bob.upload(upload_url, b"bob's bytes", 0, 11)  # the final fragment again: bob's own file
    assert repeated.status_int == 200 and repeated.json["id"] == committed.json["id"], repeated.body
    assert repeated.json["parentReference"]["path"] == f"/drives/{bob.drive_id}/root:"


def test_a_read_write_file_link_takes_a_simple_upload(bob, tree, file_link, services):
    share_id = link_id(file_link("ReadWrite"))
    response = bob.put(f"shares/{share_id}/driveItem/content", b"simply replaced")
    assert response.status_int == 200, response.body
    assert response.json["id"] == tree.shared_file.id
    assert content_of(services, tree.shared_file.id) == b"simply replaced"
    assert services.files.get(tree.shared_file.id).version == tree.shared_file.version + 1


def test_a_read_write_folder_link_takes_a_simple_upload_of_a_new_file(bob, graph, tree, folder_link, services):
    share_id = link_id(folder_link("ReadWrite"))
    response = bob.put(f"shares/{share_id}/driveItem:/Sub/simple.txt:/content", b"simple")
    assert response.status_int == 201, response.body
    assert response.json["parentReference"]["id"] == tree.sub_folder
    made = graph.get("me/drive/root:/Shared/Sub/simple.txt")
    assert made.status_int == 200 and made.json["id"] == response.json["id"]
    assert content_of(services, made.json["id"]) == b"simple"


def test_a_read_write_folder_link_uploads_a_new_file_into_the_folder(bob, graph, tree, folder_link, services):
    share_id = link_id(folder_link("ReadWrite"))
    content = b"a new file by path"
    for path, folder in (("new.txt", tree.shared_folder), ("Sub/new.txt", tree.sub_folder)):
        created = bob.post_json(f"shares/{share_id}/driveItem:/{path}:/createUploadSession", {})
        assert created.status_int == 200, created.body
        answer = bob.upload(created.json["uploadUrl"], content, 0, len(content))
        assert answer.status_int == 201, answer.body
        assert answer.json["name"] == "new.txt" and answer.json["parentReference"]["id"] == folder
        seen = graph.get(f"me/drive/items/{folder}/children").json["value"]
        [made] = [item for item in seen if item["name"] == "new.txt"]
        assert made["id"] == answer.json["id"]
        assert content_of(services, made["id"]) == content
    assert graph.get("me/drive/root:/new.txt").status_int == 404
    # and an existing file below the folder, by path
    created = bob.post_json(f"shares/{share_id}/driveItem:/Sub/deep.txt:/createUploadSession", {})
    assert bob.upload(created.json["uploadUrl"], b"deeper", 0, 6).status_int == 200
    assert content_of(services, tree.deep.id) == b"deeper"


@pytest.mark.parametrize("how", ["revoke", "revoke item"])
def test_revoking_the_link_before_the_last_fragment_fails_the_upload(bob, tree, file_link, services, how):
    url = file_link("ReadWrite")
    created = bob.post_json(f"shares/{link_id(url)}/driveItem/createUploadSession", {})
    upload_url = created.json["uploadUrl"]
    content = b"0123456789abcdefghij"
    assert bob.upload(upload_url, content[:10], 0, 20).status_int == 202
    if how == "revoke":
        assert services.shares.revoke(link_id(url)) == 1
    else:
        assert services.shares.revoke(item_id=tree.shared_file.id) == 1
    last = bob.upload(upload_url, content[10:], 10, 20)
    assert last.status_int == 403, last.body
    assert graph_error(last)[0] == "accessDenied"
    assert content_of(services, tree.shared_file.id) == b"shared bytes"
    assert services.files.get(tree.shared_file.id).version == tree.shared_file.version


def test_revoking_a_folder_link_before_the_last_fragment_makes_no_file(bob, graph, tree, folder_link, services):
    url = folder_link("ReadWrite")
    created = bob.post_json(f"shares/{encoded(url)}/driveItem:/late.txt:/createUploadSession", {})
    upload_url = created.json["uploadUrl"]
    assert bob.upload(upload_url, b"abc", 0, 6).status_int == 202
    services.shares.revoke(link_id(url))
    last = bob.upload(upload_url, b"def", 3, 6)
    assert last.status_int == 403 and graph_error(last)[0] == "accessDenied"
    assert graph.get("me/drive/root:/Shared/late.txt").status_int == 404


def test_an_upload_whose_folder_left_the_share_does_not_land(bob, graph, tree, folder_link, services):
    share_id = link_id(folder_link("ReadWrite"))
    created = bob.post_json(f"shares/{share_id}/driveItem:/Sub/late.txt:/createUploadSession", {})
    upload_url = created.json["uploadUrl"]
    assert bob.upload(upload_url, b"abc", 0, 6).status_int == 202
    move(graph, tree.sub_folder, tree.private_folder)
    last = bob.upload(upload_url, b"def", 3, 6)
    assert last.status_int == 403 and graph_error(last)[0] == "accessDenied"
    assert graph.get("me/drive/root:/Private/Sub/late.txt").status_int == 404


def test_an_upload_by_path_lands_at_the_path_not_on_a_file_moved_out_of_the_share(
    bob, graph, tree, folder_link, services
):
    share_id = link_id(folder_link("ReadWrite"))
    created = bob.post_json(f"shares/{share_id}/driveItem:/Sub/deep.txt:/createUploadSession", {})
    upload_url = created.json["uploadUrl"]
    assert bob.upload(upload_url, b"abc", 0, 6).status_int == 202
    move(graph, tree.deep.id, tree.private_folder)
    last = bob.upload(upload_url, b"def", 3, 6)
    assert last.status_int == 201, last.body  # a new deep.txt in Sub, inside the share
    assert last.json["id"] != tree.deep.id and last.json["parentReference"]["id"] == tree.sub_folder
    assert content_of(services, last.json["id"]) == b"abcdef"
    assert content_of(services, tree.deep.id) == b"deep bytes"  # the one that left is untouched


@pytest.mark.parametrize("what", ["a new version", "a new file"])
def test_a_link_revoked_while_a_simple_upload_comes_stops_it(bob, graph, tree, file_link, folder_link, services, what):
    """The link was live when the upload began; revoke() returned before its body was in: nothing lands."""
    if what == "a new version":
        url, path = file_link("ReadWrite"), "driveItem/content"
    else:
        url, path = folder_link("ReadWrite"), "driveItem:/late.txt:/content"
    blobs = stored_blobs(services)

    def revoke() -> None:
        assert services.shares.revoke(link_id(url)) == 1

    body = b"x" * 4096
    answer = while_the_body_comes(lambda held: bob.put_from(f"shares/{link_id(url)}/{path}", held, 4096), body, revoke)
    assert answer.status_int == 403 and graph_error(answer)[0] == "accessDenied", answer.body
    assert content_of(services, tree.shared_file.id) == b"shared bytes"
    assert services.files.get(tree.shared_file.id).version == tree.shared_file.version
    assert graph.get("me/drive/root:/Shared/late.txt").status_int == 404
    assert stored_blobs(services) == blobs


def test_a_simple_upload_into_a_folder_that_left_the_share_while_it_came_lands_in_the_share_not_in_it(
    bob, graph, tree, folder_link, services
):
    share_id = link_id(folder_link("ReadWrite"))
    answer = while_the_body_comes(
        lambda held: bob.put_from(f"shares/{share_id}/driveItem:/Sub/late.txt:/content", held, 4096),
        b"x" * 4096,
        lambda: move(graph, tree.sub_folder, tree.private_folder),
    )
    # the folder is found again by its path once the bytes are in: nothing is at Shared:/Sub any more, so the
    # upload makes Sub there again, as a request a moment later would (docs/graph.md §3.6); never in the Sub that
    # left the share, nor saying anything of where it went
    assert answer.status_int == 201, answer.body
    assert answer.json["parentReference"]["id"] != tree.sub_folder and "path" not in answer.json["parentReference"]
    assert bob.get(f"shares/{share_id}/driveItem:/Sub/late.txt:/content").body == b"x" * 4096
    assert graph.get("me/drive/root:/Private/Sub/late.txt").status_int == 404


def test_a_read_write_file_link_follows_its_file_when_it_moves(bob, graph, tree, file_link, services):
    share_id = link_id(file_link("ReadWrite"))
    created = bob.post_json(f"shares/{share_id}/driveItem/createUploadSession", {})
    upload_url = created.json["uploadUrl"]
    assert bob.upload(upload_url, b"abc", 0, 6).status_int == 202
    move(graph, tree.shared_file.id, tree.private_folder)
    assert bob.upload(upload_url, b"def", 3, 6).status_int == 200
    assert content_of(services, tree.shared_file.id) == b"abcdef"


def test_a_read_write_link_with_a_read_only_api_token_cannot_write(graph_for, tree, file_link, folder_link, services):
    reader = graph_for("bob", can_write=False)
    file_id, folder_id = link_id(file_link("ReadWrite")), link_id(folder_link("ReadWrite"))
    assert reader.get(f"shares/{file_id}/driveItem/content").body == b"shared bytes"
    for response in (
        reader.put(f"shares/{file_id}/driveItem/content", b"x"),
        reader.post_json(f"shares/{file_id}/driveItem/createUploadSession", {}),
        reader.put(f"shares/{folder_id}/driveItem:/new.txt:/content", b"x"),
        reader.post_json(f"shares/{folder_id}/driveItem:/new.txt:/createUploadSession", {}),
    ):
        assert response.status_int == 403 and graph_error(response)[0] == "accessDenied"
    assert content_of(services, tree.shared_file.id) == b"shared bytes"
    assert services.sessions.list() == []


def test_a_read_only_link_of_a_read_write_token_stays_read_only(graph, tree, file_link, services):
    """Even the drive's owner, through a read-only link, cannot write."""
    response = graph.put(f"shares/{link_id(file_link('ReadOnly'))}/driveItem/content", b"x")
    assert response.status_int == 403 and graph_error(response)[0] == "accessDenied"
    assert content_of(services, tree.shared_file.id) == b"shared bytes"


# -- the CLI ----------------------------------------------------------------------------------------


def test_cli_lists_links_without_their_whole_id(tree, file_link, folder_link, cli, services, clock):
    assert "no share links" in cli("shares", "list").output
    file_url = file_link("ReadWrite")
    clock.advance(seconds=1)  # listed oldest first
    folder_url = folder_link("ReadOnly")
    rows = json.loads(cli("shares", "list", "--json").output)
    assert [(r["item_id"], r["type"], r["created_by"], r["revoked"]) for r in rows] == [
        (tree.shared_file.id, "ReadWrite", "alice", None),
        (tree.shared_folder, "ReadOnly", "alice", None),
    ]
    text = cli("shares", "list").output
    listed = cli("shares", "list", "--json").output
    for url in (file_url, folder_url):
        assert link_id(url) not in text and link_id(url) not in listed
        assert link_id(url)[:6] in text
    assert tree.shared_file.id in text and "ReadWrite" in text and "by alice" in text
    only = json.loads(cli("shares", "list", tree.shared_folder, "--json").output)
    assert [r["item_id"] for r in only] == [tree.shared_folder]
    services.shares.revoke(link_id(file_url))
    rows = json.loads(cli("shares", "list", "--json").output)
    assert rows[0]["revoked"] is not None and rows[1]["revoked"] is None
    assert "revoked " in cli("shares", "list", tree.shared_file.id).output


@pytest.mark.parametrize("form", ["url", "id", "graph id", "url with slash"])
def test_cli_revokes_a_link_by_url_or_id(tree, file_link, cli, testapp, bob, form):
    url = file_link("ReadWrite")
    argument = {"url": url, "id": link_id(url), "graph id": encoded(url), "url with slash": url + "/"}[form]
    assert cli("shares", "revoke", argument).output.strip() == "revoked 1 share link"
    assert testapp.get(local(url), expect_errors=True).status_int == 404
    assert bob.get(f"shares/{link_id(url)}/driveItem").status_int == 404
    again = cli("shares", "revoke", argument, ok=False)
    assert again.exit_code != 0 and "no live share link" in again.output


def test_cli_revokes_every_link_to_an_item(tree, file_link, folder_link, cli, testapp):
    read_only, read_write, folder = file_link("ReadOnly"), file_link("ReadWrite"), folder_link()
    assert cli("shares", "revoke", "--item", tree.shared_file.id).output.strip() == "revoked 2 share links"
    for url in (read_only, read_write):
        assert testapp.get(local(url), expect_errors=True).status_int == 404
    assert testapp.get(local(folder)).status_int == 200
    again = cli("shares", "revoke", "--item", tree.shared_file.id, ok=False)
    assert again.exit_code == 1 and f"no live share link to {tree.shared_file.id}" in again.output


def test_cli_revoke_refuses_unknown_links(cli, file_link, testapp):
    url = file_link()
    for argument in (new_id(), f"{PUBLIC}/s/{new_id()}", "nope", f"https://other.example/s/{link_id(url)}"):
        result = cli("shares", "revoke", argument, ok=False)
        assert result.exit_code != 0, argument
    assert cli("shares", "revoke", ok=False).exit_code != 0  # neither a link nor --item
    assert testapp.get(local(url)).status_int == 200
