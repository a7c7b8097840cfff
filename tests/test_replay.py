"""`wopihost replay` without a server: reading recordings, the command line's targets, filling in requests,
learning from answers and the rules that judge them, the report. Small recordings written here by hand in
the format of docs/testing.md; tests/e2e/test_replay_e2e.py replays real ones against real servers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from wopihost.cli import main
from wopihost.cspp import frames
from wopihost.cspp.wire import chunk_frames
from wopihost.localserver import free_port
from wopihost.replay import archive
from wopihost.replay.archive import RecordingError
from wopihost.replay.bindings import Bindings, Unbound, match_template
from wopihost.replay.compare import Answer, Difference, judge, show
from wopihost.replay.outgoing import CannotReplay, build
from wopihost.replay.player import DIVERGED, ERROR, MATCHED, Result, Run
from wopihost.replay.report import as_json, junit, latency, lines, percentile, summary
from wopihost.replay.targets import Targets, UsageProblem, bindings_for

HOST = "http://recorded.test:8080"
FILE = "AAAAAAAAAAAAAAAAAAAAAA"
URL = f"{HOST}/wopi/files/{FILE}?access_token={{{{access_token:1}}}}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def body(data: bytes | str | None, mime: str, request: bool = False, digest_only: bool = False) -> dict:
    raw = data.encode() if isinstance(data, str) else (data or b"")
    if digest_only:
        return {"mimeType": mime, ("_size" if request else "size"): len(raw), "_sha256": sha(raw)}
    size = {} if request else {"size": len(raw)}
    if isinstance(data, str):
        return {**size, "mimeType": mime, "text": data, "_sha256": sha(raw)}
    return {
        **size,
        "mimeType": mime,
        "text": base64.b64encode(raw).decode(),
        ("_encoding" if request else "encoding"): "base64",
        "_sha256": sha(raw),
    }


def entry(
    method: str = "GET",
    url: str = URL,
    status: int = 200,
    headers: dict | None = None,
    sent: dict | None = None,
    answer: object = None,
    response_headers: dict | None = None,
    operation: str | None = None,
    started: str = "2026-11-30T10:00:00.000Z",
) -> dict:
    """One exchange; `answer` is JSON (dict/list), bytes (binary), or None (no body)."""
    if isinstance(answer, bytes):
        content, mime = body(answer, "application/octet-stream"), "application/octet-stream"
    elif answer is None:
        content, mime = body(b"", ""), None
    else:
        content, mime = body(json.dumps(answer), "application/json"), "application/json"
    response_headers = {**({"Content-Type": mime} if mime else {}), **(response_headers or {})}
    headers = headers or {}
    return {
        "startedDateTime": started,
        "time": 5,
        "request": {
            "method": method,
            "url": url,
            "httpVersion": "HTTP/1.1",
            "headers": [{"name": k, "value": v} for k, v in headers.items()],
            "queryString": [],
            "cookies": [],
            "headersSize": -1,
            "bodySize": 0,
            **({"postData": sent} if sent is not None else {}),
        },
        "response": {
            "status": status,
            "statusText": "",
            "httpVersion": "HTTP/1.1",
            "headers": [{"name": k, "value": v} for k, v in response_headers.items()],
            "cookies": [],
            "content": content,
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": content["size"],
        },
        "cache": {},
        "timings": {"send": 0, "wait": 5, "receive": 0},
        "_wopihost": {"override": headers.get("X-WOPI-Override"), "operation": operation, "worker": 1},
    }


def har(*entries: dict, session: str = "{{access_token:1}}", max_body: int = 1 << 20) -> dict:
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "wopihost", "version": "0.1.0"},
            "comment": "",
            "_wopihost": {"session": session, "face": "wopi", "max_body": max_body},
            "pages": [],
            "entries": list(entries),
        }
    }


def recording(*entries: dict, **kwargs) -> archive.Recording:
    return archive.parse(har(*entries, **kwargs), "test.har")


def answer(status: int = 200, value: object = None, headers: dict | None = None, data: bytes | None = None) -> Answer:
    if value is not None:
        data = json.dumps(value).encode()
        headers = {"content-type": "application/json", **(headers or {})}
    data = data or b""
    return Answer(status, {k.lower(): v for k, v in (headers or {}).items()}, len(data), sha(data), data)


TARGET = Targets(wopisrc="http://replayed.test:9000/office/wopi/files/BBBBBBBBBBBBBBBBBBBBBB", token="TOKEN")


def start(rec: archive.Recording, targets: Targets = TARGET) -> Bindings:
    return bindings_for(rec, targets)


# -- reading a recording --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x89PNG...", "test.har is not a recording: it is not JSON"),
        (b"[]", "test.har is not a recording: the file has no HAR log object"),
        (
            json.dumps({"log": {"version": "1.1"}}).encode(),
            "test.har is not a recording: log.version is '1.1', not '1.2'",
        ),
        (
            json.dumps({"log": {"version": "1.2", "entries": []}}).encode(),
            "test.har is not a recording: log._wopihost is missing (a HAR written by another tool?)",
        ),
        (
            json.dumps(har(session="alice")).encode(),
            "test.har is not a recording: log._wopihost.session is 'alice', not a placeholder such as "
            "{{access_token:1}}",
        ),
        (json.dumps(har()).encode(), "test.har is not a recording: log.entries is empty: no requests to replay"),
        (
            json.dumps(har({**entry(), "request": {"method": "GET"}})).encode(),
            "test.har is not a recording: log.entries[0].request.url is missing",
        ),
        (
            json.dumps(har({**entry(), "startedDateTime": "yesterday"})).encode(),
            "test.har is not a recording: log.entries[0].startedDateTime is not an ISO 8601 time: 'yesterday'",
        ),
        (
            json.dumps(har(entry(status="200"))).encode(),
            "test.har is not a recording: log.entries[0].response.status is not an integer",
        ),
        (
            json.dumps(har(entry(url="http://[::1/wopi/files/B"))).encode(),
            "test.har is not a recording: log.entries[0].request.url is not an absolute http(s) URL: "
            "'http://[::1/wopi/files/B'",
        ),
        (
            json.dumps(har(entry(started="2026-11-30T10:00:00"))).encode(),
            "test.har is not a recording: log.entries[0].startedDateTime has no UTC offset: '2026-11-30T10:00:00'",
        ),
        (
            json.dumps(har(entry(operation="Check\ud800FileInfo"))).encode(),
            "test.har is not a recording: log.entries[0]._wopihost.operation is not valid Unicode (it holds an "
            "unpaired surrogate)",
        ),
    ],
)
def test_what_is_not_a_recording_is_refused_in_one_line(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "test.har").write_bytes(content)
    with pytest.raises(RecordingError) as refused:
        archive.read(Path("test.har"))
    assert str(refused.value) == message

    result = CliRunner().invoke(main, ["replay", "test.har", "--wopisrc", TARGET.wopisrc, "--token", "T"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"Error: {message}"]


def test_a_missing_file_is_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["replay", str(tmp_path / "none.har")])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"Error: {tmp_path / 'none.har'}: No such file or directory"]


def test_bodies_are_read_as_text_as_base64_or_as_a_digest():
    rec = recording(
        entry("POST", sent=body('{"a": 1}', "application/json", request=True), answer={"ok": True}),
        entry("POST", sent=body(b"\x00\x01", "application/octet-stream", request=True), answer=b"\xff"),
        entry("POST", sent=body(b"x" * 10, "", request=True, digest_only=True), answer=None),
    )
    first, second, third = rec.exchanges
    assert (first.body.data, first.body.text, first.content.data) == (b'{"a": 1}', True, b'{"ok": true}')
    assert (second.body.data, second.body.text, second.content.data) == (b"\x00\x01", False, b"\xff")
    assert (third.body.data, third.body.size, third.body.sha256) == (None, 10, sha(b"x" * 10))
    assert first.started == datetime.fromisoformat("2026-11-30T10:00:00.000+00:00")
    assert first.operation == "POST" and rec.session == "{{access_token:1}}" and rec.max_body == 1 << 20


# -- the command line's targets -------------------------------------------------------------------------------


def test_the_wopisrc_and_the_session_token_become_the_first_bindings():
    bindings = start(recording(entry()))
    assert bindings.url(URL) == "http://replayed.test:9000/office/wopi/files/BBBBBBBBBBBBBBBBBBBBBB?access_token=TOKEN"
    # Graph URLs on the same address keep their place under it
    graph = recording(entry(), entry(url=f"{HOST}/v1.0/me/drive"))
    assert start(graph).url(f"{HOST}/v1.0/me/drive") == "http://replayed.test:9000/office/v1.0/me/drive"


@pytest.mark.parametrize(
    "targets, message",
    [
        (
            Targets(token="T"),
            "the recording is of WOPI requests: give --wopisrc (the WOPISrc of the file to replay on)",
        ),
        (
            Targets(wopisrc=TARGET.wopisrc),
            "the recording's session is {{access_token:1}}: give its credential with --token",
        ),
        (
            Targets(wopisrc=TARGET.wopisrc, token="T", api_token="A"),
            "--api-token: the recording's session is {{access_token:1}}, not a Graph API token",
        ),
        (
            Targets(wopisrc="http://replayed.test/files/B?access_token=secret", token="T"),
            "--wopisrc must be a WOPISrc such as http://host/wopi/files/FILE_ID, not "
            "'http://replayed.test/files/B?access_token=[redacted]'",
        ),
        (
            Targets(wopisrc="http://[::1/wopi/files/B", token="T"),  # urlsplit's ValueError, once blamed elsewhere
            "--wopisrc must be a WOPISrc such as http://host/wopi/files/FILE_ID, not 'http://[::1/wopi/files/B'",
        ),
        (  # a port that is no port, or a space in the host: every request failed (status 1), not a usage error
            Targets(wopisrc="http://replayed.test:99999/wopi/files/B", token="T"),
            "--wopisrc must be a WOPISrc such as http://host/wopi/files/FILE_ID, not "
            "'http://replayed.test:99999/wopi/files/B'",
        ),
        (
            Targets(wopisrc="http://bad host/wopi/files/B", token="T"),
            "--wopisrc must be a WOPISrc such as http://host/wopi/files/FILE_ID, not 'http://bad host/wopi/files/B'",
        ),
        (
            Targets(wopisrc="http://replayed.test/wopi/containers/B", token="T"),
            "--wopisrc names containers, the recording's first WOPISrc files",
        ),
        (
            Targets(wopisrc=TARGET.wopisrc, token="T", graph_base="http://x/v1.0"),
            "--graph-base: the recording has no Graph request",
        ),
    ],
)
def test_a_command_line_that_does_not_fit_the_recording_is_refused(targets, message):
    with pytest.raises(UsageProblem) as refused:
        start(recording(entry()), targets)
    assert str(refused.value) == message


def test_graph_requests_go_to_the_graph_base_and_map_adds_what_no_answer_says():
    rec = recording(
        entry(
            url="http://old.test/v2.0/drives/DRIVEDRIVEDRIVE/root/children",
            headers={"Authorization": "Bearer {{api_token:1}}"},
        ),
        session="{{api_token:1}}",
    )
    with pytest.raises(UsageProblem, match="give --graph-base"):
        start(rec, Targets(api_token="A"))
    with pytest.raises(UsageProblem, match=r"--graph-base must be a Graph URL .* not 'http://x:8o80/v1.0'"):
        start(rec, Targets(graph_base="http://x:8o80/v1.0", api_token="A"))
    targets = Targets(
        graph_base="https://new.test/v1.0", api_token="A", maps=(("DRIVEDRIVEDRIVE", "NEWDRIVE"), ("{{share:1}}", "S"))
    )
    bindings = start(rec, targets)
    outgoing = build(rec.exchanges[0], bindings)
    assert outgoing.url == "https://new.test/v1.0/drives/NEWDRIVE/root/children"
    assert ("Authorization", "Bearer A") in outgoing.headers
    assert bindings.secrets["{{share:1}}"] == "S" and "{{share:1}}" in bindings.fixed

    result = CliRunner().invoke(main, ["replay", "x.har", "--map", "novalue"])
    assert result.exit_code == 2 and "--map takes OLD=NEW, not 'novalue'" in result.output


@pytest.mark.parametrize("timeout", ["0", "nan", "inf", "1e300"])
def test_a_timeout_no_request_can_wait_is_a_usage_error(timeout):
    """nan made every request "no answer" (a socket takes no NaN timeout); inf a traceback (OverflowError)."""
    result = CliRunner().invoke(main, ["replay", "x.har", "--timeout", timeout])
    assert result.exit_code == 2 and "Invalid value for '--timeout'" in result.stderr, result.output


# -- filling in requests ---------------------------------------------------------------------------------------


def test_a_request_needs_every_placeholder_it_carries():
    rec = recording(entry("PUT", url=f"{HOST}/v1.0/uploadSessions/{{{{upload_session:1}}}}"), entry())
    with pytest.raises(Unbound) as missing:
        build(rec.exchanges[0], start(rec))
    assert missing.value.placeholder == "{{upload_session:1}}"


def test_headers_connection_proof_and_proxy_headers_are_not_replayed_as_recorded():
    headers = {
        "Host": "recorded.test:8080",
        "Content-Length": "3",
        "Connection": "keep-alive",
        "X-WOPI-Override": "PUT",
        "X-WOPI-Lock": "L",
        "X-WOPI-Proof": "{{proof:1}}",
        "X-WOPI-ProofOld": "{{proof:2}}",
        "X-WOPI-TimeStamp": "638000000000000000",
        "X-WOPI-SequenceNumber": "3",
        "If-Match": '"{X},1"',
        "X-COOL-WOPI-Timestamp": "2026-11-30T10:00:00.0000000Z",
        "Cookie": "{{token:1}}",  # for a proxy that stood before the recorded host, not for this one
        "Proxy-Authorization": "Basic {{token:2}}",
        "Authorization": "Basic {{token:3}}",  # an SSO proxy's too: the host reads Bearer tokens only
    }
    rec = recording(entry("POST", headers=headers, sent=body(b"abc", "", request=True)))
    bindings = start(rec)
    bindings.sequences[3] = 7
    bindings.learn('"{X},1"', '"{Y},4"')
    bindings.learn("2026-11-30T10:00:00.0000000Z", "2026-12-01T00:00:00.0000000Z")
    outgoing = build(rec.exchanges[0], bindings)
    assert outgoing.proof and outgoing.body == b"abc"
    assert outgoing.headers == [
        ("X-WOPI-Override", "PUT"),
        ("X-WOPI-Lock", "L"),
        ("X-WOPI-SequenceNumber", "7"),
        ("If-Match", '"{Y},4"'),
        ("X-COOL-WOPI-Timestamp", "2026-12-01T00:00:00.0000000Z"),
    ]


def test_a_bearer_token_is_filled_in_with_the_session_token():
    rec = recording(entry(headers={"Authorization": "Bearer {{access_token:1}}"}))
    assert build(rec.exchanges[0], start(rec)).headers == [("Authorization", "Bearer TOKEN")]


def test_json_bodies_get_learned_ids_and_secrets():
    sent = {
        "parentReference": {"id": "FOLDERFOLDER01"},
        "@microsoft.graph.sourceUrl": f"{HOST}/v1.0/uploadSessions/{{{{upload_session:1}}}}",
        "name": "a.txt",
    }
    rec = recording(entry("PATCH", sent=body(json.dumps(sent), "application/json", request=True)))
    bindings = start(rec)
    bindings.learn("FOLDERFOLDER01", "FOLDERFOLDER02")
    bindings.bind({"{{upload_session:1}}": "SESSION"})
    filled = json.loads(build(rec.exchanges[0], bindings).body)
    assert filled == {
        "parentReference": {"id": "FOLDERFOLDER02"},
        "@microsoft.graph.sourceUrl": "http://replayed.test:9000/office/v1.0/uploadSessions/SESSION",
        "name": "a.txt",
    }


@pytest.mark.parametrize("mime", ["", "application/octet-stream", "text/plain"])
def test_json_sent_without_a_json_type_is_filled_in_as_json(mime):
    """Hosts read a body sent with no type (or another) as JSON all the same: the recording keeps it as base64
    when it holds no secret, as text when it does."""
    move = {"parentReference": {"id": "FOLDERFOLDER01"}}
    commit = {"@microsoft.graph.sourceUrl": f"{HOST}/v1.0/uploadSessions/{{{{upload_session:1}}}}"}
    rec = recording(
        entry(),
        entry(
            "PATCH",
            url=f"{HOST}/v1.0/me/drive/items/ItemItemItem01",
            sent=body(json.dumps(move).encode(), mime, request=True),
        ),
        entry("PUT", url=f"{HOST}/v1.0/me/drive/root:/a.txt", sent=body(json.dumps(commit), mime, request=True)),
    )
    bindings = start(rec)
    bindings.learn("FOLDERFOLDER01", "FOLDERFOLDER02")
    bindings.bind({"{{upload_session:1}}": "SESSION"})
    assert json.loads(build(rec.exchanges[1], bindings).body) == {"parentReference": {"id": "FOLDERFOLDER02"}}
    assert json.loads(build(rec.exchanges[2], bindings).body) == {
        "@microsoft.graph.sourceUrl": "http://replayed.test:9000/office/v1.0/uploadSessions/SESSION"
    }


@pytest.mark.parametrize(
    "method, url, operation, headers",
    [
        ("POST", URL.replace("?", "/contents?"), "PutFile", {"X-WOPI-Override": "PUT"}),
        ("POST", URL, "PutRelativeFile", {"X-WOPI-Override": "PUT_RELATIVE", "X-WOPI-SuggestedTarget": ".json"}),
        ("POST", URL, "PutUserInfo", {"X-WOPI-Override": "PUT_USER_INFO"}),
        ("PUT", f"{HOST}/v1.0/me/drive/root:/notes.json:/content", "graph PUT content", {}),
        ("PUT", f"{HOST}/v1.0/uploadSessions/{{{{upload_session:1}}}}", "graph PUT uploadSession", {}),
        ("PUT", f"{HOST}/v1.0/shares/{{{{share:1}}}}/driveItem:/notes.json:/content", "graph PUT share", {}),
    ],
)
@pytest.mark.parametrize("mime", ["application/json", "application/octet-stream", ""])
def test_a_document_that_is_json_is_sent_byte_for_byte(method, url, operation, headers, mime):
    notes = json.dumps({"see": f"{HOST}/v1.0/me/drive/root", "id": "FOLDERFOLDER01", "owner": "alice"}).encode()
    sent = body(notes.decode(), mime, request=True) if mime == "application/json" else body(notes, mime, request=True)
    rec = recording(entry(), entry(method, url=url, headers=headers, sent=sent, operation=operation))
    bindings = start(rec)
    bindings.learn("FOLDERFOLDER01", "FOLDERFOLDER02")
    bindings.learn("alice", "bob")
    bindings.bind({"{{upload_session:1}}": "SESSION", "{{share:1}}": "SHARE"})
    assert build(rec.exchanges[1], bindings).body == notes


def test_the_message_of_a_framed_body_is_filled_in_and_its_frames_kept_byte_for_byte():
    chunks = chunk_frames([("x528z/NDWJ8VewQfBqTVsQ==", b"\x00" * 40)])
    message = {"Signatures": [], "UploadSessionTokenToCommit": "{{session_token:1}}"}
    recorded = frames.message_frame(message) + chunks + frames.END_FRAME
    rec = recording(
        entry(
            "POST",
            url=URL.replace("?", "/contents?"),
            headers={"X-WOPI-Override": "PUT_CHUNKED_FILE"},
            sent=body(recorded, "application/octet-stream", request=True),
        )
    )
    bindings = start(rec)
    with pytest.raises(Unbound):
        build(rec.exchanges[0], bindings)
    bindings.bind({"{{session_token:1}}": "a-longer-session-token"})
    sent = build(rec.exchanges[0], bindings).body
    filled = frames.message_frame({**message, "UploadSessionTokenToCommit": "a-longer-session-token"})
    assert sent == filled + chunks + frames.END_FRAME


def test_json_nested_too_deep_to_fill_in_goes_as_recorded_but_for_its_placeholders():
    # a fuzzing client's: deep enough for Python to parse but not to walk
    deep = "[" * (sys.getrecursionlimit() // 2) + "]" * (sys.getrecursionlimit() // 2)
    sent = f'{{"token": "{{{{access_token:1}}}}", "deep": {deep}}}'
    rec = recording(entry(method="POST", sent=body(sent, "application/json", request=True)))
    assert build(rec.exchanges[0], start(rec)).body == sent.replace("{{access_token:1}}", "TOKEN").encode()
    framed = frames.message_frame({"Deep": json.loads(deep)}) + frames.END_FRAME
    override = {"X-WOPI-Override": "PUT_CHUNKED_FILE"}
    rec = recording(entry("POST", headers=override, sent=body(framed, "application/octet-stream", request=True)))
    assert build(rec.exchanges[0], start(rec)).body == framed


def test_a_body_recorded_as_a_digest_cannot_be_replayed():
    rec = recording(entry("POST", sent=body(b"x" * 5000, "", request=True, digest_only=True)), max_body=4096)
    with pytest.raises(CannotReplay) as refused:
        build(rec.exchanges[0], start(rec), rec.max_body)
    assert "recorded as a digest only, over the recording's body limit WOPIHOST_RECORD_MAX_BODY (4096 bytes)" in str(
        refused.value
    )


def test_a_body_recorded_only_in_part_cannot_be_replayed():
    """A PutFile whose body broke off (or the server answered before reading it all) holds fewer bytes than the
    client sent: sent as recorded, it would save a cut-off document where the client saved nothing."""
    partial = {**body(b"z" * 1000, "application/octet-stream", request=True), "_incomplete": True}
    rec = recording(entry("POST", headers={"X-WOPI-Override": "PUT"}, sent=partial, status=400))
    with pytest.raises(CannotReplay, match="holds only the 1000 bytes of its body the server read"):
        build(rec.exchanges[0], start(rec))
    whole = recording(entry("POST", headers={"X-WOPI-Override": "PUT"}, sent={**partial, "_incomplete": False}))
    assert build(whole.exchanges[0], start(whole)).body == b"z" * 1000


# -- learning and judging --------------------------------------------------------------------------------------


def judged(recorded: dict, actual: Answer, bindings: Bindings | None = None) -> list[Difference]:
    rec = recording(recorded)
    return judge(rec.exchanges[0], actual, bindings or start(rec)).differences


CHECK_FILE_INFO = {
    "BaseFileName": "Report.docx",
    "Size": 11,
    "Version": "1",
    "LastModifiedTime": "2026-11-30T10:00:00.1234560Z",
    "SequenceNumber": 3,
    "ServerTime": 1795339177000,
    "SupportsLocks": True,
    "HostEditUrl": f"{HOST}/host/edit/{{{{launch:1}}}}",
    "PostMessageOrigin": HOST,
    "OwnerId": "alice",
}


def test_an_answer_like_the_recorded_one_but_for_times_versions_and_urls_matches():
    actual = {
        **CHECK_FILE_INFO,
        "Version": "7",
        "LastModifiedTime": "2027-01-01T00:00:00Z",
        "SequenceNumber": 12,
        "ServerTime": 1800000000000,
        "HostEditUrl": "http://replayed.test:9000/office/host/edit/a.B.123.xyz",
        "PostMessageOrigin": "http://replayed.test:9000",
        "OwnerId": "bob",
    }
    bindings = start(recording(entry()))
    assert judged(entry(answer=CHECK_FILE_INFO), answer(value=actual), bindings) == []
    assert bindings.secrets["{{launch:1}}"] == "a.B.123.xyz"  # learned: a later request could use it
    assert bindings.sequences == {3: 12} and bindings.values["alice"] == "bob"


def test_what_differs_is_shown_by_its_json_path():
    actual = {
        **CHECK_FILE_INFO,
        "Size": 12,
        "Version": 1,
        "Extra": None,
        "HostEditUrl": "http://elsewhere.test/x",
        "PostMessageOrigin": "http://replayed.test:9000",
    }
    del actual["SupportsLocks"]
    assert judged(entry(answer=CHECK_FILE_INFO, response_headers={"X-WOPI-ItemVersion": "1"}), answer(401, actual)) == [
        Difference("status", "200", "401"),
        Difference("header X-WOPI-ItemVersion", "present", "absent"),
        Difference("$.Size", "11", "12"),
        Difference("$.Version", '"1"', "1"),
        Difference("$.SupportsLocks", "true", "absent"),
        Difference(
            "$.HostEditUrl",
            '"http://recorded.test:8080/host/edit/{{launch:1}}"',
            "a URL that leads to http://elsewhere.test, not http://replayed.test:9000",
        ),
        Difference("$.Extra", "absent", "null"),
    ]


def test_headers_by_value_by_presence_and_by_media_type():
    recorded = entry(
        "POST",
        status=409,
        response_headers={"X-WOPI-Lock": "L1", "X-WOPI-LockFailureReason": "locked", "Content-Type": "text/plain"},
    )
    same = {
        "X-WOPI-Lock": "L1",
        "X-WOPI-LockFailureReason": "another text",
        "Content-Type": "text/plain; charset=utf-8",
    }
    assert judged(recorded, answer(409, headers=same)) == []
    assert judged(recorded, answer(409, headers={"X-WOPI-Lock": "L2", "Content-Type": "application/json"})) == [
        Difference("header X-WOPI-Lock", '"L1"', '"L2"'),
        Difference("header X-WOPI-LockFailureReason", "present", "absent"),
        Difference("header Content-Type", "text/plain", "application/json"),
    ]


@pytest.mark.parametrize("header", ["X-WOPI-InvalidFileNameError", "X-WOPI-InvalidContainerNameError"])
def test_the_reason_a_name_is_refused_must_be_there(header):
    """CreateChildFile's and CreateChildContainer's 400 says why the name is invalid (docs/wopi.md), each in a
    header of its own: a host without it matched."""
    recorded = entry("POST", status=400, response_headers={header: "the name holds a character not allowed"})
    assert judged(recorded, answer(400, headers={header: "another text"})) == []
    assert judged(recorded, answer(400)) == [Difference(f"header {header}", "present", "absent")]


def test_a_coauth_lock_id_is_the_clients_and_compared_by_value():
    """A client names its coauth lock (X-WOPI-CoauthLockId) and finds it in the table by that name: a host that
    answers another passed, the recorded id learned as an id the host had chosen."""
    row = {"CoauthLockId": "C1", "CoauthLockType": "Coauth", "UserFriendlyName": "alice", "CoauthLockTime": 1}
    recorded = entry("POST", headers={"X-WOPI-Override": "GET_COAUTH_TABLE"}, answer={"CoauthTable": [row]})
    assert judged(recorded, answer(value={"CoauthTable": [row]})) == []
    assert judged(recorded, answer(value={"CoauthTable": [{**row, "CoauthLockId": "c1"}]})) == [
        Difference("$.CoauthTable[0].CoauthLockId", '"C1"', '"c1"')
    ]


def test_binary_bodies_are_compared_by_sha256():
    recorded, binary = entry(answer=b"content"), {"Content-Type": "application/octet-stream"}
    assert judged(recorded, answer(data=b"content", headers=binary)) == []
    assert judged(recorded, answer(data=b"altered", headers=binary)) == [
        Difference("body", f"7 bytes, SHA-256 {sha(b'content')[:16]}...", f"7 bytes, SHA-256 {sha(b'altered')[:16]}...")
    ]


def test_ids_are_learned_once_and_must_keep_their_meaning():
    rec = recording(
        entry(
            "POST",
            answer={
                "id": "ItemItemItemItemItem01",
                "parentReference": {"path": "/drives/DriveDriveDriveDrive01/root:"},
            },
        ),
        entry(url=f"{HOST}/v1.0/me/drive/items/ItemItemItemItemItem01", answer={"id": "ItemItemItemItemItem01"}),
    )
    bindings = start(rec)
    first, second = rec.exchanges
    actual = {"id": "X1", "parentReference": {"path": "/drives/D1/root:"}}
    assert judge(first, answer(200, actual), bindings).differences == []
    assert build(second, bindings).url == "http://replayed.test:9000/office/v1.0/me/drive/items/X1"
    assert judge(second, answer(value={"id": "X2"}), bindings).differences == [
        Difference("$.id", '"ItemItemItemItemItem01"', '"X2"')
    ]


def test_a_next_link_is_followed_with_the_ids_it_holds_learned():
    link = f"{HOST}/v1.0/me/drive/root/children?$top=2&$skiptoken=ItemItemItemItemItem01.b.txt"
    rec = recording(entry(answer={"@odata.nextLink": link}), entry(url=link))
    bindings = start(rec)
    actual = "http://replayed.test:9000/office/v1.0/me/drive/root/children?$top=2&$skiptoken=Other.b.txt"
    assert judge(rec.exchanges[0], answer(value={"@odata.nextLink": actual}), bindings).differences == []
    assert build(rec.exchanges[1], bindings).url == actual


def test_names_in_urls_are_not_learned_as_ids():
    recorded = {"Url": f"{HOST}/v1.0/me/drive/root:/Reports/Document1.docx"}
    actual = {"Url": "http://replayed.test:9000/office/v1.0/me/drive/root:/Reports/Document1 (2).docx"}
    assert judged(entry(answer=recorded), answer(value=actual)) == [
        Difference(
            "$.Url",
            show(recorded["Url"]),
            "a URL that has the path segment 'Document1 (2).docx' in place of 'Document1.docx'",
        )
    ]


def test_a_difference_shows_what_nothing_can_print_escaped():
    """A host may answer JSON's "\ud800": the report prints it (and its JUnit quotes it) as that escape."""
    (difference,) = judged(entry(answer={"a": "b"}), answer(value={"a": "\ud800"}))
    assert (difference.where, difference.recorded, difference.actual) == ("$.a", '"b"', '"\\ud800"')
    assert show("é") == '"é"'  # what can be printed is


