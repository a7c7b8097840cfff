"""AddActivities (POST /wopi/files/<id>, X-WOPI-Override: ADD_ACTIVITIES): each activity answered on its own,
comments kept as sent, and the `wopihost activities` command that lists them."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
import webtest

from wopihost.app import create_app
from wopihost.clock import FrozenClock
from wopihost.config import Settings
from wopihost.models import Activity

from .helpers import WopiClient, revoke_or_expire, while_the_body_comes

MALFORMED_TIME = "2017-03-15T13:47:13000000Z"  # what Office sends: no dot before the fraction


def comment(activity_id: str = "act-1", action: str = "created", content_id: str = "comment-1", **data) -> dict:
    return {"Type": "comment", "Id": activity_id, "Data": {"ContentId": content_id, "ContentAction": action, **data}}


def add(wopi: WopiClient, body, token: str | None = None):
    """AddActivities as Office sends it: a JSON body (or raw bytes) with no Content-Type at all."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = webtest.TestRequest.blank(
        wopi.url(token=token), method="POST", headers={"X-WOPI-Override": "ADD_ACTIVITIES"}
    )
    request.body = raw
    request.environ.pop("CONTENT_TYPE", None)
    assert "CONTENT_TYPE" not in request.environ
    return wopi.testapp.do_request(request, status="*", expect_errors=True)


def add_ok(wopi: WopiClient, *activities) -> list[dict]:
    response = add(wopi, {"Activities": list(activities)})
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    assert response.content_type == "application/json"
    return response.json["ActivityResponses"]


def stored(services, file_id: str) -> dict[str, dict]:
    """What the host kept for a file: activity id -> the activity as sent."""
    return {a.activity_id: a.body for a in services.activities.of_file(file_id)}


def rows_of(services, file_id: str) -> int:
    with services.db.read() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(Activity).where(Activity.file_id == file_id))


# -- one comment ------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["created", "updated", "deleted"])
def test_a_minimal_comment_is_stored_and_its_id_echoed(wopi, services, action):
    activity = comment("AbC-Def_01", action, "Comment-XYZ")
    response = add(wopi, {"Activities": [activity]})
    assert response.status_int == 200
    assert response.json == {"ActivityResponses": [{"Id": "AbC-Def_01", "Status": 0}]}
    kept = services.activities.of_file(wopi.file_id)
    assert [(a.activity_id, a.user_id, a.type, a.body) for a in kept] == [("AbC-Def_01", "alice", "comment", activity)]


def test_a_full_comment_with_office_timestamps_is_kept_as_sent(wopi, services):
    activity = {
        "Type": "comment",
        "Id": "7c3b1d2e-0000-4a4a-9e9e-1234567890ab",
        "Timestamp": MALFORMED_TIME,
        "Data": {
            "ContentId": "{5B0D2C6A-1234-4F00-8E00-ABCDEF012345}",
            "ContentAction": "created",
            "NavigationId": "nav-42",
            "CommentText": "@Bob Dylan please check the figures — ünïcödé too",
            "IsReply": False,
            "Created": MALFORMED_TIME,
        },
        "People": [
            {"Name": "Bob Dylan", "Id": "bob@example.test", "Provider": "AAD", "Mentioned": True},
            {"Name": "Alice", "Id": "alice", "Provider": "WOPI", "Mentioned": False},
        ],
    }
    assert add_ok(wopi, activity) == [{"Id": activity["Id"], "Status": 0}]
    assert stored(services, wopi.file_id) == {activity["Id"]: activity}


def test_a_reply_is_a_comment_too(wopi, services):
    reply = comment("reply-1", "created", "comment-2", IsReply=True, CommentText="agreed")
    assert add_ok(wopi, reply) == [{"Id": "reply-1", "Status": 0}]
    assert stored(services, wopi.file_id)["reply-1"]["Data"]["IsReply"] is True


def test_unknown_properties_are_accepted_and_kept(wopi, services):
    activity = comment("extra-1", ActionSource="Ribbon", Nested={"a": [1, 2, None]})
    activity["FutureField"] = {"x": 1}
    activity["People"] = [{"Name": "Eve", "Mentioned": True, "Avatar": "https://example.test/e.png"}]
    assert add_ok(wopi, activity) == [{"Id": "extra-1", "Status": 0}]
    assert stored(services, wopi.file_id)["extra-1"] == activity


