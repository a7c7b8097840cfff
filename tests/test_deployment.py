"""Behind a reverse proxy: path-prefix mounting, the URL a client signed, trusted proxies, /healthz; the
settings file deploy/ ships, read as systemd and as the guide's shell line read it."""

import configparser
import hashlib
import hmac
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import webtest

from wopihost.app import create_app
from wopihost.config import Settings
from wopihost.doctor import instance_fingerprint
from wopihost.requesturl import called_url

from . import systemd_env
from .helpers import TEST_SECRET

PUBLIC = "https://wopi.example.test/office"


@pytest.fixture
def prefixed(settings, clock, make_file, services):
    app = create_app(settings.with_changes(public_url=PUBLIC, host_page_url=PUBLIC + "/host/{action}/{file_id}"), clock)
    file = make_file()
    token = app.extensions["wopihost"].issue_token(file.id, "alice", True).token
    yield webtest.TestApp(app), file.id, token
    app.extensions["wopihost"].db.dispose()


@pytest.mark.parametrize("path", ["/office/wopi/files/{id}", "/wopi/files/{id}"], ids=["kept", "stripped"])
def test_served_under_the_prefix_whether_or_not_the_proxy_strips_it(prefixed, path):
    testapp, file_id, token = prefixed
    response = testapp.get(path.format(id=file_id) + f"?access_token={token}")
    assert response.json["BaseFileName"] == "Doc.docx"
    assert response.json["HostEditUrl"] == f"{PUBLIC}/host/edit/{file_id}"


def test_urls_handed_out_carry_the_prefix(prefixed):
    testapp, file_id, token = prefixed
    response = testapp.post(
        f"/office/wopi/files/{file_id}?access_token={token}",
        headers={"X-WOPI-Override": "PUT_RELATIVE", "X-WOPI-SuggestedTarget": ".pdf"},
    )
    assert response.json["Url"].startswith(f"{PUBLIC}/wopi/files/")


def environ(raw_uri=None, **extra):
    env = {
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "127.0.0.1:8000",
        "SERVER_NAME": "127.0.0.1",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/wopi/files/abc",
        "QUERY_STRING": "access_token=t%2Fx&access_token_ttl=0",
    }
    if raw_uri is not None:
        env["RAW_URI"] = raw_uri
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "/wopi/files/abc?access_token=t%2Fx&access_token_ttl=0",
        "/office/wopi/files/abc?access_token=t%2Fx&access_token_ttl=0",
        # the absolute form a client may send (RFC 9112 §3.2.2): the public URL's origin stands, not the one sent
        "https://wopi.example.test/office/wopi/files/abc?access_token=t%2Fx&access_token_ttl=0",
        "http://elsewhere:8080/wopi/files/abc?access_token=t%2Fx&access_token_ttl=0",
    ],
)
def test_called_url_is_the_public_url_plus_the_raw_path_and_query(raw):
    assert (
        called_url(environ(raw), PUBLIC, 0)
        == "https://wopi.example.test/office/wopi/files/abc?access_token=t%2Fx&access_token_ttl=0"
    )


def test_forwarded_headers_are_ignored_without_trusted_proxies():
    env = environ(HTTP_X_FORWARDED_PROTO="http", HTTP_X_FORWARDED_HOST="evil.example")
    assert called_url(env, PUBLIC, 0).startswith("https://wopi.example.test/office/")


def test_forwarded_origin_is_used_with_trusted_proxies(settings, clock, make_file):
    app = create_app(settings.with_changes(public_url=PUBLIC, trusted_proxies=1), clock)
    seen = {}

    @app.route("/probe")
    def probe():
        from flask import request

        seen["url"] = called_url(request.environ, PUBLIC, 1)
        return "", 204

    webtest.TestApp(app).get(
        "/office/probe?x=1", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "docs.example.org"}
    )
    assert seen["url"] == "https://docs.example.org/office/probe?x=1"
    webtest.TestApp(app).get("/office/probe?x=1", headers={"Host": "chosen-by-caller.example"})
    assert seen["url"] == "https://wopi.example.test/office/probe?x=1"  # not through the proxy: the public URL
    app.extensions["wopihost"].db.dispose()


def test_query_string_is_kept_as_sent():
    env = environ("/wopi/files/abc?b=2&a=%41&access_token=t")
    assert called_url(env, "https://h", 0) == "https://h/wopi/files/abc?b=2&a=%41&access_token=t"


# -- /healthz ------------------------------------------------------------------------------------


