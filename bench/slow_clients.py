"""How fast a normal CheckFileInfo answers while slow clients hold connections to `wopihost serve`.

Starts `wopihost serve` with its defaults (no nginx in front) on a free port, then runs a probe that asks
CheckFileInfo every 100 ms, first alone and then beside N slow clients, a third of each kind:

* trickled heads: a request line and headers sent one byte every 0.5 s, never finished;
* trickled bodies: a valid PutFile whose 10 MB body arrives one byte every 0.5 s;
* clients that do not read: a GetFile of an 8 MiB file, never read from a small receive buffer.

A slow client that the server drops connects again at once, so N connections stay slow throughout. Prints the
probe's latencies (p50, p99, max) and failures (no answer within 10 s) for both runs.

    .venv/bin/python bench/slow_clients.py [--clients 64] [--seconds 60] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from wopihost.localserver import LocalServer, SlowClient

PROBE_EVERY = 0.1
PROBE_TIMEOUT = 10.0


def probe(url: str, seconds: float) -> tuple[list[float], int]:
    latencies, failures = [], 0
    deadline = time.monotonic() + seconds
    with requests.Session() as http:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                ok = http.get(url, timeout=PROBE_TIMEOUT).status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                latencies.append(time.monotonic() - started)
            else:
                failures += 1
                http.close()
            time.sleep(max(0.0, PROBE_EVERY - (time.monotonic() - started)))
    return latencies, failures


def summary(label: str, latencies: list[float], failures: int) -> str:
    if not latencies:
        return f"{label:<22} no answers, {failures} failures"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"{label:<22} {len(latencies):>5} answers  p50 {statistics.median(ordered) * 1000:8.1f} ms  "
        f"p99 {p99 * 1000:8.1f} ms  max {ordered[-1] * 1000:8.1f} ms  failures {failures}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        server = LocalServer.start(work, workers=args.workers)
        try:
            (work / "Big.docx").write_bytes(os.urandom(8 << 20))
            file_id = server.add_file(work / "Big.docx")["id"]
            token = server.token(file_id)
            requests.post(server.url(file_id, token), headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "L"})
            url = server.url(file_id, token)
            print(
                f"wopihost serve --workers {args.workers}; probe: CheckFileInfo every {PROBE_EVERY * 1000:.0f} ms "
                f"for {args.seconds:.0f} s, {PROBE_TIMEOUT:.0f} s timeout"
            )
            print(summary("no slow clients", *probe(url, args.seconds)))
            stop = threading.Event()
            kinds = ["head", "body", "reader"]
            clients = [
                SlowClient(kinds[i % 3], server.port, server.url(file_id, token), stop) for i in range(args.clients)
            ]
            for client in clients:
                client.start()
            time.sleep(2)  # let them connect
            result = probe(url, args.seconds)
            stop.set()
            print(summary(f"{args.clients} slow clients", *result))
            print(
                f"slow-client connections made: {sum(c.connections for c in clients)} "
                f"(each reconnect is one the server dropped)"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