def test_sequence_numbers_must_keep_the_recorded_order():
    rec = recording(
        entry("POST", response_headers={"X-WOPI-SequenceNumber": "1"}),
        entry("POST", response_headers={"X-WOPI-SequenceNumber": "2"}),
    )
    bindings = start(rec)
    assert judge(rec.exchanges[0], answer(headers={"X-WOPI-SequenceNumber": "5"}), bindings).differences == []
    assert judge(rec.exchanges[1], answer(headers={"X-WOPI-SequenceNumber": "5"}), bindings).differences == [
        Difference(
            "header X-WOPI-SequenceNumber",
            "sequence number 2",
            "5: the recording went from 1 to 2, this host from 5 to 5",
        )
    ]


def coauth_tables() -> archive.Recording:
    """GetCoauthLock, GetCoauthTable (current), UnlockCoauthLock, then GetCoauthTable sent the first version."""

    def table(version: str) -> dict:
        return entry("POST", response_headers={"X-WOPI-CoauthTableVersion": version})

    stale = {"X-WOPI-Override": "GET_COAUTH_TABLE", "X-WOPI-CoauthTableVersion": "1.1"}
    return recording(table("1.1"), table("1.1"), table("2.0"), entry("POST", headers=stale))


def test_the_coauth_table_version_a_client_sends_is_the_one_this_host_answered():
    rec = coauth_tables()
    bindings = start(rec)
    for exchange, version in zip(rec.exchanges, ("7.1", "7.1", "8.0")):
        assert judge(exchange, answer(headers={"X-WOPI-CoauthTableVersion": version}), bindings).differences == []
    assert ("X-WOPI-CoauthTableVersion", "7.1") in build(rec.exchanges[3], bindings).headers


