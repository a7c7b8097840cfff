"""The wopihost command, run in-process with click's runner against a real database and data directory."""

import base64
import hashlib
import io
import json
import os
import pty
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import timedelta

import click
import pytest
import sqlalchemy as sa
import webtest
from click.testing import CliRunner
from werkzeug.serving import make_server

from wopihost import __version__, db
from wopihost.app import create_app
from wopihost.cli import main
from wopihost.config import Settings
from wopihost.localserver import WOPIHOST
from wopihost.models import CoauthLock, Lock

from .conftest import PG_URL
from .helpers import WopiClient
from .test_host_page import DISCOVERY, PUBLIC, Page


def test_files_add_and_list(run, tmp_path):
    source = tmp_path / "report.xlsx"
    source.write_bytes(b"sheet")
    added = json.loads(run("files", "add", str(source), "--owner", "carol", "--json").output)
    assert added["name"] == "report.xlsx" and added["size"] == 5 and added["owner"] == "carol"
    renamed = json.loads(run("files", "add", str(source), "--name", "Budget.xlsx", "--json").output)
    assert renamed["name"] == "Budget.xlsx" and renamed["owner"] == "demo"
    listed = json.loads(run("files", "list", "--json").output)
    assert [f["id"] for f in listed] == [added["id"], renamed["id"]]
    assert added["id"] in run("files", "list").output


def test_files_add_keeps_names_apart_that_windows_keeps_apart(run, tmp_path):
    """Beside "Maße.txt", "Masse.txt" is a free name (it became "Masse (2).txt"); "MASSE.txt" is not."""
    added = [add(run, tmp_path, name)["name"] for name in ("Maße.txt", "Masse.txt", "ﬁle.txt", "file.txt")]
    assert added == ["Maße.txt", "Masse.txt", "ﬁle.txt", "file.txt"]
    assert add(run, tmp_path, "MASSE.txt")["name"] == "MASSE (2).txt"


def test_files_add_refuses_an_invalid_name(run, tmp_path):
    source = tmp_path / "x.docx"
    source.write_bytes(b"")
    result = run("files", "add", str(source), "--name", "../escape.docx", ok=False)
    assert result.exit_code != 0
    assert "not allowed" in result.output


@pytest.mark.parametrize(
    "args, where, message",
    [
        (["--folder", "Plans", "--name", "a/b.docx"], "'--name'", "not allowed: /: 'a/b.docx'"),
        (["--folder", "Plans", "--name", ""], "'--name'", "the name is empty"),
        (["--folder", "Plans/.."], "'--folder'", "only of dots and spaces: '..'"),
        (["--folder", "Plans/Q1", "--name", "CON.docx"], "'--name'", "reserved device name"),
    ],
)
def test_files_add_checks_every_name_before_it_makes_a_folder(run, served, tmp_path, args, where, message):
    """The folders of --folder were made before the file's name was refused: the command failed, and the
    owner's drive had a new empty folder (or two) all the same. An empty --name was the file's own name."""
    source = tmp_path / "x.docx"
    source.write_bytes(b"x")
    result = run("files", "add", str(source), *args, ok=False)
    assert result.exit_code == 2 and f"Invalid value for {where}" in result.stderr and message in result.stderr
    assert "nothing was stored" in result.stderr
    api = json.loads(run("token", "issue", "--api", "--user", "demo", "--json").output)["access_token"]
    children = served.get("/v1.0/me/drive/root/children", headers={"Authorization": f"Bearer {api}"}).json
    assert children["value"] == []


def test_files_add_names_a_file_by_its_own_name_only_if_that_is_valid(run, tmp_path):
    source = tmp_path / ".profile"
    source.write_bytes(b"x")
    result = run("files", "add", str(source), ok=False)
    assert result.exit_code == 2 and "Invalid value for 'PATH'" in result.stderr
    assert "starts with a dot: '.profile'; give --name" in result.stderr
    assert run("files", "add", str(source), "--name", "profile.txt").output.split()[1] == "profile.txt"


def test_files_add_of_a_file_that_fails_to_be_read_leaves_nothing(run, served):
    """The folders of --folder (and a new owner with a drive) were made before a byte of PATH was read: a read
    that failed (EIO) left them behind, and the failure was blamed on the data directory ("not writable").
    /proc/self/mem is a regular file whose first read fails so, for root too."""
    result = run("files", "add", "/proc/self/mem", "--name", "x.bin", "--owner", "erin", "--folder", "A/B", ok=False)
    assert result.exit_code == 1
    assert result.stderr == "Error: cannot read /proc/self/mem: Input/output error; nothing was stored\n"
    assert json.loads(run("drives", "list", "--json").output) == []
    api = json.loads(run("token", "issue", "--api", "--user", "erin", "--json").output)["access_token"]
    children = served.get("/v1.0/me/drive/root/children", headers={"Authorization": f"Bearer {api}"}).json
    assert children["value"] == []


