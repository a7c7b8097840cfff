"""`serve --record`: redaction into placeholders, the recorder as a WSGI layer of the real app, and assembly of
the spool into HAR files (one per session, secrets numbered across the recording). The end-to-end run under
gunicorn is tests/e2e/test_recording_e2e.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socketserver
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import webtest
from click.testing import CliRunner

from wopihost.app import create_app
from wopihost.cli import main
from wopihost.credentials import SHAPES
from wopihost.cspp.frames import ChunkData, EndFrame, FrameDecoder, MessageJSON, message_frame_size
from wopihost.cspp.wire import chunk_frames, put_chunked_body
from wopihost.har import PLACEHOLDER
from wopihost.logs import REDACTED, redact
from wopihost.recording import assemble
from wopihost.recording.redaction import SPOOLED, Redactor
from wopihost.recording.spool import SPOOL, SpoolFile, SpoolWriter, spool_files
from wopihost.replay.archive import read as read_recording
from wopihost.replay.outgoing import CannotReplay, build
from wopihost.replay.targets import Targets, bindings_for

from .cspp_helpers import full_file
from .helpers import GraphClient, WopiClient
from .test_logs import CREDENTIAL_URL_LINES, TOKEN, TOKEN_LINES

KEY = "the server's secret key"
WITHHELD = (
    "it holds a secret and is not UTF-8 text, in which a placeholder could replace it: only its size and SHA-256 "
    "are recorded"
)


# -- redaction ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "secret"),
    [
        (f"https://h/wopi/files/x?access_token={TOKEN}&b=2", "access_token", TOKEN),
        ("https://h/wopi/files/x?access_token%3Dshort%26b%3D2", "access_token", "short%26b%3D2"),
        ('{"access_token":"abc123"}', "access_token", "abc123"),
        ('{"UploadSessionToken":"ZLLSZyyckVxSgzA9g8FxcA"}', "session_token", "ZLLSZyyckVxSgzA9g8FxcA"),
        ('{"UploadSessionTokenToCommit": "ZLLSZyyckVxSgzA9g8FxcA"}', "session_token", "ZLLSZyyckVxSgzA9g8FxcA"),
        (
            "https://h/v1.0/drives/b/items/i/uploadSessions/ZLLSZyyckVxSgzA9g8FxcA",
            "upload_session",
            "ZLLSZyyckVxSgzA9g8FxcA",
        ),
        ("https://h/wopi/download/jti.file.1796021373.sig", "download", "jti.file.1796021373.sig"),
        ("https://h/v1.0/downloads/ZLLSZyyckVxSgzA9g8FxcA", "download", "ZLLSZyyckVxSgzA9g8FxcA"),
        ("https://h/s/ZLLSZyyckVxSgzA9g8FxcA", "share", "ZLLSZyyckVxSgzA9g8FxcA"),
        ("https://h/v1.0/shares/u!aHR0cHM6Ly9oL3MvWkxMU1p5/driveItem", "share", "u!aHR0cHM6Ly9oL3MvWkxMU1p5"),
        ("https://h/host/edit/jti.file.1796021373.sig", "launch", "jti.file.1796021373.sig"),
        # JSON may write "/" as "\/" (PHP's json_encode does)
        (r'"https:\/\/h\/v1.0\/uploadSessions\/ZLLSZyyckVxSgzA9g8FxcA"', "upload_session", "ZLLSZyyckVxSgzA9g8FxcA"),
        (r'"https:\/\/h\/wopi\/download\/ZLLSZyyckVxSgzA9g8FxcA"', "download", "ZLLSZyyckVxSgzA9g8FxcA"),
        (r'"https:\/\/h\/s\/ZLLSZyyckVxSgzA9g8FxcA\/content"', "share", "ZLLSZyyckVxSgzA9g8FxcA"),
        (r'"https:\/\/h\/host\/view\/ZLLSZyyckVxSgzA9g8FxcA"', "launch", "ZLLSZyyckVxSgzA9g8FxcA"),
        (f"a token {TOKEN.upper()} alone", "token", TOKEN.upper()),
        ("failed: jti.file.1796021373." + "s" * 43, "token", "jti.file.1796021373." + "s" * 43),
    ],
)
def test_each_kind_of_secret_becomes_its_placeholder(text, kind, secret):
    seen = []
    redacted = Redactor(KEY).text(text, seen)
    assert secret not in redacted
    assert seen == [(kind, Redactor(KEY).placeholder(kind, secret), secret)] and seen[0].placeholder in redacted
    assert SPOOLED.fullmatch(seen[0][1]).group("kind") == kind


def test_a_placeholder_is_the_same_for_one_value_in_every_worker_and_says_nothing_without_the_key():
    one, other = Redactor(KEY), Redactor(KEY)
    assert one.placeholder("access_token", TOKEN) == other.placeholder("access_token", TOKEN)
    assert one.placeholder("access_token", TOKEN) != one.placeholder("access_token", TOKEN + "x")
    assert one.placeholder("access_token", TOKEN) == one.placeholder("token", TOKEN).replace(
        "{{token", "{{access_token"
    )
    assert one.placeholder("access_token", TOKEN) != Redactor("another key").placeholder("access_token", TOKEN)
    digest = SPOOLED.fullmatch(one.placeholder("access_token", TOKEN)).group("digest")
    assert digest not in hashlib.sha256(TOKEN.encode()).hexdigest()  # keyed, not a plain hash
    assert KEY not in one.placeholder("access_token", TOKEN)


LOG_LINES = [
    *TOKEN_LINES,
    *CREDENTIAL_URL_LINES,
    "GET /host/view/jti.file.1796021373." + "s" * 43 + " HTTP/1.1",
    '127.0.0.1 "GET /wopi/files/oG7jw5EIRAFOO6Wa2CnDwz HTTP/1.1" 200 694 20ms override=LOCK',  # nothing secret
]


@pytest.mark.parametrize("line", LOG_LINES)
def test_a_recording_finds_exactly_what_the_logs_redact(line):
    recorded = Redactor(KEY).text(line)
    assert SPOOLED.sub(REDACTED, recorded) == redact(line)


@pytest.mark.parametrize(
    ("name", "value", "kind", "expected"),
    [
        ("x-wopi-proof", "c2lnbmF0dXJl+/==", "proof", "{}"),
        ("x-wopi-proofold", "b2xkIHNpZ25hdHVyZQ==", "proof", "{}"),
        ("x-wopi-uploadsessiontoken", "ZLLSZyyckVxSgzA9g8FxcA", "session_token", "{}"),
        ("authorization", "Bearer short-token", "api_token", "Bearer {}"),
        ("authorization", "Basic dXNlcjpwYXNz", "token", "Basic {}"),
        ("proxy-authorization", "Basic dXNlcjpwYXNz", "token", "Basic {}"),
        ("proxy-authorization", "Bearer proxy-token", "token", "Bearer {}"),  # not the session's api_token
        ("cookie", "_oauth2_proxy=Zm9vYmFy|1700000000|c2ln;lb=node2", "token", "{}"),
    ],
)
def test_headers_that_are_secrets_whatever_their_value(name, value, kind, expected):
    redactor, seen = Redactor(KEY), []
    redacted = redactor.header(name, value, seen)
    assert redacted == expected.format(redactor.placeholder(kind, value.partition(" ")[2] or value))
    assert value not in redacted and len(seen) == 1 + (name == "cookie")  # and the one cookie long enough alone


def test_a_challenge_is_not_a_credential():
    assert Redactor(KEY).header("www-authenticate", 'Bearer realm="wopihost"') == 'Bearer realm="wopihost"'


def test_the_messagejson_of_a_framed_body_is_redacted_and_its_other_frames_left_alone():
    signature, chunks = full_file(b"a" * 100, b"b" * 50)
    body = put_chunked_body({"MainContent": signature}, chunks, session_token="ZLLSZyyckVxSgzA9g8FxcA")
    message, end = Redactor(KEY).framed(body)
    assert "ZLLSZyyckVxSgzA9g8FxcA" not in message and "{{session_token:#" in message
    assert end == message_frame_size(body)
    nothing_secret = put_chunked_body({"MainContent": signature}, chunks)
    assert Redactor(KEY).framed(nothing_secret) == (None, message_frame_size(nothing_secret))
    assert Redactor(KEY).framed(b"PK\x03\x04 a docx") is None


# -- the setting and the command -----------------------------------------------------------------------------


def test_serve_refuses_a_record_directory_it_cannot_make(run, tmp_path):
    (tmp_path / "a file").write_text("x")
    result = run("serve", "--record", str(tmp_path / "a file"), ok=False)
    assert result.exit_code == 2 and "--record" in result.output and "Traceback" not in result.output
    result = run("serve", "--record", str(tmp_path / "a file" / "below"), ok=False)
    assert result.exit_code == 2 and "cannot create" in result.output, result.output


# -- the recorder in the app, and assembly -------------------------------------------------------------------


class Recording:
    """Apps recording into one directory, as the workers of one server do (each its own spool file)."""

    def __init__(self, settings, clock, directory: Path):
        self.settings = settings.with_changes(record_dir=directory)
        self.clock, self.directory = clock, directory
        self.apps = []

    def worker(self) -> webtest.TestApp:
        app = create_app(self.settings, self.clock)
        self.apps.append(app)
        return webtest.TestApp(app)

    @property
    def services(self):
        return self.apps[0].extensions["wopihost"]

    def spool(self) -> str:
        return "".join(path.read_text() for path in spool_files(self.directory))

    def stop(self) -> list[Path]:
        """The workers end (their spool files are closed and unlocked); the recording is assembled."""
        for app in self.apps:
            app.extensions["wopihost.recorder"].spool.close()
        return assemble(self.directory)

    def close(self) -> None:
        for app in self.apps:
            app.extensions["wopihost.recorder"].spool.close()
            app.extensions["wopihost"].db.dispose()


@pytest.fixture
def recording(settings, clock, tmp_path):
    recording = Recording(settings, clock, tmp_path / "recording")
    yield recording
    recording.close()


def har(path: Path) -> dict:
    return json.loads(path.read_text())["log"]


def entries(path: Path) -> list[dict]:
    return har(path)["entries"]


def test_a_wopi_session_recorded_as_one_har_without_its_token(recording):
    worker = recording.worker()
    file = recording.services.add_file("alice", "Doc.docx", io.BytesIO(b"hello world"))
    wopi = WopiClient(worker, file.id, recording.services.issue_token(file.id, "alice", True).token)
    assert wopi.check_file_info().status_int == 200
    assert wopi.lock("L1", X_WOPI_Proof="cHJvb2Y=", X_WOPI_ProofOld="b2xkIHByb29m").status_int == 200
    assert wopi.get_file().body == b"hello world"
    assert wopi.put_file(b"new content", lock="L1").status_int == 200
    assert (
        worker.get(f"/wopi/files/{file.id}", expect_errors=True).status_int == 401
    )  # no credential: no session, not recorded
    assert worker.get("/healthz").status_int == 200  # neither WOPI nor Graph: not recorded
    spool = recording.spool()
    assert wopi.token not in spool and "cHJvb2Y=" not in spool and "b2xkIHByb29m" not in spool

    [path] = recording.stop()
    assert not (recording.directory / SPOOL).exists()
    log = har(path)
    assert log["version"] == "1.2" and log["creator"]["name"] == "wopihost"
    assert log["_wopihost"] == {"session": "{{access_token:1}}", "face": "wopi", "max_body": 1 << 20}
    found = log["entries"]
    assert [e["_wopihost"]["operation"] for e in found] == ["CheckFileInfo", "Lock", "GetFile", "PutFile"]
    assert [e["startedDateTime"] for e in found] == sorted(e["startedDateTime"] for e in found)
    assert all(e["request"]["url"].endswith("?access_token={{access_token:1}}") for e in found)
    assert found[0]["request"]["queryString"] == [{"name": "access_token", "value": "{{access_token:1}}"}]
    lock_headers = {h["name"].lower(): h["value"] for h in found[1]["request"]["headers"]}  # (any case)
    assert lock_headers["x-wopi-proof"] == "{{proof:1}}" and lock_headers["x-wopi-proofold"] == "{{proof:2}}"
    assert lock_headers["x-wopi-override"] == "LOCK" and found[1]["_wopihost"]["override"] == "LOCK"
    info = json.loads(found[0]["response"]["content"]["text"])
    assert info["FileUrl"].endswith("/wopi/download/{{download:1}}")
    assert info["HostEditUrl"].endswith("/host/edit/{{launch:1}}")
    get_file = found[2]["response"]["content"]
    assert base64.b64decode(get_file["text"]) == b"hello world" and get_file["encoding"] == "base64"
    assert get_file["_sha256"] == hashlib.sha256(b"hello world").hexdigest() and get_file["size"] == 11
    put = found[3]["request"]
    assert put["bodySize"] == 11 and put["postData"]["_sha256"] == hashlib.sha256(b"new content").hexdigest()
    assert put["postData"]["text"] == "new content"  # webtest sends it as a form: text
    assert not SPOOLED.search(path.read_text())  # no digest survives into a HAR


def test_bodies_over_the_limit_are_size_and_hash_and_binary_ones_base64(recording):
    recording.settings = recording.settings.with_changes(record_max_body=100)
    worker = recording.worker()
    big, small = os.urandom(5000), bytes(range(256))[:90]
    file = recording.services.add_file("alice", "Doc.docx", io.BytesIO(big))
    wopi = WopiClient(worker, file.id, recording.services.issue_token(file.id, "alice", True).token)
    assert wopi.get_file().body == big
    assert wopi.lock("L").status_int == 200
    assert wopi.put_file(small, lock="L", Content_Type="application/octet-stream").status_int == 200
    assert wopi.put_file(big, lock="L", Content_Type="application/octet-stream").status_int == 200
    assert wopi.put_file(small, lock="other", Content_Type="application/octet-stream").status_int == 409
    [path] = recording.stop()
    got, _, put_small, put_big, refused = entries(path)
    assert refused["request"]["postData"] == put_small["request"]["postData"]  # drained unread: read all the same
    assert got["response"]["content"] == {
        "size": 5000,
        "mimeType": "application/octet-stream",
        "_sha256": hashlib.sha256(big).hexdigest(),
    }
    assert put_small["request"]["postData"] == {
        "mimeType": "application/octet-stream",
        "text": base64.b64encode(small).decode(),
        "_encoding": "base64",
        "_sha256": hashlib.sha256(small).hexdigest(),
    }
    assert put_big["request"]["bodySize"] == 5000
    assert put_big["request"]["postData"] == {
        "mimeType": "application/octet-stream",
        "_size": 5000,
        "_sha256": hashlib.sha256(big).hexdigest(),
    }
    assert har(path)["_wopihost"]["max_body"] == 100


def test_what_the_application_did_not_read_of_a_body_is_not_recorded_and_the_entry_says_so(recording):
    worker = recording.worker()
    file = recording.services.add_file("alice", "Doc.docx", io.BytesIO(b"x"))
    token = recording.services.issue_token(file.id, "alice", True).token
    sent = b"a body nobody asked for"
    response = worker.request(
        f"/wopi/files/{file.id}?access_token={token}", method="GET", body=sent, content_type="text/plain"
    )
    assert response.status_int == 200  # CheckFileInfo reads no body
    [path] = recording.stop()
    [entry] = entries(path)
    assert entry["request"]["bodySize"] == 0
    assert entry["request"]["postData"] == {
        "mimeType": "text/plain",
        "text": "",
        "_sha256": hashlib.sha256(b"").hexdigest(),
        "comment": f"the server read 0 of the {len(sent)} bytes; bodySize and _sha256 are of those",
        "_incomplete": True,
    }


class _BreaksOff(io.RawIOBase):
    """A request body that gives `data`, then fails as a reset connection does."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._data.readinto(buffer)
        if not n:
            raise ConnectionResetError("reset by the client")
        return n


