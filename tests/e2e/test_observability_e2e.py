"""Metrics and logs of a real gunicorn with two workers: /metrics sums every worker's requests (on the server's
port or a separate address), and with WOPIHOST_LOG_FORMAT=json every line written is one JSON object
without a token."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from wopihost.localserver import WOPIHOST, LocalServer, free_port

from ..helpers import abandoned_partial_write, wait_until

pytestmark = pytest.mark.e2e

DEPLOY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "gunicorn.conf.py"
SIZE = 100_000


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def document(server: LocalServer, tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "Doc.docx"
    path.write_bytes(os.urandom(SIZE))
    file_id = server.add_file(path)["id"]
    return file_id, server.token(file_id)


def at_once(urls: list[str]) -> None:
    """GET each URL on a connection of its own, eight at a time, so that both single-threaded workers serve."""
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda url: requests.get(url, timeout=30).status_code, urls))
    assert set(statuses) == {200}, statuses


def settled_totals(metrics_url: str, checks: int, gets: int, seconds: float = 60) -> None:
    """check_totals on the server's metrics once they settle: a request is counted when the server closes its
    response, just after the client has read its last byte, so a scrape right then may not show it yet, or
    show its count without its duration (seen with the suite's four processes loading two cores)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            check_totals(scrape(metrics_url), checks, gets)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def check_totals(samples, checks: int, gets: int) -> None:
    assert value(samples, "wopihost_requests_total", operation="CheckFileInfo", status="200") == checks
    every_status = sum(
        v
        for (name, labels), v in samples.items()  # (readiness polls got 401)
        if name == "wopihost_requests_total" and ("operation", "CheckFileInfo") in labels
    )
    assert value(samples, "wopihost_request_duration_seconds_count", operation="CheckFileInfo") == every_status
    assert value(samples, "wopihost_requests_total", operation="GetFile", status="200") == gets
    assert value(samples, "wopihost_response_body_bytes_total", operation="GetFile") == gets * SIZE


def json_lines(log: str) -> list[dict]:
    entries = []
    for line in log.splitlines():
        entry = json.loads(line)  # every line, or the test fails here
        assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)
    return entries


def test_metrics_sum_the_requests_of_both_workers(tmp_path, database):
    server = LocalServer.start(tmp_path, database, workers=2, threads=1, extra_env={"WOPIHOST_LOG_FORMAT": "json"})
    try:
        file_id, token = document(server, tmp_path)
        at_once([server.url(file_id, token)] * 40 + [server.url(file_id, token, "/contents")] * 10)

        def served():  # the access line is written after the response is sent, so it may trail the client
            complete = server.log_text().rpartition("\n")[0]  # not a line still being written
            lines = [e for e in json_lines(complete) if e.get("operation") == "CheckFileInfo" and e["status"] == 200]
            return lines if len(lines) >= 40 else None

        lines = wait_until(served) or []
        assert len(lines) == 40 and len({entry["pid"] for entry in lines}) == 2  # both workers served
        settled_totals(f"{server.base}/metrics", 40, 10)
        for _ in range(6):  # whichever worker answers, the same totals
            check_totals(scrape(f"{server.base}/metrics"), 40, 10)

        # A worker that dies takes nothing with it: gunicorn starts another, and the counts stay.
        victim = server.workers()[0].pid
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            victim in [w.pid for w in server.workers()] or len(server.workers()) < 2
        ):
            time.sleep(0.1)
        at_once([server.url(file_id, token)] * 4)
        settled_totals(f"{server.base}/metrics", 44, 10)
        for _ in range(4):
            check_totals(scrape(f"{server.base}/metrics"), 44, 10)
    finally:
        server.stop()


