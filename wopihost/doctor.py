"""`wopihost doctor`: check what a deployment depends on and say how to fix what is wrong."""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa

from . import db
from .clierrors import explain
from .discovery import DiscoveryCache, DiscoveryError
from .services import Services
from .shownurl import shown_source


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"ok       {self.what}" if self.ok else f"PROBLEM  {self.what}\n         fix: {self.fix}"


# PBKDF2's iterations as OWASP recommends for SHA-256: each guess of the secret tested against the fingerprint
# /healthz shows anyone costs as much, where a plain hash tested billions a second. Once per process (cached).
FINGERPRINT_ITERATIONS = 600_000


@functools.cache
def instance_fingerprint(secret_key: str) -> str:
    """Names this deployment in /healthz, the same on every node sharing the secret, without giving anything
    of the secret away."""
    derived = hashlib.pbkdf2_hmac("sha256", secret_key.encode(), b"wopihost-instance", FINGERPRINT_ITERATIONS)
    return derived.hex()[:16]


WRITES_REFUSED = "every change is refused with 503 meanwhile"


def run(services: Services, timeout: float = 5.0) -> list[Finding]:
    return [*_database(services), _storage(services), _public_url(services, timeout), *_discovery(services, timeout)]


def _database(services: Services) -> list[Finding]:
    engine, url = services.db.engine, services.settings.database_url
    unwritable = _unwritable_sqlite(services) if services.db.is_sqlite else None
    if unwritable is not None:  # before connecting, which fails where SQLite cannot make its -shm file
        return [unwritable]
    try:
        state = db.schema_state(engine, url)
        read_only = None if services.db.is_sqlite else _read_only_postgresql(engine)
    except Exception as exc:  # said as the commands say it: one line, naming the database
        what = explain(exc, services.settings) or f"database unreachable: {exc}"
        return [Finding(False, what, "check WOPIHOST_DATABASE_URL and that the server runs")]
    if read_only is not None:  # before the migrations: `db upgrade` cannot run there either
        return [read_only]
    if state.state == "ahead":
        return [
            Finding(
                False,
                f"database at migration {state.current}, which this version (at {state.head}) does not know",
                "run the newer wopihost that migrated it",
            )
        ]
    if state.state != "current":
        return [
            Finding(
                False,
                f"database at migration {state.current or 'none'}, this version needs {state.head}",
                "run `wopihost db upgrade`",
            )
        ]
    return [Finding(True, f"database reachable and writable, migrations current ({state.head})")]


def _unwritable_sqlite(services: Services) -> Finding | None:
    """The SQLite file, or the directory where SQLite makes its -wal and -shm files beside it, if this process
    cannot write it. Asked of the file system: a write transaction begins on a read-only file all the same."""
    name = services.db.engine.url.database
    if not name or name == ":memory:":
        return None
    path = Path(name)
    if path.exists() and not os.access(path, os.W_OK):
        what = f"its file {path} is not writable by this process"
    elif path.parent.is_dir() and not os.access(path.parent, os.W_OK | os.X_OK):
        what = f"its directory {path.parent}, where SQLite keeps the -wal file, is not writable by this process"
    else:
        return None
    return Finding(
        False,
        f"database refuses writes: {what}",
        "give the service user write access to the file and its directory, on a file system mounted read-write; "
        + WRITES_REFUSED,
    )


def _read_only_postgresql(engine: sa.Engine) -> Finding | None:
    """A hot standby, or a server, database or role whose transactions are read-only by default."""
    with engine.connect() as conn:
        recovery, read_only = conn.execute(
            sa.text("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
        ).one()
    if recovery:
        return Finding(
            False,
            "database refuses writes: it is a PostgreSQL hot standby (in recovery)",
            f"point WOPIHOST_DATABASE_URL at the primary; {WRITES_REFUSED}",
        )
    if read_only == "on":
        return Finding(
            False,
            "database refuses writes: its transactions are read-only (default_transaction_read_only is on)",
            "point WOPIHOST_DATABASE_URL at a writable database, or turn default_transaction_read_only off where "
            f"it is set (ALTER DATABASE or ALTER ROLE ... RESET, postgresql.conf); {WRITES_REFUSED}",
        )
    return None


def _storage(services: Services) -> Finding:
    state, url = services.blobs.health(), services.settings.storage_url
    where = f"object store {url}" if url else f"data directory {services.settings.data_dir}"
    if state == "full" and url:
        return Finding(
            False,
            f"{where} refuses writes: it is full, or the bucket is over its quota",
            "free space in the store or raise the bucket's quota; writes are refused with 507 meanwhile",
        )
    if state == "full":
        return Finding(
            False,
            f"{where} has less than WOPIHOST_MIN_FREE_SPACE free",
            "free space or grow the volume; writes are refused with 507 meanwhile",
        )
    if state == "no bucket":
        bucket = urlsplit(url).netloc
        return Finding(
            False,
            f"{where} is not writable: its bucket {bucket} does not exist",
            f"create the bucket {bucket} at the endpoint WOPIHOST_S3_ENDPOINT_URL or AWS_ENDPOINT_URL names, or name "
            "the right one in WOPIHOST_STORAGE_URL; requests that need content get 503 meanwhile",
        )
    if state != "ok":
        fix = (
            "check that the bucket exists and that the credentials (AWS_* variables, config file or role) may "
            "read, write, list and delete in it, at the endpoint WOPIHOST_S3_ENDPOINT_URL or AWS_ENDPOINT_URL names"
            if url
            else "give the service user write access to WOPIHOST_DATA_DIR, mounted read-write"
        )
        return Finding(False, f"{where} is not writable", fix)
    return Finding(True, f"{where} is writable")


def _health_answer(error: urllib.error.HTTPError) -> dict[str, str]:
    """What a failing /healthz said, if it is a wopihost's answer ({} otherwise)."""
    try:
        body = json.loads(error.read(4096))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in body.items()} if isinstance(body, dict) else {}


