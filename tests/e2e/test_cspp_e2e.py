"""CSPP Plus upload sessions end to end: real HTTP against gunicorn (two gthread workers), large streams.

Every stream here is generated piece by piece from a seed and never held whole, on either side: the
content is compared by hashing what GetFile streams back.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psutil
import pytest
import requests

from wopihost.cspp.chunkid import chunk_id
from wopihost.cspp.frames import chunk_frame
from wopihost.cspp.signatures import ChunkSignature, Signature
from wopihost.cspp.wire import put_chunked_body, read_response, rechunk, request_body
from wopihost.localserver import LocalServer, PeakRss
from wopihost.validator.httpclient import Client

from ..helpers import wait_for_respawn, wait_until, writes_held

pytestmark = pytest.mark.e2e

MIB = 1 << 20
CHUNK = 4 * MIB
PIECE = 10 * MIB
FRAME_HEADER = 32  # a Chunk frame: 16-byte header + 16-byte ChunkId, then the payload
LOCK = "L"
ORIGINAL = b"the original content, version 1\n" * 1000


# -- the server, the document, the content ---------------------------------------


@pytest.fixture
def cspp_server(tmp_path, database):
    server = LocalServer.start(
        tmp_path,
        database,
        workers=2,
        extra_env={
            "WOPIHOST_CSPP_PLUS": "on",
            "WOPIHOST_MAX_FILE_SIZE": "512MiB",
            "WOPIHOST_MAX_UPLOAD_SESSION_SIZE": "1GiB",
        },
    )
    yield server
    server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log[-20000:]
    assert "database is locked" not in log, log[-20000:]


@pytest.fixture
def doc(cspp_server, tmp_path) -> Doc:
    path = tmp_path / "Big.docx"
    path.write_bytes(ORIGINAL)
    file_id = cspp_server.add_file(path)["id"]
    doc = Doc(cspp_server, file_id, cspp_server.token(file_id))
    locked = doc.post("LOCK", headers={"X-WOPI-Lock": LOCK})
    assert locked.status_code == 200, failure(locked)
    yield doc
    doc.http.close()


class Content:
    """A MainContent of `count` chunks of `size` bytes, derived from `seed`, generated again whenever needed.

    Every chunk is a distinct 32-byte head (a hash of seed and index) followed by a slice, at its own offset,
    of one random buffer: cheap to make, and no two chunks (or pieces of a chunk) are alike.
    """

    def __init__(self, seed: str, count: int, size: int = CHUNK):
        self.seed, self.count, self.size = seed, count, size
        self._base = random.Random(seed).randbytes(2 * size)
        ids, digest = [], hashlib.sha256()
        for i in range(count):
            payload = self.payload(i)
            ids.append(chunk_id(payload))
            digest.update(payload)
        self.signature = Signature("FullFile", tuple(ChunkSignature(cid, size) for cid in ids))
        self.sha256 = digest.hexdigest()
        self.length = count * size
        self.stream_length = count * (FRAME_HEADER + size)

    def payload(self, i: int) -> bytes:
        start = (i * 1_000_003) % self.size
        head = hashlib.sha256(f"{self.seed}:{i}".encode()).digest()
        return head + self._base[start + len(head) : start + self.size]

    def pieces(self, piece: int = PIECE) -> Iterator[tuple[int, bytes]]:
        """The upload-session stream (a Chunk frame per chunk) cut into `piece`-byte pieces: (offset, bytes).

        The cuts fall anywhere, inside frame headers and payloads alike.
        """

        def parts():
            for i, chunk in enumerate(self.signature.chunks):
                yield from chunk_frame(chunk.chunk_id, self.payload(i))

        yield from ((i * piece, data) for i, data in enumerate(rechunk(parts(), piece)))


def failure(response: requests.Response) -> str:
    return f"{response.status_code} {response.headers.get('X-WOPI-FailureReason')!r} {dict(response.headers)}"


@dataclass
class Doc:
    """One document, one token, one keep-alive client."""

    server: LocalServer
    file_id: str
    token: str
    http: requests.Session = field(default_factory=Client)

    def url(self, suffix: str = "") -> str:
        return self.server.url(self.file_id, self.token, suffix)

    def post(self, override: str, suffix: str = "", data=None, headers=None, **kwargs) -> requests.Response:
        headers = {"X-WOPI-Override": override, **(headers or {})}
        return self.http.post(self.url(suffix), data=data, headers=headers, **kwargs)

    def info(self) -> dict:
        response = self.http.get(self.url())
        assert response.status_code == 200, failure(response)
        return response.json()

    def create_session(self) -> str:
        response = self.post("CREATE_UPLOAD_SESSION")
        assert response.status_code == 200, failure(response)
        return response.json()["UploadSessionToken"]

    def update(self, session: str, offset: int, body: bytes) -> requests.Response:
        return self.post(
            "UPDATE_UPLOAD_SESSION",
            data=body,
            headers={
                "X-WOPI-UploadSessionToken": session,
                "X-WOPI-ContentRangeOffset": str(offset),
                "X-WOPI-ContentRangeLength": str(len(body)),
            },
        )

    def upload(self, session: str, content: Content, start: int = 0) -> int:
        """Send the session stream from `start` (a piece boundary) to its end; returns the session's end."""
        end = start
        for offset, body in content.pieces():
            if offset < start:
                continue
            response = self.update(session, offset, body)
            assert response.status_code == 200, (offset, failure(response))
            end = int(response.headers["X-WOPI-UploadSessionCurrentOffset"])
            assert end == offset + len(body)
        assert end == content.stream_length
        return end

    def commit(
        self, session: str, signature: Signature, sequence_number: int, http: requests.Session | None = None
    ) -> requests.Response:
        return (http or self.http).post(
            self.url("/contents"),
            data=put_chunked_body({"MainContent": signature}, session_token=session),
            headers={
                "X-WOPI-Override": "PUT_CHUNKED_FILE",
                "X-WOPI-SequenceNumber": str(sequence_number),
                "X-WOPI-Lock": LOCK,
            },
        )

    def content(self) -> tuple[str, int, str]:
        """GetFile, streamed: (sha256 hex, length, X-WOPI-ItemVersion)."""
        digest, length = hashlib.sha256(), 0
        with self.http.get(self.url("/contents"), stream=True) as response:
            assert response.status_code == 200, failure(response)
            for piece in response.iter_content(MIB):
                digest.update(piece)
                length += len(piece)
            return digest.hexdigest(), length, response.headers["X-WOPI-ItemVersion"]


