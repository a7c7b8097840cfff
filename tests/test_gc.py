"""Garbage collection never takes what live work still uses, whatever the grace period; it does take what
dead processes left behind and the rows of tokens that can no longer be used."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from wopihost.gc import Interrupted, Sweeper, collect
from wopihost.models import AccessToken, File, UnreferencedBlob


def tmp_files(settings) -> list:
    return list(settings.tmp_dir.iterdir())


@pytest.mark.local_storage
def test_a_blob_held_by_its_writer_survives_gc_whatever_the_grace(services):
    blob = services.blobs.write(io.BytesIO(b"not yet recorded"), 100)
    assert collect(services, grace=0).blobs == 0
    assert services.blobs.path(blob.name).read_bytes() == b"not yet recorded"
    blob.release()  # the writer's transaction is over and did not record it
    assert collect(services, grace=0).blobs == 1
    assert not services.blobs.exists(blob.name)


@pytest.mark.local_storage
def test_a_partial_write_in_progress_survives_gc_whatever_the_grace(services, settings):
    read_end, write_end = os.pipe()
    written = []
    with open(read_end, "rb", buffering=0) as source:
        writer = threading.Thread(target=lambda: written.append(services.blobs.write(source, 1 << 20)))
        with open(write_end, "wb", buffering=0) as sink:
            sink.write(b"first half ")
            writer.start()
            while not tmp_files(settings):  # the writer has started its partial write
                threading.Event().wait(0.01)
            done = collect(services, grace=0)
            assert done.partial_writes == 0 and done.blobs == 0
            sink.write(b"second half")
        writer.join()
    (blob,) = written
    assert services.blobs.path(blob.name).read_bytes() == b"first half second half"
    blob.release()


@pytest.mark.local_storage
def test_partial_writes_of_dead_processes_go_after_the_grace(services, settings):
    orphan = settings.tmp_dir / "killed-writer.part"
    orphan.write_bytes(b"half a file")  # nobody holds it: its writer is gone
    assert collect(services, grace=3600).partial_writes == 0
    assert collect(services, grace=0).partial_writes == 1
    assert not orphan.exists()


def test_gc_deletes_the_rows_of_expired_and_revoked_tokens(services, wopi, clock):
    expiring = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(minutes=5))
    revoked = services.issue_token(wopi.file_id, "alice", True).token
    with services.db.write() as s:
        services.tokens.revoke(s, token=revoked)
    clock.advance(minutes=6)
    assert collect(services).tokens == 2
    with services.db.read() as s:
        left = set(s.scalars(sa.select(AccessToken.jti)))
    assert expiring.grant.jti not in left and len(left) == 1
    assert wopi.check_file_info().status_int == 200  # the live token is untouched
    assert wopi.testapp.get(wopi.url(token=revoked), expect_errors=True).status_int == 401
    assert collect(services).tokens == 0


@pytest.mark.local_storage
def test_where_deletes_do_not_wait_for_readers_gc_deletes_a_blob_unreferenced_for_the_grace(services, clock):
    """An object store's delete takes the object from its readers too: gc deletes a blob only once two passes,
    the grace period apart, found it unreferenced (a download that opened it before the commit that replaced
    it has that long to finish). Here the local store is told to behave so; the S3 store does."""
    services.blobs.deleted_stays_readable = False
    with services.blobs.write(io.BytesIO(b"replaced"), 100) as blob:
        pass
    written = time.time() - 700  # written before the grace period (the store's own clock)
    os.utime(services.blobs.path(blob.name), (written, written))
    assert collect(services, grace=600).blobs == 0  # first found unreferenced now
    clock.advance(seconds=599)
    assert collect(services, grace=600).blobs == 0
    assert services.blobs.exists(blob.name)
    clock.advance(seconds=1)
    assert collect(services, grace=600).blobs == 1
    assert not services.blobs.exists(blob.name)


@pytest.mark.local_storage
def test_where_deletes_do_not_wait_for_readers_a_blob_referenced_again_starts_over(services, clock, make_file):
    services.blobs.deleted_stays_readable = False
    with services.blobs.write(io.BytesIO(b"orphan for now"), 100) as blob:
        pass
    assert collect(services, grace=0).blobs == 0
    file_id = make_file(b"x").id
    with services.db.write() as s:  # a row comes to refer to it (as a commit would)
        s.execute(sa.update(File).where(File.id == file_id).values(blob=blob.name))
    assert collect(services, grace=0).blobs == 0
    with services.db.read() as s:
        assert s.get(UnreferencedBlob, blob.name) is None  # forgotten
    assert services.blobs.exists(blob.name)


@pytest.mark.parametrize("lets_go", ["after the pass", "while the pass lists"])
def test_where_deletes_do_not_wait_for_readers_the_grace_starts_once_the_writer_let_go(
    services, clock, make_file, monkeypatch, lets_go
):
    """A writer's new blob is unreferenced until the transaction that records it is over, as its hold says: a
    pass that finds it so meanwhile must not start its grace period. Otherwise, with no pass while the file refers
    to it, the first pass after the file is replaced deletes it at once, under a download that opened it just
    before. The grace is 1 s here, as the S3 store's clock cannot be moved."""
    services.blobs.deleted_stays_readable = False  # (the S3 store's already is)
    file_id = make_file(b"first version").id
    with services.db.read() as s:
        first = s.get(File, file_id).blob
    blob = services.blobs.write(io.BytesIO(b"second version"), 100)

    def commit():  # the writer's transaction records its blob, then it lets go
        with services.db.write() as s:
            s.execute(sa.update(File).where(File.id == file_id).values(blob=blob.name))
        blob.release()

    time.sleep(1.1)  # older than the grace by the store's clock
    with monkeypatch.context() as patched:
        if lets_go == "while the pass lists":  # after the pass read the references, before it asks for holds
            listing = services.blobs.listing

            def listing_then_commit(older_than):
                names = list(listing(older_than))
                commit()
                return names

            patched.setattr(services.blobs, "listing", listing_then_commit)
        assert collect(services, grace=1).blobs == 0
    if lets_go == "after the pass":
        commit()
    clock.advance(seconds=5)  # the file is read for a while; no pass runs meanwhile
    with services.db.write() as s:  # replaced: unreferenced from now on
        s.execute(sa.update(File).where(File.id == file_id).values(blob=first))
    assert collect(services, grace=1).blobs == 0
    assert services.blobs.exists(blob.name)
    clock.advance(seconds=1)
    assert collect(services, grace=1).blobs == 1
    assert not services.blobs.exists(blob.name)


