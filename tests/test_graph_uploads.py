"""Graph upload sessions: createUploadSession, fragments on the upload URL, completion, deferCommit,
conflicts, quota, expiry, the per-user limit shared with CSPP, sweeping and concurrent fragments."""

import io
import random
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import quote

import pytest
import webtest

from wopihost import quickxor
from wopihost.app import create_app
from wopihost.body import RequestBody, StreamSource
from wopihost.errors import WopiError

from .cspp_helpers import get_chunked, stream_filter
from .helpers import GraphClient, graph_error, stored_blobs, writes_held

MAX_FILE = 1 << 20  # WOPIHOST_MAX_FILE_SIZE in the test settings
UPLOAD_PREFIX = "https://wopi.example.test/v1.0/uploadSessions/"


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def graph_time(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def in_30_minutes(clock) -> str:
    return graph_time(clock.now() + timedelta(minutes=30))


def create(graph: GraphClient, address: str = "me/drive/root:/big.bin:", body=None, headers=None, query: str = ""):
    return graph.post_json(f"{address}/createUploadSession{query}", {} if body is None else body, headers)


def new_session(
    graph: GraphClient, address: str = "me/drive/root:/big.bin:", body=None, headers=None, query: str = ""
) -> str:
    response = create(graph, address, body, headers, query)
    assert response.status_int == 200, response.body
    return response.json["uploadUrl"]


def send(graph: GraphClient, url: str, content: bytes, step: int) -> list:
    """Every fragment of `content` in order, `step` bytes each; the answers."""
    return [
        graph.upload(url, content[first : first + step], first, len(content)) for first in range(0, len(content), step)
    ]


def put_range(graph: GraphClient, url: str, body: bytes, content_range: str | None):
    headers = {} if content_range is None else {"Content-Range": content_range}
    return graph.testapp.put(graph.url(url), body, headers=headers, expect_errors=True)


def status(graph: GraphClient, url: str):
    return graph.testapp.get(graph.url(url), expect_errors=True)


def content_of(graph: GraphClient, item_id: str) -> bytes:
    response = graph.get(f"me/drive/items/{item_id}/content")
    assert response.status_int == 200, response.body
    return response.body


def simple_upload(graph: GraphClient, path: str, content: bytes) -> dict:
    response = graph.put(f"me/drive/root:/{path}:/content", content)
    assert response.status_int in (200, 201), response.body
    return response.json


@pytest.fixture
def folder(graph) -> str:
    response = graph.post_json("me/drive/root/children", {"name": "dir", "folder": {}})
    assert response.status_int == 201, response.body
    return response.json["id"]


@pytest.fixture
def graph_with(settings, clock):
    """A Graph client for alice on an app made with changed settings (and its services)."""
    apps = []

    def make(**changes):
        app = create_app(settings.with_changes(**changes), clock)
        apps.append(app)
        services = app.extensions["wopihost"]
        issued, drive_id = services.issue_api_token("alice", True)
        return GraphClient(webtest.TestApp(app), issued.token, drive_id), services

    yield make
    for app in apps:
        app.extensions["wopihost"].db.dispose()


# -- createUploadSession: the answer and the addresses ---------------------------------------------


def test_create_answers_an_absolute_upload_url_with_no_query(graph, clock):
    response = create(graph)
    assert response.status_int == 200
    body = response.json
    assert set(body) == {"uploadUrl", "expirationDateTime", "nextExpectedRanges"}
    assert body["uploadUrl"].startswith(UPLOAD_PREFIX)
    token = body["uploadUrl"][len(UPLOAD_PREFIX) :]
    assert token and "?" not in body["uploadUrl"] and "/" not in token and "#" not in token
    assert body["nextExpectedRanges"] == ["0-"]
    assert body["expirationDateTime"] == in_30_minutes(clock)
    assert new_session(graph) != body["uploadUrl"]


ADDRESSES = [
    "me/drive/root:/dir/big.bin:",
    "me/drive/items/{dir}:/big.bin:",
    "me/drive/items/root:/dir/big.bin:",
    "me/drive/items/root%3A%2Fdir%2Fbig.bin%3A",
    "drives/{drive}/root:/dir/big.bin:",
    "users/alice/drive/root:/dir/big.bin:",
]


@pytest.mark.parametrize("prefix", ["/v1.0", "/_api/v2.0"])
@pytest.mark.parametrize("address", ADDRESSES)
def test_every_address_form_makes_the_file_in_the_folder(graph_for, prefix, address):
    graph = graph_for(prefix=prefix)
    made = graph.post_json("me/drive/root/children", {"name": "dir", "folder": {}})
    assert made.status_int == 201
    content = data(1000)
    url = new_session(graph, address.format(dir=made.json["id"], drive=graph.drive_id))
    assert url.startswith(UPLOAD_PREFIX)  # the upload URL is under /v1.0 whatever the prefix
    answers = send(graph, url, content, 400)
    assert [a.status_int for a in answers] == [202, 202, 201]
    item = answers[-1].json
    assert item["name"] == "big.bin" and item["size"] == 1000
    assert item["parentReference"]["id"] == made.json["id"]
    assert item["parentReference"]["path"] == f"/drives/{graph.drive_id}/root:/dir"
    listed = graph.get("me/drive/root:/dir/big.bin")
    assert listed.status_int == 200 and listed.json["id"] == item["id"]
    assert content_of(graph, item["id"]) == content


def test_v2_prefix_creates_sessions_too(graph_for):
    graph = graph_for(prefix="/v2.0")
    url = new_session(graph)
    assert url.startswith(UPLOAD_PREFIX)
    assert graph.upload(url, b"abc", 0, 3).status_int == 201


def test_create_on_an_existing_file_by_id_replaces_it(graph):
    old = simple_upload(graph, "a.bin", b"old content")
    url = new_session(graph, f"me/drive/items/{old['id']}")
    answers = send(graph, url, data(500), 300)
    assert [a.status_int for a in answers] == [202, 200]
    item = answers[-1].json
    assert item["id"] == old["id"] and item["name"] == "a.bin" and item["size"] == 500
    assert item["cTag"] != old["cTag"] and item["eTag"] != old["eTag"]
    assert content_of(graph, old["id"]) == data(500)


@pytest.mark.parametrize("address", ["me/drive/items/{dir}", "me/drive/root", "me/drive/items/root"])
def test_create_on_a_folder_is_400(graph, folder, address):
    response = create(graph, address.format(dir=folder))
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"


@pytest.mark.parametrize(
    "address",
    [
        "me/drive/items/AAAAAAAAAAAAAAAAAAAAAA",
        "me/drive/items/AAAAAAAAAAAAAAAAAAAAAA:/big.bin:",
    ],
)
def test_create_under_a_missing_item_is_404(graph, address):
    response = create(graph, address)
    assert response.status_int == 404
    assert graph_error(response)[0] == "itemNotFound"


def names_below(graph: GraphClient, folder: str = "root") -> dict:
    """The names below a folder, each folder's as a dict of what is in it, each file's as its size."""
    found = {}
    for child in graph.get(f"me/drive/items/{folder}/children").json["value"]:
        found[child["name"]] = names_below(graph, child["id"]) if "folder" in child else child["size"]
    return found


@pytest.mark.parametrize("by", ["root", "item"])
def test_a_session_makes_the_missing_folders_of_its_path_as_the_file_lands(graph, folder, by):
    """OneDrive makes the folders a path names that are missing; the host makes them when the file is committed,
    not at createUploadSession, so that a session that never becomes a file leaves none behind."""
    address = "me/drive/root:/dir/a/b/big.bin:" if by == "root" else f"me/drive/items/{folder}:/a/b/big.bin:"
    content = data(300)
    url = new_session(graph, address, {"item": {"fileSize": 300}})
    assert names_below(graph) == {"dir": {}}  # nothing made yet
    answers = send(graph, url, content, 200)
    assert [a.status_int for a in answers] == [202, 201], answers[-1].body
    assert answers[-1].json["parentReference"]["path"].endswith("/root:/dir/a/b")
    assert names_below(graph) == {"dir": {"a": {"b": {"big.bin": 300}}}}
    assert graph.upload(url, content[200:], 200, 300).status_int == 200  # the final fragment again: the file
    second = new_session(graph, "me/drive/root:/dir/a/b/c/more.bin:")  # below folders made by the first
    assert [a.status_int for a in send(graph, second, b"12345", 5)] == [201]
    assert names_below(graph) == {"dir": {"a": {"b": {"big.bin": 300, "c": {"more.bin": 5}}}}}


@pytest.mark.parametrize("end", ["cancelled", "expired", "a file takes a folder's name", "a bad name"])
def test_a_session_that_never_lands_leaves_none_of_its_folders(graph, clock, end):
    if end == "a bad name":  # refused at create, as any new folder's name (names.check)
        response = create(graph, "me/drive/root:/ok/CON/big.bin:")
        assert (response.status_int, graph_error(response)[0]) == (400, "invalidRequest"), response.body
        assert names_below(graph) == {}
        return
    url = new_session(graph, "me/drive/root:/a/b/big.bin:", {"item": {"fileSize": 300}})
    assert graph.upload(url, data(100), 0, 300).status_int == 202
    if end == "cancelled":
        assert graph.testapp.delete(graph.url(url)).status_int == 204
    elif end == "expired":
        clock.advance(minutes=30, seconds=1)
    else:
        assert graph.put("me/drive/root:/a/b:/content", b"in the way").status_int == 201
    last = graph.upload(url, data(200), 100, 300)
    if end == "a file takes a folder's name":
        assert (last.status_int, graph_error(last)[0]) == (409, "nameAlreadyExists"), last.body
        assert names_below(graph) == {"a": {"b": 10}}
        assert status(graph, url).status_int == 200  # kept for another try, as any 409 at completion
        return
    assert last.status_int == 404
    assert names_below(graph) == {}


def test_create_at_a_path_through_a_file_is_409(graph):
    assert graph.put("me/drive/root:/file.txt:/content", b"x").status_int == 201
    response = create(graph, "me/drive/root:/file.txt/big.bin:")
    assert (response.status_int, graph_error(response)[0]) == (409, "nameAlreadyExists"), response.body


def test_sessions_racing_to_make_the_same_folder_land_in_one(graph):
    """Two sessions completing at once under the same missing folders: the second finds the first's."""
    for round_ in range(5):
        urls = [new_session(graph, f"me/drive/root:/r{round_}/shared/{name}:") for name in ("a.bin", "b.bin")]
        start = threading.Barrier(2)

        def complete(url: str) -> int:
            start.wait()
            return graph.upload(url, b"12345", 0, 5).status_int

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(complete, urls)) == [201, 201]
    assert names_below(graph) == {f"r{i}": {"shared": {"a.bin": 5, "b.bin": 5}} for i in range(5)}


