"""One conformance suite for the blob stores (issue 16): every test runs on the local blob directory and on S3
(wopihost.s3store on a fresh bucket of the throwaway Ceph RGW, tests/objectstore/), whose writers hold their
objects in a real database (wopihost.holds: a SQLite file, and PostgreSQL too when WOPIHOST_TEST_DATABASE_URL is
set). A few S3-only tests at the end cover what has no local counterpart: an outage of the store or of the
database, a source failing mid-upload, memory, the lazy import."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from wopihost import s3store
from wopihost.clock import Clock, FrozenClock
from wopihost.db import Database
from wopihost.extents import Extent, Extents
from wopihost.faults import InsufficientStorage, Unavailable
from wopihost.holds import LEASE, Holds
from wopihost.ids import new_id
from wopihost.models import BlobHold
from wopihost.s3store import MIN_PART, S3Store, plan_parts
from wopihost.storage import Blob, BlobStore, TooLarge

MIB = 1 << 20
PART = MIN_PART  # the S3 store's part size here: the least S3 allows, so that multipart tests stay small
REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("WOPIHOST_TEST_DATABASE_URL", "").strip()
S3_KINDS = ["s3", "s3+postgresql"] if PG_URL else ["s3"]  # where the S3 store's holds are: SQLite, PostgreSQL


# --- fixtures


@pytest.fixture(params=["local", *S3_KINDS])
def kind(request) -> str:
    return request.param


@pytest.fixture
def holds_url(kind, tmp_path, request) -> str:
    """The database the S3 store's holds are in: a migrated SQLite file of this test's, or PostgreSQL."""
    if kind == "s3+postgresql":
        url = request.getfixturevalue("pg_schema_url")
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.delete(BlobHold))
        engine.dispose()
        return url
    path = tmp_path / "holds.sqlite3"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)
    return f"sqlite:///{path}"


@pytest.fixture
def s3_env(request, tmp_path, monkeypatch):
    """The standard AWS variables and a config file of our own (path-style addressing, which RGW needs): the
    store is given nothing else, so this also proves that they are what it reads."""
    gateway = request.getfixturevalue("ceph_rgw")
    config = tmp_path / "aws-config"
    config.write_text("[default]\ns3 =\n    addressing_style = path\n")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name, value in gateway.env().items():
        monkeypatch.setenv(name, value)
    return gateway


@pytest.fixture
def spec(kind, tmp_path, request) -> dict:
    """How to make the store, also in another process."""
    if kind == "local":
        return {"kind": "local", "root": str(tmp_path / "blobs"), "tmp": str(tmp_path / "tmp")}
    request.getfixturevalue("s3_env")
    return {
        "kind": "s3",
        "url": f"s3://{request.getfixturevalue('bucket')}/some/prefix",
        "part_size": PART,
        "database": request.getfixturevalue("holds_url"),
    }


def make(spec: dict, clock: Clock | None = None, **overrides):
    """The store `spec` says; an S3 store's holds on their own Database (dispose() it: `made`)."""
    if spec["kind"] == "local":
        return BlobStore(Path(spec["root"]), Path(spec["tmp"]))
    holds = Holds(Database(spec["database"]), clock or Clock())
    return S3Store(spec["url"], holds, part_size=spec["part_size"], **overrides)


@pytest.fixture
def made():
    """make(), with every S3 store's database disposed of at the end."""
    stores = []

    def make_one(spec: dict, clock: Clock | None = None, **overrides):
        stores.append(make(spec, clock, **overrides))
        return stores[-1]

    yield make_one
    for store in stores:
        if isinstance(store, S3Store):
            store.holds.db.dispose()


@pytest.fixture
def store(spec, made):
    return made(spec)


@pytest.fixture
def holds(tmp_path, sqlite_template):
    """Holds on a migrated SQLite file of this test's, for the S3 stores the S3-only tests make themselves."""
    path = tmp_path / "holds.sqlite3"
    shutil.copy(sqlite_template, path)
    holds = Holds(Database(f"sqlite:///{path}"), Clock())
    yield holds
    holds.db.dispose()


def rows(holds: Holds) -> set[str]:
    with holds.db.read() as s:
        return set(s.scalars(sa.select(BlobHold.name)))


def held_rows(spec: dict) -> set[str]:
    """The names whose hold rows are in the S3 store's database, live or dead."""
    engine = sa.create_engine(spec["database"])
    try:
        with engine.connect() as conn:
            return set(conn.scalars(sa.select(BlobHold.name)))
    finally:
        engine.dispose()


@pytest.fixture
def partials(kind, store, request):
    """What partial writes the store has: files in the local tmp directory, multipart uploads on S3."""
    if kind == "local":
        return lambda: sorted(p.name for p in store.tmp.iterdir())
    client, name = request.getfixturevalue("s3"), request.getfixturevalue("bucket")
    return lambda: [u["Key"] for u in client.list_multipart_uploads(Bucket=name).get("Uploads", [])]