def test_files_add_makes_its_folders_with_the_file_or_not_at_all(run, tmp_path):
    """A name of --folder that a file has fails (409) with the folders above it not made."""
    source = tmp_path / "B"
    source.write_bytes(b"x")
    run("files", "add", str(source), "--folder", "A")
    result = run("files", "add", str(source), "--folder", "A/B/C", "--name", "c.txt", ok=False)
    assert result.exit_code == 1 and "an item named B already exists" in result.stderr
    added = add(run, tmp_path, "d.txt", b"d", "--folder", "A/B2/C")
    info = json.loads(run("files", "info", added["id"], "--json").output)
    assert info["path"] == "A/B2/C/d.txt"
    assert [f["name"] for f in json.loads(run("files", "list", "--json").output)] == ["B", "d.txt"]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_files_add_refuses_what_is_not_a_regular_file(env, tmp_path, kind):
    """A named pipe hung `files add` until something wrote to it; a device such as /dev/zero was read until the
    size limit. Neither is a file to add."""
    path = tmp_path / "pipe" if kind == "fifo" else "/dev/zero"
    if kind == "fifo":
        os.mkfifo(path)
    result = subprocess.run(
        [*WOPIHOST, "files", "add", str(path)],
        env={**os.environ, **env, "WOPIHOST_MAX_FILE_SIZE": "1MiB"},  # what /dev/zero gets to before it is refused
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for 'PATH': {path} is not a regular file: nothing was stored" in result.stderr
    assert result.stdout == ""


def test_token_issue_gives_a_working_token_and_curl(run, served, tmp_path):
    source = tmp_path / "a.docx"
    source.write_bytes(b"content")
    file_id = json.loads(run("files", "add", str(source), "--json").output)["id"]
    issued = json.loads(run("token", "issue", file_id, "--user", "dave", "--ttl", "2h", "--json").output)
    assert issued["wopi_src"] == f"https://wopi.example.test/wopi/files/{file_id}"
    assert issued["can_write"] is True
    info = served.get(f"/wopi/files/{file_id}?access_token={issued['access_token']}").json
    assert info["UserId"] == "dave" and info["UserCanWrite"] is True
    text = run("token", "issue", file_id, "--user", "dave", "--read-only").output
    assert "access_token_ttl:" in text and "curl -s 'https://wopi.example.test/wopi/files/" in text
    assert "read only" in text


def test_token_ttl_is_epoch_milliseconds(run, tmp_path):
    import time

    source = tmp_path / "a.docx"
    source.write_bytes(b"")
    file_id = json.loads(run("files", "add", str(source), "--json").output)["id"]
    issued = json.loads(run("token", "issue", file_id, "--user", "u", "--ttl", "1h", "--json").output)
    assert abs(issued["access_token_ttl"] - (time.time() + 3600) * 1000) < 5000


def test_token_issue_for_unknown_file_fails(run):
    result = run("token", "issue", "nope", "--user", "u", ok=False)
    assert result.exit_code != 0 and "not found" in result.output


def test_token_revoke(run, served, tmp_path):
    source = tmp_path / "a.docx"
    source.write_bytes(b"")
    file_id = json.loads(run("files", "add", str(source), "--json").output)["id"]
    token = json.loads(run("token", "issue", file_id, "--user", "u", "--json").output)["access_token"]
    assert "revoked 1 token" in run("token", "revoke", token).output
    assert served.get(f"/wopi/files/{file_id}?access_token={token}", expect_errors=True).status_int == 401
    again = run("token", "revoke", "--user", "u", ok=False)
    assert again.exit_code == 1 and "no live token matched: nothing was revoked" in again.output
    # a file is revoked whatever its tokens: those handed out for it through others have no row of their own
    assert run("token", "revoke", "--file", file_id).output.startswith(f"revoked 0 tokens issued for {file_id}; ")
    unknown = run("token", "revoke", "--file", "NoSuchFile000000000000", ok=False)
    assert unknown.exit_code == 1 and unknown.stderr == "Error: file not found: NoSuchFile000000000000\n"
    empty = run("token", "revoke", "--file", "", "--user", "u", ok=False)  # "" is the resource of API tokens
    assert empty.exit_code == 2 and "a file id, not empty" in empty.stderr


def test_lock_break(run, served, tmp_path):
    source = tmp_path / "a.docx"
    source.write_bytes(b"")
    file_id = json.loads(run("files", "add", str(source), "--json").output)["id"]
    token = json.loads(run("token", "issue", file_id, "--user", "u", "--json").output)["access_token"]
    url = f"/wopi/files/{file_id}?access_token={token}"
    served.post(url, headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "zombie"})
    assert "removed lock 'zombie'" in run("lock", "break", file_id).output
    assert served.post(url, headers={"X-WOPI-Override": "GET_LOCK"}).headers["X-WOPI-Lock"] == ""
    again = run("lock", "break", file_id, ok=False)
    assert again.exit_code == 1 and f"file {file_id} is not locked" in again.output


def test_demo_creates_one_document_and_fresh_tokens(run, served):
    first = json.loads(run("demo", "--json").output)
    second = json.loads(run("demo", "--json").output)
    assert first["file_id"] == second["file_id"] and first["access_token"] != second["access_token"]
    content = served.get(f"/wopi/files/{first['file_id']}/contents?access_token={first['access_token']}").body
    assert content.startswith(b"PK\x03\x04")  # a real .docx (zip)


def test_commands_refuse_an_unmigrated_database(tmp_path):
    env = {"WOPIHOST_DATA_DIR": str(tmp_path / "fresh"), "WOPIHOST_SECRET_KEY": "x" * 32}
    result = CliRunner().invoke(main, ["files", "list"], env=env)
    assert result.exit_code != 0 and "wopihost db upgrade" in result.output
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    assert CliRunner().invoke(main, ["files", "list"], env=env).exit_code == 0


def test_sessions_list_and_gc(run, served, tmp_path, env):
    source = tmp_path / "a.docx"
    source.write_bytes(b"")
    file_id = json.loads(run("files", "add", str(source), "--json").output)["id"]
    token = json.loads(run("token", "issue", file_id, "--user", "u", "--json").output)["access_token"]
    url = f"/wopi/files/{file_id}?access_token={token}"
    assert run("sessions", "list").output == "no upload sessions\n"
    assert json.loads(run("sessions", "list", "--json").output) == []
    session = served.post(url, headers={"X-WOPI-Override": "CREATE_UPLOAD_SESSION"}).json["UploadSessionToken"]
    served.post(
        url,
        b"12345",
        headers={
            "X-WOPI-Override": "UPDATE_UPLOAD_SESSION",
            "X-WOPI-UploadSessionToken": session,
            "X-WOPI-ContentRangeOffset": "0",
            "X-WOPI-ContentRangeLength": "5",
        },
    )
    listed = json.loads(run("sessions", "list", "--json").output)
    assert [(s["file_id"], s["bytes"], s["expired"]) for s in listed] == [(file_id, 5, False)]
    assert listed[0]["id"] == session[:6] + "..."  # a credential: never whole
    assert session not in run("sessions", "list").output  # never the whole token
    assert "deleted 0 expired upload and workbook sessions" in run("gc").output
    assert run("gc", "--grace", "soon", ok=False).exit_code != 0


def test_validate_is_the_validators_command_line(run):
    usage = run("validate", "--help").output
    assert "usage: wopihost validate" in usage and "--testcases" in usage and "--proof-keys" in usage
    missing = run("validate", "--wopisrc", "http://127.0.0.1:1/wopi/files/x", ok=False)
    assert missing.exit_code == 2 and "--token" in missing.output
    absent = run(
        "validate",
        "--wopisrc",
        "http://127.0.0.1:1/wopi/files/x",
        "--token",
        "t",
        "--testcases",
        "/nonexistent/TestCases.xml",
        ok=False,
    )
    assert absent.exit_code != 0 and "TestCases.xml" in absent.output


# -- files info, files rm, lock list --------------------------------------------------------------------


def add(run, tmp_path, name: str = "Doc.docx", content: bytes = b"content", *options: str) -> dict:
    source = tmp_path / name
    source.write_bytes(content)
    return json.loads(run("files", "add", str(source), "--json", *options).output)


def wopi_client(run, served, file_id: str) -> WopiClient:
    token = json.loads(run("token", "issue", file_id, "--user", "u", "--json").output)["access_token"]
    return WopiClient(served, file_id, token)


def coauth_lock(client: WopiClient, lock_id: str, lock_type: str = "Coauth"):
    return client.op(
        "GET_COAUTH_LOCK",
        X_WOPI_CoauthLockId=lock_id,
        X_WOPI_CoauthLockType=lock_type,
        X_WOPI_CoauthLockExpirationTimeout="600",
    )


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"wopihost {__version__}\n"