def test_create_with_a_read_only_token_is_403(graph_for, services):
    response = create(graph_for(can_write=False))
    assert response.status_int == 403
    assert graph_error(response)[0] == "accessDenied"
    assert services.sessions.list() == []


def test_create_without_a_token_is_401(graph):
    response = graph.testapp.post_json("/v1.0/me/drive/root:/big.bin:/createUploadSession", {}, expect_errors=True)
    assert response.status_int == 401
    assert graph_error(response)[0] == "unauthenticated"


def test_a_member_uploads_into_a_shared_drive_and_others_may_not(graph, graph_for, services):
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "alice")
    url = new_session(graph, f"sites/{drive.id}/drive/root:/team.bin:")
    answer = graph.upload(url, b"shared bytes", 0, 12)
    assert answer.status_int == 201
    assert answer.json["parentReference"]["driveId"] == drive.id
    assert answer.json["parentReference"]["driveType"] == "documentLibrary"
    refused = create(graph_for("bob"), f"sites/{drive.id}/drive/root:/team.bin:")
    assert refused.status_int == 403 and graph_error(refused)[0] == "accessDenied"


# -- createUploadSession: the request body -----------------------------------------------------


def test_no_body_at_all_is_accepted(graph):
    response = graph.post("me/drive/root:/big.bin:/createUploadSession")
    assert response.status_int == 200
    assert response.json["nextExpectedRanges"] == ["0-"]


def test_file_size_gives_a_closed_range(graph):
    response = create(graph, body={"item": {"fileSize": 300}})
    assert response.status_int == 200
    assert response.json["nextExpectedRanges"] == ["0-299"]


def test_status_right_after_create_with_file_size_says_the_same_range(graph):
    url = new_session(graph, body={"item": {"fileSize": 300}})
    response = status(graph, url)
    assert response.status_int == 200
    assert response.json["nextExpectedRanges"] == ["0-299"]


def test_fragment_total_must_match_the_declared_file_size(graph):
    url = new_session(graph, body={"item": {"fileSize": 300}})
    response = graph.upload(url, data(100), 0, 500)
    assert response.status_int == 400
    assert graph_error(response) == ("invalidRequest", "fragmentLengthMismatch")


def test_name_equal_to_the_paths_is_accepted(graph):
    assert create(graph, body={"item": {"name": "big.bin"}}).status_int == 200


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_a_name_equal_to_the_paths_in_another_unicode_form_is_accepted(graph, form):
    """macOS's clients send names decomposed (NFD); the host keeps them composed."""
    name = unicodedata.normalize(form, "résumé.bin")
    path = f"me/drive/root:/{quote(unicodedata.normalize('NFD' if form == 'NFC' else 'NFC', name))}:"
    assert create(graph, path, body={"item": {"name": name}}).status_int == 200


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'"text"',
        b'{"item": []}',
        b'{"item": {"fileSize": "10"}}',
        b'{"item": {"fileSize": -1}}',
        b'{"item": {"fileSize": true}}',
        b'{"item": {"fileSize": 1.5}}',
        b'{"item": {"description": 5}}',
        b'{"item": {"name": "other.bin"}}',
        b'{"item": {"name": 5}}',
        b'{"item": {"@microsoft.graph.conflictBehavior": "overwrite"}}',
        b'{"item": {"@name.conflictBehavior": "keep"}}',
        b'{"item": {"fileSystemInfo": []}}',
        b'{"item": {"fileSystemInfo": {"createdDateTime": "yesterday"}}}',
        b'{"item": {"fileSystemInfo": {"lastModifiedDateTime": 12}}}',
        b'{"deferCommit": "yes"}',
        b'{"deferCommit": 1}',
    ],
    ids=lambda body: body.decode(),
)
def test_invalid_bodies_are_400_and_make_no_session(graph, services, body):
    response = graph.post(
        "me/drive/root:/big.bin:/createUploadSession", body, headers={"Content-Type": "application/json"}
    )
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"
    assert services.sessions.list() == []


def test_file_size_over_the_largest_file_is_400_max_file_size_exceeded(graph, services):
    response = create(graph, body={"item": {"fileSize": MAX_FILE + 1}})
    assert response.status_int == 400
    assert graph_error(response) == ("invalidRequest", "maxFileSizeExceeded")
    assert services.sessions.list() == []
    assert create(graph, body={"item": {"fileSize": MAX_FILE}}).status_int == 200


def test_a_fragment_declaring_a_total_over_the_largest_file_is_400(graph):
    url = new_session(graph)
    response = graph.upload(url, data(100), 0, MAX_FILE + 1)
    assert response.status_int == 400
    assert graph_error(response) == ("invalidRequest", "maxFileSizeExceeded")


@pytest.mark.parametrize("limit", ["max_upload_session_size", "max_upload_bytes_per_user"])
def test_a_file_size_no_session_may_hold_is_413_at_create_and_makes_no_session(graph_with, limit):
    """Set below WOPIHOST_MAX_FILE_SIZE, a session limit is told at creation, not after 1000 bytes were sent."""
    graph, services = graph_with(**{limit: 1000})
    response = create(graph, body={"item": {"fileSize": 1001}})
    assert response.status_int == 413
    assert graph_error(response) == ("requestSizeExceeded", None)
    assert "at most 1000 bytes" in response.json["error"]["message"]
    assert services.sessions.list() == []
    assert create(graph, body={"item": {"fileSize": 1000}}).status_int == 200


def test_a_first_fragment_declaring_a_total_no_session_may_hold_is_413_and_stores_nothing(graph_with):
    graph, _ = graph_with(max_upload_session_size=1000)
    url = new_session(graph)
    response = graph.upload(url, data(100), 0, 1000 + 1)
    assert response.status_int == 413
    assert graph_error(response) == ("requestSizeExceeded", None)
    assert status(graph, url).json["nextExpectedRanges"] == ["0-"]
    assert graph.upload(url, data(100), 0, 1000).status_int == 202