@pytest.fixture
def abandon(kind, store, request):
    """A partial write whose writer died: an unlocked file in tmp, or a multipart upload with no hold."""

    def local():
        path = store.tmp / f"{new_id(32)}.part"
        path.write_bytes(b"half")

    def on_s3():
        client, name = request.getfixturevalue("s3"), request.getfixturevalue("bucket")
        key = store.key(new_id(32))
        upload = client.create_multipart_upload(Bucket=name, Key=key)["UploadId"]
        client.upload_part(Bucket=name, Key=key, UploadId=upload, PartNumber=1, Body=b"half")

    return local if kind == "local" else on_s3


def read_all(store, name: str, size: int) -> bytes:
    with store.open([name]) as opened:
        return b"".join(opened.pieces(Extents([Extent(name, 0, size)])))


def sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class Pattern:
    """`size` bytes of a repeated random block, produced without holding them."""

    def __init__(self, size: int, block: int = 64 * 1024 + 7):
        self.left, self.block, self.at = size, os.urandom(block), 0

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left, len(self.block) - self.at)
        buffer[:n] = self.block[self.at : self.at + n]
        self.at = (self.at + n) % len(self.block)
        self.left -= n
        return n


class Failing:
    """A body whose client goes away after `after` bytes."""

    def __init__(self, after: int):
        self.source = io.BytesIO(os.urandom(after))

    def readinto(self, buffer) -> int:
        if n := self.source.readinto(buffer):
            return n
        raise OSError("the client went away")


# --- both stores


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 3 * PART + 12345])
def test_write_and_read_back(store, size):
    data = os.urandom(size)
    with store.write(io.BytesIO(data), limit=size) as blob:
        assert (blob.size, blob.sha256) == (size, sha(data))
        assert read_all(store, blob.name, size) == data
        with store.open([blob.name]) as opened:
            assert opened.size(blob.name) == size
        assert blob.name in set(store.listing(time.time() + 60))


def test_sha256_only_when_asked(store):
    with store.write(io.BytesIO(b"abc"), limit=3, sha256=False) as blob:
        assert (blob.size, blob.sha256) == (3, "")
        assert read_all(store, blob.name, 3) == b"abc"


@pytest.mark.parametrize("size, limit", [(11, 10), (PART + 1, PART), (2 * PART + 1, 2 * PART)])
def test_over_the_limit_is_refused_and_leaves_nothing(store, partials, size, limit):
    with pytest.raises(TooLarge):
        store.write(io.BytesIO(os.urandom(size)), limit=limit)
    assert list(store.listing(time.time() + 60)) == []
    assert partials() == []


def test_pieces_and_readinto_over_ranges(store):
    data = os.urandom(3 * PART + 777)
    ranges = [(PART - 3, 7), (1, 2 * PART + 5), (0, 0), (3 * PART + 700, 77), (2 * PART - 1, 2)]
    with store.write(io.BytesIO(data), limit=len(data)) as blob, store.open([blob.name]) as opened:
        pieces = list(opened.pieces(Extents(Extent(blob.name, o, n) for o, n in ranges), piece=100_003))
        assert b"".join(pieces) == b"".join(data[o : o + n] for o, n in ranges)
        assert max(len(p) for p in pieces) == 100_003
        buffer = bytearray(1000)
        assert opened.readinto(blob.name, PART - 500, buffer) == 1000
        assert buffer == data[PART - 500 : PART + 500]
        assert opened.readinto(blob.name, len(data) - 10, buffer) == 10
        assert buffer[:10] == data[-10:]
        assert opened.readinto(blob.name, len(data), buffer) == 0
        assert opened.size(blob.name) == len(data)


def test_open_sets_add_adopt_subset(store):
    with ExitStack() as held:
        a = held.enter_context(store.write(io.BytesIO(b"a" * 10), limit=10))
        b = held.enter_context(store.write(io.BytesIO(b"b" * 20), limit=20))
        with store.open([a.name]) as first, store.open() as second:
            second.add(b.name)
            first.adopt(second)
            assert (first.size(a.name), first.size(b.name)) == (10, 20)
            with first.subset([b.name]) as only_b:
                assert b"".join(only_b.pieces([Extent(b.name, 5, 10)])) == b"b" * 10
            assert b"".join(first.pieces([Extent(a.name, 0, 10), Extent(b.name, 0, 1)])) == b"a" * 10 + b"b"


def test_a_blob_added_with_its_size_is_read_without_asking_the_store_for_it(store, kind):
    """A commit adds each upload piece with the size its row records: on S3 that spares a HEAD per piece."""
    heads = []
    if kind == "s3":
        store._s3.meta.events.register("before-call.s3.HeadObject", lambda **_: heads.append(1))
    with store.write(io.BytesIO(b"0123456789" * 3), limit=30) as blob, store.open() as opened:
        opened.add(blob.name, 30)
        assert opened.size(blob.name) == 30
        assert b"".join(opened.pieces([Extent(blob.name, 5, 20)])) == (b"0123456789" * 3)[5:25]
        buffer = bytearray(8)
        assert opened.readinto(blob.name, 26, memoryview(buffer)) == 4 and buffer[:4] == b"6789"
        with pytest.raises(FileNotFoundError):
            opened.add("0" * 32)  # without a size, a missing blob is found missing at once
    assert heads == ([1] if kind == "s3" else [])  # the missing blob's only


