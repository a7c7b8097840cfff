"""The `wopihost` command: administration and serving. Every command reads the same WOPIHOST_* settings.

Failures an admin can act on are one line on stderr and exit status 1 (clierrors.py). With --json, every
command prints JSON in one vocabulary (README.md, "The `wopihost` command"): an object's own id is `id`,
another object is referred to as `file_id`, `folder_id`, `drive_id`, `item_id`, `lock_id`, users by their
role (`user`, `owner`, `created_by`, `members`), times are ISO 8601 UTC named for their event (`created`,
`modified`, `expires` ...), sizes are bytes.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import math
import os
import re
import shlex
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from stat import S_ISREG
from typing import cast
from urllib.parse import urlsplit

import click
import sqlalchemy as sa

from . import __version__, db
from .backup import backup_sqlite, sqlite_path
from .clierrors import SETTINGS_KEY, Group, database_url_problem
from .clock import iso_round_trip, to_epoch_ms
from .config import Settings, gunicorn_forwarded_allow_ips, log_format, parse_duration
from .demo import minimal_docx
from .drives import SHARED_KINDS
from .launches import ACTIONS
from .locks import live_coauth_locks, live_lock
from .logs import JsonFormatter
from .models import Drive, File, Folder
from .names import InvalidName, check
from .repository import load_file
from .services import Services, refuse_missing_data_dir
from .shares import URL_TYPES, link_id_of
from .storage import Readable
from .tokens import IssuedToken
from .tree import Tree
from .users import check_user_id

DEMO_OWNER = "demo"
DEMO_NAME = "Welcome.docx"
PROGRESS_FROM = 16 << 20  # bytes: smaller files are added before a bar would be worth drawing
HOST_LABEL = re.compile(r"(?!-)[\w-]{1,63}(?<!-)", re.ASCII)  # of a host name (RFC 1123; _ as Docker names)
MAX_CHECK_TIMEOUT = 3600  # seconds: a check or a replayed request that waits an hour has failed (_timeout_option)

json_option = click.option(
    "--json", "as_json", is_flag=True, help='Print JSON (keys: README.md, "The wopihost command").'
)


def _settings(make_data_dir: bool = False, needs_secret: bool = True) -> Settings:
    """This command's settings, read once; a database URL that cannot work is refused here, before anything
    tries to connect. Only the commands that set a host up (`db upgrade`, `serve`: `make_data_dir`) make a data
    directory that does not exist; the others refuse it where they need what it holds (README, "Failures"): a
    command that signs and checks no token (`needs_secret` False) does not need the generated secret there."""
    meta = click.get_current_context().meta
    if SETTINGS_KEY not in meta:
        try:
            settings = Settings.from_env(make_data_dir=make_data_dir, needs_secret=needs_secret)
        except OSError as exc:  # the generated secret cannot be read or written
            raise click.ClickException(
                f"the data directory cannot hold the token secret ({exc.strerror}: {exc.filename}): make "
                "WOPIHOST_DATA_DIR a writable directory, or set WOPIHOST_SECRET_KEY"
            ) from None
        problem = database_url_problem(settings.database_url)
        if problem:
            raise click.ClickException(problem)
        meta[SETTINGS_KEY] = settings
    return meta[SETTINGS_KEY]


def _services(make_data_dir: bool = False) -> Services:
    """Services on a database whose schema is the one this code was written for (neither older nor newer)."""
    settings = _settings(make_data_dir)
    services = Services.create(settings, make_data_dir=make_data_dir)
    db.require_current_schema(services.db.engine, settings.database_url)
    return services


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2))


def _echo_rows(rows: list[dict], as_json: bool, line: Callable[[dict], str], empty: str) -> None:
    """A list: JSON (`[]` when empty), or a line per row, or a sentence saying there is nothing."""
    if as_json:
        _echo_json(rows)
    elif not rows:
        click.echo(empty)
    else:
        for row in rows:
            click.echo(line(row))


def _positive_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A lifetime option: a duration of more than 0 (a token that is born expired is a mistake), at most 100
    years."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise click.BadParameter(
            f"must be a duration of more than 0 and at most 100 years, such as 30m, 10h or 2d, not {value!r}"
        )
    return seconds


def _a_number(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """FloatRange lets NaN through (it compares false with every bound)."""
    if math.isnan(value):
        raise click.BadParameter("not a number: nan")
    return value


def _timeout_option(default: float, help: str):
    """--timeout in seconds, more than 0 and at most MAX_CHECK_TIMEOUT: 0 fails every wait at once, nan makes a
    socket refuse it and inf (or 1e300) overflows it."""
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True, max=MAX_CHECK_TIMEOUT),
        callback=_a_number,
        default=default,
        show_default=True,
        help=help,
    )


class UserId(click.ParamType):
    """A user id, checked as the domain checks it, so that a bad one is a usage error before anything runs."""

    name = "user"

    def convert(self, value, param, ctx) -> str:
        try:
            return check_user_id(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


USER = UserId()


class DriveName(click.ParamType):
    """A shared drive's name, as Graph shows it: a line of text that its column holds."""

    name = "name"
    longest = cast(sa.String, Drive.__table__.c.name.type).length

    def convert(self, value, param, ctx) -> str:
        if not value.strip():
            self.fail("a drive's name cannot be empty", param, ctx)
        if self.longest is not None and len(value) > self.longest:  # PostgreSQL refuses it, SQLite keeps it
            self.fail(f"a drive's name is at most {self.longest} characters, not {len(value)}", param, ctx)
        if any(unicodedata.category(ch) == "Cc" for ch in value):  # what a terminal acts on: ESC, CR ...
            self.fail(f"a drive's name cannot hold control characters: {value!r}", param, ctx)
        return value