def test_healthz_reports_database_and_storage(testapp):
    response = testapp.get("/healthz")
    assert response.json == {"database": "ok", "storage": "ok", "instance": instance_fingerprint(TEST_SECRET)}
    assert response.headers["Cache-Control"] == "no-store"


def test_the_instance_fingerprint_is_costly_to_test_a_guessed_secret_against(testapp):
    """/healthz is open to anyone: its fingerprint must not be a quick check of guesses at the signing secret."""
    instance = testapp.get("/healthz").json["instance"]
    assert re.fullmatch(r"[0-9a-f]{16}", instance) and instance == instance_fingerprint(TEST_SECRET)
    assert instance != instance_fingerprint(TEST_SECRET.upper())  # nodes with another secret are told apart
    fast = [hashlib.sha256(b"wopihost-instance:" + TEST_SECRET.encode()).hexdigest()[:16]]
    fast.append(hmac.new(TEST_SECRET.encode(), b"wopihost-instance", "sha256").hexdigest()[:16])
    assert instance not in fast
    started = time.perf_counter()
    instance_fingerprint.__wrapped__("another guess")
    assert time.perf_counter() - started > 0.01  # PBKDF2: tens of guesses a second where a hash tests billions


@pytest.mark.local_storage
def test_healthz_is_503_when_storage_is_broken(testapp, settings):
    settings.tmp_dir.rmdir()
    settings.tmp_dir.write_text("not a directory any more")
    response = testapp.get("/healthz", expect_errors=True)
    assert response.status_int == 503
    assert response.json["database"] == "ok" and response.json["storage"] == "not writable"


def test_healthz_is_503_when_the_database_is_gone(settings, clock, tmp_path):
    app = create_app(settings.with_changes(database_url=f"sqlite:///{tmp_path}/missing/dir/db.sqlite3"), clock)
    response = webtest.TestApp(app).get("/healthz", expect_errors=True)
    assert response.status_int == 503
    assert response.json["database"] == "unreachable"


# -- deploy/wopihost.env, as systemd reads it ---------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
ENV_FILE = REPO / "deploy" / "wopihost.env"


def unit(section: str = "Service") -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read(REPO / "deploy" / "wopihost.service")
    return parser[section]


def commented_out_settings(text: str) -> str:
    """The file with `#WOPIHOST_...` lines switched on, as an admin of several nodes does."""
    return "\n".join(line[1:] if line.startswith("#WOPIHOST_") else line for line in text.splitlines()) + "\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A=1      # not a comment\n", {"A": "1      # not a comment"}),
        ("# comment\n; comment too\n  # indented comment\nA=1\n", {"A": "1"}),
        ("  A = spaced value \t\r\n", {"A": "spaced value"}),
        ("A='single # $HOME \\n'\n", {"A": "single # $HOME \\n"}),
        ('A="a \\"b\\" \\$c \\\\ \\d"\n', {"A": 'a "b" $c \\ \\d'}),
        ("A='two\nlines'\nB=\"also\ntwo\"\n", {"A": "two\nlines", "B": "also\ntwo"}),
        ("A=one\\\ncontinued\nB=back\\\\slash\n", {"A": "onecontinued", "B": "back\\slash"}),
        ("A=\"quoted\"unquoted 'kept'\n", {"A": "quotedunquoted 'kept'"}),
        ("no equals sign\nA=\nA=last\nB=", {"A": "last", "B": ""}),
    ],
)
def test_env_file_reading_follows_systemd_exec(text, expected):
    assert systemd_env.parse(text) == expected


@pytest.mark.parametrize("text", ["A B=1\n", "1A=x\n", "# comment \\\nA=1\n", 'A="bell\x07"\n'])
def test_env_file_lines_systemd_ignores_or_reads_by_version_are_refused(text):
    with pytest.raises(systemd_env.EnvFileError):
        systemd_env.parse(text)


GENERATOR = Path("/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator")


