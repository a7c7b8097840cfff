"""Which of the master's memory pages the workers copy as they serve, by the kind of object on those pages.

gunicorn's master imports wopihost and builds the application before it forks the workers (wopihost/server.py),
so the workers start out sharing those pages with it. A worker that writes to an object there, if only to its
reference count, gets its own copy of the object's page: most of what a server's memory grows by over its first
requests (bench/compare.py's "PSS grew" less "allocated"). This starts a server whose master writes a map of its
Python objects just before its first fork (the address, size and kind of each object the garbage collector
tracks and of each object they refer to), loads each operation in turn, and after each compares every page of
each worker with the master's page at the same address (the physical frame in /proc/<pid>/pagemap, which only
root may read). Then it prints, for the pages both workers copied, the kinds of objects lying on them, beside
how many of the master's pages hold that kind at all.

    python bench/copied_pages.py [--ops checkfileinfo,lock,getfile,putfile] [--requests 400] [--top 40]

A page holds objects of several kinds and this cannot tell which of them was written: a kind whose share of
copied pages stands out from the average is the lead. Sizes are those of the objects themselves (a dict's or a
list's separately allocated items are not placed), so a few pages are attributed approximately.
"""

from __future__ import annotations

import argparse
import array
import collections
import gc
import os
import pickle
import struct
import sys
import tempfile
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from wopihost.localserver import LocalServer

PAGE = os.sysconf("SC_PAGE_SIZE")
FRAME = (1 << 55) - 1  # pagemap: bits 0-54 the physical frame, bit 63 "present"
GC_HEAD = 16  # CPython's header before each object the garbage collector tracks
MAP_ENV = "COPIED_PAGES_MAP"
SERVE = "--serve-writing-map"  # how LocalServer runs this file in place of `wopihost`
OPS = ("checkfileinfo", "lock", "getfile", "putfile")
THREADS = 8


# --- in the server's master ---


