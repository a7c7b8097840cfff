"""End to end over real HTTP against gunicorn with two worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psutil
import pytest
import requests
import sqlalchemy as sa

from ..helpers import wait_for_respawn, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def document(server, tmp_path):
    path = tmp_path / "Edit me.docx"
    path.write_bytes(b"original content")
    file_id = server.add_file(path)["id"]
    return file_id, server.token(file_id)


def test_full_edit_flow(server, document):
    file_id, token = document
    info = requests.get(server.url(file_id, token)).json()
    assert info["BaseFileName"] == "Edit me.docx" and info["Version"] == "1"

    locked = requests.post(server.url(file_id, token), headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "edit"})
    assert locked.status_code == 200

    saved = requests.post(
        server.url(file_id, token, "/contents"),
        data=b"edited content",
        headers={"X-WOPI-Override": "PUT", "X-WOPI-Lock": "edit"},
    )
    assert saved.status_code == 200 and saved.headers["X-WOPI-ItemVersion"] == "2"
    assert "LastModifiedTime" in saved.json()

    got = requests.get(server.url(file_id, token, "/contents"))
    assert got.content == b"edited content"
    assert got.headers["Content-Length"] == "14" and got.headers["X-WOPI-ItemVersion"] == "2"

    unlocked = requests.post(server.url(file_id, token), headers={"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": "edit"})
    assert unlocked.status_code == 200
    lock = requests.post(server.url(file_id, token), headers={"X-WOPI-Override": "GET_LOCK"})
    assert lock.headers["X-WOPI-Lock"] == ""


def test_a_download_over_loopback_goes_out_under_reno(server, document):
    """`wopihost serve` listens on 127.0.0.1: its connections get WOPIHOST_LOOPBACK_TCP_CONGESTION's default,
    as `ss` shows them, whatever the system's default."""
    if not shutil.which("ss"):
        pytest.skip("ss (Debian's iproute2) is not installed")
    file_id, token = document
    with requests.Session() as session:  # kept alive while ss looks
        assert session.get(server.url(file_id, token, "/contents")).content == b"original content"
        shown = subprocess.run(
            ["ss", "-tinH", "state", "established", f"( sport = :{server.port} )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    [_, info] = shown.splitlines()  # the server's end of the session's connection, then its TCP details
    assert info.split()[0] == "reno", shown


def test_fifty_concurrent_lock_attempts_have_exactly_one_winner(server, document):
    file_id, token = document
    url = server.url(file_id, token)

    def attempt(i: int) -> requests.Response:
        with requests.Session() as session:
            return session.post(url, headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": f"lock-{i}"})

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(attempt, range(50)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 1, statuses
    assert statuses.count(409) == 49, statuses
    winner = f"lock-{statuses.index(200)}"
    assert {r.headers["X-WOPI-Lock"] for r in responses if r.status_code == 409} == {winner}
    current = requests.post(url, headers={"X-WOPI-Override": "GET_LOCK"}).headers["X-WOPI-Lock"]
    assert current == winner


def test_chunked_upload_streams_through(server, document):
    file_id, token = document
    requests.post(server.url(file_id, token), headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "L"})
    piece = os.urandom(1 << 20)

    def body():
        for _ in range(5):
            yield piece

    saved = requests.post(
        server.url(file_id, token, "/contents"), data=body(), headers={"X-WOPI-Override": "PUT", "X-WOPI-Lock": "L"}
    )
    assert saved.status_code == 200
    assert requests.get(server.url(file_id, token, "/contents")).content == piece * 5


def test_an_answer_before_a_chunked_body_is_read_says_the_connection_closes(server, document):
    """A PutFile refused for its lock is answered before its chunked body is read, and that body is given up:
    the connection ends, and the answer says so, or the client would send its next request on it."""
    file_id, token = document
    requests.post(server.url(file_id, token), headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "theirs"})
    path = urlsplit(server.url(file_id, token, "/contents"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path.path}?{path.query} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-WOPI-Override: PUT\r\n"
            "X-WOPI-Lock: mine\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".encode()
        )
        received = b""
        while piece := sock.recv(65536):  # to the server's close
            received += piece
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 409") and b"\r\nconnection: close" in head, received
    assert b"connection: keep-alive" not in head


def send_partial_put(server, file_id: str, token: str, declared: int, sent: int) -> socket.socket:
    """Start a PutFile that declares `declared` bytes and send only `sent` of them."""
    path = urlsplit(server.url(file_id, token, "/contents"))
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (
        f"POST {path.path}?{path.query} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-WOPI-Override: PUT\r\n"
        f"X-WOPI-Lock: L\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + b"z" * sent)
    return sock


def partial_files(server) -> list:
    return list((server.data_dir / "tmp").iterdir())


@pytest.mark.local_storage
def test_client_hanging_up_mid_put_leaves_old_content(server, document):
    file_id, token = document
    requests.post(server.url(file_id, token), headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "L"})
    sock = send_partial_put(server, file_id, token, declared=10 << 20, sent=3 << 20)
    assert wait_until(lambda: partial_files(server))  # the server is streaming to its temporary file
    sock.close()
    assert wait_until(lambda: not partial_files(server)), "the partial upload was not cleaned up"
    got = requests.get(server.url(file_id, token, "/contents"))
    assert got.content == b"original content" and got.headers["X-WOPI-ItemVersion"] == "1"


@pytest.mark.local_storage
def test_worker_killed_mid_put_leaves_old_content(server, document):
    file_id, token = document
    requests.post(server.url(file_id, token), headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "L"})
    sock = send_partial_put(server, file_id, token, declared=10 << 20, sent=3 << 20)
    assert wait_until(lambda: partial_files(server))
    busy = [w for w in server.workers() if any(f.path.endswith(".part") for f in w.open_files())]
    assert len(busy) == 1
    os.kill(busy[0].pid, signal.SIGKILL)
    sock.close()
    wait_for_respawn(server, busy[0])  # two live workers, the killed one not among them
    got = requests.get(server.url(file_id, token, "/contents"))
    assert got.content == b"original content" and got.headers["X-WOPI-ItemVersion"] == "1"
    blobs = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1  # the killed write never became a blob


def test_the_master_that_built_the_app_holds_no_database_connection(server, document):
    """The workers serve the application the master built before forking them (server.py): a connection
    opened there would be shared by every worker, or lost to it."""
    file_id, token = document
    url = sa.make_url(server.env["WOPIHOST_DATABASE_URL"])

    def holds_database(process: psutil.Process) -> bool:
        if url.get_backend_name() == "sqlite":
            return any(f.path.startswith(str(url.database)) for f in process.open_files())
        return any(c.raddr and c.raddr.port == (url.port or 5432) for c in process.net_connections("tcp"))

    for _ in range(4):  # served by both workers, most likely
        requests.get(server.url(file_id, token)).raise_for_status()
    assert any(holds_database(worker) for worker in server.workers())  # what is looked for can be seen
    assert not holds_database(psutil.Process(server.process.pid))


@pytest.mark.local_storage
def test_gc_never_takes_a_live_upload_whatever_the_grace(server, document):
    file_id, token = document
    requests.post(server.url(file_id, token), headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "L"})
    sock = send_partial_put(server, file_id, token, declared=4 << 20, sent=1 << 20)
    assert wait_until(lambda: partial_files(server))
    assert "0 orphaned blobs, 0 partial writes" in server.cli("gc", "--grace", "0")
    sock.sendall(b"z" * (3 << 20))
    with sock, sock.makefile("rb") as answer:
        assert answer.readline().split()[1] == b"200"
    assert requests.get(server.url(file_id, token, "/contents")).content == b"z" * (4 << 20)