def test_concat_of_small_and_large_extents(store, kind):
    """Byte-exact against the same slices: small runs, large extents, a large one split by a small neighbour."""
    sources = {n: os.urandom(n) for n in (12 * MIB + 3, MIB + 1, 7 * MIB)}
    blobs = {}
    with ExitStack() as held:
        for size, data in sources.items():
            blobs[size] = held.enter_context(store.write(io.BytesIO(data), limit=size)).name
        big, small, mid = sources
        slices = [
            (small, 5, 1000),  # a run of small extents ...
            (mid, 17, 300_000),
            (big, 3, 10 * MIB + 1),  # ... topped up from a large one, whose rest is copied
            (small, 0, small),
            (mid, 1, 6 * MIB - 1),  # a large one after a small run
            (big, 0, 7),
            (big, 11 * MIB, MIB + 3),  # (ends the source)
            (small, 100, 9),
        ]
        extents = [Extent(blobs[s], o, n) for s, o, n in slices]
        expected = b"".join(sources[s][o : o + n] for s, o, n in slices)
        with store.open(blobs.values()) as opened, store.concat(opened, extents) as joined:
            assert (joined.size, joined.sha256) == (len(expected), "")
            assert read_all(store, joined.name, joined.size) == expected
            assert joined.name in set(store.listing(time.time() + 60))


def test_concat_of_nothing_is_an_empty_blob(store):
    with store.open() as opened, store.concat(opened, []) as empty:
        assert empty.size == 0
        assert read_all(store, empty.name, 0) == b""
        with store.open([empty.name]) as again:
            assert again.size(empty.name) == 0


def test_delete(store):
    with store.write(io.BytesIO(b"gone soon"), limit=100) as blob:
        pass
    store.delete(blob.name)
    assert blob.name not in set(store.listing(time.time() + 60))
    with pytest.raises(FileNotFoundError):
        store.open([blob.name])
    store.delete(blob.name)  # twice is fine: several gc at once


def test_exists(store):
    with store.write(io.BytesIO(b"here"), limit=10) as blob:
        pass
    assert store.exists(blob.name)
    store.delete(blob.name)
    assert not store.exists(blob.name)


def test_release_frees_at_once_only_where_readers_keep_deleted_blobs(store):
    """A released blob (no row refers to it any more) stays where a deletion would take it from a reader still
    reading it: there gc removes it after the grace period (test_gc)."""
    with store.write(io.BytesIO(b"replaced"), limit=10) as blob:
        pass
    with store.open([blob.name]) as reader:
        store.release(blob.name)
        assert store.exists(blob.name) is not store.deleted_stays_readable
        assert b"".join(reader.pieces(Extents([Extent(blob.name, 0, 8)]))) == b"replaced"  # either way


def test_listing_by_age(store):
    with store.write(io.BytesIO(b"old"), limit=10) as old:
        pass
    time.sleep(2)
    cutoff = time.time()
    time.sleep(1.1)  # S3's LastModified may be in whole seconds
    with store.write(Pattern(PART + 1), limit=PART + 1) as new:  # multipart on S3
        pass
    assert list(store.listing(cutoff)) == [old.name]
    assert set(store.listing(time.time() + 60)) == {old.name, new.name}
    assert list(store.listing(cutoff - 60)) == []


def test_a_held_blob_is_not_unheld_until_released(store):
    held = store.write(io.BytesIO(b"held"), limit=10)
    with store.write(io.BytesIO(b"released"), limit=10) as released:
        pass
    with store.unheld([held.name, released.name]) as unheld:
        assert unheld == [released.name]
    held.release()
    with store.unheld([held.name, released.name]) as unheld:
        assert sorted(unheld) == sorted([held.name, released.name])


def test_a_multipart_write_is_held_at_completion_however_long_it_took(spec, made):
    """(AWS dates a multipart object at its upload's start: its hold's lease must start again at completion.)"""
    clock = FrozenClock()  # the S3 store's holds judge leases by it; the local store's flock has none
    store = made(spec, clock)

    class Slow(Pattern):
        def readinto(self, buffer):
            if not self.left:  # the body's end, its last part already stored: nearly a lease after the start
                clock.advance(seconds=LEASE - 1)
            return super().readinto(buffer)

    with store.write(Slow(2 * PART), limit=2 * PART) as blob:
        clock.advance(seconds=2)  # past the lease taken at the start
        with store.unheld([blob.name]) as unheld:
            assert unheld == []


