"""Where a benchmark's server keeps file content (`--storage local,s3`), raw boto3 figures on the same bucket,
and the CPU the rest of the machine used meanwhile: shared by upload_session.py and core_ops.py.

* local: the blob directory under the server's data directory (the default).
* s3: an S3 object store. With `--s3-url s3://bucket/prefix` the bucket must exist and the standard AWS
  variables (or config file) reach it; WOPIHOST_S3_ENDPOINT_URL, _REGION and _ADDRESSING_STYLE are honoured as
  the server honours them. Without it, a throwaway single-node Ceph RGW (tests/objectstore/ceph_rgw.py) is
  started in the run's temporary directory, a bucket made in it, and the cluster removed at the end. Its OSD
  is BlueStore on a sparse 10 GiB file, and RGW frees deleted data only hours later: a run may write (raw
  figures included) a little under 8 GiB in all.

Each run puts the server's objects under a prefix of its own (`<prefix>/bench-<hex>/`) and the raw boto3
objects under `<prefix>/bench-<hex>-raw/`; both are deleted at the end on a bucket given with --s3-url.
The raw client is made like the server's (botocore's retry mode "standard"), so that both pay the same for
signing and checksums.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

MIB = 1 << 20
PART = 8 * MIB  # wopihost's part size (WOPIHOST_S3_PART_SIZE's default)
CEPH_RGW = Path(__file__).resolve().parent.parent / "tests" / "objectstore" / "ceph_rgw.py"
KINDS = ("local", "s3")


def storage_list(text: str) -> list[str]:
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    if not kinds or any(kind not in KINDS for kind in kinds) or len(set(kinds)) != len(kinds):
        raise ValueError(f"{text!r}: a list of {', '.join(KINDS)}")
    return kinds


def add_arguments(parser) -> None:
    parser.add_argument(
        "--storage",
        type=storage_list,
        default=["local"],
        help="where the server keeps content, one server each, measured in turns: local, s3 or local,s3 "
        "(default local)",
    )
    parser.add_argument(
        "--s3-url",
        help="s3://bucket/prefix of an existing bucket, reached with the AWS variables already set "
        "(default: a throwaway Ceph RGW, started and stopped by this run)",
    )


@dataclass
class Storage:
    """One kind of storage for a server: `env` for LocalServer's extra_env, `raw` a boto3 client on the same
    bucket (S3 only), `description` for the header."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    raw: RawS3 | None = None
    description: str = "the blob directory in the server's data directory"


class RawS3:
    """Plain boto3 requests to the server's bucket, under a prefix of their own: the reference for S3."""

    def __init__(self, client: Any, bucket: str, prefix: str):
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self._count = 0

    def _key(self) -> str:
        self._count += 1
        return f"{self.prefix}{self._count:06d}"

    def put(self, data: bytes) -> tuple[float, str]:
        """Seconds of one PutObject of `data`, and the key."""
        key = self._key()
        start = time.perf_counter()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return time.perf_counter() - start, key

    def put_multipart(self, pieces: Iterable[bytes], part_size: int = PART) -> tuple[float, str]:
        """Seconds of one explicit multipart upload, one part of `part_size` bytes (the last shorter) at a time
        as wopihost does: CreateMultipartUpload, UploadPart each, CompleteMultipartUpload. Only the requests are
        timed: making the pieces and copying them into the part buffer are not."""
        key = self._key()
        elapsed = 0.0
        start = time.perf_counter()
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        elapsed += time.perf_counter() - start
        parts: list[dict] = []
        buffer = bytearray()

        def send(data: bytes) -> float:
            start = time.perf_counter()
            etag = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=data
            )["ETag"]
            parts.append({"PartNumber": len(parts) + 1, "ETag": etag})
            return time.perf_counter() - start

        try:
            for piece in pieces:
                buffer += piece
                while len(buffer) >= part_size:
                    elapsed += send(bytes(buffer[:part_size]))
                    del buffer[:part_size]
            if buffer or not parts:
                elapsed += send(bytes(buffer))
            start = time.perf_counter()
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            elapsed += time.perf_counter() - start
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return elapsed, key

    def get(self, key: str, piece: int = MIB) -> int:
        """Bytes read by one GET of `key`, streamed, read in `piece`-byte pieces."""
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        total = 0
        try:
            while data := body.read(piece):
                total += len(data)
        finally:
            body.close()
        return total

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)