def test_description_and_file_system_info_reach_the_file(graph):
    url = new_session(
        graph,
        body={
            "item": {
                "description": "quarterly numbers",
                "fileSystemInfo": {
                    "createdDateTime": "2020-01-02T03:04:05.678Z",
                    "lastModifiedDateTime": "2021-02-03T04:05:06Z",
                },
            }
        },
    )
    item = graph.upload(url, b"numbers", 0, 7).json
    assert item["description"] == "quarterly numbers"
    assert item["fileSystemInfo"] == {
        "createdDateTime": "2020-01-02T03:04:05.678Z",
        "lastModifiedDateTime": "2021-02-03T04:05:06.000Z",
    }
    assert graph.get(f"me/drive/items/{item['id']}").json["description"] == "quarterly numbers"


def test_if_match_mismatch_on_an_existing_file_is_412(graph, services):
    old = simple_upload(graph, "a.bin", b"old")
    response = create(graph, f"me/drive/items/{old['id']}", headers={"If-Match": '"{nope},1"'})
    assert response.status_int == 412
    assert graph_error(response) == ("preconditionFailed", "entityTagDoesNotMatch")
    assert services.sessions.list() == []
    assert create(graph, f"me/drive/items/{old['id']}", headers={"If-Match": old["eTag"]}).status_int == 200
    assert create(graph, f"me/drive/items/{old['id']}", headers={"If-Match": old["cTag"]}).status_int == 200


def test_if_match_mismatch_on_an_existing_file_by_path_is_412(graph):
    simple_upload(graph, "a.bin", b"old")
    response = create(graph, "me/drive/root:/a.bin:", headers={"If-Match": '"{nope},1"'})
    assert response.status_int == 412
    assert graph_error(response) == ("preconditionFailed", "entityTagDoesNotMatch")


@pytest.mark.parametrize("conflict", ["replace", "rename", "fail"])
def test_if_match_on_a_path_with_no_file_is_412_and_makes_no_session(graph, services, conflict):
    """An If-Match holds for no file, not even `*` (RFC 9110 §13.1.1): a session that the file deleted meanwhile
    made would bring it back, as a simple upload's would (docs/graph.md §3.6, §4.1)."""
    body = {"item": {"@microsoft.graph.conflictBehavior": conflict}}
    for tag in ('"{gone},1"', "*"):
        response = create(graph, "me/drive/root:/a.bin:", body, headers={"If-Match": tag})
        assert response.status_int == 412
        assert graph_error(response) == ("preconditionFailed", "entityTagDoesNotMatch")
    assert services.sessions.list() == []
    assert create(graph, "me/drive/root:/a.bin:", body, headers={"If-None-Match": "*"}).status_int == 200


# -- fragments --------------------------------------------------------------------------------------


def test_each_fragment_answers_202_with_one_closed_range_and_the_last_201(graph, clock):
    content = data(1000)
    url = new_session(graph)
    answers = send(graph, url, content, 300)
    assert [a.status_int for a in answers] == [202, 202, 202, 201]
    for answer, received in zip(answers, (300, 600, 900)):
        assert answer.json == {"expirationDateTime": in_30_minutes(clock), "nextExpectedRanges": [f"{received}-999"]}
    item = answers[-1].json
    assert item["name"] == "big.bin" and item["size"] == 1000
    assert item["file"]["mimeType"] == "application/octet-stream"
    # no SHA-256 after an upload session (it would take reading the bytes again), the QuickXorHash combined
    assert item["file"]["hashes"] == {"quickXorHash": quickxor.b64digest(content)}
    assert item["createdBy"]["user"]["id"] == "alice"
    assert item["eTag"].startswith('"') and "," in item["eTag"]
    assert content_of(graph, item["id"]) == content


def test_one_fragment_of_the_whole_file_completes_it(graph):
    url = new_session(graph, "me/drive/root:/one.txt:")
    answer = graph.upload(url, b"x", 0, 1)
    assert answer.status_int == 201
    assert answer.json["name"] == "one.txt" and answer.json["file"]["mimeType"] == "text/plain"
    assert content_of(graph, answer.json["id"]) == b"x"


def test_fragments_need_not_be_multiples_of_320_kib(graph):
    content = data(700_001, seed=3)
    url = new_session(graph, body={"item": {"fileSize": len(content)}})
    cuts = [0, 333_333, 333_334, 655_360 + 1, len(content)]
    answers = [graph.upload(url, content[a:b], a, len(content)) for a, b in zip(cuts, cuts[1:])]
    assert [a.status_int for a in answers] == [202, 202, 202, 201]
    assert answers[0].json["nextExpectedRanges"] == ["333333-700000"]
    assert answers[1].json["nextExpectedRanges"] == ["333334-700000"]
    assert content_of(graph, answers[-1].json["id"]) == content


def test_a_repeated_final_fragment_answers_200_with_the_same_item(graph):
    content = data(600)
    url = new_session(graph)
    first = graph.upload(url, content[:300], 0, 600)
    done = graph.upload(url, content[300:], 300, 600)
    assert (first.status_int, done.status_int) == (202, 201)
    again = graph.upload(url, content[300:], 300, 600)
    assert again.status_int == 200 and again.json["id"] == done.json["id"]
    empty = put_range(graph, url, b"", "bytes 300-599/600")
    assert empty.status_int == 200 and empty.json["id"] == done.json["id"]
    assert again.json["cTag"] == done.json["cTag"] and empty.json["cTag"] == done.json["cTag"]
    assert content_of(graph, done.json["id"]) == content


def test_an_earlier_range_after_completion_is_416_overlap(graph):
    content = data(600)
    url = new_session(graph)
    send(graph, url, content, 300)
    response = graph.upload(url, content[:300], 0, 600)
    assert response.status_int == 416
    assert graph_error(response) == ("invalidRange", "fragmentOverlap")


def test_the_final_fragment_again_after_a_failed_completion_tries_it_again(graph, services, client_for):
    """The fragment's bytes are kept when completion fails, and a client that got an error sends it again: it
    gets the completion's answer again, then the file once the cause is gone. (It got 416, and rclone, finding
    nothing expected, gave up and deleted the session with every byte.)"""
    old = simple_upload(graph, "a.docx", b"old")
    wopi = client_for(services.files.get(old["id"]))
    assert wopi.lock("L1").status_int == 200
    url = new_session(graph, f"me/drive/items/{old['id']}")
    assert graph.upload(url, b"new ", 0, 7).status_int == 202
    for _ in range(2):
        refused = graph.upload(url, b"one", 4, 7)
        assert refused.status_int == 423 and graph_error(refused)[0] == "resourceLocked"
    assert status(graph, url).json["nextExpectedRanges"] == []
    assert wopi.op("UNLOCK", X_WOPI_Lock="L1").status_int == 200
    done = graph.upload(url, b"one", 4, 7)
    assert done.status_int == 200 and done.json["id"] == old["id"]
    assert content_of(graph, old["id"]) == b"new one"
    assert graph.upload(url, b"one", 4, 7).json["cTag"] == done.json["cTag"]  # a repeat now, as ever


def test_the_final_fragment_retried_after_a_503_at_completion_makes_the_file(graph_with, database):
    """The fragment's bytes are stored in one transaction and the file is made in a second. When only the
    second fails (another writer holds the file's row past the busy timeout), the client retries the fragment
    as it was, as Graph's docs and rclone's pacer do after a 5xx, and the retry makes the file."""
    if database.startswith("sqlite"):
        pytest.skip("SQLite's one write lock would refuse the fragment's bytes too: no row to hold alone")
    graph, _ = graph_with(database_busy_timeout=0.2)
    old = simple_upload(graph, "a.bin", b"old")
    url = new_session(graph, f"me/drive/items/{old['id']}")
    assert graph.upload(url, b"new ", 0, 7).status_int == 202
    with writes_held(database, old["id"]):
        failed = graph.upload(url, b"one", 4, 7)
        assert failed.status_int == 503 and "Retry-After" in failed.headers
    assert status(graph, url).json["nextExpectedRanges"] == []  # the bytes are in; no file yet
    assert content_of(graph, old["id"]) == b"old"
    retried = graph.upload(url, b"one", 4, 7)
    assert retried.status_int == 200 and retried.json["id"] == old["id"], retried.body
    assert content_of(graph, old["id"]) == b"new one"