@pytest.mark.parametrize("kind", S3_KINDS)
def test_a_slow_client_keeps_its_multipart_write_held_while_it_sends_a_part(spec, made, partials):
    """A part read from a slow client can take longer than half the lease: the hold moves on while the part is
    read, or gc's sweep_tmp aborts the upload under its live writer once the lease has ended."""
    clock = FrozenClock()
    store = made(spec, clock)
    swept = []

    class Slow(Pattern):
        def readinto(self, buffer):
            n = super().readinto(buffer)
            # part 1 takes 0.45 of the lease (its hold is not moved on when it is stored), part 2 another 0.6
            clock.advance(seconds=LEASE * (0.45 if self.left >= PART else 0.6) * n / PART)
            if not self.left and not swept:  # part 2 read, not yet stored: the lease taken at the start has ended
                time.sleep(1.1)  # the store's clock judges the upload's age in whole seconds
                swept.append(store.sweep_tmp(older_than=0))  # another node's routine sweep
            return n

    with store.write(Slow(2 * PART), limit=2 * PART) as blob:
        assert swept == [0]
    assert blob.size == 2 * PART and store.exists(blob.name) and partials() == []


KILLED_WRITER = """
import io, json, os, signal, sys
sys.path.insert(0, sys.argv[2])
from tests.test_storage_conformance import make
spec, size = json.loads(sys.argv[1]), int(sys.argv[3])

class Dying:  # a body that, once past one part (a multipart upload's first part is stored), kills its writer
    def __init__(self):
        self.source = io.BytesIO(b"orphan" * (size // 6))
    def readinto(self, buffer):
        if self.source.tell() >= spec.get("part_size", size):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.source.readinto(buffer)

print(make(spec).write(io.BytesIO(b"orphan") if size <= 6 else Dying(), size).name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_writer(spec: dict, size: int = 6) -> str:
    """The name of the blob a process wrote before it was killed ("" if killed mid-write: `size` of more than a
    part)."""
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, json.dumps(spec), str(REPO), str(size)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -9, killed.stderr
    return killed.stdout.strip()


def after_the_lease() -> FrozenClock:
    return FrozenClock(Clock().now() + timedelta(seconds=LEASE + 1))


def test_a_killed_writer_holds_nothing_for_long(spec, kind, made):
    name = killed_writer(spec)
    if kind == "local":  # its flock went with its process
        judge = made(spec)
    else:  # its row lives on until its lease ends, then sweep_tmp deletes it
        with made(spec).unheld([name]) as unheld:
            assert unheld == []
        assert held_rows(spec) == {name}
        judge = made(spec, after_the_lease())
    with judge.unheld([name]) as unheld:
        assert unheld == [name]
    assert read_all(judge, name, 6) == b"orphan"  # ... and gc may now take it
    if kind != "local":
        assert judge.sweep_tmp() == 1
        assert held_rows(spec) == set()


def test_sweep_tmp_removes_an_abandoned_partial_write(store, partials, abandon):
    abandon()
    assert len(partials()) == 1
    assert store.sweep_tmp(older_than=3600) == 0  # too young
    time.sleep(1.1)
    assert store.sweep_tmp(older_than=0) == 1
    assert partials() == []


def test_sweep_tmp_spares_a_live_write_however_old(store, partials):
    data = os.urandom(2 * PART + 5)
    resume, failed, done = threading.Event(), [], {}

    class Paused:
        def __init__(self):
            self.source = io.BytesIO(data)

        def readinto(self, buffer):
            if self.source.tell() >= PART:  # (on S3: once the first part is uploaded)
                resume.wait(30)
            return self.source.readinto(buffer)

    def write():
        try:
            done["blob"] = store.write(Paused(), limit=len(data))
        except BaseException as exc:
            failed.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + 20
        while not partials() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert partials(), "the write never started"
        time.sleep(1.1)
        assert store.sweep_tmp(older_than=0) == 0
    finally:
        resume.set()
        writer.join(30)
    assert not failed
    with done["blob"] as blob:
        assert read_all(store, blob.name, blob.size) == data
    assert partials() == []


def test_health_and_free_space(store, kind):
    assert store.health() == "ok"
    assert list(store.listing(time.time() + 60)) == []  # the probe is gone
    if kind == "local":
        assert store.free_space() > 0
    else:
        assert store.free_space() is None


def test_no_download_url_without_an_address_for_clients(store):
    """Only an S3 store given the address clients reach it at hands out URLs (tests/test_presigned_downloads.py)."""
    with store.write(io.BytesIO(b"x"), limit=10) as blob:
        pass
    assert store.download_url(blob.name, 60, "x.txt") is None


# --- S3 alone


def test_concat_plans_parts_s3_accepts_moving_little_through_the_host():
    """Every part but the last is at least 5 MiB, each segment is covered once in order, and what is uploaded
    through the host stays below 5 MiB per run of small extents (plus a part for a trailing run)."""
    segments = [("a", 0, 100), ("b", 0, 30 * MIB), ("c", 7, MIB), ("d", 0, 5 * MIB), ("e", 1, 3 * MIB)]
    segments += [("f", i * 10, 4096) for i in range(3000)] + [("g", 0, 6 * MIB), ("h", 0, 10)]
    segments += [("i", 0, 2 * MIB), ("j", 0, 40 * MIB)]
    plan = plan_parts(segments, 8 * MIB)
    sizes = [sum(n for _, _, n in pieces) for _, pieces in plan]
    assert all(size >= MIN_PART for size in sizes[:-1])
    assert all(size <= 8 * MIB for (kind, _), size in zip(plan, sizes) if kind == "upload")
    flat = [piece for _, pieces in plan for piece in pieces]
    rebuilt, at = [], 0
    for blob, offset, length in segments:  # the pieces, in order, tile each segment exactly
        covered = offset
        while covered < offset + length:
            piece = flat[at]
            assert piece[:2] == (blob, covered)
            covered += piece[2]
            at += 1
        rebuilt.append(covered - offset)
    assert at == len(flat) and rebuilt == [n for _, _, n in segments]
    uploaded = sum(size for (kind, _), size in zip(plan, sizes) if kind == "upload")
    small = 100 + MIB + 3 * MIB + 3000 * 4096 + 10 + 2 * MIB
    assert uploaded <= small + 3 * MIN_PART
    copied = [pieces[0] for kind, pieces in plan if kind == "copy"]
    assert copied[0] == ("b", MIN_PART - 100, 30 * MIB - (MIN_PART - 100))  # topped the run up: b's rest is copied
    assert sum(n for _, _, n in copied) >= 30 * MIB
    assert plan_parts([], 8 * MIB) == []
    assert plan_parts([("x", 0, 10)], 8 * MIB) == [("upload", [("x", 0, 10)])]
    assert plan_parts([("x", 3, 6 * MIB)], 8 * MIB) == [("copy", [("x", 3, 6 * MIB)])]


@pytest.mark.parametrize("kind", S3_KINDS)
def test_a_hold_row_exists_exactly_while_the_blob_is_held(spec, store):
    class Watched(Pattern):
        """Sees the hold rows when its writer first reads it: before its object can be visible."""

        def readinto(self, buffer):
            if not seen:
                seen.append(held_rows(spec))
            return super().readinto(buffer)

    for size in (10, 2 * PART + 1):  # one PutObject, a multipart upload
        seen: list[set[str]] = []
        blob = store.write(Watched(size), limit=size)
        assert held_rows(spec) == seen[0] == {blob.name}
        with store.unheld([blob.name]) as unheld:
            assert unheld == []
        blob.release()
        assert held_rows(spec) == set()
        with store.unheld([blob.name]) as unheld:
            assert unheld == [blob.name]
    with store.write(io.BytesIO(b"source"), limit=10) as source, store.open([source.name]) as opened:
        joined = store.concat(opened, [Extent(source.name, 0, 6)])
        assert held_rows(spec) == {source.name, joined.name}
        joined.release()
        assert held_rows(spec) == {source.name}
    assert held_rows(spec) == set()
    with pytest.raises(TooLarge):
        store.write(io.BytesIO(b"too long"), limit=5)
    assert held_rows(spec) == set()


@pytest.mark.parametrize("kind", S3_KINDS)
def test_holds_put_nothing_in_the_bucket(spec, store, s3, bucket):  # noqa: F811
    """Only the blobs themselves: no object under PREFIX/holds/ (nor anywhere else), whatever was written."""
    with ExitStack() as held:
        small = held.enter_context(store.write(io.BytesIO(b"small"), limit=10))
        large = held.enter_context(store.write(Pattern(2 * PART + 1), limit=2 * PART + 1))
        with store.open([small.name, large.name]) as opened:
            extents = [Extent(large.name, 0, PART), Extent(small.name, 0, 5)]
            joined = held.enter_context(store.concat(opened, extents))
        keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert keys == {store.key(blob.name) for blob in (small, large, joined)}
    time.sleep(1.1)
    store.sweep_tmp(older_than=0)
    assert {item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])} == keys
    assert not any(key.startswith("some/prefix/holds/") for key in keys)


@pytest.mark.parametrize("kind", S3_KINDS)
def test_sweep_tmp_aborts_a_killed_writers_upload_once_its_lease_ended(spec, made, partials):
    killed_writer(spec, 2 * PART + 5)  # killed after the first part of its multipart upload
    (name,) = held_rows(spec)  # what it left in the database
    store = made(spec)
    assert partials() == [store.key(name)]
    time.sleep(1.1)
    assert store.sweep_tmp(older_than=0) == 0  # for all we know its writer is alive: its hold is
    assert made(spec, after_the_lease()).sweep_tmp(older_than=0) == 2  # its upload and its dead row
    assert partials() == []
    assert held_rows(spec) == set()


def test_a_release_the_database_cannot_record_is_left_to_the_lease(s3_env, bucket, tmp_path, holds, caplog):  # noqa: F811
    """A release never raises: over a write's own error least of all. The rows it could not delete stay until
    their leases end."""
    store = S3Store(f"s3://{bucket}/p", holds, part_size=PART)
    path = Path(holds.db.engine.url.database)
    written = store.write(io.BytesIO(b"written"), limit=10)

    class LosingTheDatabase:
        def readinto(self, buffer):
            holds.db.dispose()
            path.rename(tmp_path / "elsewhere.sqlite3")
            path.mkdir()  # in its place: SQLite cannot open it
            raise OSError("the client went away")

    with caplog.at_level(logging.WARNING, "wopihost.holds"):
        with pytest.raises(OSError, match="the client went away"):
            store.write(LosingTheDatabase(), limit=10)
        written.release()
    assert caplog.text.count("it ends with its lease") == 2
    left = held_rows({"database": f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"})
    assert len(left) == 2 and written.name in left


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_outage_is_unavailable_at_once(monkeypatch, holds):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    down = S3Store(
        "s3://bucket/prefix",
        holds,
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        addressing_style="path",
        connect_timeout=0.5,
        read_timeout=0.5,
        max_attempts=1,
    )
    started = time.monotonic()
    with pytest.raises(Unavailable, match="the object store is unreachable while storing") as refused:
        down.write(io.BytesIO(b"x"), 10)
    assert isinstance(refused.value.__cause__, Exception)
    assert rows(holds) == set()  # released
    with pytest.raises(Unavailable):
        down.open(["a" * 32])
    with pytest.raises(Unavailable):
        list(down.listing(time.time()))
    assert down.health() == "not writable"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "code, status",
    [
        ("QuotaExceeded", 403),
        ("XMinioStorageFull", 507),
        ("XMinioAdminBucketQuotaExceeded", 400),  # MinIO's bucket quota
        ("InsufficientCapacity", 507),
        ("InsufficientStorage", 507),
    ],
)
def test_a_full_store_is_insufficient_storage_not_an_outage(s3_env, s3, bucket, holds, monkeypatch, code, status):  # noqa: F811
    """Over a quota (RGW: 403 QuotaExceeded) or full (507: MinIO's XMinioStorageFull, RGW's InsufficientCapacity),
    the store will not take the write however often it is tried: the faces' 507, not 503's "try again"."""
    from botocore.exceptions import ClientError

    store = S3Store(f"s3://{bucket}/p", holds, part_size=PART)

    def full(**kwargs):
        error = {"Error": {"Code": code, "Message": "full"}, "ResponseMetadata": {"HTTPStatusCode": status}}
        raise ClientError(error, "PutObject")

    monkeypatch.setattr(store._s3, "put_object", full)
    monkeypatch.setattr(store._s3, "upload_part", full)
    for size in (10, 2 * PART):  # one PutObject, a multipart upload
        with pytest.raises(InsufficientStorage, match=f"full or over quota \\({code}\\)"):
            store.write(Pattern(size), limit=size)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    assert rows(holds) == set()
    assert store.health() == "full"


@pytest.mark.parametrize("code, status", [("AuthorizationHeaderMalformed", 400), ("SomeCodeOfAnotherStore", 418)])
def test_an_error_of_the_store_no_fault_names_is_unavailable(s3_env, s3, bucket, holds, monkeypatch, code, status):  # noqa: F811
    """No client's input reaches the store: an error code this does not know (a proxy's 400, a wrong region, a
    store's own) is the deployment's to fix, 503 with what the store said, never a 500."""
    from botocore.exceptions import ClientError

    store = S3Store(f"s3://{bucket}/p", holds, part_size=PART)

    def refused(**kwargs):
        error = {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": status}}
        raise ClientError(error, "PutObject")

    monkeypatch.setattr(store._s3, "put_object", refused)
    with pytest.raises(Unavailable, match=f"\\({code}\\)"):
        store.write(Pattern(10), limit=10)
    assert rows(holds) == set()


def test_an_upload_lost_as_it_completes_is_unavailable(s3_env, s3, bucket, holds, monkeypatch):  # noqa: F811
    """CompleteMultipartUpload answered NoSuchUpload: aborted meanwhile (a sweep that took the writer for dead), or
    completed by a first try whose answer botocore did not get. The write cannot say it made the object: 503, where
    the missing upload's FileNotFoundError was a 500."""
    from botocore.exceptions import ClientError

    store = S3Store(f"s3://{bucket}/p", holds, part_size=PART)

    def lost(**kwargs):
        error = {"Error": {"Code": "NoSuchUpload", "Message": "gone"}, "ResponseMetadata": {"HTTPStatusCode": 404}}
        raise ClientError(error, "CompleteMultipartUpload")

    monkeypatch.setattr(store._s3, "complete_multipart_upload", lost)
    with pytest.raises(Unavailable, match="lost the upload"):
        store.write(Pattern(2 * PART), limit=2 * PART)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    assert rows(holds) == set()


