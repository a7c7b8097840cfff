"""Two wopihost nodes that share nothing but PostgreSQL and one S3 bucket prefix (a throwaway Ceph RGW), end to
end (issue 16): each node is its own gunicorn server with its own port and data directory (so its own local
temporary directory); both have the same database schema, the same `s3://bucket/prefix` and the same secret key,
so that a token one node issued is good on the other.

Upload sessions started on one node and finished on the other, lock races split across the nodes, a node
SIGKILLed mid-write, and gc on both nodes at once while uploads run.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from wopihost.localserver import LocalServer

from .test_cspp_e2e import LOCK, MIB, Content, Doc, failure

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database", ["postgresql"], indirect=True)]

SECRET = "two-nodes-secret"


@pytest.fixture(scope="module", autouse=True)
def _on_postgresql():
    """The nodes share one database: PostgreSQL only (SQLite is one machine's file)."""
    if not os.environ.get("WOPIHOST_TEST_DATABASE_URL", "").strip():
        reason = "two nodes need PostgreSQL: set WOPIHOST_TEST_DATABASE_URL"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class Nodes:
    a: LocalServer
    b: LocalServer
    env: dict
    workdir: Path
    bucket: str
    prefix: str
    extra: list[LocalServer] = field(default_factory=list)

    def start(self, name: str) -> LocalServer:
        """Another node on the same database and bucket prefix (for one that replaces a killed node)."""
        node = start_node(self.workdir / name, self.env)
        self.extra.append(node)
        return node

    def blob_keys(self, s3) -> set[str]:
        """The keys of the blobs under the shared prefix (not the hold markers)."""
        keys = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/blobs/"):
            keys |= {item["Key"] for item in page.get("Contents", ())}
        return keys


def start_node(workdir: Path, env: dict) -> LocalServer:
    workdir.mkdir(parents=True)
    return LocalServer.start(workdir, env["WOPIHOST_DATABASE_URL"], workers=2, extra_env=env)


@pytest.fixture
def nodes(tmp_path, database, s3_storage) -> Iterator[Nodes]:
    prefix = f"two-nodes-{secrets.token_hex(4)}"
    bucket = urlsplit(s3_storage["WOPIHOST_STORAGE_URL"]).netloc
    env = {
        **s3_storage,
        "WOPIHOST_STORAGE_URL": f"s3://{bucket}/{prefix}",
        "WOPIHOST_DATABASE_URL": database,
        "WOPIHOST_SECRET_KEY": SECRET,
        "WOPIHOST_CSPP_PLUS": "on",
        "WOPIHOST_MAX_FILE_SIZE": "256MiB",
        "WOPIHOST_MAX_UPLOAD_SESSION_SIZE": "256MiB",
        "WOPIHOST_SWEEP_INTERVAL": "0",  # gc runs only when a test runs it
    }
    a = start_node(tmp_path / "a", env)
    try:
        b = start_node(tmp_path / "b", env)
    except BaseException:
        a.stop()
        raise
    nodes = Nodes(a, b, env, tmp_path, bucket, prefix)
    assert a.port != b.port and a.data_dir != b.data_dir
    yield nodes
    logs = []
    for node in (a, b, *nodes.extra):
        if node.process.poll() is None:
            node.stop()
            logs.append(node.log_text())
    for log in logs:
        assert "Traceback" not in log, log[-20000:]


def add_file(node: LocalServer, tmp_path: Path, content: bytes, name: str) -> str:
    path = tmp_path / f"{secrets.token_hex(4)}-{name}"
    path.write_bytes(content)
    return node.add_file(path, name)["id"]


def docs(nodes: Nodes, file_id: str) -> tuple[Doc, Doc]:
    """The same document with the same token (issued by node A) on node A and on node B."""
    token = nodes.a.token(file_id)
    return Doc(nodes.a, file_id, token), Doc(nodes.b, file_id, token)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_file(doc: Doc, data: bytes, lock: str = LOCK) -> requests.Response:
    return doc.post("PUT", "/contents", data=data, headers={"X-WOPI-Lock": lock})


def get_lock(doc: Doc) -> str:
    response = doc.post("GET_LOCK")
    assert response.status_code == 200, failure(response)
    return response.headers["X-WOPI-Lock"]


# -- 1. a WOPI (CSPP Plus) upload session across the nodes --------------------------------------------


def test_a_wopi_upload_session_started_on_a_is_finished_on_b(nodes, tmp_path):
    original = os.urandom(100_000)
    on_a, on_b = docs(nodes, add_file(nodes.a, tmp_path, original, "Session.docx"))
    assert on_b.post("LOCK", headers={"X-WOPI-Lock": LOCK}).status_code == 200
    before = on_a.info()
    assert on_b.info()["SequenceNumber"] == before["SequenceNumber"]

    content = Content("two nodes", 6)  # 24 MiB in 4 MiB chunks, sent in 9 pieces of 3 MiB
    session = on_a.create_session()
    pieces = list(content.pieces(3 * MIB))
    assert len(pieces) == 9
    for n, (offset, body) in enumerate(pieces):
        node = (on_a, on_b)[n % 2]
        response = node.update(session, offset, body)
        assert response.status_code == 200, (n, failure(response))
        assert response.headers["X-WOPI-UploadSessionCurrentOffset"] == str(offset + len(body))
        # the other node sees the session where this one left it: a stale offset gets 400 and the current one
        other = (on_a, on_b)[(n + 1) % 2]
        stale = other.update(session, offset, b"x")
        assert stale.status_code == 400, failure(stale)
        assert stale.headers["X-WOPI-UploadSessionCurrentOffset"] == str(offset + len(body))

    committed = on_b.commit(session, content.signature, before["SequenceNumber"])
    assert committed.status_code == 200, failure(committed)
    version = committed.headers["X-WOPI-ItemVersion"]
    assert version != before["Version"]
    assert on_a.content() == (content.sha256, content.length, version)
    assert on_b.content() == (content.sha256, content.length, version)
    info_a, info_b = on_a.info(), on_b.info()
    for info in (info_a, info_b):
        assert (info["Version"], info["Size"]) == (version, content.length)
        assert info["SequenceNumber"] == int(committed.headers["X-WOPI-SequenceNumber"]) > before["SequenceNumber"]
    # the session is over on both nodes
    assert on_a.update(session, content.stream_length, b"x").status_code == 410
    assert on_b.commit(session, content.signature, info_b["SequenceNumber"]).status_code == 410


# -- 2. a Graph resumable upload across the nodes ---------------------------------------------------


def graph_session(api: dict) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {api['access_token']}"
    return http


def test_a_graph_upload_session_started_on_a_is_finished_on_b(nodes):
    api = nodes.a.api_token("alice")
    graph_a, graph_b = api["graph_url"], api["graph_url"].replace(nodes.a.base, nodes.b.base, 1)
    assert graph_a != graph_b
    http = graph_session(api)
    data = os.urandom(11 * MIB + 12345)
    total = len(data)
    created = http.post(f"{graph_a}/me/drive/root:/across.bin:/createUploadSession", json={"item": {"fileSize": total}})
    assert created.status_code == 200, created.text
    assert created.json()["nextExpectedRanges"] == [f"0-{total - 1}"]
    url_a = created.json()["uploadUrl"]
    assert url_a.startswith(f"{nodes.a.base}/v1.0/uploadSessions/")
    url_b = url_a.replace(nodes.a.base, nodes.b.base, 1)

    cuts = [0, 2 * MIB, 4 * MIB + 1, 6 * MIB, 8 * MIB + 7, 10 * MIB, total]  # six fragments: A, B, A, B, A, B
    item = None
    for n, (first, end) in enumerate(zip(cuts, cuts[1:])):
        url, other = (url_a, url_b) if n % 2 == 0 else (url_b, url_a)
        answer = requests.put(url, data=data[first:end], headers={"Content-Range": f"bytes {first}-{end - 1}/{total}"})
        if end < total:
            assert answer.status_code == 202, (n, answer.text)
            assert answer.json()["nextExpectedRanges"] == [f"{end}-{total - 1}"]
            status = requests.get(other)
            assert status.status_code == 200 and status.json()["nextExpectedRanges"] == [f"{end}-{total - 1}"]
            # the fragment again, on the other node: already stored there too
            again = requests.put(
                other, data=data[first:end], headers={"Content-Range": f"bytes {first}-{end - 1}/{total}"}
            )
            assert again.status_code == 416, (n, again.text)
        else:
            assert url == url_b
            assert answer.status_code == 201, answer.text
            item = answer.json()
    assert item is not None and item["name"] == "across.bin" and item["size"] == total

    for base in (graph_a, graph_b):
        content = http.get(f"{base}/me/drive/items/{item['id']}/content")
        assert content.status_code == 200
        assert sha256(content.content) == sha256(data)
        assert http.get(f"{base}/me/drive/items/{item['id']}").json()["size"] == total
    # the session is complete on both nodes: a repeated final PUT on A gets the same item
    for url in (url_a, url_b):
        assert requests.get(url).json()["nextExpectedRanges"] == []
    last = cuts[-2]
    repeated = requests.put(url_a, data=data[last:], headers={"Content-Range": f"bytes {last}-{total - 1}/{total}"})
    assert repeated.status_code == 200, repeated.text
    assert repeated.json()["id"] == item["id"]


# -- 3. lock races split across the nodes ----------------------------------------------------------------


def test_lock_races_across_the_nodes_have_exactly_one_winner(nodes, tmp_path):
    file_id = add_file(nodes.a, tmp_path, b"locked content", "Locks.docx")
    token = nodes.a.token(file_id)
    racers = [Doc((nodes.a, nodes.b)[i % 2], file_id, token) for i in range(8)]  # four on each node
    for doc in racers:
        assert get_lock(doc) == ""  # each keeps its connection open for the race
    barrier = threading.Barrier(len(racers))

    def lock(i: int, lock_id: str) -> requests.Response:
        barrier.wait()
        return racers[i].post("LOCK", headers={"X-WOPI-Lock": lock_id})

    winners_by_node = {nodes.a.base: 0, nodes.b.base: 0}
    with ThreadPoolExecutor(len(racers)) as pool:
        for round_ in range(6):
            ids = [f"lock-{round_}-{i}" for i in range(len(racers))]
            answers = list(pool.map(lock, range(len(racers)), ids))
            statuses = [a.status_code for a in answers]
            assert sorted(statuses) == [200] + [409] * (len(racers) - 1), (round_, statuses)
            winner = ids[statuses.index(200)]
            winners_by_node[racers[statuses.index(200)].server.base] += 1
            for answer in answers:
                if answer.status_code == 409:
                    assert answer.headers["X-WOPI-Lock"] == winner, (round_, dict(answer.headers))
            assert {get_lock(racers[0]), get_lock(racers[1])} == {winner}
            # a loser's Unlock is refused on either node, the winner's goes through on the other node
            loser = next(i for i, s in enumerate(statuses) if s == 409)
            refused = racers[loser].post("UNLOCK", headers={"X-WOPI-Lock": ids[loser]})
            assert refused.status_code == 409 and refused.headers["X-WOPI-Lock"] == winner
            unlocked = racers[statuses.index(200) ^ 1].post("UNLOCK", headers={"X-WOPI-Lock": winner})
            assert unlocked.status_code == 200, failure(unlocked)
            assert {get_lock(racers[0]), get_lock(racers[1])} == {""}
    print(f"\nlock winners by node: {list(winners_by_node.values())}")
    for doc in racers:
        doc.http.close()
