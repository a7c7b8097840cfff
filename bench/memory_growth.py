"""The server's memory over repeated cycles of load: whether it levels off, and where it steps up, in which process
and in which of its mappings.

bench/compare.py reads the memory once before its load and once after, and bench/copied_pages.py tells which of the
master's objects the workers copy; neither says when memory grows. This serves each cycle's load (CheckFileInfo,
GetFile of 1 MiB and 20 MiB, Lock + Unlock and PutFile of 1 MiB, `--seconds` each, from `--clients` threads), waits
for the server to idle, and prints the PSS of the whole tree and each process's change since the last cycle, with
the mappings (/proc/<pid>/smaps) that changed most where a process grew by `--step` MiB or more. Work the server
does on a timer shows as a step in the cycle where it first runs: with `--sweep-interval 1m`, the periodic sweep
(WOPIHOST_SWEEP_INTERVAL) runs within the first cycles instead of after 5 minutes.

    python bench/memory_growth.py [--cycles 10] [--seconds 4] [--clients 8] [--sweep-interval 5m] [--step 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
from core_ops import expect, run_for  # bench/core_ops.py, beside this script

from wopihost.localserver import LocalServer

MIB = 1 << 20
Mappings = dict[tuple[str, str], int]  # (address range, what is mapped) -> PSS in kB


def mappings(pid: int) -> Mappings:
    pss: Mappings = {}
    key = ("", "")
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if not fields[0].endswith(":"):  # a mapping's first line: range, perms, offset, device, inode[, path]
                key = (fields[0], fields[5] if len(fields) > 5 else "[anonymous]")
            elif fields[0] == "Pss:":
                pss[key] = pss.get(key, 0) + int(fields[1])
    return pss


def tree(server: LocalServer) -> dict[str, Mappings]:
    """Each process's mappings, by name: the master, and each worker by its pid."""
    return {"master": mappings(server.process.pid)} | {f"worker {w.pid}": mappings(w.pid) for w in server.workers()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4, help="of each operation's load in each cycle")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--sweep-interval", default=None, help="the server's WOPIHOST_SWEEP_INTERVAL")
    parser.add_argument("--step", type=float, default=1.0, help="MiB a process must grow by to show its mappings")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="memory-growth-"))
    env = {"WOPIHOST_SWEEP_INTERVAL": args.sweep_interval} if args.sweep_interval else None
    server = LocalServer.start(work, workers=args.workers, threads=args.threads, extra_env=env)
    try:

        def document(name: str, size: int) -> str:
            path = work / name
            path.write_bytes(os.urandom(size))
            file_id = server.add_file(path)["id"]
            return server.url(file_id, server.token(file_id))

        small, one, twenty = (
            document("small.docx", 10_000),
            document("one.docx", MIB),
            document("twenty.docx", 20 * MIB),
        )
        own = [document(f"own{index}.docx", MIB) for index in range(args.clients)]  # a file to lock for each client
        body = os.urandom(MIB)

        def lock_unlock(session: requests.Session, index: int) -> None:
            for override in ("LOCK", "UNLOCK"):
                expect(session.post(own[index], headers={"X-WOPI-Override": override, "X-WOPI-Lock": "bench"}))

        def put(session: requests.Session, index: int) -> None:
            url = own[index].replace("?", "/contents?")
            expect(session.post(url, data=body, headers={"X-WOPI-Override": "PUT", "X-WOPI-Lock": "bench"}))

        operations: dict[str, Callable[[requests.Session, int], None]] = {
            "checkfileinfo": lambda session, _: expect(session.get(small)),
            "getfile1": lambda session, _: expect(session.get(one.replace("?", "/contents?"))),
            "getfile20": lambda session, _: expect(session.get(twenty.replace("?", "/contents?"))),
            "lock": lock_unlock,
        }
        started = time.monotonic()
        last = tree(server)
        print(f"{'cycle':>5} {'seconds':>8} {'PSS MiB':>8}   change since the last cycle (MiB)")
        print(f"{0:>5} {0:>8.0f} {sum(map(sum, (m.values() for m in last.values()))) / 1024:>8.1f}")
        for cycle in range(1, args.cycles + 1):
            for request in operations.values():
                run_for(args.seconds, args.clients, request)
            for index in range(args.clients):
                expect(requests.post(own[index], headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "bench"}))
            run_for(args.seconds, args.clients, put)
            for index in range(args.clients):
                expect(requests.post(own[index], headers={"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": "bench"}))
            time.sleep(1.5)  # the workers give back their idle buffers (worker.IDLE_RELEASE_SECONDS)
            now = tree(server)
            changes = {name: (sum(now[name].values()) - sum(last.get(name, {}).values())) / 1024 for name in now}
            total = sum(map(sum, (m.values() for m in now.values()))) / 1024
            shown = ", ".join(f"{name} {change:+.1f}" for name, change in changes.items())
            print(f"{cycle:>5} {time.monotonic() - started:>8.0f} {total:>8.1f}   {shown}", flush=True)
            for name, change in changes.items():
                if change < args.step:
                    continue
                before = last.get(name, {})
                grown = sorted(((kb - before.get(key, 0), key) for key, kb in now[name].items()), reverse=True)
                for kb, (span, what) in grown[:5]:
                    print(f"{'':>26}{name}: {kb / 1024:+.1f} MiB {what} {span}")
            last = now
    finally:
        server.stop()


if __name__ == "__main__":
    main()
