"""Throughput of the core WOPI operations against a real gunicorn server on loopback.

Prints requests per second for CheckFileInfo, GetFile (1 MiB and 20 MiB),
PutFile (1 MiB, each client to a file of its own, locked) and Lock/Unlock pairs,
and the server's peak resident memory (master + workers, sampled every 20 ms).
Client and server share this machine's cores, so the figures are a floor for a
server with the machine to itself.

    python bench/core_ops.py [--seconds 5] [--clients 8] [--workers 2] [--database URL] [--record] [--rounds N]
                             [--storage local,s3] [--s3-url s3://bucket/prefix]

--record starts a second server with `serve --record` and measures the two in turns, each operation `--rounds`
times on each: what recording costs, under the same load from the rest of the machine.

--storage local,s3 starts one server per storage (bench/storages.py: --s3-url, or a throwaway Ceph RGW started
and stopped by the run), measured in turns, a column each. On S3, a column "raw boto3" measures in the same
turns, with the same client threads, plain boto3 requests to the same bucket: one GET of an object of 1 MiB or
20 MiB, streamed and read in 1 MiB pieces, and a PutObject of 1 MiB; GetFile 20 MiB is then given as a share of
the raw GET (target: at least 70%). "other load" is the CPU, in cores, that processes other than this run's
used while each operation was measured: other people's work on a shared machine.
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
import storages  # bench/storages.py, beside this script

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
    storages.add_arguments(parser)
    args = parser.parse_args()

    database = args.database.split(":", 1)[0] if args.database else "SQLite"  # never print credentials
    print(
        f"wopihost core operations: gunicorn {args.workers} workers (gthread), {args.clients} client "
        f"threads, {args.seconds:g} s each, median of {args.rounds}, database {database}, "
        f"{os.cpu_count()} cores"
        + (f"; storage {', '.join(args.storage)}, measured in turns" if args.storage != ["local"] else "")
    )
    with tempfile.TemporaryDirectory(prefix="wopihost-bench-") as tmp:
        with storages.storages(args.storage, args.s3_url, Path(tmp)) as kinds, contextlib.ExitStack() as stack:
            # one server per storage (and per recording); named "served" and "recorded" on one storage alone
            servers: dict[str, LocalServer] = {}
            raws: dict[str, storages.RawS3] = {}
            for storage in kinds:
                if storage.raw is not None or len(kinds) > 1:
                    print(f"  {storage.name}: {storage.description}")
                for recorded in [False, True] if args.record else [False]:
                    name = (f"{storage.name}{' recorded' if recorded else ''}" if len(kinds) > 1 else None) or (
                        "recorded" if recorded else "served"
                    )
                    workdir = Path(tmp) / name.replace(" ", "-")
                    workdir.mkdir()
                    record = ("--record", str(workdir / "recording")) if recorded else ()
                    server = LocalServer.start(
                        workdir, args.database, workers=args.workers, serve_args=record, extra_env=storage.env
                    )
                    stack.callback(server.stop, 600)  # a recording is assembled as its server stops
                    servers[name] = server
                if storage.raw is not None:
                    raws[f"{storage.name} raw boto3" if len(kinds) > 1 else "raw boto3"] = storage.raw
            operations = {
                name: prepare(server, Path(tmp) / name.replace(" ", "-"), args.clients)
                for name, server in servers.items()
            }
            raw_operations = {name: prepare_raw(raw, args.clients) for name, raw in raws.items()}
            idle = {name: server.rss() for name, server in servers.items()}
            memory = {name: stack.enter_context(PeakRss(server)) for name, server in servers.items()}
            columns = [*servers, *raws]
            if len(columns) > 1:
                print(f"  {'':<20}" + "".join(f"{name:>26}" for name in columns))
            load = storages.OtherLoad()
            other_load, get_ratios = {}, {}
            for label, size in OPERATIONS:
                rates: dict[str, list[float]] = {name: [] for name in columns}
                for _ in range(args.rounds):
                    # in turns, so that all meet the same load from the rest of the machine
                    for name in servers:
                        rates[name].append(run_for(args.seconds, args.clients, operations[name][label]))
                    for name in raws:
                        if label in raw_operations[name]:
                            rates[name].append(run_for(args.seconds, args.clients, raw_operations[name][label]))
                other_load[label] = load.take()
                median = {name: statistics.median(values) for name, values in rates.items() if values}
                if len(columns) == 1:
                    line = f"  {label:<20} {median['served']:9.1f} /s"
                    if size:
                        line += f"  ({median['served'] * size / MIB:8.1f} MiB/s)"
                elif args.record and len(kinds) == 1:
                    change = median["recorded"] / median["served"] - 1
                    line = f"  {label:<20} {median['served']:9.1f} /s {median['recorded']:11.1f} /s {change:+7.0%}"
                else:
                    line = f"  {label:<20}" + "".join(cell(median.get(name), size) for name in columns)
                print(line)
                if label == "GetFile 20 MiB":
                    for name in raws:
                        server_name = name.replace(" raw boto3", "") if len(kinds) > 1 else "served"
                        get_ratios[server_name] = median[server_name] / median[name]
            if args.record and len(kinds) > 1:
                print("  (recording's cost: each storage's recorded column against its served one)")
            for server_name, ratio in get_ratios.items():
                print(
                    f"  GetFile 20 MiB on S3{' (' + server_name + ')' if server_name not in ('s3', 'served') else ''}: "
                    f"{100 * ratio:.1f}% of the raw boto3 GET of the same object size, same clients "
                    f"(target >= 70%: {'ok' if ratio >= 0.7 else 'BELOW TARGET'})"
                )
            for name in servers:
                print(
                    f"  server memory{' (' + name + ')' if len(servers) > 1 else ''}: idle {idle[name] / MIB:.1f} "
                    f"MiB, peak {memory[name].peak / MIB:.1f} MiB (master + {args.workers} workers, RSS)"
                )
            print(
                f"  other load (CPU of processes not this run's, in cores of {os.cpu_count()}), each operation: "
                + ", ".join(f"{label} {cores:.2f}" for label, cores in other_load.items())
            )
        if args.record:
            for name in servers:
                if name.endswith("recorded"):
                    record = Path(tmp) / name.replace(" ", "-") / "recording"
                    print(f"  (the recording was written as its server stopped: {recording_size(record)})")


def cell(rate: float | None, size: int) -> str:
    if rate is None:
        return f"{'-':>26}"
    return f"{rate:9.1f} /s" + (f" ({rate * size / MIB:6.1f} MiB/s)" if size else " " * 15)


OPERATIONS = [
    ("CheckFileInfo", 0),
    ("GetFile 1 MiB", MIB),
    ("GetFile 20 MiB", 20 * MIB),
    ("PutFile 1 MiB", MIB),
    ("Lock+Unlock pairs", 0),
]


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

    # Each client locks and unlocks its own file, so every pair succeeds; and PutFiles its own locked file.
    lock_urls, put_urls = [], []
    for urls, what in [(lock_urls, "lock"), (put_urls, "put")]:
        for i in range(clients):
            path = workdir / f"{what}{i}.docx"
            path.write_bytes(b"x")
            file_id = server.add_file(path)["id"]
            urls.append(server.url(file_id, server.token(file_id)))
    lock_ids = itertools.count()
    with requests.Session() as session:
        for url in put_urls:
            expect(session.post(url, headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "put"}))
    content = os.urandom(MIB)

    def lock_unlock(session, i):
        lock_id = f"bench-{next(lock_ids)}"
        expect(session.post(lock_urls[i], headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": lock_id}))
        expect(session.post(lock_urls[i], headers={"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": lock_id}))

    def put_file(session, i):
        expect(
            session.post(
                put_urls[i].replace("?", "/contents?"),
                data=content,
                headers={"X-WOPI-Override": "PUT", "X-WOPI-Lock": "put"},
            )
        )

    return {
        "CheckFileInfo": check_file_info,
        "GetFile 1 MiB": get_file(files["1MiB"]),
        "GetFile 20 MiB": get_file(files["20MiB"]),
        "PutFile 1 MiB": put_file,
        "Lock+Unlock pairs": lock_unlock,
    }


def prepare_raw(raw: storages.RawS3, clients: int) -> dict:
    """The same transfers as plain boto3 requests to the server's bucket: one GET of an object of the file's
    size, streamed and read in 1 MiB pieces; one PutObject of 1 MiB, each client to its own key."""
    keys = {size: raw.put(os.urandom(size))[1] for size in (MIB, 20 * MIB)}
    content = os.urandom(MIB)
    put_keys = [f"{raw.prefix}put-{i}" for i in range(clients)]

    def get(size):
        def one(_, __):
            if raw.get(keys[size]) != size:
                raise RuntimeError(f"raw GET: not {size} bytes")

        return one

    def put(_, i):
        raw.client.put_object(Bucket=raw.bucket, Key=put_keys[i], Body=content)

    return {"GetFile 1 MiB": get(MIB), "GetFile 20 MiB": get(20 * MIB), "PutFile 1 MiB": put}


def recording_size(record: Path) -> str:
    hars = list(record.glob("*.har"))
    return f"{len(hars)} HAR files, {sum(p.stat().st_size for p in hars) / MIB:.1f} MiB"


if __name__ == "__main__":
    main()