@pytest.mark.parametrize("chunked", [False, True])
def test_a_request_body_that_broke_off_is_recorded_as_incomplete_and_cannot_be_replayed(recording, chunked):
    """A PutFile whose client hung up midway stored nothing; sent again as recorded, its first bytes would make a
    whole, shorter document: the entry says it is incomplete, and a replay refuses to send it."""
    worker = recording.worker()
    file = recording.services.add_file("alice", "Doc.docx", io.BytesIO(b"original"))
    wopi = WopiClient(worker, file.id, recording.services.issue_token(file.id, "alice", True).token)
    assert wopi.lock("L1").status_int == 200
    sent = _BreaksOff(b"z" * 1000) if chunked else io.BytesIO(b"z" * 1000)
    response = wopi.raw_post("/contents", sent, None if chunked else 5000, X_WOPI_Override="PUT", X_WOPI_Lock="L1")
    assert response.status_int == 400
    assert wopi.get_file().body == b"original"
    [path] = recording.stop()
    [put] = [e["request"] for e in entries(path) if e["_wopihost"]["operation"] == "PutFile"]
    assert put["bodySize"] == 1000 and put["postData"]["_incomplete"] is True
    why = (
        "the server read 1000 of the 5000 bytes"
        if not chunked
        else "the body broke off, or the server gave it up, after 1000 bytes"
    )
    assert put["postData"]["comment"] == f"{why}; bodySize and _sha256 are of those"
    rec = read_recording(path)
    with pytest.raises(CannotReplay, match="holds only the 1000 bytes of its body the server read"):
        build(
            rec.exchanges[1], bindings_for(rec, Targets(wopisrc=f"http://127.0.0.1:1/wopi/files/{file.id}", token="t"))
        )


