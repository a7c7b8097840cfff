"""Two wopihost nodes that share nothing but PostgreSQL and one S3 bucket prefix (a throwaway Ceph RGW), end to
end (issue 16): each node is its own gunicorn server with its own port and data directory (so its own local
temporary directory); both have the same database schema, the same `s3://bucket/prefix` and the same secret key,
so that a token one node issued is good on the other.

Upload sessions started on one node and finished on the other, lock races split across the nodes, a node
SIGKILLed mid-write, and gc on both nodes at once while uploads run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import requests

from wopihost.config import Settings
from wopihost.gc import referenced_blobs
from wopihost.localserver import LocalServer
from wopihost.services import Services
from wopihost.validator.httpclient import Client

from ..helpers import wait_until
from .test_cspp_e2e import LOCK, MIB, Content, Doc, failure

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database", ["postgresql"], indirect=True)]

SECRET = "two-nodes-secret" * 2


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
        """The keys of the blobs under the shared prefix."""
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
    stopped = [node for node in (a, b, *nodes.extra) if node.process.poll() is None]  # not the killed ones
    for node in stopped:
        node.stop()
    for node in stopped:
        log = node.log_text()
        assert "Traceback" not in log, log[-20000:]
        # every byte went to the bucket: nothing stays on a node's own disk past its requests
        left = [str(p) for p in node.data_dir.rglob("*") if p.is_file()] if node.data_dir.exists() else []
        assert left == [], left


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
    http = Client()
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


# -- 4. a node SIGKILLed mid-write ---------------------------------------------------------------------------


def kill_node(node: LocalServer) -> None:
    """SIGKILL the node's master and every worker at once, as a machine that dies (the master first, so that
    it replaces no worker)."""
    victims = node.processes()
    for victim in victims:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    node.process.wait(timeout=10)
    _, alive = psutil.wait_procs(victims[1:], timeout=10)
    assert not alive, alive


def multipart_uploads(s3, nodes: Nodes) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=nodes.bucket, Prefix=f"{nodes.prefix}/").get("Uploads", [])


def start_put_file(node: LocalServer, doc: Doc, size: int) -> socket.socket:
    """A PutFile of `size` bytes to `node`, of which only the request head is sent."""
    url = urlsplit(doc.server.url(doc.file_id, doc.token, "/contents"))
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=30)
    sock.sendall(
        f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-WOPI-Override: PUT\r\n"
        f"X-WOPI-Lock: {LOCK}\r\nContent-Length: {size}\r\n\r\n".encode()
    )
    return sock


def send_slowly(sock: socket.socket, data: bytes, piece: int = MIB, pause: float = 0.01) -> None:
    try:
        for start in range(0, len(data), piece):
            sock.sendall(data[start : start + piece])
            time.sleep(pause)
    except OSError:  # the node died
        pass


def consistent(doc: Doc, allowed: dict[str, str]) -> str:
    """GetFile on `doc` is exactly one of `allowed` (sha256 -> name), its CheckFileInfo agrees, the lock is
    still LOCK; returns the name of what it is."""
    digest, length, version = doc.content()
    assert digest in allowed, f"GetFile returns neither {' nor '.join(allowed.values())} ({length} bytes)"
    info = doc.info()
    assert (info["Size"], info["Version"]) == (length, version)
    assert get_lock(doc) == LOCK
    return allowed[digest]


def test_a_node_killed_mid_put_file_leaves_the_old_or_the_new_content(nodes, tmp_path, s3):
    old = os.urandom(MIB + 3)
    on_a, _ = docs(nodes, add_file(nodes.a, tmp_path, old, "Killed.docx"))
    assert on_a.post("LOCK", headers={"X-WOPI-Lock": LOCK}).status_code == 200
    new = random.Random("killed put").randbytes(24 * MIB)  # three parts of a multipart upload
    outcomes = []

    # 1. killed mid-body, once the node is writing the new content to the bucket (a multipart upload is open)
    victim = nodes.b
    sock = start_put_file(victim, Doc(victim, on_a.file_id, on_a.token), len(new))
    writer = threading.Thread(target=send_slowly, args=(sock, new[: 16 * MIB]), daemon=True)
    writer.start()
    assert wait_until(lambda: multipart_uploads(s3, nodes), timeout=30, interval=0.02), (
        "the node never started writing to the bucket"
    )
    kill_node(victim)
    writer.join(timeout=30)
    sock.close()
    assert consistent(on_a, {sha256(old): "old", sha256(new): "new"}) == "old"  # its body never ended
    outcomes.append("mid-body: old")
    replaced = os.urandom(2 * MIB)
    assert put_file(on_a, replaced).status_code == 200
    assert consistent(on_a, {sha256(replaced): "replaced"}) == "replaced"

    # 2. killed as soon as its object is whole in the bucket (the multipart upload completed), when the node
    # records it as the file's content
    abandoned = {upload["UploadId"] for upload in multipart_uploads(s3, nodes)}  # the killed node's
    victim = nodes.start("b2")
    sock = start_put_file(victim, Doc(victim, on_a.file_id, on_a.token), len(new))
    writer = threading.Thread(target=send_slowly, args=(sock, new), kwargs={"pause": 0.002}, daemon=True)
    writer.start()

    def writing() -> set[str]:
        return {upload["UploadId"] for upload in multipart_uploads(s3, nodes)} - abandoned

    started = wait_until(writing, timeout=30, interval=0.02)
    assert started, "the node never started writing to the bucket"
    assert wait_until(lambda: not (started & writing()), timeout=30, interval=0.005), "the write never completed"
    kill_node(victim)
    writer.join(timeout=30)
    sock.close()
    outcome = consistent(on_a, {sha256(replaced): "old", sha256(new): "new"})
    outcomes.append(f"once its object was complete: {outcome}")

    # gc on the survivor takes neither the content nor the lock away, and A writes again
    for _ in range(2):
        nodes.a.cli("gc", "--grace", "0")
    consistent(on_a, {sha256(replaced): "old", sha256(new): "new"})
    latest = os.urandom(MIB // 2)
    written = put_file(on_a, latest)
    assert written.status_code == 200, failure(written)
    assert consistent(on_a, {sha256(latest): "latest"}) == "latest"
    print(f"\nnode killed mid-PutFile: {', '.join(outcomes)}")


def test_a_node_killed_mid_commit_leaves_the_old_or_the_new_content(nodes, tmp_path):
    """A PutChunkedFile commit of an upload session, killed with its node about halfway through (timed on a
    commit of the same size first); the other node then sees the old or the new content and can finish."""
    original = os.urandom(MIB)
    ids = [add_file(nodes.a, tmp_path, original, f"Commit{i}.docx") for i in range(2)]
    (probe, _), (on_a, on_b) = docs(nodes, ids[0]), docs(nodes, ids[1])
    for doc in (probe, on_a):
        assert doc.post("LOCK", headers={"X-WOPI-Lock": LOCK}).status_code == 200
    content = Content("killed commit", 6)  # 24 MiB

    def uploaded(doc: Doc) -> tuple[str, int]:
        session, sequence_number = doc.create_session(), doc.info()["SequenceNumber"]
        for n, (offset, body) in enumerate(content.pieces(4 * MIB)):
            node_doc = Doc((nodes.a, nodes.b)[n % 2], doc.file_id, doc.token)
            assert node_doc.update(session, offset, body).status_code == 200
        return session, sequence_number

    # how long a commit of this size takes on B
    session, sequence_number = uploaded(probe)
    started = time.monotonic()
    committed = Doc(nodes.b, probe.file_id, probe.token).commit(session, content.signature, sequence_number)
    took = time.monotonic() - started
    assert committed.status_code == 200, failure(committed)

    session, sequence_number = uploaded(on_a)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(on_b.commit, session, content.signature, sequence_number)
        time.sleep(took / 2)
        answered_before_the_kill = answer.done()
        kill_node(nodes.b)
        try:
            response = answer.result(timeout=30)
        except requests.RequestException:
            response = None
    outcome = consistent(on_a, {sha256(original): "old", content.sha256: "new"})
    if outcome == "old":
        assert response is None, failure(response)
        # the session is whole: A commits it
        stale = on_a.update(session, 0, b"x")
        assert stale.status_code == 400
        assert stale.headers["X-WOPI-UploadSessionCurrentOffset"] == str(content.stream_length)
        retried = on_a.commit(session, content.signature, sequence_number)
        assert retried.status_code == 200, failure(retried)
    else:
        assert response is None or response.status_code == 200, failure(response)
        retried = on_a.commit(session, content.signature, sequence_number)
        assert retried.status_code == 412, failure(retried)
    assert consistent(on_a, {content.sha256: "new"}) == "new"
    assert on_a.info()["Size"] == content.length
    print(
        f"\nnode killed {took / 2 * 1000:.0f} ms into a commit that takes {took * 1000:.0f} ms: {outcome}"
        f"{' (answered before the kill)' if answered_before_the_kill else ''}"
    )


# -- 5. gc on both nodes at once, during uploads ------------------------------------------------------------


def gc(node: LocalServer, grace: str) -> int:
    """`wopihost gc` with the node's settings; returns how many blobs it deleted."""
    return json.loads(node.cli("gc", "--grace", grace, "--json"))["blobs"]


