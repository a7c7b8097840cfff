"""Shared fixtures.

Every test that touches the database runs against a real SQLite file, and again
against PostgreSQL when WOPIHOST_TEST_DATABASE_URL is set (CI sets it). The
schema always comes from the Alembic migrations. Time is a FrozenClock that
tests move forward instead of sleeping.

Content lives in the local blob directory, or, with WOPIHOST_TEST_STORAGE=s3, in
a bucket of a throwaway Ceph RADOS Gateway (tests/objectstore/), each test under
a prefix of its own; tests marked local_storage are about the local directory
itself and are skipped then. WOPIHOST_TEST_DATABASES (sqlite,postgresql) narrows
the databases.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
import webtest
from click.testing import CliRunner

from wopihost import db
from wopihost.app import create_app
from wopihost.cli import main
from wopihost.clock import FrozenClock
from wopihost.config import Settings
from wopihost.models import metadata
from wopihost.services import Services

from .helpers import TEST_SECRET, GraphClient, WopiClient
from .objectstore.fixtures import bucket, ceph_rgw, s3, s3_client  # noqa: F401

PG_URL = os.environ.get("WOPIHOST_TEST_DATABASE_URL", "").strip()
DATABASES = [
    name
    for name in os.environ.get("WOPIHOST_TEST_DATABASES", "sqlite,postgresql").split(",")
    if name == "sqlite" or (name == "postgresql" and PG_URL)
]
ON_S3 = os.environ.get("WOPIHOST_TEST_STORAGE", "local").strip() == "s3"


def pytest_generate_tests(metafunc):
    """Every test using `database` runs on each backend, unless it picks its own."""
    chosen = any("database" in marker.args[0] for marker in metafunc.definition.iter_markers("parametrize"))
    if "database" in metafunc.fixturenames and not chosen:
        metafunc.parametrize("database", DATABASES, indirect=True)


def pytest_collection_modifyitems(config, items):
    if ON_S3:
        skip = pytest.mark.skip(reason="about the local blob directory; the suite runs on S3 (WOPIHOST_TEST_STORAGE)")
        for item in items:
            if item.get_closest_marker("local_storage"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def s3_storage(request) -> dict[str, str]:
    """The variables that put a server's content in the session's S3 bucket (without a prefix yet)."""
    gateway = request.getfixturevalue("ceph_rgw")
    name = f"suite-{secrets.token_hex(6)}"
    s3_client(gateway).create_bucket(Bucket=name)
    return {**gateway.env(), "WOPIHOST_S3_ADDRESSING_STYLE": "path", "WOPIHOST_STORAGE_URL": f"s3://{name}"}


@pytest.fixture(autouse=True)
def storage(request, monkeypatch) -> dict[str, str]:
    """The storage settings of this test's servers, also in os.environ for the servers and commands it starts:
    none (the local blob directory), or a prefix of its own in the session's bucket."""
    if not ON_S3:
        return {}
    variables = dict(request.getfixturevalue("s3_storage"))
    variables["WOPIHOST_STORAGE_URL"] += f"/{secrets.token_hex(6)}"
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return {name: value for name, value in variables.items() if name.startswith("WOPIHOST_")}


# The threads of ours that write to the database on their own. One still running after its test would write
# into the next test's database, or deadlock with its TRUNCATE on PostgreSQL.
DATABASE_THREADS = ("wopihost-sweeper", "wopihost-workbook")