def test_coauth_table_versions_must_change_where_the_recorded_ones_changed():
    first, second, third, _ = coauth_tables().exchanges
    bindings = start(coauth_tables())
    assert judge(first, answer(headers={"X-WOPI-CoauthTableVersion": "7.1"}), bindings).differences == []
    assert judge(second, answer(headers={"X-WOPI-CoauthTableVersion": "8.1"}), bindings).differences == [
        Difference(
            "header X-WOPI-CoauthTableVersion",
            "version 1.1",
            "8.1: the recording's stayed 1.1, this host's went from 7.1 to 8.1",
        )
    ]
    assert judge(third, answer(headers={"X-WOPI-CoauthTableVersion": "8.1"}), bindings).differences == [
        Difference(
            "header X-WOPI-CoauthTableVersion",
            "version 2.0",
            "8.1: the recording's went from 1.1 to 2.0, this host's stayed 8.1",
        )
    ]
    assert judge(third, answer(), bindings).differences == [
        Difference("header X-WOPI-CoauthTableVersion", "present", "absent")
    ]


def test_coauth_table_versions_are_each_files_own():
    """A host numbers each file's coauth table: file A's may be far along where B's starts, as in the recording
    both started at 1.1. Neither diverges, and a GetCoauthTable for A is sent A's version, not B's."""
    other = URL.replace(FILE, "OtherOtherOtherOther01")

    def table(url: str) -> dict:
        return entry("POST", url=url, response_headers={"X-WOPI-CoauthTableVersion": "1.1"})

    stale = {"X-WOPI-Override": "GET_COAUTH_TABLE", "X-WOPI-CoauthTableVersion": "1.1"}
    rec = recording(table(URL), table(other), entry("POST", url=URL, headers=stale))
    bindings = start(rec)
    assert judge(rec.exchanges[0], answer(headers={"X-WOPI-CoauthTableVersion": "6.1"}), bindings).differences == []
    assert judge(rec.exchanges[1], answer(headers={"X-WOPI-CoauthTableVersion": "1.1"}), bindings).differences == []
    assert ("X-WOPI-CoauthTableVersion", "6.1") in build(rec.exchanges[2], bindings).headers