def test_a_copy_of_the_final_fragment_sent_while_the_first_completes_gets_the_item(graph, app, database):
    """docs/graph.md 4.4: a client whose final PUT timed out while the host was still completing it sends it
    again; the copy waits for that completion and answers with its file (it got 416 at once)."""
    if database.startswith("sqlite"):
        pytest.skip("SQLite's one write lock would hold back the first copy's bytes too: no row to hold alone")
    old = simple_upload(graph, "a.bin", b"old")
    url = new_session(graph, f"me/drive/items/{old['id']}")
    assert graph.upload(url, b"new ", 0, 7).status_int == 202
    answers: dict = {}

    def put(key: str) -> None:
        answers[key] = GraphClient(webtest.TestApp(app), None, graph.drive_id).upload(url, b"one", 4, 7)

    copies = {key: threading.Thread(target=put, args=(key,)) for key in ("first", "second")}
    with writes_held(database, old["id"]):  # the first copy's completion waits for the file's row
        copies["first"].start()
        deadline = time.monotonic() + 30
        while status(graph, url).json["nextExpectedRanges"] != [] and time.monotonic() < deadline:
            time.sleep(0.02)
        copies["second"].start()
        copies["second"].join(1.0)
        assert copies["second"].is_alive(), answers["second"].body  # waiting for the first copy to finish
    for copy in copies.values():
        copy.join(30)
    assert [answers[key].status_int for key in ("first", "second")] == [200, 200], answers
    assert answers["second"].json["id"] == old["id"] and answers["second"].json["cTag"] == answers["first"].json["cTag"]
    assert content_of(graph, old["id"]) == b"new one"


def test_a_range_already_received_is_416_fragment_overlap(graph, settings, services):
    content = data(300)
    url = new_session(graph)
    assert graph.upload(url, content[:100], 0, 300).status_int == 202
    pieces = stored_blobs(services)
    for first, last in ((0, 99), (50, 149), (99, 99)):
        response = graph.upload(url, content[first : last + 1], first, 300)
        assert response.status_int == 416
        assert graph_error(response) == ("invalidRange", "fragmentOverlap")
    assert stored_blobs(services) == pieces
    assert status(graph, url).json["nextExpectedRanges"] == ["100-299"]


def test_a_gap_is_416_fragment_out_of_order(graph):
    content = data(300)
    url = new_session(graph)
    assert graph.upload(url, content[:100], 0, 300).status_int == 202
    response = graph.upload(url, content[200:], 200, 300)
    assert response.status_int == 416
    assert graph_error(response) == ("invalidRange", "fragmentOutOfOrder")
    later = graph.upload(url, content[101:], 101, 300)
    assert graph_error(later) == ("invalidRange", "fragmentOutOfOrder")
    assert graph.upload(url, content[100:], 100, 300).status_int == 201


@pytest.mark.parametrize(
    "content_range",
    [
        None,
        "",
        "bytes 0-9",
        "bytes=0-9/10",
        "bytes 0-9/*",
        "bytes */10",
        "items 0-9/10",
        "bytes 9-0/10",
        "bytes 0-10/10",
        "bytes -1-9/10",
        "bytes 0-9/ten",
        "bytes 0-9/10, 10-19/20",
        "bytes 0-99999999999999999999/10",
    ],
)
def test_a_missing_or_malformed_content_range_is_400(graph, content_range):
    url = new_session(graph)
    response = put_range(graph, url, data(10), content_range)
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"
    assert status(graph, url).json["nextExpectedRanges"] == ["0-"]


@pytest.mark.parametrize("unit", ["Bytes", "BYTES"])
def test_the_unit_of_a_content_range_is_case_insensitive(graph, unit):
    """RFC 9110 §14.1: range units are case-insensitive."""
    url = new_session(graph)
    assert put_range(graph, url, data(4), f"{unit} 0-3/10").status_int == 202
    assert status(graph, url).json["nextExpectedRanges"] == ["4-9"]


def test_a_total_differing_from_the_first_fragments_is_400_fragment_length_mismatch(graph):
    content = data(300)
    url = new_session(graph)
    assert graph.upload(url, content[:100], 0, 300).status_int == 202
    for total in (400, 200):
        response = graph.upload(url, content[100:200], 100, total)
        assert response.status_int == 400
        assert graph_error(response) == ("invalidRequest", "fragmentLengthMismatch")
    assert status(graph, url).json["nextExpectedRanges"] == ["100-299"]


@pytest.mark.parametrize("body_length", [50, 99, 101, 150])
def test_a_body_longer_or_shorter_than_its_range_is_400(graph, settings, body_length, services):
    url = new_session(graph)
    before = stored_blobs(services)
    response = put_range(graph, url, data(body_length), "bytes 0-99/300")
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"
    assert stored_blobs(services) == before
    assert status(graph, url).json["nextExpectedRanges"] == ["0-"]
    assert graph.upload(url, data(100), 0, 300).status_int == 202


def test_a_fragment_over_the_largest_is_413_max_fragment_length_exceeded(graph_with):
    graph, _ = graph_with(max_fragment_size=1000)
    url = new_session(graph)
    response = graph.upload(url, data(1001), 0, 3000)
    assert response.status_int == 413
    assert graph_error(response) == ("requestSizeExceeded", "maxFragmentLengthExceeded")
    assert graph.upload(url, data(1000), 0, 3000).status_int == 202


def test_an_authorization_header_on_the_upload_url_is_ignored(graph, graph_for):
    url = new_session(graph)
    bogus = {"Authorization": "Bearer not-a-token"}
    other = {"Authorization": f"Bearer {graph_for('bob').token}"}
    assert graph.upload(url, b"abc", 0, 9, headers=bogus).status_int == 202
    assert graph.testapp.get(graph.url(url), headers=bogus, expect_errors=True).status_int == 200
    answer = graph.upload(url, b"defghi", 3, 9, headers=other)
    assert answer.status_int == 201
    assert answer.json["createdBy"]["user"]["id"] == "alice"
    assert content_of(graph, answer.json["id"]) == b"abcdefghi"


def test_other_methods_on_the_upload_url_are_405(graph):
    url = new_session(graph)
    response = graph.testapp.patch(graph.url(url), b"", expect_errors=True)
    assert response.status_int == 405
    assert graph_error(response)[0] == "notSupported"


# -- status, expiry and cancelling ------------------------------------------------------------------


def test_get_on_the_upload_url_answers_the_status(graph, clock):
    url = new_session(graph)
    assert graph.upload(url, data(100), 0, 300).status_int == 202
    response = status(graph, url)
    assert response.status_int == 200
    assert response.json["nextExpectedRanges"] == ["100-299"]
    assert response.json["expirationDateTime"] == in_30_minutes(clock)


@pytest.mark.parametrize("token", ["AAAAAAAAAAAAAAAAAAAAAA", "not-a-token", "x" * 300])
def test_an_unknown_upload_url_is_404(graph, token):
    for method in ("get", "delete", "post"):
        response = getattr(graph.testapp, method)(f"/v1.0/uploadSessions/{token}", expect_errors=True)
        assert response.status_int == 404, method
        assert graph_error(response)[0] == "itemNotFound"
    response = graph.upload(f"/v1.0/uploadSessions/{token}", b"abc", 0, 3)
    assert response.status_int == 404 and graph_error(response)[0] == "itemNotFound"


def test_expiry_slides_with_every_fragment(graph, clock):
    content = data(300)
    url = new_session(graph)
    clock.advance(minutes=20)
    first = graph.upload(url, content[:100], 0, 300)
    assert first.status_int == 202 and first.json["expirationDateTime"] == in_30_minutes(clock)
    clock.advance(minutes=20)  # past the first expiry
    second = graph.upload(url, content[100:200], 100, 300)
    assert second.status_int == 202 and second.json["expirationDateTime"] == in_30_minutes(clock)
    clock.advance(minutes=29)
    assert status(graph, url).status_int == 200
    assert graph.upload(url, content[200:], 200, 300).status_int == 201