def test_an_answer_the_client_did_not_get_whole_is_recorded_as_incomplete(recording):
    """A GetFile whose client went away after its first piece: the entry holds what was sent and says so, so that
    a replay does not blame the host for the difference (tests/test_replay.py)."""
    recording.settings = recording.settings.with_changes(max_file_size=3 << 20)
    recording.worker()
    document = os.urandom(3 << 20)
    file = recording.services.add_file("alice", "Doc.docx", io.BytesIO(document))
    token = recording.services.issue_token(file.id, "alice", False).token
    environ = webtest.TestRequest.blank(f"/wopi/files/{file.id}/contents?access_token={token}").environ
    body = recording.apps[0](environ, lambda status, headers, exc_info=None: None)
    first = next(iter(body))
    body.close()  # as the server does when the client goes away
    [path] = recording.stop()
    content = entries(path)[0]["response"]["content"]
    assert 0 < len(first) < len(document) and content["size"] == len(first) and content["_incomplete"] is True
    assert content["_sha256"] == hashlib.sha256(first).hexdigest()
    assert (
        content["comment"]
        == f"the server sent {len(first)} of the {len(document)} bytes; bodySize and _sha256 are of those"
    )


def test_nothing_is_recorded_unless_asked(app):
    assert "wopihost.recorder" not in app.extensions


def locked_with_upload_session(recording) -> tuple[WopiClient, str]:
    """A document of alice's, locked with "L" through the recording app, and an upload session opened on it."""
    worker = recording.worker()  # (the app whose services make the file)
    file = recording.services.add_file("alice", "Doc.docx", io.BytesIO(b"x"))
    wopi = WopiClient(worker, file.id, recording.services.issue_token(file.id, "alice", True).token)
    assert wopi.lock("L").status_int == 200
    return wopi, wopi.op("CREATE_UPLOAD_SESSION").json["UploadSessionToken"]


def test_a_put_chunked_file_body_keeps_its_frames_and_gets_the_placeholder_in_its_messagejson(recording):
    wopi, session = locked_with_upload_session(recording)
    signature, chunks = full_file(b"chunk one " * 10, b"chunk two " * 5)
    body = put_chunked_body({"MainContent": signature}, chunks, session_token=session)
    sequence = wopi.op("GET_SEQUENCE_NUMBER").headers["X-WOPI-SequenceNumber"]
    committed = wopi.contents_op(
        "PUT_CHUNKED_FILE",
        body,
        X_WOPI_Lock="L",
        X_WOPI_SequenceNumber=sequence,
        Content_Type="text/plain",  # a framed body is binary whatever its type says
    )
    assert committed.status_int == 200, committed.headers
    assert session not in recording.spool()

    [path] = recording.stop()
    assert session not in path.read_text()
    *_, created, _, commit = entries(path)
    assert json.loads(created["response"]["content"]["text"]) == {"UploadSessionToken": "{{session_token:1}}"}
    post = commit["request"]["postData"]
    assert post["_encoding"] == "base64" and post["_sha256"] == hashlib.sha256(body).hexdigest()
    recorded = base64.b64decode(post["text"])
    events = FrameDecoder("body").feed(recorded)
    assert events[0] == MessageJSON({**events[0].value, "UploadSessionTokenToCommit": "{{session_token:1}}"})
    assert events[0].value["Signatures"] == signature_json(signature)
    assert b"".join(bytes(e.data) for e in events if isinstance(e, ChunkData)) == b"".join(c for _, c in chunks)
    assert recorded[message_frame_size(recorded) :] == body[message_frame_size(body) :]  # byte for byte
    assert commit["request"]["bodySize"] == len(body)  # as it crossed the wire