def test_a_put_relative_file_url_teaches_the_new_file_and_its_token():
    recorded = {
        "Name": "Copy.docx",
        "Url": f"{HOST}/wopi/files/FileFileFileFileFile01?access_token={{{{access_token:2}}}}",
    }
    rec = recording(
        entry("POST", answer=recorded),
        entry(url=f"{HOST}/wopi/files/FileFileFileFileFile01?access_token={{{{access_token:2}}}}"),
    )
    bindings = start(rec)
    actual = {"Name": "Copy.docx", "Url": "http://replayed.test:9000/office/wopi/files/N2?access_token=SECOND"}
    assert judge(rec.exchanges[0], answer(value=actual), bindings).differences == []
    assert build(rec.exchanges[1], bindings).url == "http://replayed.test:9000/office/wopi/files/N2?access_token=SECOND"


def test_graph_values_that_always_differ():
    recorded = {
        "eTag": '"{A},1"',
        "quota": {"total": 100, "used": 11},
        "error": {"message": "text", "innerError": {"request-id": "1", "date": "2026-11-30T10:00:00Z"}},
        "nextExpectedRanges": ["0-99"],
    }
    actual = {
        "eTag": '"{B},3"',
        "quota": {"total": 5000, "used": 0},
        "error": {"message": "other text", "innerError": {"request-id": "2", "date": "2026-12-01T00:00:00Z"}},
        "nextExpectedRanges": ["0-99"],
    }
    assert judged(entry(answer=recorded), answer(value=actual)) == []
    assert judged(entry(answer=recorded), answer(value={**actual, "nextExpectedRanges": ["0-"]})) == [
        Difference("$.nextExpectedRanges[0]", '"0-99"', '"0-"')
    ]


