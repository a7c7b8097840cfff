"""`wopihost replay` end to end: sessions recorded from one real server (gunicorn, two workers) replayed with
the command against others, fresh ones and ones whose answers differ.

Every recording is written by the recorder itself (`wopihost serve --record DIR`) from the exchanges of a plain
HTTP client, and assembled when that server stops; the replays run the installed command in a subprocess, as
CI would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

from wopihost.cspp.chunkid import chunk_id
from wopihost.cspp.signatures import ChunkSignature, Signature
from wopihost.cspp.wire import chunk_frames, put_chunked_body
from wopihost.localserver import LocalServer
from wopihost.validator.httpclient import Client
from wopihost.validator.signing import ProofSigner

pytestmark = pytest.mark.e2e

CONTENT = b"the first version of the document\n" * 100
SAVED = b"the second version, saved by the replayed client\n" * 100
LOCK = '{"S":"replay-lock"}'
RECORDING = "recording"  # the directory a recording server writes to, in its own directory


@pytest.fixture
def hosts(tmp_path, database):
    """Starts servers, each in its own directory (the first on the test's database, the others on SQLite files
    of their own: fresh hosts); stops them and checks their logs at the end."""
    started: list[LocalServer] = []

    def start(name: str, use_database: bool = False, record: bool = False, **env: str) -> LocalServer:
        workdir = tmp_path / name
        workdir.mkdir()
        serve_args = ("--record", str(workdir / RECORDING)) if record else ()
        server = LocalServer.start(workdir, database if use_database else None, extra_env=env, serve_args=serve_args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        log = server.log_text()
        assert "Traceback" not in log, log


def recorder(hosts, **env: str) -> LocalServer:
    """A recording server (`serve --record`) on the test's database."""
    return hosts("recorded", use_database=True, record=True, **env)


def client() -> requests.Session:
    http = Client()
    http.trust_env = False  # straight to the loopback server, whatever proxy the environment names
    return http


def recording(server: LocalServer, session: str = "{{access_token:1}}") -> Path:
    """Stops the recording server, which assembles its recording, and returns the HAR file of `session`."""
    server.stop()
    sessions = {}
    for path in sorted((server.data_dir.parent / RECORDING).glob("*.har")):
        sessions[json.loads(path.read_text())["log"]["_wopihost"]["session"]] = path
    assert session in sessions, sorted(sessions)
    return sessions[session]


def document(server: LocalServer, tmp_path: Path, content: bytes = CONTENT) -> tuple[str, str]:
    path = tmp_path / f"Report-{server.port}.docx"
    path.write_bytes(content)
    file_id = server.add_file(path, "Report.docx")["id"]
    return file_id, server.token(file_id)


def replay(har: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wopihost.cli", "replay", str(har), *args], capture_output=True, text=True, timeout=120
    )


def replay_as_alice_on_a_fresh_host(hosts, har: Path) -> subprocess.CompletedProcess:
    """A Graph recording replayed with alice's API token on a new host, where bob came first: alice's drive and
    items get other ids than in the recording."""
    fresh = hosts("fresh")
    fresh.api_token("bob")
    api = fresh.api_token("alice")
    return replay(har, "--graph-base", api["graph_url"], "--api-token", api["access_token"])


def wopi_args(server: LocalServer, file_id: str, token: str) -> list[str]:
    return ["--wopisrc", f"{server.base}/wopi/files/{file_id}", "--token", token]


