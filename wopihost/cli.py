"""The `wopihost` command: administration and serving. Every command reads the same WOPIHOST_* settings."""

from __future__ import annotations

import io
import json
import os
import shlex
import sys
from datetime import timedelta
from pathlib import Path

import click

from . import db
from .clock import iso_round_trip, to_epoch_ms
from .config import ConfigError, Settings, parse_duration
from .demo import minimal_docx
from .errors import WopiError
from .launches import ACTIONS
from .models import File
from .names import InvalidName
from .services import Services
from .drives import SHARED_KINDS
from .shares import link_id_of
from .tokens import IssuedToken

DEMO_OWNER = "demo"
DEMO_NAME = "Welcome.docx"


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _services() -> Services:
    """Services on a database whose schema is current (the tables exist and match this code)."""
    settings = _settings()
    services = Services.create(settings)
    current, head = db.current_revision(services.db.engine), db.head_revision(settings.database_url)
    if current != head:
        raise click.ClickException(f"the database is at migration {current or 'none'}, this code needs {head}: "
                                   "run `wopihost db upgrade`")
    return services


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2))


def _file_json(file: File) -> dict:
    return {"id": file.id, "name": file.name, "owner": file.owner_id, "size": file.size,
            "version": str(file.version), "modified": iso_round_trip(file.modified_at)}


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
    return {**where, "user": grant.user_id, "can_write": grant.can_write, "access_token": issued.token,
            "access_token_ttl": to_epoch_ms(grant.expires_at), "expires": iso_round_trip(grant.expires_at),
            first_call: f"{url}?access_token={issued.token}"}


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


@click.group()
def main() -> None:
    """wopihost: a WOPI host server. Settings come from WOPIHOST_* environment variables (see README)."""


# -- db ---------------------------------------------------------------------------

