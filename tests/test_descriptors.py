"""Responses that stream from blobs release them: when the server closes the body, when the client goes away
mid-download, and when the request fails after the blobs were opened. Counted in /proc/self/fd."""

from __future__ import annotations

import errno
import gc
import os
from urllib.parse import urlsplit

import pytest
from werkzeug.test import EnvironBuilder

from wopihost.cspp.chunkid import chunk_id
from wopihost.cspp.wire import request_body

from .cspp_helpers import full_file, put_chunked
from .helpers import descriptors_under

pytestmark = pytest.mark.local_storage  # descriptors are how the local store holds blobs open

CHUNKS = [os.urandom(300_000), os.urandom(300_000)]


def blob_fds(settings) -> list[str]:
    """What this process holds open in the blob store."""
    return descriptors_under(settings.blob_dir)


@pytest.fixture(autouse=True)
def nothing_left_to_the_garbage_collector(caplog):
    """Closing is each owner's job: OpenBlobs' finalizer, the safety net, must have nothing to do."""
    yield
    gc.collect()
    leaks = [
        r for phase in ("setup", "call", "teardown") for r in caplog.get_records(phase) if r.name == "wopihost.storage"
    ]
    assert not leaks, [r.getMessage() for r in leaks]


@pytest.fixture
def saved(wopi):
    """A file whose MainContent is two chunks, saved in a session-less PutChunkedFile."""
    assert wopi.lock("L").status_int == 200
    signature, chunks = full_file(*CHUNKS)
    assert put_chunked(wopi, {"MainContent": signature}, chunks, X_WOPI_Lock="L").status_int == 200
    return wopi


def start(app, wopi, override: str | None, body: bytes = b"", **headers):
    """Call the WSGI app as a server does; returns the status and the body iterable, not yet consumed."""
    url = urlsplit(wopi.url("/contents" if override is None else ""))
    if override is not None:
        headers["X-WOPI-Override"] = override
    environ = EnvironBuilder(
        path=url.path, query_string=url.query, method="POST" if override else "GET", headers=headers, data=body
    ).get_environ()
    status = []
    app_iter = app(environ, lambda line, headers, exc_info=None: status.append(line))
    return status[0], app_iter


GET_CHUNKED_FILE = (
    "GET_CHUNKED_FILE",
    request_body(
        {
            "ContentPropertiesToReturn": [],
            "ContentFilters": [
                {
                    "StreamId": "MainContent",
                    "ChunkingScheme": "FullFile",
                    "ChunksToReturn": "All",
                    "AlreadyKnownChunks": [],
                }
            ],
        }
    ),
)
GET_CHUNKS = (
    "GET_CHUNKS",
    request_body(
        {
            "ContentFilters": [
                {
                    "StreamId": "MainContent",
                    "ChunkRangesToReturn": [{"ChunkId": chunk_id(c), "Offset": 0, "Length": -1} for c in CHUNKS],
                }
            ]
        }
    ),
)


def test_a_head_request_releases_the_blob_it_opened(app, settings, saved):
    url = urlsplit(saved.url("/contents"))
    environ = EnvironBuilder(path=url.path, query_string=url.query, method="HEAD").get_environ()
    status = []
    body = app(environ, lambda line, headers, exc_info=None: status.append(line))
    assert status[0].startswith("200") and b"".join(body) == b""
    body.close()
    assert blob_fds(settings) == []


@pytest.mark.parametrize("operation", [GET_CHUNKED_FILE, GET_CHUNKS], ids=["GetChunkedFile", "GetChunks"])
def test_closing_a_streamed_body_releases_its_blobs(app, settings, saved, operation):
    status, body = start(app, saved, *operation)
    assert status.startswith("200")
    assert blob_fds(settings)  # held while the response streams
    received = b"".join(body)
    assert CHUNKS[0] in received and CHUNKS[1] in received
    body.close()
    assert blob_fds(settings) == []  # released by the close itself, with the body still referenced


@pytest.mark.parametrize("operation", [GET_CHUNKED_FILE, GET_CHUNKS], ids=["GetChunkedFile", "GetChunks"])
def test_a_client_going_away_mid_download_releases_the_blobs(app, settings, saved, operation):
    status, body = start(app, saved, *operation)
    next(iter(body))  # the server sent the first piece, then the client hung up
    body.close()
    assert blob_fds(settings) == []


def test_a_read_out_of_descriptors_is_503_and_leaves_nothing_open(settings, wopi, monkeypatch):
    """No descriptor left for a download's file of its own (EMFILE): a 500, and the blobs it had opened were left to
    the garbage collector's finalizer (the autouse check above). Now 503, as a write's, and closed at once."""

    def none_left(fd):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "dup", none_left)  # what the file of its own is opened with (OpenBlobs.whole_file)
    response = wopi.get_file()
    monkeypatch.undo()
    assert response.status_int == 503 and "too many files open" in response.headers["X-WOPI-FailureReason"]
    assert blob_fds(settings) == []


def test_get_file_releases_its_blob(app, settings, saved):
    for headers in ({}, {"Range": "bytes=10-20"}):
        status, body = start(app, saved, None, **headers)
        assert status.startswith(("200", "206"))
        b"".join(body)
        body.close()
        assert blob_fds(settings) == []


def test_a_request_failing_after_the_blobs_were_opened_releases_them(app, settings, saved):
    bad_range = request_body(
        {
            "ContentFilters": [
                {
                    "StreamId": "MainContent",
                    "ChunkRangesToReturn": [{"ChunkId": chunk_id(CHUNKS[0]), "Offset": 300_001, "Length": 1}],
                }
            ]
        }
    )
    status, body = start(app, saved, "GET_CHUNKS", bad_range)
    assert status.startswith("400")
    b"".join(body)
    assert blob_fds(settings) == []
    status, body = start(app, saved, None, Range="bytes=999999999-")  # 416, decided after the blob is open
    assert status.startswith("416")
    assert blob_fds(settings) == []


def test_a_hundred_reads_hold_nothing_afterwards(settings, saved):
    for _ in range(50):
        assert saved.op(*GET_CHUNKED_FILE).status_int == 200
        assert saved.op(*GET_CHUNKS).status_int == 200
    assert blob_fds(settings) == []