def test_a_save_through_an_upload_session_is_recorded_with_one_placeholder_for_its_session(recording):
    wopi, session = locked_with_upload_session(recording)
    signature, chunks = full_file(b"chunk one " * 10, b"chunk two " * 5)
    stream = chunk_frames(chunks)
    stored = wopi.op(
        "UPDATE_UPLOAD_SESSION",
        stream,
        X_WOPI_UploadSessionToken=session,
        X_WOPI_ContentRangeOffset="0",
        X_WOPI_ContentRangeLength=str(len(stream)),
        Content_Type="application/octet-stream",
    )
    assert stored.status_int == 200
    sequence = wopi.op("GET_SEQUENCE_NUMBER").headers["X-WOPI-SequenceNumber"]
    body = put_chunked_body({"MainContent": signature}, session_token=session)  # UTF-8 throughout
    committed = wopi.contents_op(
        "PUT_CHUNKED_FILE", body, X_WOPI_Lock="L", X_WOPI_SequenceNumber=sequence, Content_Type="text/plain"
    )
    assert committed.status_int == 200, committed.headers
    [path] = recording.stop()
    assert session not in path.read_text()
    *_, update, _, commit = entries(path)
    headers = {h["name"].lower(): h["value"] for h in update["request"]["headers"]}
    assert headers["x-wopi-uploadsessiontoken"] == "{{session_token:1}}"
    assert base64.b64decode(update["request"]["postData"]["text"]) == stream
    post = commit["request"]["postData"]
    assert post["_encoding"] == "base64"  # a framed body is binary, whatever its type says
    [message, end] = FrameDecoder("body").feed(base64.b64decode(post["text"]))
    assert message.value["UploadSessionTokenToCommit"] == "{{session_token:1}}" and isinstance(end, EndFrame)


def signature_json(signature) -> list:
    return [signature.to_json("MainContent")]


def test_sessions_across_workers_with_placeholders_numbered_once_for_the_recording(recording):
    one, two = recording.worker(), recording.worker()
    services = recording.services
    file = services.add_file("alice", "Doc.docx", io.BytesIO(b"x"))
    alice = WopiClient(one, file.id, services.issue_token(file.id, "alice", True).token)
    issued, drive_id = services.issue_api_token("bob", True)
    bob = GraphClient(two, issued.token, drive_id)

    assert alice.check_file_info().status_int == 200  # worker one
    created = bob.post_json("me/drive/root:/big.bin:/createUploadSession", {})  # worker two
    upload_url = created.json["uploadUrl"]
    info = WopiClient(two, file.id, alice.token).check_file_info().json  # alice again, on worker two
    relative = alice.op("PUT_RELATIVE", b"copy", X_WOPI_SuggestedTarget="Copy.docx")  # a Url with a new token
    new_token = relative.json["Url"].partition("access_token=")[2]
    bob_upload = GraphClient(one, None, drive_id)  # the upload URL alone is the credential: no Bearer
    assert bob_upload.upload(upload_url, b"0123", 0, 8).status_int == 202
    assert bob_upload.upload(upload_url, b"4567", 4, 8).status_int == 201
    assert one.get(info["FileUrl"].removeprefix("https://wopi.example.test")).body == b"x"  # joins alice's
    follower = WopiClient(two, relative.json["Url"].split("/")[-1].partition("?")[0], new_token)
    assert follower.check_file_info().status_int == 200  # a session of its own
    secrets = [alice.token, issued.token, new_token, upload_url.rsplit("/", 1)[1], info["FileUrl"].rsplit("/", 1)[1]]
    spool = recording.spool()
    assert len(spool_files(recording.directory)) == 2 and not any(secret in spool for secret in secrets)

    first, second, third = recording.stop()
    assert [har(p)["_wopihost"]["session"] for p in (first, second, third)] == [
        "{{access_token:1}}",
        "{{api_token:1}}",
        "{{access_token:2}}",
    ]
    assert [p.name.rsplit("-", 1)[1] for p in (first, second, third)] == ["1.har", "2.har", "3.har"]
    alices = entries(first)
    assert [e["_wopihost"]["operation"] for e in alices] == [
        "CheckFileInfo",
        "CheckFileInfo",
        "PutRelativeFile",
        "wopi.download",
    ]
    assert alices[3]["request"]["url"].endswith("/wopi/download/{{download:1}}")  # what CheckFileInfo handed out
    assert json.loads(alices[2]["response"]["content"]["text"])["Url"].endswith("?access_token={{access_token:2}}")
    assert entries(third)[0]["request"]["url"].endswith("?access_token={{access_token:2}}")  # the same secret
    bobs = entries(second)
    assert [e["request"]["method"] for e in bobs] == ["POST", "PUT", "PUT"]
    assert all(e["request"]["url"].endswith("/uploadSessions/{{upload_session:1}}") for e in bobs[1:])
    assert not any(h["name"] == "Authorization" for h in bobs[1]["request"]["headers"])
    assert json.loads(bobs[0]["response"]["content"]["text"])["uploadUrl"].endswith(
        "/uploadSessions/{{upload_session:1}}"
    )
    workers = {e["_wopihost"]["worker"] for e in alices}
    assert workers == {os.getpid()}  # (both apps run in this process)
    for path in (first, second, third):
        text = path.read_text()
        assert not any(secret in text for secret in secrets)
        for match in PLACEHOLDER.finditer(text):
            assert int(match["n"]) >= 1


def test_an_upload_url_in_json_that_escapes_its_slashes_is_recorded_as_its_placeholder(recording):
    """JSON may write "/" as "\\/" (PHP's json_encode does); the app reads such a sourceUrl all the same."""
    worker = recording.worker()
    issued, drive_id = recording.services.issue_api_token("bob", True)
    bob = GraphClient(worker, issued.token, drive_id)
    upload_url = bob.post_json("me/drive/root:/big.bin:/createUploadSession", {"deferCommit": True}).json["uploadUrl"]
    assert GraphClient(worker, None, drive_id).upload(upload_url, b"0123", 0, 4).status_int == 202
    body = json.dumps({"@microsoft.graph.sourceUrl": upload_url}).replace("/", "\\/")
    committed = bob.put("me/drive/root:/final.bin", body.encode(), headers={"Content-Type": "application/json"})
    assert committed.status_int in (200, 201), committed.body
    [path] = recording.stop()
    assert upload_url.rsplit("/", 1)[1] not in path.read_text()
    post = entries(path)[-1]["request"]["postData"]
    assert json.loads(post["text"])["@microsoft.graph.sourceUrl"].endswith("/uploadSessions/{{upload_session:1}}")
    assert "\\/uploadSessions\\/{{upload_session:1}}" in post["text"]  # the body as sent, but for its secret


