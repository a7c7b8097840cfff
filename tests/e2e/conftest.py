"""A real gunicorn server (the `wopihost serve` command, two workers) on a free loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

WOPIHOST = [sys.executable, "-m", "wopihost.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base: str
    port: int
    env: dict
    process: subprocess.Popen
    log: Path
    data_dir: Path

    def cli(self, *args: str) -> str:
        return subprocess.run([*WOPIHOST, *args], env=self.env, check=True, capture_output=True, text=True).stdout

    def add_file(self, path: Path, name: str | None = None) -> dict:
        return json.loads(self.cli("files", "add", str(path), "--json", *(["--name", name] if name else [])))

    def token(self, file_id: str, user: str = "alice") -> str:
        return json.loads(self.cli("token", "issue", file_id, "--user", user, "--json"))["access_token"]

    def url(self, file_id: str, token: str, suffix: str = "") -> str:
        return f"{self.base}/wopi/files/{file_id}{suffix}?access_token={token}"

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(tmp_path: Path, database_url: str, workers: int = 2) -> Server:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {**os.environ, "WOPIHOST_DATA_DIR": str(data_dir), "WOPIHOST_DATABASE_URL": database_url,
           "WOPIHOST_PUBLIC_URL": f"http://127.0.0.1:{port}", "WOPIHOST_MAX_FILE_SIZE": "64MiB"}
    subprocess.run([*WOPIHOST, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([*WOPIHOST, "serve", "--port", str(port), "--workers", str(workers)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", port, env, process, log, data_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{server.base}/wopi/files/none", timeout=1)
            if len(server.workers()) >= workers:
                return server
        except requests.ConnectionError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}")


@pytest.fixture
def server(tmp_path, database):
    server = start_server(tmp_path, database)
    yield server
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
    log = server.log_text()
    assert "Traceback" not in log, log
    assert "database is locked" not in log, log