ORIGINAL_SHA256 = hashlib.sha256(ORIGINAL).hexdigest()


# -- processes ---------------------------------------------------------------------


def partial_writes(server: LocalServer) -> dict[str, int]:
    """The `.part` files in DATA_DIR/tmp and their sizes."""
    found = {}
    for entry in os.scandir(server.data_dir / "tmp"):
        try:
            found[entry.path] = entry.stat().st_size
        except FileNotFoundError:
            pass
    return found


def writers_of(server: LocalServer, path: str) -> list[psutil.Process]:
    busy = []
    for worker in server.workers():
        try:
            if any(f.path == path for f in worker.open_files()):
                busy.append(worker)
        except psutil.NoSuchProcess:
            pass
    return busy


def blob_files(server: LocalServer) -> list[str]:
    return sorted(p.name for p in (server.data_dir / "blobs").rglob("*") if p.is_file())


# -- 1. a large upload through a session -----------------------------------------------


@pytest.mark.local_storage
def test_200_mib_through_an_upload_session(cspp_server, doc):
    content = Content("two hundred", 50)  # 50 chunks of 4 MiB, 21 pieces of 10 MiB (the last one short)
    before = doc.info()
    assert before["SequenceNumber"] > 0 and before["Version"] == "1"
    session = doc.create_session()
    idle = cspp_server.rss()

    with PeakRss(cspp_server) as memory:
        started = time.monotonic()
        end = doc.upload(session, content)
        uploaded = time.monotonic()
        committed = doc.commit(session, content.signature, before["SequenceNumber"])
        done = time.monotonic()
    assert committed.status_code == 200, failure(committed)
    assert end == content.stream_length == 200 * MIB + 50 * FRAME_HEADER
    sequence_number = int(committed.headers["X-WOPI-SequenceNumber"])
    assert sequence_number > before["SequenceNumber"]

    assert doc.content() == (content.sha256, 200 * MIB, committed.headers["X-WOPI-ItemVersion"])
    after = doc.info()
    assert after["Size"] == 200 * MIB and after["SequenceNumber"] == sequence_number
    assert after["Version"] == committed.headers["X-WOPI-ItemVersion"] != before["Version"]
    growth = memory.peak - idle
    print(
        f"\n200 MiB: upload {uploaded - started:.1f} s, commit {done - uploaded:.1f} s, "
        f"server RSS idle {idle / MIB:.0f} MiB, peak growth {growth / MIB:.1f} MiB"
    )
    assert growth < 64 * MIB, f"server memory grew by {growth / MIB:.0f} MiB for a 200 MiB upload"

    # The host keeps the signature as uploaded (FullFile with 50 chunks) and the session is gone.
    got = doc.post(
        "GET_CHUNKED_FILE",
        data=request_body(
            {
                "ContentPropertiesToReturn": [],
                "ContentFilters": [
                    {
                        "StreamId": "MainContent",
                        "ChunkingScheme": "FullFile",
                        "ChunksToReturn": "None",
                        "AlreadyKnownChunks": [],
                    }
                ],
            }
        ),
    )
    assert got.status_code == 200, failure(got)
    message, frames = read_response(got.content)
    assert message["Signatures"] == [content.signature.to_json("MainContent")] and frames == []
    assert doc.update(session, end, b"x").status_code == 410
    assert partial_writes(cspp_server) == {}
    # The commit wrote no content: the session's 21 pieces are now the file's, the old content is deleted.
    assert len(blob_files(cspp_server)) == 21
    assert sum(p.stat().st_size for p in (cspp_server.data_dir / "blobs").rglob("*") if p.is_file()) == end