@pytest.mark.parametrize("field", ["ContentId", "NavigationId"])
def test_content_and_navigation_ids_up_to_1024_characters(wopi, services, field):
    longest = comment("long-ok")
    longest["Data"][field] = "x" * 1024
    too_long = comment("too-long")
    too_long["Data"][field] = "y" * 1025
    answers = add_ok(wopi, longest, too_long)
    assert answers[0] == {"Id": "long-ok", "Status": 0}
    assert answers[1]["Id"] == "too-long" and answers[1]["Status"] == 2
    assert field in answers[1]["Message"]
    assert set(stored(services, wopi.file_id)) == {"long-ok"}
    assert stored(services, wopi.file_id)["long-ok"]["Data"][field] == "x" * 1024


def test_ids_up_to_64_characters(wopi, services):
    answers = add_ok(wopi, comment("i" * 64), comment("j" * 65))
    assert answers[0] == {"Id": "i" * 64, "Status": 0}
    assert answers[1]["Status"] == 2 and answers[1]["Message"]
    assert set(stored(services, wopi.file_id)) == {"i" * 64}


@pytest.mark.parametrize("kind", ["like", "share", "Comment", "edit"])
def test_an_unknown_type_is_status_3_and_not_kept(wopi, services, kind):
    activity = {**comment("t-1"), "Type": kind}
    answers = add_ok(wopi, activity)
    assert [(a["Id"], a["Status"]) for a in answers] == [("t-1", 3)]
    assert answers[0]["Message"]
    assert stored(services, wopi.file_id) == {}


def test_each_activity_of_a_batch_is_answered_in_order(wopi, services):
    first = comment("first", "created", "c1")
    second = comment("second", "updated", "c1", CommentText="edited")
    batch = [
        first,
        comment("bad-action", "edited"),
        {**comment("some-like"), "Type": "like"},
        second,
        {"Type": "comment", "Id": "no-data"},
        comment("Third", "deleted", "c1"),
    ]
    answers = add_ok(wopi, *batch)
    assert [(a["Id"], a["Status"]) for a in answers] == [
        ("first", 0),
        ("bad-action", 2),
        ("some-like", 3),
        ("second", 0),
        ("no-data", 2),
        ("Third", 0),
    ]
    assert all("Message" not in a for a in answers if a["Status"] == 0)
    assert all(a["Message"] for a in answers if a["Status"] != 0)
    assert stored(services, wopi.file_id) == {"first": first, "second": second, "Third": batch[5]}


def test_ids_are_kept_with_their_case(wopi, services):
    answers = add_ok(wopi, comment("Mixed"), comment("mixed"), comment("MIXED"))
    assert [a["Id"] for a in answers] == ["Mixed", "mixed", "MIXED"]
    assert set(stored(services, wopi.file_id)) == {"Mixed", "mixed", "MIXED"}


def _without(activity: dict, *path: str) -> dict:
    activity = json.loads(json.dumps(activity))
    target = activity
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return activity


BAD_ACTIVITIES = {
    "missing Id": _without(comment("x"), "Id"),
    "empty Id": comment(""),
    "Id not a string": {**comment(), "Id": 12},
    "missing Type": _without(comment("x"), "Type"),
    "a string": "comment",
    "a number": 5,
    "null": None,
    "a list": [comment()],
    "missing Data": _without(comment("x"), "Data"),
    "Data not an object": {**comment("x"), "Data": "text"},
    "missing ContentId": _without(comment("x"), "Data", "ContentId"),
    "empty ContentId": comment("x", content_id=""),
    "ContentId not a string": comment("x", content_id=7),
    "missing ContentAction": _without(comment("x"), "Data", "ContentAction"),
    "unknown ContentAction": comment("x", "edited"),
    "ContentAction in capitals": comment("x", "Created"),
    "ContentAction not a string": comment("x", 1),
    "IsReply a string": comment("x", IsReply="true"),
    "IsReply a number": comment("x", IsReply=1),
    "IsReply null": comment("x", IsReply=None),
    "NavigationId empty": comment("x", NavigationId=""),
    "CommentText not a string": comment("x", CommentText=["hi"]),
    "People not a list": {**comment("x"), "People": {"Name": "Bob"}},
    "a person not an object": {**comment("x"), "People": ["Bob"]},
    "Mentioned not a bool": {**comment("x"), "People": [{"Name": "Bob", "Mentioned": "yes"}]},
    "a person's Name not a string": {**comment("x"), "People": [{"Name": 3}]},
}


