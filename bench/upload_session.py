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

* commit time, median and best, of a small session (--small, 8 MiB of content by default, one
  UpdateUploadSession) uploaded into a new file in every round beside the large one, and of the large one: a
  commit that writes no content should take about as long whatever the size (target: the large session's
  median within twice the small one's plus 50 ms).

Targets (from the issue): ingest and commit each at least 50% of the reference, and server memory growth
under 100 MiB whatever the size. Client and server share this machine's cores.

--storage local,s3 runs one server per storage (bench/storages.py says how S3 is reached: --s3-url, or a
throwaway Ceph RGW started and stopped by the run), and each round measures every storage in turn, in the
other order every other round. On S3 the reference is not a file but plain boto3 requests to the same bucket in
the same round: one PutObject of the small session's stream, and the large stream as an explicit multipart
upload of 8 MiB parts (wopihost's part size) sent one after another, as wopihost sends them; only the requests
are timed. The ratios are the best ingest against the best raw PUT of the same size (target: at least 70%),
medians beside. "other load" is the CPU, in cores, that processes other than this run's (the servers,
their workers and the Ceph daemons are this run's) used during each round: other people's work on a shared
machine.

The content is made deterministically and cheaply (one random buffer from a fixed seed; every chunk gets its
own 16-byte head and a different slice of it, so ChunkIds differ), and its making is left out of every timed
region: each request (and each reference write) is timed on its own, the piece already built. The temporary
directory is removed at the end.

    python bench/upload_session.py [--size 1GiB] [--small 8MiB] [--piece 10MiB] [--chunk 4MiB] [--rounds 3]
                                   [--workers 2] [--database URL] [--storage local,s3] [--s3-url s3://bucket/prefix]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
import spookyhash
import storages  # bench/storages.py, beside this script

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
        "--small",
        type=parse_size,
        default=parse_size("8MiB"),
        help="content size of the small session uploaded in every round beside the large one (default 8MiB)",
    )
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
    storages.add_arguments(parser)
    args = parser.parse_args()
    if args.size <= 0 or args.small <= 0 or args.piece <= 0 or args.chunk <= 0 or args.rounds <= 0:
        parser.error("sizes and rounds must be positive")

    sessions = {"large": Content(args.size, args.chunk), "small": Content(args.small, args.chunk)}
    signatures = {kind: content.signature() for kind, content in sessions.items()}  # not part of any measurement
    streams = {kind: sum(32 + chunk.length for chunk in signatures[kind].chunks) for kind in sessions}
    content, signature, stream_length = sessions["large"], signatures["large"], streams["large"]
    small_stream = b"".join(sessions["small"].stream_pieces(signatures["small"], args.piece))
    results: dict[str, Results] = {}
    other_load: list[float] = []
    database = args.database.split(":", 1)[0] if args.database else "SQLite"  # never print credentials

    with tempfile.TemporaryDirectory(prefix="wopihost-bench-", dir=args.dir) as tmp:
        with storages.storages(args.storage, args.s3_url, Path(tmp)) as kinds, contextlib.ExitStack() as stack:
            servers: dict[str, tuple[storages.Storage, LocalServer, Path]] = {}
            for storage in kinds:
                workdir = Path(tmp) / storage.name
                workdir.mkdir()
                server = LocalServer.start(
                    workdir,
                    args.database,
                    workers=args.workers,
                    extra_env={
                        "WOPIHOST_CSPP_PLUS": "on",
                        "WOPIHOST_MAX_FILE_SIZE": str(max(args.size, args.small, MIB)),
                        "WOPIHOST_MAX_UPLOAD_SESSION_SIZE": str(max(2 * stream_length, 2 * streams["small"], MIB)),
                        **storage.env,
                    },
                )
                stack.callback(server.stop)
                servers[storage.name] = (storage, server, workdir)
                results[storage.name] = Results(idle=server.rss(), idle_each=server.rss_each())
            print(
                f"wopihost upload session: {args.size / MIB:g} MiB of content in {content.count} chunks "
                f"of {args.chunk / MIB:g} MiB, stream {stream_length / MIB:.1f} MiB in "
                f"{args.piece / MIB:g} MiB pieces; gunicorn {args.workers} workers (gthread), "
                f"database {database}, {os.cpu_count()} cores, {args.rounds} rounds"
                + (f"; storage {', '.join(servers)}, measured in turns" if args.storage != ["local"] else "")
            )
            print(
                f"  beside it in every round, a small session: {args.small / MIB:g} MiB of content, stream "
                f"{streams['small'] / MIB:.1f} MiB"
            )
            http = requests.Session()
            load = storages.OtherLoad()
            for number in range(args.rounds):
                # in turns, each round in the other order, so that every storage meets the same load from the
                # rest of the machine
                for storage, server, workdir in list(servers.values())[:: -1 if number % 2 else 1]:
                    result = results[storage.name]
                    if storage.raw is None:
                        # The reference, on the same file system as the server's data directory, in every round:
                        # shared disks vary from minute to minute, and the fastest run of either kind is compared.
                        seconds, _ = reference(content, signature, args.piece, workdir)
                        result.references.append(stream_length / MIB / seconds)
                        seconds, _ = reference(content, signature, args.piece, workdir, fsync_each=True)
                        result.each_fsync.append(stream_length / MIB / seconds)
                    else:
                        seconds, key = storage.raw.put(small_stream)
                        result.raw_small.append(len(small_stream) / MIB / seconds)
                        storage.raw.delete(key)
                        seconds, key = storage.raw.put_multipart(content.stream_pieces(signature, args.piece))
                        result.raw_large.append(stream_length / MIB / seconds)
                        storage.raw.delete(key)
                    for kind in ("large", "small"):
                        ingest, commit, peaks = upload_round(
                            server, http, sessions[kind], signatures[kind], args.piece, workdir
                        )
                        result.ingests[kind].append(streams[kind] / MIB / ingest)
                        result.commit_seconds[kind].append(commit)
                        result.memory.append(peaks)
                other_load.append(load.take())
            http.close()

    print(
        f"  other load (CPU of processes not this run's, in cores of {os.cpu_count()}), each round: "
        + ", ".join(f"{cores:.2f}" for cores in other_load)
    )
    for name, result in results.items():
        storage = servers[name][0]
        if len(results) > 1 or storage.raw is not None:
            print(f"[{name}] {storage.description}")
        if storage.raw is None:
            print(f"  data directory on {file_system(servers[name][1].data_dir)}")
            report_local(result, args, stream_length, -(-stream_length // args.piece))
        else:
            report_s3(result, args, stream_length, len(small_stream), -(-stream_length // args.piece))
    sys.stdout.flush()


@dataclass
class Results:
    """One storage's figures, a value per round: MiB/s but for commit_seconds."""

    idle: int
    idle_each: list[int]
    references: list[float] = field(default_factory=list)
    each_fsync: list[float] = field(default_factory=list)
    raw_small: list[float] = field(default_factory=list)
    raw_large: list[float] = field(default_factory=list)
    ingests: dict[str, list[float]] = field(default_factory=lambda: {"large": [], "small": []})
    commit_seconds: dict[str, list[float]] = field(default_factory=lambda: {"large": [], "small": []})
    memory: list[tuple[int, int]] = field(default_factory=list)


def verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


def rates_line(what: str, rates: list[float], against: float | None = None, target: float = 0.5, of: str = "") -> None:
    """`what`'s best and median MiB/s; against a reference, the best as a share of it (the strictest comparison:
    the reference is the fastest run) and the median's."""
    best = max(rates)
    text = f"  {what:<44} best {best:8.1f} MiB/s, median {statistics.median(rates):8.1f}"
    if against is not None:
        text += (
            f"   {100 * best / against:6.1f}% of {of or 'the reference'} (median "
            f"{100 * statistics.median(rates) / against:.1f}%; target >= {100 * target:.0f}%: "
            f"{verdict(best >= against * target)})"
        )
    print(text)


def report_commit_times(result: Results, args) -> None:
    """Commit time of the small and the large session: a commit writes no content, so it should not grow with
    the session's size (target: the large one's median within twice the small one's, plus 50 ms)."""
    small, large = (statistics.median(result.commit_seconds[kind]) for kind in ("small", "large"))
    print(
        f"  {'commit time, median (best):':<44} {args.small / MIB:g} MiB session {1e3 * small:.0f} ms "
        f"({1e3 * min(result.commit_seconds['small']):.0f}), {args.size / MIB:g} MiB session {1e3 * large:.0f} ms "
        f"({1e3 * min(result.commit_seconds['large']):.0f}): x{large / small:.2f} for x{args.size / args.small:g} "
        f"the size; independent of size (<= 2x + 50 ms): {verdict(large <= 2 * small + 0.05)}"
    )


def report_memory(result: Results, args) -> None:
    peak = max(total for total, _ in result.memory)
    largest = max(one for _, one in result.memory)
    print(
        f"  server memory (RSS): idle {result.idle / MIB:.1f} MiB in all (master + {args.workers} workers, each at "
        f"most {max(result.idle_each) / MIB:.1f}); peak {peak / MIB:.1f} MiB in all "
        f"(+{(peak - result.idle) / MIB:.1f}), one process at most {largest / MIB:.1f} MiB; target: flat, under "
        f"100 MiB: {verdict(peak - result.idle < 100 * MIB and largest < 100 * MIB)}"
    )


def report_local(result: Results, args, stream_length: int, calls: int) -> None:
    commits = [stream_length / MIB / seconds for seconds in result.commit_seconds["large"]]
    best_reference = max(result.references + result.each_fsync)
    print(
        "  runs, MiB/s: "
        + "; ".join(
            f"reference {r:.0f} / {e:.0f}, ingest {i:.0f}, commit {c:.0f}"
            for r, e, i, c in zip(result.references, result.each_fsync, result.ingests["large"], commits)
        )
    )
    rates_line("reference: write + spookyhash + one fsync", result.references)
    rates_line("reference: the same, an fsync after every piece", result.each_fsync)
    print(f"  (the reference below is the fastest of both kinds: {best_reference:.1f} MiB/s)")
    rates_line(f"ingest: {calls} UpdateUploadSession calls", result.ingests["large"], best_reference)
    rates_line("commit: PutChunkedFile", commits, best_reference)
    rates_line(f"ingest of the {args.small / MIB:g} MiB session", result.ingests["small"])
    report_commit_times(result, args)
    report_memory(result, args)


def report_s3(result: Results, args, stream_length: int, small_length: int, calls: int) -> None:
    print(
        "  runs, MiB/s: "
        + "; ".join(
            f"raw PUT {rs:.0f} / {rl:.0f}, ingest {s:.0f} / {i:.0f}"
            for rs, rl, s, i in zip(
                result.raw_small, result.raw_large, result.ingests["small"], result.ingests["large"]
            )
        )
        + " (small / large session)"
    )
    rates_line(f"raw boto3: one PutObject of {small_length / MIB:.1f} MiB", result.raw_small)
    rates_line(f"raw boto3: multipart of {stream_length / MIB:.1f} MiB", result.raw_large)
    print(
        f"  (explicit multipart: {storages.PART / MIB:g} MiB parts sent one after another as wopihost sends them, "
        "only the requests timed)"
    )
    rates_line(
        f"ingest: {calls} UpdateUploadSession calls",
        result.ingests["large"],
        max(result.raw_large),
        0.7,
        "the raw multipart PUT",
    )
    rates_line(
        f"ingest of the {args.small / MIB:g} MiB session",
        result.ingests["small"],
        max(result.raw_small),
        0.7,
        "the raw PutObject",
    )
    rates_line("commit: PutChunkedFile", [stream_length / MIB / seconds for seconds in result.commit_seconds["large"]])
    report_commit_times(result, args)
    report_memory(result, args)


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
