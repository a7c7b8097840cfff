"""Benchmark of the CSPP frame decoder and the zip chunker.

Prints, from one run:

* decode-and-hash throughput of an upload-session stream (Chunk frames) fed in pieces, each chunk's payload
  hashed as it arrives and its ChunkId checked at its end, beside spookyhash alone over the same pieces (the
  floor no correct decoder can beat), and the ratio of the two. Only the processing of each piece is timed:
  reading the pieces from the (page-cached) file is the same for both and left out. Best of --repeat runs.
* the decode loop's peak memory, two ways: tracemalloc's peak over the loop (every Python allocation, the
  pieces read included), and, in a fresh child process, the peak RSS over the loop (VmHWM, reset just before
  it through /proc/self/clear_refs) minus the RSS when it starts (whole process, C allocations included).
* zip chunking throughput: signature_of (find the chunks, read and hash them) on a zip written by zipfile,
  beside spookyhash alone over the same file read in the same pieces (reads included in both).

Data is generated in a temporary directory, removed at the end. Defaults are the acceptance sizes
(1 GiB stream of 4 MiB chunks in 1 MiB pieces, 200 MiB zip); use e.g. ``--size 64MiB --zip-size 16MiB`` for
a quick run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import spookyhash

from wopihost.cspp.chunkid import ChunkHasher, chunk_id
from wopihost.cspp.chunking import signature_of, zip_boundaries
from wopihost.cspp.frames import ChunkData, ChunkEnd, ChunkStart, FrameDecoder, chunk_frame

MiB = 1 << 20
_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": MiB, "GIB": 1 << 30}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([KMG]iB|B)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1GiB, 64MiB, 4096)")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").upper()]


def human(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 1024:.2f} KiB"


def gib_per_s(size: int, seconds: float) -> str:
    return f"{size / seconds / (1 << 30):7.2f} GiB/s"


def write_session_stream(path: Path, size: int, chunk_size: int) -> int:
    """Chunk frames carrying ``size`` payload bytes in chunks of ``chunk_size``; returns the chunk count."""
    block = bytearray(os.urandom(chunk_size))
    count = 0
    with path.open("wb") as f:
        for offset in range(0, size, chunk_size):
            payload = block[: min(chunk_size, size - offset)]
            struct.pack_into("<Q", payload, 0, count)  # every chunk distinct
            for piece in chunk_frame(chunk_id(payload), payload):
                f.write(piece)
            count += 1
    return count


def pieces_of(path: Path, piece_size: int):
    with path.open("rb", buffering=0) as f:
        while piece := f.read(piece_size):
            yield piece


def time_spookyhash(path: Path, piece_size: int) -> float:
    hasher = spookyhash.Hash128(None, 0, 0)
    elapsed = 0.0
    for piece in pieces_of(path, piece_size):
        start = time.perf_counter()
        hasher.update(piece)
        elapsed += time.perf_counter() - start
    hasher.final_pair()
    return elapsed


def decode_piece(decoder: FrameDecoder, piece: bytes, state: list) -> None:
    """The consumer the host will be: hash each payload piece as it arrives, check the ChunkId at the end."""
    for event in decoder.feed(piece):
        if type(event) is ChunkData:
            state[0].update(event.data)
        elif type(event) is ChunkStart:
            state[:] = [ChunkHasher(), event.chunk_id]
        elif type(event) is ChunkEnd:
            if state[0].raw() != state[1]:
                raise SystemExit("ChunkId mismatch: the benchmark data or the decoder is wrong")


def time_decoder(path: Path, piece_size: int, chunk_size: int) -> float:
    decoder = FrameDecoder("session", max_payload_size=chunk_size)
    state: list = [None, None]
    elapsed = 0.0
    for piece in pieces_of(path, piece_size):
        start = time.perf_counter()
        decode_piece(decoder, piece, state)
        elapsed += time.perf_counter() - start
    decoder.close()
    return elapsed


def decoder_tracemalloc_peak(path: Path, piece_size: int, chunk_size: int) -> int:
    decoder = FrameDecoder("session", max_payload_size=chunk_size)
    state: list = [None, None]
    tracemalloc.start()
    try:
        for piece in pieces_of(path, piece_size):
            decode_piece(decoder, piece, state)
        decoder.close()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def decoder_rss_growth(path: Path, piece_size: int, chunk_size: int) -> int | None:
    """Peak RSS growth over the decode loop, measured in a fresh child process (Linux only, else None)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child-rss", str(path), "--piece", str(piece_size), "--chunk", str(chunk_size)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)["growth"]


def _proc_status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match, field
    return int(match.group(1))


def child_rss(path: Path, piece_size: int, chunk_size: int) -> None:
    # ru_maxrss would include whatever peak the imports reached; resetting the high-water mark (VmHWM)
    # just before the loop measures the loop alone.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        print(json.dumps({"growth": None}))
        return
    before = _proc_status_kib("VmRSS")
    decoder = FrameDecoder("session", max_payload_size=chunk_size)
    state: list = [None, None]
    for piece in pieces_of(path, piece_size):
        decode_piece(decoder, piece, state)
    decoder.close()
    print(json.dumps({"growth": (_proc_status_kib("VmHWM") - before) * 1024}))


