"""`wopihost serve --record DIR` on a real gunicorn (two workers): a WOPI edit, a CSPP Plus save through an upload
session, a Graph resumable upload and a PutRelativeFile whose Url is followed, then the server stops. The HAR
files are valid HAR 1.2, one per token, in time order, with requests of both workers; and no secret the traffic
carried is in any file of the directory, the spool's before assembly included."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from wopihost.cspp.frames import FrameDecoder, MessageJSON
from wopihost.cspp.wire import chunk_frames, put_chunked_body
from wopihost.localserver import LocalServer
from wopihost.recording.spool import spool_files

from ..cspp_helpers import full_file
from ..helpers import wait_until
from .test_cspp_e2e import Connection, on_two_workers

pytestmark = pytest.mark.e2e

MIB = 1 << 20
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def start(workdir: Path, database: str, record: Path) -> LocalServer:
    return LocalServer.start(
        workdir, database, workers=2, extra_env={"WOPIHOST_CSPP_PLUS": "on"}, serve_args=("--record", str(record))
    )


class Client:
    """Requests over two keep-alive connections, each served by a different worker, taken in turns."""

    def __init__(self, server: LocalServer):
        self.server = server
        self.connections = [Connection(server, "/wopi/files/none"), Connection(server, "/wopi/files/none")]
        on_two_workers(self.connections)
        self.turn = 0
        self.secrets: set[str] = set()  # every credential the traffic carried

    def __call__(self, method: str, url: str, body: bytes | None = None, **headers: str):
        connection = self.connections[self.turn % 2].conn
        self.turn += 1
        path = url.removeprefix(self.server.base)
        connection.request(method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()

    def wopi(self, file_id: str, token: str, override: str | None, suffix: str = "", body=None, **headers):
        headers = {**({"X-WOPI-Override": override} if override else {}), **headers}
        proof, old = base64.b64encode(os.urandom(64)).decode(), base64.b64encode(os.urandom(64)).decode()
        self.secrets |= {proof, old}
        method = "POST" if override else "GET"
        url = f"/wopi/files/{file_id}{suffix}?access_token={token}"
        return self(method, url, body, X_WOPI_Proof=proof, X_WOPI_ProofOld=old, X_WOPI_TimeStamp="1", **headers)


@dataclass
class Traffic:
    """What `traffic` sent: the documents, and every credential it carried."""

    client: Client
    big: bytes
    small: bytes
    new: bytes
    small_id: str
    commit: bytes


def traffic(server: LocalServer, tmp_path: Path) -> Traffic:
    """A WOPI edit with a FileUrl and a followed PutRelativeFile Url (alice), a CSPP Plus save through an upload
    session (carol) and a Graph resumable upload (bob), over two connections served by different workers."""
    big, small = os.urandom(3 * MIB), b"a small document\n" * 40
    (tmp_path / "Big.docx").write_bytes(big)
    (tmp_path / "Small.docx").write_bytes(small)
    big_id, small_id = server.add_file(tmp_path / "Big.docx")["id"], server.add_file(tmp_path / "Small.docx")["id"]
    alice, carol = server.token(big_id), server.token(small_id, "carol")
    bob = server.api_token("bob")
    client = Client(server)  # now: a connection idle for the keep-alive timeout (5 s) is closed
    client.secrets |= {alice, carol, bob["access_token"]}

    # 1. a WOPI edit: CheckFileInfo, Lock, GetFile (sent with sendfile, over the body limit), PutFile, Unlock
    status, _, body = client.wopi(big_id, alice, None)
    info = json.loads(body)
    client.secrets |= {info["FileUrl"], info["FileUrl"].rsplit("/", 1)[1], *launch_tickets(info)}
    assert client.wopi(big_id, alice, "LOCK", X_WOPI_Lock="L")[0] == 200
    status, _, body = client.wopi(big_id, alice, None, "/contents")
    assert status == 200 and body == big
    new = b"new content " * 100
    put = client.wopi(big_id, alice, "PUT", "/contents", new, X_WOPI_Lock="L", Content_Type="application/octet-stream")
    assert put[0] == 200
    assert client.wopi(big_id, alice, "UNLOCK", X_WOPI_Lock="L")[0] == 200

    # 2. a FileUrl (no token: it joins the session that was handed it), a PutRelativeFile and its Url followed
    status, _, body = client("GET", info["FileUrl"])
    assert status == 200 and body == new
    status, _, body = client.wopi(big_id, alice, "PUT_RELATIVE", "", b"%PDF", X_WOPI_SuggestedTarget=".pdf")
    relative = json.loads(body)
    copy_token = relative["Url"].partition("access_token=")[2]
    client.secrets |= {copy_token, *launch_tickets(relative)}
    status, _, body = client("GET", relative["Url"])
    assert status == 200 and json.loads(body)["BaseFileName"].endswith(".pdf")

    # 3. a CSPP Plus save through an upload session, on a small document (GetFile within the body limit)
    status, _, body = client.wopi(small_id, carol, None, "/contents")
    assert status == 200 and body == small
    assert client.wopi(small_id, carol, "LOCK", X_WOPI_Lock="C")[0] == 200
    status, _, body = client.wopi(small_id, carol, "CREATE_UPLOAD_SESSION")
    session_token = json.loads(body)["UploadSessionToken"]
    client.secrets.add(session_token)
    signature, chunks = full_file(b"first chunk " * 2000, b"second chunk " * 1000)
    stream = chunk_frames(chunks)
    piece_size = 16 << 10
    for offset in range(0, len(stream), piece_size):
        piece = stream[offset : offset + piece_size]
        status, headers, _ = client.wopi(
            small_id,
            carol,
            "UPDATE_UPLOAD_SESSION",
            "",
            piece,
            X_WOPI_UploadSessionToken=session_token,
            X_WOPI_ContentRangeOffset=str(offset),
            X_WOPI_ContentRangeLength=str(len(piece)),
        )
        assert status == 200
    sequence = client.wopi(small_id, carol, "GET_SEQUENCE_NUMBER")[1]["x-wopi-sequencenumber"]
    commit = put_chunked_body({"MainContent": signature}, session_token=session_token)
    status, headers, _ = client.wopi(
        small_id, carol, "PUT_CHUNKED_FILE", "/contents", commit, X_WOPI_Lock="C", X_WOPI_SequenceNumber=sequence
    )
    assert status == 200, headers
    assert client.wopi(small_id, carol, "UNLOCK", X_WOPI_Lock="C")[0] == 200

    # 4. a Graph resumable upload: createUploadSession with the Bearer token, ranges PUT to the upload URL alone
    content = os.urandom(300_000)
    status, _, body = client(
        "POST",
        f"{bob['graph_url']}/me/drive/root:/upload.bin:/createUploadSession",
        b"{}",
        Authorization=f"Bearer {bob['access_token']}",
        Content_Type="application/json",
    )
    upload_url = json.loads(body)["uploadUrl"]
    client.secrets |= {upload_url, urlsplit(upload_url).path, upload_url.rsplit("/", 1)[1]}
    for first in range(0, len(content), 100_000):
        part = content[first : first + 100_000]
        range_ = f"bytes {first}-{first + len(part) - 1}/{len(content)}"
        status, _, body = client("PUT", upload_url, part, Content_Range=range_)
        assert status in (202, 201), body
    item = json.loads(body)
    status, _, body = client(
        "GET", f"{bob['graph_url']}/me/drive/items/{item['id']}", Authorization=f"Bearer {bob['access_token']}"
    )
    download = json.loads(body)["@microsoft.graph.downloadUrl"]
    client.secrets |= {download, download.rsplit("/", 1)[1]}
    status, _, body = client("GET", download)  # no Bearer: the URL is the credential
    assert status == 200 and body == content

    return Traffic(client, big, small, new, small_id, commit)


def launch_tickets(info: dict) -> set[str]:
    return {info[name].rsplit("/", 1)[1] for name in ("HostViewUrl", "HostEditUrl") if name in info}


def test_a_recorded_run_is_one_valid_har_per_token_and_holds_no_secret(tmp_path, database):
    record = tmp_path / "recording"
    server = start(tmp_path, database, record)
    try:
        sent = traffic(server, tmp_path)
        client, big, small, new, small_id, commit = (
            sent.client,
            sent.big,
            sent.small,
            sent.new,
            sent.small_id,
            sent.commit,
        )
        workers = {c.owner for c in client.connections}
        time.sleep(0.5)  # the last exchange is spooled when the server closes its response, just after sending it
        spooled = [p for p in record.rglob("*") if p.is_file()]
        assert spooled and all(p.parent.name == ".spool" for p in spooled)
        secrets = client.secrets | {(tmp_path / "data" / "secret_key").read_text().strip()}
        assert_holds_none(spooled, secrets)
    finally:
        server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log

    files = sorted(p for p in record.rglob("*") if p.is_file())
    assert all(p.suffix == ".har" and p.parent == record for p in files), files  # the spool is gone
    assert_holds_none(files, secrets)
    logs = [json.loads(p.read_text())["log"] for p in files]
    for log in logs:
        check_har(log)
    sessions = [log["_wopihost"]["session"] for log in logs]
    # one per token: alice's, the copy's, carol's and bob's; the FileUrl and the upload URL joined theirs
    assert sorted(sessions) == ["{{access_token:1}}", "{{access_token:2}}", "{{access_token:3}}", "{{api_token:1}}"]
    assert [p.name.rsplit("-", 1)[1] for p in files] == ["1.har", "2.har", "3.har", "4.har"]
    by_session = dict(zip(sessions, logs, strict=True))
    every = [entry for log in logs for entry in log["entries"]]
    assert {entry["_wopihost"]["worker"] for entry in every} == workers  # both workers, in one recording

    alices = by_session["{{access_token:1}}"]["entries"]
    assert [e["_wopihost"]["operation"] for e in alices] == [
        "CheckFileInfo", "Lock", "GetFile", "PutFile", "Unlock", "wopi.download", "PutRelativeFile",
    ]  # fmt: skip
    get_file = alices[2]["response"]
    assert get_file["content"] == {
        "size": len(big),
        "mimeType": "application/octet-stream",
        "_sha256": hashlib.sha256(big).hexdigest(),  # of what the server sent with sendfile (no text: over the limit)
    }
    assert get_file["bodySize"] == len(big)
    assert alices[3]["request"]["postData"]["text"] == base64.b64encode(new).decode()
    proofs = {h["name"].lower(): h["value"] for h in alices[0]["request"]["headers"]}
    assert re.fullmatch(r"\{\{proof:\d+\}\}", proofs["x-wopi-proof"]), proofs
    assert "authorization" not in {h["name"].lower() for h in alices[5]["request"]["headers"]}
    follower = json.loads(alices[6]["response"]["content"]["text"])["Url"].partition("access_token=")[2]
    assert by_session[follower]["entries"][0]["request"]["url"].endswith(f"?access_token={follower}")

    carols = next(
        log for log in logs if log["entries"][0]["request"]["url"].startswith(f"{server.base}/wopi/files/{small_id}")
    )
    got = carols["entries"][0]["response"]["content"]
    assert base64.b64decode(got["text"]) == small and got["encoding"] == "base64"  # sendfile, within the limit
    updates = [e for e in carols["entries"] if e["_wopihost"]["operation"] == "UpdateUploadSession"]
    tokens = {
        h["value"] for e in updates for h in e["request"]["headers"] if h["name"].lower() == "x-wopi-uploadsessiontoken"
    }
    [placeholder] = tokens
    commit_entry = next(e for e in carols["entries"] if e["_wopihost"]["operation"] == "PutChunkedFile")
    [message, *_] = FrameDecoder("body").feed(base64.b64decode(commit_entry["request"]["postData"]["text"]))
    assert isinstance(message, MessageJSON) and message.value["UploadSessionTokenToCommit"] == placeholder
    assert commit_entry["request"]["postData"]["_sha256"] == hashlib.sha256(commit).hexdigest()

    bobs = by_session["{{api_token:1}}"]["entries"]
    puts = [e for e in bobs if e["request"]["method"] == "PUT"]
    downloaded = bobs[-1]["request"]["url"]  # the downloadUrl of the GET before it, with no Bearer
    assert re.search(r"/downloads/\{\{download:\d+\}\}$", downloaded)
    assert json.loads(bobs[-2]["response"]["content"]["text"])["@microsoft.graph.downloadUrl"] == downloaded
    assert len(puts) == 3 and all(
        re.search(r"/uploadSessions/\{\{upload_session:1\}\}$", e["request"]["url"]) for e in puts
    )
    assert json.loads(bobs[0]["response"]["content"]["text"])["uploadUrl"] == puts[0]["request"]["url"]


def assert_holds_none(paths: list[Path], secrets: set[str]) -> None:
    assert all(len(secret) >= 16 for secret in secrets)  # none so short it could match by chance
    for path in paths:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{path.name} holds a secret"


def check_har(log: dict) -> None:
    """The fields HAR 1.2 requires, with their types, and the entries in time order."""
    assert log["version"] == "1.2" and isinstance(log["creator"]["name"], str) and log["creator"]["version"]
    assert isinstance(log["pages"], list) and log["entries"]
    assert [e["startedDateTime"] for e in log["entries"]] == sorted(e["startedDateTime"] for e in log["entries"])
    for entry in log["entries"]:
        assert ISO_MS.match(entry["startedDateTime"]) and entry["time"] >= 0
        request, response = entry["request"], entry["response"]
        for message in (request, response):
            assert message["httpVersion"].startswith("HTTP/")
            assert isinstance(message["cookies"], list) and message["headersSize"] == -1
            assert all(set(h) == {"name", "value"} and isinstance(h["value"], str) for h in message["headers"])
            assert isinstance(message["bodySize"], int) and message["bodySize"] >= 0
        assert request["method"] and request["url"].startswith("http://127.0.0.1:")
        assert all(set(q) == {"name", "value"} for q in request["queryString"])
        if "postData" in request:
            post = request["postData"]
            assert isinstance(post["mimeType"], str) and len(post["_sha256"]) == 64
            assert ("text" in post) != ("_size" in post)
        assert isinstance(response["status"], int) and isinstance(response["statusText"], str)
        content = response["content"]
        assert isinstance(content["size"], int) and isinstance(content["mimeType"], str)
        assert len(content["_sha256"]) == 64 and response["redirectURL"] == ""
        assert entry["cache"] == {}
        timings = entry["timings"]
        assert all(timings[name] >= 0 for name in ("send", "wait", "receive"))
        assert abs(entry["time"] - sum(timings[name] for name in ("send", "wait", "receive"))) < 0.01


def test_a_recording_a_killed_server_left_behind_is_assembled_when_the_next_one_starts(tmp_path, database):
    record = tmp_path / "recording"
    server = start(tmp_path, database, record)
    (tmp_path / "Doc.docx").write_bytes(b"x")
    file_id = server.add_file(tmp_path / "Doc.docx")["id"]
    token = server.token(file_id)
    try:
        for _ in range(3):
            assert http_get(server, f"/wopi/files/{file_id}?access_token={token}") == 200
        # each exchange is spooled once its response is out; kill only when all three are on disk
        assert wait_until(lambda: spooled_lines(record) == 3), spooled_lines(record)
        for process in server.processes():
            process.send_signal(signal.SIGKILL)
        server.process.wait()
    finally:
        server.stop()
    assert not list(record.glob("*.har")) and list((record / ".spool").glob("*.jsonl"))

    (tmp_path / "again").mkdir()
    again = LocalServer.start(tmp_path / "again", database, workers=2, serve_args=("--record", str(record)))
    try:
        [path] = record.glob("*.har")  # assembled as it started
        assert not (record / ".spool").exists()
        assert len(json.loads(path.read_text())["log"]["entries"]) == 3
        assert token not in path.read_text()
    finally:
        again.stop()
    assert list(record.glob("*.har")) == [path]  # and the new server recorded nothing: no session came


def spooled_lines(record: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in spool_files(record))


def http_get(server: LocalServer, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()
