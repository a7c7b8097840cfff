"""Writers' holds on new objects of an S3 store, rows with a lease instead of marker objects

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_holds",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("held_until", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_blob_holds"),
    )


def downgrade() -> None:
    op.drop_table("blob_holds")