def record_edit_flow(server: LocalServer, tmp_path: Path) -> Path:
    """CheckFileInfo, Lock, GetFile, PutFile, GetFile, Unlock: what an editor does with a document."""
    file_id, token = document(server, tmp_path)
    http = client()
    url = server.url(file_id, token)
    contents = server.url(file_id, token, "/contents")
    assert http.get(url).status_code == 200
    assert http.post(url, headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": LOCK}).ok
    assert http.get(contents).content == CONTENT
    put = http.post(contents, SAVED, headers={"X-WOPI-Override": "PUT", "X-WOPI-Lock": LOCK})
    assert put.status_code == 200
    assert http.get(contents).content == SAVED
    assert http.post(url, headers={"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": LOCK}).ok
    return recording(server)


def test_the_wopi_edit_flow_replays_on_a_fresh_host_and_diverges_on_a_changed_one(hosts, tmp_path):
    har = record_edit_flow(recorder(hosts), tmp_path)

    fresh = hosts("fresh")
    file_id, token = document(fresh, tmp_path)
    junit = tmp_path / "fresh.xml"
    done = replay(har, *wopi_args(fresh, file_id, token), "--junit", str(junit))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:3] for line in lines[:6]] == [
        ["ok", "#1", "CheckFileInfo"],
        ["ok", "#2", "Lock"],
        ["ok", "#3", "GetFile"],
        ["ok", "#4", "PutFile"],
        ["ok", "#5", "GetFile"],
        ["ok", "#6", "Unlock"],
    ]
    assert lines[-1] == "6 requests: 6 matched, 0 diverged, 0 errors"
    assert json.loads(fresh.cli("files", "info", file_id, "--json"))["size"] == len(SAVED)
    suites = ET.parse(junit).getroot()
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors")) == ("6", "0", "0")
    assert token not in done.stdout + done.stderr + junit.read_text()

    changed = hosts("changed", WOPIHOST_CONTAINERS="off")  # CheckFileInfo without SupportsContainers ...
    file_id, token = document(changed, tmp_path)
    junit = tmp_path / "changed.xml"
    done = replay(har, *wopi_args(changed, file_id, token), "--junit", str(junit))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("DIVERGED #1 CheckFileInfo GET /wopi/files/")
    assert "    $.SupportsContainers: recorded true, actual absent" in lines
    assert "    $.SupportsEcosystem: recorded true, actual absent" in lines
    assert lines[-1] == "6 requests: 5 matched, 1 diverged, 0 errors"
    suites = ET.parse(junit).getroot()
    assert (suites.get("tests"), suites.get("failures")) == ("6", "1")
    failure = suites.find("testsuite/testcase/failure")
    assert failure is not None and "SupportsContainers" in (failure.get("message") or "") + (failure.text or "")
    assert token not in done.stdout + done.stderr + junit.read_text()