def test_an_expired_session_is_404_and_makes_no_file(graph, clock):
    content = data(300)
    url = new_session(graph)
    assert graph.upload(url, content[:100], 0, 300).status_int == 202
    clock.advance(minutes=30, seconds=1)
    answers = [
        status(graph, url),
        graph.upload(url, content[100:], 100, 300),
        graph.testapp.post(graph.url(url), b"", expect_errors=True),
        graph.testapp.delete(graph.url(url), expect_errors=True),
    ]
    for response in answers:
        assert response.status_int == 404
        assert graph_error(response)[0] == "itemNotFound"
    assert graph.get("me/drive/root:/big.bin").status_int == 404


def test_delete_cancels_the_session_and_leaves_nothing(graph, settings, services):
    content = data(300)
    before = stored_blobs(services)
    url = new_session(graph)
    for first in (0, 100):  # two fragments of three
        assert graph.upload(url, content[first : first + 100], first, 300).status_int == 202
    assert len(stored_blobs(services) - before) == 2
    response = graph.testapp.delete(graph.url(url), expect_errors=True)
    assert response.status_int == 204 and response.body == b""
    assert stored_blobs(services) == before
    for again in (
        status(graph, url),
        graph.upload(url, content[200:], 200, 300),
        graph.testapp.delete(graph.url(url), expect_errors=True),
    ):
        assert again.status_int == 404 and graph_error(again)[0] == "itemNotFound"
    assert graph.get("me/drive/root:/big.bin").status_int == 404


# -- conflicts at completion -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "item", [{}, {"@microsoft.graph.conflictBehavior": "replace"}, {"@name.conflictBehavior": "replace"}]
)
def test_a_taken_name_is_replaced_by_default_or_when_asked(graph, item):
    old = simple_upload(graph, "a.bin", b"old content")
    url = new_session(graph, "me/drive/root:/a.bin:", {"item": item})
    answer = graph.upload(url, b"new", 0, 3)
    assert answer.status_int == 200
    assert answer.json["id"] == old["id"] and answer.json["size"] == 3
    assert content_of(graph, old["id"]) == b"new"


@pytest.mark.parametrize("in_the_query", [False, True])
def test_fail_on_a_taken_name_is_409_and_the_session_can_be_committed_renamed(graph, in_the_query):
    old = simple_upload(graph, "a.bin", b"old content")
    url = new_session(graph, "me/drive/root:/a.bin:", {"item": {"@microsoft.graph.conflictBehavior": "fail"}})
    assert graph.upload(url, b"new ", 0, 7).status_int == 202
    refused = graph.upload(url, b"one", 4, 7)
    assert refused.status_int == 409
    assert graph_error(refused)[0] == "nameAlreadyExists"
    assert content_of(graph, old["id"]) == b"old content"
    assert status(graph, url).status_int == 200  # the session is kept
    in_query = "?@microsoft.graph.conflictBehavior=rename" if in_the_query else ""
    committed = graph.put_json(
        f"me/drive/root:/a.bin{in_query}",
        {
            "@microsoft.graph.sourceUrl": url,
            **({} if in_the_query else {"@microsoft.graph.conflictBehavior": "rename"}),
        },
    )
    assert committed.status_int == 201
    assert committed.json["name"] == "a 1.bin" and committed.json["id"] != old["id"]
    assert content_of(graph, committed.json["id"]) == b"new one"
    assert content_of(graph, old["id"]) == b"old content"


@pytest.mark.parametrize("body", [{}, {"item": {"@microsoft.graph.conflictBehavior": "replace"}}])
def test_fail_in_the_query_keeps_a_taken_name(graph, body):
    """`createUploadSession?@microsoft.graph.conflictBehavior=fail`, where Graph's documents put it: the upload
    replaced the file of that name, as if no behaviour had been given. The query's counts over the body's."""
    old = simple_upload(graph, "a.bin", b"old content")
    url = new_session(graph, "me/drive/root:/a.bin:", body, query="?@microsoft.graph.conflictBehavior=fail")
    refused = graph.upload(url, b"new", 0, 3)
    assert (refused.status_int, graph_error(refused)[0]) == (409, "nameAlreadyExists")
    assert content_of(graph, old["id"]) == b"old content"


@pytest.mark.parametrize("finished", [False, True])
def test_a_copy_of_the_final_fragment_that_breaks_off_is_400_and_takes_nothing(graph, services, finished):
    """The final fragment sent twice, the second copy cut off mid-body (a dropped connection), and that copy
    reaching the session only once the whole one's bytes are in: it completed the session in its place (201),
    the whole copy then got 200, and a broken request was answered as a success. Its body is read first now."""
    old = simple_upload(graph, "a.bin", b"old content")
    url = new_session(graph, "me/drive/root:/a.bin:", {"item": {"@microsoft.graph.conflictBehavior": "fail"}})
    assert graph.upload(url, b"new ", 0, 7).status_int == 202
    assert graph.upload(url, b"one", 4, 7).status_int == 409  # every byte in, and no file yet
    assert graph.delete(f"me/drive/items/{old['id']}").status_int == 204  # the name is free again
    if finished:
        assert graph.upload(url, b"one", 4, 7).status_int == 201
    with pytest.raises(WopiError) as refused:
        services.uploads.put(url.rsplit("/", 1)[1], 4, 6, 7, RequestBody(StreamSource(io.BytesIO(b"o")), 3), 3)
    assert refused.value.status == 400 and "ended 2 bytes before" in refused.value.reason
    if not finished:
        assert status(graph, url).json["nextExpectedRanges"] == []  # still to become the file
        assert graph.upload(url, b"one", 4, 7).status_int == 201  # the whole copy makes it, and says so
    assert content_of(graph, graph.get("me/drive/root:/a.bin").json["id"]) == b"new one"


def test_fail_on_a_free_name_creates_the_file(graph):
    url = new_session(graph, body={"item": {"@microsoft.graph.conflictBehavior": "fail"}})
    assert graph.upload(url, b"abc", 0, 3).status_int == 201


@pytest.mark.parametrize("key", ["@microsoft.graph.conflictBehavior", "@name.conflictBehavior"])
def test_rename_on_a_taken_name_counts_from_1(graph, key):
    old = simple_upload(graph, "report.txt", b"first")
    names = []
    for n in range(2):
        url = new_session(graph, "me/drive/root:/report.txt:", {"item": {key: "rename"}})
        answer = graph.upload(url, b"copy", 0, 4)
        assert answer.status_int == 201
        names.append(answer.json["name"])
    assert names == ["report 1.txt", "report 2.txt"]
    assert content_of(graph, old["id"]) == b"first"


@pytest.mark.parametrize("how", ["last fragment", "deferred commit"])
def test_a_session_whose_folder_is_deleted_before_its_answer_is_answered(graph, services, monkeypatch, how):
    """The file a session became is answered after its commit: its folder deleted in between (a user deleting
    it while rclone uploads into it) made the final fragment, which had made the file, answer 500, and its
    retry 404. It is answered as it went, without the path of a folder that is gone."""
    folder = graph.post_json("me/drive/root/children", {"name": "dir", "folder": {}}).json["id"]
    body = {"deferCommit": True} if how == "deferred commit" else None
    url = new_session(graph, "me/drive/root:/dir/big.bin:", body)
    step = "commit" if how == "deferred commit" else "put"
    done = getattr(services.uploads, step)

    def then_the_folder_goes(*args, **kwargs):
        progress = done(*args, **kwargs)
        if progress.file is not None:
            assert graph.delete(f"me/drive/items/{folder}").status_int == 204
        return progress

    monkeypatch.setattr(services.uploads, step, then_the_folder_goes)
    answer = graph.upload(url, b"abc", 0, 3)
    if how == "deferred commit":
        assert answer.status_int == 202
        answer = graph.testapp.post(graph.url(url), b"", expect_errors=True)
    assert answer.status_int == 201 and answer.json["name"] == "big.bin"
    assert answer.json["parentReference"]["id"] == folder and "path" not in answer.json["parentReference"]


def test_a_name_taken_by_a_folder_is_409_and_the_folder_stays(graph, folder):
    url = new_session(graph, "me/drive/root:/DIR:")  # names ignore case
    response = graph.upload(url, b"abc", 0, 3)
    assert response.status_int == 409
    assert graph_error(response)[0] == "nameAlreadyExists"
    assert graph.get("me/drive/root:/dir").json["id"] == folder