def test_the_launcher_runs_the_wopihost_on_the_path_not_one_in_the_current_directory(tmp_path):
    """LocalServer starts servers with WOPIHOST: started from inside another checkout (bench/compare.py
    --baseline), it must run the build PYTHONPATH or the environment names, not the checkout it stands in."""
    shadow = tmp_path / "wopihost"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('the wopihost of the current directory')\n")
    (shadow / "cli.py").write_text("")
    result = subprocess.run([*WOPIHOST, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wopihost {__version__}\n"


def test_files_info_says_where_a_file_is_and_what_holds_it(run, served, tmp_path):
    added = add(run, tmp_path, "Report.docx", b"twelve bytes", "--folder", "a/b", "--owner", "carol")
    info = json.loads(run("files", "info", added["id"], "--json").output)
    assert {k: info[k] for k in added} == added
    assert (info["path"], info["owner"], info["size"], info["lock"], info["coauth_locks"]) == (
        "a/b/Report.docx",
        "carol",
        12,
        None,
        [],
    )
    drive = [d for d in json.loads(run("drives", "list", "--json").output) if d["members"] == ["carol"]][0]
    assert info["drive_id"] == drive["id"] and info["folder_id"] and info["modified_by"] == "carol"
    assert info["sha256"] == base64.b64encode(hashlib.sha256(b"twelve bytes").digest()).decode()
    assert wopi_client(run, served, added["id"]).op("LOCK", X_WOPI_Lock="L1").status_int == 200
    locked = json.loads(run("files", "info", added["id"], "--json").output)
    assert locked["lock"]["lock_id"] == "L1" and locked["lock"]["expires"] > locked["modified"]
    text = run("files", "info", added["id"]).output
    assert "/a/b/Report.docx" in text and "12 bytes" in text and "lock 'L1' until" in text


def test_files_rm_deletes_an_unlocked_file(run, served, tmp_path):
    added, kept = add(run, tmp_path, "Gone.docx"), add(run, tmp_path, "Kept.docx")
    client = wopi_client(run, served, added["id"])
    assert run("files", "rm", added["id"]).output == f"deleted {added['id']} (Gone.docx, 7 bytes)\n"
    assert client.check_file_info().status_int == 404
    assert [f["id"] for f in json.loads(run("files", "list", "--json").output)] == [kept["id"]]
    again = run("files", "rm", added["id"], ok=False)
    assert again.exit_code == 1 and again.stderr == f"Error: file not found: {added['id']}\n"


def test_files_rm_refuses_a_locked_file_unless_forced(run, served, tmp_path):
    wopi_locked, coauth_locked = add(run, tmp_path, "Wopi.docx"), add(run, tmp_path, "Coauth.docx")
    first, second = wopi_client(run, served, wopi_locked["id"]), wopi_client(run, served, coauth_locked["id"])
    assert first.op("LOCK", X_WOPI_Lock="L1").status_int == 200
    assert coauth_lock(second, "C1").status_int == 200
    for file_id, held in ((wopi_locked["id"], "lock 'L1'"), (coauth_locked["id"], "Coauth lock 'C1'")):
        refused = run("files", "rm", file_id, ok=False)
        assert refused.exit_code == 1 and "is locked" in refused.stderr and held in refused.stderr
        assert "--force" in refused.stderr and refused.stdout == ""
    assert first.get_file().body == second.get_file().body == b"content"  # both still there
    forced = json.loads(run("files", "rm", wopi_locked["id"], "--force", "--json").output)
    assert forced == {"id": wopi_locked["id"], "name": "Wopi.docx", "size": 7, "deleted": True, "removed_locks": ["L1"]}
    assert "removed its locks 'C1'" in run("files", "rm", coauth_locked["id"], "--force").output
    assert first.check_file_info().status_int == 404 and second.check_file_info().status_int == 404
    assert json.loads(run("lock", "list", "--json").output) == []


def test_lock_break_frees_a_file_held_by_coauth_locks(run, served, tmp_path):
    """A crashed coauthoring client's locks would hold the file until they expire: `lock break` removes them
    all at once, and the clients see a new, empty coauth table."""
    added = add(run, tmp_path)
    client = wopi_client(run, served, added["id"])
    assert coauth_lock(client, "C1").status_int == 200
    assert coauth_lock(client, "C2", "CoauthExclusive").status_int == 200
    before = client.op("GET_COAUTH_TABLE").headers["X-WOPI-CoauthTableVersion"]
    assert client.lock("L1").status_int == 409  # the coauth locks hold the file against WOPI locks

    assert run("lock", "break", added["id"]).output == "removed Coauth lock 'C1', CoauthExclusive lock 'C2'\n"
    assert json.loads(run("files", "info", added["id"], "--json").output)["coauth_locks"] == []
    assert json.loads(run("lock", "list", "--json").output) == []
    table = client.op("GET_COAUTH_TABLE", X_WOPI_CoauthTableVersion=before)
    assert table.headers["X-WOPI-CoauthTableVersion"] != before and table.json == {"CoauthTable": []}
    refreshed = client.op("REFRESH_COAUTH_LOCK", X_WOPI_CoauthLockId="C2", X_WOPI_CoauthLockExpirationTimeout="600")
    assert refreshed.status_int == 409  # its holder learns it is gone, and takes it again if it still lives
    assert client.lock("L1").status_int == 200
    assert run("lock", "break", added["id"]).output == "removed lock 'L1'\n"

    assert coauth_lock(client, "C3").status_int == 200
    broken = json.loads(run("lock", "break", added["id"], "--json").output)
    assert broken == {"file_id": added["id"], "lock_id": None, "coauth_locks": [{"lock_id": "C3", "type": "Coauth"}]}
    again = run("lock", "break", added["id"], ok=False)
    assert again.exit_code == 1 and f"file {added['id']} is not locked: there was no lock to break" in again.stderr


def test_lock_break_does_not_count_expired_locks(run, served, tmp_path):
    added = add(run, tmp_path)
    services = served.app.extensions["wopihost"]
    past = services.clock.now() - timedelta(seconds=1)
    with services.db.write() as s:
        s.add(Lock(file_id=added["id"], lock_id="old", expires_at=past))
        s.add(
            CoauthLock(
                file_id=added["id"],
                lock_id="gone",
                lock_type="Coauth",
                lock_metadata="",
                user_friendly_name="u",
                acquired_at=past,
                expires_at=past,
            )
        )
    result = run("lock", "break", added["id"], ok=False)
    assert result.exit_code == 1 and "is not locked: there was no lock to break" in result.stderr


def test_lock_list_shows_live_locks_of_both_kinds(run, served, tmp_path):
    assert run("lock", "list").output == "no live locks\n"
    assert json.loads(run("lock", "list", "--json").output) == []
    one, two, idle = add(run, tmp_path, "One.docx"), add(run, tmp_path, "Two.docx"), add(run, tmp_path, "Idle.docx")
    assert wopi_client(run, served, one["id"]).op("LOCK", X_WOPI_Lock="L1").status_int == 200
    assert coauth_lock(wopi_client(run, served, two["id"]), "C1").status_int == 200
    services = served.app.extensions["wopihost"]
    with services.db.write() as s:  # a lock whose expiry has passed is no lock
        s.add(Lock(file_id=idle["id"], lock_id="old", expires_at=services.clock.now() - timedelta(seconds=1)))
    rows = json.loads(run("lock", "list", "--json").output)
    assert sorted((r["file_id"], r["name"], r["lock_id"], r["type"]) for r in rows) == sorted(
        [(one["id"], "One.docx", "L1", "WOPI"), (two["id"], "Two.docx", "C1", "Coauth")]
    )
    assert all(set(r) == {"file_id", "name", "lock_id", "type", "expires"} for r in rows)
    text = run("lock", "list").output
    assert "One.docx  WOPI lock 'L1'" in text and "Two.docx  Coauth lock 'C1'" in text and "old" not in text
    broken = json.loads(run("lock", "break", one["id"], "--json").output)
    assert broken == {"file_id": one["id"], "lock_id": "L1", "coauth_locks": []}
    assert [r["lock_id"] for r in json.loads(run("lock", "list", "--json").output)] == ["C1"]


# -- values refused before anything happens -------------------------------------------------------------


@pytest.mark.parametrize("ttl", ["0", "0s", "-5m", "-1", "soon", "36501d", "99999999999999d"])
@pytest.mark.parametrize("kind", ["file", "api"])
def test_token_lifetimes_must_be_more_than_zero_and_at_most_100_years(run, tmp_path, ttl, kind):
    file_id = add(run, tmp_path)["id"]
    result = run("token", "issue", *([file_id] if kind == "file" else ["--api"]), "--user", "u", "--ttl", ttl, ok=False)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        "Invalid value for '--ttl': must be a duration of more than 0 and at most 100 years, such as 30m, 10h or 2d, "
        f"not '{ttl}'" in result.stderr
    )
    assert "access_token" not in result.stdout
    assert run("token", "revoke", "--user", "u", ok=False).exit_code == 1  # none was issued


def test_files_add_refuses_a_file_over_the_limit_before_reading_it(env, tmp_path):
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as out:  # sparse: reading its terabyte would take minutes
        out.truncate((1 << 40) + 1)
    limited = {**env, "WOPIHOST_MAX_FILE_SIZE": "1TiB"}
    started = time.monotonic()
    result = CliRunner().invoke(main, ["files", "add", str(huge)], env=limited)
    assert time.monotonic() - started < 30  # where reading it would take minutes
    assert result.exit_code == 1 and result.stderr == (
        f"Error: {huge} is too large: {(1 << 40) + 1} bytes, more than WOPIHOST_MAX_FILE_SIZE ({1 << 40} bytes); "
        "nothing was stored\n"
    )
    small = {**env, "WOPIHOST_MAX_FILE_SIZE": "1KiB"}
    (tmp_path / "fits.bin").write_bytes(b"x" * 1024)
    (tmp_path / "over.bin").write_bytes(b"x" * 1025)
    assert CliRunner().invoke(main, ["files", "add", str(tmp_path / "fits.bin")], env=small).exit_code == 0
    over = CliRunner().invoke(main, ["files", "add", str(tmp_path / "over.bin")], env=small)
    assert over.exit_code == 1 and "too large" in over.stderr
    listed = json.loads(CliRunner().invoke(main, ["files", "list", "--json"], env=env).output)
    assert [f["name"] for f in listed] == ["fits.bin"]


def test_revoking_nothing_fails(run, tmp_path):
    file_id = add(run, tmp_path)["id"]
    other_id = add(run, tmp_path, "Other.docx")["id"]
    elsewhere = json.loads(run("token", "issue", other_id, "--user", "u", "--json").output)["access_token"]
    for args in (["garbage"], ["--user", "nobody"], [elsewhere, "--file", file_id]):
        result = run("token", "revoke", *args, ok=False)
        assert result.exit_code == 1 and "nothing was revoked" in result.stderr, args
    token = json.loads(run("token", "issue", file_id, "--user", "u", "--json").output)["access_token"]
    assert json.loads(run("token", "revoke", token, "--json").output) == {"revoked": 1}
    again = run("token", "revoke", token, ok=False)
    assert again.exit_code == 1 and again.stderr.startswith("Error: that token is not a live token")


@pytest.fixture
def hosting(env, tmp_path):
    """The app of `run`'s settings with a WOPI client (the host page's discovery), as a browser reaches it."""
    discovery = tmp_path / "discovery.xml"
    discovery.write_text(DISCOVERY)
    app = create_app(Settings.from_env({**env, "WOPIHOST_DISCOVERY_URL": str(discovery), "WOPIHOST_PROOF_KEYS": "off"}))
    yield webtest.TestApp(app)
    app.extensions["wopihost"].db.dispose()


def wopi(kind: str, item_id: str, token: str) -> str:
    return f"/wopi/{kind}/{item_id}?access_token={token}"


def test_removing_a_member_revokes_their_wopi_tokens_for_the_drive(run, hosting):
    """remove-member took a shared drive away from the user's API token only: the WOPI tokens they held for its
    files and folders, and those the launch API had made them, kept working for up to 10 hours."""
    services = hosting.app.extensions["wopihost"]
    team = json.loads(
        run("drives", "create", "--name", "Team", "--member", "alice", "--member", "bob", "--json").output
    )
    other = json.loads(run("drives", "create", "--name", "Other", "--member", "alice", "--json").output)
    plans, _ = services.tree.create_folder(services.containers.root_of(team["id"]).id, "Plans", "fail", "alice")
    plan = services.files.create("alice", plans.id, "Plan.docx", io.BytesIO(b"plan"))
    elsewhere = services.files.create(
        "alice", services.containers.root_of(other["id"]).id, "Else.docx", io.BytesIO(b"x")
    )
    own = services.add_file("alice", "Own.docx", io.BytesIO(b"mine"))
    api, _ = services.issue_api_token("alice", can_write=True)
    bearer = {"Authorization": f"Bearer {api.token}"}

    def link(file) -> str:
        made = hosting.post_json("/host/links", {"fileId": file.id, "action": "edit"}, headers=bearer).json
        return made["url"].removeprefix(PUBLIC)

    def launched(file) -> str:
        return wopi("files", file.id, Page(hosting.get(link(file)).text).fields["access_token"])

    def token(file, user: str = "alice", folders: str = "") -> str:
        return wopi("files", file.id, services.issue_token(file.id, user, True, folders=folders).token)

    def container_token(folder_id: str) -> str:
        return wopi("containers", folder_id, services.issue_container_token(folder_id, "alice", "lcmw").token)

    file_token = token(plan, folders="l")
    ancestry = hosting.get(file_token.replace("?", "/ancestry?")).json["AncestorsWithRootFirst"]
    urls = {
        "file": file_token,
        "container": container_token(plans.id),
        "derived": ancestry[-1]["Url"].removeprefix(PUBLIC),  # Plans, with the file token's jti
        "launch API": launched(plan),
        "launch link": link(plan),
        "bob's": token(plan, "bob"),
        "other drive": token(elsewhere),
        "other drive's launch API": launched(elsewhere),
        "own drive": token(own),
        "own container": container_token(own.folder_id),
    }
    taken = {"file", "container", "derived", "launch API"}

    def statuses() -> dict[str, int]:
        return {name: hosting.get(url, expect_errors=True).status_int for name, url in urls.items()}

    assert set(statuses().values()) == {200}
    removed = json.loads(run("drives", "remove-member", team["id"], "alice", "--json").output)
    assert statuses() == {name: 401 if name in taken else 200 for name in urls} | {"launch link": 403}
    # the file and container tokens, and the tokens of the two launch links
    assert removed == {"drive_id": team["id"], "user": "alice", "member": False, "revoked": 4}
    # the API token stays, and reaches what alice is still a member of
    assert [
        hosting.get(f"/v1.0/drives/{d['id']}", headers=bearer, expect_errors=True).status_int for d in (team, other)
    ] == [403, 200]
    assert (
        run("drives", "remove-member", team["id"], "bob").output
        == f"bob no longer reaches {team['id']}; revoked 1 token\n"
    )
    assert hosting.get(urls["bob's"], expect_errors=True).status_int == 401


# -- progress bars --------------------------------------------------------------------------------------


def on_a_terminal(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, str]:
    """`wopihost ARGS` with its stderr on a pseudo-terminal; the result and what the terminal showed."""
    main_fd, terminal = pty.openpty()
    process = subprocess.Popen([*WOPIHOST, *args], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            piece = os.read(main_fd, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not piece:
            break
        shown += piece
    os.close(main_fd)
    stdout = process.stdout.read()
    process.stdout.close()
    return subprocess.CompletedProcess(args, process.wait(), stdout), shown.decode(errors="replace")


def test_long_operations_show_progress_on_a_terminal_only(run, env, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20) * 20)
    added, shown = on_a_terminal(["files", "add", str(big), "--json"], env)
    assert added.returncode == 0 and json.loads(added.stdout)["size"] == 20 << 20
    assert "adding big.bin" in shown and "100%" in shown
    collected, shown = on_a_terminal(["gc", "--json"], env)
    assert collected.returncode == 0 and json.loads(collected.stdout)["blobs"] == 0
    assert "checking unreferenced blobs" in shown
    quiet = subprocess.run([*WOPIHOST, "files", "add", str(big)], env={**os.environ, **env}, capture_output=True)
    assert quiet.returncode == 0 and quiet.stderr == b""  # not a terminal: no bar


# -- one JSON vocabulary ----------------------------------------------------------------------------------


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_every_command_has_json_but_the_validators_own_command_line():
    without = [" ".join(path) for path, command in commands(main) if "as_json" not in {p.name for p in command.params}]
    assert without == ["validate"]


SYNONYMS = {"file", "fileId", "owner_id", "user_id", "drive", "folder", "item", "token"}


def keys_of(value) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            if key != "activity":  # a client's own JSON, as it sent it
                yield from keys_of(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from keys_of(inner)


def test_json_output_shares_one_vocabulary(run, served, env, tmp_path, database):
    """Every command's --json, parsed: each object's own id is `id`, references are `<kind>_id`, users by
    role, and no two commands name the same thing differently."""
    out = {}

    def j(*args: str, ok: bool = True):
        result = run(*args, "--json", ok=ok)
        out[" ".join(args)] = value = json.loads(result.stdout)
        return value

    (tmp_path / "x.docx").write_bytes(b"x")
    j("db", "upgrade")
    assert j("db", "current") == {
        "revision": out["db upgrade"]["head"],
        "head": out["db upgrade"]["head"],
        "state": "current",
        "at_head": True,
    }
    added = j("files", "add", str(tmp_path / "x.docx"))
    assert set(added) == {"id", "name", "owner", "size", "version", "modified"}
    assert j("files", "list") == [added]
    assert j("files", "info", added["id"])["id"] == added["id"]
    issued = j("token", "issue", added["id"], "--user", "u")
    assert issued["file_id"] == added["id"] and "id" not in issued
    api = j("token", "issue", "--api", "--user", "u")
    info = j("files", "info", added["id"])
    container = j("token", "issue", "--container", info["folder_id"], "--user", "u")
    assert container["container_id"] == info["folder_id"]
    assert j("token", "revoke", issued["access_token"]) == {"revoked": 1}
    drive = j("drives", "create", "--name", "Team", "--member", "u")
    assert drive["id"] != api["drive_id"] and drive["members"] == ["u"]
    twice = j("drives", "create", "--name", "Pair", "--member", "u", "--member", "w", "--member", "u")
    assert twice["members"] == ["u", "w"]
    assert j("drives", "add-member", drive["id"], "v") == {"drive_id": drive["id"], "user": "v", "member": True}
    removed = j("drives", "remove-member", drive["id"], "v")
    assert removed == {"drive_id": drive["id"], "user": "v", "member": False, "revoked": 0}
    assert {d["id"] for d in j("drives", "list")} >= {drive["id"], api["drive_id"]}
    services = served.app.extensions["wopihost"]
    link = services.shares.link(added["id"], "ReadOnly", "u")
    assert [s["item_id"] for s in j("shares", "list")] == [added["id"]]
    assert j("shares", "revoke", link.id) == {"revoked": 1}
    # the list shows no link whole: one of an item's links is revoked by its type
    for kind in ("ReadWrite", "ReadOnly"):
        services.shares.link(added["id"], kind, "u")
    assert j("shares", "revoke", "--item", added["id"], "--type", "ReadWrite") == {"revoked": 1}
    assert [s["type"] for s in j("shares", "list") if s["revoked"] is None] == ["ReadOnly"]
    alone = run("shares", "revoke", link.id, "--type", "ReadOnly", ok=False)  # a type goes with an item
    assert alone.exit_code == 2 and "--type goes with --item" in alone.output
    assert j("activities", added["id"]) == []
    assert j("sessions", "list") == [] and j("lock", "list") == []
    assert wopi_client(run, served, added["id"]).op("LOCK", X_WOPI_Lock="L").status_int == 200
    assert j("lock", "break", added["id"]) == {"file_id": added["id"], "lock_id": "L", "coauth_locks": []}
    assert set(j("gc")) == {"sessions", "blobs", "partial_writes", "tokens"}
    assert j("demo")["file_id"] != added["id"]
    assert j("files", "rm", added["id"])["id"] == added["id"]
    doctor = CliRunner().invoke(
        main, ["doctor", "--timeout", "1", "--json"], env={**env, "WOPIHOST_PUBLIC_URL": "http://127.0.0.1:1"}
    )
    assert doctor.exit_code == 1  # the public URL reaches nothing
    report = out["doctor"] = json.loads(doctor.stdout)
    assert report["ok"] is False and report["problems"] == 1
    assert all(set(check) == {"ok", "what", "fix"} for check in report["checks"])
    if database == "sqlite":
        backup = j("backup", str(tmp_path / "copy.sqlite3"))
        assert set(backup) == {"database", "size", "revision", "source", "blobs"}
    for command, value in out.items():
        keys = set(keys_of(value))
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", key) for key in keys), command
        assert not keys & SYNONYMS, command


@pytest.mark.parametrize(
    "args",
    [
        ["token", "issue", "F", "--user", "a b"],
        ["token", "issue", "--api", "--user", ""],
        ["files", "add", "PATH", "--owner", "x" * 65],
        ["drives", "create", "--name", "T", "--member", "a/b"],
        ["drives", "add-member", "D", "a b"],
    ],
    ids=" ".join,
)
def test_user_ids_are_checked_before_anything_runs(run, tmp_path, args):
    source = tmp_path / "a.docx"
    source.write_bytes(b"")
    result = run(*[str(source) if a == "PATH" else a for a in args], ok=False)
    assert result.exit_code == 2 and "user ids are 1 to 64 characters" in result.stderr
    assert json.loads(run("files", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    "name, message",
    [
        ("x" * 257, "is at most 256 characters, not 257"),  # PostgreSQL: a DataError traceback; SQLite kept it
        ("", "cannot be empty"),
        ("  ", "cannot be empty"),
        ("Team\x1b[2J", "cannot hold control characters: 'Team\\x1b[2J'"),
    ],
    ids=["too long", "empty", "blank", "an escape sequence"],
)
def test_drives_create_refuses_a_name_a_drive_cannot_have(run, name, message):
    result = run("drives", "create", "--name", name, ok=False)
    assert result.exit_code == 2 and f"Invalid value for '--name': a drive's name {message}" in result.stderr
    assert [d["kind"] for d in json.loads(run("drives", "list", "--json").stdout)] == []
    longest = json.loads(run("drives", "create", "--name", "é" * 256, "--json").stdout)
    assert [d["name"] for d in json.loads(run("drives", "list", "--json").stdout)] == [longest["name"]] == ["é" * 256]


@contextmanager
def refusing_member(url: str, user: str) -> Iterator[None]:
    """The database refuses to make `user` a member of any drive: a failure that comes after what a transaction
    did before it (a trigger, dropped again: PostgreSQL's schema outlives the test)."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        create = [
            "CREATE TRIGGER refuse_member BEFORE INSERT ON drive_members "
            f"WHEN NEW.user_id = '{user}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
        drop = ["DROP TRIGGER refuse_member"]
    else:
        create = [
            "CREATE FUNCTION refuse_member() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.user_id = '{user}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_member BEFORE INSERT ON drive_members FOR EACH ROW EXECUTE FUNCTION refuse_member()",
        ]
        drop = ["DROP TRIGGER refuse_member ON drive_members", "DROP FUNCTION refuse_member()"]
    try:
        with engine.begin() as conn:
            for statement in create:
                conn.exec_driver_sql(statement)
        yield
    finally:
        with engine.begin() as conn:
            for statement in drop:
                conn.exec_driver_sql(statement)
        engine.dispose()


def test_drives_create_makes_the_drive_with_all_its_members_or_nothing(run, env):
    """Each member was added in a transaction of its own, after the drive's: a failure at the second left a drive
    with the first member only."""
    with refusing_member(env["WOPIHOST_DATABASE_URL"], "bob"), pytest.raises(sa.exc.DBAPIError, match="refused"):
        run("drives", "create", "--name", "Team", "--member", "alice", "--member", "bob")
    assert json.loads(run("drives", "list", "--json").output) == []
    created = json.loads(run("drives", "create", "--name", "Team", "--member", "alice", "--json").output)
    listed = json.loads(run("drives", "list", "--json").output)
    assert sorted((d["kind"], d["members"]) for d in listed) == [("personal", ["alice"]), ("site", ["alice"])]
    assert created["id"] in [d["id"] for d in listed]


@pytest.mark.parametrize("kind", ["api", "container"])
def test_folder_rights_are_refused_for_a_token_of_no_file(run, tmp_path, kind):
    """They were dropped without a word: the admin who asked for `--folders all` got a token without them."""
    file_id = add(run, tmp_path, "Doc.docx", b"x", "--folder", "Team")["id"]
    folder_id = json.loads(run("files", "info", file_id, "--json").stdout)["folder_id"]
    target = ["--api"] if kind == "api" else ["--container", folder_id]
    result = run("token", "issue", *target, "--user", "u", "--folders", "list", ok=False)
    assert result.exit_code == 2 and "Invalid value for '--folders'" in result.stderr
    assert "for a file's token, not with --container or --api" in result.stderr
    assert run("token", "revoke", "--user", "u", ok=False).exit_code == 1  # none was issued
    assert "access_token" in run("token", "issue", *target, "--user", "u", "--folders", "none", "--json").stdout
    unknown = run("token", "issue", file_id, "--user", "u", "--folders", "list,own", ok=False)
    assert unknown.exit_code == 2 and "Invalid value for '--folders': own: use list, create" in unknown.stderr


@pytest.mark.parametrize("folders", ["list,write", "all"])
def test_a_read_only_token_cannot_have_the_folder_right_to_write(run, tmp_path, folders):
    """Rights only narrow (docs/wopi.md §4.2): a folder's `w` hands out write tokens for its files, this one too."""
    file_id = add(run, tmp_path)["id"]
    result = run("token", "issue", file_id, "--user", "u", "--read-only", "--folders", folders, ok=False)
    assert result.exit_code == 2 and "a --read-only token cannot have the folder right write" in result.stderr
    assert "access_token" not in result.stdout
    assert run("token", "revoke", "--user", "u", ok=False).exit_code == 1  # none was issued
    issued = json.loads(
        run("token", "issue", file_id, "--user", "u", "--read-only", "--folders", "list", "--json").stdout
    )
    assert (issued["can_write"], issued["folders"]) == (False, "l")


def test_activities_show_a_clients_text_without_its_control_characters(run, served, tmp_path):
    """What a WOPI client sent must not drive the admin's terminal: no escape sequence, no line overwritten."""
    file_id = add(run, tmp_path)["id"]
    activity = {
        "Type": "comment",
        "Id": "a1",
        "Data": {"ContentId": "c1\r\x1b[2Kdeleted 7 expired tokens", "ContentAction": "created", "CommentText": "hi"},
        "People": [
            {"Id": "p", "Name": "\x1b]0;owned\x07\x1b[8m", "Mentioned": True},
            {"Id": "q", "Name": "Bob Smith", "Mentioned": True},
        ],
    }
    [outcome] = served.app.extensions["wopihost"].activities.add(file_id, "u", [activity])
    assert outcome.status == 0
    output = run("activities", file_id).stdout
    assert "\x1b" not in output and "\r" not in output
    assert "'c1\\r\\x1b[2Kdeleted 7 expired tokens'" in output
    assert "mentions '\\x1b]0;owned\\x07\\x1b[8m', Bob Smith" in output


@pytest.fixture
def serve_json(env, monkeypatch):
    """`serve --json`'s line, the server itself not started."""

    class NotServing:
        def __init__(self, options: dict):
            pass

        def run(self) -> None:
            pass

    monkeypatch.setattr("wopihost.server.WopiHostServer", NotServing)

    def serve(*args: str, **changes: str) -> dict:
        result = CliRunner().invoke(main, ["serve", *args, "--json"], env={**env, **changes}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return serve


@pytest.mark.parametrize("public_url", [None, "", "  "])
def test_serve_without_a_public_url_hands_out_its_own_address(serve_json, public_url):
    started = serve_json("--port", "9123", WOPIHOST_PUBLIC_URL=public_url)
    assert started["public_url"] == "http://127.0.0.1:9123"
    assert serve_json("--port", "9123")["public_url"] == "https://wopi.example.test"


@pytest.mark.parametrize(("host", "url"), [("0.0.0.0", "http://0.0.0.0:9123"), ("::", "http://[::]:9123")])
def test_serve_on_a_wildcard_address_warns_that_its_urls_reach_nothing(env, serve_json, host, url):
    result = CliRunner().invoke(
        main, ["serve", "--host", host, "--port", "9123"], env={**env, "WOPIHOST_PUBLIC_URL": ""}
    )
    assert result.exit_code == 0, result.output
    assert f"warning: WOPIHOST_PUBLIC_URL is {url}, an address that names no machine" in result.stderr
    assert serve_json("--host", host, "--port", "9123", WOPIHOST_PUBLIC_URL="")["bind"] == url
    quiet = CliRunner().invoke(main, ["serve", "--host", host, "--port", "9123"], env=env)  # a public URL given
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr, quiet.output


def test_serve_on_an_ipv6_address_hands_out_urls_that_name_it(serve_json):
    """`--host ::1` handed out http://::1:9123, which no client parses, and bound gunicorn to `::1:9123`."""
    started = serve_json("--host", "::1", "--port", "9123", WOPIHOST_PUBLIC_URL="")
    assert started["public_url"] == started["bind"] == "http://[::1]:9123"


@pytest.mark.parametrize("host", ["a b", "http://x", "", "-x", "höst"])
def test_serve_refuses_a_host_that_names_no_address(env, host):
    """Without WOPIHOST_PUBLIC_URL it was blamed on that variable, which the admin had not set ("WOPIHOST_PUBLIC_URL:
    not an absolute http(s) URL"); with it, gunicorn tried to bind it five times, then gave up."""
    result = CliRunner().invoke(main, ["serve", "--host", host], env={**env, "WOPIHOST_PUBLIC_URL": ""})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--host': not an IP address or a host name: {host!r}" in result.stderr
    assert "WOPIHOST_PUBLIC_URL" not in result.stderr


@pytest.mark.parametrize(
    "host, url", [("[::1]", "http://[::1]:9123"), ("wopi_1.example.test", "http://wopi_1.example.test:9123")]
)
def test_serve_takes_a_host_name_or_a_bracketed_ipv6_address(serve_json, host, url):
    started = serve_json("--host", host, "--port", "9123", WOPIHOST_PUBLIC_URL="")
    assert started["public_url"] == started["bind"] == url


@pytest.mark.parametrize(
    "args", [["--port", "70000"], ["--port", "0"], ["--workers", "0"], ["--threads", "0"], ["--threads", "-1"]]
)
def test_serve_refuses_what_gunicorn_cannot_serve_with(env, args):
    """A port out of range was a traceback; no workers listened forever, serving nothing."""
    result = CliRunner().invoke(main, ["serve", *args], env=env)
    assert result.exit_code == 2 and f"Invalid value for '{args[0]}'" in result.stderr, result.output


# -- doctor: the public URL -------------------------------------------------------------------------------


@pytest.mark.local_storage
def test_doctor_tells_a_host_that_answers_503_from_a_wrong_public_url(env, served, tmp_path):
    """/healthz is 503 on purpose while a host's storage fails: doctor said to set WOPIHOST_PUBLIC_URL, which
    was right, where it should name what the host reported. (Doctor runs beside it, as on another machine: with
    this host's storage it would refuse to start, saying why.)"""
    server = make_server("127.0.0.1", 0, served.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.port}"
    (tmp_path / "beside").mkdir()
    here = {**env, "WOPIHOST_PUBLIC_URL": url, "WOPIHOST_DATA_DIR": str(tmp_path / "beside")}

    def public_url_finding() -> dict:
        result = CliRunner().invoke(main, ["doctor", "--timeout", "5", "--json"], env=here)
        return next(check for check in json.loads(result.stdout)["checks"] if url in check["what"])

    try:
        healthy = public_url_finding()
        assert healthy["ok"] is True and "reaches this host" in healthy["what"], healthy
        tmp_dir = Settings.from_env(env).tmp_dir
        shutil.rmtree(tmp_dir)
        tmp_dir.write_text("not a directory any more")
        unwell = public_url_finding()
    finally:
        server.shutdown()
    assert unwell["ok"] is False
    assert "reaches this host" in unwell["what"] and "503: storage not writable" in unwell["what"], unwell
    assert "WOPIHOST_PUBLIC_URL" not in unwell["fix"] and "the public URL is right" in unwell["fix"]


def doctor_on_a_public_url_answering(env, answer: bytes) -> tuple[dict, str]:
    """Doctor's finding on a public URL whose every connection is answered `answer`, and all it printed."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_each():
        with suppress(OSError):  # the listener closed
            while True:
                client, _ = listener.accept()
                with client:
                    client.recv(4096)
                    client.sendall(answer)

    threading.Thread(target=answer_each, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        result = CliRunner().invoke(
            main, ["doctor", "--timeout", "5", "--json"], env={**env, "WOPIHOST_PUBLIC_URL": url}
        )
    finally:
        listener.close()
    assert result.exit_code == 1, result.output
    return next(check for check in json.loads(result.stdout)["checks"] if url in check["what"]), result.stdout


@pytest.mark.parametrize(
    "answer",
    [b"SSH-2.0-OpenSSH_9.6\r\n", b'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n["ok"]'],
    ids=["not HTTP", "a JSON list"],
)
def test_doctor_says_what_a_public_url_that_reaches_no_wopihost_reaches(env, answer):
    """A public URL naming another service's port: one that does not speak HTTP (BadStatusLine) or whose /healthz
    answers JSON other than an object made doctor end in a traceback, with none of its findings said."""
    found, _ = doctor_on_a_public_url_answering(env, answer)
    assert found["ok"] is False and "does not reach a wopihost" in found["what"], found
    assert "WOPIHOST_PUBLIC_URL" in found["fix"]


def test_doctor_refuses_a_public_url_that_redirects(env):
    """Doctor followed redirects: a public URL of http:// behind the shipped nginx (which redirects to https://),
    or an old name, passed, though a client's POST is not redirected and its proof names the URL it used."""
    moved = b"HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:1/healthz?key=s3cret\r\nContent-Length: 0\r\n\r\n"
    found, printed = doctor_on_a_public_url_answering(env, moved)
    assert found["ok"] is False and "redirects (301) to http://127.0.0.1:1/healthz?key=***" in found["what"], found
    assert "s3cret" not in printed and "WOPIHOST_PUBLIC_URL" in found["fix"]


# -- doctor: a database that refuses writes ----------------------------------------------------------------


def wopihost_as(prefix: Sequence[str], env: dict, *args: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of a `wopihost` command: in-process, or a process started under `prefix`."""
    if not prefix:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr
    done = subprocess.run(
        [*prefix, *WOPIHOST, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout, done.stderr


def doctor_on_database(env: dict, prefix: Sequence[str] = ()) -> dict:
    """The database's finding of `wopihost doctor`, whose public URL check fails fast."""
    status, out, err = wopihost_as(prefix, {**env, "WOPIHOST_PUBLIC_URL": "http://127.0.0.1:1"}, "doctor", "--json")
    assert status == 1, err
    return json.loads(out)["checks"][0]


def refuses_a_change(env: dict, tmp_path, prefix: Sequence[str] = ()) -> bool:
    """Whether a change (`files add`) on the database of `env` fails for a database that cannot be written."""
    source = tmp_path / "a.docx"
    source.write_bytes(b"abc")
    status, _, err = wopihost_as(prefix, env, "files", "add", str(source))
    return status == 1 and re.search("read-?only", err) is not None


@pytest.fixture
def as_a_service_user() -> list[str]:
    """A command prefix under which a file's mode binds this process: none for a user; for root, setpriv taking
    away the capabilities that let root write any file whatever its mode."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    try:
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    except FileNotFoundError:
        pass
    pytest.skip("as root, a read-only file needs setpriv allowed to drop CAP_DAC_OVERRIDE, which it is not here")


@pytest.mark.parametrize("unwritable", ["file", "directory"])
def test_doctor_names_a_sqlite_database_this_process_cannot_write(
    tmp_path, sqlite_template, storage, as_a_service_user, unwritable
):
    """Reading it works (or fails for the -shm file SQLite cannot make), so doctor said "reachable, migrations
    current", or "unreachable", while every change failed."""
    where = tmp_path / "db"
    where.mkdir()
    path = where / "wopihost.sqlite3"
    shutil.copy(sqlite_template, path)
    (tmp_path / "data").mkdir()
    env = {
        **storage,
        "WOPIHOST_DATA_DIR": str(tmp_path / "data"),
        "WOPIHOST_DATABASE_URL": f"sqlite:///{path}",
        "WOPIHOST_SECRET_KEY": "cli-secret" * 4,
    }
    assert doctor_on_database(env, as_a_service_user)["ok"] is True
    path.chmod(0o444) if unwritable == "file" else where.chmod(0o555)
    try:
        found = doctor_on_database(env, as_a_service_user)
        assert refuses_a_change(env, tmp_path, as_a_service_user)
    finally:
        path.chmod(0o644)
        where.chmod(0o755)
    what = (
        f"its file {path} is not writable by this process"
        if unwritable == "file"
        else f"its directory {where}, where SQLite keeps the -wal file, is not writable by this process"
    )
    assert found == {
        "ok": False,
        "what": f"database refuses writes: {what}",
        "fix": "give the service user write access to the file and its directory, on a file system mounted "
        "read-write; every change is refused with 503 meanwhile",
    }


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (WOPIHOST_TEST_DATABASE_URL)")
def test_doctor_names_a_read_only_postgresql_database(tmp_path, storage):
    """As a hot standby is: doctor said "reachable, migrations current" while every change failed."""
    name = f"wopihost_read_only_{os.getpid()}_{secrets.token_hex(3)}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        db.upgrade(url)
        (tmp_path / "data").mkdir()
        env = {
            **storage,
            "WOPIHOST_DATA_DIR": str(tmp_path / "data"),
            "WOPIHOST_DATABASE_URL": url,
            "WOPIHOST_SECRET_KEY": "cli-secret" * 4,
        }
        assert doctor_on_database(env)["ok"] is True
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        assert doctor_on_database(env) == {
            "ok": False,
            "what": "database refuses writes: its transactions are read-only (default_transaction_read_only is on)",
            "fix": "point WOPIHOST_DATABASE_URL at a writable database, or turn default_transaction_read_only off "
            "where it is set (ALTER DATABASE or ALTER ROLE ... RESET, postgresql.conf); every change is refused "
            "with 503 meanwhile",
        }
        assert refuses_a_change(env, tmp_path)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "1e10"])
def test_doctor_refuses_a_timeout_no_check_can_wait(env, timeout):
    """0 or less failed every network check, blaming the public URL and the discovery ("Operation now in
    progress", "Timeout value out of range"); inf was a traceback (OverflowError)."""
    result = CliRunner().invoke(main, ["doctor", "--timeout", timeout], env=env)
    assert result.exit_code == 2 and "Invalid value for '--timeout'" in result.stderr, result.output
    assert "public URL" not in result.output


# -- doctor: the discovery ----------------------------------------------------------------------------------


@pytest.fixture
def discovery_server() -> Iterator[str]:
    """An http URL serving the host page tests' discovery, whatever the path and query."""

    def answer(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/xml")])
        return [DISCOVERY.encode()]

    server = make_server("127.0.0.1", 0, answer, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()


def test_doctor_hides_the_credentials_of_a_discovery_url(env, discovery_server):
    """Doctor printed WOPIHOST_DISCOVERY_URL as given, a token in its query or a password in it included (twice
    when the fetch failed, and a third time in the warning logged), where it shows the database's password as
    ***."""
    fetched = f"{discovery_server}/hosting/discovery?access_token=tok123s3cret&tenant=contoso#k3y"
    refused = "https://127.0.0.1:1/hosting/discovery?sig=abc987"

    def doctor_with(url: str):
        return CliRunner().invoke(
            main, ["doctor", "--timeout", "2"], env={**env, "WOPIHOST_DISCOVERY_URL": url, "WOPIHOST_PROOF_KEYS": "off"}
        )

    found = doctor_with(fetched)
    assert f"ok       discovery {discovery_server}/hosting/discovery?access_token=***&tenant=***#***: " in found.stdout
    failed = doctor_with(refused)
    assert "PROBLEM  discovery https://127.0.0.1:1/hosting/discovery?sig=*** unusable: " in failed.stdout
    # urllib sends no user or password, and its error for one (InvalidURL: nonnumeric port: 'pa55word@...')
    # quoted the password: such a URL is refused as a setting, without being shown
    with_user = doctor_with("https://bob:pa55word@127.0.0.1:1/hosting/discovery")
    assert with_user.exit_code != 0 and "WOPIHOST_DISCOVERY_URL: a URL with a user or password" in with_user.output
    # an unclosed IPv6 address was a traceback (urlsplit's ValueError, raised again while the error was shown)
    unparsed = doctor_with("http://[::1/hosting/discovery?sig=abc987")
    assert unparsed.exit_code != 0 and "WOPIHOST_DISCOVERY_URL: not a URL that can be parsed" in unparsed.output
    assert "Traceback" not in unparsed.output
    for secret in ("tok123s3cret", "contoso", "k3y", "pa55word", "abc987"):
        assert secret not in found.output + failed.output + with_user.output + unparsed.output