def write_zip(path: Path, size: int) -> int:
    """A zip of about ``size`` bytes shaped like a big Office file: media stored, XML parts deflated."""
    rng = random.Random(1)
    words = [bytes(rng.choice(b"abcdefghijklmnop") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    media = os.urandom(2 * MiB)
    entries = 0
    with zipfile.ZipFile(path, "w") as archive:
        while path.stat().st_size < size:
            if entries % 4:
                xml = b"<r>" + b" ".join(rng.choices(words, k=rng.randint(100, 20000))) + b"</r>"
                archive.writestr(f"xl/worksheets/sheet{entries}.xml", xml, zipfile.ZIP_DEFLATED)
            else:
                part = media[entries % 1024 :][: min(2 * MiB - 1024, size - path.stat().st_size)]
                archive.writestr(f"xl/media/image{entries}.png", part, zipfile.ZIP_STORED)
            entries += 1
    return entries


def time_zip(path: Path, piece_size: int, repeat: int) -> tuple[float, float, float, int]:
    """Best times of zip_boundaries, signature_of and spookyhash-alone over the file; and the chunk count."""
    best_bounds = best_signature = best_hash = float("inf")
    chunks = 0
    for _ in range(repeat):
        with path.open("rb") as f:
            start = time.perf_counter()
            bounds = zip_boundaries(f)
            best_bounds = min(best_bounds, time.perf_counter() - start)
            start = time.perf_counter()
            signature = signature_of(f)
            best_signature = min(best_signature, time.perf_counter() - start)
        assert bounds is not None and signature.scheme == "Zip"
        chunks = len(signature.chunks)
        start = time.perf_counter()
        hasher = spookyhash.Hash128(None, 0, 0)
        for piece in pieces_of(path, piece_size):
            hasher.update(piece)
        hasher.final_pair()
        best_hash = min(best_hash, time.perf_counter() - start)
    return best_bounds, best_signature, best_hash, chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="session stream payload (1GiB)")
    parser.add_argument("--chunk", type=parse_size, default=4 * MiB, help="chunk size (4MiB)")
    parser.add_argument("--piece", type=parse_size, default=MiB, help="piece size fed to the decoder (1MiB)")
    parser.add_argument("--zip-size", type=parse_size, default=200 * MiB, help="zip size (200MiB)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs, best kept (5)")
    parser.add_argument("--child-rss", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_rss(args.child_rss, args.piece, args.chunk)
        return

    tmp = Path(tempfile.mkdtemp(prefix="wopihost-bench-"))
    try:
        stream = tmp / "session.bin"
        count = write_session_stream(stream, args.size, args.chunk)
        stream_size = stream.stat().st_size
        for _ in pieces_of(stream, args.piece):  # warm the page cache
            pass
        hash_time = decode_time = float("inf")
        for _ in range(args.repeat):
            hash_time = min(hash_time, time_spookyhash(stream, args.piece))
            decode_time = min(decode_time, time_decoder(stream, args.piece, args.chunk))
        peak = decoder_tracemalloc_peak(stream, args.piece, args.chunk)
        rss_growth = decoder_rss_growth(stream, args.piece, args.chunk)
        ratio = hash_time / decode_time
        print(
            f"Upload-session stream: {human(stream_size)} ({count} Chunk frames of {human(args.chunk)}), "
            f"fed in pieces of {human(args.piece)}; best of {args.repeat}, file reads not timed"
        )
        print(f"  spookyhash alone over the same pieces : {gib_per_s(stream_size, hash_time)}")
        print(f"  decode + hash + ChunkId check         : {gib_per_s(stream_size, decode_time)}")
        print(f"  ratio (target >= 0.8)                 : {ratio:7.2f}")
        rss = "n/a" if rss_growth is None else human(rss_growth)
        print(
            f"  decoder peak memory (target < 64 MiB) : tracemalloc peak {human(peak)}; "
            f"peak RSS growth of a fresh process {rss}"
        )
        stream.unlink()

        archive = tmp / "big.zip"
        entries = write_zip(archive, args.zip_size)
        zip_size = archive.stat().st_size
        bounds_time, signature_time, file_hash_time, chunks = time_zip(archive, args.piece, args.repeat)
        print(
            f"Zip chunking: {human(zip_size)} zip, {entries} entries, {chunks} chunks; "
            f"best of {args.repeat}, file reads included"
        )
        print(f"  zip_boundaries (EOCD, CD, local headers) : {bounds_time * 1000:7.1f} ms")
        print(f"  signature_of (chunk + hash)              : {gib_per_s(zip_size, signature_time)}")
        print(f"  spookyhash alone over the file           : {gib_per_s(zip_size, file_hash_time)}")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