# Every time the host answers in JSON, as it shapes it, once recorded and once at another time.
TIMES = [
    # CheckFileInfo (CSPP Plus): epoch milliseconds
    ({"ServerTime": 1795339177000, "AccessTokenExpiry": 1795375177000}, {"ServerTime": 1, "AccessTokenExpiry": 2}),
    # GetCoauthLock, RefreshCoauthLock, GetCoauthTable: epoch milliseconds
    (
        {"CoauthTable": [{"CoauthLockId": "C1", "CoauthLockTime": 1795960942523, "UserFriendlyName": "alice"}]},
        {"CoauthTable": [{"CoauthLockId": "C1", "CoauthLockTime": 1800000000000, "UserFriendlyName": "alice"}]},
    ),
    # CheckFileInfo, PutFile, EnumerateChildren: .NET's round trip format
    ({"LastModifiedTime": "2026-11-22T09:19:37.1234560Z"}, {"LastModifiedTime": "2027-01-01T00:00:00.0000000Z"}),
    (
        {"ChildFiles": [{"Name": "a.docx", "LastModifiedTime": "2026-11-22T09:19:37.1234560Z"}]},
        {"ChildFiles": [{"Name": "a.docx", "LastModifiedTime": "2026-12-22T09:19:37.1234560Z"}]},
    ),
    # Graph: a drive, a driveItem and its fileSystemInfo, an upload session, an error
    ({"createdDateTime": "2026-11-29T17:36:24.533Z"}, {"createdDateTime": "2026-12-01T00:00:00.001Z"}),
    (
        {
            "lastModifiedDateTime": "2026-11-29T17:36:25.032Z",
            "fileSystemInfo": {
                "createdDateTime": "2020-01-01T00:00:00Z",
                "lastModifiedDateTime": "2020-01-02T00:00:00Z",
            },
        },
        {
            "lastModifiedDateTime": "2026-12-29T17:36:25.032Z",
            "fileSystemInfo": {
                "createdDateTime": "2026-12-01T08:00:00Z",
                "lastModifiedDateTime": "2026-12-01T09:00:00Z",
            },
        },
    ),
    ({"expirationDateTime": "2026-11-29T18:06:24.688Z"}, {"expirationDateTime": "2026-11-30T18:06:24.688Z"}),
    (
        {"error": {"innerError": {"date": "2026-11-30T10:00:00Z"}}},
        {"error": {"innerError": {"date": "2026-12-01T10:00:00Z"}}},
    ),
    # a launch link (POST /host/links)
    ({"expiresAt": "2026-11-30T10:00:00.123456Z"}, {"expiresAt": "2026-11-30T20:00:00.654321Z"}),
]


