"""Blobs gc found unreferenced, for stores whose deletes do not wait for readers

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 11:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unreferenced_blobs",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_unreferenced_blobs"),
    )


def downgrade() -> None:
    op.drop_table("unreferenced_blobs")
