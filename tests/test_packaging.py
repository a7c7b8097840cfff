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


def without_extras(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, cwd=REPO, **kwargs)


def test_the_server_needs_no_extra(tmp_path):
    result = without_extras(RUNTIME, str(tmp_path), ",".join(EXTRAS_ONLY))
    assert result.returncode == 0, result.stderr
    assert "'database': 'ok'" in result.stdout and "'storage': 'ok'" in result.stdout


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