def record_cspp_save(server: LocalServer, tmp_path: Path) -> Path:
    """A CSPP Plus save through an upload session: CreateUploadSession, the Chunk frames in UpdateUploadSession
    pieces cut anywhere, a PutChunkedFile committing the session, then the content read back."""
    file_id, token = document(server, tmp_path)
    http = client()
    url, contents = server.url(file_id, token), server.url(file_id, token, "/contents")
    info = http.get(url)
    assert info.status_code == 200
    assert http.post(url, headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": LOCK}).ok
    created = http.post(url, headers={"X-WOPI-Override": "CREATE_UPLOAD_SESSION"})
    session = created.json()["UploadSessionToken"]
    chunks = [(chunk_id(p), p) for p in (SAVED[:1000], SAVED[1000:])]
    stream = chunk_frames(chunks)
    for offset in range(0, len(stream), 1500):
        piece = stream[offset : offset + 1500]
        headers = {
            "X-WOPI-Override": "UPDATE_UPLOAD_SESSION",
            "X-WOPI-UploadSessionToken": session,
            "X-WOPI-ContentRangeOffset": str(offset),
            "X-WOPI-ContentRangeLength": str(len(piece)),
        }
        assert http.post(url, piece, headers=headers).ok
    signature = Signature("FullFile", tuple(ChunkSignature(c, len(p)) for c, p in chunks))
    headers = {
        "X-WOPI-Override": "PUT_CHUNKED_FILE",
        "X-WOPI-SequenceNumber": str(info.json()["SequenceNumber"]),
        "X-WOPI-Lock": LOCK,
    }
    body = put_chunked_body({"MainContent": signature}, session_token=session)
    put = http.post(contents, body, headers=headers)
    assert put.status_code == 200, put.headers
    assert http.get(contents).content == SAVED
    assert http.post(url, headers={"X-WOPI-Override": "GET_SEQUENCE_NUMBER"}).ok
    assert http.post(url, headers={"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": LOCK}).ok
    return recording(server)


def test_a_cspp_upload_session_save_replays_with_the_session_and_sequence_numbers_learned(hosts, tmp_path):
    har = record_cspp_save(recorder(hosts, WOPIHOST_CSPP_PLUS="on"), tmp_path)
    recorded = json.loads(har.read_text())["log"]["entries"]
    assert json.loads(recorded[2]["response"]["content"]["text"]) == {"UploadSessionToken": "{{session_token:1}}"}

    fresh = hosts("fresh", WOPIHOST_CSPP_PLUS="on")
    file_id, token = document(fresh, tmp_path)
    # the same content saved once already: this host's sequence number is one ahead of the recording's
    url = fresh.url(file_id, token)
    session = Client()
    for override, body in (("LOCK", None), ("PUT", CONTENT), ("UNLOCK", None)):
        target = fresh.url(file_id, token, "/contents") if body else url
        assert session.post(target, body, headers={"X-WOPI-Override": override, "X-WOPI-Lock": LOCK}).ok
    done = replay(har, *wopi_args(fresh, file_id, token))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "11 requests: 11 matched, 0 diverged, 0 errors"
    assert json.loads(fresh.cli("files", "info", file_id, "--json"))["size"] == len(SAVED)


BLOB = bytes(range(256)) * 400  # 102400 bytes


def record_graph_upload(server: LocalServer, tmp_path: Path) -> Path:
    """A Graph resumable upload: createUploadSession, PUTs of byte ranges to the uploadUrl (no token: it is its
    own credential), then the new item and its content read back, by id and through its downloadUrl."""
    api = server.api_token("alice")
    http = client()
    graph, bearer = api["graph_url"], {"Authorization": f"Bearer {api['access_token']}"}
    create = json.dumps({"item": {"@microsoft.graph.conflictBehavior": "fail"}}).encode()
    created = http.post(
        f"{graph}/me/drive/root:/Uploads%20big.bin:/createUploadSession",
        create,
        headers={**bearer, "Content-Type": "application/json"},
    )
    assert created.status_code == 200, created.text
    for first in range(0, len(BLOB), 40_000):
        piece = BLOB[first : first + 40_000]
        headers = {"Content-Range": f"bytes {first}-{first + len(piece) - 1}/{len(BLOB)}"}
        put = http.put(created.json()["uploadUrl"], piece, headers=headers)  # no Bearer: the URL is the credential
    assert put.status_code == 201, put.text
    item = http.get(f"{graph}/me/drive/items/{put.json()['id']}", headers=bearer)
    assert http.get(f"{graph}/me/drive/items/{put.json()['id']}/content", headers=bearer).content == BLOB
    assert http.get(item.json()["@microsoft.graph.downloadUrl"]).content == BLOB
    return recording(server, "{{api_token:1}}")


def test_a_graph_resumable_upload_replays_with_the_upload_url_and_ids_learned(hosts, tmp_path):
    har = record_graph_upload(recorder(hosts), tmp_path)
    text = har.read_text()
    assert "/uploadSessions/{{upload_session:1}}" in text and "/downloads/{{download:1}}" in text

    fresh = hosts("fresh")
    fresh.api_token("bob")  # another user first: alice's drive and items get other ids than in the recording
    api = fresh.api_token("alice")
    done = replay(har, "--graph-base", api["graph_url"], "--api-token", api["access_token"])
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:5] for line in lines[:-1]] == [  # each under the name the recording server gave it
        ["ok", "#1", "graph", "POST", "createUploadSession"],
        ["ok", "#2", "graph", "PUT", "uploadSession"],
        ["ok", "#3", "graph", "PUT", "uploadSession"],
        ["ok", "#4", "graph", "PUT", "uploadSession"],
        ["ok", "#5", "graph", "GET", "item"],
        ["ok", "#6", "graph", "GET", "content"],
        ["ok", "#7", "graph", "GET", "download"],
    ]
    assert lines[-1] == "7 requests: 7 matched, 0 diverged, 0 errors"
    assert api["access_token"] not in done.stdout + done.stderr


