"""What pyproject.toml promises: the server runs on its runtime dependencies alone (the test rig's, the
validator's and PostgreSQL's are extras), and constraints.txt pins a version inside every declared range."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
EXTRAS_ONLY = ["requests", "psutil", "psycopg", "jsonschema", "pytest", "webtest", "hypothesis", "msgraph"]

# Every module of wopihost but the test rig, the validator and the replay (extras), then a migrated database and
# /healthz.
RUNTIME = """
import importlib, pathlib, sys
for name in sys.argv[2].split(","):
    sys.modules[name] = None  # as if not installed: importing it fails
import wopihost
root = pathlib.Path(wopihost.__file__).parent
for path in sorted(root.rglob("*.py")):
    parts = ("wopihost", *path.relative_to(root).with_suffix("").parts)
    if parts[1] not in ("validator", "replay", "localserver", "__main__"):
        importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
from wopihost import db
from wopihost.app import create_app
from wopihost.config import Settings
settings = Settings.from_env({"WOPIHOST_DATA_DIR": sys.argv[1]})
db.upgrade(settings.database_url)
print(create_app(settings).test_client().get("/healthz").json)
"""


# What a server on SQLite loads: gunicorn's master imports the whole app (wopihost/worker.py), then it inserts a
# row unless present (a user seen first, as a file is added) and upserts (a lock). The database is migrated
# beforehand, by another process, as `wopihost db upgrade` does: Alembic loads every dialect it knows.
SQLITE_SERVER = """
import io, sys
import wopihost.worker
from wopihost.app import create_app
from wopihost.config import Settings
app = create_app(Settings.from_env({"WOPIHOST_DATA_DIR": sys.argv[1]}))
services = app.extensions["wopihost"]
file = services.add_file("alice", "Doc.docx", io.BytesIO(b"hello"))
url = f"/wopi/files/{file.id}?access_token={services.issue_token(file.id, 'bob', True).token}"
client = app.test_client()
for override in ("LOCK", "UNLOCK"):
    assert client.post(url, headers={"X-WOPI-Override": override, "X-WOPI-Lock": "L"}).status_code == 200
print(sorted(name for name in sys.modules if name.startswith("sqlalchemy.dialects.")))
"""


def without_extras(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, cwd=REPO, **kwargs)


def test_the_server_needs_no_extra(tmp_path):
    result = without_extras(RUNTIME, str(tmp_path), ",".join(EXTRAS_ONLY))
    assert result.returncode == 0, result.stderr
    assert "'database': 'ok'" in result.stdout and "'storage': 'ok'" in result.stdout


def test_a_server_on_sqlite_never_loads_the_postgresql_dialect(tmp_path):
    """PostgreSQL's dialect takes 3 MiB of memory, which a server on SQLite would hold in every process."""
    migrate = without_extras(f"from wopihost import db; db.upgrade('sqlite:///{tmp_path}/wopihost.sqlite3')")
    assert migrate.returncode == 0, migrate.stderr
    result = without_extras(SQLITE_SERVER, str(tmp_path))
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.strip()
    assert "sqlalchemy.dialects.sqlite" in loaded and "postgresql" not in loaded


def test_the_validator_without_its_extra_says_so_in_one_line():
    result = without_extras(
        "import sys; sys.modules['requests'] = None; from wopihost.cli import main; main()", "validate", "--help"
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "the WOPI validator needs requests, which is not installed: pip install 'wopihost[validator]'"
    ]


def test_the_replay_without_its_extra_says_so_in_one_line(tmp_path):
    har = tmp_path / "session.har"
    har.write_text("{}")
    result = without_extras(
        "import sys; sys.modules['requests'] = None; from wopihost.cli import main; main()", "replay", str(har)
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "wopihost replay needs requests, which is not installed: pip install 'wopihost[validator]'"
    ]


def pins() -> dict[str, str]:
    pinned = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pinned[canonicalize_name(name)] = version.strip()
    return pinned


def test_constraints_pin_every_declared_dependency_inside_its_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    pinned = pins()
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "wopihost":
            continue  # the test extra naming the others
        assert name in pinned, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(pinned[name]), f"{text} does not allow the pinned {pinned[name]}"
        assert re.search(r"<|~=", str(requirement.specifier)) or name == "cryptography", (
            f"{text}: give an upper bound (cryptography alone makes every release a major one)"
        )
