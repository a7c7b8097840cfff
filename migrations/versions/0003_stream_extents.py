"""streams kept as extents of blobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: NULL keeps every existing row meaning what it meant, the whole of its blob.
    op.add_column("files", sa.Column("extents", sa.Text(), nullable=True))
    op.add_column("alternate_streams", sa.Column("extents", sa.Text(), nullable=True))


def downgrade() -> None:
    # Rows kept as extents have no single blob to fall back to: refuse rather than lose content.
    bind = op.get_bind()
    for table in ("files", "alternate_streams"):
        if bind.execute(sa.text(f"SELECT count(*) FROM {table} WHERE extents IS NOT NULL")).scalar():
            raise RuntimeError(f"{table} has streams kept as extents; downgrading would lose them")
    with op.batch_alter_table("alternate_streams") as batch_op:
        batch_op.drop_column("extents")
    with op.batch_alter_table("files") as batch_op:
        batch_op.drop_column("extents")