def test_env_file_reading_agrees_with_this_machines_systemd(tmp_path):
    """systemd's environment.d generator reads files with the same code as EnvironmentFile= and runs without
    systemd as PID 1, so the reading is checked against it. It then expands $ (these samples have none) and
    drops empty values (EnvironmentFile= keeps them), so only the non-empty ones are compared."""
    if not GENERATOR.exists():
        pytest.skip("systemd's environment.d generator is not installed")
    samples = [
        ENV_FILE.read_text(),
        commented_out_settings(ENV_FILE.read_text()),
        'T_A=1      # kept\n  T_B = spaced  \nT_C=\'single\nquoted\'\nT_D="d \\"q\\" \\\\ \\e"\n'
        "T_E=one\\\ntwo\nT_F=\"x\"y 'z'\n; comment\nno assignment\nT_G=\n",
    ]
    for sample in samples:
        (tmp_path / "environment.d").mkdir(exist_ok=True)
        (tmp_path / "environment.d" / "zz-wopihost-test.conf").write_text(sample)
        out = subprocess.run(
            [str(GENERATOR)],
            env={"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        expected = {name: value for name, value in systemd_env.parse(sample).items() if value}
        assert {k: v for k, v in generator_output(out).items() if k in expected} == expected


def generator_output(out: str) -> dict[str, str]:
    """NAME=value lines, the value in double quotes with backslash escapes when it needs quoting."""
    env = {}
    for line in out.splitlines():
        name, _, value = line.partition("=")
        if value.startswith('"') and value.endswith('"'):
            escapes = {"n": "\n", "t": "\t"}
            value = "".join(
                escapes.get(part[1], part[1]) if part.startswith("\\") and len(part) == 2 else part
                for part in re.split(r"(\\.)", value[1:-1])
            )
        env[name] = value
    return env


@pytest.mark.parametrize("variant", ["as shipped", "several nodes"])
def test_env_file_reads_the_same_in_systemd_and_sh(variant, tmp_path):
    """The guide runs wopihost commands by hand after `set -a; . /etc/wopihost/env; set +a`."""
    text = ENV_FILE.read_text()
    if variant == "several nodes":
        text = commented_out_settings(text)
    path = tmp_path / "env"
    path.write_text(text)
    by_systemd = systemd_env.parse(text)
    shell = subprocess.run(
        ["sh", "-c", 'set -a; . "$1"; set +a; exec env -0', "sh", str(path)],
        env={},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    by_sh = dict(item.split("=", 1) for item in shell.split("\0") if item.startswith("WOPIHOST_"))
    assert by_sh == by_systemd
    assert set(by_systemd) >= {"WOPIHOST_DATA_DIR", "WOPIHOST_PUBLIC_URL", "WOPIHOST_TRUSTED_PROXIES"}
    if variant == "several nodes":
        assert by_systemd["WOPIHOST_DATABASE_URL"].startswith("postgresql+psycopg://")


@pytest.mark.parametrize("variant", ["as shipped", "several nodes"])
def test_env_file_settings_are_usable(variant, tmp_path):
    text = ENV_FILE.read_text()
    env = systemd_env.parse(commented_out_settings(text) if variant == "several nodes" else text)
    settings = Settings.from_env({**env, "WOPIHOST_DATA_DIR": str(tmp_path)})
    assert settings.trusted_proxies == 1 and settings.proof_keys == "verify"
    assert settings.public_url == env["WOPIHOST_PUBLIC_URL"]


def test_the_unit_and_the_guide_use_the_shipped_env_file():
    service = unit()
    env_path = service["EnvironmentFile"]
    guide = (REPO / "docs" / "deploy.md").read_text()
    assert f"deploy/wopihost.env {env_path}" in guide  # the guide installs this very file there
    assert f". {env_path};" in guide  # and reads it into the shell the way the test above checks
    assert service["ExecStartPre"].endswith("wopihost db upgrade")


def test_the_unit_keeps_restarting_a_node_whose_database_is_away():
    """`db upgrade` fails in about a second without the database; under systemd's defaults (100 ms apart, at most 5
    starts in 10 s) the unit then gave up for good, and stayed down once the database was back."""
    service = unit()
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"] == "5s"  # 5 starts take 25 s, more than any start-limit interval by default
    assert unit("Unit")["StartLimitIntervalSec"] == "0"  # and no limit: it starts again until it runs


def test_the_unit_serves_the_wopihost_pip_installed():
    """gunicorn puts its working directory first on the module path. From the checkout (/srv/wopihost) the unit's
    gunicorn served the checkout's wopihost rather than the one pip installed, which ExecStartPre's `wopihost db
    upgrade` runs: after a `git pull` not yet installed, two releases (and, the checkout being read-only to the
    service, one compiled afresh at every start)."""
    service = unit()
    workdir = Path(service["WorkingDirectory"].replace("/srv/wopihost", str(REPO)))
    assert not (workdir / "wopihost").exists()
    assert service["WorkingDirectory"] == service["ReadWritePaths"]  # the data directory, which install creates


def test_the_unit_lets_a_migration_run_to_its_end():
    """`db upgrade` runs before the server starts, under the start timeout: systemd's 90 s by default killed a long
    migration, or a node waiting for another's (db.MIGRATION_WAIT), which rolled back and began again on restart."""
    assert unit()["TimeoutStartSec"] == "infinity"


# -- deploy/gunicorn.conf.py ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, least",
    [
        ("WOPIHOST_WORKER_TIMEOUT", "2m", 0),
        ("WOPIHOST_WORKER_TIMEOUT", "-5", 0),
        ("WOPIHOST_WORKER_TIMEOUT", "\u00b2", 0),  # isdigit() took it, int() did not: a traceback
        ("WEB_CONCURRENCY", "0", 1),
    ],
)
def test_the_gunicorn_configuration_refuses_a_bad_count_in_one_line(tmp_path, name, value, least):
    """Read before wopihost's own settings: an int() of it was a traceback, and no workers served nothing. (A
    WEB_CONCURRENCY that is no number at all is gunicorn's own traceback, before it reads this file.)"""
    result = gunicorn_with_the_shipped_configuration(tmp_path, {name: value, "WOPIHOST_BIND": "127.0.0.1:1"})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr == f"Error: {name}: not a whole number of at least {least}: {value!r}\n"


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("WOPIHOST_LOG_FORMAT", "xml", "must be one of text, json, not 'xml'"),
        ("WOPIHOST_METRICS", "maybe", "not on/off: 'maybe'"),
    ],
)
def test_the_gunicorn_configuration_refuses_a_bad_setting_of_the_master_in_one_line(tmp_path, name, value, message):
    """The master reads these two before the hook that checks every other setting (server.py, _check_database):
    gunicorn's logger the log format, this file the metrics switch. A bad one was a traceback."""
    result = gunicorn_with_the_shipped_configuration(tmp_path, {name: value, "WOPIHOST_BIND": "127.0.0.1:1"})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr == f"Error: {name}: {message}\n"