def test_a_wopi_lock_at_completion_is_423_and_the_session_is_kept(graph, services, client_for):
    old = simple_upload(graph, "a.docx", b"old")
    wopi = client_for(services.files.get(old["id"]))
    assert wopi.lock("L1").status_int == 200
    url = new_session(graph, f"me/drive/items/{old['id']}")
    refused = graph.upload(url, b"new", 0, 3)
    assert refused.status_int == 423
    assert graph_error(refused)[0] == "resourceLocked"
    assert wopi.op("UNLOCK", X_WOPI_Lock="L1").status_int == 200
    committed = graph.testapp.post(graph.url(url), b"", expect_errors=True)
    assert committed.status_int == 200 and committed.json["id"] == old["id"]
    assert content_of(graph, old["id"]) == b"new"


# -- deferCommit and commit through sourceUrl -------------------------------------------------------


def test_defer_commit_waits_for_a_post_on_the_upload_url(graph):
    content = data(600)
    url = new_session(graph, body={"deferCommit": True})
    answers = send(graph, url, content, 300)
    assert [a.status_int for a in answers] == [202, 202]
    assert answers[-1].json["nextExpectedRanges"] == []
    assert graph.get("me/drive/root:/big.bin").status_int == 404
    committed = graph.testapp.post(graph.url(url), b"", expect_errors=True)
    assert committed.status_int == 201
    assert committed.json["name"] == "big.bin" and committed.json["size"] == 600
    assert content_of(graph, committed.json["id"]) == content
    again = graph.testapp.post(graph.url(url), b"", expect_errors=True)
    assert again.status_int == 200 and again.json["id"] == committed.json["id"]


def test_the_final_fragment_of_a_deferred_session_again_answers_as_it_did(graph):
    """A client whose answer to the last fragment got lost sends it again: 202 with nothing more expected, as
    the first copy got, not 416; and still no file until the client says so."""
    content = data(600)
    url = new_session(graph, body={"deferCommit": True})
    last = send(graph, url, content, 300)[-1]
    again = graph.upload(url, content[300:], 300, 600)
    assert (last.status_int, again.status_int) == (202, 202), again.body
    assert again.json["nextExpectedRanges"] == []
    assert graph.get("me/drive/root:/big.bin").status_int == 404
    committed = graph.post(url)
    assert committed.status_int == 201 and content_of(graph, committed.json["id"]) == content


def test_defer_commit_of_an_existing_file_answers_200(graph):
    old = simple_upload(graph, "a.bin", b"old")
    url = new_session(graph, f"me/drive/items/{old['id']}", {"deferCommit": True})
    assert graph.upload(url, b"new!", 0, 4).status_int == 202
    assert content_of(graph, old["id"]) == b"old"
    committed = graph.testapp.post(graph.url(url), b"", expect_errors=True)
    assert committed.status_int == 200 and committed.json["id"] == old["id"]
    assert content_of(graph, old["id"]) == b"new!"


def test_committing_an_incomplete_session_is_400_and_keeps_it(graph):
    url = new_session(graph, body={"deferCommit": True})
    assert graph.upload(url, b"abc", 0, 6).status_int == 202
    response = graph.testapp.post(graph.url(url), b"", expect_errors=True)
    assert response.status_int == 400
    assert graph_error(response)[0] == "invalidRequest"
    assert graph.upload(url, b"def", 3, 6).status_int == 202
    assert graph.testapp.post(graph.url(url), b"", expect_errors=True).status_int == 201


@pytest.mark.parametrize("path", ["me/drive/root:/dir/final.bin", "me/drive/root:/dir/final.bin:"])
def test_defer_commit_through_source_url_naming_the_file(graph, folder, path):
    url = new_session(graph, "me/drive/root:/dir/final.bin:", {"deferCommit": True})
    assert graph.upload(url, b"deferred", 0, 8).status_int == 202
    committed = graph.put_json(path, {"@microsoft.graph.sourceUrl": url})
    assert committed.status_int == 201
    assert committed.json["name"] == "final.bin" and committed.json["parentReference"]["id"] == folder
    assert content_of(graph, committed.json["id"]) == b"deferred"


def test_defer_commit_through_source_url_naming_the_folder_and_a_name(graph, folder):
    url = new_session(graph, "me/drive/root:/staging.bin:", {"deferCommit": True})
    assert graph.upload(url, b"deferred", 0, 8).status_int == 202
    committed = graph.put_json("me/drive/root:/dir", {"@microsoft.graph.sourceUrl": url, "name": "placed.bin"})
    assert committed.status_int == 201
    assert committed.json["name"] == "placed.bin" and committed.json["parentReference"]["id"] == folder
    assert graph.get("me/drive/root:/staging.bin").status_int == 404
    assert content_of(graph, committed.json["id"]) == b"deferred"


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_source_url_commit_takes_a_name_equal_to_the_paths_in_another_unicode_form(graph, form):
    """As createUploadSession does: macOS's clients send names decomposed (NFD)."""
    url = new_session(graph, "me/drive/root:/staging.bin:", {"deferCommit": True})
    assert graph.upload(url, b"deferred", 0, 8).status_int == 202
    name = unicodedata.normalize(form, "résumé.bin")
    path = f"me/drive/root:/{quote(unicodedata.normalize('NFD' if form == 'NFC' else 'NFC', name))}"
    committed = graph.put_json(path, {"@microsoft.graph.sourceUrl": url, "name": name})
    assert committed.status_int == 201, committed.body
    assert committed.json["name"] == "résumé.bin"


def test_source_url_commit_checks_the_name_and_keeps_the_session(graph, folder):
    url = new_session(graph, "me/drive/root:/staging.bin:", {"deferCommit": True})
    assert graph.upload(url, b"deferred", 0, 8).status_int == 202
    refused = graph.put_json("me/drive/root:/dir", {"@microsoft.graph.sourceUrl": url, "name": "a:b*.txt"})
    assert refused.status_int == 400 and graph_error(refused)[0] == "invalidRequest"
    assert graph.get("me/drive/root:/dir:/children").json["value"] == []
    assert graph.post(url).status_int == 201  # the session was left as it was


@pytest.mark.parametrize("in_its_place", [True, False], ids=["another in its place", "nothing in its place"])
@pytest.mark.parametrize("path, body", [("root:/dir/final.bin", {}), ("root:/dir", {"name": "final.bin"})])
def test_a_source_url_commit_lands_in_the_folder_at_the_path_when_it_is_saved(
    graph, services, monkeypatch, folder, path, body, in_its_place
):
    """The folder dir is renamed away after the commit found it and before the session becomes the file, and maybe
    another folder made in its place: the file lands in the folder at the path then, as a commit a moment later
    would, or is refused as that commit would be (404 for the file's path, whose folder is gone; 400 for the folder's
    path and a name, as the path now names a new file of another name), and the session is kept; never in the
    folder that has gone elsewhere."""
    url = new_session(graph, "me/drive/root:/staging.bin:", {"deferCommit": True})
    assert graph.upload(url, b"deferred", 0, 8).status_int == 202
    root = graph.get("me/drive/root").json["id"]
    complete, placed = services.uploads.complete, []

    def after_a_meddling(*args, **kwargs):
        services.tree.update(graph.drive_id, folder, "alice", name="was-dir")
        if in_its_place:
            placed.append(services.tree.create_folder(root, "dir", "fail", "alice")[0].id)
        return complete(*args, **kwargs)

    monkeypatch.setattr(services.uploads, "complete", after_a_meddling)
    answer = graph.put_json(f"me/drive/{path}", {"@microsoft.graph.sourceUrl": url, **body})
    monkeypatch.undo()
    assert graph.get("me/drive/root:/was-dir:/children").json["value"] == []
    if not in_its_place:
        refused = (404, "itemNotFound") if body == {} else (400, "invalidRequest")
        assert (answer.status_int, graph_error(answer)[0]) == refused, answer.body
        assert graph.post(url).status_int == 201  # the session was left as it was
        return
    assert (answer.status_int, answer.json["parentReference"]["id"]) == (201, placed[0]), answer.body
    assert answer.json["name"] == "final.bin" and content_of(graph, answer.json["id"]) == b"deferred"