def test_proofs_are_signed_afresh_with_proof_keys_and_left_out_without(hosts, tmp_path):
    recorded = recorder(hosts)  # it does not check proofs: any base64 will do for the recording
    file_id, token = document(recorded, tmp_path)
    http = client()
    url = recorded.url(file_id, token)
    for override in (None, "GET_LOCK"):
        proof, old = (base64.b64encode(os.urandom(64)).decode() for _ in range(2))
        headers = {"X-WOPI-Proof": proof, "X-WOPI-ProofOld": old, "X-WOPI-TimeStamp": "1"}
        answer = http.request("POST" if override else "GET", url, headers={**headers, "X-WOPI-Override": override})
        assert answer.status_code == 200
    har = recording(recorded)
    headers = json.loads(har.read_text())["log"]["entries"][0]["request"]["headers"]
    assert {(h["name"].lower(), h["value"]) for h in headers} >= {
        ("x-wopi-proof", "{{proof:1}}"),
        ("x-wopi-proofold", "{{proof:2}}"),
    }

    keys = ProofSigner.load_or_create(tmp_path / "keys")
    trusting = {"WOPIHOST_DISCOVERY_URL": str(keys.discovery_path), "WOPIHOST_PROOF_KEYS": "require"}

    fresh = hosts("fresh", **trusting)
    file_id, token = document(fresh, tmp_path)
    done = replay(har, *wopi_args(fresh, file_id, token), "--proof-keys", str(tmp_path / "keys"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"signing proofs with the keys {keys.discovery_path} publishes" in done.stderr

    done = replay(har, *wopi_args(fresh, file_id, token))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.count("without --proof-keys they are sent without proof headers") == 1
    assert "    status: recorded 200, actual 500" in done.stdout.splitlines()


def test_speed_and_clients_print_latency_percentiles(hosts, tmp_path):
    recorded = recorder(hosts)
    file_id, token = document(recorded, tmp_path)
    http = client()
    assert http.get(recorded.url(file_id, token)).ok
    time.sleep(1.0)  # a gap that --speed recorded keeps
    assert http.get(recorded.url(file_id, token, "/contents")).ok
    har = recording(recorded)

    fresh = hosts("fresh")
    file_id, token = document(fresh, tmp_path)
    done = replay(har, *wopi_args(fresh, file_id, token), "--speed", "max", "--clients", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["operation", "count", "p50", "ms", "p90", "ms", "p99", "ms", "max", "ms"]
    assert [line.split()[:2] for line in lines[1:4]] == [["CheckFileInfo", "3"], ["GetFile", "3"], ["all", "6"]]
    assert re.fullmatch(r"6 answers in [\d.]+ s: [\d.]+ requests/s", lines[4])
    assert lines[-1] == "6 requests from 3 clients: 6 matched, 0 diverged, 0 errors"

    done = replay(har, *wopi_args(fresh, file_id, token), "--clients", "2", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    reported = json.loads(done.stdout)
    assert (reported["requests"], reported["matched"], reported["clients"]) == (4, 4, 2)
    assert sorted((r["client"], r["number"], r["outcome"]) for r in reported["results"]) == [
        (1, 1, "matched"),
        (1, 2, "matched"),
        (2, 1, "matched"),
        (2, 2, "matched"),
    ]
    assert set(reported["latency_ms"]) == {"CheckFileInfo", "GetFile", "all"}

    done = replay(har, *wopi_args(fresh, file_id, token), "--speed", "recorded")
    assert done.returncode == 0, done.stdout + done.stderr
    seconds = float(re.search(r"2 answers in ([\d.]+) s", done.stdout).group(1))
    assert 1.0 <= seconds < 10  # the recorded second between the two kept


def test_a_body_recorded_as_a_digest_only_is_an_error_not_a_crash(hosts, tmp_path):
    recorded = recorder(hosts, WOPIHOST_RECORD_MAX_BODY="1000")  # SAVED is larger: its body is kept as a digest
    file_id, token = document(recorded, tmp_path)
    http = client()
    url, contents = recorded.url(file_id, token), recorded.url(file_id, token, "/contents")
    assert http.post(url, headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": LOCK}).ok
    assert http.post(contents, SAVED, headers={"X-WOPI-Override": "PUT", "X-WOPI-Lock": LOCK}).ok
    assert http.get(contents).content == SAVED
    har = recording(recorded)
    put = json.loads(har.read_text())["log"]["entries"][1]["request"]["postData"]
    assert (put["_size"], put["_sha256"]) == (len(SAVED), hashlib.sha256(SAVED).hexdigest()) and "text" not in put

    fresh = hosts("fresh")
    file_id, token = document(fresh, tmp_path)
    done = replay(har, *wopi_args(fresh, file_id, token))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == (
        f"ERROR    #2 PutFile POST /wopi/files/{recorded_id(har)}/contents?access_token={{{{access_token:1}}}}: its "
        f"body of {len(SAVED)} bytes was recorded as a digest only, over the recording's body limit "
        "WOPIHOST_RECORD_MAX_BODY (1000 bytes); record with a larger limit to replay it"
    )
    # the GetFile answer, over the limit too, is still compared by its SHA-256: the content was not saved
    assert lines[2].startswith("DIVERGED #3 GetFile") and lines[3].startswith("    body: recorded 4900 bytes")
    assert lines[-1] == "3 requests: 1 matched, 1 diverged, 1 error"


def recorded_id(har: Path) -> str:
    url = json.loads(har.read_text())["log"]["entries"][0]["request"]["url"]
    return url.split("/wopi/files/")[1].split("?")[0]


def coauth_calls(server: LocalServer, file_id: str, token: str, version: str | None = None) -> list[str]:
    """Take a coauth lock, ask for the table with the version that answered, release the lock, ask for the
    table with the version before the release: the table versions answered, in order."""
    http, url = client(), server.url(file_id, token)
    take = {"X-WOPI-CoauthLockId": "C1", "X-WOPI-CoauthLockType": "Coauth", "X-WOPI-CoauthLockExpirationTimeout": "600"}
    taken = http.post(url, headers={"X-WOPI-Override": "GET_COAUTH_LOCK", **take})
    assert taken.status_code == 200, taken.headers
    held = taken.headers["X-WOPI-CoauthTableVersion"]
    table = {"X-WOPI-Override": "GET_COAUTH_TABLE", "X-WOPI-CoauthTableVersion": held}
    current = http.post(url, headers=table)
    assert current.status_code == 200 and current.content == b""  # the client's copy is current
    released = http.post(url, headers={"X-WOPI-Override": "UNLOCK_COAUTH_LOCK", "X-WOPI-CoauthLockId": "C1"})
    assert released.status_code == 200
    stale = http.post(url, headers=table)
    assert stale.status_code == 200 and stale.json() == {"CoauthTable": []}
    return [held, current.headers["X-WOPI-CoauthTableVersion"], released.headers["X-WOPI-CoauthTableVersion"]]


def test_coauth_table_versions_are_sent_as_this_hosts_and_must_change_where_the_recorded_ones_did(hosts, tmp_path):
    recorded = recorder(hosts, WOPIHOST_CSPP_PLUS="on")
    file_id, token = document(recorded, tmp_path)
    versions = coauth_calls(recorded, file_id, token)
    har = recording(recorded)

    fresh = hosts("fresh", WOPIHOST_CSPP_PLUS="on")
    file_id, token = document(fresh, tmp_path)
    # coauthored once before: the same calls, and this host's table versions now run ahead of the recording's
    assert coauth_calls(fresh, file_id, token) == versions
    done = replay(har, *wopi_args(fresh, file_id, token))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "4 requests: 4 matched, 0 diverged, 0 errors"


def test_json_sent_without_its_type_is_filled_in_and_a_json_document_is_sent_byte_for_byte(hosts, tmp_path):
    recorded = recorder(hosts)
    api = recorded.api_token("alice")
    http = client()
    graph, bearer = api["graph_url"], {"Authorization": f"Bearer {api['access_token']}"}
    # a document that is JSON and names the recording host: its own bytes, nothing of the session
    notes = json.dumps({"see": f"{graph}/me/drive/root", "owner": "alice"}).encode()
    typed = {**bearer, "Content-Type": "application/json"}
    uploaded = http.put(f"{graph}/me/drive/root:/notes.json:/content", notes, headers=typed)
    assert uploaded.status_code == 201, uploaded.text
    folder = http.post(f"{graph}/me/drive/root/children", json.dumps({"name": "Archive", "folder": {}}), headers=typed)
    assert folder.status_code == 201, folder.text
    # a move whose JSON goes with no Content-Type, which the host reads all the same
    moved = http.patch(
        f"{graph}/me/drive/items/{uploaded.json()['id']}",
        json.dumps({"parentReference": {"id": folder.json()["id"]}}).encode(),
        headers=bearer,
    )
    assert moved.status_code == 200 and moved.json()["parentReference"]["id"] == folder.json()["id"], moved.text
    assert http.get(f"{graph}/me/drive/root:/Archive/notes.json:/content", headers=bearer).content == notes
    har = recording(recorded, "{{api_token:1}}")

    done = replay_as_alice_on_a_fresh_host(hosts, har)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "4 requests: 4 matched, 0 diverged, 0 errors"


def test_a_graph_copy_replays_with_its_monitor_url_and_the_new_item_learned(hosts, tmp_path):
    """The copy's monitor URL is a ticket (a placeholder in the recording) handed out in a Location header: the
    replay follows the one this host answered, and learns the copy's id from the status it reports."""
    recorded = recorder(hosts)
    api = recorded.api_token("alice")
    http = client()
    graph, bearer = api["graph_url"], {"Authorization": f"Bearer {api['access_token']}"}
    uploaded = http.put(f"{graph}/me/drive/root:/a.txt:/content", b"copied bytes", headers=bearer)
    assert uploaded.status_code == 201, uploaded.text
    copied = http.post(f"{graph}/me/drive/items/{uploaded.json()['id']}/copy", json={"name": "b.txt"}, headers=bearer)
    assert copied.status_code == 202, copied.text
    status = http.get(copied.headers["Location"]).json()
    assert status["status"] == "completed"
    assert http.get(f"{graph}/me/drive/items/{status['resourceId']}/content", headers=bearer).content == b"copied bytes"
    har = recording(recorded, "{{api_token:1}}")

    done = replay_as_alice_on_a_fresh_host(hosts, har)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "4 requests: 4 matched, 0 diverged, 0 errors"