@pytest.mark.parametrize("activity", BAD_ACTIVITIES.values(), ids=BAD_ACTIVITIES.keys())
def test_a_malformed_activity_is_status_2_and_the_rest_is_stored(wopi, services, activity):
    good = comment("good-one")
    answers = add_ok(wopi, activity, good)
    assert len(answers) == 2
    assert answers[0]["Status"] == 2 and answers[0]["Message"]
    assert isinstance(answers[0]["Id"], str)
    if isinstance(activity, dict) and isinstance(activity.get("Id"), str):
        assert answers[0]["Id"] == activity["Id"]
    assert answers[1] == {"Id": "good-one", "Status": 0}
    assert stored(services, wopi.file_id) == {"good-one": good}


# -- the body as a whole -------------------------------------------------------------------------------

BAD_BODIES = {
    "not JSON": b'{"Activities": [',
    "empty": b"",
    "not UTF-8": b"\xff\xfe{}",
    "a list": json.dumps([comment()]).encode(),
    "a string": b'"Activities"',
    "null": b"null",
    "Activities missing": json.dumps({"activities": [comment()]}).encode(),
    "Activities empty": json.dumps({"Activities": []}).encode(),
    "Activities an object": json.dumps({"Activities": comment()}).encode(),
    "Activities a string": json.dumps({"Activities": "comment"}).encode(),
    "Activities null": json.dumps({"Activities": None}).encode(),
    "101 activities": json.dumps({"Activities": [comment(f"a{i}") for i in range(101)]}).encode(),
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_malformed_body_is_400_and_stores_nothing(wopi, services, body):
    response = add(wopi, body)
    assert response.status_int == 400
    assert response.headers["X-WOPI-FailureReason"]
    assert rows_of(services, wopi.file_id) == 0


def test_100_activities_are_allowed(wopi, services):
    answers = add_ok(wopi, *[comment(f"a{i:03}") for i in range(100)])
    assert [a["Status"] for a in answers] == [0] * 100
    assert [a["Id"] for a in answers] == [f"a{i:03}" for i in range(100)]
    assert rows_of(services, wopi.file_id) == 100


def _padded(size: int) -> bytes:
    """A valid AddActivities body of exactly `size` bytes (whitespace after the JSON)."""
    body = json.dumps({"Activities": [comment("padded")]}).encode()
    return body + b" " * (size - len(body))


def test_a_body_of_1_mib_is_accepted(wopi, services):
    response = add(wopi, _padded(1 << 20))
    assert response.status_int == 200
    assert response.json == {"ActivityResponses": [{"Id": "padded", "Status": 0}]}


def test_a_body_over_1_mib_is_413_and_stores_nothing(wopi, services):
    response = add(wopi, _padded((1 << 20) + 1))
    assert response.status_int == 413
    assert response.headers["X-WOPI-FailureReason"]
    assert rows_of(services, wopi.file_id) == 0


def test_a_chunked_body_over_1_mib_is_413_and_stores_nothing(wopi, services):
    response = wopi.raw_post("", io.BytesIO(_padded(3 << 20)), None, X_WOPI_Override="ADD_ACTIVITIES")
    assert response.status_int == 413
    assert response.headers["X-WOPI-FailureReason"]
    assert rows_of(services, wopi.file_id) == 0


ODD_TEXT = {"NUL": "nul \u0000 in it", "surrogate": "lone \ud800 surrogate"}


def _odd(where: str, text: str) -> dict:
    activity = comment("odd")
    if where == "Id":
        activity["Id"] = text
    elif where == "People.Name":
        activity["People"] = [{"Name": text, "Mentioned": True}]
    else:
        activity["Data"][where] = text
    return activity


# Once a 500: a lone surrogate (valid JSON as "\ud800") failed to encode on both databases, and a NUL in the
# Id (a column of its own, where json.dumps does not escape it) failed on PostgreSQL.
@pytest.mark.parametrize("where", ["CommentText", "ContentId", "People.Name", "Id"])
@pytest.mark.parametrize("text", ODD_TEXT.values(), ids=ODD_TEXT.keys())
def test_text_the_database_cannot_hold_is_not_a_500(wopi, services, where, text):
    """README: malformed bodies get 400, never 500, text the database cannot hold (NUL, unpaired surrogates)
    included. Such an activity may be refused on its own (Status 2) or kept exactly; either way the request is
    answered and the other activities are kept."""
    odd, good = _odd(where, text), comment("good")
    response = add(wopi, json.dumps({"Activities": [odd, good]}).encode())  # \u escapes: valid JSON
    assert response.status_int != 500, response.headers.get("X-WOPI-FailureReason")
    assert response.status_int == 200
    answers = response.json["ActivityResponses"]
    assert answers[1] == {"Id": "good", "Status": 0}
    assert answers[0]["Status"] in (0, 2)
    kept = stored(services, wopi.file_id)
    assert "good" in kept
    if answers[0]["Status"] == 0:
        assert odd in kept.values()
    else:
        assert len(kept) == 1


def test_an_activity_nested_too_deeply_is_refused_on_its_own(wopi, services):
    nested: list = []
    for _ in range(40):
        nested = [nested]
    answers = add_ok(wopi, comment("deep", Extra=nested), comment("good"))
    assert answers[0]["Status"] == 2 and "nested" in answers[0]["Message"]
    assert answers[1] == {"Id": "good", "Status": 0}
    assert list(stored(services, wopi.file_id)) == ["good"]


# -- repeats, files, tokens --------------------------------------------------------------------------


def test_the_same_activity_sent_twice_is_stored_once(wopi, services):
    first = comment("retry-1", CommentText="original")
    assert add_ok(wopi, first) == [{"Id": "retry-1", "Status": 0}]
    assert add_ok(wopi, comment("retry-1", CommentText="resent")) == [{"Id": "retry-1", "Status": 0}]
    assert rows_of(services, wopi.file_id) == 1
    assert stored(services, wopi.file_id) == {"retry-1": first}


def test_the_same_id_twice_in_one_batch_is_stored_once(wopi, services):
    first = comment("dup", CommentText="one")
    answers = add_ok(wopi, first, comment("dup", CommentText="two"))
    assert answers == [{"Id": "dup", "Status": 0}, {"Id": "dup", "Status": 0}]
    assert stored(services, wopi.file_id) == {"dup": first}


def test_the_same_id_on_two_files_is_two_activities(wopi, make_file, client_for, services):
    other = client_for(make_file(name="Other.docx"))
    add_ok(wopi, comment("shared-id", CommentText="on the first"))
    add_ok(other, comment("shared-id", CommentText="on the second"))
    assert stored(services, wopi.file_id)["shared-id"]["Data"]["CommentText"] == "on the first"
    assert stored(services, other.file_id)["shared-id"]["Data"]["CommentText"] == "on the second"


def test_activities_are_stored_under_the_tokens_user(make_file, client_for, services):
    file = make_file()
    add_ok(client_for(file, "bob"), comment("by-bob"))
    assert [a.user_id for a in services.activities.of_file(file.id)] == ["bob"]


def test_a_read_only_token_may_add_activities(make_file, client_for, services):
    """docs/wopi.md §3.16: commenting is not editing the file."""
    file = make_file()
    reader = client_for(file, "viewer", can_write=False)
    assert add_ok(reader, comment("from-a-reader")) == [{"Id": "from-a-reader", "Status": 0}]
    assert [(a.activity_id, a.user_id) for a in services.activities.of_file(file.id)] == [("from-a-reader", "viewer")]


def test_a_deleted_file_is_404(wopi, services):
    assert wopi.op("DELETE").status_int == 200
    response = add(wopi, {"Activities": [comment()]})
    assert response.status_int == 404
    assert response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize("token", ["", "garbage", "abc" * 50])
def test_a_bad_token_is_401(wopi, services, token):
    response = add(wopi, {"Activities": [comment()]}, token=token)
    assert response.status_int == 401
    assert rows_of(services, wopi.file_id) == 0


def test_another_files_token_is_401(wopi, make_file, client_for, services):
    other = client_for(make_file(name="Other.docx"))
    response = add(wopi, {"Activities": [comment()]}, token=other.token)
    assert response.status_int == 401
    assert rows_of(services, wopi.file_id) == 0 and rows_of(services, other.file_id) == 0


def test_a_revoked_token_is_401(wopi, services):
    with services.db.write() as s:
        services.tokens.revoke(s, token=wopi.token)
    assert add(wopi, {"Activities": [comment()]}).status_int == 401
    assert rows_of(services, wopi.file_id) == 0


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_token_revoked_or_expired_while_the_activities_come_stores_none(wopi, services, clock, how):
    """The token was live when AddActivities began, and is not once its body is in: 401, as PutFile's, and
    nothing is stored."""
    wopi.token = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(minutes=10)).token
    body = json.dumps({"Activities": [comment()]}).encode()

    def meanwhile() -> None:
        revoke_or_expire(services, clock, wopi.token, how)

    answer = while_the_body_comes(
        lambda held: wopi.raw_post("", held, len(body), X_WOPI_Override="ADD_ACTIVITIES"), body, meanwhile
    )
    assert answer.status_int == 401 and answer.headers["X-WOPI-FailureReason"]
    assert rows_of(services, wopi.file_id) == 0


