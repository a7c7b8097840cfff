"""A file's MainContent replaced from outside PutChunkedFile, in prepared statements (prepared.py): PutFile runs
them in a transaction of their own (`Database.transact`), the other writers in their ORM session's
(`Statements.in_session`).

Such a change ends what coauthoring clients kept beside the document (docs/cspp-plus.md §1.0): alternate
streams and DeleteOnContentChange properties go, and the signature is chunked anew from the bytes when next
asked for. The version and the sequence number move on; the timestamps the client set no longer apply.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

import sqlalchemy as sa

from .extents import Extents
from .models import AlternateStream, ContentProperty, File
from .prepared import Prepared, Statements


def replace_content(
    t: Statements,
    file_id: str,
    old: Extents,
    user_id: str | None,
    blob: str,
    size: int,
    sha256: str,
    quickxor: str,
    extents: Extents | None,
    now: datetime,
) -> list[str]:
    """The file's content becomes the whole of `blob` (`size` bytes), or `extents` (then `blob` is unused);
    `sha256` and `quickxor` (base64) are "" where unknown. `old` is the content as read in this transaction.
    Returns the blobs the change made unused, for the caller to release once committed: a stream kept as extents
    can share blobs with the file's other streams, never with another file's, and no other stream is left."""
    dropped = t.all(_DROP_ALTERNATE_STREAMS, {"file_id": file_id})
    t.run(_DROP_PROPERTIES, {"file_id": file_id})
    columns = (blob, size, None) if extents is None else ("", extents.length, extents.to_db())
    t.run(
        _SET,
        {
            "file_id": file_id,
            "blob": columns[0],
            "size": columns[1],
            "extents": columns[2],
            "sha256": sha256,
            "quickxor": quickxor,
            "now": now,
            "user_id": user_id,
        },
    )
    replaced = old.blobs.union(*(Extents.stored(*row).blobs for row in dropped))
    return sorted(replaced - Extents.stored(*columns).blobs)


_FILES, _STREAMS, _PROPERTIES = (
    cast(sa.Table, File.__table__),
    cast(sa.Table, AlternateStream.__table__),
    cast(sa.Table, ContentProperty.__table__),
)
_DROP_ALTERNATE_STREAMS = Prepared(
    sa.delete(_STREAMS)
    .where(_STREAMS.c.file_id == sa.bindparam("file_id"))
    .returning(_STREAMS.c.blob, _STREAMS.c.size, _STREAMS.c.extents)
)
_DROP_PROPERTIES = Prepared(
    sa.delete(_PROPERTIES).where(
        _PROPERTIES.c.file_id == sa.bindparam("file_id"), _PROPERTIES.c.retention != "KeepOnContentChange"
    )
)
_SET = Prepared(
    sa.update(_FILES)
    .where(_FILES.c.id == sa.bindparam("file_id"))
    .values(
        blob=sa.bindparam("blob"),
        size=sa.bindparam("size"),
        extents=sa.bindparam("extents"),
        sha256=sa.bindparam("sha256"),
        quickxor=sa.bindparam("quickxor"),
        main_scheme=None,
        main_signature=None,
        version=_FILES.c.version + 1,
        sequence_number=_FILES.c.sequence_number + 1,
        modified_at=sa.bindparam("now"),
        modified_by=sa.bindparam("user_id"),
        fs_modified_at=None,  # the content is ours now, until a client says otherwise
    )
)
