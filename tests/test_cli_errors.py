"""Failures of the real `wopihost` command (a subprocess, as an admin runs it): each is one line on stderr
naming the problem, exit status 1 and no traceback; `serve` refuses to start with the same line."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from wopihost.localserver import WOPIHOST, first_answer, free_port

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"
# Commands that need the database, each as an admin would type it; `serve` last (it must not start).
NEEDING_THE_DATABASE = [
    ["files", "list"],
    ["db", "upgrade"],
    ["db", "current"],
    ["token", "revoke", "x"],
    ["lock", "list"],
    ["backup", "/nonexistent/x"],
    ["serve", "--port", "1"],
]


def wopihost(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*WOPIHOST, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


def one_line_failure(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    assert result.stdout == ""
    for text in expected:
        assert text in result.stderr, result.stderr
    return result.stderr


@pytest.fixture
def base_env(tmp_path) -> dict:
    """The settings of a host whose data directory exists (as `db upgrade` or `serve` leave it)."""
    (tmp_path / "data").mkdir()
    return {
        "WOPIHOST_DATA_DIR": str(tmp_path / "data"),
        "WOPIHOST_SECRET_KEY": "s" * 32,
        "WOPIHOST_PUBLIC_URL": "http://127.0.0.1:1",
    }


@pytest.mark.parametrize("args", NEEDING_THE_DATABASE, ids=" ".join)
def test_an_unreachable_postgresql(base_env, args):
    result = wopihost(*args, env={**base_env, "WOPIHOST_DATABASE_URL": UNREACHABLE})
    if args[0] == "backup":  # no connection needed to know this one
        one_line_failure(result, "pg_dump")
    else:
        one_line_failure(
            result, "cannot use the database postgresql+psycopg://postgres@127.0.0.1:1/test", "Connection refused"
        )


@pytest.mark.parametrize("where", ["postgresql", "sqlite"])
def test_doctor_names_a_database_it_cannot_use_in_one_line(base_env, tmp_path, where):
    """Its finding was SQLAlchemy's text: the driver's lines, then "(Background on this error at: https://
    sqlalche.me/...)", and not which database; as the commands say it now, the password hidden."""
    if where == "postgresql":  # libpq takes a password in the query too
        url = "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/test?password=hunter2&sslmode=prefer"
        shown = "postgresql+psycopg://postgres:***@127.0.0.1:1/test?password=***&sslmode=***"
        cause = "Connection refused"
    else:
        url = shown = f"sqlite:///{tmp_path}/no-such-directory/wopihost.sqlite3"
        cause = "unable to open database file"
    result = wopihost("doctor", "--timeout", "1", "--json", env={**base_env, "WOPIHOST_DATABASE_URL": url})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    found = json.loads(result.stdout)["checks"][0]
    assert found["ok"] is False
    assert found["what"].startswith(f"cannot use the database {shown}: ")
    assert cause in found["what"] and "\n" not in found["what"] and "sqlalche.me" not in found["what"]
    assert "hunter2" not in result.stdout


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgres://postgres@127.0.0.1/test", "postgres:// is not a scheme"),
        ("postgresql+psycopg2://postgres@127.0.0.1/test", "wopihost ships the psycopg driver, not psycopg2"),
        ("mysql://root@127.0.0.1/test", "not mysql"),
        ("sqlite+aiosqlite:///x.sqlite3", "use sqlite:///path"),
        ("not a url", "is not a database URL"),
        ("postgresql+psycopg://postgres:hunter2@127.0.0.1:5432x/test", "the port is not a number"),
    ],
)
@pytest.mark.parametrize("args", [["files", "list"], ["db", "upgrade"], ["serve", "--port", "1"]], ids=" ".join)
def test_a_database_url_we_cannot_use(base_env, url, expected, args):
    message = one_line_failure(
        wopihost(*args, env={**base_env, "WOPIHOST_DATABASE_URL": url}), "WOPIHOST_DATABASE_URL", expected
    )
    if "sqlite" not in url:
        assert "postgresql+psycopg://" in message