def test_check_file_info_announces_add_activities(wopi):
    assert wopi.check_file_info().json["SupportsAddActivities"] is True


def test_activities_go_when_the_file_is_deleted(wopi, make_file, client_for, services):
    other = client_for(make_file(name="Other.docx"))
    add_ok(wopi, comment("a1"), comment("a2"))
    add_ok(other, comment("b1"))
    assert wopi.op("DELETE").status_int == 200
    assert rows_of(services, wopi.file_id) == 0
    assert set(stored(services, other.file_id)) == {"b1"}


def test_activities_go_when_the_files_folder_is_deleted(services, client_for, graph):
    file = services.add_file("alice", "Inner.docx", io.BytesIO(b"inner"), ["Folder"])
    add_ok(client_for(file), comment("in-folder"))
    assert rows_of(services, file.id) == 1
    assert graph.delete("me/drive/root:/Folder:").status_int == 204
    assert rows_of(services, file.id) == 0


# -- wopihost activities FILE_ID -------------------------------------------------------------------------


@pytest.fixture
def host_clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def served(env, host_clock):
    """The host on the CLI's database, on a clock the test moves."""
    app = create_app(Settings.from_env(env), host_clock)
    yield app
    app.extensions["wopihost"].db.dispose()


@pytest.fixture
def cli_file(run, served, tmp_path) -> WopiClient:
    source = tmp_path / "Notes.docx"
    source.write_bytes(b"notes")
    file_id = json.loads(run("files", "add", str(source), "--owner", "carol", "--json").output)["id"]
    token = served.extensions["wopihost"].issue_token(file_id, "carol", True).token
    return WopiClient(webtest.TestApp(served), file_id, token)