def test_stopping_the_sweeper_waits_for_the_sweep_under_way(services):
    """Nothing of a sweep outlives stop(): a sweep still writing would race whoever uses the database next."""
    entered, release, finished = threading.Event(), threading.Event(), []

    def report(done):  # called by the sweeper's thread at the end of each sweep
        entered.set()
        release.wait(30)
        finished.append(done)

    sweeper = Sweeper(services, 0.01, report).start()
    assert entered.wait(30)
    stopper = threading.Thread(target=sweeper.stop)
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive(), "stop() returned while a sweep was under way"
    release.set()
    stopper.join(30)
    assert not stopper.is_alive() and len(finished) == 1  # that sweep, and no other after stop()


def _undeletable(directory) -> bool:
    """Makes the files in `directory` impossible to delete, for real: a directory without write permission, or,
    for root, whom permissions do not stop, one with the immutable attribute (ext4, XFS, btrfs...). False if neither
    can be had here."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        return True
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0


def _deletable(directory) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    directory.chmod(0o755)


@pytest.fixture
def stuck(services):
    """Ten orphaned blobs written two hours ago, of which those in the shard gc reaches last cannot be deleted:
    yields their names, and lets the shard be deleted from again afterwards."""
    names = []
    for n in range(10):
        with services.blobs.write(io.BytesIO(b"orphan %d" % n), 100) as blob:
            names.append(blob.name)
        then = time.time() - 7200
        os.utime(services.blobs.path(blob.name), (then, then))
    last = services.blobs.path(list(services.blobs.listing(time.time()))[-1]).parent
    if not _undeletable(last):
        pytest.skip("no way to make a file undeletable here (root, and no immutable attribute)")
    try:
        yield names
    finally:
        _deletable(last)


@pytest.mark.local_storage
def test_a_sweep_that_fails_partway_says_what_it_deleted_and_the_next_takes_the_rest(services, stuck):
    """A blob the store cannot delete ended the sweep with the failure alone: what it had deleted before went
    unsaid. It stops there, says how many went, and leaves the rest to the next sweep."""
    with pytest.raises(Interrupted) as raised:
        collect(services)
    left = [name for name in stuck if services.blobs.exists(name)]
    assert 0 < raised.value.done.blobs == len(stuck) - len(left) < len(stuck)
    assert isinstance(raised.value.__cause__, PermissionError)
    assert f"after deleting 0 expired upload and workbook sessions, {raised.value.done.blobs} orphaned blobs" in str(
        raised.value
    )
    _deletable(services.blobs.path(left[0]).parent)
    assert collect(services).blobs == len(left)
    assert not any(services.blobs.exists(name) for name in stuck)


@pytest.mark.local_storage
@pytest.mark.parametrize("who", ["the server's sweeper", "wopihost gc"])
def test_a_sweep_that_fails_partway_reports_what_it_deleted(services, stuck, who, run, caplog):
    if who == "wopihost gc":
        result = run("gc", ok=False)
        assert result.exit_code == 1
        output = result.output
    else:
        swept = threading.Event()
        sweeper = Sweeper(services, 0.01, lambda done: swept.set()).start()
        try:
            assert swept.wait(30)
        finally:
            sweeper.stop()
        output = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    deleted = len([name for name in stuck if not services.blobs.exists(name)])
    assert 0 < deleted < len(stuck)
    assert f"garbage collection failed after deleting 0 expired upload and workbook sessions, {deleted} orphaned" in (
        output
    )
    assert "the next" in output and "takes the rest" in output


@pytest.mark.local_storage
def test_a_sweep_that_fails_partway_counts_what_it_deleted_in_the_metrics(app, services, stuck):
    """The metrics heard only that a sweep failed, and counted none of the blobs it had deleted before: those are
    gone all the same. A failed sweep sets no time of the last one finished."""
    metrics = app.extensions["wopihost.metrics"]
    swept = threading.Event()

    def report(outcome) -> None:
        metrics.sweep_done(outcome)
        swept.set()

    sweeper = Sweeper(services, 0.01, report).start()
    try:
        assert swept.wait(30)
    finally:
        sweeper.stop()
    deleted = len([name for name in stuck if not services.blobs.exists(name)])
    sample = metrics.registry.get_sample_value
    assert 0 < deleted == sample("wopihost_gc_deleted_total", {"kind": "blobs"})
    assert sample("wopihost_gc_sweeps_total", {"result": "failed"}) >= 1
    assert sample("wopihost_gc_sweeps_total", {"result": "ok"}) == 0
    assert sample("wopihost_gc_last_sweep_timestamp_seconds") == 0
