"""An object store that stops answering: requests that need it get 503 with Retry-After (WOPI's
X-WOPI-FailureReason, Graph's serviceNotAvailable), nothing changes, and the host serves again as soon as the
store does, without a restart. The store is the session's real Ceph RADOS Gateway, paused with SIGSTOP (its
connections are accepted by the kernel and then never answered, as a hung store's are) and resumed. A store that
answers but is full, or over its quota, gets 507 as a full disk does."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
from contextlib import contextmanager

import boto3
import pytest
import sqlalchemy as sa
import webtest
from botocore.exceptions import ClientError

from wopihost import doctor
from wopihost.app import create_app
from wopihost.config import Settings
from wopihost.gc import Interrupted, collect
from wopihost.models import BlobHold

from .cspp_helpers import full_file, put_chunked
from .helpers import TEST_SECRET, GraphClient, WopiClient


def gateway_pid(gateway) -> int:
    for line in (gateway.directory / "pids").read_text().splitlines():
        name, pid = line.split()
        if name == "rgw":
            return int(pid)
    raise AssertionError("no radosgw in the cluster's pids")


@contextmanager
def store_paused(gateway):
    pid = gateway_pid(gateway)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def bucket_quota(gateway, bucket: str, max_size: int) -> None:
    """Caps what `bucket` may hold: RGW refuses a write past it with 403 QuotaExceeded."""
    conf = str(gateway.directory / "ceph.conf")
    for command in (["set", f"--max-size={max_size}"], ["enable"]):
        done = subprocess.run(
            ["radosgw-admin", "-c", conf, "quota", *command, "--quota-scope=bucket", f"--bucket={bucket}"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr


def _environment(tmp_path, database: str, bucket: str) -> dict[str, str]:
    """A host's settings on `database` with its content in `bucket` (ceph_rgw's S3 settings come from the env)."""
    return {
        "WOPIHOST_DATA_DIR": str(tmp_path / "data"),
        "WOPIHOST_DATABASE_URL": database,
        "WOPIHOST_PUBLIC_URL": "https://wopi.example.test",
        "WOPIHOST_SECRET_KEY": TEST_SECRET,
        "WOPIHOST_SWEEP_INTERVAL": "0",
        "WOPIHOST_STORAGE_URL": f"s3://{bucket}/host",
        "WOPIHOST_S3_ADDRESSING_STYLE": "path",
    }


@pytest.fixture
def host(ceph_rgw, s3, database, tmp_path, monkeypatch):
    """Two hosts on the same database and bucket: a patient one, with the default S3 timeouts, sets the file up and
    checks it afterwards, so that a loaded machine's slow store is not taken for a hung one; an impatient one, which
    gives a hung store up after 2 tries of 1 s each, is the one asked while the store is paused."""
    for name, value in ceph_rgw.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"faults-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=bucket)
    environment = _environment(tmp_path, database, bucket) | {"WOPIHOST_CSPP_PLUS": "on"}
    patient = create_app(Settings.from_env(environment))
    impatient = create_app(
        Settings.from_env(
            environment
            | {"WOPIHOST_S3_CONNECT_TIMEOUT": "1s", "WOPIHOST_S3_READ_TIMEOUT": "1s", "WOPIHOST_S3_MAX_ATTEMPTS": "2"}
        )
    )
    services = patient.extensions["wopihost"]
    file = services.add_file("alice", "Doc.docx", io.BytesIO(b"hello world"))
    token = services.issue_token(file.id, "alice", True).token
    issued, drive_id = services.issue_api_token("alice", True)

    def clients(app):
        testapp = webtest.TestApp(app)
        return WopiClient(testapp, file.id, token), GraphClient(testapp, issued.token, drive_id, "/v1.0"), testapp

    yield clients(patient), clients(impatient)
    for app in (patient, impatient):
        app.extensions["wopihost"].db.dispose()


def test_a_hung_object_store_is_503_and_changes_nothing(host, ceph_rgw):
    (wopi, graph, testapp), (hung_wopi, hung_graph, hung_testapp) = host
    assert wopi.lock("L").status_int == 200
    with store_paused(ceph_rgw):
        put = hung_wopi.put_file(b"new content", "L")
        assert put.status_int == 503, put.headers
        assert int(put.headers["Retry-After"]) > 0
        assert "object store" in put.headers["X-WOPI-FailureReason"]
        got = hung_wopi.get_file()
        assert got.status_int == 503 and "object store" in got.headers["X-WOPI-FailureReason"]
        upload = hung_graph.put("me/drive/root:/new.txt:/content", b"graph bytes")
        assert upload.status_int == 503 and int(upload.headers["Retry-After"]) > 0
        assert upload.json["error"]["code"] == "serviceNotAvailable"
        health = hung_testapp.get("/healthz", expect_errors=True)
        assert health.status_int == 503 and health.json["storage"] == "not writable"
    # the store answers again: so does the host, with the old content untouched and the lock still held
    got = wopi.get_file()
    assert got.body == b"hello world" and got.headers["X-WOPI-ItemVersion"] == "1"
    assert wopi.op("GET_LOCK").headers["X-WOPI-Lock"] == "L"
    assert graph.get("me/drive/root:/new.txt").status_int == 404
    assert wopi.put_file(b"new content", "L").status_int == 200
    assert wopi.get_file().body == b"new content"
    assert testapp.get("/healthz").json["storage"] == "ok"


def test_a_bucket_over_its_quota_is_507_and_changes_nothing(host, ceph_rgw):
    """Retrying cannot help a full store: 507, as for a full disk, not 503 (nor a 500 for RGW's 403 QuotaExceeded)."""
    (wopi, graph, testapp), _ = host
    assert wopi.lock("L").status_int == 200
    bucket_quota(ceph_rgw, testapp.app.extensions["wopihost"].blobs.bucket, 1)
    put = wopi.put_file(b"new content", "L")
    assert put.status_int == 507 and "over quota (QuotaExceeded)" in put.headers["X-WOPI-FailureReason"]
    upload = graph.put("me/drive/root:/new.txt:/content", b"graph bytes")
    assert upload.status_int == 507 and upload.json["error"]["code"] == "insufficientStorage"
    health = testapp.get("/healthz", expect_errors=True)
    assert health.status_int == 503 and health.json["storage"] == "full"
    [storage] = [
        finding for finding in doctor.run(testapp.app.extensions["wopihost"]) if "object store" in finding.what
    ]
    assert not storage.ok and "over its quota" in storage.what and "quota" in storage.fix
    got = wopi.get_file()
    assert got.body == b"hello world" and got.headers["X-WOPI-ItemVersion"] == "1"
    assert graph.get("me/drive/root:/new.txt").status_int == 404


def _refused(operation: str) -> ClientError:
    """What a store that turns requests away for a moment answers (botocore's error, its retries spent)."""
    error = {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}
    return ClientError(error | {"ResponseMetadata": {"HTTPStatusCode": 503}}, operation)


def _storing_then_refusing(services, monkeypatch, puts: int) -> list[str]:
    """A store that takes `puts` PutObjects, then refuses every other, and every DeleteObject: the keys it took."""
    client, put_object, stored = services.blobs._s3, services.blobs._s3.put_object, []

    def put_then_refuse(**kwargs):
        if len(stored) == puts:
            raise _refused("PutObject")
        stored.append(kwargs["Key"])
        return put_object(**kwargs)

    monkeypatch.setattr(client, "put_object", put_then_refuse)
    monkeypatch.setattr(client, "delete_object", lambda **_: (_ for _ in ()).throw(_refused("DeleteObject")))
    return stored


def _holds(services) -> list[str]:
    with services.db.read() as s:
        return list(s.scalars(sa.select(BlobHold.name)))


def test_a_save_whose_body_cannot_be_opened_again_lets_go_of_it(host, monkeypatch):
    """PutChunkedFile stores its body, then opens it to read its frames: when the store refuses that, the
    body's hold goes with the request (it kept gc off the object for an hour)."""
    (wopi, graph, testapp), _ = host
    services = testapp.app.extensions["wopihost"]
    assert wopi.lock("L").status_int == 200
    monkeypatch.setattr(services.blobs._s3, "head_object", lambda **_: (_ for _ in ()).throw(_refused("HeadObject")))
    signature, chunks = full_file(b"new content")
    response = put_chunked(wopi, {"MainContent": signature}, chunks, X_WOPI_Lock="L")
    monkeypatch.undo()
    assert response.status_int == 503, response.headers
    assert _holds(services) == []
    assert wopi.get_file().body == b"hello world"


def test_a_save_whose_streams_cannot_all_be_copied_lets_go_of_the_copies_made(host, monkeypatch):
    """A save that compacts its streams copies each to a new object; when the store fails on the second, the
    first is given up, and let go even though the store cannot delete it either (gc will)."""
    (wopi, graph, testapp), _ = host
    services = testapp.app.extensions["wopihost"]
    assert wopi.lock("L").status_int == 200
    small, large = b"a" * 1000, b"b" * (3 << 20)
    signature, chunks = full_file(small, large)
    assert put_chunked(wopi, {"MainContent": signature}, chunks, X_WOPI_Lock="L").status_int == 200
    stored = _storing_then_refusing(services, monkeypatch, 2)  # the request's body, the first stream's copy
    only_small, _ = full_file(small)  # both streams keep 1000 bytes of 3 MiB objects: each is copied
    response = put_chunked(wopi, {"MainContent": only_small, "AltStream": only_small}, (), X_WOPI_Lock="L")
    monkeypatch.undo()
    assert response.status_int == 503, response.headers
    assert len(stored) == 2 and _holds(services) == []
    assert wopi.get_file().body == small + large


def test_an_upload_refused_after_its_body_was_stored_keeps_its_own_error_when_the_store_cannot_delete(
    host, monkeypatch, caplog
):
    """A simple upload sent chunked is judged against the drive's quota once stored; the object is then deleted,
    and a store that refuses that too does not turn the 507 into its own 503: the object is left to gc."""
    (wopi, graph, testapp), _ = host
    services = testapp.app.extensions["wopihost"]
    monkeypatch.setattr(services.drives, "quota_bytes", 1000)
    client = services.blobs._s3
    monkeypatch.setattr(client, "delete_object", lambda **_: (_ for _ in ()).throw(_refused("DeleteObject")))
    request = webtest.TestRequest.blank("/v1.0/me/drive/root:/big.bin:/content", method="PUT", headers=graph.headers())
    request.environ.pop("CONTENT_LENGTH", None)
    request.environ.update(
        {"wsgi.input": io.BytesIO(b"x" * 5000), "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}
    )
    response = testapp.do_request(request, status="*", expect_errors=True)
    monkeypatch.undo()
    assert response.status_int == 507, response.body
    assert response.json["error"]["code"] == "quotaLimitReached"
    assert _holds(services) == []
    assert "could not delete blob" in caplog.text
    assert graph.get("me/drive/root:/big.bin:").status_int == 404


def test_a_folder_copy_the_store_fails_lets_go_of_every_copy_made_though_it_cannot_delete_them(host, monkeypatch):
    """The copies of a folder's files are made one by one before the transaction that lands them; when the store
    fails on the third and refuses to delete the two made too, each of those still lets go of its hold (holds
    keep gc off the objects for an hour), and nothing of the copy appears."""
    (wopi, graph, testapp), _ = host
    services = testapp.app.extensions["wopihost"]
    assert graph.post_json("me/drive/root/children", {"name": "docs", "folder": {}}).status_int == 201
    for name in ("a.bin", "b.bin", "c.bin"):
        assert graph.put(f"me/drive/root:/docs/{name}:/content", name.encode() * 200).status_int == 201
    stored = _storing_then_refusing(services, monkeypatch, 2)
    response = graph.post_json("me/drive/root:/docs:/copy", {"name": "docs 2"})
    monkeypatch.undo()
    assert response.status_int == 503, response.body
    assert len(stored) == 2 and _holds(services) == []
    assert graph.get("me/drive/root:/docs 2:").status_int == 404


def test_healthz_says_not_writable_whatever_error_the_store_answers_the_probe_with(host, monkeypatch):
    """A probe says what is wrong and never fails itself: an error of the store's no fault maps (here a 400 of a
    proxy rewriting the signature's header) is a store that cannot be written, not a 500."""
    (wopi, graph, testapp), _ = host
    services = testapp.app.extensions["wopihost"]
    error = {"Error": {"Code": "AuthorizationHeaderMalformed", "Message": "The authorization header is malformed"}}
    malformed = ClientError(error | {"ResponseMetadata": {"HTTPStatusCode": 400}}, "PutObject")
    monkeypatch.setattr(services.blobs._s3, "put_object", lambda **_: (_ for _ in ()).throw(malformed))
    health = testapp.get("/healthz", expect_errors=True)
    monkeypatch.undo()
    assert health.status_int == 503 and health.json["storage"] == "not writable"
    assert testapp.get("/healthz").json["storage"] == "ok"


def test_credentials_the_store_refuses_are_503_for_reads_too(host, ceph_rgw, monkeypatch):
    """A secret the store no longer takes: GetFile's HEAD gets a 403 with no body (botocore's code "403"), which is
    the same outage as a write's SignatureDoesNotMatch, 503, not a 500."""
    (wopi, graph, testapp), _ = host
    services = testapp.app.extensions["wopihost"]
    wrong = boto3.session.Session().client(
        "s3",
        aws_access_key_id=ceph_rgw.access_key,
        aws_secret_access_key="not-the-secret",
        config=services.blobs._s3.meta.config,
    )
    monkeypatch.setattr(services.blobs, "_s3", wrong)
    got = wopi.get_file()
    assert got.status_int == 503 and int(got.headers["Retry-After"]) > 0, got.headers
    assert "object store cannot serve reading" in got.headers["X-WOPI-FailureReason"]
    content = graph.get("me/drive/root:/Doc.docx:/content")
    assert content.status_int == 503 and content.json["error"]["code"] == "serviceNotAvailable"
    monkeypatch.undo()
    assert wopi.get_file().body == b"hello world"


def _empty_and_delete(s3, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)


@pytest.mark.parametrize("gone", ["deleted", "misnamed"])
def test_a_bucket_that_does_not_exist_is_a_503_that_says_so_not_a_missing_file(
    host, s3, database, tmp_path, gone, caplog
):
    """A download HEADs its objects, whose 404 has no body: a missing bucket read as a missing object was the 503
    of a file replaced in a race ('being changed too often'), and /healthz said only 'not writable'. The reason
    says the bucket does not exist; /healthz, doctor and the log name it."""
    (wopi, graph, testapp), _ = host
    services = testapp.app.extensions["wopihost"]
    bucket = services.blobs.bucket
    if gone == "deleted":
        _empty_and_delete(s3, bucket)
    else:  # another host on the same database, whose WOPIHOST_STORAGE_URL names a bucket that was never made
        bucket = f"misnamed-{secrets.token_hex(6)}"
        app = create_app(Settings.from_env(_environment(tmp_path, database, bucket)))
        testapp = webtest.TestApp(app)
        wopi = WopiClient(testapp, wopi.file_id, wopi.token)
        graph = GraphClient(testapp, graph.token, graph.drive_id, "/v1.0")
        services = app.extensions["wopihost"]
    try:
        got = wopi.get_file()
        assert got.status_int == 503 and int(got.headers["Retry-After"]) > 0, got.headers
        assert got.headers["X-WOPI-FailureReason"].startswith("the storage bucket does not exist"), got.headers
        assert wopi.lock("L").status_int == 200  # the database's alone
        put = wopi.put_file(b"new content", "L")
        assert put.status_int == 503 and "storage bucket does not exist" in put.headers["X-WOPI-FailureReason"]
        content = graph.get("me/drive/root:/Doc.docx:/content")
        assert content.status_int == 503 and content.json["error"]["code"] == "serviceNotAvailable"
        assert content.json["error"]["message"].startswith("the storage bucket does not exist")
        upload = graph.put("me/drive/root:/new.txt:/content", b"graph bytes")
        assert upload.status_int == 503 and "storage bucket does not exist" in upload.json["error"]["message"]
        assert f"the object store has no bucket '{bucket}'" in caplog.text
        health = testapp.get("/healthz", expect_errors=True)
        assert health.status_int == 503 and health.json["storage"] == "no bucket"
        [storage] = [finding for finding in doctor.run(services) if "object store" in finding.what]
        assert not storage.ok and f"its bucket {bucket} does not exist" in storage.what
        assert f"create the bucket {bucket}" in storage.fix
    finally:
        if gone == "misnamed":
            services.db.dispose()


def test_a_sweep_the_store_fails_partway_says_what_it_deleted_and_the_next_takes_the_rest(host, s3):
    """The bucket's policy denies deleting the orphan gc reaches last (RGW's 403 AccessDenied): the sweep stops there
    and says it deleted the nine before; once the store deletes again, the next sweep takes the tenth."""
    (wopi, graph, testapp), _ = host
    services = testapp.app.extensions["wopihost"]
    names = []
    for n in range(10):
        with services.blobs.write(io.BytesIO(b"orphan %d" % n), 100) as blob:
            names.append(blob.name)
    last = max(names, key=services.blobs.key)  # S3 lists in the order of the keys
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject"}
    deny["Resource"] = f"arn:aws:s3:::{services.blobs.bucket}/{services.blobs.key(last)}"
    s3.put_bucket_policy(
        Bucket=services.blobs.bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]})
    )
    try:
        assert collect(services, grace=0).blobs == 0  # the first pass finds them unreferenced
        with pytest.raises(Interrupted) as raised:
            collect(services, grace=0)
        assert raised.value.done.blobs == 9 and "9 orphaned blobs" in str(raised.value)
        assert [name for name in names if services.blobs.exists(name)] == [last]
    finally:
        s3.delete_bucket_policy(Bucket=services.blobs.bucket)
    assert collect(services, grace=0).blobs == 1
    assert not services.blobs.exists(last)
    assert wopi.get_file().body == b"hello world"
