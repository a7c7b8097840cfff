"""Throughput of the core WOPI operations against a real gunicorn server on loopback.

Prints requests per second for CheckFileInfo, GetFile (1 MiB and 20 MiB) and
Lock/Unlock pairs, and the server's peak resident memory (master + workers,
sampled every 20 ms). Client and server share this machine's cores, so the
figures are a floor for a server with the machine to itself.

    python bench/core_ops.py [--seconds 5] [--clients 8] [--workers 2] [--database URL]
"""

from __future__ import annotations

import argparse
import itertools
import os
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
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="wopihost-bench-") as tmp:
        workdir = Path(tmp)
        server = LocalServer.start(workdir, args.database, workers=args.workers)
        try:
            files = {}
            for label, size in [("small", 10_000), ("1MiB", MIB), ("20MiB", 20 * MIB)]:
                path = workdir / f"{label}.docx"
                path.write_bytes(os.urandom(size))
                file_id = server.add_file(path)["id"]
                files[label] = server.url(file_id, server.token(file_id))
            idle = server.rss()

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
            for i in range(args.clients):
                path = workdir / f"lock{i}.docx"
                path.write_bytes(b"x")
                file_id = server.add_file(path)["id"]
                lock_urls.append(server.url(file_id, server.token(file_id)))
            lock_ids = itertools.count()

            def lock_unlock(session, i):
                lock_id = f"bench-{next(lock_ids)}"
                expect(session.post(lock_urls[i], headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": lock_id}))
                expect(session.post(lock_urls[i], headers={"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": lock_id}))

            print(
                f"wopihost core operations: gunicorn {args.workers} workers (gthread), {args.clients} client "
                f"threads, {args.seconds:g} s each, database {args.database or 'SQLite'}, {os.cpu_count()} cores"
            )
            with PeakRss(server) as memory:
                for label, one in [
                    ("CheckFileInfo", check_file_info),
                    ("GetFile 1 MiB", get_file(files["1MiB"])),
                    ("GetFile 20 MiB", get_file(files["20MiB"])),
                    ("Lock+Unlock pairs", lock_unlock),
                ]:
                    rate = run_for(args.seconds, args.clients, one)
                    extra = ""
                    if label.startswith("GetFile"):
                        size = MIB if "1 MiB" in label else 20 * MIB
                        extra = f"  ({rate * size / MIB:8.1f} MiB/s)"
                    print(f"  {label:<20} {rate:9.1f} /s{extra}")
            print(
                f"  server memory: idle {idle / MIB:.1f} MiB, peak {memory.peak / MIB:.1f} MiB "
                f"(master + {args.workers} workers, RSS)"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
