"""The cost of Graph workbook sessions against a real gunicorn server on loopback.

For a workbook of each --sizes (made with openpyxl: numbers on five sheets, a formula on every tenth row),
prints the median of --repeat runs of:

* createSession, persistent and non-persistent (the latter copies the file);
* a range read (A1:C10) and a range PATCH (A1:B2, which the formulas depend on), inside a persistent
  session, a non-persistent one, and with no session;
* the server's peak memory (RSS of master, workers and the processes their workbook calls run in, and of the
  largest process) while doing so, beside its RSS when idle; and the size limit, WOPIHOST_MAX_WORKBOOK_SIZE.

A call opens the workbook from storage unless its process holds it from the call before (docs/graph.md §10.1),
so its cost grows with the workbook's size; a write also saves it. That is what these figures show.

    python bench/workbook.py [--sizes 1MiB,10MiB] [--repeat 5] [--workers 2] [--database URL]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openpyxl
import requests

from wopihost.config import parse_size
from wopihost.localserver import LocalServer, PeakRss

MIB = 1 << 20


def make_workbook(size: int, seed: int = 1) -> bytes:
    """An .xlsx of about `size` bytes: random numbers in five sheets and a formula on every tenth row."""
    rng, rows = random.Random(seed), max(20, size // 60)  # about 60 bytes of xlsx per row of 5 numbers
    book = openpyxl.Workbook()
    for index in range(5):
        sheet = book.active if index == 0 else book.create_sheet()
        sheet.title = f"Sheet{index + 1}"
        for row in range(1, rows // 5 + 1):
            sheet.append(
                [rng.random() * 1000 for _ in range(5)] + ([f"=SUM(A{row}:E{row})*Sheet1!A1"] if row % 10 == 0 else [])
            )
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def timed(call) -> tuple[float, requests.Response]:
    start = time.perf_counter()
    response = call()
    return time.perf_counter() - start, response


def expect(response: requests.Response, *statuses: int) -> requests.Response:
    if response.status_code not in statuses:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:300]}"
        )
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1MiB,10MiB", help="workbook sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each call (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--database", help="database URL (default: SQLite in the temporary directory)")
    args = parser.parse_args()
    sizes = [parse_size(size) for size in args.sizes.split(",")]
    limit = max(sizes) * 2

    with tempfile.TemporaryDirectory(prefix="wopihost-bench-") as tmp:
        server = LocalServer.start(
            Path(tmp), args.database, workers=args.workers, extra_env={"WOPIHOST_MAX_WORKBOOK_SIZE": str(limit)}
        )
        database = args.database.split(":", 1)[0] if args.database else "SQLite"  # never print credentials
        try:
            token = server.api_token("bench")
            graph = token["graph_url"]
            http = requests.Session()
            http.headers["Authorization"] = f"Bearer {token['access_token']}"
            print(
                f"wopihost workbook sessions: gunicorn {args.workers} workers (gthread), database {database}, "
                f"{os.cpu_count()} cores, median of {args.repeat}; WOPIHOST_MAX_WORKBOOK_SIZE {limit / MIB:g} MiB"
            )
            idle = server.rss()
            for size in sizes:
                data = make_workbook(size)
                item = (
                    expect(http.put(f"{graph}/me/drive/root:/bench-{size}.xlsx:/content", data), 201, 200).json()
                    if len(data) <= 4 * MIB
                    else upload(http, graph, f"bench-{size}.xlsx", data)
                )
                book = f"{graph}/me/drive/items/{item['id']}/workbook"
                with PeakRss(server, interval=0.05) as memory:
                    figures = measure(http, book, args.repeat)
                print(f"  {len(data) / MIB:.1f} MiB workbook:")
                for what, seconds in figures.items():
                    print(f"    {what:<44} {seconds * 1000:9.1f} ms")
                print(
                    f"    server memory: idle {idle / MIB:.0f} MiB in all, peak {memory.peak / MIB:.0f} MiB in all "
                    f"(+{(memory.peak - idle) / MIB:.0f}), one process at most {memory.largest / MIB:.0f} MiB"
                )
            http.close()
        finally:
            server.stop()
    sys.stdout.flush()


def upload(http: requests.Session, graph: str, name: str, data: bytes) -> dict:
    url = expect(http.post(f"{graph}/me/drive/root:/{name}:/createUploadSession", json={}), 200).json()["uploadUrl"]
    piece = 10 * MIB
    for first in range(0, len(data), piece):
        part = data[first : first + piece]
        answer = requests.put(
            url, data=part, headers={"Content-Range": f"bytes {first}-{first + len(part) - 1}/{len(data)}"}
        )
    return expect(answer, 201, 200).json()


def measure(http: requests.Session, book: str, repeat: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {}

    def run(what: str, call, *statuses: int) -> requests.Response:
        seconds, response = timed(call)
        expect(response, *statuses)
        runs.setdefault(what, []).append(seconds)
        return response

    cell = "worksheets/Sheet1/range(address='A1:C10')"
    inputs = "worksheets/Sheet1/range(address='A1:B2')"
    for i in range(repeat):
        sessions = {}
        for persist in (True, False):
            kind = "persistent" if persist else "non-persistent"
            sessions[kind] = run(
                f"createSession, {kind}",
                lambda: http.post(f"{book}/createSession", json={"persistChanges": persist}),
                201,
            ).json()["id"]
        for kind, headers in (
            ("persistent session", {"workbook-session-id": sessions["persistent"]}),
            ("non-persistent session", {"workbook-session-id": sessions["non-persistent"]}),
            ("no session", {}),
        ):
            run(f"range read, {kind}", lambda: http.get(f"{book}/{cell}", headers=headers), 200)
            run(
                f"range PATCH, {kind}",
                lambda: http.patch(f"{book}/{inputs}", headers=headers, json={"values": [[i, i + 1], [i + 2, i + 3]]}),
                200,
            )
        for session in sessions.values():
            expect(http.post(f"{book}/closeSession", headers={"workbook-session-id": session}), 204)
    return {what: statistics.median(seconds) for what, seconds in runs.items()}


if __name__ == "__main__":
    main()