def test_a_text_body_that_is_not_utf8_is_searched_and_kept_as_a_digest_if_it_holds_a_secret(recording):
    """Such a body is written as base64, which would carry a secret whole: it is searched all the same."""
    worker = recording.worker()
    services = recording.services
    issued, drive_id = services.issue_api_token("bob", True)
    bob = GraphClient(worker, issued.token, drive_id)
    upload_url = bob.post_json("me/drive/root:/big.bin:/createUploadSession", {"deferCommit": True}).json["uploadUrl"]
    holding = b'{"@microsoft.graph.sourceUrl": "' + upload_url.encode() + b'", "name": "Caf\xe9.bin"}'
    bob.put("me/drive/root:/final.bin", holding, headers={"Content-Type": "application/json"})
    file = services.add_file("alice", "Notes.txt", io.BytesIO(b"x"))
    wopi = WopiClient(worker, file.id, services.issue_token(file.id, "alice", True).token)
    plain = "Café, crème brûlée".encode("latin-1")  # nothing secret in it
    assert wopi.lock("L").status_int == 200
    assert wopi.put_file(plain, lock="L", Content_Type="text/plain; charset=latin-1").status_int == 200
    graph, wopi_session = recording.stop()
    assert entries(graph)[-1]["request"]["postData"] == {  # no base64 that holds the secret
        "mimeType": "application/json",
        "_size": len(holding),
        "_sha256": hashlib.sha256(holding).hexdigest(),
        "comment": WITHHELD,
    }
    post = entries(wopi_session)[-1]["request"]["postData"]
    assert post["_encoding"] == "base64" and base64.b64decode(post["text"]) == plain  # as before: replayable


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def fresh_host(settings, sqlite_template, tmp_path):
    """A host of its own (a new database and data directory, nothing recorded in it) on a loopback port, for a
    recording to be replayed against as `wopihost replay` does: its services, and its address."""
    server = make_server("127.0.0.1", 0, None, server_class=_Server, handler_class=_Quiet)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    (tmp_path / "fresh").mkdir()
    shutil.copy(sqlite_template, tmp_path / "fresh" / "wopihost.sqlite3")
    app = create_app(
        settings.with_changes(
            data_dir=tmp_path / "fresh" / "data",
            database_url=f"sqlite:///{tmp_path / 'fresh' / 'wopihost.sqlite3'}",
            public_url=base,
            office_collaboration_url=base,
            real_time_channel_url=base,
            storage_url="",
            record_dir=None,
        )
    )
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app.extensions["wopihost"], base
    server.shutdown()
    server.server_close()
    app.extensions["wopihost"].db.dispose()


def replay(path: Path, *args: str):
    return CliRunner().invoke(main, ["replay", str(path), *args, "--timeout", "30"], catch_exceptions=False)


def test_a_wopi_session_sending_its_token_also_as_bearer_is_recorded_with_one_placeholder_and_replays(
    recording, fresh_host
):
    """Office for the web and the validators send the access token in the query and in Authorization: Bearer;
    a save as a long name, and a proxy's Basic credentials, are replayed too."""
    worker = recording.worker()
    file = recording.services.add_file("alice", "Doc.docx", io.BytesIO(b"hello world"))
    wopi = WopiClient(worker, file.id, recording.services.issue_token(file.id, "alice", True).token)
    bearer = {"Authorization": f"Bearer {wopi.token}"}
    assert wopi.check_file_info(**bearer).status_int == 200
    assert wopi.lock("L", **bearer).status_int == 200
    assert wopi.get_file(**bearer).body == b"hello world"
    name = "QuarterlyFinancialReportForTheBoardOfDirectorsAndShareholdersDraft.docx"
    saved = wopi.op("PUT_RELATIVE", b"copy", X_WOPI_RelativeTarget=name, **bearer)
    assert saved.status_int == 200 and saved.json["Name"] == name
    assert wopi.op("UNLOCK", X_WOPI_Lock="L", **bearer).status_int == 200
    only_bearer = worker.get(f"/wopi/files/{file.id}", headers=bearer)  # no query token: the Bearer is the one
    assert only_bearer.status_int == 200
    assert wopi.check_file_info(Authorization="Basic dXNlcjpwYXNzd29yZA==").status_int == 200  # an SSO proxy's
    [path] = recording.stop()
    assert har(path)["_wopihost"]["session"] == "{{access_token:1}}"
    recorded = entries(path)
    authorizations = [
        next(h["value"] for h in e["request"]["headers"] if h["name"] == "Authorization") for e in recorded
    ]
    assert authorizations == ["Bearer {{access_token:1}}"] * 6 + ["Basic {{token:1}}"]
    assert all(e["request"]["url"].endswith("?access_token={{access_token:1}}") for e in recorded[:5])
    relative = {h["name"].lower(): h["value"] for h in recorded[3]["request"]["headers"]}["x-wopi-relativetarget"]
    assert relative == name  # not a token by its shape

    services, base = fresh_host
    fresh = services.add_file("alice", "Doc.docx", io.BytesIO(b"hello world"))
    token = services.issue_token(fresh.id, "alice", True).token
    result = replay(path, "--wopisrc", f"{base}/wopi/files/{fresh.id}", "--token", token)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "7 requests: 7 matched, 0 diverged, 0 errors"


def test_a_download_url_handed_out_in_an_answer_over_the_limit_joins_its_session(recording):
    """An answer larger than WOPIHOST_RECORD_MAX_BODY is not kept, but the credentials it hands out are looked for
    as it passes: a download with a listing's @microsoft.graph.downloadUrl (no Authorization, as rclone and the
    SDKs fetch it) was a session of its own, whose replay could not even start."""
    recording.settings = recording.settings.with_changes(record_max_body=2048)
    worker = recording.worker()
    for n in range(8):
        recording.services.add_file("bob", f"Report-{n}.docx", io.BytesIO(b"document %d" % n))
    issued, drive_id = recording.services.issue_api_token("bob", True)
    listing = GraphClient(worker, issued.token, drive_id).get("me/drive/root/children")
    assert len(listing.body) > 2048
    urls = [item["@microsoft.graph.downloadUrl"] for item in listing.json["value"]]
    public = "https://wopi.example.test"
    assert worker.get(urls[0].removeprefix(public)).body == b"document 0"
    assert worker.get(urls[-1].removeprefix(public)).body == b"document 7"
    [path] = recording.stop()  # one session, one file
    operations = [e["_wopihost"]["operation"] for e in entries(path)]
    assert operations == ["graph GET children", "graph GET download", "graph GET download"]


def test_a_graph_session_keeps_its_api_token_as_bearer(recording):
    worker = recording.worker()
    issued, drive_id = recording.services.issue_api_token("bob", True)
    bob = GraphClient(worker, issued.token, drive_id)
    assert bob.get("me/drive/root").status_int == 200
    [path] = recording.stop()
    assert har(path)["_wopihost"]["session"] == "{{api_token:1}}"
    [entry] = entries(path)
    assert {h["name"]: h["value"] for h in entry["request"]["headers"]}["Authorization"] == "Bearer {{api_token:1}}"


# A drive's folders named like the path segments of credentials, in Graph's item paths (docs/graph.md §2): names
ITEM_PATHS = [
    "/v1.0/me/drive/root:/Downloads/report.txt:/content",
    "/v1.0/me/drive/items/root:/Shares/S/notes.txt:",
    "/v1.0/drives/b/items/ZLLSZyyckVxSgzA9g8FxcA:/monitor/host/edit/plan.docx:/createUploadSession",
    '{"parentReference": {"path": "/drive/root:/Download/old"}}',
    r'{"path":"\/drive\/root:\/uploadSessions\/x"}',
]