@pytest.mark.local_storage
def test_the_workers_sweep_at_start_and_then_every_interval(tmp_path, database):
    """The master builds the application and each worker starts its background work (App.start)."""
    partial = abandoned_partial_write(tmp_path / "data" / "tmp")
    server = LocalServer.start(tmp_path, database, extra_env={"WOPIHOST_SWEEP_INTERVAL": "1s"})
    try:
        assert wait_until(lambda: not partial.exists())
        assert wait_until(lambda: value(scrape(f"{server.base}/metrics"), "wopihost_gc_sweeps_total", result="ok") >= 2)
    finally:
        server.stop()


def swept_by(server: LocalServer, file_id: str) -> int:
    """The pid of the worker that sweeps away a token issued now to expire in a second."""
    before = len(server.log_text().splitlines())
    server.cli("token", "issue", file_id, "--user", "brief", "--ttl", "1s")

    def sweeper() -> int | None:
        for line in server.log_text().splitlines()[before:]:
            if "1 expired or revoked tokens" in line and (pid := re.search(r"\[(\d+)\]", line)):
                return int(pid[1])
        return None

    pid = wait_until(sweeper, 20)
    assert pid, server.log_text()
    return pid


@pytest.mark.local_storage
def test_one_worker_sweeps_for_the_server_and_another_once_it_is_gone(tmp_path, database):
    server = LocalServer.start(tmp_path, database, workers=2, extra_env={"WOPIHOST_SWEEP_INTERVAL": "1s"})
    try:
        file_id, _ = document(server, tmp_path)
        sweepers = {swept_by(server, file_id) for _ in range(3)}
        assert len(sweepers) == 1, sweepers
        sweeps = value(scrape(f"{server.base}/metrics"), "wopihost_gc_sweeps_total", result="ok")
        time.sleep(6)
        # one sweep a second, not one a worker a second (12); the slack is the metrics' second of lag
        assert value(scrape(f"{server.base}/metrics"), "wopihost_gc_sweeps_total", result="ok") - sweeps <= 8
        (leader,) = sweepers
        assert leader in [worker.pid for worker in server.workers()]
        os.kill(leader, signal.SIGKILL)
        assert swept_by(server, file_id) != leader
    finally:
        server.stop()


def test_a_separate_metrics_address(tmp_path, database):
    port = free_port()
    server = LocalServer.start(
        tmp_path, database, workers=2, threads=1, extra_env={"WOPIHOST_METRICS_BIND": f"127.0.0.1:{port}"}
    )
    try:
        file_id, token = document(server, tmp_path)
        at_once([server.url(file_id, token)] * 20 + [server.url(file_id, token, "/contents")] * 4)
        assert requests.get(f"{server.base}/metrics", timeout=10).status_code == 404
        settled_totals(f"http://127.0.0.1:{port}/metrics", 20, 4)
        for _ in range(8):  # each scrape a new connection, to either worker
            samples = scrape(f"http://127.0.0.1:{port}/metrics")
            check_totals(samples, 20, 4)
            assert value(samples, "wopihost_database_up") == 1
    finally:
        server.stop()
    # The text access log shows what GetFile sent (sendfile), not 0.
    gets = [line for line in server.log_text().splitlines() if f'"GET /wopi/files/{file_id}/contents ' in line]
    assert len(gets) == 4 and all(f'" 200 {SIZE} ' in line for line in gets), gets


# -- deploy/gunicorn.conf.py --------------------------------------------------------------------------------