def s3_client(env: dict[str, str]) -> Any:
    """A boto3 client configured as wopihost configures its own from `env` (storage.open_storage, S3Store)."""
    import boto3.session
    from botocore.config import Config

    style = env.get("WOPIHOST_S3_ADDRESSING_STYLE", "")
    config = Config(
        retries={"mode": "standard", "max_attempts": 4},
        s3={"addressing_style": style} if style else None,
        max_pool_connections=64,
    )
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        region_name=env.get("WOPIHOST_S3_REGION") or env.get("AWS_DEFAULT_REGION") or None,
    )
    endpoint = env.get("WOPIHOST_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None
    return session.client("s3", endpoint_url=endpoint, config=config)


def _ceph_rgw_module():
    """tests/objectstore/ceph_rgw.py, imported by its path (standard library only)."""
    spec = importlib.util.spec_from_file_location("bench_ceph_rgw", CEPH_RGW)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks its module up there
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def storages(kinds: list[str], s3_url: str | None, tmp: Path) -> Iterator[list[Storage]]:
    """The Storage of each kind, in order; for s3, the throwaway Ceph RGW (in `tmp`) unless `s3_url` is given,
    stopped (or the run's objects deleted) when the block ends."""
    with contextlib.ExitStack() as stack:
        result = []
        for kind in kinds:
            if kind == "local":
                result.append(Storage("local"))
            else:
                result.append(stack.enter_context(_s3_storage(s3_url, tmp)))
        yield result


@contextlib.contextmanager
def _s3_storage(s3_url: str | None, tmp: Path) -> Iterator[Storage]:
    run = f"bench-{secrets.token_hex(4)}"
    if s3_url:
        if not s3_url.startswith("s3://") or not s3_url[5:].split("/", 1)[0]:
            raise SystemExit(f"--s3-url {s3_url!r} is not s3://bucket/prefix")
        bucket, _, prefix = s3_url[5:].partition("/")
        prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        env = {"WOPIHOST_STORAGE_URL": f"s3://{bucket}/{prefix}{run}"}
        client = s3_client({**os.environ, **env})
        try:
            yield Storage(
                "s3", env, RawS3(client, bucket, f"{prefix}{run}-raw/"), f"s3://{bucket}/{prefix}{run} (--s3-url)"
            )
        finally:
            for kind in (run, f"{run}-raw"):
                _delete_prefix(client, bucket, f"{prefix}{kind}/")
        return
    ceph = _ceph_rgw_module()
    cluster = ceph.Cluster(Path(tempfile.mkdtemp(prefix="ceph-rgw-", dir=tmp)) / "cluster")
    gateway = cluster.start()
    try:
        env = {**gateway.env(), "WOPIHOST_S3_ADDRESSING_STYLE": "path", "WOPIHOST_STORAGE_URL": f"s3://{run}/wopihost"}
        client = s3_client(env)
        client.create_bucket(Bucket=run)
        yield Storage(
            "s3",
            env,
            RawS3(client, run, "raw/"),
            f"s3://{run}/wopihost on a throwaway Ceph RGW at {gateway.endpoint} (BlueStore on a sparse file)",
        )
    finally:
        cluster.stop()


def _delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", ()):
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


class OtherLoad:
    """The CPU the rest of the machine used since the last `take()`, in cores: every core's busy time less
    what this process and its descendants (servers, workers, the Ceph daemons; those that exited and were
    waited for included) used. Other people's tests on a shared machine show here; so does an object store
    given with --s3-url that runs on this machine, not being this run's."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        me = psutil.Process()
        ours = 0.0
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                ours += t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), busy, ours

    def take(self) -> float:
        """Cores busy with other work since the last call (or since this object was made)."""
        now = self._sample()
        (then, busy, ours), self._last = self._last, now
        wall = now[0] - then
        return max(0.0, (now[1] - busy) - (now[2] - ours)) / wall if wall > 0 else 0.0