def _listen_host(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An address to listen on, before it becomes the URLs handed out (a bad one was blamed on
    WOPIHOST_PUBLIC_URL, which the admin had not set) and gunicorn's bind (which tried it five times)."""
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value  # [::1], as in a URL
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if len(value) <= 253 and all(HOST_LABEL.fullmatch(label) for label in value.split(".")):
        return value
    raise click.BadParameter(f"not an IP address or a host name: {value!r}")


def _interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def _progress(length: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, advanced by the function yielded; nothing unless stderr is a terminal."""
    if not _interactive() or length < PROGRESS_FROM:
        yield lambda n: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


def _track(label: str) -> Callable[[list], Iterable]:
    """Wraps a list so that going through it draws a progress bar on stderr (when that is a terminal)."""

    def track(items: list) -> Iterable:
        if not _interactive():
            yield from items
            return
        with click.progressbar(items, label=label, file=sys.stderr) as bar:
            yield from bar

    return track


class _Counted:
    """The file `path` read through `readinto`, telling `advance` how much each read got. A read that fails is
    the file's failure, said as such: the store took it for its own ("the data directory is not writable")."""

    def __init__(self, source: Readable, path: Path, advance: Callable[[int], None]):
        self._source, self._path, self._advance = source, path, advance

    def readinto(self, buffer: memoryview) -> int:
        try:
            n = self._source.readinto(buffer)
        except OSError as exc:
            raise click.ClickException(f"cannot read {self._path}: {exc.strerror or exc}; nothing was stored") from None
        self._advance(n)
        return n


def _file_json(file: File) -> dict:
    return {
        "id": file.id,
        "name": file.name,
        "owner": file.owner_id,
        "size": file.size,
        "version": str(file.version),
        "modified": iso_round_trip(file.modified_at),
    }


def _token_json(services: Services, issued: IssuedToken) -> dict:
    grant = issued.grant
    if grant.resource.startswith("c-"):
        url = f"{services.settings.public_url}/wopi/containers/{grant.resource[2:]}"
        where = {"container_id": grant.resource[2:], "container_url": url, "rights": grant.rights}
        first_call = "check_container_info_url"
    else:
        url = services.wopi_src(grant.resource)
        where = {"file_id": grant.resource, "wopi_src": url, "folders": grant.reach}
        first_call = "check_file_info_url"
    return {
        **where,
        "user": grant.user_id,
        "can_write": grant.can_write,
        "access_token": issued.token,
        "access_token_ttl": to_epoch_ms(grant.expires_at),
        "expires": iso_round_trip(grant.expires_at),
        first_call: f"{url}?access_token={issued.token}",
    }


def _print_token(services: Services, issued: IssuedToken, as_json: bool) -> None:
    info = _token_json(services, issued)
    if as_json:
        _echo_json(info)
        return
    if "container_url" in info:
        click.echo(f"container:        {info['container_url']}")
    else:
        click.echo(f"WOPISrc:          {info['wopi_src']}")
    click.echo(f"access_token:     {info['access_token']}")
    click.echo(f"access_token_ttl: {info['access_token_ttl']}  (expires {info['expires']})")
    click.echo(f"permissions:      {'read and write' if info['can_write'] else 'read only'}, user {info['user']}")
    if "container_url" in info:
        click.echo(f"CheckContainerInfo: curl -s {shlex.quote(info['check_container_info_url'])}")
    else:
        click.echo(f"CheckFileInfo:    curl -s {shlex.quote(info['check_file_info_url'])}")


@click.group(cls=Group)
@click.version_option(__version__, prog_name="wopihost", message="%(prog)s %(version)s")
def main() -> None:
    """wopihost: a WOPI host server. Settings come from WOPIHOST_* environment variables (see README)."""


# -- db ---------------------------------------------------------------------------


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@json_option
def db_upgrade(as_json: bool) -> None:
    """Apply all migrations (creates the database on first run). Safe to run on several nodes at once: they
    take turns, and the later ones find nothing to do."""
    settings = _settings(make_data_dir=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(settings.database_url)
    try:
        state = db.schema_state(engine, settings.database_url)
    finally:
        engine.dispose()
    if state.state == "ahead":  # Alembic would only say it cannot find the revision
        raise db.SchemaMismatch(state.problem())
    applied = db.upgrade(settings.database_url)
    if as_json:
        _echo_json({"revision": state.head, "head": state.head, "applied": applied})
    elif applied:
        click.echo(f"applied migrations {', '.join(applied)}: the database is at {state.head}")
    else:
        click.echo(f"the database is at migration {state.head} already: nothing to do")


@db_group.command("current")
@json_option
def db_current(as_json: bool) -> None:
    """The database's migration, and whether it is the one this wopihost needs; exits 0 if it is, 1 if not
    (behind, empty, or migrated by a newer wopihost), so that a script can wait for it or stop on it."""
    settings = _settings(needs_secret=False)
    refuse_missing_data_dir(settings, content=False)  # SQLite would say it cannot open its file
    engine = db.make_engine(settings.database_url)
    try:
        state = db.schema_state(engine, settings.database_url)
    finally:
        engine.dispose()
    at_head = state.state == "current"
    if as_json:
        _echo_json({"revision": state.current, "head": state.head, "state": state.state, "at_head": at_head})
    else:
        click.echo(f"{state.current}: at this wopihost's head" if at_head else state.problem())
    if not at_head:
        sys.exit(1)


# -- files ------------------------------------------------------------------------


@main.group("files")
def files_group() -> None:
    """Files on this host."""


@files_group.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="File name on the host (default: the file's own name).")
@click.option("--owner", type=USER, default=DEMO_OWNER, show_default=True, help="User id of the owner.")
@click.option(
    "--folder",
    default="",
    help="Folder of the owner's drive to put it in, as a/b (made if missing; default: the root).",
)
@json_option
def files_add(path: Path, name: str | None, owner: str, folder: str, as_json: bool) -> None:
    """Upload a local file into the owner's drive."""
    settings = _settings()
    stat = path.stat()
    if not S_ISREG(stat.st_mode):  # a pipe would wait for a writer, a device never end
        raise click.BadParameter(f"{path} is not a regular file: nothing was stored", param_hint="'PATH'")
    if stat.st_size > settings.max_file_size:  # before a byte is read
        raise click.ClickException(
            f"{path} is too large: {stat.st_size} bytes, more than WOPIHOST_MAX_FILE_SIZE "
            f"({settings.max_file_size} bytes); nothing was stored"
        )
    # Every name checked before the folders are made: a refused one leaves nothing behind.
    name = _checked_name(name, "'--name'") if name is not None else _checked_name(path.name, "'PATH'", "; give --name")
    folders = [_checked_name(part, "'--folder'") for part in folder.split("/") if part]
    services = _services()
    with open(path, "rb") as source, _progress(stat.st_size, f"adding {path.name}") as advance:
        file = services.add_file(owner, name, _Counted(source, path, advance), folders)
    if as_json:
        _echo_json(_file_json(file))
    else:
        click.echo(f"{file.id}  {file.name}  ({file.size} bytes, owner {file.owner_id})")


def _checked_name(name: str, param_hint: str, remedy: str = "") -> str:
    try:
        return check(name)
    except InvalidName as exc:
        raise click.BadParameter(f"{exc}: {name!r}{remedy}; nothing was stored", param_hint=param_hint) from None


@files_group.command("list")
@json_option
def files_list(as_json: bool) -> None:
    """List every file."""
    _echo_rows(
        [_file_json(f) for f in _services().files.list()],
        as_json,
        lambda f: f"{f['id']}  {f['name']}  {f['size']} bytes  v{f['version']}  owner {f['owner']}  {f['modified']}",
        "no files",
    )


def _file_info(services: Services, file_id: str) -> dict:
    """A file as `files info` shows it: where it is and what holds it."""
    now = services.clock.now()
    with services.db.read() as s:  # one read: the file and its folder as they were together
        file = load_file(s, file_id)
        folder = s.get_one(Folder, file.folder_id)
        path = "/".join([*Tree.path_of(s, folder), file.name])
        lock = live_lock(s, file_id, now)
        coauth = live_coauth_locks(s, file_id, now)
    return {
        **_file_json(file),
        "path": path,
        "folder_id": file.folder_id,
        "drive_id": folder.drive_id,
        "created": iso_round_trip(file.created_at),
        "modified_by": file.modified_by or file.owner_id,
        "sha256": file.sha256,
        "sequence_number": file.sequence_number,
        "lock": {"lock_id": lock.lock_id, "expires": iso_round_trip(lock.expires_at)} if lock else None,
        "coauth_locks": [
            {"lock_id": c.lock_id, "type": c.lock_type, "expires": iso_round_trip(c.expires_at)} for c in coauth
        ],
    }


def _locks_text(info: dict) -> str:
    held = [f"lock {info['lock']['lock_id']!r} until {info['lock']['expires']}"] if info["lock"] else []
    held += [f"{c['type']} lock {c['lock_id']!r} until {c['expires']}" for c in info["coauth_locks"]]
    return "; ".join(held) or "not locked"


@files_group.command("info")
@click.argument("file_id")
@json_option
def files_info(file_id: str, as_json: bool) -> None:
    """One file: name, place, size, version, hash and locks."""
    info = _file_info(_services(), file_id)
    if as_json:
        _echo_json(info)
        return
    for label, value in [
        ("id", info["id"]),
        ("name", info["name"]),
        ("path", f"/{info['path']}"),
        ("drive", info["drive_id"]),
        ("folder", info["folder_id"]),
        ("owner", info["owner"]),
        ("size", f"{info['size']} bytes"),
        ("version", info["version"]),
        ("sha256", info["sha256"]),
        ("created", info["created"]),
        ("modified", f"{info['modified']} by {info['modified_by']}"),
        ("locks", _locks_text(info)),
    ]:
        click.echo(f"{label + ':':10}{value}")


@files_group.command("rm")
@click.argument("file_id")
@click.option("--force", is_flag=True, help="Delete it even while a client holds a lock on it (the lock goes too).")
@json_option
def files_rm(file_id: str, force: bool, as_json: bool) -> None:
    """Delete a file, as WOPI's DeleteFile does; a locked file only with --force."""
    services = _services()
    info = _file_info(services, file_id)
    if not force and (info["lock"] or info["coauth_locks"]):
        raise click.ClickException(
            f"file {file_id} is locked ({_locks_text(info)}), a client may be editing it: "
            "nothing was deleted; --force deletes it anyway"
        )
    removed = services.files.delete(file_id, force=force)
    if as_json:
        _echo_json(
            {"id": file_id, "name": info["name"], "size": info["size"], "deleted": True, "removed_locks": removed}
        )
        return
    click.echo(
        f"deleted {file_id} ({info['name']}, {info['size']} bytes)"
        + (f"; removed its locks {', '.join(map(repr, removed))}" if removed else "")
    )


# -- tokens -----------------------------------------------------------------------


@main.group("token")
def token_group() -> None:
    """Access tokens."""


FOLDER_RIGHT_WORDS = {"list": "l", "create": "c", "manage": "m", "write": "w", "all": "lcmw", "none": ""}


def _folder_rights(ctx: click.Context, param: click.Parameter, text: str) -> str:
    """--folders' words as the letters of FOLDER_RIGHTS ("list,create" is "lc")."""
    words = [word.strip().lower() for word in text.split(",") if word.strip()]
    unknown = [word for word in words if word not in FOLDER_RIGHT_WORDS]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: use {', '.join(FOLDER_RIGHT_WORDS)}")
    return "".join(FOLDER_RIGHT_WORDS[word] for word in words)


@token_group.command("issue")
@click.argument("file_id", required=False)
@click.option(
    "--api",
    is_flag=True,
    help="An API token (Graph, Authorization: Bearer) instead of a WOPI "
    "token for one file; it reaches the user's drives.",
)
@click.option(
    "--container",
    "folder_id",
    help="A WOPI token for this container (folder) instead of a file: "
    "list, create, manage and write in it and below (--read-only: "
    "list only).",
)
@click.option("--user", type=USER, required=True, help="User id the token acts for (created, with a drive, if new).")
@click.option("--read-only", is_flag=True, help="Grant read access only.")
@click.option(
    "--folders",
    default="none",
    show_default=True,
    help="What a file token may do in the containers above its file, and in the user's root "
    "container through the ecosystem (docs/wopi.md §4.2), through the URLs its responses hand "
    "out (EnumerateAncestors, GetEcosystem ...): a comma-separated list of list, create, "
    "manage (rename, delete), write (the files in them; not with --read-only), all or none.",
    callback=_folder_rights,
)
@click.option(
    "--ttl",
    default=None,
    callback=_positive_duration,
    help="Lifetime, more than 0: 10h, 30m, 2d ... (default WOPIHOST_TOKEN_TTL).",
)
@json_option
def token_issue(
    file_id: str | None,
    api: bool,
    folder_id: str | None,
    user: str,
    read_only: bool,
    folders: str,
    ttl: float | None,
    as_json: bool,
) -> None:
    """Issue an access token for one file (or --container) and one user, or (--api) an API token for one
    user."""
    if [bool(file_id), api, bool(folder_id)].count(True) != 1:
        raise click.UsageError(
            "give a FILE_ID for a WOPI token, --container for a container token, or --api for an API token"
        )
    if folders and not file_id:  # a container token's rights are its own; an API token's are the user's drives'
        raise click.BadParameter(
            "rights in the folders above a file are for a file's token, not with --container or --api",
            param_hint="'--folders'",
        )
    if read_only and "w" in folders:  # its folder would hand out write tokens for its own file and its siblings
        raise click.BadParameter(
            "a --read-only token cannot have the folder right write (or all): it would get write tokens "
            "for the files through their folder",
            param_hint="'--folders'",
        )
    services = _services()
    expires_at = services.clock.now() + timedelta(seconds=ttl or services.settings.token_ttl)
    if api:
        issued, drive_id = services.issue_api_token(user, not read_only, expires_at)
        _print_api_token(services, issued, drive_id, as_json)
        return
    if folder_id:
        services.containers.get(folder_id)
        issued = services.issue_container_token(folder_id, user, "l" if read_only else "lcmw", expires_at)
    else:
        assert file_id is not None  # the one of the three given
        services.files.get(file_id)
        issued = services.issue_token(file_id, user, not read_only, expires_at, folders)
    _print_token(services, issued, as_json)


def _print_api_token(services: Services, issued: IssuedToken, drive_id: str, as_json: bool) -> None:
    info = {
        "user": issued.grant.user_id,
        "can_write": issued.grant.can_write,
        "access_token": issued.token,
        "expires": iso_round_trip(issued.grant.expires_at),
        "drive_id": drive_id,
        "graph_url": f"{services.settings.public_url}/v1.0",
    }
    if as_json:
        _echo_json(info)
        return
    click.echo(f"access_token: {info['access_token']}")
    click.echo(f"expires:      {info['expires']}")
    click.echo(f"permissions:  {'read and write' if info['can_write'] else 'read only'}, user {info['user']}")
    click.echo(f"drive_id:     {drive_id}")
    click.echo(
        f"Graph:        curl -s -H {shlex.quote('Authorization: Bearer ' + issued.token)} {info['graph_url']}/me/drive"
    )


@token_group.command("revoke")
@click.argument("token", required=False)
@click.option(
    "--file",
    "file_id",
    help="Revoke every token for this file: no token from before opens it any more, those handed out for it "
    "through another (a container's, a sibling's) included.",
)
@click.option("--user", help="Revoke every token for this user.")
@json_option
def token_revoke(token: str | None, file_id: str | None, user: str | None, as_json: bool) -> None:
    """Revoke one token, or all tokens of a file and/or a user; fails if nothing matched (with --file: if there
    is no such file)."""
    if not (token or file_id or user):
        raise click.UsageError("give a TOKEN, --file or --user")
    if file_id == "":  # the resource of API tokens (tokens.py): not a file
        raise click.BadParameter("a file id, not empty", param_hint="'--file'")
    services = _services()
    with services.db.write() as s:
        count = services.tokens.revoke(s, token=token, file_id=file_id, user_id=user)
    by_file = file_id is not None and not token  # the file is revoked, whatever its own tokens' rows
    if not count and not by_file:
        what = (
            "that token is not a live token of this host (malformed, revoked, or signed by another)"
            if token
            else "no live token matched"
        )
        raise click.ClickException(f"{what}: nothing was revoked")
    if by_file and not count:
        services.files.get(cast(str, file_id))  # "file not found" unless it exists
    if as_json:
        _echo_json({"revoked": count})
    elif by_file:
        click.echo(
            f"revoked {count} token{'s' if count != 1 else ''} issued for {file_id}; no token "
            + (f"of {user} " if user else "")
            + "from before now opens it any more, those handed out for it through a container's or a sibling's "
            "included"
        )
    else:
        click.echo(f"revoked {count} token{'s' if count != 1 else ''}")


# -- drives -----------------------------------------------------------------------


@main.group("drives")
def drives_group() -> None:
    """Drives: every user's own, and shared ones (Graph's sites and groups)."""


@drives_group.command("create")
@click.option(
    "--kind",
    type=click.Choice(SHARED_KINDS),
    default="site",
    show_default=True,
    help="Reached as sites/{id}/drive or groups/{id}/drive (and drives/{id}).",
)
@click.option("--name", type=DriveName(), required=True, help="The drive's name.")
@click.option("--member", "members", type=USER, multiple=True, help="A user who may reach it (repeatable).")
@json_option
def drives_create(kind: str, name: str, members: tuple[str, ...], as_json: bool) -> None:
    """Create a shared drive with its members: all of it, or nothing."""
    members = tuple(dict.fromkeys(members))  # a user named twice is one member
    drive = _services().drives.create_shared(kind, name, members)
    if as_json:
        _echo_json({"id": drive.id, "kind": drive.kind, "name": drive.name, "members": list(members)})
    else:
        click.echo(drive.id)


@drives_group.command("add-member")
@click.argument("drive_id")
@click.argument("user", type=USER)
@json_option
def drives_add_member(drive_id: str, user: str, as_json: bool) -> None:
    """Let a user reach a shared drive."""
    try:
        _services().drives.add_member(drive_id, user)
    except ValueError as exc:  # no such shared drive
        raise click.ClickException(str(exc)) from None
    if as_json:
        _echo_json({"drive_id": drive_id, "user": user, "member": True})
    else:
        click.echo(f"{user} may reach {drive_id}")


@drives_group.command("remove-member")
@click.argument("drive_id")
@click.argument("user")
@json_option
def drives_remove_member(drive_id: str, user: str, as_json: bool) -> None:
    """Take a user's access to a shared drive away, and revoke their WOPI tokens for its files and folders."""
    revoked = _services().drives.remove_member(drive_id, user)
    if revoked is None:
        raise click.ClickException(f"{user} is not a member of {drive_id}: nothing was changed")
    if as_json:
        _echo_json({"drive_id": drive_id, "user": user, "member": False, "revoked": revoked})
    else:
        click.echo(f"{user} no longer reaches {drive_id}; revoked {revoked} token{'s' if revoked != 1 else ''}")


@drives_group.command("list")
@json_option
def drives_list(as_json: bool) -> None:
    """Every drive, its kind and who may reach it."""
    rows = [
        {"id": d.id, "kind": d.kind, "name": d.name, "members": members} for d, members in _services().drives.list()
    ]
    _echo_rows(
        rows,
        as_json,
        lambda row: f"{row['id']}  {row['kind']:8}  {row['name'] or '-'}  {', '.join(row['members'])}",
        "no drives",
    )


# -- share links and activities ---------------------------------------------------


@main.group("shares")
def shares_group() -> None:
    """Share links (WOPI GetShareUrl), which open a file or folder for whoever holds them."""


@shares_group.command("list")
@click.argument("item_id", required=False)
@json_option
def shares_list(item_id: str | None, as_json: bool) -> None:
    """Every share link (of one file or folder), live or revoked; the link itself is shown only in part."""
    rows = [
        {
            "id": f"{link.id[:6]}...",
            "item_id": link.item_id,
            "type": link.url_type,
            "created_by": link.created_by,
            "created": iso_round_trip(link.created_at),
            "revoked": iso_round_trip(link.revoked_at) if link.revoked_at else None,
        }
        for link in _services().shares.list(item_id)
    ]
    _echo_rows(
        rows,
        as_json,
        lambda row: (
            f"{row['id']}  {row['item_id']}  {row['type']}  by {row['created_by']}  "
            f"{row['created']}" + (f"  revoked {row['revoked']}" if row["revoked"] else "")
        ),
        "no share links",
    )


@shares_group.command("revoke")
@click.argument("link", required=False)
@click.option("--item", "item_id", help="Revoke every link to this file or folder.")
@click.option(
    "--type", "url_type", type=click.Choice(URL_TYPES), help="With --item: only its links of this type (as listed)."
)
@json_option
def shares_revoke(link: str | None, item_id: str | None, url_type: str | None, as_json: bool) -> None:
    """Revoke one share link (its URL, its id or a Graph share id), or every link to an item (of one type); fails
    if no live link matched."""
    if not (link or item_id):
        raise click.UsageError("give a LINK or --item")
    if url_type and not item_id:
        raise click.UsageError("--type goes with --item")
    services = _services()
    link_id = None
    if link:
        link_id = link_id_of(link, services.settings.public_url)
        if link_id is None:
            raise click.ClickException(f"{link} is not a share link of this host")
    count = services.shares.revoke(link_id, item_id, url_type)
    if not count:
        raise click.ClickException(
            ("no live share link with that id" if link_id else f"no live {url_type or 'share'} link to {item_id}")
            + ": nothing was revoked"
        )
    if as_json:
        _echo_json({"revoked": count})
    else:
        click.echo(f"revoked {count} share link{'s' if count != 1 else ''}")


@main.command("activities")
@click.argument("file_id")
@json_option
def activities_command(file_id: str, as_json: bool) -> None:
    """The activities (comments, mentions ...) WOPI clients reported on a file, oldest first (JSON: each
    activity as the client sent it)."""
    found = _services().activities.of_file(file_id)
    rows = [
        {
            "id": a.activity_id,
            "file_id": file_id,
            "user": a.user_id,
            "type": a.type,
            "received": iso_round_trip(a.received_at),
            "activity": a.body,
        }
        for a in found
    ]
    _echo_rows(rows, as_json, _activity_line, "no activities")


def _activity_line(row: dict) -> str:
    body = row["activity"]
    data = body.get("Data") or {}
    mentioned = [p.get("Name") or p.get("Id") for p in body.get("People") or [] if p.get("Mentioned")]
    text = data.get("CommentText") or ""
    return (
        f"{row['received']}  {row['user']}  {row['type']} {data.get('ContentAction', '')}"
        f"  {_printable(data.get('ContentId', ''))}"
        + (f"  {text!r}" if text else "")
        + (f"  mentions {', '.join(map(_printable, mentioned))}" if mentioned else "")
    )


def _printable(value: object) -> str:
    """A client's text as it is when it holds nothing a terminal acts on (escape sequences, carriage returns
    that overwrite the line), quoted with its escapes shown otherwise."""
    text = str(value)
    return text if text.isprintable() else repr(text)


# -- locks ------------------------------------------------------------------------


@main.group("lock")
def lock_group() -> None:
    """WOPI locks and CSPP Plus coauth locks."""


@lock_group.command("list")
@json_option
def lock_list(as_json: bool) -> None:
    """Every live lock: WOPI locks and CSPP Plus coauth locks, with their file and expiry."""
    rows = [
        {
            "file_id": lock.file_id,
            "name": lock.name,
            "lock_id": lock.lock_id,
            "type": lock.type,
            "expires": iso_round_trip(lock.expires_at),
        }
        for lock in _services().locks.live()
    ]
    _echo_rows(
        rows,
        as_json,
        lambda row: f"{row['file_id']}  {row['name']}  {row['type']} lock {row['lock_id']!r}  expires {row['expires']}",
        "no live locks",
    )


@lock_group.command("break")
@click.argument("file_id")
@json_option
def lock_break(file_id: str, as_json: bool) -> None:
    """Remove every lock of a file, its WOPI lock and its coauth locks (for example after an editor crashed);
    exits 1 if it had none."""
    broken = _services().coauth.break_all(file_id)
    if broken.lock_id is None and not broken.coauth:
        raise click.ClickException(f"file {file_id} is not locked: there was no lock to break")
    if as_json:
        coauth = [{"lock_id": lock.lock_id, "type": lock.lock_type} for lock in broken.coauth]
        _echo_json({"file_id": file_id, "lock_id": broken.lock_id, "coauth_locks": coauth})
        return
    removed = [f"lock {broken.lock_id!r}"] if broken.lock_id is not None else []
    removed += [f"{lock.lock_type} lock {lock.lock_id!r}" for lock in broken.coauth]
    click.echo(f"removed {', '.join(removed)}")


# -- upload sessions and garbage collection -----------------------------------------


@main.group("sessions")
def sessions_group() -> None:
    """Upload sessions (CSPP Plus and Graph)."""


@sessions_group.command("list")
@json_option
def sessions_list(as_json: bool) -> None:
    """Open upload sessions, with their size and expiry (their id, a credential, is shown only in part)."""
    services = _services()
    now = services.clock.now()
    rows = [
        {
            "id": f"{row.token[:6]}...",
            "kind": row.kind,
            "file_id": row.file_id,
            "user": row.user_id,
            "bytes": row.received,
            "total": row.total,
            "finished": row.result is not None,
            "expires": iso_round_trip(row.expires_at),
            "expired": row.expires_at <= now,
        }
        for row in services.sessions.list()
    ]
    _echo_rows(rows, as_json, _session_line, "no upload sessions")


def _session_line(row: dict) -> str:
    state = "expired" if row["expired"] else f"expires {row['expires']}"
    size = f"{row['bytes']} of {row['total']}" if row["total"] is not None else str(row["bytes"])
    done = "  finished" if row["finished"] else ""
    return (
        f"{row['id']}  {row['kind']:5}  file {row['file_id'] or '(new)'}  user {row['user']}  "
        f"{size} bytes{done}  {state}"
    )


@main.command("gc")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    help="Only delete unreferenced blobs and partial writes older than this.",
)
@json_option
def gc_command(grace: str, as_json: bool) -> None:
    """Delete expired upload sessions, blobs nothing refers to, partial writes of dead processes and the
    records of expired or revoked tokens."""
    from .gc import Interrupted, collect

    try:
        seconds = parse_duration(grace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--grace'") from None
    try:
        done = collect(_services(), seconds, _track("checking unreferenced blobs"))
    except Interrupted as exc:  # what it did, then why it stopped (the failure's own one line, or its traceback)
        click.echo(f"{exc}; the next gc takes the rest", err=True)
        raise exc.__cause__ or exc from None
    if as_json:
        _echo_json(
            {
                "sessions": done.sessions,
                "blobs": done.blobs,
                "partial_writes": done.partial_writes,
                "tokens": done.tokens,
            }
        )
    else:
        click.echo(f"deleted {done}")


# -- backups ------------------------------------------------------------------------


@main.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@json_option
def backup(dest: Path, force: bool, as_json: bool) -> None:
    """Copy the SQLite database to DEST while the server runs (a consistent copy, WAL included). File contents
    are not in it: back up WOPIHOST_DATA_DIR/blobs alongside, after it. With PostgreSQL use pg_dump."""
    settings = _settings(needs_secret=False)
    source = sqlite_path(settings.database_url)
    refuse_missing_data_dir(settings, content=False)  # as db current: the database is what it needs there
    copied = backup_sqlite(source, dest, overwrite=force, busy_timeout=settings.database_busy_timeout)
    if as_json:
        _echo_json(
            {
                "database": str(dest),
                "size": copied.size,
                "revision": copied.revision,
                "source": str(source),
                "blobs": str(settings.blob_dir),
            }
        )
        return
    click.echo(f"wrote {dest}: a consistent copy of {source} ({copied.size} bytes, migration {copied.revision})")
    click.echo(
        f"file contents are not in it: now copy {settings.blob_dir} alongside (for example "
        f"rsync -a {shlex.quote(str(settings.blob_dir))}/ BACKUP/blobs/)"
    )


# -- checks -------------------------------------------------------------------------


@main.command(
    "validate", context_settings={"ignore_unknown_options": True, "help_option_names": []}, add_help_option=False
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def validate(args: tuple[str, ...]) -> None:
    """Run Microsoft's WOPI validator test cases (a checkout of wopi-validator-core) against a WOPI host,
    signing every request with proof keys; `wopihost validate --help` for the options."""
    from .validator.__main__ import main as run_validator  # the validator is a test tool: load it only here

    sys.exit(run_validator(list(args), prog="wopihost validate"))


@main.command("replay")
@click.argument("har", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wopisrc", metavar="URL", help="The WOPISrc the recording's first file becomes.")
@click.option("--token", metavar="T", help="The access token of a WOPI session ({{access_token:1}}).")
@click.option(
    "--graph-base",
    metavar="URL",
    help="Where the recording's Graph requests go, e.g. http://host/v1.0  [default: the WOPISrc's host].",
)
@click.option("--api-token", metavar="T", help="The Bearer token of a Graph session ({{api_token:1}}).")
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="OLD=NEW",
    help="A value the session never learns from an answer: an id, a placeholder such as {{upload_session:1}}, "
    "a URL prefix. Repeatable.",
)
@click.option(
    "--proof-keys",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Sign the requests recorded with proofs with the keys in DIR (made there on first use; point the "
    "host's WOPIHOST_DISCOVERY_URL at DIR/discovery.xml).",
)
@click.option(
    "--speed",
    type=click.Choice(["recorded", "max"]),
    help="recorded: keep the recording's gaps between requests; max: none. Either prints latency percentiles.",
)
@click.option(
    "--clients",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Clients replaying the session at once, each learning its own sessions and tickets; on one file their "
    "locks and saves meet, so answers may differ from the recording.",
)
@_timeout_option(60.0, "Seconds per request.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write JUnit XML to FILE.")
@json_option
def replay(
    har: Path,
    wopisrc: str | None,
    token: str | None,
    graph_base: str | None,
    api_token: str | None,
    maps: tuple[str, ...],
    proof_keys: Path | None,
    speed: str | None,
    clients: int,
    timeout: float,
    junit: Path | None,
    as_json: bool,
) -> None:
    """Send the requests of a recorded session (HAR, from `serve --record`) to a host in order and compare its
    answers with the recorded ones; exits 1 if any diverged."""
    from .replay.command import run  # a test tool, with the validator's extra: load it only here
    from .replay.targets import Targets, UsageProblem, parse_map

    try:
        pairs = tuple(parse_map(m) for m in maps)
    except UsageProblem as problem:
        raise click.BadParameter(str(problem), param_hint="--map") from None
    targets = Targets(wopisrc, token, graph_base, api_token, pairs)
    status = run(
        har,
        targets,
        proof_keys=proof_keys,
        speed=speed,
        clients=clients,
        timeout=timeout,
        junit=junit,
        as_json=as_json,
    )
    sys.exit(status)


@main.command("doctor")
@_timeout_option(5.0, "Seconds to wait for each network check.")
@json_option
def doctor(timeout: float, as_json: bool) -> None:
    """Check what a deployment depends on (the database reachable, writable and migrated, storage, the public
    URL, the discovery) and say how to fix what is wrong; exits 1 if anything is, 0 if not."""
    from .doctor import run

    findings = run(Services.create(_settings(), make_data_dir=False), timeout)
    problems = sum(not f.ok for f in findings)
    if as_json:
        _echo_json(
            {
                "ok": not problems,
                "problems": problems,
                "checks": [{"ok": f.ok, "what": f.what, "fix": f.fix or None} for f in findings],
            }
        )
    else:
        for finding in findings:
            click.echo(finding.line())
        click.echo(f"{problems} problem{'s' if problems != 1 else ''} found" if problems else "all checks passed")
    if problems:
        sys.exit(1)


# -- demo and serving -------------------------------------------------------------


@main.command("demo")
@json_option
def demo(as_json: bool) -> None:
    """Create the demo document (once) and print a fresh token for it."""
    services = _services()
    existing = [f for f in services.files.list() if f.owner_id == DEMO_OWNER and f.name == DEMO_NAME]
    file = existing[0] if existing else services.add_file(DEMO_OWNER, DEMO_NAME, io.BytesIO(minimal_docx()))
    _print_token(services, services.issue_token(file.id, DEMO_OWNER, True), as_json)


@main.command("serve")
@click.option(
    "--host", default="127.0.0.1", show_default=True, callback=_listen_host, help="An IP address or a host name."
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Processes.")
@click.option(
    "--threads", default=None, type=click.IntRange(min=1), help="Requests each process serves at once  [default: 64]."
)
@click.option(
    "--record",
    "record",
    default=None,
    type=click.Path(file_okay=False, writable=True, path_type=Path),
    help="Record every WOPI and Graph request and response into this directory, as HAR files (one per client "
    "session, secrets replaced), written when the server stops (sets WOPIHOST_RECORD_DIR).",
)
@json_option
def serve(host: str, port: int, workers: int, threads: int | None, record: Path | None, as_json: bool) -> None:
    """Serve with gunicorn (for production use deploy/gunicorn.conf.py). Refuses to start on a database older
    or newer than this wopihost. --json: where it serves, as one JSON line on stdout, once it is ready to
    start."""
    from .server import DEFAULTS, WopiHostServer

    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address, as URLs and gunicorn take it
    # Without a configured public URL, the URLs we hand out name the address we listen on. Empty is unset, as
    # for every setting (an env file's `WOPIHOST_PUBLIC_URL=` line).
    if not os.environ.get("WOPIHOST_PUBLIC_URL", "").strip():
        os.environ["WOPIHOST_PUBLIC_URL"] = f"http://{address}"
    if record is not None:
        try:
            record.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.BadParameter(f"cannot create {record}: {exc.strerror or exc}", param_hint="--record") from None
        os.environ["WOPIHOST_RECORD_DIR"] = str(record.resolve())
    services = _services(make_data_dir=True)  # fail here, once, rather than in every worker
    services.db.dispose()
    threads = threads or cast(int, DEFAULTS["threads"])
    started = {
        "public_url": services.settings.public_url,
        "bind": f"http://{address}",
        "workers": workers,
        "threads": threads,
        "data_dir": str(services.settings.data_dir),
    }
    if services.settings.record_dir is not None:
        started["record_dir"] = str(services.settings.record_dir)
    if urlsplit(services.settings.public_url).hostname in ("0.0.0.0", "::"):  # `--host 0.0.0.0` without a public URL
        click.echo(
            f"warning: WOPIHOST_PUBLIC_URL is {services.settings.public_url}, an address that names no machine: every "
            "WOPISrc and URL handed out carries it; set it to the address the clients reach",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(started))
        sys.stdout.flush()
    else:
        message = (
            f"wopihost serving {started['public_url']} on {started['bind']} with {workers} workers of "
            f"{threads} threads; data in {started['data_dir']}"
        )
        if "record_dir" in started:
            message += f"; recording into {started['record_dir']}"
        if log_format() == "json":  # every line the server writes is then one JSON object, this one too
            message = JsonFormatter().format(
                logging.makeLogRecord(
                    {"name": "wopihost.serve", "levelname": "INFO", "levelno": logging.INFO, "msg": message}
                )
            )
        click.echo(message, err=True)
    # gunicorn's X-Forwarded-Proto from the proxies wopihost takes X-Forwarded-* from, as deploy/gunicorn.conf.py has it
    proxies = gunicorn_forwarded_allow_ips()
    WopiHostServer(
        {**DEFAULTS, "bind": address, "workers": workers, "threads": threads, "forwarded_allow_ips": proxies}
    ).run()


# -- the host page ------------------------------------------------------------------


@main.command("open")
@click.argument("file_id")
@click.option(
    "--user", type=USER, required=True, help="User id the page opens the file for (created, with a drive, if new)."
)
@click.option("--action", type=click.Choice(ACTIONS), default="view", show_default=True)
@click.option("--read-only", is_flag=True, help="Give the WOPI client a read-only token (view only).")
@click.option(
    "--ttl",
    default=None,
    callback=_positive_duration,
    help="How long the link may be opened, more than 0: 5m, 1h ... (default WOPIHOST_LAUNCH_LINK_TTL); "
    "the token it opens lives WOPIHOST_TOKEN_TTL.",
)
@json_option
def open_command(file_id: str, user: str, action: str, read_only: bool, ttl: float | None, as_json: bool) -> None:
    """Print a launch link: the built-in host page, opening FILE_ID in the WOPI client of the discovery."""
    services = _services()
    settings = services.settings
    link = services.launches.issue(
        file_id,
        user,
        action,
        can_write=not read_only,
        ttl=timedelta(seconds=ttl or settings.launch_link_ttl),
        token_ttl=timedelta(seconds=settings.token_ttl),
    )
    url = services.launch_url(link.action, link.ticket)
    if as_json:
        _echo_json(
            {
                "url": url,
                "action": link.action,
                "file_id": link.file_id,
                "user": user,
                "expires": iso_round_trip(link.expires_at),
            }
        )
    else:
        click.echo(url)


if __name__ == "__main__":
    sys.exit(main())