# -- 2. a worker killed in the middle of an UpdateUploadSession -------------------------------


def send_partial_update(
    server: LocalServer, doc: Doc, session: str, offset: int, declared: int, body: bytes
) -> socket.socket:
    """Start an UpdateUploadSession that declares `declared` bytes and send only `body`."""
    url = urlsplit(doc.url())
    head = (
        f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-WOPI-Override: UPDATE_UPLOAD_SESSION\r\nX-WOPI-UploadSessionToken: {session}\r\n"
        f"X-WOPI-ContentRangeOffset: {offset}\r\nX-WOPI-ContentRangeLength: {declared}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head + body)
    return sock


@pytest.mark.local_storage
def test_worker_killed_mid_update_the_session_resumes_at_the_last_offset(cspp_server, doc):
    content = Content("killed update", 12)  # 48 MiB: 5 pieces
    before = doc.info()
    session = doc.create_session()
    pieces = content.pieces()
    for _ in range(2):
        offset, body = next(pieces)
        response = doc.update(session, offset, body)
        assert response.status_code == 200, failure(response)
    reported = int(response.headers["X-WOPI-UploadSessionCurrentOffset"])
    assert reported == 2 * PIECE
    offset, body = next(pieces)
    assert offset == reported and len(body) == PIECE

    sock = send_partial_update(cspp_server, doc, session, offset, PIECE, body[: 3 * MIB])
    part = wait_until(lambda: next((p for p, size in partial_writes(cspp_server).items() if size > 0), None))
    assert part, "the server is not writing the piece to a temporary file"
    busy = writers_of(cspp_server, part)
    assert len(busy) == 1, busy
    os.kill(busy[0].pid, signal.SIGKILL)
    wait_for_respawn(cspp_server, busy[0])
    sock.close()

    # The killed piece left the session where the last successful update put it. (The probes carry tiny
    # bodies: see test_a_refused_update_leaves_its_connection_usable for what a large refused body does.)
    stale = doc.update(session, 0, b"x")
    assert stale.status_code == 400, failure(stale)
    assert stale.headers["X-WOPI-UploadSessionCurrentOffset"] == str(reported)
    ahead = doc.update(session, reported + PIECE, b"x")
    assert ahead.status_code == 400 and ahead.headers["X-WOPI-UploadSessionCurrentOffset"] == str(reported)
    end = doc.upload(session, content, start=reported)  # that piece again, at the same offset, then the rest

    committed = doc.commit(session, content.signature, before["SequenceNumber"])
    assert committed.status_code == 200, failure(committed)
    assert doc.content() == (content.sha256, content.length, committed.headers["X-WOPI-ItemVersion"])
    assert end == content.stream_length


# -- 3. a worker killed in the middle of a commit ----------------------------------------------


def commit_and_kill(
    server: LocalServer, doc: Doc, session: str, content: Content, sequence_number: int, delay: float
) -> tuple[requests.Response | None, bool]:
    """Send PutChunkedFile and SIGKILL the worker committing it, then wait for gunicorn to replace it.

    The commit writes no content: it opens the session's pieces (their chunks were found as they arrived), then
    switches the file to them in one transaction and answers, some milliseconds later. The kill comes `delay`
    seconds after the worker is seen holding the pieces open; a commit over before it is seen is not killed.
    Returns the response (None if the connection died) and whether the worker was still at work when it was
    killed.
    """
    pieces = {str(p) for p in (server.data_dir / "blobs").rglob("*") if p.is_file()}

    def committing():
        for worker in server.workers():
            try:
                if len(pieces & {f.path for f in worker.open_files()}) > 1:
                    return worker
            except psutil.NoSuchProcess:
                pass
        return None

    with ThreadPoolExecutor(1) as pool, requests.Session() as http:
        future = pool.submit(doc.commit, session, content.signature, sequence_number, http)
        victim = wait_until(lambda: committing() or future.done(), timeout=60, interval=0.002)
        assert victim, "the commit neither started nor ended within a minute"
        if not isinstance(victim, psutil.Process):  # polling every 2 ms, under load, can miss milliseconds of work
            return future.result(), False
        time.sleep(delay)
        busy = not future.done()
        os.kill(victim.pid, signal.SIGKILL)
        try:
            response = future.result(timeout=60)
        except requests.RequestException:
            response = None
    wait_for_respawn(server, victim)
    return response, busy


@pytest.mark.local_storage
def test_worker_killed_mid_commit_leaves_the_old_or_the_new_version(cspp_server, doc, database):
    content = Content("killed commit", 32)  # 128 MiB
    old_sequence_number = doc.info()["SequenceNumber"]
    old, new = (ORIGINAL_SHA256, len(ORIGINAL)), (content.sha256, content.length)
    session = doc.create_session()
    end = doc.upload(session, content)

    def old_version_and_session_intact():
        assert doc.content() == (*old, "1")
        info = doc.info()
        assert (info["Version"], info["SequenceNumber"]) == ("1", old_sequence_number)
        assert info["Size"] == len(ORIGINAL)
        offset = doc.update(session, 0, b"x")  # a wrong offset: 400 and where the session stands
        assert offset.status_code == 400, failure(offset)
        assert offset.headers["X-WOPI-UploadSessionCurrentOffset"] == str(end)

    # Killed first with its pieces open while it waits for another writer to let go of the database (a known
    # point: the kill cannot come too late), then later and later: either version, never a mix.
    outcomes = []
    for delay in (None, 0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32):
        with writes_held(database, doc.file_id) if delay is None else nullcontext():
            response, busy = commit_and_kill(cspp_server, doc, session, content, old_sequence_number, delay or 0)
        digest, length, version = doc.content()
        info = doc.info()
        assert info["Version"] == version and info["Size"] == length
        if (digest, length) == old:
            assert busy and response is None, failure(response)
            old_version_and_session_intact()
            # What the dead worker left behind (its request spool) is only garbage: collecting it now must
            # leave the session it was committing alone.
            cspp_server.cli("gc", "--grace", "0s")
            assert partial_writes(cspp_server) == {}
            old_version_and_session_intact()
            outcomes.append("waiting: old" if delay is None else f"{delay * 1000:g} ms: old")
            continue
        assert (digest, length) == new, "GetFile returns neither the old nor the new content"
        assert response is None or response.status_code == 200, failure(response)
        assert version == "2" and info["SequenceNumber"] > old_sequence_number
        assert delay is not None, "the commit went through while another writer held the database"
        outcomes.append(f"{delay * 1000:g} ms: new{' (answered)' if response is not None else ''}")
        # The save is in place: a retry is refused for its stale sequence number, and the session is gone.
        retried = doc.commit(session, content.signature, old_sequence_number)
        assert retried.status_code == 412, failure(retried)
        assert retried.headers["X-WOPI-SequenceNumber"] == str(info["SequenceNumber"])
        assert doc.commit(session, content.signature, info["SequenceNumber"]).status_code == 410
        break
    else:  # never killed late enough: the retry of the save goes through
        retried = doc.commit(session, content.signature, old_sequence_number)
        assert retried.status_code == 200, failure(retried)
        assert retried.headers["X-WOPI-ItemVersion"] == "2"
    print(f"\nkilled mid-commit: {', '.join(outcomes)}")

    # Once the garbage of the killed workers is collected, the session's pieces are the new content and
    # nothing else is left.
    cspp_server.cli("gc", "--grace", "0s")
    assert partial_writes(cspp_server) == {}
    assert sum(p.stat().st_size for p in (cspp_server.data_dir / "blobs").rglob("*") if p.is_file()) == end
    assert doc.content() == (*new, "2")


# -- 4. two updates at the same offset, from two worker processes -----------------------------


class Connection:
    """A keep-alive HTTP connection whose server end is known: which worker process accepted it."""

    def __init__(self, server: LocalServer, path: str):
        self.server, self.path = server, path
        self.conn = self.owner = None

    def open(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        self.request("GET", {})  # a worker accepts the connection only once a request comes
        port = self.conn.sock.getsockname()[1]
        self.owner = next(
            w.pid for w in self.server.workers() for c in w.net_connections("tcp") if c.raddr and c.raddr.port == port
        )

    def request(self, method: str, headers: dict, body: bytes | None = None) -> tuple[int, dict, bytes]:
        self.conn.request(method, self.path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()

    def still_owned(self) -> bool:
        return self.conn.sock is not None and self.owner in {
            w.pid
            for w in self.server.workers()
            for c in w.net_connections("tcp")
            if c.raddr and c.raddr.port == self.conn.sock.getsockname()[1]
        }


def on_two_workers(connections: list[Connection]) -> None:
    """(Re)connect until the two connections are served by two different worker processes."""
    for _ in range(100):
        for c in connections:
            if c.conn is None or not c.still_owned():
                c.open()
        if connections[0].owner != connections[1].owner:
            return
        connections[1].open()
    pytest.fail("could not get two connections served by different workers")


def test_concurrent_updates_at_one_offset_exactly_one_wins(cspp_server, doc):
    # Bodies stay under 64 KiB: gunicorn drains at most that much of a body the application did not read (the
    # loser's, when it is refused before its body is read) and otherwise drops the keep-alive connection.
    rounds, payload_size = 20, 48 * 1024
    before = doc.info()
    session = doc.create_session()
    path = urlsplit(doc.url())
    connections = [Connection(cspp_server, f"{path.path}?{path.query}") for _ in range(2)]
    rng = random.Random("race")
    barrier = threading.Barrier(2)
    winners, offset, workers_seen = [], 0, set()

    def send(i: int, body: bytes, at: int) -> tuple[int, dict, bytes]:
        barrier.wait()
        return connections[i].request(
            "POST",
            {
                "X-WOPI-Override": "UPDATE_UPLOAD_SESSION",
                "X-WOPI-UploadSessionToken": session,
                "X-WOPI-ContentRangeOffset": str(at),
                "X-WOPI-ContentRangeLength": str(len(body)),
            },
            body,
        )

    with ThreadPoolExecutor(2) as pool:
        for n in range(rounds):
            on_two_workers(connections)
            workers_seen.update(c.owner for c in connections)
            payloads = [rng.randbytes(payload_size) for _ in range(2)]
            bodies = [b"".join(chunk_frame(chunk_id(p), p)) for p in payloads]  # same length, whole frames
            results = list(pool.map(send, [0, 1], bodies, [offset, offset]))
            statuses = [status for status, _, _ in results]
            assert sorted(statuses) == [200, 400], (n, results)
            new_offset = offset + len(bodies[0])
            for status, headers, _ in results:
                assert headers["x-wopi-uploadsessioncurrentoffset"] == str(new_offset), (n, status, headers)
            winners.append(payloads[statuses.index(200)])
            offset = new_offset
    for c in connections:
        c.conn.close()
    assert len(workers_seen) >= 2

    signature = Signature("FullFile", tuple(ChunkSignature(chunk_id(p), len(p)) for p in winners))
    committed = doc.commit(session, signature, before["SequenceNumber"])
    assert committed.status_code == 200, failure(committed)
    expected = hashlib.sha256(b"".join(winners)).hexdigest()
    assert doc.content() == (expected, rounds * payload_size, committed.headers["X-WOPI-ItemVersion"])


# -- 5. a refused update and the client's keep-alive connection ---------------------------------


def test_a_refused_update_leaves_its_connection_usable(cspp_server, doc):
    """A client that sends a piece at a stale offset must learn the session's offset from the 400, and then
    either reuse the connection or be told (Connection: close) that it cannot: the resync of docs/cspp-plus.md §1.6."""
    session = doc.create_session()
    path = urlsplit(doc.url())
    conn = http.client.HTTPConnection("127.0.0.1", cspp_server.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"{path.path}?{path.query}",
            body=os.urandom(MIB),
            headers={
                "X-WOPI-Override": "UPDATE_UPLOAD_SESSION",
                "X-WOPI-UploadSessionToken": session,
                "X-WOPI-ContentRangeOffset": "5",
                "X-WOPI-ContentRangeLength": str(MIB),
            },
        )
        refused = conn.getresponse()
        refused.read()
        assert refused.status == 400
        assert refused.getheader("X-WOPI-UploadSessionCurrentOffset") == "0"
        if (refused.getheader("Connection") or "").lower() == "close":
            return  # announced: the client opens a new connection
        time.sleep(0.5)
        try:
            conn.request("GET", f"{path.path}?{path.query}")
            after = conn.getresponse()
            after.read()
        except (http.client.HTTPException, OSError) as exc:
            pytest.fail(
                f"the 400 said keep-alive ({refused.getheader('Connection')!r}), but the server then "
                f"dropped the connection: {exc!r}"
            )
        assert after.status == 200
    finally:
        conn.close()