@pytest.mark.parametrize("recorded, actual", TIMES)
def test_times_may_be_any_time(recorded, actual):
    assert judged(entry(answer=recorded), answer(value=actual)) == []


def test_a_time_must_still_be_a_time():
    recorded = {"CoauthTable": [{"CoauthLockTime": 1795960942523}], "LastModifiedTime": "2026-11-22T09:19:37Z"}
    actual = {"CoauthTable": [{"CoauthLockTime": "soon"}], "LastModifiedTime": "yesterday"}
    assert judged(entry(answer=recorded), answer(value=actual)) == [
        Difference("$.CoauthTable[0].CoauthLockTime", "1795960942523", '"soon"'),
        Difference("$.LastModifiedTime", '"2026-11-22T09:19:37Z"', '"yesterday"'),
    ]


def test_a_sequence_number_that_breaks_the_order_is_one_difference():
    rec = recording(entry(answer={"SequenceNumber": 1}), entry(answer={"SequenceNumber": 2}))
    bindings = start(rec)
    assert judge(rec.exchanges[0], answer(value={"SequenceNumber": 4}), bindings).differences == []
    assert judge(rec.exchanges[1], answer(value={"SequenceNumber": 3}), bindings).differences == [
        Difference("$.SequenceNumber", "sequence number 2", "3: the recording went from 1 to 2, this host from 4 to 3")
    ]


def test_a_text_body_with_placeholders_is_a_template():
    recorded = entry(response_headers={"Content-Type": "text/plain"})
    recorded["response"]["content"] = body("link: /s/{{share:1}} until tomorrow", "text/plain")
    rec = recording(recorded)
    bindings = start(rec)
    plain = {"Content-Type": "text/plain"}
    assert (
        judge(rec.exchanges[0], answer(data=b"link: /s/xyz until tomorrow", headers=plain), bindings).differences == []
    )
    assert bindings.secrets["{{share:1}}"] == "xyz"
    assert judge(rec.exchanges[0], answer(data=b"no link", headers=plain), bindings).differences == [
        Difference("body", "text of 35 bytes", "text that does not fit it")
    ]


def test_json_nested_too_deep_to_read_is_compared_by_its_digest():
    deep = "[" * (sys.getrecursionlimit() * 2) + "]" * (sys.getrecursionlimit() * 2)
    recorded = entry(response_headers={"Content-Type": "application/json"})
    recorded["response"]["content"] = body(deep, "application/json")
    rec = recording(recorded)
    same = answer(headers={"Content-Type": "application/json"}, data=deep.encode())
    assert judge(rec.exchanges[0], same, start(rec)).differences == []
    other = answer(headers={"Content-Type": "application/json"}, data=b"[]")
    assert [d.where for d in judge(rec.exchanges[0], other, start(rec)).differences] == ["body"]


def test_a_url_that_does_not_parse_is_a_difference_or_goes_as_recorded():
    """An IPv6 host without its closing bracket, which urllib cannot split: answered in place of a URL it is a
    difference; sent by the recorded client it goes as it was sent."""
    broken = "http://[::1/wopi/files/x?access_token=secret"
    recorded = entry(
        answer={"Url": f"{HOST}/wopi/files/{FILE}?access_token={{{{access_token:2}}}}"},
        response_headers={"Location": f"{HOST}/wopi/files/{FILE}"},
    )
    rec = recording(recorded)
    verdict = judge(rec.exchanges[0], answer(value={"Url": broken}, headers={"Location": broken}), start(rec))
    assert [(d.where, d.actual) for d in verdict.differences] == [
        ("header Location", "a URL that does not parse (Invalid IPv6 URL)"),
        ("$.Url", "a URL that does not parse (Invalid IPv6 URL)"),
    ]
    framed = frames.message_frame({"Target": broken}) + frames.END_FRAME
    override = {"X-WOPI-Override": "PUT_CHUNKED_FILE"}
    rec = recording(entry("POST", headers=override, sent=body(framed, "application/octet-stream", request=True)))
    assert build(rec.exchanges[0], start(rec)).body == framed


