"""Throughput of a CSPP Plus upload session against a real gunicorn server on loopback.

Prints, from one run:

* ingest: an upload-session stream (Chunk frames of --chunk bytes, --size of content in all) pushed with
  UpdateUploadSession calls of --piece bytes, back to back from one client; MiB/s of stream bytes;
* commit: the PutChunkedFile that commits it; MiB/s = session bytes / the request's wall time;
* the server's peak memory (RSS of master + workers, and of the largest single process, sampled every 20 ms
  in a thread), beside its RSS when idle;
* a reference measured in the same run: the same bytes, in the same pieces, written by one process to a
  file on the same file system as the server's data directory and hashed with spookyhash (Hash128,
  incremental), fsynced once at the end, and again with an fsync after every piece (as the server does for
  each UpdateUploadSession); and the ratios ingest/reference and commit/reference.

Every figure is taken in each of --rounds rounds (reference, then a new file's upload and commit), because a
shared disk's speed varies from one minute to the next. The ratios compare the best ingest and commit with
the fastest reference run of either kind, the strictest comparison; medians are printed beside them.

Targets (from the issue): ingest and commit each at least 50% of the reference, and server memory growth
under 100 MiB whatever the size. Client and server share this machine's cores.

The content is made deterministically and cheaply (one random buffer from a fixed seed; every chunk gets its
own 16-byte head and a different slice of it, so ChunkIds differ), and its making is left out of every timed
region: each request (and each reference write) is timed on its own, the piece already built. The temporary
directory is removed at the end.

    python bench/upload_session.py [--size 1GiB] [--piece 10MiB] [--chunk 4MiB] [--rounds 3] [--workers 2]
                                   [--database URL]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import requests
import spookyhash

from wopihost.config import parse_size
from wopihost.cspp.chunkid import chunk_id
from wopihost.cspp.frames import chunk_frame
from wopihost.cspp.signatures import ChunkSignature, Signature
from wopihost.cspp.wire import put_chunked_body, rechunk
from wopihost.localserver import LocalServer, PeakRss

MIB = 1 << 20
LOCK = "bench"


class Content:
    """`size` bytes of MainContent in `chunk`-byte chunks (the last one may be shorter), made on demand."""

    def __init__(self, size: int, chunk: int, seed: int = 20240601):
        self.size, self.chunk = size, chunk
        self.count = max(1, -(-size // chunk))
        self._base = random.Random(seed).randbytes(2 * chunk)

    def length(self, i: int) -> int:
        return min(self.chunk, self.size - i * self.chunk)

    def payload(self, i: int) -> bytes:
        start = (i * 1_000_003) % self.chunk
        return struct.pack(">QQ", i, self.size) + self._base[start + 16 : start + self.length(i)]

    def signature(self) -> Signature:
        return Signature(
            "FullFile", tuple(ChunkSignature(chunk_id(self.payload(i)), self.length(i)) for i in range(self.count))
        )

    def stream_pieces(self, signature: Signature, piece: int) -> Iterator[bytes]:
        """The upload-session stream (one Chunk frame per chunk) in `piece`-byte pieces, cut anywhere."""
        frames = (
            part for i, chunk in enumerate(signature.chunks) for part in chunk_frame(chunk.chunk_id, self.payload(i))
        )
        return rechunk(frames, piece)


def expect(response: requests.Response, status: int = 200) -> requests.Response:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.headers.get('X-WOPI-Override')} {response.status_code}: "
            f"{response.headers.get('X-WOPI-FailureReason')}"
        )
    return response


def reference(
    content: Content, signature: Signature, piece: int, directory: Path, fsync_each: bool = False
) -> tuple[float, int]:
    """Seconds to write the stream to a file in `directory` and hash it with spookyhash, fsynced once at the
    end (or also after every piece)."""
    path = directory / "reference.bin"
    hasher = spookyhash.Hash128(None, 0, 0)
    elapsed, total = 0.0, 0
    try:
        with open(path, "wb", buffering=0) as out:
            for body in content.stream_pieces(signature, piece):
                start = time.perf_counter()
                out.write(body)
                hasher.update(body)
                if fsync_each:
                    os.fsync(out.fileno())
                elapsed += time.perf_counter() - start
                total += len(body)
            start = time.perf_counter()
            os.fsync(out.fileno())
            hasher.final_pair()
            elapsed += time.perf_counter() - start
    finally:
        path.unlink(missing_ok=True)
    return elapsed, total


def file_system(path: Path) -> str:
    best = None
    for part in psutil.disk_partitions(all=True):
        inside = os.path.commonpath([str(path), part.mountpoint]) == part.mountpoint
        if inside and (best is None or len(part.mountpoint) > len(best.mountpoint)):
            best = part
    return f"{best.device} ({best.fstype}) on {best.mountpoint}" if best else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"), help="content size (default 1GiB)")
    parser.add_argument(
        "--piece",
        type=parse_size,
        default=parse_size("10MiB"),
        help="bytes per UpdateUploadSession call (default 10MiB)",
    )
    parser.add_argument("--chunk", type=parse_size, default=parse_size("4MiB"), help="chunk size (default 4MiB)")
    parser.add_argument("--rounds", type=int, default=3, help="reference + ingest + commit rounds (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--database", help="database URL (default: SQLite in the temporary directory)")
    parser.add_argument("--dir", help="where to make the temporary directory (default: the system's)")
    args = parser.parse_args()
    if args.size <= 0 or args.piece <= 0 or args.chunk <= 0 or args.rounds <= 0:
        parser.error("sizes and rounds must be positive")

    content = Content(args.size, args.chunk)
    signature = content.signature()  # hashed up front: not part of any measurement
    stream_length = sum(32 + chunk.length for chunk in signature.chunks)
    references, each_fsync, ingests, commits, memory = [], [], [], [], []

    with tempfile.TemporaryDirectory(prefix="wopihost-bench-", dir=args.dir) as tmp:
        workdir = Path(tmp)
        server = LocalServer.start(
            workdir,
            args.database,
            workers=args.workers,
            extra_env={
                "WOPIHOST_CSPP_PLUS": "on",
                "WOPIHOST_MAX_FILE_SIZE": str(max(args.size, MIB)),
                "WOPIHOST_MAX_UPLOAD_SESSION_SIZE": str(max(2 * stream_length, MIB)),
            },
        )
        database = args.database.split(":", 1)[0] if args.database else "SQLite"  # never print credentials
        try:
            print(
                f"wopihost upload session: {args.size / MIB:g} MiB of content in {content.count} chunks "
                f"of {args.chunk / MIB:g} MiB, stream {stream_length / MIB:.1f} MiB in "
                f"{args.piece / MIB:g} MiB pieces; gunicorn {args.workers} workers (gthread), "
                f"database {database}, {os.cpu_count()} cores, {args.rounds} rounds"
            )
            print(f"  data directory on {file_system(server.data_dir)}")
            http = requests.Session()
            idle, idle_each = server.rss(), server.rss_each()
            for _ in range(args.rounds):
                # The reference, on the same file system as the server's data directory, in every round:
                # shared disks vary from minute to minute, and the fastest run of either kind is compared.
                seconds, _ = reference(content, signature, args.piece, workdir)
                references.append(stream_length / MIB / seconds)
                seconds, _ = reference(content, signature, args.piece, workdir, fsync_each=True)
                each_fsync.append(stream_length / MIB / seconds)
                ingest, commit, peaks = upload_round(server, http, content, signature, args.piece, workdir)
                ingests.append(stream_length / MIB / ingest)
                commits.append(stream_length / MIB / commit)
                memory.append(peaks)
            http.close()
        finally:
            server.stop()

    best_reference = max(references + each_fsync)

    def verdict(ok: bool) -> str:
        return "ok" if ok else "BELOW TARGET"

    def line(what: str, rates: list[float], compare: bool = True) -> None:
        best = max(rates)
        text = f"  {what:<44} best {best:8.1f} MiB/s, median {statistics.median(rates):8.1f}"
        if compare:
            text += (
                f"   {100 * best / best_reference:6.1f}% of the reference (median "
                f"{100 * statistics.median(rates) / best_reference:.1f}%; target >= 50%: "
                f"{verdict(best >= best_reference / 2)})"
            )
        print(text)

    print(
        "  runs, MiB/s: "
        + "; ".join(
            f"reference {r:.0f} / {e:.0f}, ingest {i:.0f}, commit {c:.0f}"
            for r, e, i, c in zip(references, each_fsync, ingests, commits)
        )
    )
    line("reference: write + spookyhash + one fsync", references, compare=False)
    line("reference: the same, an fsync after every piece", each_fsync, compare=False)
    print(f"  (the reference below is the fastest of both kinds: {best_reference:.1f} MiB/s)")
    line(f"ingest: {-(-stream_length // args.piece)} UpdateUploadSession calls", ingests)
    line("commit: PutChunkedFile", commits)
    peak = max(total for total, _ in memory)
    largest = max(one for _, one in memory)
    print(
        f"  server memory (RSS): idle {idle / MIB:.1f} MiB in all (master + {args.workers} workers, each at "
        f"most {max(idle_each) / MIB:.1f}); peak {peak / MIB:.1f} MiB in all (+{(peak - idle) / MIB:.1f}), "
        f"one process at most {largest / MIB:.1f} MiB; target: flat, under 100 MiB: "
        f"{verdict(peak - idle < 100 * MIB and largest < 100 * MIB)}"
    )
    sys.stdout.flush()


def upload_round(
    server: LocalServer, http: requests.Session, content: Content, signature: Signature, piece: int, workdir: Path
) -> tuple[float, float, tuple[int, int]]:
    """One session into a new file: seconds of ingest, seconds of commit, and the server's peak memory
    (all processes, largest process)."""
    path = workdir / "Bench.docx"
    path.write_bytes(b"before the upload session")
    file_id = server.add_file(path)["id"]
    url = server.url(file_id, server.token(file_id))
    expect(http.post(url, headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": LOCK}))
    sequence_number = expect(http.get(url)).json()["SequenceNumber"]
    session = expect(http.post(url, headers={"X-WOPI-Override": "CREATE_UPLOAD_SESSION"})).json()["UploadSessionToken"]

    ingest_seconds, offset = 0.0, 0
    with PeakRss(server, interval=0.05) as memory:
        for body in content.stream_pieces(signature, piece):
            headers = {
                "X-WOPI-Override": "UPDATE_UPLOAD_SESSION",
                "X-WOPI-UploadSessionToken": session,
                "X-WOPI-ContentRangeOffset": str(offset),
                "X-WOPI-ContentRangeLength": str(len(body)),
            }
            start = time.perf_counter()
            response = http.post(url, data=body, headers=headers)
            ingest_seconds += time.perf_counter() - start
            offset = int(expect(response).headers["X-WOPI-UploadSessionCurrentOffset"])

        body = put_chunked_body({"MainContent": signature}, session_token=session)
        start = time.perf_counter()
        response = http.post(
            url.replace("?", "/contents?"),
            data=body,
            headers={
                "X-WOPI-Override": "PUT_CHUNKED_FILE",
                "X-WOPI-SequenceNumber": str(sequence_number),
                "X-WOPI-Lock": LOCK,
            },
        )
        commit_seconds = time.perf_counter() - start
    expect(response)
    info = expect(http.get(url)).json()
    if info["Size"] != content.size:
        raise RuntimeError(f"after the commit the file has {info['Size']} bytes, not {content.size}")
    expect(http.post(url, headers={"X-WOPI-Override": "DELETE"}, data=b""), 409)  # locked: delete refused
    expect(http.post(url, headers={"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": LOCK}))
    expect(http.post(url, headers={"X-WOPI-Override": "DELETE"}))  # frees the disk for the next round
    return ingest_seconds, commit_seconds, (memory.peak, memory.largest)


if __name__ == "__main__":
    main()