def test_a_blob_kept_past_half_its_lease_is_held_a_whole_lease_again(tmp_path, sqlite_template):
    """A change that makes many blobs before it records them (a folder's copies, a merge's levels) may take longer
    than a hold's lease: each blob it keeps is held a lease from then, once past half of it; one not kept lapses."""
    shutil.copy(sqlite_template, tmp_path / "holds.sqlite3")
    clock = FrozenClock()
    holds = Holds(Database(f"sqlite:///{tmp_path / 'holds.sqlite3'}"), clock, lease=60)
    try:
        kept, left = (Blob(name, 0, "", holds.hold(name)) for name in (new_id(32), new_id(32)))
        clock.advance(seconds=20)
        kept.keep()  # not yet past half: nothing to write
        clock.advance(seconds=20)
        kept.keep()
        clock.advance(seconds=30)  # 70 s after both were made
        assert holds.live([kept.name, left.name]) == {kept.name}
        kept.release()
        assert holds.live([kept.name]) == set()
    finally:
        holds.db.dispose()


@pytest.mark.parametrize("after", [100, 2 * PART + 5])
def test_a_source_failing_mid_upload_leaves_nothing(s3_env, s3, bucket, holds, after):  # noqa: F811
    store = S3Store(f"s3://{bucket}/p", holds, part_size=PART)
    with pytest.raises(OSError, match="the client went away"):
        store.write(Failing(after), limit=10 * PART)
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    assert rows(holds) == set()


