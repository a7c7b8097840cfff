"""Throughput of the core WOPI operations against a real gunicorn server on loopback.

Prints requests per second for CheckFileInfo, GetFile (1 MiB and 20 MiB) and
Lock/Unlock pairs, and the server's peak resident memory (master + workers,
sampled every 20 ms). Client and server share this machine's cores, so the
figures are a floor for a server with the machine to itself.

    python bench/core_ops.py [--seconds 5] [--clients 8] [--workers 2] [--database URL] [--record] [--rounds N]

--record starts a second server with `serve --record` and measures the two in turns, each operation `--rounds`
times on each: what recording costs, under the same load from the rest of the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from wopihost.localserver import LocalServer, PeakRss

MIB = 1 << 20


def run_for(seconds: float, clients: int, one_request) -> float:
    """Requests per second when `clients` threads call one_request(session) back to back."""
    deadline = time.monotonic() + seconds
    counts = [0] * clients

    def client(i: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                one_request(session, i)
                counts[i] += 1

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return sum(counts) / (time.monotonic() - start)


def expect(response: requests.Response, status: int = 200) -> None:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.status_code}: {response.headers.get('X-WOPI-FailureReason')}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--database", help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument(
        "--record",
        action="store_true",
        help="a second server, started with `serve --record`, measured in turns with the first: what recording costs",
    )
    parser.add_argument("--rounds", type=int, default=1, help="measurements of each operation on each server (median)")
    args = parser.parse_args()

    print(
        f"wopihost core operations: gunicorn {args.workers} workers (gthread), {args.clients} client "
        f"threads, {args.seconds:g} s each, median of {args.rounds}, database {args.database or 'SQLite'}, "
        f"{os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory(prefix="wopihost-bench-") as tmp:
        with contextlib.ExitStack() as stack:
            servers: dict[str, LocalServer] = {}
            for name in ["served", "recorded"] if args.record else ["served"]:
                workdir = Path(tmp) / name
                workdir.mkdir()
                record = ("--record", str(workdir / "recording")) if name == "recorded" else ()
                server = LocalServer.start(workdir, args.database, workers=args.workers, serve_args=record)
                stack.callback(server.stop, 600)  # a recording is assembled as its server stops
                servers[name] = server
            operations = {name: prepare(server, Path(tmp) / name, args.clients) for name, server in servers.items()}
            idle = {name: server.rss() for name, server in servers.items()}
            memory = {name: stack.enter_context(PeakRss(server)) for name, server in servers.items()}
            if args.record:
                print(f"  {'':<20} {'served':>12} {'with --record':>14} {'change':>7}")
            for label, size in OPERATIONS:
                rates: dict[str, list[float]] = {name: [] for name in servers}
                for _ in range(args.rounds):
                    for name in servers:  # in turns, so that both meet the same load from the rest of the machine
                        rates[name].append(run_for(args.seconds, args.clients, operations[name][label]))
                median = {name: statistics.median(values) for name, values in rates.items()}
                line = f"  {label:<20} {median['served']:9.1f} /s"
                if args.record:
                    change = median["recorded"] / median["served"] - 1
                    line += f" {median['recorded']:11.1f} /s {change:+7.0%}"
                elif size:
                    line += f"  ({median['served'] * size / MIB:8.1f} MiB/s)"
                print(line)
            for name in servers:
                print(
                    f"  server memory{' (' + name + ')' if args.record else ''}: idle {idle[name] / MIB:.1f} MiB, "
                    f"peak {memory[name].peak / MIB:.1f} MiB (master + {args.workers} workers, RSS)"
                )
        if args.record:
            record = Path(tmp) / "recorded" / "recording"
            print(f"  (the recording was written as its server stopped: {recording_size(record)})")


OPERATIONS = [("CheckFileInfo", 0), ("GetFile 1 MiB", MIB), ("GetFile 20 MiB", 20 * MIB), ("Lock+Unlock pairs", 0)]


def prepare(server: LocalServer, workdir: Path, clients: int) -> dict:
    """The requests of each operation (OPERATIONS), on documents made on `server`."""
    files = {}
    for label, size in [("small", 10_000), ("1MiB", MIB), ("20MiB", 20 * MIB)]:
        path = workdir / f"{label}.docx"
        path.write_bytes(os.urandom(size))
        file_id = server.add_file(path)["id"]
        files[label] = server.url(file_id, server.token(file_id))

    def check_file_info(session, _):
        expect(session.get(files["small"]))

    def get_file(url):
        def one(session, _):
            with session.get(url.replace("?", "/contents?"), stream=True) as response:
                expect(response)
                for _ in response.iter_content(MIB):
                    pass

        return one

    # Each client locks and unlocks its own file, so every pair succeeds.
    lock_urls = []
    for i in range(clients):
        path = workdir / f"lock{i}.docx"
        path.write_bytes(b"x")
        file_id = server.add_file(path)["id"]
        lock_urls.append(server.url(file_id, server.token(file_id)))
    lock_ids = itertools.count()

    def lock_unlock(session, i):
        lock_id = f"bench-{next(lock_ids)}"
        expect(session.post(lock_urls[i], headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": lock_id}))
        expect(session.post(lock_urls[i], headers={"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": lock_id}))

    return {
        "CheckFileInfo": check_file_info,
        "GetFile 1 MiB": get_file(files["1MiB"]),
        "GetFile 20 MiB": get_file(files["20MiB"]),
        "Lock+Unlock pairs": lock_unlock,
    }


def recording_size(record: Path) -> str:
    hars = list(record.glob("*.har"))
    return f"{len(hars)} HAR files, {sum(p.stat().st_size for p in hars) / MIB:.1f} MiB"


if __name__ == "__main__":
    main()