def test_postgresql_without_its_driver_installed(base_env):
    """As where wopihost is installed without its postgres extra: psycopg cannot be imported."""
    no_psycopg = (
        "import sys; sys.modules['psycopg'] = None; from wopihost.cli import main; sys.argv[0] = 'wopihost'; main()"
    )
    for url in ("postgresql+psycopg://postgres@127.0.0.1/test", "postgresql://postgres@127.0.0.1/test"):
        result = subprocess.run(
            [WOPIHOST[0], "-c", no_psycopg, "files", "list"],
            env={**os.environ, **base_env, "WOPIHOST_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        one_line_failure(result, "psycopg driver, which is not installed", "wopihost[postgres]")


@pytest.mark.parametrize(
    "args", [a for a in NEEDING_THE_DATABASE if a[:2] not in (["db", "upgrade"], ["db", "current"])], ids=" ".join
)
def test_an_unmigrated_database(base_env, args):
    if args[0] == "backup":  # a copy of an empty database is refused for what it is: no database there
        one_line_failure(wopihost(*args, env=base_env), "there is no database at")
        return
    one_line_failure(wopihost(*args, env=base_env), "the database has no tables", "run `wopihost db upgrade`")


@pytest.mark.parametrize("args", [["files", "list"], ["doctor", "--timeout", "1"]], ids=" ".join)
def test_a_discovery_url_without_its_scheme(base_env, args):
    env = {**base_env, "WOPIHOST_DISCOVERY_URL": "onlyoffice.example.com:8080/hosting/discovery"}
    one_line_failure(wopihost(*args, env=env), "WOPIHOST_DISCOVERY_URL: neither an http(s) URL nor a file path")


@pytest.mark.parametrize(
    "name, value",
    [
        # a limit of 0 refused everything it limits (every save 413); WOPIHOST_DRIVE_QUOTA=0 is "no limit"
        ("WOPIHOST_MAX_FILE_SIZE", "0"),
        ("WOPIHOST_MAX_UPLOAD_SESSIONS_PER_USER", "0"),
        # every upload session born expired
        ("WOPIHOST_UPLOAD_SESSION_TTL", "0s"),
        # PostgreSQL's lock_timeout of 0 is no timeout at all: writers waited forever, never a 503
        ("WOPIHOST_DATABASE_BUSY_TIMEOUT", "0"),
        # str.isdigit() took it, int() did not: Python's own "invalid literal for int()" message
        ("WOPIHOST_TRUSTED_PROXIES", "\u00b2"),
    ],
)
@pytest.mark.parametrize("args", [["serve", "--port", "1"], ["doctor", "--timeout", "1"]], ids=" ".join)
def test_a_setting_of_a_value_it_cannot_use_stops_the_command_naming_it(base_env, name, value, args):
    message = one_line_failure(wopihost(*args, env={**base_env, name: value}), f"Error: {name}: ")
    assert "invalid literal" not in message
    if name != "WOPIHOST_TRUSTED_PROXIES":
        assert f"must be more than 0, not {value!r}" in message


@pytest.mark.parametrize("args", [["serve", "--port", "1"], ["doctor", "--timeout", "1"]], ids=" ".join)
def test_proof_keys_required_without_a_discovery_stops_the_command(base_env, args):
    """No discovery, no keys: `serve` started, and answered every WOPI request 500 (proof check failed)."""
    env = {**base_env, "WOPIHOST_PROOF_KEYS": "require"}
    one_line_failure(wopihost(*args, env=env), "Error: WOPIHOST_PROOF_KEYS: require needs", "WOPIHOST_DISCOVERY_URL")


@pytest.mark.parametrize("args", [["serve", "--port", "1"], ["doctor", "--timeout", "1"]], ids=" ".join)
def test_a_host_page_template_without_file_id_stops_the_command(base_env, args):
    """Every file's HostViewUrl and HostEditUrl would have been the same page."""
    env = {**base_env, "WOPIHOST_HOST_PAGE_URL": "https://portal.example/open?action={action}"}
    one_line_failure(wopihost(*args, env=env), "Error: WOPIHOST_HOST_PAGE_URL: no {file_id} in")


def test_an_s3_region_botocore_would_refuse_stops_the_command_naming_it(base_env):
    """botocore checks a region's name only when the store's client is built: that was a traceback."""
    env = {
        **base_env,
        "WOPIHOST_STORAGE_URL": "s3://wopihost-test",
        "WOPIHOST_S3_ENDPOINT_URL": "http://127.0.0.1:1",
        "WOPIHOST_S3_REGION": "eu-west-1 # Ireland",
    }
    one_line_failure(wopihost("files", "list", env=env), "Error: WOPIHOST_S3_REGION: not a region name")


@pytest.mark.parametrize("region", ["eu-west-1 # Ireland", " eu-west-1", "123"])
@pytest.mark.parametrize(
    "args", [["files", "list"], ["serve", "--port", "1"], ["doctor", "--timeout", "1"]], ids=" ".join
)
def test_an_aws_default_region_botocore_would_refuse_stops_the_command_naming_it(base_env, region, args):
    """botocore reads AWS_DEFAULT_REGION where WOPIHOST_S3_REGION is unset, and checks it (as it comes, not
    stripped) only when the store's client is built, at start: that was a traceback of every command."""
    env = {
        **base_env,
        "WOPIHOST_STORAGE_URL": "s3://wopihost-test",
        "WOPIHOST_S3_ENDPOINT_URL": "http://127.0.0.1:1",
        "WOPIHOST_S3_REGION": "",
        "AWS_DEFAULT_REGION": region,
    }
    one_line_failure(
        wopihost(*args, env=env), f"Error: AWS_DEFAULT_REGION: not a region name such as eu-west-1: {region!r}"
    )


@pytest.mark.parametrize("secret", ["from the environment", "generated"])
@pytest.mark.parametrize("args", [["files", "list"], ["db", "upgrade"], ["serve", "--port", "1"]], ids=" ".join)
def test_a_data_directory_that_cannot_be_written(tmp_path, secret, args):
    """The data directory's path runs through a regular file: not writable, not even for root."""
    (tmp_path / "a-file").write_bytes(b"")
    env = {"WOPIHOST_DATA_DIR": str(tmp_path / "a-file" / "data")}
    if secret == "from the environment":
        env["WOPIHOST_SECRET_KEY"] = "s" * 32
        one_line_failure(
            wopihost(*args, env=env), f"the data directory {tmp_path}/a-file/data cannot be used", "Not a directory"
        )
    else:
        one_line_failure(
            wopihost(*args, env=env), "the data directory cannot hold the token secret", "WOPIHOST_SECRET_KEY"
        )


@pytest.mark.local_storage
def test_a_data_directory_on_a_read_only_filesystem(tmp_path, base_env):
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only filesystem needs root")
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        env = {**base_env, "WOPIHOST_DATA_DIR": str(mount / "data")}
        assert wopihost("db", "upgrade", env=env).returncode == 0
        source = tmp_path / "a.docx"
        source.write_bytes(b"abc")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        one_line_failure(wopihost("files", "add", str(source), env=env), "Read-only file system")
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize(
    "args",
    [["files", "info"], ["files", "rm"], ["lock", "break"], ["activities"], ["token", "issue", "--user", "u"]],
    ids=" ".join,
)
def test_an_id_that_does_not_exist(base_env, args):
    assert wopihost("db", "upgrade", env=base_env).returncode == 0
    one_line_failure(wopihost(*args, "NoSuchFile", env=base_env), "file not found: NoSuchFile")


@pytest.mark.parametrize(
    "args, where",
    [
        (["files", "info", b"\xff"], "'FILE_ID'"),
        (["drives", "create", "--name", b"Team \xff"], "'--name'"),
        (["token", "revoke", "--user", b"\xff"], "'--user'"),
        (["shares", "list", b"\xff"], "'[ITEM_ID]'"),
        (["lock", "break", b"\xff"], "'FILE_ID'"),
    ],
    ids=lambda value: " ".join(map(str, value)) if isinstance(value, list) else value,
)
def test_an_argument_that_is_not_utf8_text(base_env, args, where):
    """Bytes that are not UTF-8 (a name typed in a Latin-1 terminal): Python keeps them as lone surrogates, which
    the database driver could not encode, a UnicodeEncodeError traceback on SQLite and PostgreSQL alike."""
    assert wopihost("db", "upgrade", env=base_env).returncode == 0
    result = subprocess.run(
        [*WOPIHOST, *args], env={**os.environ, **base_env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"Error: Invalid value for {where}: not UTF-8 text: " in result.stderr and "\\xff" in result.stderr


def test_serve_prints_where_it_serves_and_serves(base_env):
    assert wopihost("db", "upgrade", env=base_env).returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [*WOPIHOST, "serve", "--port", str(port), "--workers", "1", "--json"],
        env={**os.environ, **base_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        started = json.loads(process.stdout.readline())
        assert started == {
            "public_url": "http://127.0.0.1:1",
            "bind": f"http://127.0.0.1:{port}",
            "workers": 1,
            "threads": 64,
            "data_dir": base_env["WOPIHOST_DATA_DIR"],
        }
        health = first_answer(f"http://127.0.0.1:{port}/healthz", 30, lambda: process.poll() is None)
        assert health is not None and health.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


# Commands that only look, or change the database alone: none makes a data directory that does not exist.
NOT_MAKING_THE_DATA_DIRECTORY = [
    ["files", "list"],
    ["files", "info", "x"],
    ["files", "add", "README.md"],
    ["token", "issue", "x", "--user", "u"],
    ["token", "revoke", "x"],
    ["drives", "list"],
    ["lock", "list"],
    ["sessions", "list"],
    ["shares", "list"],
    ["gc"],
    ["demo"],
    ["db", "current"],
    ["backup", "copy.sqlite3"],  # refused before it writes
    ["doctor", "--timeout", "1"],
]
# Of them, the commands that sign and check no token: they need no token secret in the data directory.
SIGNING_NOTHING = [["db", "current"], ["backup", "copy.sqlite3"]]


@pytest.mark.parametrize("secret", ["from the environment", "generated"])
@pytest.mark.parametrize("args", NOT_MAKING_THE_DATA_DIRECTORY, ids=" ".join)
def test_a_command_that_only_uses_the_data_directory_does_not_make_it(tmp_path, secret, args):
    """Every command made a missing WOPIHOST_DATA_DIR (a mistyped one too), with a new token secret and an empty
    SQLite database in it, and then failed on that database, or showed it empty; `doctor` passed its storage."""
    data = tmp_path / "data"
    env = {"WOPIHOST_DATA_DIR": str(data), "WOPIHOST_PUBLIC_URL": "http://127.0.0.1:1"}
    if secret == "from the environment":
        env["WOPIHOST_SECRET_KEY"] = "s" * 32
    generated = secret == "generated" and args not in SIGNING_NOTHING
    kept = "the token secret is kept there" if generated else "the database is kept there"
    one_line_failure(
        wopihost(*args, env=env), f"Error: the data directory {data} does not exist, and {kept}: set WOPIHOST_DATA_DIR"
    )
    assert not data.exists()


@pytest.mark.parametrize("command", ["db current", "backup"])
def test_a_command_that_signs_nothing_needs_no_token_secret(tmp_path, database, command):
    """db current and backup refused a missing data directory as where 'the token secret is kept', which neither
    uses: with the database elsewhere (PostgreSQL, or a SQLite file outside it) they need nothing there."""
    data, copy = tmp_path / "data", tmp_path / "copy.sqlite3"
    env = {"WOPIHOST_DATA_DIR": str(data), "WOPIHOST_DATABASE_URL": database, "WOPIHOST_PUBLIC_URL": "http://1.1"}
    env["WOPIHOST_SECRET_KEY"] = ""  # none: the generated one would be in the data directory
    result = wopihost(*command.split(), *([str(copy)] if command == "backup" else []), env=env)
    if command == "db current":
        assert result.returncode == 0 and result.stdout.endswith(": at this wopihost's head\n"), result.stderr
    elif database.startswith("sqlite"):
        assert result.returncode == 0 and copy.is_file(), result.stderr
    else:
        one_line_failure(result, "back it up with pg_dump")
    assert not data.exists()


def test_a_database_named_through_a_symbolic_link_in_the_missing_data_directory_is_refused_as_such(tmp_path):
    """The data directory is compared resolved: a database URL naming it through a link was taken for one
    elsewhere, and SQLite said it could not open its file."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    data = tmp_path / "link" / "data"
    env = {
        "WOPIHOST_DATA_DIR": str(data),
        "WOPIHOST_DATABASE_URL": f"sqlite:///{data}/wopihost.sqlite3",
        "WOPIHOST_SECRET_KEY": "s" * 32,
        "WOPIHOST_PUBLIC_URL": "http://127.0.0.1:1",
    }
    one_line_failure(wopihost("db", "current", env=env), "does not exist, and the database is kept there")
    assert not (tmp_path / "real" / "data").exists()


@pytest.mark.parametrize("args", [["db", "upgrade"], ["serve", "--port", "1"]], ids=" ".join)
def test_the_commands_that_set_a_host_up_make_its_data_directory(tmp_path, args):
    data = tmp_path / "deep" / "data"
    env = {"WOPIHOST_DATA_DIR": str(data), "WOPIHOST_PUBLIC_URL": "http://127.0.0.1:1"}
    result = wopihost(*args, env=env)
    assert (data / "secret_key").exists()
    if args[0] == "db":
        assert result.returncode == 0 and (data / "wopihost.sqlite3").exists()
    else:  # made, then refused: no migration yet
        one_line_failure(result, "the database has no tables")


def test_a_database_and_storage_elsewhere_need_no_data_directory(tmp_path, base_env, storage, database):
    """With the database and the contents elsewhere and the secret in the environment, a command that does not
    make the data directory works without it."""
    if not storage or database.startswith("sqlite"):
        pytest.skip("with the database on PostgreSQL and the contents in an object store (WOPIHOST_TEST_STORAGE=s3)")
    env = {**base_env, **storage, "WOPIHOST_DATA_DIR": str(tmp_path / "absent"), "WOPIHOST_DATABASE_URL": database}
    result = wopihost("files", "list", env=env)
    assert result.returncode == 0 and result.stdout == "no files\n", result.stderr
    assert not (tmp_path / "absent").exists()