def deployed(tmp_path: Path, database: str, extra_env: dict) -> LocalServer:
    """gunicorn -c deploy/gunicorn.conf.py 'wopihost.app:create_app()', two workers, as docs/deploy.md runs it."""
    port, data_dir = free_port(), tmp_path / "data"
    env = {
        **os.environ,
        "WOPIHOST_DATA_DIR": str(data_dir),
        "WOPIHOST_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "WOPIHOST_DATABASE_URL": database,
        "WOPIHOST_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        **extra_env,
    }
    env["GUNICORN_CMD_ARGS"] = f"--threads 1 {env.get('GUNICORN_CMD_ARGS', '')}"
    subprocess.run([*WOPIHOST, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(DEPLOY_CONFIG), "wopihost.app:create_app()"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return LocalServer(f"http://127.0.0.1:{port}", port, env, process, log, data_dir).ready(2, probe="/healthz")


def raw(server: LocalServer, head: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1"))
        sock.recv(65536)


def test_json_logs_under_the_deployed_configuration(tmp_path, database):
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = deployed(tmp_path, database, {"WOPIHOST_LOG_FORMAT": "json", "TMPDIR": str(temp)})
    try:
        file_id, token = document(server, tmp_path)
        at_once([server.url(file_id, token)] * 10 + [server.url(file_id, token, "/contents")] * 2)
        settled_totals(f"{server.base}/metrics", 10, 2)
        assert requests.get(server.url(file_id, token.upper())).status_code == 401
        assert requests.get(f"{server.base}/wopi/files/{token}").status_code == 401  # a token for the file id
        path = f"/wopi/files/{file_id}"
        escaped = "".join(f"%{ord(char):02x}" for char in token)  # Werkzeug reads it as the token
        for line in (
            f"GET {path}?access_token={token} HTTP/9.9",
            f"GET {path} ?access_token={token} HTTP/1.1",
            f"GET {path}/{token} HTTP/1.1",
            f"GET {path}/%zz{token} HTTP/1.1",  # after an escape that is none, which gunicorn leaves as it came
            f"GET {path} ?access%5Ftoken={escaped} HTTP/1.1",
        ):
            raw(server, f"{line}\r\nHost: x\r\n\r\n")
        (workers_dir,) = temp.iterdir()  # the workers' metrics, in a directory of this start's own
        assert workers_dir.name.startswith("wopihost-metrics-") and list(workers_dir.glob("counter_*.db"))
    finally:
        server.stop()
    assert not list(temp.iterdir())  # removed when the server stopped

    log = server.log_text()
    assert token not in log and token.upper() not in log and "[redacted]" in log
    assert token[:64] not in log and escaped[:64] not in log  # nor the token cut short, or escaped
    entries = json_lines(log)
    assert any(e["logger"] == "gunicorn.error" and "Booting worker" in e["message"] for e in entries)
    assert any("Invalid" in e["message"] for e in entries)  # the malformed lines, logged redacted
    access = [e for e in entries if e["logger"] == "gunicorn.access"]
    checks = [e for e in access if e["operation"] == "CheckFileInfo" and e["status"] == 200]
    assert len(checks) == 10
    assert all(
        e["method"] == "GET"
        and e["path"] == path
        and e["file_id"] == file_id
        and e["bytes_in"] == 0
        and e["bytes_out"] > 0
        and e["duration_ms"] >= 0
        for e in checks
    )
    gets = [e for e in access if e["operation"] == "GetFile"]
    assert len(gets) == 2 and all(e["bytes_out"] == SIZE for e in gets)
    refused = [e for e in access if e["status"] == 401]
    assert sorted(e["file_id"] for e in refused) == sorted([file_id, "[redacted]"])  # redacted, then cut short
    assert all(e["operation"] == "CheckFileInfo" for e in refused)


def test_a_given_metrics_directory_is_emptied_at_each_start(tmp_path, database):
    directory = tmp_path / "metrics"
    for run in (1, 2):
        server = deployed(tmp_path / str(run), database, {"PROMETHEUS_MULTIPROC_DIR": str(directory)})
        try:
            file_id, token = document(server, tmp_path)
            at_once([server.url(file_id, token)] * (3 * run))
            settled_totals(f"{server.base}/metrics", 3 * run, 0)  # this start's, not the last one's too
        finally:
            server.stop()
    assert list(directory.glob("*.db"))  # kept: the directory was the admin's


def test_bytes_sent_without_sendfile_are_counted_too(tmp_path, database):
    server = deployed(tmp_path, database, {"GUNICORN_CMD_ARGS": "--no-sendfile"})
    try:
        file_id, token = document(server, tmp_path)
        at_once([server.url(file_id, token, "/contents")] * 3)
        settled_totals(f"{server.base}/metrics", 0, 3)
    finally:
        server.stop()
    gets = [line for line in server.log_text().splitlines() if f'"GET /wopi/files/{file_id}/contents ' in line]
    assert len(gets) == 3 and all(f'" 200 {SIZE} ' in line for line in gets), gets


# -- everything at debug --------------------------------------------------------------------------------------


def debug_logged(tmp_path: Path, database: str, extra_env: dict | None = None) -> LocalServer:
    """The deployed server with gunicorn at debug and an admin's logging configuration sending every library's
    debug lines to a handler of its own (on stderr, into the server's log); SQLAlchemy's too, whose loggers
    stay at WARNING unless named."""
    config = tmp_path / "logging.json"
    config.write_text(
        json.dumps(
            {
                "root": {"level": "DEBUG", "handlers": ["everything"]},
                "loggers": {"sqlalchemy.engine": {"level": "DEBUG"}},
                "handlers": {"everything": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
            }
        )
    )
    args = f"--log-level debug --log-config-json {config}"
    return deployed(tmp_path, database, {**(extra_env or {}), "GUNICORN_CMD_ARGS": args})


def test_debug_logs_of_the_database_hold_no_upload_session_or_share_link(tmp_path, database):
    server = debug_logged(tmp_path, database)
    try:
        file_id, token = document(server, tmp_path)
        api = server.api_token("bob")
        bearer = {"Authorization": f"Bearer {api['access_token']}"}
        created = requests.post(
            f"{api['graph_url']}/me/drive/root:/big.bin:/createUploadSession", json={}, headers=bearer
        )
        upload_url = created.json()["uploadUrl"]
        piece = requests.put(upload_url, data=b"x" * 10, headers={"Content-Range": "bytes 0-9/20"})
        assert piece.status_code == 202, piece.text
        asked = {"X-WOPI-Override": "GET_SHARE_URL", "X-WOPI-UrlType": "ReadOnly"}
        shared = requests.post(server.url(file_id, token), headers=asked)
        share_url = shared.json()["ShareUrl"]
        assert requests.get(share_url).status_code == 200
    finally:
        server.stop()
    log = server.log_text()
    assert "SELECT share_links." in log  # SQLAlchemy's engine logged, through the admin's handler
    secrets = {token, api["access_token"], upload_url.rsplit("/", 1)[1], share_url.rsplit("/", 1)[1]}
    assert [secret for secret in secrets if secret in log] == []


def test_debug_logs_of_the_object_store_hold_no_signature(tmp_path, database, s3_storage):
    storage = {**s3_storage, "WOPIHOST_STORAGE_URL": f"{s3_storage['WOPIHOST_STORAGE_URL']}/debug-{tmp_path.name}"}
    server = debug_logged(tmp_path, database, {**storage, "WOPIHOST_S3_DOWNLOAD_URL": s3_storage["AWS_ENDPOINT_URL"]})
    try:
        api = server.api_token("bob")
        bearer = {"Authorization": f"Bearer {api['access_token']}"}
        put = requests.put(f"{api['graph_url']}/me/drive/root:/Report.pdf:/content", data=b"%PDF", headers=bearer)
        item = requests.get(f"{api['graph_url']}/me/drive/items/{put.json()['id']}", headers=bearer).json()
        presigned = parse_qs(urlsplit(item["@microsoft.graph.downloadUrl"]).query)
        assert requests.get(item["@microsoft.graph.downloadUrl"]).content == b"%PDF"  # from the store itself
    finally:
        server.stop()
    log = server.log_text()
    secrets = {presigned["X-Amz-Signature"][0], s3_storage["AWS_ACCESS_KEY_ID"], s3_storage["AWS_SECRET_ACCESS_KEY"]}
    assert [secret for secret in secrets if secret in log] == []
    assert "Found credentials in environment variables" in log  # botocore's INFO lines are written
    assert "Making request for OperationModel" not in log  # and none below
