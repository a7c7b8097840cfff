"""revocations by file, which reach the tokens handed out for a file from another token's row

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_revocations",
        sa.Column("file_id", sa.String(length=22), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "user_id", name=op.f("pk_file_revocations")),
    )


def downgrade() -> None:
    op.drop_table("file_revocations")