@pytest.mark.parametrize("text", ITEM_PATHS)
def test_a_folder_named_like_a_credentials_segment_is_no_secret(text):
    """Names in a Graph item path are a drive's folders and files, never a credential: a `Downloads` folder
    became `{{download:N}}`, and so did every name of a file in it wherever a body quoted it."""
    assert Redactor(KEY).text(text) == text
    assert redact(text) == text
    # a credential in the same text, past the item path, is one all the same; and a token's shape anywhere
    credential = f"{text} https://h/v1.0/downloads/ZLLSZyyckVxSgzA9g8FxcA /s/ZLLSZyyckVxSgzA9g8FxcA"
    assert "ZLLSZyyckVxSgzA9g8FxcA" not in redact(credential).replace(text, "")
    with_token = text.replace("notes.txt", TOKEN).replace("report.txt", TOKEN).replace("plan.docx", TOKEN)
    assert with_token == text or TOKEN not in redact(with_token)


def test_a_graph_session_through_a_downloads_folder_replays(recording, fresh_host):
    worker = recording.worker()
    issued, drive_id = recording.services.issue_api_token("bob", True)
    bob = GraphClient(worker, issued.token, drive_id)
    assert bob.post_json("me/drive/root/children", {"name": "Downloads", "folder": {}}).status_int == 201
    assert bob.put("me/drive/root:/Downloads/report.txt:/content", b"hello").status_int == 201
    assert bob.get("me/drive/root:/Downloads/report.txt").json["name"] == "report.txt"
    [path] = recording.stop()
    urls = [e["request"]["url"] for e in entries(path)]
    assert urls[1:] == [
        "https://wopi.example.test/v1.0/me/drive/root:/Downloads/report.txt:/content",
        "https://wopi.example.test/v1.0/me/drive/root:/Downloads/report.txt",
    ]
    answers = [json.loads(e["response"]["content"]["text"]) for e in entries(path)[1:]]
    assert [answer["name"] for answer in answers] == ["report.txt", "report.txt"]
    assert all(PLACEHOLDER.fullmatch(a["@microsoft.graph.downloadUrl"].rsplit("/", 1)[1]) for a in answers)

    services, base = fresh_host
    token = services.issue_api_token("bob", True)[0].token
    result = replay(path, "--graph-base", f"{base}/v1.0", "--api-token", token)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "3 requests: 3 matched, 0 diverged, 0 errors"


def request_without_type(worker, url: str, body: bytes, method: str = "POST", **headers) -> webtest.TestResponse:
    """A request whose body has no Content-Type at all, as `curl -H "Content-Type:"` sends it."""
    request = webtest.TestRequest.blank(url, method=method, headers=headers)
    request.body = body
    request.environ.pop("CONTENT_TYPE", None)
    return worker.do_request(request, status="*", expect_errors=True)


def test_bodies_of_any_type_are_searched_for_secrets(recording):
    """The app reads a body with no type, or application/octet-stream, as JSON all the same: whatever its type,
    a body is written with its secrets replaced when it is UTF-8, and as its size and hash when it is not."""
    worker = recording.worker()
    services = recording.services
    issued, drive_id = services.issue_api_token("bob", True)
    bob = GraphClient(worker, issued.token, drive_id)
    upload_url = bob.post_json("me/drive/root:/d.bin:/createUploadSession", {"deferCommit": True}).json["uploadUrl"]
    assert GraphClient(worker, None, drive_id).upload(upload_url, b"0123", 0, 4).status_int == 202
    source = json.dumps({"@microsoft.graph.sourceUrl": upload_url}).encode()
    committed = request_without_type(
        worker, "/v1.0/me/drive/root:/d2.bin:", source, "PUT", Authorization=f"Bearer {issued.token}"
    )
    assert committed.status_int in (200, 201), committed.body
    file = services.add_file("alice", "Doc.docx", io.BytesIO(b"x"))
    wopi = WopiClient(worker, file.id, services.issue_token(file.id, "alice", True).token)
    cookie = "_oauth2_proxy=c2Vzc2lvbiBvZiB0aGUgcHJveHk"
    user_info = f"token is {wopi.token}".encode()
    assert request_without_type(worker, wopi.url(), user_info, X_WOPI_Override="PUT_USER_INFO").status_int == 200
    assert wopi.op("PUT_USER_INFO", user_info, Content_Type="application/octet-stream").status_int == 200
    document = b"PK\x03\x04\xff" + os.urandom(3000)  # a .docx's bytes: not UTF-8, kept as they are
    holding = document + f"<a href='?access_token={wopi.token}'/>".encode() + document
    holding_cookie = document + cookie.encode() + document  # a secret of the request's headers
    assert wopi.lock("L").status_int == 200
    for body in (document, holding, holding_cookie):
        put = wopi.put_file(body, lock="L", Content_Type="application/octet-stream", Cookie=cookie)
        assert put.status_int == 200
    spool = recording.spool()
    secrets = [upload_url.rsplit("/", 1)[1], wopi.token, issued.token, cookie]
    assert not any(secret in spool for secret in secrets)
    graph_session, wopi_session = recording.stop()
    text = graph_session.read_text() + wopi_session.read_text()
    assert not any(secret in text or base64.b64encode(secret.encode()).decode()[:20] in text for secret in secrets)

    post = entries(graph_session)[-1]["request"]["postData"]
    assert post["mimeType"] == "" and "_encoding" not in post
    assert json.loads(post["text"])["@microsoft.graph.sourceUrl"].endswith("/uploadSessions/{{upload_session:1}}")
    *_, no_type, octets, _lock, put_document, put_holding, put_holding_cookie = entries(wopi_session)
    assert no_type["request"]["postData"]["text"] == "token is {{access_token:1}}"
    assert octets["request"]["postData"]["text"] == "token is {{access_token:1}}"
    assert octets["request"]["postData"]["mimeType"] == "application/octet-stream"
    assert base64.b64decode(put_document["request"]["postData"]["text"]) == document
    for put, body in ((put_holding, holding), (put_holding_cookie, holding_cookie)):
        assert put["request"]["postData"] == {
            "mimeType": "application/octet-stream",
            "_size": len(body),
            "_sha256": hashlib.sha256(body).hexdigest(),
            "comment": WITHHELD,
        }


# A PDF as Word writes it: its dictionaries have no spaces, so `/S/Transparency` reads as a share link's path
WORD_PDF = (
    b"%PDF-1.7\r\n%\xb5\xb5\xb5\xb5\r\n1 0 obj\r\n<</Type/Page/Parent 2 0 R/MediaBox[ 0 0 612 792]"
    b"/Group<</Type/Group/S/Transparency/CS/DeviceRGB>>/Tabs/S/StructParents 0>>\r\nendobj\r\n"
    + bytes(range(128, 256))
    + b"\r\n%%EOF\r\n"
)
# A text document with ordinary URLs whose paths are those of our credentials
NOTES = b"Release notes: https://www.python.org/downloads/release/python-3120/ and https://example.org/s/agenda\n"