def referenced(node: LocalServer) -> set[str]:
    """The blobs the shared database refers to, as gc finds them."""
    services = Services.create(Settings.from_env(node.env))
    try:
        return referenced_blobs(services) - {""}  # "": no content, no blob
    finally:
        services.db.dispose()


def test_gc_on_both_nodes_during_uploads_loses_nothing(nodes, tmp_path, s3):
    a, b = nodes.a, nodes.b
    files = {name: add_file(a, tmp_path, os.urandom(1000), f"{name}.docx") for name in ("put1", "put2", "session")}
    wopi = {name: docs(nodes, file_id) for name, file_id in files.items()}
    for on_a, _ in wopi.values():
        assert on_a.post("LOCK", headers={"X-WOPI-Lock": LOCK}).status_code == 200
    api = b.api_token("alice")
    graph = {a.base: api["graph_url"].replace(b.base, a.base, 1), b.base: api["graph_url"]}
    expected: dict[str, str] = {}  # file id -> sha256 of what was last written
    graph_items: dict[str, str] = {}
    done = threading.Event()

    def put_files(name: str) -> None:
        rng = random.Random(name)
        for n in range(4):
            data = rng.randbytes(rng.randrange(MIB, 3 * MIB))
            written = put_file(wopi[name][n % 2], data)
            assert written.status_code == 200, (name, n, failure(written))
            expected[files[name]] = sha256(data)

    def upload_sessions() -> None:
        on_a, on_b = wopi["session"]
        for n in range(2):
            content = Content(f"gc session {n}", 3, MIB)
            session, sequence_number = (on_a, on_b)[n % 2].create_session(), on_a.info()["SequenceNumber"]
            for i, (offset, body) in enumerate(content.pieces(MIB)):
                updated = (on_a, on_b)[i % 2].update(session, offset, body)
                assert updated.status_code == 200, (n, i, failure(updated))
            committed = (on_b, on_a)[n % 2].commit(session, content.signature, sequence_number)
            assert committed.status_code == 200, (n, failure(committed))
            expected[files["session"]] = content.sha256

    def graph_uploads() -> None:
        http = graph_session(api)
        for n in range(2):
            data = os.urandom(3 * MIB + n)
            created = http.post(f"{graph[(b, a)[n % 2].base]}/me/drive/root:/gc-{n}.bin:/createUploadSession", json={})
            assert created.status_code == 200, created.text
            url = created.json()["uploadUrl"]
            for i, first in enumerate(range(0, len(data), MIB)):
                end = min(first + MIB, len(data))
                node = (a, b)[i % 2]
                answer = requests.put(
                    url.replace(urlsplit(url).netloc, urlsplit(node.base).netloc, 1),
                    data=data[first:end],
                    headers={"Content-Range": f"bytes {first}-{end - 1}/{len(data)}"},
                )
                assert answer.status_code == (201 if end == len(data) else 202), (n, i, answer.text)
            graph_items[answer.json()["id"]] = sha256(data)

    # one count per node, each written only by its node's collector: a shared `count += gc(...)` reads the count
    # before the seconds-long pass and stores it after, so the two threads would overwrite each other's passes
    gc_runs = {a.base: 0, b.base: 0}
    deleted = {a.base: 0, b.base: 0}

    def collect(node: LocalServer) -> None:
        while not done.is_set() or gc_runs[node.base] < 2:
            found = gc(node, "0")
            deleted[node.base] += found
            gc_runs[node.base] += 1

    with ThreadPoolExecutor(6) as pool:
        collectors = [pool.submit(collect, node) for node in (a, b)]
        uploads = [
            pool.submit(put_files, "put1"),
            pool.submit(put_files, "put2"),
            pool.submit(upload_sessions),
            pool.submit(graph_uploads),
        ]
        try:
            for upload in uploads:
                upload.result()
        finally:
            done.set()
        for collector in collectors:
            collector.result()
    deleted_during = sum(deleted.values())
    print(f"\ngc runs during the uploads: {list(gc_runs.values())}, {deleted_during} blobs deleted")

    def everything_whole() -> None:
        for name, file_id in files.items():
            for doc in wopi[name]:
                assert doc.content()[0] == expected[file_id], (name, doc.server.base)
        http = graph_session(api)
        for item_id, digest in graph_items.items():
            for base in graph.values():
                content = http.get(f"{base}/me/drive/items/{item_id}/content")
                assert content.status_code == 200 and sha256(content.content) == digest, (item_id, base)

    assert len(expected) == 3 and len(graph_items) == 2
    everything_whole()
    # two more passes, one on each node, take whatever the uploads left unreferenced; the rest is all in use
    # (passes that overlap may forget what the other node's found, which only delays a deletion: gc.py)
    deleted_after = gc(a, "0") + gc(b, "0")
    everything_whole()
    names = {key.rsplit("/", 1)[1] for key in nodes.blob_keys(s3)}
    assert names == referenced(a), "the bucket holds other blobs than those the database refers to"
    assert deleted_during + deleted_after > 0

    # gc deletes replaced content only once two passes, the grace (1 s) apart, found it unreferenced
    in_use = nodes.blob_keys(s3)
    put1 = wopi["put1"]
    for n in range(3):
        assert put_file(put1[n % 2], os.urandom(MIB + n)).status_code == 200
    latest = os.urandom(MIB // 3)
    assert put_file(put1[1], latest).status_code == 200
    written = nodes.blob_keys(s3) - in_use
    assert len(written) == 4
    time.sleep(1.5)
    assert gc(a, "1") == 0  # found unreferenced now, not yet for the grace
    time.sleep(1.5)
    assert gc(b, "1") == 4  # the content put1 had before, and three of the four written since
    left = nodes.blob_keys(s3)
    assert len(in_use - left) == 1 and len(left - in_use) == 1 and left - in_use <= written
    assert put1[0].content()[0] == sha256(latest)
