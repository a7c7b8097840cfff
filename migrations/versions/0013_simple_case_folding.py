"""name keys by simple case folding, as Windows compares names: "Maße" and "Masse" are two names

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 11:00:00
"""

import unicodedata

import sqlalchemy as sa
from alembic import op

from wopihost.models import fit_key, name_key

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The tables whose names are unique per folder by name_key, each with its folder's column.
KEYED = ("folders", "files")
BATCH = 1000  # rows read at a time: a drive's files may not fit in memory at once


def upgrade() -> None:
    # The new keys only tell apart names the old ones joined, never join two: each character's simple folding
    # full-folds as the character itself does, so an old key is the full folding of the new one. Rows whose
    # old keys differed keep differing keys, and none clashes with a row not yet rewritten (full folding
    # leaves a full-folded key as it is): the unique (folder, key) pairs hold throughout.
    for table in KEYED:
        _rekey(table, name_key)


def downgrade() -> None:
    # The other way round two names of one folder ("Maße", "Masse") may become one: refuse rather than lose one.
    # Two files or two folders would break a unique constraint; a file and a folder, which no constraint spans
    # (a name is either in a folder: repository.name_taken), are looked for once both are rekeyed.
    for table in KEYED:
        try:
            _rekey(table, _full_key)
        except sa.exc.IntegrityError:
            raise RuntimeError(
                f"{table} has names in one folder that differ only in what full case folding joins (as Maße and "
                "Masse); rename one of each before downgrading"
            ) from None
    files = sa.table("files", sa.column("folder_id"), sa.column("name_key"))
    folders = sa.table("folders", sa.column("parent_id"), sa.column("name_key"))
    joined = sa.select(files.c.name_key).join(
        folders, (folders.c.parent_id == files.c.folder_id) & (folders.c.name_key == files.c.name_key)
    )
    if op.get_bind().execute(joined.limit(1)).first() is not None:
        raise RuntimeError(
            "a file and a folder in one folder have names that differ only in what full case folding joins (as "
            "Maße.txt and Masse.txt); rename one of them before downgrading"
        )


def _full_key(name: str) -> str:
    """name_key as it was before this migration."""
    return fit_key(unicodedata.normalize("NFC", name).casefold())


def _rekey(table: str, key) -> None:
    rows = sa.table(table, sa.column("id"), sa.column("name"), sa.column("name_key"))
    bind = op.get_bind()
    after = ""
    while batch := bind.execute(
        sa.select(rows.c.id, rows.c.name, rows.c.name_key).where(rows.c.id > after).order_by(rows.c.id).limit(BATCH)
    ).all():
        changed = [{"row": row.id, "key": new} for row in batch if (new := key(row.name)) != row.name_key]
        if changed:
            update = sa.update(rows).where(rows.c.id == sa.bindparam("row")).values(name_key=sa.bindparam("key"))
            bind.execute(update, changed)
        after = batch[-1].id