class _Unfollowed(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


_NOT_REDIRECTED = urllib.request.build_opener(_Unfollowed)


def _public_url(services: Services, timeout: float) -> Finding:
    url = services.settings.public_url
    fix = (
        "set WOPIHOST_PUBLIC_URL to exactly the scheme, host, port and path prefix WOPI clients use, "
        "and check the reverse proxy forwards it here"
    )
    instance = instance_fingerprint(services.settings.secret_key)
    try:
        with _NOT_REDIRECTED.open(f"{url}/healthz", timeout=timeout) as response:
            body = json.loads(response.read(4096))
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:  # a GET followed there; a client's POST is not, and its proof names this URL
            where = shown_source(exc.headers.get("Location", "elsewhere"))
            return Finding(False, f"public URL {url} redirects ({exc.code}) to {where}", fix)
        # /healthz is 503 on purpose when this host's database or storage fails: the URL is right then, and what
        # to fix is what the answer names
        unwell = _health_answer(exc)
        if unwell.get("instance") == instance:
            wrong = ", ".join(
                f"{part} {state}" for part, state in unwell.items() if part != "instance" and state != "ok"
            )
            return Finding(
                False,
                f"public URL {url} reaches this host, whose /healthz answered {exc.code}: {wrong}",
                "mend what it names (the checks above say how); the public URL is right",
            )
        return Finding(False, f"{url}/healthz answered {exc.code}", fix)
    except (OSError, ValueError) as exc:
        return Finding(False, f"public URL {url} does not reach a wopihost: {getattr(exc, 'reason', exc)}", fix)
    except http.client.HTTPException as exc:  # what answered is no HTTP server (an SSH or database port)
        return Finding(False, f"public URL {url} does not reach a wopihost: no HTTP answer ({type(exc).__name__})", fix)
    if not isinstance(body, dict):  # another service's /healthz, which may answer any JSON
        return Finding(False, f"public URL {url} does not reach a wopihost: its /healthz is not wopihost's", fix)
    if body.get("instance") != instance:
        return Finding(False, f"public URL {url} reaches another wopihost (or one with another secret)", fix)
    note = "" if urlsplit(url).scheme == "https" else " (plain http: WOPI clients in production need https)"
    return Finding(True, f"public URL {url} reaches this host{note}")


def _discovery(services: Services, timeout: float) -> list[Finding]:
    settings = services.settings
    mode = settings.proof_keys
    if not settings.discovery_url:
        if mode == "require":
            return [
                Finding(
                    False,
                    "WOPIHOST_PROOF_KEYS=require but no WOPIHOST_DISCOVERY_URL is set",
                    "set WOPIHOST_DISCOVERY_URL to the WOPI client's discovery (…/hosting/discovery)",
                )
            ]
        return [Finding(True, f"no discovery configured; proof keys {mode}")]
    shown = shown_source(settings.discovery_url)
    try:
        discovery = DiscoveryCache(settings.discovery_url, timeout=timeout).refresh()
    except DiscoveryError as exc:
        return [
            Finding(
                False,
                f"discovery {shown} unusable: {exc}",
                "check WOPIHOST_DISCOVERY_URL, and that this machine can reach the WOPI client",
            )
        ]
    found = [
        Finding(
            True,
            f"discovery {shown}: {len(discovery.actions)} actions, "
            f"proof keys {'published' if discovery.proof_keys else 'not published'}",
        )
    ]
    if discovery.proof_keys is None and mode == "require":
        found.append(
            Finding(
                False,
                "WOPIHOST_PROOF_KEYS=require but the discovery publishes no proof keys",
                "use WOPIHOST_PROOF_KEYS=verify, or a WOPI client that signs its requests",
            )
        )
    elif discovery.proof_keys is not None and mode == "off":
        found.append(
            Finding(
                False,
                "the WOPI client signs its requests but WOPIHOST_PROOF_KEYS=off",
                "set WOPIHOST_PROOF_KEYS=verify (off only for test tools that cannot sign)",
            )
        )
    else:
        found.append(Finding(True, f"proof keys: {mode}"))
    return found