def test_a_64_mib_write_holds_one_part_in_memory(s3_env, bucket, holds):  # noqa: F811
    store = S3Store(f"s3://{bucket}/p", holds, part_size=8 * MIB)
    with store.write(io.BytesIO(b"warm"), 10):  # botocore's first request loads its models: not ours to count
        pass
    source = Pattern(64 * MIB)
    expected = hashlib.sha256()
    for _ in range(64 * MIB // len(source.block)):
        expected.update(source.block)
    expected.update(source.block[: 64 * MIB % len(source.block)])
    tracemalloc.start()
    try:
        with store.write(source, limit=64 * MIB) as blob:
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (blob.size, blob.sha256) == (64 * MIB, base64.b64encode(expected.digest()).decode())
    assert peak < 1.5 * 8 * MIB, f"{peak / MIB:.1f} MiB at the peak"


def test_a_reader_asks_the_store_for_more_only_as_it_reads_on(s3_env, bucket, holds, monkeypatch):  # noqa: F811
    """Every GET of a seekable reader asked for 16 MiB, however little it went on to read: a Range of a few
    bytes made the store send up to 16 MiB, cut off. A read from anywhere but the start (a Range, a zip's
    directory) asks for a piece (1 MiB, what a download reads at a time), and each that goes on where the last
    ended for twice as much, up to READ_AHEAD; a read from the start (a whole download) for READ_AHEAD."""
    monkeypatch.setattr(s3store, "READ_AHEAD", 4 * MIB)
    data = os.urandom(12 * MIB)
    store, ranges = S3Store(f"s3://{bucket}/p", holds, part_size=PART), []
    store._s3.meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: ranges.append(params["headers"]["Range"])
    )
    buffer = bytearray(MIB)
    with store.write(io.BytesIO(data), limit=len(data)) as blob, store.open([blob.name]) as opened:
        assert opened.readinto(blob.name, 5, memoryview(buffer)[:2]) == 2 and buffer[:2] == data[5:7]
        assert ranges == [f"bytes=5-{5 + MIB - 1}"]  # a short read: a piece, not READ_AHEAD
        for start, starts in (
            (MIB // 2, [MIB // 2, 3 * MIB // 2, 7 * MIB // 2, 15 * MIB // 2, 23 * MIB // 2]),  # 1, 2, 4, 4 MiB, ...
            (0, [0, 4 * MIB, 8 * MIB]),  # a whole download: READ_AHEAD at once
        ):
            ranges.clear()
            read = bytearray()
            while got := opened.readinto(blob.name, start + len(read), buffer):
                read += buffer[:got]
            assert read == data[start:]
            assert ranges == [f"bytes={a}-{b - 1}" for a, b in zip(starts, [*starts[1:], len(data)])]


def test_refused_credentials_are_unavailable_for_reads_too(s3_env, bucket, holds, monkeypatch):  # noqa: F811
    """Credentials the store refuses get 403 on every request; a HEAD's has no body, so botocore's code is only
    "403": an outage (503) all the same, as the write's SignatureDoesNotMatch is, never an unmapped error (500)."""
    with S3Store(f"s3://{bucket}/p", holds, part_size=PART).write(io.BytesIO(b"x" * 10), 10) as blob:
        pass
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    refused = S3Store(f"s3://{bucket}/p", holds, part_size=PART)
    with pytest.raises(Unavailable, match=r"cannot serve storing \w+ now \(SignatureDoesNotMatch\)"):
        refused.write(io.BytesIO(b"y"), 10)
    with pytest.raises(Unavailable, match=r"cannot serve reading \w+ now \(403\)"):
        refused.open([blob.name])
    with pytest.raises(Unavailable, match=r"\(403\)"):
        refused.exists(blob.name)
    opened = refused.open()
    opened.add(blob.name, 10)  # its size known: the GET is the first request
    with pytest.raises(Unavailable), opened:
        list(opened.pieces([Extent(blob.name, 0, 10)]))
    assert refused.health() == "not writable"
    from botocore.exceptions import ClientError

    def expired(**kwargs):  # temporary credentials past their time: AWS's 400 ExpiredToken
        error = {"Error": {"Code": "ExpiredToken"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        raise ClientError(error, "PutObject")

    monkeypatch.setattr(refused._s3, "put_object", expired)
    with pytest.raises(Unavailable, match=r"\(ExpiredToken\)"):
        refused.write(io.BytesIO(b"y"), 10)
    assert rows(holds) == set()


def test_credentials_that_cannot_be_renewed_are_unavailable(s3_env, bucket, holds, tmp_path, monkeypatch):  # noqa: F811
    """Temporary credentials (an instance role's, a container's, a credential_process's) are renewed by botocore on
    the request that finds them about to expire; when the renewal fails (the metadata service or the process is
    down), every request raises CredentialRetrievalError: an outage of the store, 503, not an unknown error (500),
    and /healthz says "not writable" rather than failing itself."""
    gateway, expiry = s3_env, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
    fails = tmp_path / "fails"
    process = tmp_path / "credentials"
    process.write_text(
        f"#!/bin/sh\n[ -e {fails} ] && exit 1\n"
        f'echo \'{{"Version": 1, "AccessKeyId": "{gateway.access_key}", "SecretAccessKey": "{gateway.secret_key}", '
        f'"SessionToken": "t", "Expiration": "{expiry}"}}\'\n'
    )
    process.chmod(0o755)
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\ncredential_process = {process}\ns3 =\n    addressing_style = path\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    store = S3Store(f"s3://{bucket}/p", holds, part_size=PART)  # credentials fetched now, two minutes to go
    fails.touch()  # and the next fetch, which the first request makes (within ten minutes of the expiry), fails
    with pytest.raises(Unavailable, match=r"credentials .*\(CredentialRetrievalError\)"):
        store.write(io.BytesIO(b"x"), 10)
    assert rows(holds) == set()
    with pytest.raises(Unavailable, match=r"\(CredentialRetrievalError\)"):
        store.open(["a" * 32])
    assert store.health() == "not writable"


def test_a_write_that_could_pass_s3s_count_of_parts_uses_larger_ones(s3_env, bucket, holds, monkeypatch):  # noqa: F811
    """S3 takes at most 10,000 parts (InvalidArgument past them): with WOPIHOST_MAX_FILE_SIZE above 10,000 parts of
    WOPIHOST_S3_PART_SIZE, a body that large must not be refused (a 500) once 10,000 parts were sent. Here S3's
    count is 2, as a store that refuses a third part."""
    from botocore.exceptions import ClientError

    monkeypatch.setattr(s3store, "MAX_PARTS", 2)
    store = S3Store(f"s3://{bucket}/p", holds, part_size=PART)
    upload_part, numbers = store._s3.upload_part, []

    def as_s3(**kwargs):
        numbers.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] > s3store.MAX_PARTS:
            error = {"Error": {"Code": "InvalidArgument"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
            raise ClientError(error, "UploadPart")
        return upload_part(**kwargs)

    monkeypatch.setattr(store._s3, "upload_part", as_s3)
    source = Pattern(3 * PART)
    data = bytes(source.block * (3 * PART // len(source.block) + 1))[: 3 * PART]
    with store.write(source, limit=4 * PART) as blob:
        assert (blob.size, blob.sha256) == (3 * PART, sha(data))
    assert numbers == [1, 2]
    assert read_all(store, blob.name, blob.size) == data


def test_missing_object_reads_are_file_not_found(s3_env, bucket, holds):  # noqa: F811
    store = S3Store(f"s3://{bucket}/p", holds, part_size=PART)
    with store.write(io.BytesIO(b"x" * 10), 10) as blob, store.open([blob.name]) as opened:
        store.delete(blob.name)  # under a reader: S3 keeps nothing open
        with pytest.raises(FileNotFoundError):
            list(opened.pieces([Extent(blob.name, 0, 10)]))


def test_boto3_is_imported_only_for_an_s3_store():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, wopihost.s3store, wopihost.storage; print('boto3' in sys.modules)"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.stdout.strip() == "False", result.stderr


def test_settings_are_checked_before_any_request(holds):
    with pytest.raises(ValueError, match="is not an s3://bucket/prefix URL"):
        S3Store("https://bucket/prefix", holds)
    with pytest.raises(ValueError, match="at least"):
        S3Store("s3://bucket", holds, part_size=MIB)
    with pytest.raises(ValueError, match="addressing style"):
        S3Store("s3://bucket", holds, addressing_style="sideways")