def test_a_source_url_commit_whose_token_is_revoked_before_it_lands_makes_nothing(graph, services, monkeypatch, folder):
    """The API token was live when the commit came, and is revoked before the session becomes the file (its pieces
    being joined): 401, as every write asks the token again where it lands; no file, and the session is kept."""
    url = new_session(graph, "me/drive/root:/staging.bin:", {"deferCommit": True})
    assert graph.upload(url, b"deferred", 0, 8).status_int == 202
    complete = services.uploads.complete

    def after_a_revocation(*args, **kwargs):
        with services.db.write() as s:
            assert services.tokens.revoke(s, token=graph.token) == 1
        return complete(*args, **kwargs)

    monkeypatch.setattr(services.uploads, "complete", after_a_revocation)
    answer = graph.put_json("me/drive/root:/dir/final.bin", {"@microsoft.graph.sourceUrl": url})
    monkeypatch.undo()
    assert answer.status_int == 401 and graph_error(answer)[0] == "unauthenticated", answer.body
    assert [f.name for f in services.files.list()] == []
    assert graph.post(url).status_int == 201  # the session was left as it was


def test_source_url_commit_lands_in_the_drive_it_names(graph, services):
    drive = services.drives.create_shared("group", "Team")
    services.drives.add_member(drive.id, "alice")
    url = new_session(graph, "me/drive/root:/mine.bin:", {"deferCommit": True})
    assert graph.upload(url, b"moved", 0, 5).status_int == 202
    committed = graph.put_json(f"groups/{drive.id}/drive/root:/theirs.bin", {"@microsoft.graph.sourceUrl": url})
    assert committed.status_int == 201 and committed.json["parentReference"]["driveId"] == drive.id
    assert graph.get(f"drives/{drive.id}/root:/theirs.bin:/content").body == b"moved"
    assert graph.get("me/drive/root:/mine.bin").status_int == 404


def test_a_member_removed_during_an_upload_cannot_complete_it(graph, services):
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "alice")
    url = new_session(graph, f"sites/{drive.id}/drive/root:/late.bin:")
    assert graph.upload(url, b"first", 0, 10).status_int == 202
    services.drives.remove_member(drive.id, "alice")
    refused = graph.upload(url, b"fifth", 5, 10)
    assert refused.status_int == 403 and graph_error(refused)[0] == "accessDenied"
    services.drives.add_member(drive.id, "alice")
    assert graph.get(f"sites/{drive.id}/drive/root/children").json["value"] == []


def test_the_upload_session_of_a_graph_file_serves_cspp_reads(graph, services, client_for):
    """A file whose content is the session's pieces (no copy) is an ordinary file for CSPP Plus too: its
    signature is chunked from those bytes and GetChunkedFile returns them."""
    content = data(300_000, seed=3)
    item = send(graph, new_session(graph, "me/drive/root:/big.bin:"), content, 100_000)[-1].json
    wopi = client_for(services.files.get(item["id"]))
    for _ in range(2):  # chunked from the bytes, then as remembered
        answer, message, payloads = get_chunked(wopi, [stream_filter(scheme="FullFile")])
        assert answer.status_int == 200, answer.headers
        order = [chunk["ChunkId"] for chunk in message["Signatures"][0]["ChunkSignatures"]]
        assert b"".join(payloads[chunk_id] for chunk_id in order) == content
    assert services.files.get(item["id"]).main_signature is not None


# -- quota --------------------------------------------------------------------------------------------


def test_a_file_size_over_the_quota_is_507_at_create(graph_with):
    graph, services = graph_with(drive_quota=1000)
    old = simple_upload(graph, "a.bin", data(600))
    response = create(graph, body={"item": {"fileSize": 401}})
    assert response.status_int == 507
    assert graph_error(response)[0] == "quotaLimitReached"
    assert services.sessions.list() == []
    assert create(graph, body={"item": {"fileSize": 400}}).status_int == 200
    # replacing a file needs only the difference
    assert create(graph, f"me/drive/items/{old['id']}", {"item": {"fileSize": 1000}}).status_int == 200


@pytest.mark.parametrize(("conflict", "answer"), [("replace", 200), ("rename", 507), ("fail", 507)])
def test_a_file_of_the_name_counts_against_the_quota_at_create_unless_the_upload_replaces_it(
    graph_with, conflict, answer
):
    """rename and fail leave the file of that name where it is, so its bytes stay: a fileSize that fits only
    in place of them is 507 before any byte is sent, not after the last."""
    graph, services = graph_with(drive_quota=1000)
    simple_upload(graph, "a.bin", data(600))
    body = {"item": {"fileSize": 900, "@microsoft.graph.conflictBehavior": conflict}}
    response = create(graph, "me/drive/root:/a.bin:", body)
    assert response.status_int == answer, response.body
    if answer == 507:
        assert graph_error(response)[0] == "quotaLimitReached"
        assert services.sessions.list() == []


def test_the_quota_at_completion_is_507_and_the_session_is_kept(graph_with):
    graph, _ = graph_with(drive_quota=1000)
    old = simple_upload(graph, "a.bin", data(600))
    url = new_session(graph)
    refused = graph.upload(url, data(500), 0, 500)
    assert refused.status_int == 507
    assert graph_error(refused)[0] == "quotaLimitReached"
    assert graph.get("me/drive/root:/big.bin").status_int == 404
    assert status(graph, url).status_int == 200
    assert graph.delete(f"me/drive/items/{old['id']}").status_int == 204
    committed = graph.put_json("me/drive/root:/big.bin", {"@microsoft.graph.sourceUrl": url})
    assert committed.status_int == 201 and committed.json["size"] == 500
    assert content_of(graph, committed.json["id"]) == data(500)


# -- the file, seen through WOPI --------------------------------------------------------------------


def test_an_uploaded_file_is_a_wopi_file_and_a_replacement_is_a_new_version(graph, services, client_for):
    content = data(1000, seed=1)
    item = send(graph, new_session(graph, "me/drive/root:/doc.docx:"), content, 600)[-1].json
    wopi = client_for(services.files.get(item["id"]))
    info = wopi.check_file_info()
    assert info.status_int == 200 and info.json["Size"] == 1000
    assert wopi.get_file().body == content
    replacement = data(700, seed=2)
    answers = send(graph, new_session(graph, f"me/drive/items/{item['id']}"), replacement, 400)
    assert answers[-1].status_int == 200
    after = wopi.check_file_info()
    assert after.json["Size"] == 700 and after.json["Version"] != info.json["Version"]
    assert wopi.get_file().body == replacement


# -- sessions of both kinds: listing, the per-user limit, sweeping --------------------------------------


def test_graph_sessions_are_listed_beside_cspp_ones(graph, services, wopi):
    new_session(graph)
    assert wopi.op("CREATE_UPLOAD_SESSION").status_int == 200
    sessions = services.sessions.list()
    assert sorted(s.kind for s in sessions) == ["cspp", "graph"]
    assert {s.user_id for s in sessions} == {"alice"}


def test_the_per_user_session_limit_counts_both_kinds(graph, graph_for, services, wopi, settings, clock):
    limit = settings.max_upload_sessions_per_user
    assert limit == 16
    first = new_session(graph)
    clock.advance(minutes=10)
    for _ in range(limit - 2):
        new_session(graph)
    assert wopi.op("CREATE_UPLOAD_SESSION").status_int == 200
    refused = create(graph)
    assert refused.status_int == 429
    assert graph_error(refused)[0] == "activityLimitReached"
    assert refused.headers["Retry-After"] == str(20 * 60)  # when the oldest expires
    assert wopi.op("CREATE_UPLOAD_SESSION").status_int == 429
    assert create(graph_for("bob")).status_int == 200  # another user is not bound
    clock.advance(minutes=20, seconds=1)
    assert status(graph, first).status_int == 404
    assert create(graph).status_int == 200


def test_completed_sessions_do_not_count_towards_the_limit(graph, settings):
    for n in range(settings.max_upload_sessions_per_user + 2):
        url = new_session(graph, f"me/drive/root:/f{n}.bin:")
        assert graph.upload(url, b"abc", 0, 3).status_int == 201, n


def test_cancelled_sessions_do_not_count_towards_the_limit(graph, settings):
    for _ in range(settings.max_upload_sessions_per_user + 2):
        url = new_session(graph)
        assert graph.testapp.delete(graph.url(url), expect_errors=True).status_int == 204


