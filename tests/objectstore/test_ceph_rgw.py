"""The throwaway Ceph RGW itself (tests/objectstore/ceph-rgw), and the S3 behaviour wopihost's object storage will
rely on, as RGW really behaves: ranged reads, multipart uploads built from byte ranges of other objects
(UploadPartCopy), and where RGW departs from AWS."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import botocore.exceptions
import psutil
import pytest

from . import ceph_rgw as ceph
from .fixtures import s3_client

TOOL = Path(__file__).resolve().parent / "ceph-rgw"
MIB = 1 << 20
# where a packaged Ceph keeps its files; a throwaway cluster must leave them alone
SYSTEM_DIRS = [Path(p) for p in ("/etc/ceph", "/var/lib/ceph", "/var/log/ceph", "/run/ceph", "/var/run/ceph")]


def need_ceph() -> None:
    if missing := ceph.missing_binaries():
        if os.environ.get("CI"):
            pytest.fail(f"Ceph is not installed (no {', '.join(missing)}); .ci/run installs it")
        pytest.skip(f"Ceph is not installed; `{ceph.INSTALL_HINT}` to run this test")


def tool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def system_files() -> set[tuple[str, float]]:
    return {
        (str(path), path.stat().st_mtime)
        for top in SYSTEM_DIRS
        if top.is_dir()
        for path in top.rglob("*")
        if path.is_file()
    }


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_start_answers_s3_on_loopback_only_and_stop_leaves_nothing(tmp_path, ceph_rgw):
    """A second cluster beside the session's: its own ports, daemons listening on 127.0.0.1 alone, no file outside
    its directory; stop kills every daemon and removes the directory."""
    need_ceph()
    directory = tmp_path / "cluster"
    before = system_files()
    started = tool("start", str(directory))
    assert started.returncode == 0, started.stderr
    env = dict(line.split("=", 1) for line in started.stdout.splitlines())
    assert set(env) == {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
    assert (directory / "env").read_text() == started.stdout
    assert (directory / "env").stat().st_mode & 0o777 == 0o600
    assert env["AWS_ENDPOINT_URL"] != ceph_rgw.endpoint
    pids = ceph.cluster_pids(directory)
    names = {psutil.Process(pid).name() for pid in pids}
    assert names == {"ceph-mon", "ceph-osd", "radosgw"}
    listening = {
        conn.laddr
        for pid in pids
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }
    assert listening and {addr.ip for addr in listening} == {"127.0.0.1"}
    assert system_files() == before

    gateway = ceph.Gateway(directory, env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    s3 = s3_client(gateway)
    assert s3.list_buckets()["Buckets"] == []
    s3.create_bucket(Bucket="only-here")
    assert [b["Name"] for b in s3_client(ceph_rgw).list_buckets()["Buckets"]] != ["only-here"]

    stopped = tool("stop", str(directory))
    assert stopped.returncode == 0, stopped.stderr
    assert not directory.exists()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert ceph.cluster_pids(directory) == []


def test_a_start_that_fails_at_its_last_step_is_torn_down_and_shows_the_logs(tmp_path, monkeypatch, capsys):
    """The last step fails (radosgw-admin refuses a user with no id) with every daemon running: the start kills
    them all, removes the directory and prints where it got to. A failure at a fixed step, not at a deadline,
    so that a slow machine fails it at the same place."""
    need_ceph()
    monkeypatch.setattr(ceph, "USER", "")
    directory = tmp_path / "cluster"
    assert ceph.main(["start", str(directory)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ceph-rgw: Ceph RGW did not start in {directory}: radosgw-admin -c ")
    assert "exited 1: no value for uid\n" in err
    assert "--- start.log" in err and "S3 answers" in err and "user made" not in err
    assert "--- mon.a.log" in err and "--- osd.0.log" in err and "--- client.rgw.log" in err
    assert not directory.exists()
    assert ceph.cluster_pids(directory) == []


def test_a_start_past_its_deadline_is_torn_down(tmp_path):
    need_ceph()
    directory = tmp_path / "cluster"
    # a nanosecond: gone before the first command, on any machine
    failed = tool("start", "--timeout", "1e-9", str(directory))
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"ceph-rgw: Ceph RGW did not start in {directory}: not up within 1e-09 s\n")
    assert "--- start.log (last 1 lines)\n" in failed.stderr and "configured" in failed.stderr
    assert not directory.exists()


def test_a_port_taken_before_the_monitor_binds_it_is_replaced(tmp_path, monkeypatch):
    """Parallel starts choose ports independently: one taken between choice and bind costs a retry, not a failure."""
    need_ceph()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        chosen = [taken.getsockname()[1]]
        real = ceph.free_port
        monkeypatch.setattr(ceph, "free_port", lambda: chosen.pop() if chosen else real())
        cluster = ceph.Cluster(tmp_path / "cluster")
        gateway = cluster.start()
        try:
            assert s3_client(gateway).list_buckets()["Buckets"] == []
            mon_host = (tmp_path / "cluster" / "ceph.conf").read_text().split("mon host = ")[1].split("\n")[0]
            assert mon_host != f"v2:127.0.0.1:{taken.getsockname()[1]}"
        finally:
            cluster.stop()
    assert not (tmp_path / "cluster").exists()


def test_start_without_ceph_says_what_to_install(tmp_path):
    missing = subprocess.run(
        [sys.executable, str(TOOL), "start", str(tmp_path / "cluster")],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PATH": str(tmp_path)},
    )
    assert missing.returncode == 2
    assert missing.stderr == (
        "ceph-rgw: Ceph is not installed (no monmaptool, ceph-mon, ceph-osd, ceph, radosgw, radosgw-admin): "
        f"{ceph.INSTALL_HINT}\n"
    )
    assert not (tmp_path / "cluster").exists()


def test_stop_refuses_a_directory_that_holds_no_cluster(tmp_path):
    (tmp_path / "precious").write_text("keep me")
    refused = tool("stop", str(tmp_path))
    assert refused.returncode == 2
    assert refused.stderr == f"ceph-rgw: {tmp_path} holds no cluster started by ceph_rgw (no ceph.conf and pids)\n"
    assert (tmp_path / "precious").read_text() == "keep me"


def test_start_refuses_a_directory_that_is_not_empty(tmp_path):
    need_ceph()
    (tmp_path / "precious").write_text("keep me")
    refused = tool("start", str(tmp_path))
    assert refused.returncode == 2
    assert refused.stderr == f"ceph-rgw: {tmp_path} is not empty\n"
    assert (tmp_path / "precious").read_text() == "keep me"


def test_put_get_ranged_get_list_delete(s3, bucket):
    data = os.urandom(3 * MIB + 17)
    put = s3.put_object(Bucket=bucket, Key="dir/a.bin", Body=data)
    assert put["ETag"] == f'"{md5(data)}"'

    whole = s3.get_object(Bucket=bucket, Key="dir/a.bin")
    assert whole["ContentLength"] == len(data)
    assert whole["Body"].read() == data

    ranged = s3.get_object(Bucket=bucket, Key="dir/a.bin", Range=f"bytes=1000-{2 * MIB}")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["ContentRange"] == f"bytes 1000-{2 * MIB}/{len(data)}"
    assert ranged["Body"].read() == data[1000 : 2 * MIB + 1]
    suffix = s3.get_object(Bucket=bucket, Key="dir/a.bin", Range="bytes=-10")
    assert suffix["Body"].read() == data[-10:]

    s3.put_object(Bucket=bucket, Key="dir/b.bin", Body=b"b")
    s3.put_object(Bucket=bucket, Key="top.bin", Body=b"")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [(o["Key"], o["Size"]) for o in listed["Contents"]] == [("dir/a.bin", len(data)), ("dir/b.bin", 1)]

    s3.delete_object(Bucket=bucket, Key="dir/a.bin")
    with pytest.raises(botocore.exceptions.ClientError) as gone:
        s3.get_object(Bucket=bucket, Key="dir/a.bin")
    assert gone.value.response["Error"]["Code"] == "NoSuchKey"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["dir/b.bin", "top.bin"]


def test_multipart_upload_from_byte_ranges_of_other_objects(s3, bucket):
    """Server-side compaction: a new object made of byte ranges of two others (UploadPartCopy) and uploaded
    bytes. RGW copies exactly the ranges asked for; CompleteMultipartUpload answers an empty ETag, HEAD the
    real one (MD5 of the parts' MD5s, dash, part count)."""
    first, second = os.urandom(12 * MIB), os.urandom(6 * MIB)
    s3.put_object(Bucket=bucket, Key="first", Body=first)
    s3.put_object(Bucket=bucket, Key="second", Body=second)
    tail = os.urandom(1234)
    parts_data = [first[1000 : 1000 + 5 * MIB + 7], second[3 : 5 * MIB + 3], tail]

    upload = s3.create_multipart_upload(Bucket=bucket, Key="joined")["UploadId"]
    copied1 = s3.upload_part_copy(
        Bucket=bucket, Key="joined", UploadId=upload, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "first"}, CopySourceRange=f"bytes=1000-{1000 + 5 * MIB + 6}",
    )["CopyPartResult"]  # fmt: skip
    copied2 = s3.upload_part_copy(
        Bucket=bucket, Key="joined", UploadId=upload, PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "second"}, CopySourceRange=f"bytes=3-{5 * MIB + 2}",
    )["CopyPartResult"]  # fmt: skip
    uploaded = s3.upload_part(Bucket=bucket, Key="joined", UploadId=upload, PartNumber=3, Body=tail)
    # RGW's CopyPartResult ETag is the range's MD5 without the quotes AWS puts around it
    assert copied1["ETag"] == md5(parts_data[0])
    assert copied2["ETag"] == md5(parts_data[1])
    assert uploaded["ETag"] == f'"{md5(tail)}"'

    parts = [
        {"PartNumber": 1, "ETag": copied1["ETag"]},
        {"PartNumber": 2, "ETag": copied2["ETag"]},
        {"PartNumber": 3, "ETag": uploaded["ETag"]},
    ]
    listed = s3.list_parts(Bucket=bucket, Key="joined", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(i + 1, len(d)) for i, d in enumerate(parts_data)]
    completed = s3.complete_multipart_upload(
        Bucket=bucket, Key="joined", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    assert completed["ETag"] == ""  # AWS answers the object's ETag here; RGW 16 an empty element

    joined = b"".join(parts_data)
    expected_etag = '"' + hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest() + '-3"'
    head = s3.head_object(Bucket=bucket, Key="joined")
    assert (head["ETag"], head["ContentLength"]) == (expected_etag, len(joined))
    got = s3.get_object(Bucket=bucket, Key="joined")
    assert got["ETag"] == expected_etag
    assert got["Body"].read() == joined
    assert (
        s3.get_object(Bucket=bucket, Key="joined", Range=f"bytes={5 * MIB}-{5 * MIB + 99}")["Body"].read()
        == (joined[5 * MIB : 5 * MIB + 100])
    )
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_multipart_rules_as_aws(s3, bucket):
    """Parts but the last need 5 MiB (checked at completion), and a copy range must lie within its source."""
    s3.put_object(Bucket=bucket, Key="src", Body=os.urandom(MIB))
    upload = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    source = {"Bucket": bucket, "Key": "src"}
    with pytest.raises(botocore.exceptions.ClientError) as past_end:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="dst",
            UploadId=upload,
            PartNumber=1,
            CopySource=source,
            CopySourceRange=f"bytes=10-{MIB}",
        )
    assert past_end.value.response["Error"]["Code"] == "InvalidRange"

    etags = [
        s3.upload_part_copy(
            Bucket=bucket, Key="dst", UploadId=upload, PartNumber=n, CopySource=source, CopySourceRange="bytes=0-99"
        )["CopyPartResult"]["ETag"]
        for n in (1, 2)
    ]
    with pytest.raises(botocore.exceptions.ClientError) as small:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="dst",
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags, strict=True)]},
        )
    assert small.value.response["Error"]["Code"] == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=bucket, Key="dst", UploadId=upload)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_a_bucket_in_the_host_name_is_not_understood(ceph_rgw, s3, bucket):
    """Virtual-hosted style needs `rgw dns name`; without it RGW reads the path alone, so GET / for
    Host: BUCKET.s3... lists the caller's buckets instead of the bucket's objects. Clients must use path style."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    conn = http.client.HTTPConnection(ceph_rgw.endpoint.removeprefix("http://"), timeout=10)
    conn.request("GET", "/", headers={"Host": f"{bucket}.s3.us-east-1.amazonaws.com"})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200
    assert b"<ListAllMyBucketsResult" in body and b"<ListBucketResult" not in body


def radosgw_admin(gateway: ceph.Gateway, *args: str):
    """What a read-only radosgw-admin command prints, as JSON. radosgw-admin itself now and then dies of a signal
    (a SIGSEGV of `gc list` in one CI run of 12-04, which passed alone three times after): reading again is harmless,
    and a command that fails otherwise, or dies every time, fails the test with what it wrote to stderr."""
    command = ["radosgw-admin", "-c", str(gateway.directory / "ceph.conf"), *args]
    for _ in range(3):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if done.returncode >= 0:
            break
    assert done.returncode == 0, f"{' '.join(command)}: exit status {done.returncode}\n{done.stderr}"
    return json.loads(done.stdout)


def test_deleted_data_waits_for_rgw_garbage_collection(ceph_rgw, s3, bucket):
    """The data of a deleted object past its first 4 MiB stays in RADOS, queued for RGW's garbage collector, which
    takes it 2 hours later (rgw_gc_obj_min_wait): deleting frees no space at once."""
    s3.put_object(Bucket=bucket, Key="big", Body=os.urandom(9 * MIB))
    s3.delete_object(Bucket=bucket, Key="big")
    marker = radosgw_admin(ceph_rgw, "bucket", "stats", f"--bucket={bucket}")["marker"]
    queued = [
        (entry["time"], obj["pool"])
        for entry in radosgw_admin(ceph_rgw, "gc", "list", "--include-all")
        for obj in entry["objs"]
        if obj["oid"].startswith(f"{marker}__shadow_")
    ]
    # the 9 MiB are a 4 MiB head, deleted at once, and a tail of two RADOS objects (4 MiB and 1 MiB) left to gc
    assert [pool for _, pool in queued] == ["default.rgw.buckets.data"] * 2
    due = {dt.datetime.strptime(time, "%Y-%m-%dT%H:%M:%S.%f%z") for time, _ in queued}
    assert all(when - dt.datetime.now(dt.UTC) > dt.timedelta(hours=1, minutes=55) for when in due)