def package_of(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/wopihost/" in filename:
        return "wopihost"
    if filename.startswith("<"):
        return filename
    return "stdlib" if f"python{sys.version_info.major}.{sys.version_info.minor}/" in filename else "other"


def kind_of(obj: object) -> str:
    """How the report groups `obj`: by its type's name, and code, functions, classes and modules by their package."""
    if isinstance(obj, types.CodeType):
        return f"code of {package_of(obj.co_filename)}"
    if isinstance(obj, types.FunctionType):
        return f"function of {package_of(obj.__code__.co_filename)}"
    if isinstance(obj, type):
        return f"class of {str(getattr(obj, '__module__', '?')).split('.')[0]}"
    if isinstance(obj, types.ModuleType):
        return f"module of {obj.__name__.split('.')[0]}"
    kind = type(obj)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def placement(obj: object) -> tuple[int, int]:
    """Where `obj` lies in memory: its start (with its GC header) and its size (without the separately allocated
    items of a dict, list or set, which lie elsewhere)."""
    tracked = gc.is_tracked(obj)
    start = id(obj) - (GC_HEAD if tracked else 0)
    if isinstance(obj, (dict, list, set, frozenset, bytearray, collections.deque)):
        return start, type(obj).__basicsize__ + (GC_HEAD if tracked else 0)
    return start, max(sys.getsizeof(obj), 1)


def write_object_map(path: str) -> None:
    tracked = gc.get_objects()
    seen = {id(o) for o in tracked}
    objects = list(tracked)
    for obj in tracked:
        for referent in gc.get_referents(obj):
            if id(referent) not in seen:
                seen.add(id(referent))
                objects.append(referent)
    kinds: dict[str, int] = {}
    starts, sizes, kind_ids = array.array("Q"), array.array("Q"), array.array("I")
    for obj in objects:
        start, size = placement(obj)
        starts.append(start)
        sizes.append(size)
        kind_ids.append(kinds.setdefault(kind_of(obj), len(kinds)))
    with open(path, "wb") as out:
        pickle.dump((starts, sizes, kind_ids, list(kinds)), out)


def serve_writing_map(argv: list[str]) -> None:
    """`wopihost <argv>`, whose master writes the object map (to $COPIED_PAGES_MAP) before its first fork."""
    from wopihost import server

    freeze = server.DEFAULTS["pre_fork"]
    written = []

    def pre_fork(arbiter, worker) -> None:
        if not written:
            write_object_map(os.environ[MAP_ENV])
            written.append(True)
        freeze(arbiter, worker)

    server.DEFAULTS["pre_fork"] = pre_fork
    from wopihost.cli import main

    sys.argv = ["wopihost", *argv]
    main()


# --- in this process ---


def regions(pid: int) -> Iterator[tuple[int, int]]:
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            name = fields[5].strip() if len(fields) > 5 else ""
            if not name.startswith("[v"):  # [vvar], [vdso], [vsyscall]: the kernel's, not readable
                start, end = (int(x, 16) for x in fields[0].split("-"))
                yield start, end


def frames(pid: int) -> dict[int, int]:
    """The physical frame of each present page of process `pid`, by virtual address."""
    found = {}
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for start, end in regions(pid):
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read((end - start) // PAGE * 8)
            for i, (entry,) in enumerate(struct.iter_unpack("Q", entries)):
                if entry >> 63:
                    found[start + i * PAGE] = entry & FRAME
    return found


def copied(master: int, workers: list[int]) -> dict[int, set[int]]:
    """For each worker, its pages whose frame differs from the master's at the same address."""
    theirs = frames(master)
    result = {}
    for pid in workers:
        mine = frames(pid)
        result[pid] = {address for address, frame in mine.items() if theirs.get(address, frame) != frame}
    return result


def load(server: LocalServer, op: str, files: list[tuple[str, str]], requests_total: int) -> None:
    """`requests_total` requests of `op` from THREADS threads, each on its own file."""

    def run(index: int) -> None:
        file_id, token = files[index]
        url, contents = server.url(file_id, token), server.url(file_id, token, "/contents")
        lock = {"X-WOPI-Lock": f"copied-pages-{index}"}
        with requests.Session() as session:
            for _ in range(requests_total // THREADS):
                if op == "checkfileinfo":
                    session.get(url).raise_for_status()
                elif op == "getfile":
                    session.get(contents).raise_for_status()
                else:
                    session.post(url, headers={"X-WOPI-Override": "LOCK", **lock}).raise_for_status()
                    if op == "putfile":
                        body = os.urandom(1 << 20)
                        session.post(contents, data=body, headers={"X-WOPI-Override": "PUT", **lock}).raise_for_status()
                    session.post(url, headers={"X-WOPI-Override": "UNLOCK", **lock}).raise_for_status()

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(run, range(THREADS)))  # a failed request fails the run


def mib(pages: int) -> str:
    return f"{pages * PAGE / 2**20:.1f}"


def report(copied_by_both: set[int], map_path: Path, top: int) -> None:
    with open(map_path, "rb") as saved:
        starts, sizes, kind_ids, kinds = pickle.load(saved)
    on_page: dict[int, set[int]] = collections.defaultdict(set)
    for start, size, kind in zip(starts, sizes, kind_ids):
        for page in range(start // PAGE, (start + size - 1) // PAGE + 1):
            on_page[page * PAGE].add(kind)
    holding, copied_holding = collections.Counter(), collections.Counter()
    for page, present in on_page.items():
        holding.update(present)
        if page in copied_by_both:
            copied_holding.update(present)
    with_objects = copied_by_both & on_page.keys()
    print(
        f"\nPages both workers copied: {len(copied_by_both)} ({mib(len(copied_by_both))} MiB); "
        f"{len(with_objects)} of them hold objects of the master's map, "
        f"{len(with_objects) / len(on_page):.0%} of the {len(on_page)} pages that do"
    )
    print(f"\n{'kind of object':<58}{'copied pages':>14}{'pages holding it':>18}{'share':>8}")
    for kind, count in copied_holding.most_common(top):
        print(f"{kinds[kind][:57]:<58}{count:>14}{holding[kind]:>18}{count / holding[kind]:>8.0%}")


def main() -> None:
    if sys.argv[1:2] == [SERVE]:
        serve_writing_map(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", default=",".join(OPS), help=f"operations, in order (default {','.join(OPS)})")
    parser.add_argument("--requests", type=int, default=400, help="requests of each operation (default 400)")
    parser.add_argument("--top", type=int, default=40, help="kinds of object to list (default 40)")
    args = parser.parse_args()
    ops = args.ops.split(",")
    if unknown := set(ops) - set(OPS):
        parser.error(f"unknown operations: {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        parser.error("reading the physical frames in /proc/<pid>/pagemap takes root")
    with tempfile.TemporaryDirectory() as work:
        map_path = Path(work) / "objects.pickle"
        server = LocalServer.start(
            Path(work),
            workers=2,
            threads=4,
            extra_env={MAP_ENV: str(map_path)},
            launcher=[sys.executable, __file__, SERVE],
        )
        try:
            files = []
            for i in range(THREADS):
                path = Path(work) / f"file{i}.bin"
                path.write_bytes(os.urandom(1 << 20))
                file_id = server.add_file(path)["id"]
                files.append((file_id, server.token(file_id)))
            master, workers = server.process.pid, [worker.pid for worker in server.workers()]

            def show(when: str) -> dict[int, set[int]]:
                now = copied(master, workers)
                print(f"{when:<28}" + "  ".join(f"{mib(len(pages)):>6} MiB" for pages in now.values()))
                return now

            print(f"{'copied from the master':<28}" + "  ".join(f"{'worker ' + str(pid):>10}" for pid in workers))
            show("after starting")
            for op in ops:
                load(server, op, files, args.requests)
                now = show(f"after {op}")
            report(set.intersection(*now.values()), map_path, args.top)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