def test_sweep_removes_expired_graph_sessions_and_their_pieces(graph, services, settings, clock):
    before = stored_blobs(services)
    url = new_session(graph)
    for first in (0, 100):
        assert graph.upload(url, data(100), first, 300).status_int == 202
    assert len(stored_blobs(services) - before) == 2
    assert services.sessions.sweep() == 0
    assert status(graph, url).status_int == 200
    clock.advance(minutes=31)
    assert services.sessions.sweep() == 0 and status(graph, url).status_int == 404  # expired, kept PIECE_GRACE
    clock.advance(minutes=60)
    assert services.sessions.sweep() == 1
    assert services.sessions.list() == []
    assert stored_blobs(services) == before


def test_sweeping_a_completed_session_keeps_the_files_bytes(graph, services, clock):
    content = data(900)
    item = send(graph, new_session(graph), content, 300)[-1].json
    clock.advance(minutes=91)  # past its expiry and PIECE_GRACE
    services.sessions.sweep()
    assert [s for s in services.sessions.list() if s.kind == "graph"] == []
    assert content_of(graph, item["id"]) == content


# -- concurrent fragments -----------------------------------------------------------------------------


def race(app, url: str, bodies: list[bytes], content_range: str) -> list:
    """PUT each body at once, each through its own TestApp; the answers in the order of `bodies`."""
    barrier = threading.Barrier(len(bodies))
    answers: list = [None] * len(bodies)

    def put(i: int) -> None:
        client = webtest.TestApp(app)
        barrier.wait()
        answers[i] = client.put(
            url[len("https://wopi.example.test") :],
            bodies[i],
            headers={"Content-Range": content_range},
            expect_errors=True,
        )

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.parametrize("round_", range(4))
def test_two_puts_of_the_same_middle_range_keep_exactly_one(graph, app, round_):
    head, tail = data(100, seed=10), data(100, seed=11)
    bodies = [data(100, seed=20 + round_), data(100, seed=40 + round_)]
    url = new_session(graph, f"me/drive/root:/race{round_}.bin:")
    assert graph.upload(url, head, 0, 300).status_int == 202
    answers = race(app, url, bodies, "bytes 100-199/300")
    assert sorted(a.status_int for a in answers) == [202, 416], [a.body for a in answers]
    loser = next(a for a in answers if a.status_int == 416)
    assert graph_error(loser) == ("invalidRange", "fragmentOverlap")
    winner = bodies[[a.status_int for a in answers].index(202)]
    done = graph.upload(url, tail, 200, 300)
    assert done.status_int == 201
    assert content_of(graph, done.json["id"]) == head + winner + tail


@pytest.mark.parametrize("round_", range(4))
def test_two_puts_of_the_same_final_range_make_one_file(graph, app, round_):
    head, tail = data(100, seed=30 + round_), data(200, seed=50 + round_)
    url = new_session(graph, f"me/drive/root:/final{round_}.bin:")
    assert graph.upload(url, head, 0, 300).status_int == 202
    answers = race(app, url, [tail, tail], "bytes 100-299/300")
    # docs/graph.md 4.4: the copy that loses gets the item too, whether the first has become the file yet or not
    assert sorted(a.status_int for a in answers) == [200, 201], [a.body for a in answers]
    assert answers[0].json["id"] == answers[1].json["id"]
    assert content_of(graph, answers[0].json["id"]) == head + tail
    listed = graph.get("me/drive/root/children").json["value"]
    assert [i["name"] for i in listed] == [f"final{round_}.bin"]


# -- found in review: finished sessions, If-Match held to completion -----------------------------------


def test_a_finished_session_is_no_way_to_reach_its_file_elsewhere_or_later(graph, services):
    drive = services.drives.create_shared("site", "Team")
    services.drives.add_member(drive.id, "alice")
    url = new_session(graph, f"drives/{drive.id}/root:/secret.txt:")
    assert graph.upload(url, b"secret", 0, 6).status_int == 201
    elsewhere = graph.put_json("me/drive/root:/whatever.txt", {"@microsoft.graph.sourceUrl": url})
    assert elsewhere.status_int == 409 and graph_error(elsewhere)[0] == "conflict"
    services.drives.remove_member(drive.id, "alice")
    for answer in (graph.upload(url, b"secret", 0, 6), graph.post(url)):  # the repeat, the deferred finish
        assert answer.status_int == 403 and graph_error(answer)[0] == "accessDenied"


def test_if_match_at_create_holds_for_that_file_not_another_of_its_name(graph):
    """A new file at the path starts at the sequence number the deleted one had when If-Match accepted it."""
    original = simple_upload(graph, "doc.bin", b"original")
    url = new_session(graph, "me/drive/root:/doc.bin:", headers={"If-Match": original["eTag"]})
    assert graph.delete(f"me/drive/items/{original['id']}").status_int == 204
    other = simple_upload(graph, "doc.bin", b"someone else's")
    refused = graph.upload(url, b"mine", 0, 4)
    assert refused.status_int == 412 and graph_error(refused) == ("preconditionFailed", "entityTagDoesNotMatch")
    assert content_of(graph, other["id"]) == b"someone else's"


def test_if_match_at_create_still_holds_at_completion(graph):
    original = simple_upload(graph, "doc.bin", b"original")
    url = new_session(graph, "me/drive/root:/doc.bin:", headers={"If-Match": original["eTag"]})
    assert graph.upload(url, b"abc", 0, 6).status_int == 202
    simple_upload(graph, "doc.bin", b"someone else's")  # the file changes meanwhile
    refused = graph.upload(url, b"def", 3, 6)
    assert refused.status_int == 412 and graph_error(refused) == ("preconditionFailed", "entityTagDoesNotMatch")
    assert content_of(graph, original["id"]) == b"someone else's"
    assert status(graph, url).status_int == 200  # the session is kept, for a commit elsewhere
    renamed = graph.put_json("me/drive/root:/doc (mine).bin", {"@microsoft.graph.sourceUrl": url})
    assert renamed.status_int == 201 and content_of(graph, renamed.json["id"]) == b"abcdef"


@pytest.mark.parametrize(("tag", "answer"), [("eTag", 412), ("cTag", 200), ("*", 200)])
def test_if_match_at_create_holds_what_its_tag_names_through_a_rename(graph, tag, answer):
    """docs/graph.md 3: a rename changes the eTag and not the cTag, which changes only with the content."""
    original = simple_upload(graph, "doc.bin", b"original")
    url = new_session(graph, f"me/drive/items/{original['id']}", headers={"If-Match": original.get(tag, tag)})
    renamed = graph.patch_json(f"me/drive/items/{original['id']}", {"name": "renamed.bin"})
    assert renamed.status_int == 200 and renamed.json["cTag"] == original["cTag"]
    done = graph.upload(url, b"new content", 0, 11)
    assert done.status_int == answer, done.body
    assert content_of(graph, original["id"]) == (b"new content" if answer == 200 else b"original")


def test_if_match_with_the_ctag_at_create_refuses_a_file_whose_content_changed(graph):
    original = simple_upload(graph, "doc.bin", b"original")
    url = new_session(graph, "me/drive/root:/doc.bin:", headers={"If-Match": original["cTag"]})
    simple_upload(graph, "doc.bin", b"someone else's")
    refused = graph.upload(url, b"mine", 0, 4)
    assert refused.status_int == 412 and graph_error(refused) == ("preconditionFailed", "entityTagDoesNotMatch")
    assert content_of(graph, original["id"]) == b"someone else's"


def test_if_none_match_at_create_holds_nothing_to_completion(graph):
    """If-None-Match with a tag the file has moved on from passes at create; a later change of the file
    (which can only move it further from that tag) is no reason to refuse the upload."""
    first = simple_upload(graph, "doc.bin", b"first")
    simple_upload(graph, "doc.bin", b"second")
    url = new_session(graph, f"me/drive/items/{first['id']}", headers={"If-None-Match": first["eTag"]})
    assert graph.patch_json(f"me/drive/items/{first['id']}", {"name": "renamed.bin"}).status_int == 200
    done = graph.upload(url, b"third", 0, 5)
    assert done.status_int == 200, done.body
    assert content_of(graph, first["id"]) == b"third"
