"""Throughput of a CSPP Plus upload session against a real gunicorn server on loopback.

Prints, from one run:

* ingest: an upload-session stream (Chunk frames of --chunk bytes, --size of content in all) pushed with
  UpdateUploadSession calls of --piece bytes, back to back from one client; MiB/s of stream bytes;
* commit: the PutChunkedFile that commits it; MiB/s = session bytes / the request's wall time;
* the server's peak memory (RSS of master + workers, sampled every 20 ms in a thread) during each, beside its
  RSS when idle;
* a reference measured in the same run: the same bytes, in the same pieces, written by one process to a
  file on the same file system as the server's data directory and hashed with spookyhash (Hash128,
  incremental), then fsynced once; and the ratios ingest/reference and commit/reference. For comparison
  only, the same with an fsync after every piece (as the server does for each UpdateUploadSession).

Targets (from the issue): ingest and commit each at least 50% of the reference, and server memory growth
under 100 MiB whatever the size. Client and server share this machine's cores.

The content is made deterministically and cheaply (one random buffer from a fixed seed; every chunk gets its
own 16-byte head and a different slice of it, so ChunkIds differ), and its making is left out of every timed
region: each request (and each reference write) is timed on its own, the piece already built. The temporary
directory is removed at the end.

    python bench/upload_session.py [--size 1GiB] [--piece 10MiB] [--chunk 4MiB] [--workers 2] [--database URL]
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

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
        return struct.pack(">QQ", i, self.size) + self._base[start + 16:start + self.length(i)]

    def signature(self) -> Signature:
        return Signature("FullFile", tuple(ChunkSignature(chunk_id(self.payload(i)), self.length(i))
                                           for i in range(self.count)))

    def stream_pieces(self, signature: Signature, piece: int) -> Iterator[bytes]:
        """The upload-session stream (one Chunk frame per chunk) in `piece`-byte pieces, cut anywhere."""
        frames = (part for i, chunk in enumerate(signature.chunks)
                  for part in chunk_frame(chunk.chunk_id, self.payload(i)))
        return rechunk(frames, piece)

def expect(response: requests.Response, status: int = 200) -> requests.Response:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.headers.get('X-WOPI-Override')} {response.status_code}: "
                           f"{response.headers.get('X-WOPI-FailureReason')}")
    return response


def reference(content: Content, signature: Signature, piece: int, directory: Path,
              fsync_each: bool = False) -> tuple[float, int]:
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
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                        help="content size (default 1GiB)")
    parser.add_argument("--piece", type=parse_size, default=parse_size("10MiB"),
                        help="bytes per UpdateUploadSession call (default 10MiB)")
    parser.add_argument("--chunk", type=parse_size, default=parse_size("4MiB"),
                        help="chunk size (default 4MiB)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--database", help="database URL (default: SQLite in the temporary directory)")
    parser.add_argument("--dir", help="where to make the temporary directory (default: the system's)")
    args = parser.parse_args()
    if args.size <= 0 or args.piece <= 0 or args.chunk <= 0:
        parser.error("sizes must be positive")

    content = Content(args.size, args.chunk)
    signature = content.signature()  # hashed up front: not part of any measurement
    stream_length = sum(32 + chunk.length for chunk in signature.chunks)

    with tempfile.TemporaryDirectory(prefix="wopihost-bench-", dir=args.dir) as tmp:
        workdir = Path(tmp)
        server = LocalServer.start(workdir, args.database, workers=args.workers, extra_env={
            "WOPIHOST_CSPP_PLUS": "on",
            "WOPIHOST_MAX_FILE_SIZE": str(max(args.size, MIB)),
            "WOPIHOST_MAX_UPLOAD_SESSION_SIZE": str(max(2 * stream_length, MIB)),
        })
        database = args.database.split(":", 1)[0] if args.database else "SQLite"  # never print credentials
        try:
            print(f"wopihost upload session: {args.size / MIB:g} MiB of content in {content.count} chunks "
                  f"of {args.chunk / MIB:g} MiB, stream {stream_length / MIB:.1f} MiB in "
                  f"{args.piece / MIB:g} MiB pieces; gunicorn {args.workers} workers (gthread), "
                  f"database {database}, {os.cpu_count()} cores")
            print(f"  data directory on {file_system(server.data_dir)}")

            # The reference first, on the same file system as the server's data directory.
            ref_seconds, ref_bytes = reference(content, signature, args.piece, workdir)
            ref_rate = ref_bytes / MIB / ref_seconds
            each_seconds, _ = reference(content, signature, args.piece, workdir, fsync_each=True)
            each_rate = ref_bytes / MIB / each_seconds

            path = workdir / "Bench.docx"
            path.write_bytes(b"before the upload session")
            file_id = server.add_file(path)["id"]
            url = server.url(file_id, server.token(file_id))
            http = requests.Session()
            expect(http.post(url, headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": LOCK}))
            sequence_number = expect(http.get(url)).json()["SequenceNumber"]
            session = expect(http.post(url, headers={"X-WOPI-Override": "CREATE_UPLOAD_SESSION"})).json()[
                "UploadSessionToken"]
            idle = server.rss()

            ingest_seconds, offset, calls = 0.0, 0, 0
            with PeakRss(server) as ingest_memory:
                for body in content.stream_pieces(signature, args.piece):
                    headers = {"X-WOPI-Override": "UPDATE_UPLOAD_SESSION",
                               "X-WOPI-UploadSessionToken": session,
                               "X-WOPI-ContentRangeOffset": str(offset),
                               "X-WOPI-ContentRangeLength": str(len(body))}
                    start = time.perf_counter()
                    response = http.post(url, data=body, headers=headers)
                    ingest_seconds += time.perf_counter() - start
                    offset = int(expect(response).headers["X-WOPI-UploadSessionCurrentOffset"])
                    calls += 1
            assert offset == stream_length, (offset, stream_length)

            body = put_chunked_body({"MainContent": signature}, session_token=session)
            with PeakRss(server) as commit_memory:
                start = time.perf_counter()
                response = http.post(url.replace("?", "/contents?"), data=body, headers={
                    "X-WOPI-Override": "PUT_CHUNKED_FILE", "X-WOPI-SequenceNumber": str(sequence_number),
                    "X-WOPI-Lock": LOCK})
                commit_seconds = time.perf_counter() - start
            expect(response)
            info = expect(http.get(url)).json()
            if info["Size"] != args.size:
                raise RuntimeError(f"after the commit the file has {info['Size']} bytes, not {args.size}")
            http.close()
        finally:
            server.stop()

    ingest_rate = stream_length / MIB / ingest_seconds
    commit_rate = stream_length / MIB / commit_seconds
    peak_growth = max(ingest_memory.peak, commit_memory.peak) - idle

    def verdict(ok: bool) -> str:
        return "ok" if ok else "BELOW TARGET"

    def against_reference(rate: float) -> str:
        return f"{100 * rate / ref_rate:5.1f}% of reference (target >= 50%: {verdict(rate >= ref_rate / 2)})"

    print(f"  reference: write + spookyhash + one fsync  {ref_rate:9.1f} MiB/s  ({ref_seconds:.2f} s)")
    print(f"  (for comparison, an fsync after every piece: {each_rate:.1f} MiB/s, {each_seconds:.2f} s)")
    print(f"  ingest: {calls} UpdateUploadSession calls  {ingest_rate:9.1f} MiB/s  ({ingest_seconds:.2f} s)  "
          f"{against_reference(ingest_rate)}")
    print(f"  commit: PutChunkedFile                     {commit_rate:9.1f} MiB/s  ({commit_seconds:.2f} s)  "
          f"{against_reference(commit_rate)}")
    ingest_growth, commit_growth = ingest_memory.peak - idle, commit_memory.peak - idle
    print(f"  server memory (master + {args.workers} workers, RSS): idle {idle / MIB:.1f} MiB, "
          f"peak during ingest {ingest_memory.peak / MIB:.1f} MiB (+{ingest_growth / MIB:.1f}), "
          f"during commit {commit_memory.peak / MIB:.1f} MiB (+{commit_growth / MIB:.1f}); "
          f"growth target < 100 MiB: {verdict(peak_growth < 100 * MIB)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