@pytest.fixture(autouse=True)
def no_database_thread_outlives_its_test():
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.name in DATABASE_THREADS]
    for thread in left:
        thread.join(30)
    assert not [t.name for t in left if t.is_alive()], "the test left a thread writing to its database"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (migrating takes longer than copying)."""
    path = tmp_path_factory.mktemp("template") / "wopihost.sqlite3"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_schema_url() -> str:
    """A private schema in the test database, migrated once for the whole run."""
    schema = f"wopihost_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    url_text = url.render_as_string(hide_password=False)
    db.upgrade(url_text)
    yield url_text
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture
def database(request, tmp_path) -> str:
    """The database URL for one test, on a clean, migrated schema."""
    if request.param == "sqlite":
        path = tmp_path / "wopihost.sqlite3"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_schema_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {tables} CASCADE")
    engine.dispose()
    return url


@pytest.fixture
def settings_env(database, tmp_path, storage) -> dict[str, str]:
    """The environment the suite's settings are read from: a test adds to it as an administrator would."""
    return {
        **storage,
        "WOPIHOST_DATA_DIR": str(tmp_path / "data"),
        "WOPIHOST_DATABASE_URL": database,
        "WOPIHOST_PUBLIC_URL": "https://wopi.example.test",
        "WOPIHOST_SECRET_KEY": TEST_SECRET,
        "WOPIHOST_MAX_FILE_SIZE": "1MiB",
        "WOPIHOST_CSPP_PLUS": "on",
        "WOPIHOST_SWEEP_INTERVAL": "0",  # tests sweep explicitly, on their own clock
    }


@pytest.fixture
def settings(settings_env) -> Settings:
    return Settings.from_env(settings_env)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def app(settings, clock):
    app = create_app(settings, clock)
    yield app
    app.extensions["wopihost"].db.dispose()
    app.extensions["wopihost"].workbooks.calculators.stop()  # (the processes workbook calls ran in)


@pytest.fixture
def services(app) -> Services:
    return app.extensions["wopihost"]


@pytest.fixture
def testapp(app) -> webtest.TestApp:
    return webtest.TestApp(app)


@pytest.fixture
def make_file(services):
    def make(content: bytes = b"hello world", name: str = "Doc.docx", owner: str = "alice"):
        return services.add_file(owner, name, io.BytesIO(content))

    return make


@pytest.fixture
def client_for(services, testapp):
    def client(file, user: str = "alice", can_write: bool = True) -> WopiClient:
        return WopiClient(testapp, file.id, services.issue_token(file.id, user, can_write).token)

    return client


@pytest.fixture
def wopi(make_file, client_for) -> WopiClient:
    """A client with a write token for a fresh 11-byte file Doc.docx owned by alice."""
    return client_for(make_file())


@pytest.fixture
def graph_for(services, testapp):
    """A Graph client for a user (created, with a drive, if new) with an API token."""

    def client(user: str = "alice", can_write: bool = True, prefix: str = "/v1.0") -> GraphClient:
        issued, drive_id = services.issue_api_token(user, can_write)
        return GraphClient(testapp, issued.token, drive_id, prefix)

    return client


@pytest.fixture
def graph(graph_for) -> GraphClient:
    """A Graph client for alice, with a read-write API token."""
    return graph_for()


# -- the wopihost command, in-process (click's runner) on a database of its own -------------------------


@pytest.fixture
def env(database, tmp_path, storage):
    """The settings of a `wopihost` command run by `run`, and of the app `served` with them; the data directory
    exists, as `db upgrade` leaves it (the other commands do not make it)."""
    (tmp_path / "data").mkdir(exist_ok=True)
    return {
        **storage,
        "WOPIHOST_DATA_DIR": str(tmp_path / "data"),
        "WOPIHOST_DATABASE_URL": database,
        "WOPIHOST_PUBLIC_URL": "https://wopi.example.test",
        "WOPIHOST_SECRET_KEY": "cli-secret" * 4,
        "WOPIHOST_CSPP_PLUS": "on",
        "WOPIHOST_SWEEP_INTERVAL": "0",
    }


@pytest.fixture
def run(env):
    def run(*args: str, ok: bool = True):
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


@pytest.fixture
def served(env):
    app = create_app(Settings.from_env(env))
    yield webtest.TestApp(app)
    app.extensions["wopihost"].db.dispose()
