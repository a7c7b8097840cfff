"""The failures of the `wopihost` command that an admin can act on, each as one line.

Every command of the group runs through `Command.invoke`, which refuses a text argument that is not UTF-8 (a
usage error, exit status 2) and turns the known failures (a database that is unreachable, unmigrated or named
by an unusable URL, a data directory that cannot be written, an id that does not exist, a refused value) into
a click error: one line on stderr and exit status 1. Anything else is a bug and keeps its traceback.
gunicorn's master, started without the command, refuses a database it cannot use with the same lines
(`explain`, from wopihost/server.py).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import click
import sqlalchemy as sa

from .backup import BackupError
from .config import ConfigError, Settings
from .db import SchemaMismatch
from .errors import WopiError
from .faults import InsufficientStorage, Unavailable
from .names import InvalidName
from .storage import TooLarge
from .text import is_unicode

SETTINGS_KEY = "wopihost.settings"  # click's ctx.meta: the settings a command read, for the messages
PG_EXAMPLE = "postgresql+psycopg://user:password@host/database"
# Arguments that name something that may not exist: a "not found" says which one.
ID_PARAMS = ("file_id", "folder_id", "item_id", "drive_id")


class Command(click.Command):
    def invoke(self, ctx: click.Context):
        _refuse_undecodable(self, ctx)
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            named = [str(ctx.params[p]) for p in ID_PARAMS if ctx.params.get(p)]
            message = explain(exc, ctx.meta.get(SETTINGS_KEY), named)
            if message is None:
                raise
            raise click.ClickException(message) from None


def _refuse_undecodable(command: click.Command, ctx: click.Context) -> None:
    """A usage error for a text argument that holds bytes that are not UTF-8 (Python keeps them as lone
    surrogates): no database, URL or terminal takes it, and each failed with a traceback of its own. Paths are
    file names, which may be any bytes; arguments left unprocessed are another command line's."""
    for param in command.params:
        values = ctx.params.get(param.name or "")
        if isinstance(param.type, (click.Path, click.types.UnprocessedParamType)) or values is None:
            continue
        for value in values if isinstance(values, tuple) else (values,):
            if isinstance(value, str) and not is_unicode(value):
                shown = value.encode("utf-8", "surrogateescape")
                raise click.BadParameter(f"not UTF-8 text: {shown!r}", ctx=ctx, param=param)


class Group(click.Group):
    command_class = Command
    group_class = type  # subgroups are Groups too, so their commands are Commands


def database_url_problem(url: str) -> str | None:
    """Why WOPIHOST_DATABASE_URL cannot work with what is installed, before anything connects."""
    name = "WOPIHOST_DATABASE_URL"
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return f"{name} is not a database URL: use sqlite:////path/to/wopihost.sqlite3 or {PG_EXAMPLE}"
    except ValueError:  # what SQLAlchemy raises for a port that is not a number
        return f"{name}: the port is not a number; use {PG_EXAMPLE}"
    backend, driver = parsed.get_backend_name(), parsed.drivername.partition("+")[2]
    if backend in ("postgres", "pg"):
        return f"{name}: {backend}:// is not a scheme SQLAlchemy knows; use {PG_EXAMPLE}"
    if backend == "postgresql":
        if driver not in ("", "psycopg"):
            return f"{name}: wopihost ships the psycopg driver, not {driver}; use {PG_EXAMPLE}"
        if importlib.util.find_spec("psycopg") is None:
            return (
                "PostgreSQL needs the psycopg driver, which is not installed: install wopihost[postgres] "
                "(pip install 'wopihost[postgres]')"
            )
        return None
    if backend == "sqlite":
        return None if driver in ("", "pysqlite") else f"{name}: use sqlite:///path (the built-in driver)"
    return f"{name}: wopihost runs on SQLite (sqlite:///path) or PostgreSQL ({PG_EXAMPLE}), not {backend}"


def explain(exc: Exception, settings: Settings | None = None, named: Sequence[str] = ()) -> str | None:
    """One line saying what is wrong, for the failures an admin can act on; None for anything else. `named`:
    the ids the command was given, the first of which a "not found" names."""
    if isinstance(exc, WopiError):
        return f"{exc.reason}: {named[0]}" if exc.status == 404 and named else exc.reason
    if isinstance(exc, (BackupError, ConfigError, InvalidName, TooLarge, SchemaMismatch)):
        return str(exc)
    if isinstance(exc, (Unavailable, InsufficientStorage)):
        cause = exc.__cause__
        if isinstance(cause, sa.exc.DBAPIError):
            return f"{exc} ({_database(settings)}: {_first_line(cause.orig)})"
        if isinstance(cause, OSError) and cause.filename:
            return f"{exc}: {cause.filename}"
        return str(exc)
    if isinstance(exc, sa.exc.OperationalError):  # connecting, or the file SQLite cannot open
        return f"cannot use the database {_database(settings)}: {_first_line(exc.orig)}"
    if isinstance(exc, ModuleNotFoundError) and exc.name in ("psycopg", "psycopg2"):
        return "PostgreSQL needs the psycopg driver, which is not installed: install wopihost[postgres]"
    if isinstance(exc, OSError) and exc.filename:
        what = f"{exc.strerror or exc}: {exc.filename}"
        if settings is not None and _inside(Path(exc.filename), settings.data_dir):
            return f"the data directory {settings.data_dir} cannot be used: {what}"
        return what
    return None


def _database(settings: Settings | None) -> str:
    if settings is None:
        return "(WOPIHOST_DATABASE_URL)"
    url = sa.make_url(settings.database_url)  # a password may be in the query too (?password=), as libpq takes it
    query = "&".join(f"{name}=***" for name in url.query)
    return url.set(query={}).render_as_string(hide_password=True) + (f"?{query}" if query else "")


def _first_line(error: BaseException | None) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _inside(path: Path, directory: Path) -> bool:
    return path.absolute().is_relative_to(directory)