def test_a_sequence_number_of_digits_that_are_not_ascii_is_not_read_as_one():
    """A "²" is a digit to str.isdigit and no number to int: answered or recorded, it is a header like another."""
    rec = recording(entry(response_headers={"X-WOPI-SequenceNumber": "5"}))
    assert judge(rec.exchanges[0], answer(headers={"X-WOPI-SequenceNumber": "\u00b2"}), start(rec)).differences == []
    rec = recording(entry(headers={"X-WOPI-SequenceNumber": "\u00b2"}))
    assert ("X-WOPI-SequenceNumber", "\u00b2") in build(rec.exchanges[0], start(rec)).headers


def test_json_recorded_as_a_digest_only_is_not_compared_and_says_so():
    recorded = entry(response_headers={"Content-Type": "application/json"})
    recorded["response"]["content"] = body('{"a": 1}', "application/json", digest_only=True)
    rec = recording(recorded)
    verdict = judge(rec.exchanges[0], answer(value={"a": 2}), start(rec))
    assert verdict.differences == []
    assert verdict.notes == [
        "body not compared: the recording kept only the digest of its 8 bytes (over WOPIHOST_RECORD_MAX_BODY)"
    ]


def test_an_answer_recorded_only_in_part_is_not_compared_and_says_so():
    recorded = entry(answer=b"y" * 100)
    recorded["response"]["content"]["_incomplete"] = True
    rec = recording(recorded)
    whole = answer(data=b"x" * 300, headers={"Content-Type": "application/octet-stream"})
    verdict = judge(rec.exchanges[0], whole, start(rec))
    assert verdict.differences == []
    assert verdict.notes == ["body not compared: the recorded answer broke off after 100 bytes"]
    rec = recording(entry(answer=b"y" * 100))  # a whole one is compared
    assert [d.where for d in judge(rec.exchanges[0], whole, start(rec)).differences] == ["body"]


def test_templates_capture_placeholders():
    assert match_template("Bearer {{api_token:1}}", "Bearer abc") == {"{{api_token:1}}": "abc"}
    assert match_template("{{a:1}}.{{a:1}}", "x.y") is None
    assert match_template("/s/{{share:1}}/x", "/s/q/x") == {"{{share:1}}": "q"}
    assert match_template("token {{access_token:1}}", "token not a secret") is None  # a secret has no whitespace


def test_a_placeholder_given_on_the_command_line_stands_for_its_value():
    """A body holding the session's token (a document that quotes it) was judged to match whatever the host
    sent in its place: each placeholder captured anything."""
    bindings = Bindings()
    bindings.fix("{{access_token:1}}", "THE-NEW-TOKEN")
    assert bindings.match("PK token {{access_token:1}}", "PK token THE-NEW-TOKEN") == {}
    assert bindings.match("PK token {{access_token:1}}", "PK token SOMETHING-ELSE") is None
    assert bindings.match("{{access_token:1}} {{token:2}}", "THE-NEW-TOKEN xyz") == {"{{token:2}}": "xyz"}


def test_what_a_replay_shows_of_an_answer_holds_no_secret():
    bindings = Bindings()
    bindings.bind({"{{session_token:1}}": "SessionTokenValue22ch"})
    shown = bindings.redact('{"token": "SessionTokenValue22ch", "url": "http://h/x?access_token=abc"}')
    assert shown == '{"token": "{{session_token:1}}", "url": "http://h/x?access_token=[redacted]"}'


def test_a_short_token_given_on_the_command_line_does_not_garble_what_a_replay_shows():
    """`--token x` made every "x" of an error a placeholder: "Ma{{access_token:1}} retries e{{access_token:1}}ceeded"."""
    bindings = Bindings()
    bindings.fix("{{access_token:1}}", "x")
    assert bindings.redact("Max retries exceeded") == "Max retries exceeded"


# -- the report ---------------------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([7.0], 99) == 7.0


def test_the_report_lines_summary_and_junit():
    rec = recording(entry(operation="CheckFileInfo"), entry(operation="GetFile"), entry(operation="Lock"))
    first, second, third = rec.exchanges
    results = [
        Result(1, first, MATCHED, 200, seconds=0.004, notes=["body not compared: why"]),
        Result(1, second, DIVERGED, 404, [Difference("status", "200", "404")], seconds=0.002),
        Result(1, third, ERROR, error="it needs {{x:1}}"),
    ]
    run = Run(results, 1, 0.5)
    many = Result(1, second, DIVERGED, 404, [Difference(f"$.f{n}", "1", "2") for n in range(20)])
    assert lines(many)[-2:] == ["    $.f11: recorded 1, actual 2", "    ... and 8 more differences"]
    assert lines(results[1]) == [
        f"DIVERGED #2 GetFile GET /wopi/files/{FILE}?access_token={{{{access_token:1}}}}: 404, recorded 200 (2 ms)",
        "    status: recorded 200, actual 404",
    ]
    assert lines(results[2])[0].startswith("ERROR    #3 Lock GET") and lines(results[2])[0].endswith(
        ": it needs {{x:1}}"
    )
    assert summary(run) == "3 requests: 1 matched, 1 diverged, 1 error"
    assert summary(Run(results[:1], 1, 0.1)) == "1 request: 1 matched, 0 diverged, 0 errors"
    assert [line.split()[:2] for line in latency(run)[1:]] == [
        ["CheckFileInfo", "1"],
        ["GetFile", "1"],
        ["all", "2"],
        ["2", "answers"],
    ]
    reported = as_json(run)
    assert {k: reported[k] for k in ("requests", "matched", "diverged", "errors", "clients")} == {
        "requests": 3,
        "matched": 1,
        "diverged": 1,
        "errors": 1,
        "clients": 1,
    }
    assert reported["results"][1] == {
        "client": 1,
        "number": 2,
        "operation": "GetFile",
        "method": "GET",
        "url": f"/wopi/files/{FILE}?access_token={{{{access_token:1}}}}",
        "recorded_status": 200,
        "status": 404,
        "outcome": "diverged",
        "seconds": 0.002,
        "differences": [{"where": "status", "recorded": "200", "actual": "404"}],
        "notes": [],
        "error": None,
    }
    assert reported["latency_ms"]["all"] == {"count": 2, "p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0}
    suites = ET.fromstring(junit(run, rec))
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors")) == ("3", "1", "1")
    cases = suites.findall("testsuite/testcase")
    assert cases[1].find("failure").get("message") == "status: recorded 200, actual 404"
    assert cases[2].find("error").get("message") == "it needs {{x:1}}"
    # a passed request's notes (what was not compared) reach CI too
    assert cases[0].find("failure") is None and cases[0].find("system-out").text == "note: body not compared: why"
    assert cases[1].find("system-out") is None


def test_a_host_that_does_not_answer_gives_errors_that_show_no_token(tmp_path):
    (tmp_path / "s.har").write_text(json.dumps(har(entry(operation="CheckFileInfo"), entry(operation="GetFile"))))
    wopisrc = f"http://127.0.0.1:{free_port()}/wopi/files/{FILE}"
    result = CliRunner().invoke(
        main, ["replay", str(tmp_path / "s.har"), "--wopisrc", wopisrc, "--token", "secrettoken", "--timeout", "5"]
    )
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith(
        f"ERROR    #1 CheckFileInfo GET /wopi/files/{FILE}?access_token={{{{access_token:1}}}}: "
    )
    assert "no answer (ConnectionError: " in lines[0] and lines[1].startswith("ERROR    #2 GetFile")
    assert lines[-1] == "2 requests: 0 matched, 0 diverged, 2 errors"
    assert "secrettoken" not in result.output


@contextmanager
def serving(answer: Callable[[socket.socket], None], done: threading.Event | None = None) -> Iterator[str]:
    """A host on a loopback port that hands each connection to `answer`, in a thread of its own, while the block
    runs; its origin. `done` is set as the block ends, for answers that wait on it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        if done is not None:
            done.set()
        listener.close()


@contextmanager
def answering_host(content: bytes) -> Iterator[str]:
    """A host that answers every request 200 with `content` as JSON, one request a connection. Its origin."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(content)}\r\n"

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(head.encode() + b"Connection: close\r\n\r\n" + content)

    with serving(answer) as origin:
        yield origin


@contextmanager
def trickling_host(every: float = 0.2, until: float = 8.0, head: bool = False) -> Iterator[str]:
    """A host that answers every request's head at once and then its JSON body of 1000 bytes one byte every
    `every` seconds (with `head`, a header's value that way, the head never ending), for `until` seconds (then it
    sends nothing more): each read of its socket gets something in time, the answer never comes whole. Its
    origin."""
    done = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nX-Trickle: "
                    if head
                    else b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                )
                stop = time.monotonic() + until
                while not done.wait(every) and time.monotonic() < stop:
                    conn.sendall(b" ")
                done.wait()
            except OSError:  # the client gave up
                pass

    with serving(answer, done) as origin:
        yield origin


