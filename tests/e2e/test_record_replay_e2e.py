"""Record, then replay: what `wopihost serve --record` wrote of a real run (a WOPI edit with a FileUrl and a
PutRelativeFile, a CSPP Plus save through an upload session, a Graph resumable upload) replays with
`wopihost replay` against a fresh host, which holds the same documents and nothing else, without a divergence;
against a host whose answers differ, the divergence is shown and the command exits 1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wopihost.localserver import LocalServer

from .test_recording_e2e import start, traffic

pytestmark = pytest.mark.e2e


def replay(har: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wopihost.cli", "replay", str(har), *args], capture_output=True, text=True, timeout=300
    )


def fresh_host(tmp_path: Path, name: str, sent, **env: str) -> tuple[LocalServer, dict]:
    """A host of its own (SQLite in its own directory) holding the recorded run's two documents, under the same
    names and with the same bytes, and the credentials its replay starts from."""
    workdir = tmp_path / name
    workdir.mkdir()
    host = LocalServer.start(workdir, None, workers=2, extra_env={"WOPIHOST_CSPP_PLUS": "on", **env})
    (workdir / "Big.docx").write_bytes(sent.big)
    (workdir / "Small.docx").write_bytes(sent.small)
    big_id, small_id = host.add_file(workdir / "Big.docx")["id"], host.add_file(workdir / "Small.docx")["id"]
    return host, {
        "alice": ["--wopisrc", f"{host.base}/wopi/files/{big_id}", "--token", host.token(big_id)],
        "carol": ["--wopisrc", f"{host.base}/wopi/files/{small_id}", "--token", host.token(small_id, "carol")],
        "bob": [
            "--graph-base",
            host.api_token("bob")["graph_url"],
            "--api-token",
            host.api_token("bob")["access_token"],
        ],
    }


def copy_args(host: LocalServer) -> list[str]:
    """The PutRelativeFile copy that replaying alice's session made on `host`, and a token for it."""
    [copy] = [f for f in json.loads(host.cli("files", "list", "--json")) if f["name"].endswith(".pdf")]
    return ["--wopisrc", f"{host.base}/wopi/files/{copy['id']}", "--token", host.token(copy["id"])]


def test_a_recorded_run_replays_on_a_fresh_host_and_diverges_on_a_changed_one(tmp_path, database):
    record = tmp_path / "recording"
    recorded = start(tmp_path, database, record)
    try:
        sent = traffic(recorded, tmp_path)
    finally:
        recorded.stop()
    sessions = {json.loads(p.read_text())["log"]["_wopihost"]["session"]: p for p in sorted(record.glob("*.har"))}
    # alice's edit, the copy PutRelativeFile made (its own token), carol's CSPP save, bob's Graph upload
    assert sorted(sessions) == ["{{access_token:1}}", "{{access_token:2}}", "{{access_token:3}}", "{{api_token:1}}"]

    host, args = fresh_host(tmp_path, "fresh", sent)
    try:
        for session, who in (
            ("{{access_token:1}}", "alice"),
            ("{{access_token:3}}", "carol"),
            ("{{api_token:1}}", "bob"),
        ):
            junit = tmp_path / f"{who}.xml"
            done = replay(sessions[session], *args[who], "--junit", str(junit))
            assert done.returncode == 0, f"{who}: {done.stdout}{done.stderr}"
            assert re.fullmatch(r"(\d+) requests: \1 matched, 0 diverged, 0 errors", done.stdout.splitlines()[-1]), (
                done.stdout
            )
            assert 'failures="0"' in junit.read_text() and 'errors="0"' in junit.read_text()
        done = replay(sessions["{{access_token:2}}"], *copy_args(host))
        assert done.returncode == 0, done.stdout + done.stderr
        # what the replays did is on the fresh host: carol's save through the upload session and bob's upload
        small = [f for f in json.loads(host.cli("files", "list", "--json")) if f["name"] == "Small.docx"]
        assert small and small[0]["size"] != len(sent.small)
    finally:
        host.stop()
    assert "Traceback" not in host.log_text()

    # A host that answers differently: without CSPP Plus, CheckFileInfo says so and the upload session is refused.
    changed, args = fresh_host(tmp_path, "changed", sent, WOPIHOST_CSPP_PLUS="off")
    try:
        done = replay(sessions["{{access_token:3}}"], *args["carol"], "--junit", str(tmp_path / "changed.xml"))
    finally:
        changed.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DIVERGED #3 CreateUploadSession" in done.stdout and "status: recorded 200, actual 501" in done.stdout
    assert re.search(r"^9 requests: 3 matched, 2 diverged, 4 errors$", done.stdout, re.MULTILINE), done.stdout
    assert 'failures="0"' not in (tmp_path / "changed.xml").read_text()