@pytest.mark.parametrize("document", [WORD_PDF, NOTES], ids=["pdf", "text"])
def test_a_document_saved_is_recorded_as_sent(recording, document):
    """A document's own URLs and paths are no credentials: its body was withheld (a PDF) or given placeholders
    (a text), which replay cannot send. Only the request's secrets and our tokens' shapes are looked for in it."""
    worker = recording.worker()
    file = recording.services.add_file("alice", "Report.pdf", io.BytesIO(b"x"))
    wopi = WopiClient(worker, file.id, recording.services.issue_token(file.id, "alice", True).token)
    assert wopi.lock("L").status_int == 200
    assert wopi.put_file(document, lock="L", Content_Type="application/octet-stream").status_int == 200
    [path] = recording.stop()
    post = entries(path)[-1]["request"]["postData"]
    assert post["_encoding"] == "base64" and base64.b64decode(post["text"]) == document, post


def test_a_binary_body_is_searched_in_its_runs_of_text_only():
    """A megabyte of a document's bytes costs a few milliseconds, not the patterns tried at every byte."""
    redactor, token = Redactor(KEY), TOKEN
    document = bytearray(os.urandom(1 << 20))
    assert not redactor.in_binary(document)
    for secret in (f"?access_token={token}", "/uploadSessions/ZLLSZyyckVxSgzA9g8FxcA\x00", token.upper()):
        assert redactor.in_binary(document[:1000] + b"\xff" + secret.encode() + b"\xff" + document[1000:])
    assert redactor.in_binary(b"\xff/s/ZLLSZyyckVxSgzA9g8FxcA\xff")
    assert not redactor.in_binary(b"\xff/s/short\xff")  # shorter than any secret of ours: not searched
    assert not redactor.in_binary(b"\xff" + b"QuarterlyFinancialReportForTheBoardOfDirectorsAndShareholders" * 3)
    # a document is searched for our tokens' shapes only
    assert not redactor.in_binary(b"\xff/s/ZLLSZyyckVxSgzA9g8FxcA\xff", pattern=SHAPES)
    assert redactor.in_binary(document[:1000] + b"\xff" + token.encode() + b"\xff" + document[1000:], pattern=SHAPES)


def test_a_cookie_is_recorded_as_a_placeholder_and_har_cookies_stay_empty(recording):
    worker = recording.worker()
    file = recording.services.add_file("alice", "Doc.docx", io.BytesIO(b"hello"))
    wopi = WopiClient(worker, file.id, recording.services.issue_token(file.id, "alice", True).token)
    cookie, proxy = "_oauth2_proxy=Zm9vYmFyLXNlc3Npb24|1700000000|c2lnbmF0dXJl", "Basic dXNlcjpwYXNz"
    assert wopi.check_file_info(Cookie=cookie, Proxy_Authorization=proxy).status_int == 200
    assert wopi.check_file_info(Cookie=cookie).status_int == 200
    [path] = recording.stop()
    text = path.read_text()
    assert "Zm9vYmFyLXNlc3Npb24" not in text and "dXNlcjpwYXNz" not in text
    first, second = entries(path)
    headers = [{h["name"].lower(): h["value"] for h in e["request"]["headers"]} for e in (first, second)]
    assert headers[0]["cookie"] == headers[1]["cookie"] == "{{token:1}}"  # one placeholder per value
    assert headers[0]["proxy-authorization"] == "Basic {{token:2}}"
    assert first["request"]["cookies"] == second["request"]["cookies"] == []
    assert har(path)["_wopihost"]["session"] == "{{access_token:1}}"


def test_a_cookie_of_the_cookie_header_is_a_secret_in_bodies_too(recording):
    """A body may hold one cookie of the header without the others: a user's info, and the answers quoting it."""
    worker = recording.worker()
    file = recording.services.add_file("alice", "Doc.docx", io.BytesIO(b"hello"))
    wopi = WopiClient(worker, file.id, recording.services.issue_token(file.id, "alice", True).token)
    session, cookie = "s3ss10n-0f-the-sso-proxy-Zq81", "_oauth2_proxy=s3ss10n-0f-the-sso-proxy-Zq81; lb=node2"
    info = f"user info mentioning {session}".encode()
    assert wopi.op("PUT_USER_INFO", info, Cookie=cookie, Content_Type="text/plain").status_int == 200
    assert wopi.check_file_info(Cookie=cookie).json["UserInfo"] == info.decode()
    [path] = recording.stop()
    assert session not in path.read_text()
    put, check = entries(path)
    assert put["request"]["postData"]["text"] == "user info mentioning {{token:2}}"
    assert json.loads(check["response"]["content"]["text"])["UserInfo"] == "user info mentioning {{token:2}}"
    assert {h["name"].lower(): h["value"] for h in check["request"]["headers"]}["cookie"] == "{{token:1}}"


def test_a_presigned_object_store_download_url_is_recorded_without_its_signature(recording, monkeypatch):
    """With WOPIHOST_S3_DOWNLOAD_URL, Graph's downloadUrl is the store's SigV4 presigned GET: whoever holds it
    fetches the document until it expires, without the host."""
    from botocore.config import Config
    from botocore.session import get_session

    presigner = get_session().create_client(
        "s3",
        endpoint_url="https://s3.example.test",
        region_name="us-east-1",
        aws_access_key_id="AKIAEXAMPLEKEYID0000",
        aws_secret_access_key="secret/EXAMPLE/KEY",
        aws_session_token="FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
        config=Config(signature_version="s3v4"),
    )

    def download_url(name, ttl, filename):  # as S3Store.download_url signs it, without asking a store
        return presigner.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": name}, ExpiresIn=int(ttl))

    worker = recording.worker()
    services = recording.services
    monkeypatch.setattr(services.blobs, "download_url", download_url)
    issued, drive_id = services.issue_api_token("bob", True)
    bob = GraphClient(worker, issued.token, drive_id)
    assert bob.put("me/drive/root:/report.bin:/content", b"secret document").status_int in (200, 201)
    url = bob.get("me/drive/root:/report.bin").json["@microsoft.graph.downloadUrl"]
    query = dict(pair.split("=", 1) for pair in url.partition("?")[2].split("&"))
    secrets = [query["X-Amz-Signature"], query["X-Amz-Credential"], query["X-Amz-Security-Token"]]
    assert "AKIAEXAMPLEKEYID0000" in query["X-Amz-Credential"]
    [path] = recording.stop()
    text = path.read_text()
    assert not any(secret in text for secret in secrets) and "AKIAEXAMPLEKEYID0000" not in text
    recorded = json.loads(entries(path)[-1]["response"]["content"]["text"])["@microsoft.graph.downloadUrl"]
    assert recorded.startswith("https://s3.example.test/b/") and "X-Amz-Expires=" in recorded  # the rest stays
    assert "X-Amz-Signature={{download:" in recorded and "X-Amz-Credential={{download:" in recorded


# -- assembly of a spool ------------------------------------------------------------------------------------


