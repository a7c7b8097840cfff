"""The wopihost command, run in-process with click's runner against a real database and data directory."""

import json

from click.testing import CliRunner

from wopihost.cli import main


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


def test_files_add_refuses_an_invalid_name(run, tmp_path):
    source = tmp_path / "x.docx"
    source.write_bytes(b"")
    result = run("files", "add", str(source), "--name", "../escape.docx", ok=False)
    assert result.exit_code != 0
    assert "not allowed" in result.output


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
    again = run("token", "revoke", "--file", file_id, ok=False)
    assert again.exit_code == 1 and "no live token matched: nothing was revoked" in again.output


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
    env = {"WOPIHOST_DATA_DIR": str(tmp_path / "fresh"), "WOPIHOST_SECRET_KEY": "x"}
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
    session = served.post(url, headers={"X-WOPI-Override": "CREATE_UPLOAD_SESSION"}).json["UploadSessionToken"]
    served.post(url, b"12345", headers={"X-WOPI-Override": "UPDATE_UPLOAD_SESSION",
                                         "X-WOPI-UploadSessionToken": session, "X-WOPI-ContentRangeOffset": "0",
                                         "X-WOPI-ContentRangeLength": "5"})
    listed = json.loads(run("sessions", "list", "--json").output)
    assert [(s["file_id"], s["bytes"], s["expired"]) for s in listed] == [(file_id, 5, False)]
    assert session not in run("sessions", "list").output  # never the whole token
    assert "deleted 0 expired upload and workbook sessions" in run("gc").output
    assert run("gc", "--grace", "soon", ok=False).exit_code != 0


def test_validate_is_the_validators_command_line(run):
    usage = run("validate", "--help").output
    assert "usage: wopihost validate" in usage and "--testcases" in usage and "--proof-keys" in usage
    missing = run("validate", "--wopisrc", "http://127.0.0.1:1/wopi/files/x", ok=False)
    assert missing.exit_code == 2 and "--token" in missing.output
    absent = run("validate", "--wopisrc", "http://127.0.0.1:1/wopi/files/x", "--token", "t", "--testcases",
                 "/nonexistent/TestCases.xml", ok=False)
    assert absent.exit_code != 0 and "TestCases.xml" in absent.output
