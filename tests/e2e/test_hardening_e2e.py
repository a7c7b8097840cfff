"""The host under attack and faults, end to end against `wopihost serve` (gunicorn, two workers)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from wopihost.cspp.chunkid import chunk_id
from wopihost.cspp.signatures import ChunkSignature, Signature
from wopihost.cspp.wire import put_chunked_body, request_body
from wopihost.localserver import LocalServer, SlowClient
from wopihost.validator.httpclient import Client

from ..helpers import Filler, descriptors_under, small_tmpfs, storage_of, wait_until

pytestmark = pytest.mark.e2e

MIB = 1 << 20


@pytest.fixture
def server(tmp_path, database):
    server = LocalServer.start(tmp_path, database, extra_env={"WOPIHOST_CSPP_PLUS": "on"})
    yield server
    server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log[-20000:]


class Document:
    def __init__(self, server: LocalServer, tmp_path, content: bytes = b"original content", name: str = "Doc.docx"):
        path = tmp_path / name
        path.write_bytes(content)
        self.server, self.id = server, server.add_file(path)["id"]
        self.token = server.token(self.id)
        self.http = Client()

    def url(self, suffix: str = "") -> str:
        return self.server.url(self.id, self.token, suffix)

    def post(self, override: str, data=b"", suffix: str = "", **headers) -> requests.Response:
        return self.http.post(self.url(suffix), data=data, headers={"X-WOPI-Override": override, **headers})


@pytest.fixture
def document(server, tmp_path) -> Document:
    document = Document(server, tmp_path)
    assert document.post("LOCK", **{"X-WOPI-Lock": "L"}).status_code == 200
    return document


def raw_request(server: LocalServer, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head.encode("latin-1") + body)
    return sock


def read_status(sock: socket.socket) -> int:
    with sock.makefile("rb") as answer:
        return int(answer.readline().split()[1])


def raw_put_file(server: LocalServer, document, lock: str, length: int, body: bytes = b"") -> socket.socket:
    """A PutFile under `lock` that declares `length` bytes of body and sends `body` of them, on a socket of its own."""
    path = urlsplit(document.url("/contents"))
    return raw_request(
        server,
        f"POST {path.path}?{path.query} HTTP/1.1\r\nHost: x\r\n"
        f"X-WOPI-Override: PUT\r\nX-WOPI-Lock: {lock}\r\nContent-Length: {length}\r\n\r\n",
        body,
    )


# -- 1. descriptors ------------------------------------------------------------------------------


def blob_fds(server: LocalServer) -> list[str]:
    """What the workers hold open in the blob store; a deleted blob shows as '... (deleted)'."""
    return [held for worker in server.workers() for held in descriptors_under(server.data_dir / "blobs", worker.pid)]


def save_chunks(document: Document, *payloads: bytes) -> None:
    chunks = [(chunk_id(p), p) for p in payloads]
    signature = Signature("FullFile", tuple(ChunkSignature(c, len(p)) for c, p in chunks))
    sequence = document.post("GET_SEQUENCE_NUMBER").headers["X-WOPI-SequenceNumber"]
    saved = document.post(
        "PUT_CHUNKED_FILE",
        put_chunked_body({"MainContent": signature}, chunks),
        "/contents",
        **{"X-WOPI-Lock": "L", "X-WOPI-SequenceNumber": sequence},
    )
    assert saved.status_code == 200, saved.headers


GET_ALL = request_body(
    {
        "ContentPropertiesToReturn": [],
        "ContentFilters": [
            {"StreamId": "MainContent", "ChunkingScheme": "FullFile", "ChunksToReturn": "All", "AlreadyKnownChunks": []}
        ],
    }
)


@pytest.mark.local_storage
def test_chunked_reads_leave_no_descriptors_open(server, document):
    payloads = [os.urandom(100_000), os.urandom(100_000)]
    save_chunks(document, *payloads)
    ranges = request_body(
        {
            "ContentFilters": [
                {
                    "StreamId": "MainContent",
                    "ChunkRangesToReturn": [{"ChunkId": chunk_id(p), "Offset": 0, "Length": -1} for p in payloads],
                }
            ]
        }
    )
    for _ in range(50):
        assert document.post("GET_CHUNKED_FILE", GET_ALL).status_code == 200
        assert document.post("GET_CHUNKS", ranges).status_code == 200
    assert document.post("PUT", b"new content", "/contents", **{"X-WOPI-Lock": "L"}).status_code == 200
    assert blob_fds(server) == []  # none open, and none of the replaced blobs kept open after their deletion


@pytest.mark.local_storage
def test_a_client_going_away_mid_download_leaves_no_descriptors_open(server, document):
    save_chunks(document, os.urandom(16 * MIB), os.urandom(16 * MIB))
    url = urlsplit(document.url())
    for _ in range(5):
        sock = raw_request(
            server,
            f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n"
            f"X-WOPI-Override: GET_CHUNKED_FILE\r\nContent-Length: {len(GET_ALL)}\r\n\r\n",
            GET_ALL,
        )
        assert sock.recv(1000).startswith(b"HTTP/1.1 200")
        sock.close()  # 32 MiB still to come
    deadline = time.monotonic() + 30
    while blob_fds(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert blob_fds(server) == []


# -- 2. check-then-act across workers ------------------------------------------------------------


def race(count: int, call) -> list[requests.Response]:
    start = threading.Barrier(count)

    def one(i: int) -> requests.Response:
        start.wait()
        return call(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_save_as_racing_for_one_name_has_exactly_one_winner(server, tmp_path):
    sources = [Document(server, tmp_path, name=f"Source {i}.docx") for i in range(8)]  # all in one folder
    for round_ in range(10):
        name = f"Copy {round_}.docx"
        responses = race(
            8,
            lambda i: requests.post(
                sources[i].url(),
                data=f"body {i}".encode(),
                headers={"X-WOPI-Override": "PUT_RELATIVE", "X-WOPI-RelativeTarget": name},
            ),
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [409] * 7, statuses
        for loser in (r for r in responses if r.status_code == 409):
            assert loser.headers["X-WOPI-ValidRelativeTarget"] not in ("", name)
        winner = next(r for r in responses if r.status_code == 200).json()
        assert winner["Name"] == name
        assert requests.get(winner["Url"].replace("?", "/contents?")).content.startswith(b"body ")


def test_overwrite_racing_honours_the_targets_lock(server, document, tmp_path):
    target = Document(server, tmp_path, b"the target", name="Target.docx")
    assert target.post("LOCK", **{"X-WOPI-Lock": "T"}).status_code == 200
    # a token that may write the files beside its own: with none, overwriting another's file is refused first
    token = json.loads(server.cli("token", "issue", document.id, "--user", "alice", "--folders", "write", "--json"))
    responses = race(
        8,
        lambda i: requests.post(
            server.url(document.id, token["access_token"]),
            data=b"overwrite",
            headers={
                "X-WOPI-Override": "PUT_RELATIVE",
                "X-WOPI-RelativeTarget": "Target.docx",
                "X-WOPI-OverwriteRelativeTarget": "true",
            },
        ),
    )
    assert [r.status_code for r in responses] == [409] * 8
    assert {r.headers["X-WOPI-Lock"] for r in responses} == {"T"}
    assert requests.get(target.url("/contents")).content == b"the target"


def test_renames_racing_for_one_name_all_get_distinct_names(server, tmp_path):
    documents = [Document(server, tmp_path, f"doc {i}".encode(), name=f"Doc {i}.docx") for i in range(8)]
    responses = race(8, lambda i: documents[i].post("RENAME_FILE", **{"X-WOPI-RequestedName": "Same"}))
    assert all(r.status_code == 200 for r in responses)
    names = sorted(r.json()["Name"] for r in responses)
    assert names == sorted(["Same"] + [f"Same ({n})" for n in range(2, 9)])


def test_a_rename_that_carries_the_document_is_answered(server, tmp_path):
    """Collabora sends the whole document with RenameFile, and reads the answer once it has sent it all. Answered
    with those bytes unread, it got a broken pipe instead of the answer, though the file had been renamed."""
    document = Document(server, tmp_path)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    path = urlsplit(document.url())
    body = b"d" * (8 * MIB)  # more than the sockets' buffers hold: the client is still sending when answered
    connection.request(
        "POST",
        f"{path.path}?{path.query}",
        body,
        {"X-WOPI-Override": "RENAME_FILE", "X-WOPI-RequestedName": "Renamed", "X-WOPI-Lock": ""},
    )
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())["Name"]) == (200, "Renamed")
    connection.request("GET", f"{path.path}?{path.query}")  # and the connection carries the next request
    assert json.loads(connection.getresponse().read())["BaseFileName"] == "Renamed.docx"
    connection.close()


# -- 3. slow clients -----------------------------------------------------------------------------


@pytest.fixture
def impatient_server(tmp_path, database):
    """A header timeout of one second and an idle timeout of two, so the tests need not wait for the defaults;
    the idle timeout outlasts the pauses of the tests' own slow clients on a loaded machine."""
    server = LocalServer.start(
        tmp_path,
        database,
        extra_env={"WOPIHOST_HEADER_TIMEOUT": "1s", "WOPIHOST_IDLE_TIMEOUT": "2s", "WOPIHOST_CSPP_PLUS": "on"},
    )
    yield server
    server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log[-20000:]


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` within `seconds` (what it sends before is read and dropped)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


def held_by_server(server: LocalServer, sock: socket.socket) -> bool:
    """Whether a process of the server still holds the other end of `sock`."""
    port = sock.getsockname()[1]
    return any(c.raddr and c.raddr.port == port for p in server.processes() for c in p.net_connections("tcp"))


def test_a_head_not_finished_in_time_is_dropped(impatient_server, tmp_path):
    document = Document(impatient_server, tmp_path)
    path = urlsplit(document.url())
    sock = raw_request(impatient_server, f"GET {path.path}?{path.query} HTTP/1.1\r\nHost: x\r\n")
    assert closed_within(sock, 30)
    assert document.http.get(document.url()).status_code == 200


def test_a_graph_path_as_long_as_onedrive_allows_reaches_the_host(server):
    """OneDrive takes paths of up to 400 characters: in emoji, percent-encoded UTF-8, a request line of some 4,900
    bytes, past gunicorn's default limit (4094): a 414 of gunicorn's, in HTML. It reaches the host, which answers
    in Graph's JSON."""
    token = server.api_token()["access_token"]
    path = "/".join(["%F0%9F%98%80" * 49] * 8)  # 400 characters with the slashes, each emoji one
    answer = requests.get(
        f"{server.base}/v1.0/me/drive/root:/{path}:", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "itemNotFound", answer.text[:300]


def test_heads_over_64_kib_are_refused_at_once(tmp_path, database):
    """As many such heads, sent and then left unfinished, as the server has threads: each is refused (431) at
    once, and a normal request meanwhile is answered, not after the 10 s header timeout."""
    server = LocalServer.start(tmp_path, database, workers=2, threads=4)
    try:
        document = Document(server, tmp_path)
        path = urlsplit(document.url())
        head = f"GET {path.path}?{path.query} HTTP/1.1\r\nHost: x\r\nX-Pad: {'y' * (70 << 10)}\r\n"
        socks = [raw_request(server, head) for _ in range(8)]
        started = time.monotonic()
        assert document.http.get(document.url()).status_code == 200
        assert [read_status(sock) for sock in socks] == [431] * 8
        assert time.monotonic() - started < 5
        for sock in socks:
            sock.close()
    finally:
        server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log[-20000:]


def test_a_body_that_stalls_is_408_and_stores_nothing(impatient_server, tmp_path):
    document = Document(impatient_server, tmp_path)
    assert document.post("LOCK", **{"X-WOPI-Lock": "L"}).status_code == 200
    sock = raw_put_file(impatient_server, document, "L", 1000, b"half" * 100)
    assert read_status(sock) == 408
    assert document.http.get(document.url("/contents")).content == b"original content"
    assert storage_of(impatient_server.env).partial_writes() == []


def test_a_client_that_reads_nothing_is_closed_after_the_idle_timeout(impatient_server, tmp_path):
    document = Document(impatient_server, tmp_path, os.urandom(32 * MIB))
    path = urlsplit(document.url("/contents"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", impatient_server.port))
    sock.sendall(f"GET {path.path}?{path.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    # the server's send stalls; after the idle timeout of it, the server gives up the connection
    assert wait_until(lambda: not held_by_server(impatient_server, sock))
    received = 0
    with sock:
        sock.settimeout(30)
        while data := sock.recv(1 << 20):  # what the kernels buffered, then the end of the connection
            received += len(data)
    assert received < 32 * MIB


@pytest.mark.local_storage  # content in S3 has no local file to sendfile: it is streamed by the thread
def test_a_download_to_a_slow_reader_holds_no_thread(tmp_path, database):
    """One worker with one thread: while a client that reads nothing yet holds a 32 MiB GetFile, the event loop
    holds what is left to send and the thread answers other requests. The download then arrives whole, and its
    access line counts every byte."""
    server = LocalServer.start(tmp_path, database, workers=1, threads=1)
    try:
        content = os.urandom(32 * MIB)
        document = Document(server, tmp_path, content)
        path = urlsplit(document.url("/contents"))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        with sock:
            sock.sendall(f"GET {path.path}?{path.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(0.5)  # the buffers fill; the thread hands the rest to the event loop
            for _ in range(5):
                assert requests.get(document.url(), timeout=30).status_code == 200  # CheckFileInfo, a new connection
            sock.settimeout(30)
            received = bytearray()
            while len(received) < len(content) + 100 and (piece := sock.recv(1 << 20)):
                received += piece
                if b"\r\n\r\n" in received and len(received) - received.index(b"\r\n\r\n") - 4 >= len(content):
                    break
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == content
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and f'" 200 {len(content)} ' not in server.log_text():
            time.sleep(0.1)
    finally:
        server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log[-20000:]
    gets = [line for line in log.splitlines() if f'"GET /wopi/files/{document.id}/contents ' in line]
    assert len(gets) == 1 and f'" 200 {len(content)} ' in gets[0], gets


def test_sixty_four_slow_clients_do_not_starve_normal_requests(tmp_path, database):
    """A liveness check, not a benchmark (bench/slow_clients.py measures): slow clients of every kind hold
    more connections than the server has threads, and every CheckFileInfo is still answered, none near the
    probe's 10 s timeout. Threads are fewer than the default here so that they would all be taken if a slow
    head held one, or if a worker with every thread busy went on accepting connections; the idle timeout is
    shorter, so that stalled readers are cut off (and their connections closed) while the probe runs."""
    server = LocalServer.start(tmp_path, database, workers=2, threads=24, extra_env={"WOPIHOST_IDLE_TIMEOUT": "2s"})
    try:
        document = Document(server, tmp_path, os.urandom(8 * MIB))
        assert document.post("LOCK", **{"X-WOPI-Lock": "L"}).status_code == 200
        stop = threading.Event()
        kinds = ("head", "pipelined", "body", "reader")  # only bodies and readers may hold threads: 32 of 48
        clients = [SlowClient(kinds[i % 4], server.port, document.url(), stop) for i in range(64)]
        for client in clients:
            client.start()
        try:
            time.sleep(3)
            took = []
            for _ in range(100):
                started = time.monotonic()
                assert requests.get(document.url(), timeout=10).status_code == 200  # a new connection each
                took.append(time.monotonic() - started)
                time.sleep(0.1)
            took.sort()
            # a starved server makes probes wait for the slow clients' idle timeout; a loaded machine, one or two
            assert took[94] < 2 and took[-1] < 8, took[90:]
        finally:
            stop.set()
    finally:
        server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log[-20000:]


def test_a_slow_but_steady_reader_gets_the_whole_response(impatient_server, tmp_path):
    """The idle timeout (2 s here) bounds each wait for the client, not a whole 1 MiB piece of a response."""
    document = Document(impatient_server, tmp_path)
    assert document.post("LOCK", **{"X-WOPI-Lock": "L"}).status_code == 200
    payload = os.urandom(2 * MIB)
    save_chunks(document, payload)
    url = urlsplit(document.url())
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(("127.0.0.1", impatient_server.port))
    sock.sendall(
        f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\nX-WOPI-Override: GET_CHUNKED_FILE\r\n"
        f"Content-Length: {len(GET_ALL)}\r\nConnection: close\r\n\r\n".encode()
        + GET_ALL
    )
    received = bytearray()
    with sock:
        sock.settimeout(30)
        while data := sock.recv(32768):  # about 320 KiB/s: each 1 MiB piece takes 3 s to leave
            received += data
            time.sleep(0.1)
    assert received.startswith(b"HTTP/1.1 200") and payload in received


def test_a_refused_body_is_drained_for_at_most_a_few_seconds(impatient_server, tmp_path):
    document = Document(impatient_server, tmp_path)
    assert document.post("LOCK", **{"X-WOPI-Lock": "L"}).status_code == 200
    sock = raw_put_file(impatient_server, document, "wrong", 1000)

    def trickle():  # a byte every 0.3 s: never idle for the 2 s timeout, and 30 s in all
        with contextlib.suppress(OSError):  # until the server closes the connection
            for _ in range(100):
                sock.send(b"z")
                time.sleep(0.3)

    started = time.monotonic()
    threading.Thread(target=trickle, daemon=True).start()
    assert read_status(sock) == 409
    assert time.monotonic() - started < 20  # the drain's 5 s, not the body's 30


def test_a_refused_body_too_large_to_drain_is_answered_at_once(impatient_server, tmp_path):
    """A body larger than a drain ever reads (64 MiB against 32) is not waited for: the refusal comes at once, not
    after the drain has waited for bytes (up to 5 s; 2 s, this server's idle timeout, for a client sending none)."""
    document = Document(impatient_server, tmp_path)
    assert document.post("LOCK", **{"X-WOPI-Lock": "L"}).status_code == 200
    started = time.monotonic()
    sock = raw_put_file(impatient_server, document, "wrong", 64 << 20)
    with sock:
        assert read_status(sock) == 409
    assert time.monotonic() - started < 1  # the drain would wait 2 s here for bytes that never come


def test_a_refused_body_that_breaks_off_ends_the_connection_and_says_so(server, document):
    """A refused request whose client stops sending before the end of its body: the drain took the end of what
    came for the end of the body, and the answer said the connection would carry another request, which it
    cannot (RFC 9112 §9.6)."""
    assert document.post("LOCK", **{"X-WOPI-Lock": "L"}).status_code == 200
    sock = raw_put_file(server, document, "wrong", 1000, b"z" * 10)
    sock.shutdown(socket.SHUT_WR)
    with sock, sock.makefile("rb") as answer:
        head = []
        while (line := answer.readline()) not in (b"\r\n", b""):
            head.append(line.lower())
    assert head[0].split()[1] == b"409"
    assert b"connection: close\r\n" in head


def test_refused_requests_keep_their_connection(server, document):
    """A refused request whose body was drained, or that had none, leaves the connection usable."""
    url = urlsplit(document.url())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    requests_ = [
        ("POST", "", {"X-WOPI-Override": "PUT_USER_INFO"}, b"u" * 100_000, 400),  # read in part, then refused
        ("GET", "/contents", {"X-WOPI-MaxExpectedSize": "1"}, None, 412),
        ("POST", "/contents", {"X-WOPI-Override": "PUT", "X-WOPI-Lock": "wrong"}, b"z" * 100_000, 409),
        ("POST", "", {"X-WOPI-Override": "BOGUS"}, None, 501),
        ("GET", "", {}, None, 200),
    ]
    ports = set()
    for method, suffix, headers, body, status in requests_:
        conn.request(method, f"{url.path}{suffix}?{url.query}", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == status
        ports.add(conn.sock.getsockname()[1])
    assert len(ports) == 1  # one connection carried them all
    conn.close()


# -- 5. tokens in logs ---------------------------------------------------------------------------


def test_no_log_line_ever_shows_a_token(server, document):
    token, path = document.token, f"/wopi/files/{document.id}"
    malformed = [
        f"GET {path}?access_token={token}&x=a b HTTP/1.1",  # a space in the target
        f"GET {path} ?access_token={token} HTTP/1.1",
        f"GET {path}?access_token={token} HTTP/9.9",
        f"GET {path}?access_token={token.upper()} HTTP/1.1 extra",
        f"GET {path}?access_token={token}\x00 HTTP/1.1",
        f"G\x01T {path}?access_token={token} HTTP/1.1",
        f"GET {path}/access_token={token} HTTP/1.1",  # in the path, which the access log does show
        f"GET {path}/{token} HTTP/1.1",
    ]
    for line in malformed:
        sock = raw_request(server, f"{line}\r\nHost: x\r\n\r\n")
        with sock:
            sock.recv(65536)
    headers = [f"Authorization: Bearer {token}", f"X-Bad Header: {token}", f"X-Token: {token}\x7f"]
    for header in headers:
        sock = raw_request(server, f"GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n")
        with sock:
            sock.recv(65536)
    assert document.http.get(document.url()).status_code == 200
    server.stop()
    log = server.log_text()
    assert token.lower() not in log.lower()
    assert "Invalid" in log and "[redacted]" in log  # the malformed requests were logged, redacted


# -- 4. malformed chunked bodies -----------------------------------------------------------------

CHUNKED_BODIES = {
    "size zz": b"zz\r\nhello\r\n0\r\n\r\n",
    "size -5": b"-5\r\nhello\r\n0\r\n\r\n",
    "absurd size": b"ffffffffffffffffffffffff\r\nhello",
    "cut off": b"5\r\nhello\r\n5\r\nwor",
    "no terminator": b"5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize(
    "override, suffix, extra",
    [
        ("PUT", "/contents", "X-WOPI-Lock: L\r\n"),
        ("UPDATE_UPLOAD_SESSION", "", "X-WOPI-ContentRangeOffset: 0\r\nX-WOPI-ContentRangeLength: 10\r\n"),
        ("PUT_CHUNKED_FILE", "/contents", "X-WOPI-Lock: L\r\nX-WOPI-SequenceNumber: 1\r\n"),
    ],
    ids=["PutFile", "UpdateUploadSession", "PutChunkedFile"],
)
def test_malformed_chunked_bodies_are_400(server, document, override, suffix, extra):
    if override == "UPDATE_UPLOAD_SESSION":
        session = document.post("CREATE_UPLOAD_SESSION").json()["UploadSessionToken"]
        extra += f"X-WOPI-UploadSessionToken: {session}\r\n"
    path = urlsplit(document.url(suffix))
    for label, body in CHUNKED_BODIES.items():
        sock = raw_request(
            server,
            f"POST {path.path}?{path.query} HTTP/1.1\r\nHost: x\r\n"
            f"X-WOPI-Override: {override}\r\n{extra}Transfer-Encoding: chunked\r\n\r\n",
            body,
        )
        sock.shutdown(socket.SHUT_WR)  # the body ends here
        with sock, sock.makefile("rb") as answer:
            head = answer.read().split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        assert head[0].split()[1] == "400", (label, head)
        assert any(line.lower().startswith("x-wopi-failurereason: ") and "body" in line for line in head), head
    assert document.http.get(document.url("/contents")).content == b"original content"
    assert storage_of(server.env).partial_writes() == []


# -- 6. a full disk, end to end ------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path / "small") as mount:
        yield mount


@pytest.mark.local_storage
def test_a_full_disk_is_answered_507_and_loses_nothing(small_disk, tmp_path):
    server = LocalServer.start(
        tmp_path,
        extra_env={  # the data and the SQLite database on the small disk, the log not
            "WOPIHOST_DATA_DIR": str(small_disk),
            "WOPIHOST_CSPP_PLUS": "on",
            "WOPIHOST_MIN_FREE_SPACE": "0",
        },
    )
    try:
        document = Document(server, tmp_path)
        assert document.post("LOCK", **{"X-WOPI-Lock": "L"}).status_code == 200
        session = document.post("CREATE_UPLOAD_SESSION").json()["UploadSessionToken"]
        filler = Filler(small_disk)
        filler.fill()
        put = document.post("PUT", os.urandom(2 * MIB), "/contents", **{"X-WOPI-Lock": "L"})
        assert put.status_code == 507 and "full" in put.headers["X-WOPI-FailureReason"]
        update = document.post(
            "UPDATE_UPLOAD_SESSION",
            os.urandom(MIB),
            **{
                "X-WOPI-UploadSessionToken": session,
                "X-WOPI-ContentRangeOffset": "0",
                "X-WOPI-ContentRangeLength": str(MIB),
            },
        )
        assert update.status_code == 507
        for i in range(10):  # the database shares the disk: each change is stored or refused, never a 500
            assert document.post("LOCK", **{"X-WOPI-Lock": "L", "X-WOPI-OldLock": "L"}).status_code in (200, 507)
        health = document.http.get(f"{server.base}/healthz")
        assert health.status_code == 503 and health.json()["storage"] in ("full", "not writable")
        filler.free()
        assert document.http.get(document.url("/contents")).content == b"original content"
        assert document.post("PUT", b"new content", "/contents", **{"X-WOPI-Lock": "L"}).status_code == 200
        assert document.http.get(f"{server.base}/healthz").status_code == 200
    finally:
        server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log[-20000:]
