"""CPU per request of the hot WOPI operations inside one process, without an HTTP server.

The application is called through Flask's test client (WSGI only: no gunicorn, no sockets, no access
log), one request at a time on one thread, so the figure is the application's own cost: what a change to
the request path saves or costs shows here plainly, while bench/compare.py shows what a client sees.
Each figure is the best of --repeat runs of --number calls, timed by process CPU time. The test client's
own work (building the WSGI environ, reading the response) is included, the same for every build.

    python bench/inprocess.py [--ops checkfileinfo,getfile,lock] [--number 2000] [--repeat 5]
                              [--database URL] [--profile OP]

checkfileinfo and getfile use a 10 kB file; lock is one Lock and one Unlock (a pair) on another. With
--profile OP, cProfile's 30 costliest functions (by own time) follow for that operation. A PostgreSQL
--database gets a private schema, dropped at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
import timeit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default="checkfileinfo,getfile,lock")
    parser.add_argument("--number", type=int, default=2000, help="calls per run (lock: pairs, a quarter as many)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("--profile", metavar="OP", help="print cProfile's costliest functions for OP")
    args = parser.parse_args()

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


def run(args) -> None:
    from wopihost import db
    from wopihost.app import create_app
    from wopihost.config import Settings

    settings = Settings.from_env()
    db.upgrade(settings.database_url)
    app = create_app(settings)
    services = app.extensions["wopihost"]
    try:
        client = app.test_client()
        calls = {}
        for op, file in (("checkfileinfo", "a"), ("getfile", "a"), ("lock", "b")):
            added = services.add_file("bench", f"{file}.docx", io.BytesIO(os.urandom(10_000)))
            url = f"/wopi/files/{added.id}?access_token={services.issue_token(added.id, 'bench', True).token}"
            calls[op] = operation(client, op, url)
        for op in args.ops.split(","):
            call, number = calls[op], args.number // 4 if op == "lock" else args.number
            for _ in range(200):  # warm: caches, pools, the first compilation of each statement
                call()
            best = min(timeit.repeat(call, number=number, repeat=args.repeat, timer=time.process_time)) / number
            print(f"{op:14} {best * 1e3:.3f} ms CPU per {'pair' if op == 'lock' else 'request'}")
            if args.profile == op:
                profiler = cProfile.Profile()
                profiler.runcall(lambda: [call() for _ in range(number)])
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    finally:
        services.db.dispose()


def operation(client, op: str, url: str):
    def check(response, status: int = 200):
        assert response.status_code == status, (op, response.status_code, response.headers)

    if op == "checkfileinfo":
        return lambda: check(client.get(url))
    if op == "getfile":
        contents = url.replace("?", "/contents?", 1)

        def getfile():
            response = client.get(contents)
            response.get_data()
            response.close()
            check(response)

        return getfile

    def pair():
        check(client.post(url, headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "L"}))
        check(client.post(url, headers={"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": "L"}))

    return pair


if __name__ == "__main__":
    main()