@contextmanager
def slow_reading_host(size: int, reading: float, answering: float) -> Iterator[str]:
    """A host that reads a request's body of `size` bytes over `reading` seconds, then answers 200 with a body of
    ten bytes, one every `answering` / 10 seconds: each write and each read of its socket goes through in time,
    the exchange takes `reading` + `answering`. Its origin."""
    done = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            try:
                got, begun = 0, time.monotonic()
                while got < size:  # the head too: a few bytes more than the body, read a little early
                    data = conn.recv(1 << 20)
                    if not data:
                        return
                    got += len(data)
                    done.wait(max(0.0, begun + reading * got / size - time.monotonic()))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
                for _ in range(10):
                    if done.wait(answering / 10):
                        return
                    conn.sendall(b" ")
            except OSError:  # the client gave up
                pass

    with serving(answer, done) as origin:
        yield origin


@contextmanager
def silent_host() -> Iterator[tuple[str, Callable[[int], None]]]:
    """A host that reads every request and never answers. Its origin, and a function that returns once it has
    read that many requests (a tool that has sent one is waiting for its answer)."""
    arrived = threading.Semaphore(0)
    held: list[socket.socket] = []

    def answer(conn: socket.socket) -> None:
        held.append(conn)
        try:
            conn.recv(65536)
        except OSError:
            return
        arrived.release()

    def wait_for(requests: int) -> None:
        for _ in range(requests):
            assert arrived.acquire(timeout=60), "the tool sent no request"

    try:
        with serving(answer) as origin:
            yield origin, wait_for
    finally:
        for conn in held:
            conn.close()


def _as_a_shell_starts_it() -> None:
    """SIGINT as a shell leaves it to the program it starts: default, not blocked. A child inherits both from the
    thread that starts it, and in the whole suite a pytest worker started the tool with SIGINT ignored or
    blocked (seen only there, after other tests: each of these timed out, the tool never interrupted)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def interrupted(command: list[str], wait_for: Callable[[int], None], requests: int) -> subprocess.CompletedProcess:
    """`command` run in a Python of its own, sent SIGINT (Ctrl-C) once `requests` of its requests have reached the
    host: its exit status and output."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    process = subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        preexec_fn=_as_a_shell_starts_it,
    )
    try:
        wait_for(requests)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.parametrize("clients", [1, 2])
def test_ctrl_c_ends_a_replay_with_a_line_and_status_130(tmp_path, clients):
    (tmp_path / "s.har").write_text(json.dumps(har(entry(operation="CheckFileInfo", answer={"Size": 1}))))
    with silent_host() as (origin, wait_for):
        done = interrupted(
            ["-c", "from wopihost.cli import main; main()", "replay", str(tmp_path / "s.har")]
            + ["--wopisrc", f"{origin}/wopi/files/{FILE}", "--token", "secrettoken", "--clients", str(clients)],
            wait_for,
            clients,
        )
    assert (done.returncode, done.stderr) == (130, "interrupted\n"), done.stderr


@pytest.mark.parametrize("head", [False, True], ids=["body", "head"])
def test_an_answer_that_does_not_come_whole_within_the_timeout_is_an_error(tmp_path, head):
    (tmp_path / "s.har").write_text(json.dumps(har(entry(operation="CheckFileInfo", answer={"Size": 1}))))
    with trickling_host(head=head) as origin:
        begun = time.monotonic()
        result = CliRunner().invoke(
            main,
            ["replay", str(tmp_path / "s.har"), "--wopisrc", f"{origin}/wopi/files/{FILE}", "--token", "secrettoken"]
            + ["--timeout", "1"],
        )
        took = time.monotonic() - begun
    assert result.exit_code == 1
    assert took < 5  # not until the host stops sending
    assert "no answer (" in result.output and "timed out" in result.output
    assert "secrettoken" not in result.output


def test_an_answer_is_redacted_before_it_is_cut_short(tmp_path):
    """What differs is shown up to 200 characters: a secret that runs past them is redacted all the same, not
    shown up to where the text was cut."""
    token = "s3cr3t-t0ken-of-the-replay-VALUE"
    (tmp_path / "s.har").write_text(json.dumps(har(entry(operation="CheckFileInfo", answer={"BaseFileName": "a"}))))
    answered = json.dumps({"BaseFileName": "x" * 185 + token}).encode()
    with answering_host(answered) as origin:
        wopisrc = f"{origin}/wopi/files/{FILE}"
        args = ["replay", str(tmp_path / "s.har"), "--wopisrc", wopisrc, "--token", token]
        result = CliRunner().invoke(main, args)
        as_json = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 1
    assert '$.BaseFileName: recorded "a", actual "xxx' in result.output
    assert "{{access_token:1}}" in result.output
    assert "s3cr3t" not in result.output + as_json.output