def test_the_gunicorn_configuration_reads_an_empty_setting_as_unset(tmp_path):
    """An env file's `WOPIHOST_BIND=` line, as for wopihost's own settings: gunicorn took the empty bind for no
    address at all, and its workers listened nowhere ("Listening at: " and nothing after it)."""
    env = {"WOPIHOST_BIND": "", "WOPIHOST_FORWARDED_ALLOW_IPS": " ", "WOPIHOST_METRICS": "off"}
    result = gunicorn_with_the_shipped_configuration(tmp_path, env, "--print-config")
    assert result.returncode == 0, result.stderr
    printed = dict(re.findall(r"^(\w+) += (.*)$", result.stdout, re.MULTILINE))
    assert printed["bind"] == "['127.0.0.1:8080']"
    assert printed["forwarded_allow_ips"] == "['127.0.0.1/32']"


def test_the_gunicorn_configuration_gives_gunicorn_the_networks_wopihost_reads(tmp_path):
    """wopihost reads 10.0.1.5/24 as 10.0.1.0/24; given as it was, gunicorn refused to start ("has host bits set"),
    in a message that did not name the variable."""
    env = {"WOPIHOST_FORWARDED_ALLOW_IPS": "10.0.1.5/24, 127.0.0.1", "WOPIHOST_METRICS": "off"}
    result = gunicorn_with_the_shipped_configuration(tmp_path, env, "--print-config")
    assert result.returncode == 0, result.stderr
    printed = dict(re.findall(r"^(\w+) += (.*)$", result.stdout, re.MULTILINE))
    assert printed["forwarded_allow_ips"] == "['10.0.1.0/24', '127.0.0.1/32']"
    refused = gunicorn_with_the_shipped_configuration(tmp_path, {"WOPIHOST_FORWARDED_ALLOW_IPS": "proxy.internal"})
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("Error: WOPIHOST_FORWARDED_ALLOW_IPS: not an IP address or network")


def test_a_metrics_address_another_program_holds_stops_the_master_in_one_line(tmp_path, database):
    """Each worker listens on WOPIHOST_METRICS_BIND as it starts: a port taken by another program made every worker
    fail to boot, each with a traceback ("Worker failed to boot")."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {
            "WOPIHOST_METRICS_BIND": f"127.0.0.1:{port}",
            "WOPIHOST_BIND": "127.0.0.1:0",
            "WOPIHOST_DATABASE_URL": database,
        }
        result = gunicorn_with_the_shipped_configuration(tmp_path, env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"Error: WOPIHOST_METRICS_BIND: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def gunicorn_with_the_shipped_configuration(tmp_path, env: dict, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(REPO / "deploy" / "gunicorn.conf.py"),
            *options,
            "wopihost.app:create_app()",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WOPIHOST_DATA_DIR": str(tmp_path), **env},
    )
