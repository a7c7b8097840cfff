"""files' QuickXorHash (Graph's quickXorHash), and each upload session piece's, which it is combined from

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 04:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "" is unknown: a file stored before has its hash once its content is next written (hashing every file here
    # would read all the content there is)
    for table in ("files", "upload_pieces"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("quickxor", sa.String(length=28), server_default="", nullable=False))


def downgrade() -> None:
    for table in ("upload_pieces", "files"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("quickxor")