def spool_line(t: float, session: str | None, url: str, uses=(), hands=(), text: str = "") -> bytes:
    entry = {
        "time": 1.0,
        "request": {
            "method": "GET",
            "url": url,
            "httpVersion": "HTTP/1.1",
            "headers": [],
            "cookies": [],
            "headersSize": -1,
            "bodySize": 0,
        },
        "response": {
            "status": 200,
            "statusText": "OK",
            "httpVersion": "HTTP/1.1",
            "headers": [],
            "cookies": [],
            "content": {"size": len(text), "mimeType": "application/json", "text": text, "_sha256": "0" * 64},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": len(text),
        },
        "cache": {},
        "timings": {"send": 0, "wait": 1.0, "receive": 0},
        "_wopihost": {"override": None, "operation": "CheckFileInfo", "worker": 7},
    }
    line = {
        "entry": entry,
        "t": t,
        "face": "wopi",
        "session": session,
        "uses": list(uses),
        "hands": list(hands),
        "max_body": 1024,
    }
    return json.dumps(line).encode() + b"\n"


A, B = "{{access_token:#aaaaaaaaaaaaaaaa}}", "{{access_token:#bbbbbbbbbbbbbbbb}}"
TICKET = "{{download:#cccccccccccccccc}}"


def write_spool(directory: Path, name: str, *lines: bytes) -> Path:
    path = directory / SPOOL / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def test_a_torn_line_is_skipped_and_the_rest_assembled_in_time_order(tmp_path):
    write_spool(
        tmp_path,
        "1-a.jsonl",
        spool_line(3.0, A, f"http://h/wopi/files/x?access_token={A}"),
        b'{"entry": {"time": 1.0, "requ\n',  # torn, then the writer went on on a line of its own
        spool_line(1.0, A, f"http://h/wopi/files/y?access_token={A}"),
        spool_line(5.0, A, f"http://h/wopi/files/z?access_token={A}")[:40],  # torn last line: the worker was killed
    )
    write_spool(tmp_path, "2-b.jsonl", spool_line(2.0, A, f"http://h/wopi/files/w?access_token={A}"))
    [path] = assemble(tmp_path)
    assert path.name == "19700101T000001Z-1.har"
    assert [e["request"]["url"].split("?")[0][-1] for e in entries(path)] == ["y", "w", "x"]
    assert [e["startedDateTime"] for e in entries(path)] == [
        "1970-01-01T00:00:01.000Z",
        "1970-01-01T00:00:02.000Z",
        "1970-01-01T00:00:03.000Z",
    ]
    assert spool_files(tmp_path) == [] and not (tmp_path / SPOOL).exists()


def test_a_line_that_is_no_exchange_this_version_writes_is_skipped_and_the_rest_assembled(tmp_path):
    """A spool another version of wopihost left behind (a killed server, then an upgrade): a line whose entry
    lacks what a HAR entry needs is skipped with a warning, rather than failing the recording at every start."""
    other = json.loads(spool_line(2.0, A, f"http://h/wopi/files/y?access_token={A}"))
    del other["entry"]["request"]["httpVersion"], other["entry"]["cache"]
    write_spool(
        tmp_path,
        "1-a.jsonl",
        spool_line(1.0, A, f"http://h/wopi/files/x?access_token={A}"),
        json.dumps(other).encode() + b"\n",
        spool_line(3.0, A, f"http://h/wopi/files/z?access_token={A}"),
    )
    [path] = assemble(tmp_path)
    assert [e["request"]["url"].split("?")[0][-1] for e in entries(path)] == ["x", "z"]
    assert spool_files(tmp_path) == []


def test_placeholders_are_numbered_in_order_of_first_appearance_across_files(tmp_path):
    write_spool(
        tmp_path,
        "1-a.jsonl",
        spool_line(
            1.0, B, f"http://h/wopi/files/x?access_token={B}", hands=[TICKET], text=f'{{"Url":"/download/{TICKET}"}}'
        ),
        spool_line(4.0, None, f"http://h/wopi/download/{TICKET}", uses=[TICKET]),
    )
    write_spool(tmp_path, "2-b.jsonl", spool_line(2.0, A, f"http://h/wopi/files/x?access_token={A}&b={B}"))
    first, second = assemble(tmp_path)
    assert har(first)["_wopihost"]["session"] == "{{access_token:1}}"  # B came first
    assert har(second)["_wopihost"]["session"] == "{{access_token:2}}"
    assert entries(second)[0]["request"]["queryString"] == [
        {"name": "access_token", "value": "{{access_token:2}}"},
        {"name": "b", "value": "{{access_token:1}}"},
    ]
    assert entries(first)[1]["request"]["url"] == "http://h/wopi/download/{{download:1}}"  # joined B's session


def test_one_value_found_as_several_kinds_is_one_placeholder_of_the_first_kind(tmp_path):
    """A WOPI access token found by its shape first (in a body, say), then as the query's: one placeholder,
    {{access_token:N}}, in both, and requests carrying it either way are one session."""
    as_shape, as_token = "{{token:#aaaaaaaaaaaaaaaa}}", A
    write_spool(
        tmp_path,
        "1-a.jsonl",
        spool_line(1.0, None, f"http://h/wopi/download/{TICKET}", uses=[TICKET], text=f'"{as_shape}"'),
        spool_line(2.0, as_token, f"http://h/wopi/files/x?access_token={as_token}"),
        spool_line(3.0, "{{api_token:#aaaaaaaaaaaaaaaa}}", f"http://h/wopi/files/y?access_token={as_token}"),
    )
    first, second = assemble(tmp_path)
    assert json.loads(entries(first)[0]["response"]["content"]["text"]) == "{{access_token:1}}"
    assert har(second)["_wopihost"]["session"] == "{{access_token:1}}" and len(entries(second)) == 2


def test_a_credential_no_recorded_response_handed_out_is_a_session_of_its_own(tmp_path):
    write_spool(
        tmp_path,
        "1-a.jsonl",
        spool_line(1.0, None, f"http://h/wopi/download/{TICKET}", uses=[TICKET]),
        spool_line(2.0, A, f"http://h/wopi/files/x?access_token={A}"),
        spool_line(3.0, None, f"http://h/wopi/download/{TICKET}", uses=[TICKET]),
    )
    first, second = assemble(tmp_path)
    assert har(first)["_wopihost"]["session"] == "{{download:1}}" and len(entries(first)) == 2
    assert har(second)["_wopihost"]["session"] == "{{access_token:1}}"


def test_a_spool_file_a_live_worker_holds_is_left_for_later(tmp_path):
    writer = SpoolWriter(tmp_path)
    writer.write([spool_line(1.0, A, f"http://h/wopi/files/x?access_token={A}")])
    assert assemble(tmp_path) == [] and len(spool_files(tmp_path)) == 1
    writer.close()
    [path] = assemble(tmp_path)
    assert len(entries(path)) == 1 and spool_files(tmp_path) == []


def test_a_spool_file_being_assembled_is_taken_once(tmp_path):
    path = write_spool(tmp_path, "1-a.jsonl", spool_line(1.0, A, f"http://h/wopi/files/x?access_token={A}"))
    taken = SpoolFile.take(path)
    assert taken is not None and SpoolFile.take(path) is None
    taken.close()