def test_cli_lists_activities_oldest_first(run, cli_file, host_clock):
    first = comment("zz-first", "created", "thread-1", CommentText="Please check, @Dan")
    first["People"] = [
        {"Name": "Dan Brown", "Id": "dan", "Mentioned": True},
        {"Name": "Quiet Person", "Id": "quiet", "Mentioned": False},
    ]
    add_ok(cli_file, first)
    host_clock.advance(seconds=5)
    add_ok(cli_file, comment("aa-second", "deleted", "thread-2"))
    lines = [line for line in run("activities", cli_file.file_id).output.splitlines() if line.strip()]
    assert len(lines) == 2
    assert "comment" in lines[0] and "created" in lines[0] and "thread-1" in lines[0]
    assert "Please check, @Dan" in lines[0]
    assert "Dan Brown" in lines[0] and "Quiet Person" not in lines[0]
    assert "carol" in lines[0]
    assert "comment" in lines[1] and "deleted" in lines[1] and "thread-2" in lines[1]
    assert "thread-1" not in lines[1] and "mentions" not in lines[1]


def test_cli_lists_activities_as_json(run, cli_file, host_clock):
    first = comment("zz-first", "created", "thread-1", CommentText="hello")
    first["People"] = [{"Name": "Dan", "Mentioned": True}]
    second = comment("aa-second", "updated", "thread-1", CommentText="hello again")
    add_ok(cli_file, first)
    host_clock.advance(seconds=1)
    add_ok(cli_file, second)
    listed = json.loads(run("activities", cli_file.file_id, "--json").output)
    assert [(a["id"], a["user"], a["type"], a["activity"]) for a in listed] == [
        ("zz-first", "carol", "comment", first),
        ("aa-second", "carol", "comment", second),
    ]
    assert listed[0]["received"] < listed[1]["received"]


def test_cli_says_when_there_are_none(run, cli_file):
    assert run("activities", cli_file.file_id).output.strip() == "no activities"
    assert json.loads(run("activities", cli_file.file_id, "--json").output) == []


def test_cli_refuses_an_unknown_file(run, cli_file):
    result = run("activities", "NoSuchFile0000000000", ok=False)
    assert result.exit_code != 0
    assert "not found" in result.output
