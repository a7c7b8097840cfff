"""What SQLite's page cache size (WOPIHOST_SQLITE_CACHE_SIZE) costs and saves, on a database larger than the caches.

Each SQLite connection has a page cache of its own, and each of a worker's threads keeps a connection: the
cache is paid once per thread. The benchmark database of bench/compare.py is a few hundred kilobytes, which
every cache holds whole, so it cannot show this. Here the database gets --files rows in `files` (copies of
one real file's row under new ids, written with SQL: adding them one by one through wopihost would take
hours), and --tokens of them get a token each. Then, for each cache size in turn, in interleaved rounds,
wopihost serves CheckFileInfo of a random one of those files per request (wrk with a Lua script), and this
prints its rate, its CPU per request (user+system of the whole process tree), its read syscalls per request
(/proc/<pid>/io's syscr: SQLite reading pages from the system's page cache, beside the server's other reads)
and the memory the server holds: PSS before and after the load, and how much of the growth is newly allocated
memory.

    python bench/sqlite_cache.py [--sizes 2MiB,512KiB,256KiB] [--files 200000] [--tokens 1000]
                                 [--threads 16] [--connections 32] [--seconds 8] [--rounds 3]

2MiB is SQLite's own default, what every connection had before the setting; 512KiB is wopihost's default.
Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
import statistics
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import compare  # bench/compare.py, beside this script: how a server's process tree is read
from compare import MIB

from wopihost.config import Settings, parse_size
from wopihost.localserver import WOPIHOST, LocalServer
from wopihost.services import Services


def build_database(work: Path, files: int, tokens: int) -> list[str]:
    """A data directory under `work` whose database has `files` files; the CheckFileInfo paths of `tokens`."""
    env = {"WOPIHOST_DATA_DIR": str(work / "data")}
    subprocess.run([*WOPIHOST, "db", "upgrade"], env=env, check=True, capture_output=True)
    services = Services.create(Settings.from_env(env))
    try:
        first = services.add_file("bench", "sample.docx", io.BytesIO(b"x" * 10_000))
        path = services.settings.database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            columns = [row[1] for row in db.execute("PRAGMA table_info(files)")]
            fresh = {
                "id": "lower(hex(randomblob(11)))",
                "name": "'f' || n || '.docx'",
                "name_key": "'f' || n || '.docx'",
            }
            select = ", ".join(fresh.get(c, c) for c in columns)
            db.execute(
                f"INSERT INTO files ({', '.join(columns)}) "
                f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?) "
                f"SELECT {select} FROM seq, (SELECT * FROM files WHERE id = ?)",
                (files - 1, first.id),
            )
            chosen = [row[0] for row in db.execute("SELECT id FROM files ORDER BY random() LIMIT ?", (tokens,))]
        expires = services.clock.now() + timedelta(days=1)
        return [
            f"/wopi/files/{file_id}?access_token={services.issue_token(file_id, 'bench', True, expires).token}"
            for file_id in chosen
        ]
    finally:
        services.db.dispose()


def reading(pid: int) -> dict:
    """The server's process tree as compare.py reads it (memory, CPU), with its read syscalls."""
    return {
        **compare.tree_memory(pid),
        "cpu": compare.tree_cpu(pid)[0],
        "reads": sum(proc.io_counters().read_count for proc in compare.tree(pid)),
    }


def run(work: Path, size: int, lua: Path, args) -> dict:
    server = LocalServer.start(work, None, threads=args.threads, extra_env={"WOPIHOST_SQLITE_CACHE_SIZE": str(size)})
    try:
        time.sleep(1)
        before = reading(server.process.pid)
        out = subprocess.run(
            ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "-s", str(lua), server.base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        during = reading(server.process.pid)
        time.sleep(1.5)
        after = reading(server.process.pid)
    finally:
        server.stop()
    requests = int(next(line for line in out.splitlines() if "requests in" in line).split()[0])
    if "Non-2xx" in out:
        raise RuntimeError(f"answers other than 2xx:\n{out}")
    return {
        "rate": requests / args.seconds,
        "cpu_ms": 1000 * (during["cpu"] - before["cpu"]) / requests,
        "reads": (during["reads"] - before["reads"]) / requests,
        "pss_before": before["pss"] / MIB,
        "pss_after": after["pss"] / MIB,
        "allocated": (after["anon"] - before["anon"]) / MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2MiB,512KiB,256KiB", help="cache sizes, comma-separated")
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--tokens", type=int, default=1000, help="files the load picks from at random")
    parser.add_argument("--threads", type=int, default=16, help="threads per worker (2 workers)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="wopihost-cache-") as tmp:
        work = Path(tmp)
        paths = build_database(work, args.files, args.tokens)
        db_size = (work / "data" / "wopihost.sqlite3").stat().st_size / MIB
        lua = work / "random.lua"
        lua.write_text(
            f"paths = {{{', '.join(json.dumps(p) for p in paths)}}}\n"
            "request = function() return wrk.format('GET', paths[math.random(#paths)]) end\n"
        )
        print(
            f"database {db_size:.0f} MiB, {args.files} files, load on {args.tokens} of them at random; "
            f"2 workers x {args.threads} threads, wrk {args.connections} connections, {args.seconds} s, "
            f"{args.rounds} interleaved rounds; medians (min-max)"
        )
        results: dict[str, list[dict]] = {size: [] for size in sizes}
        for _ in range(args.rounds):
            for size in sizes:
                results[size].append(run(work, parse_size(size), lua, args))
        columns = ("rate", "cpu_ms", "reads", "pss_before", "pss_after", "allocated")
        print(f"{'cache':>8}" + "".join(f"  {c:>22}" for c in columns))
        for size, runs in results.items():
            cells = []
            for column in columns:
                values = [r[column] for r in runs]
                cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
            print(f"{size:>8}" + "".join(f"  {c:>22}" for c in cells))
        print("(rate: requests/s; cpu_ms: server CPU per request; reads: read syscalls per request;")
        print(" pss_before/after: MiB; allocated: MiB of anonymous memory added by the load)")


if __name__ == "__main__":
    main()
