"""CPU per request of the hot WOPI operations inside one process, without an HTTP server.

The application is called as a WSGI application, with an environ built once per operation and copied for
each call (no gunicorn, no sockets, no access log, and not Flask's test client, whose own URL handling
cost as much as a fifth of a CheckFileInfo), one request at a time on one thread, so the figure is the
application's own cost: what a change to the request path saves or costs shows here plainly, while
bench/compare.py shows what a client sees. Each figure is the best of --repeat runs of --number calls,
timed by process CPU time, or with --wall by the clock: then it includes the waits for the database, the
figure that shows round trips to a PostgreSQL on another machine (try it with a delay added to loopback:
`tc qdisc add dev lo root netem delay 100us`, and `tc qdisc del dev lo root` after).

    python bench/inprocess.py [--ops checkfileinfo,getfile,lock] [--number 2000] [--repeat 5] [--wall]
                              [--database URL] [--profile OP] [--instructions]

checkfileinfo and getfile use a 10 kB file; lock is one Lock and one Unlock (a pair) on another. With
--profile OP, cProfile's 30 costliest functions (by own time) follow for that operation. A PostgreSQL
--database gets a private schema, dropped at the end.

--instructions counts instructions instead of timing (valgrind's callgrind, apt-get install valgrind): each
operation runs twice under it, with 200 and with 600 calls after the same set-up and warm-up, and the
difference over the 400 extra calls is printed. The count is the same from run to run, whatever else the
machine does, where CPU time on a shared virtual machine moves by a tenth or more between runs: it is the
figure to compare two builds by. It takes about two minutes per operation.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
import timeit

from werkzeug.test import EnvironBuilder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default="checkfileinfo,getfile,lock")
    parser.add_argument("--number", type=int, default=2000, help="calls per run (lock: pairs, a quarter as many)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("--wall", action="store_true", help="time by the clock, not by the process's CPU")
    parser.add_argument("--profile", metavar="OP", help="print cProfile's costliest functions for OP")
    parser.add_argument("--instructions", action="store_true", help="count instructions per call (callgrind)")
    args = parser.parse_args()
    if args.instructions:
        for op in args.ops.split(","):
            per = (instructions(op, 600) - instructions(op, 200)) / 400
            print(f"{op:14} {per / 1e3:.1f} thousand instructions per {'pair' if op == 'lock' else 'request'}")
        return

    with tempfile.TemporaryDirectory() as data:
        os.environ.update(WOPIHOST_DATA_DIR=data, WOPIHOST_PUBLIC_URL="http://127.0.0.1:8080")
        drop = None
        if args.database:
            sys.path.insert(0, os.path.dirname(__file__))
            from compare import private_pg_schema  # the same private schema as compare.py's runs

            url, drop, _ = private_pg_schema(args.database)
            os.environ["WOPIHOST_DATABASE_URL"] = url
        try:
            run(args)
        finally:
            if drop is not None:
                drop()


def instructions(op: str, number: int) -> int:
    """Instructions of this script's whole run with `number` calls of `op` (set-up, warm-up and calls)."""
    argv = [sys.executable, __file__, "--ops", op, "--number", str(number * (4 if op == "lock" else 1))]
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    done = subprocess.run([*valgrind, *argv, "--repeat", "1"], capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def run(args) -> None:
    from wopihost import db
    from wopihost.app import create_app
    from wopihost.config import Settings

    settings = Settings.from_env()
    db.upgrade(settings.database_url)
    app = create_app(settings)
    services = app.extensions["wopihost"]
    try:
        calls = {}
        for op, file in (("checkfileinfo", "a"), ("getfile", "a"), ("lock", "b")):
            added = services.add_file("bench", f"{file}.docx", io.BytesIO(os.urandom(10_000)))
            url = f"/wopi/files/{added.id}?access_token={services.issue_token(added.id, 'bench', True).token}"
            calls[op] = operation(app, op, url)
        for op in args.ops.split(","):
            call, number = calls[op], args.number // 4 if op == "lock" else args.number
            for _ in range(200):  # warm: caches, pools, the first compilation of each statement
                call()
            timer = time.perf_counter if args.wall else time.process_time
            best = min(timeit.repeat(call, number=number, repeat=args.repeat, timer=timer)) / number
            what = "wall" if args.wall else "CPU"
            print(f"{op:14} {best * 1e3:.3f} ms {what} per {'pair' if op == 'lock' else 'request'}")
            if args.profile == op:
                profiler = cProfile.Profile()
                profiler.runcall(lambda: [call() for _ in range(number)])
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    finally:
        services.db.dispose()


def operation(app, op: str, url: str):
    def call(path: str, headers: dict[str, str] | None = None):
        method = "POST" if headers else "GET"
        environ = EnvironBuilder(path, "http://127.0.0.1:8080", method=method, headers=headers).get_environ()
        statuses = []

        def start_response(status, _headers, _exc_info=None):
            statuses.append(status)

        def once() -> None:
            body = app(dict(environ), start_response)
            try:
                for _ in body:
                    pass
            finally:
                getattr(body, "close", lambda: None)()
            assert statuses.pop().startswith("200"), (op, path, headers)

        return once

    if op == "checkfileinfo":
        return call(url)
    if op == "getfile":
        return call(url.replace("?", "/contents?", 1))
    lock = call(url, {"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "L"})
    unlock = call(url, {"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": "L"})

    def pair():
        lock()
        unlock()

    return pair


if __name__ == "__main__":
    main()
