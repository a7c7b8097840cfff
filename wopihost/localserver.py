"""Start a real wopihost server (gunicorn, `wopihost serve`) on a free loopback port.

For end-to-end tests, benchmarks and test rigs: the server runs in its own process
group with its own data directory, and is driven through the same CLI an admin uses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import requests

# -P: `-m` would put the current directory first on the module path, so that a server started from inside a
# checkout ran that checkout's wopihost whatever PYTHONPATH named (bench/compare.py --baseline served one build twice).
WOPIHOST = [sys.executable, "-P", "-m", "wopihost.cli"]


def first_answer(url: str, timeout: float, running: Callable[[], bool] = lambda: True) -> requests.Response | None:
    """The first response to GET `url` within `timeout` seconds while `running()`; None if none came. A refused
    connection or a probe slower than a second is a server still starting, and is tried again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running():
        try:
            return requests.get(url, timeout=1)
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalServer:
    base: str
    port: int
    env: dict
    process: subprocess.Popen
    log: Path
    data_dir: Path

    @classmethod
    def start(
        cls,
        workdir: Path,
        database_url: str | None = None,
        workers: int = 2,
        threads: int | None = None,
        extra_env: dict | None = None,
        timeout: float = 30,
        serve_args: tuple[str, ...] = (),
        launcher: Sequence[str] = WOPIHOST,
    ) -> LocalServer:
        """`launcher` is the command `serve` is given to: `wopihost` itself, or a script that wraps it (a
        benchmark that looks inside the master, bench/copied_pages.py)."""
        port = free_port()
        data_dir = workdir / "data"
        env = {
            **os.environ,
            "WOPIHOST_DATA_DIR": str(data_dir),
            "WOPIHOST_PUBLIC_URL": f"http://127.0.0.1:{port}",
            **({"WOPIHOST_DATABASE_URL": database_url} if database_url else {}),
            **(extra_env or {}),
        }
        subprocess.run([*WOPIHOST, "db", "upgrade"], env=env, check=True, capture_output=True)
        log = workdir / "server.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    *launcher,
                    "serve",
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                    *(["--threads", str(threads)] if threads else []),
                    *serve_args,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(f"http://127.0.0.1:{port}", port, env, process, log, data_dir).ready(workers, timeout)

    def ready(self, workers: int, timeout: float = 30, probe: str = "/wopi/files/none") -> LocalServer:
        """This server once it answers GET `probe` and has `workers` workers; killed, with its log in the error,
        if it does not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while first_answer(f"{self.base}{probe}", deadline - time.monotonic(), self.running) is not None:
            if len(self.workers()) >= workers:
                return self
            time.sleep(0.1)
        self.process.kill()
        raise RuntimeError(f"the server did not start:\n{self.log.read_text(errors='replace')}")

    def stop(self, timeout: float = 15) -> None:
        """Stop the server (SIGTERM), killing it if it has not exited within `timeout` seconds."""
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cli(self, *args: str) -> str:
        return subprocess.run([*WOPIHOST, *args], env=self.env, check=True, capture_output=True, text=True).stdout

    def add_file(self, path: Path, name: str | None = None) -> dict:
        return json.loads(self.cli("files", "add", str(path), "--json", *(["--name", name] if name else [])))

    def token(self, file_id: str, user: str = "alice") -> str:
        return json.loads(self.cli("token", "issue", file_id, "--user", user, "--json"))["access_token"]

    def api_token(self, user: str = "alice", *extra: str) -> dict:
        """`wopihost token issue --api` for `user`: access_token, drive_id, graph_url ..."""
        return json.loads(self.cli("token", "issue", "--api", "--user", user, "--json", *extra))

    def url(self, file_id: str, token: str, suffix: str = "") -> str:
        return f"{self.base}/wopi/files/{file_id}{suffix}?access_token={token}"

    def running(self) -> bool:
        return self.process.poll() is None

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def processes(self) -> list[psutil.Process]:
        """The master, then its workers and theirs (the processes workbook calls run in)."""
        master = psutil.Process(self.process.pid)
        return [master, *master.children(recursive=True)]

    def rss_each(self) -> list[int]:
        """Resident memory of the master and of each of its processes, in bytes."""
        each = []
        for proc in self.processes():
            try:
                each.append(proc.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        return each

    def rss(self) -> int:
        """Resident memory of the master and all its processes, in bytes."""
        return sum(self.rss_each())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class PeakRss:
    """Samples a LocalServer's resident memory (master + workers) in a background thread.

    `start` is the reading on entry, `peak` the highest one until exit, `largest` the most any one
    process (the master or a worker) held at a time.
    """

    def __init__(self, server: LocalServer, interval: float = 0.02):
        self.server, self.interval = server, interval
        self.start = self.peak = self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        each = self.server.rss_each()
        self.peak, self.largest = max(self.peak, sum(each)), max(self.largest, *each, 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._sample()
        self.start = self.peak
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


TRICKLE_EVERY = 0.5


class SlowClient(threading.Thread):
    """A client as slow as a server can meet, in a thread, until `stop` is set; `url` is a document's WOPISrc
    with its access token (the document locked with lock id L, for the trickled PutFile).

    `kind` is "head" (the request head sent a byte every TRICKLE_EVERY seconds, never finished), "pipelined"
    (a whole CheckFileInfo request, then the next one's head trickled behind it), "body" (a PutFile of 10 MB
    whose body comes a byte at a time) or "reader" (a GetFile never read). When the server drops the
    connection, the client connects again at once; `connections` counts them.
    """

    def __init__(self, kind: str, port: int, url: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.kind, self.port, self.stop = kind, port, stop
        self.path, self.query = urlsplit(url).path, urlsplit(url).query
        self.connections = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    self.connections += 1
                    getattr(self, self.kind)(sock)
            except OSError:
                pass  # dropped by the server: connect again
            self.stop.wait(0.05)

    def _trickle(self, sock: socket.socket, data: bytes) -> None:
        for byte in data:
            if self.stop.wait(TRICKLE_EVERY):
                return
            sock.sendall(bytes([byte]))

    def head(self, sock: socket.socket) -> None:
        head = f"GET {self.path}?{self.query} HTTP/1.1\r\nHost: x\r\n".encode()
        self._trickle(sock, head + b"X-Pad: y" * 10_000)

    def pipelined(self, sock: socket.socket) -> None:
        request = f"GET {self.path}?{self.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        sock.sendall(request + request[:20])
        self._trickle(sock, request[20:-4] + b"X-Pad: y" * 10_000)

    def body(self, sock: socket.socket) -> None:
        sock.sendall(
            f"POST {self.path}/contents?{self.query} HTTP/1.1\r\nHost: x\r\nX-WOPI-Override: PUT\r\n"
            f"X-WOPI-Lock: L\r\nContent-Length: 10000000\r\n\r\n".encode()
        )
        self._trickle(sock, b"z" * 10_000_000)

    def reader(self, sock: socket.socket) -> None:
        sock.sendall(f"GET {self.path}/contents?{self.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        while not self.stop.wait(1.0):  # never read; notice when the server gives up on us
            sock.settimeout(0.01)
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"" and sock.recv(1) == b"":
                    return
            except (TimeoutError, BlockingIOError):
                pass