@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations (creates the database on first run)."""
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db.upgrade(settings.database_url)
    click.echo(f"database is at migration {db.head_revision(settings.database_url)}")


# -- files ------------------------------------------------------------------------

@main.group("files")
def files_group() -> None:
    """Files on this host."""


@files_group.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="File name on the host (default: the file's own name).")
@click.option("--owner", default=DEMO_OWNER, show_default=True, help="User id of the owner.")
@click.option("--folder", default="", help="Folder of the owner's drive to put it in, as a/b (made if missing; "
                                           "default: the root).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def files_add(path: Path, name: str | None, owner: str, folder: str, as_json: bool) -> None:
    """Upload a local file into the owner's drive."""
    services = _services()
    try:
        with open(path, "rb") as source:
            file = services.add_file(owner, name or path.name, source, [n for n in folder.split("/") if n])
    except (InvalidName, ValueError, WopiError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _echo_json(_file_json(file))
    else:
        click.echo(f"{file.id}  {file.name}  ({file.size} bytes, owner {file.owner_id})")


@files_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def files_list(as_json: bool) -> None:
    """List every file."""
    files = _services().files.list()
    if as_json:
        _echo_json([_file_json(f) for f in files])
        return
    for f in files:
        click.echo(f"{f.id}  {f.name}  {f.size} bytes  v{f.version}  owner {f.owner_id}  {iso_round_trip(f.modified_at)}")


# -- tokens -----------------------------------------------------------------------

@main.group("token")
def token_group() -> None:
    """Access tokens."""


FOLDER_RIGHT_WORDS = {"list": "l", "create": "c", "manage": "m", "write": "w", "all": "lcmw", "none": ""}


def _folder_rights(text: str) -> str:
    words = [word.strip().lower() for word in text.split(",") if word.strip()]
    unknown = [word for word in words if word not in FOLDER_RIGHT_WORDS]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: use {', '.join(FOLDER_RIGHT_WORDS)}")
    return "".join(FOLDER_RIGHT_WORDS[word] for word in words)


@token_group.command("issue")
@click.argument("file_id", required=False)
@click.option("--api", is_flag=True, help="An API token (Graph, Authorization: Bearer) instead of a WOPI "
                                          "token for one file; it reaches the user's drives.")
@click.option("--container", "folder_id", help="A WOPI token for this container (folder) instead of a file: "
                                               "list, create, manage and write in it and below (--read-only: "
                                               "list only).")
@click.option("--user", required=True, help="User id the token acts for (created, with a drive, if new).")
@click.option("--read-only", is_flag=True, help="Grant read access only.")
@click.option("--folders", default="none", show_default=True,
              help="What a file token may do in the containers above its file, through the URLs its "
                   "responses hand out (EnumerateAncestors ...): a comma-separated list of list, create, "
                   "manage (rename, delete), write (the files in them), all or none.")
@click.option("--ttl", default=None, help="Lifetime, e.g. 10h, 30m (default WOPIHOST_TOKEN_TTL).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def token_issue(file_id: str | None, api: bool, folder_id: str | None, user: str, read_only: bool,
                folders: str, ttl: str | None, as_json: bool) -> None:
    """Issue an access token for one file (or --container) and one user, or (--api) an API token for one
    user."""
    if [bool(file_id), api, bool(folder_id)].count(True) != 1:
        raise click.UsageError("give a FILE_ID for a WOPI token, --container for a container token, or --api "
                               "for an API token")
    reach = _folder_rights(folders)
    services = _services()
    try:
        seconds = parse_duration(ttl) if ttl else services.settings.token_ttl
        expires_at = services.clock.now() + timedelta(seconds=seconds)
        if api:
            issued, drive_id = services.issue_api_token(user, not read_only, expires_at)
        elif folder_id:
            services.containers.get(folder_id)
            issued = services.issue_container_token(folder_id, user, "l" if read_only else "lcmw", expires_at)
        else:
            services.files.get(file_id)
            issued = services.issue_token(file_id, user, not read_only, expires_at, reach)
    except (ValueError, WopiError) as exc:
        raise click.ClickException(str(exc)) from None
    if api:
        _print_api_token(services, issued, drive_id, as_json)
    else:
        _print_token(services, issued, as_json)


def _print_api_token(services: Services, issued: IssuedToken, drive_id: str, as_json: bool) -> None:
    info = {"user": issued.grant.user_id, "can_write": issued.grant.can_write, "access_token": issued.token,
            "expires": iso_round_trip(issued.grant.expires_at), "drive_id": drive_id,
            "graph_url": f"{services.settings.public_url}/v1.0"}
    if as_json:
        _echo_json(info)
        return
    click.echo(f"access_token: {info['access_token']}")
    click.echo(f"expires:      {info['expires']}")
    click.echo(f"permissions:  {'read and write' if info['can_write'] else 'read only'}, user {info['user']}")
    click.echo(f"drive_id:     {drive_id}")
    click.echo(f"Graph:        curl -s -H {shlex.quote('Authorization: Bearer ' + issued.token)} "
               f"{info['graph_url']}/me/drive")


# -- drives -----------------------------------------------------------------------

@main.group("drives")
def drives_group() -> None:
    """Drives: every user's own, and shared ones (Graph's sites and groups)."""


@drives_group.command("create")
@click.option("--kind", type=click.Choice(SHARED_KINDS), default="site", show_default=True,
              help="Reached as sites/{id}/drive or groups/{id}/drive (and drives/{id}).")
@click.option("--name", required=True, help="The drive's name.")
@click.option("--member", "members", multiple=True, help="A user who may reach it (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def drives_create(kind: str, name: str, members: tuple[str, ...], as_json: bool) -> None:
    """Create a shared drive."""
    services = _services()
    drive = services.drives.create_shared(kind, name)
    try:
        for user in members:
            services.drives.add_member(drive.id, user)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _echo_json({"id": drive.id, "kind": drive.kind, "name": drive.name, "members": list(members)})
    else:
        click.echo(drive.id)


@drives_group.command("add-member")
@click.argument("drive_id")
@click.argument("user")
def drives_add_member(drive_id: str, user: str) -> None:
    """Let a user reach a shared drive."""
    try:
        _services().drives.add_member(drive_id, user)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@drives_group.command("remove-member")
@click.argument("drive_id")
@click.argument("user")
def drives_remove_member(drive_id: str, user: str) -> None:
    """Take a user's access to a shared drive away."""
    if not _services().drives.remove_member(drive_id, user):
        raise click.ClickException(f"{user} is not a member of {drive_id}")


@drives_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def drives_list(as_json: bool) -> None:
    """Every drive, its kind and who may reach it."""
    rows = [{"id": d.id, "kind": d.kind, "name": d.name, "members": members}
            for d, members in _services().drives.list()]
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['id']}  {row['kind']:8}  {row['name'] or '-'}  {', '.join(row['members'])}")


@token_group.command("revoke")
@click.argument("token", required=False)
@click.option("--file", "file_id", help="Revoke every token for this file.")
@click.option("--user", help="Revoke every token for this user.")
def token_revoke(token: str | None, file_id: str | None, user: str | None) -> None:
    """Revoke one token, or all tokens of a file and/or a user."""
    if not (token or file_id or user):
        raise click.UsageError("give a TOKEN, --file or --user")
    services = _services()
    with services.db.write() as s:
        count = services.tokens.revoke(s, token=token, file_id=file_id, user_id=user)
    click.echo(f"revoked {count} token{'s' if count != 1 else ''}")


# -- share links and activities ---------------------------------------------------

@main.group("shares")
def shares_group() -> None:
    """Share links (WOPI GetShareUrl), which open a file or folder for whoever holds them."""


@shares_group.command("list")
@click.argument("item_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def shares_list(item_id: str | None, as_json: bool) -> None:
    """Every share link (of one file or folder), live or revoked; the link itself is shown only in part."""
    rows = [{"id": f"{link.id[:6]}...", "item_id": link.item_id, "type": link.url_type, "created_by": link.created_by,
             "created": iso_round_trip(link.created_at),
             "revoked": iso_round_trip(link.revoked_at) if link.revoked_at else None}
            for link in _services().shares.list(item_id)]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no share links")
    for row in rows:
        click.echo(f"{row['id']}  {row['item_id']}  {row['type']}  by {row['created_by']}  {row['created']}"
                   + (f"  revoked {row['revoked']}" if row["revoked"] else ""))


@shares_group.command("revoke")
@click.argument("link", required=False)
@click.option("--item", "item_id", help="Revoke every link to this file or folder.")
def shares_revoke(link: str | None, item_id: str | None) -> None:
    """Revoke one share link (its URL, its id or a Graph share id), or every link to an item."""
    if not (link or item_id):
        raise click.UsageError("give a LINK or --item")
    services = _services()
    link_id = None
    if link:
        link_id = link_id_of(link, services.settings.public_url)
        if link_id is None:
            raise click.ClickException(f"{link} is not a share link of this host")
    count = services.shares.revoke(link_id, item_id)
    if link_id and not count:
        raise click.ClickException("no live share link with that id")
    click.echo(f"revoked {count} share link{'s' if count != 1 else ''}")


@main.command("activities")
@click.argument("file_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: each activity as the client sent it.")
def activities_command(file_id: str, as_json: bool) -> None:
    """The activities (comments, mentions ...) WOPI clients reported on a file, oldest first."""
    try:
        found = _services().activities.of_file(file_id)
    except WopiError as exc:
        raise click.ClickException(exc.reason) from None
    if as_json:
        _echo_json([{"id": a.activity_id, "user": a.user_id, "type": a.type,
                     "received": iso_round_trip(a.received_at), "activity": a.body} for a in found])
        return
    if not found:
        click.echo("no activities")
    for a in found:
        data = a.body.get("Data") or {}
        mentioned = [p.get("Name") or p.get("Id") for p in a.body.get("People") or [] if p.get("Mentioned")]
        text = data.get("CommentText") or ""
        click.echo(f"{iso_round_trip(a.received_at)}  {a.user_id}  {a.type} {data.get('ContentAction', '')}"
                   f"  {data.get('ContentId', '')}" + (f"  {text!r}" if text else "")
                   + (f"  mentions {', '.join(map(str, mentioned))}" if mentioned else ""))


# -- locks ------------------------------------------------------------------------

@main.group("lock")
def lock_group() -> None:
    """WOPI locks."""


@lock_group.command("break")
@click.argument("file_id")
def lock_break(file_id: str) -> None:
    """Remove a file's lock (for example after an editor crashed)."""
    try:
        removed = _services().locks.break_lock(file_id)
    except WopiError as exc:
        raise click.ClickException(exc.reason) from None
    click.echo(f"removed lock {removed!r}" if removed else "the file was not locked")


# -- upload sessions and garbage collection -----------------------------------------

@main.group("sessions")
def sessions_group() -> None:
    """Upload sessions (CSPP Plus and Graph)."""


@sessions_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sessions_list(as_json: bool) -> None:
    """Open upload sessions, with their size and expiry (the token is shown only in part)."""
    services = _services()
    now = services.clock.now()
    rows = [{"token": f"{row.token[:6]}...", "kind": row.kind, "file_id": row.file_id, "user": row.user_id,
             "bytes": row.received, "total": row.total, "finished": row.result is not None,
             "expires": iso_round_trip(row.expires_at), "expired": row.expires_at <= now}
            for row in services.sessions.list()]
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        state = "expired" if row["expired"] else f"expires {row['expires']}"
        size = f"{row['bytes']} of {row['total']}" if row["total"] is not None else str(row["bytes"])
        done = "  finished" if row["finished"] else ""
        click.echo(f"{row['token']}  {row['kind']:5}  file {row['file_id'] or '(new)'}  user {row['user']}  "
                   f"{size} bytes{done}  {state}")


@main.command("gc")
@click.option("--grace", default="1h", show_default=True,
              help="Only delete unreferenced blobs and partial writes older than this.")
def gc_command(grace: str) -> None:
    """Delete expired upload sessions, blobs nothing refers to, partial writes of dead processes and the
    records of expired or revoked tokens."""
    from .gc import collect

    try:
        seconds = parse_duration(grace)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    done = collect(_services(), seconds)
    click.echo(f"deleted {done.sessions} expired upload and workbook sessions, {done.blobs} unreferenced blobs, "
               f"{done.partial_writes} partial writes, {done.tokens} expired or revoked tokens")


@main.command("validate", context_settings={"ignore_unknown_options": True, "help_option_names": []},
              add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def validate(args: tuple[str, ...]) -> None:
    """Run Microsoft's WOPI validator test cases (a checkout of wopi-validator-core) against a WOPI host,
    signing every request with proof keys; `wopihost validate --help` for the options."""
    from .validator.__main__ import main as run_validator  # the validator is a test tool: load it only here
    sys.exit(run_validator(list(args), prog="wopihost validate"))


@main.command("doctor")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for each network check.")
def doctor(timeout: float) -> None:
    """Check the configuration a deployment depends on; exits 1 if anything is wrong."""
    from .doctor import run

    findings = run(Services.create(_settings()), timeout)
    for finding in findings:
        click.echo(finding.line())
    problems = sum(not f.ok for f in findings)
    click.echo(f"{problems} problem{'s' if problems != 1 else ''} found" if problems else "all checks passed")
    if problems:
        sys.exit(1)


# -- demo and serving -------------------------------------------------------------

@main.command("demo")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def demo(as_json: bool) -> None:
    """Create the demo document (once) and print a fresh token for it."""
    services = _services()
    existing = [f for f in services.files.list() if f.owner_id == DEMO_OWNER and f.name == DEMO_NAME]
    file = existing[0] if existing else services.add_file(DEMO_OWNER, DEMO_NAME, io.BytesIO(minimal_docx()))
    _print_token(services, services.issue_token(file.id, DEMO_OWNER, True), as_json)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="Processes.")
@click.option("--threads", default=None, type=int, help="Requests each process serves at once  [default: 64].")
def serve(host: str, port: int, workers: int, threads: int | None) -> None:
    """Serve with gunicorn (for production use deploy/gunicorn.conf.py)."""
    from .server import DEFAULTS, WopiHostServer

    # Without a configured public URL, the URLs we hand out name the address we listen on.
    os.environ.setdefault("WOPIHOST_PUBLIC_URL", f"http://{host}:{port}")
    services = _services()  # fail here, once, rather than in every worker
    services.db.dispose()
    threads = threads or DEFAULTS["threads"]
    click.echo(f"wopihost serving {services.settings.public_url} on http://{host}:{port} "
               f"with {workers} workers of {threads} threads; data in {services.settings.data_dir}", err=True)
    WopiHostServer({**DEFAULTS, "bind": f"{host}:{port}", "workers": workers, "threads": threads}).run()


# -- the host page ------------------------------------------------------------------

@main.command("open")
@click.argument("file_id")
@click.option("--user", required=True, help="User id the page opens the file for (created, with a drive, if new).")
@click.option("--action", type=click.Choice(ACTIONS), default="view", show_default=True)
@click.option("--read-only", is_flag=True, help="Give the WOPI client a read-only token (view only).")
@click.option("--ttl", default=None, help="How long the link may be opened, e.g. 5m (default "
                                          "WOPIHOST_LAUNCH_LINK_TTL); the token it opens lives WOPIHOST_TOKEN_TTL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def open_command(file_id: str, user: str, action: str, read_only: bool, ttl: str | None, as_json: bool) -> None:
    """Print a launch link: the built-in host page, opening FILE_ID in the WOPI client of the discovery."""
    services = _services()
    try:
        seconds = parse_duration(ttl) if ttl else services.settings.launch_link_ttl
        if seconds <= 0:
            raise ValueError(f"--ttl must be more than 0, not {ttl!r}")
        link = services.launches.issue(file_id, user, action, can_write=not read_only, ttl=timedelta(seconds=seconds),
                                       token_ttl=timedelta(seconds=services.settings.token_ttl))
    except (ValueError, WopiError) as exc:
        raise click.ClickException(str(exc)) from None
    url = services.launch_url(link.action, link.ticket)
    if as_json:
        _echo_json({"url": url, "action": link.action, "file_id": link.file_id, "user": user,
                    "expires": iso_round_trip(link.expires_at)})
    else:
        click.echo(url)


if __name__ == "__main__":
    sys.exit(main())
