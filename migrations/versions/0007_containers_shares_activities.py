"""Containers, share links, activities, visible lock holders

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("locks") as batch:
        batch.add_column(sa.Column("user_name", sa.String(256), nullable=True))
    with op.batch_alter_table("access_tokens") as batch:
        # a token's resource: a file id, or a container or ecosystem ("c-<folder id>", "e-")
        batch.alter_column("file_id", existing_type=sa.String(22), type_=sa.String(32), existing_nullable=False)
    op.create_table(
        "share_links",
        sa.Column("id", sa.String(22), nullable=False),
        sa.Column("item_id", sa.String(22), nullable=False),
        sa.Column("url_type", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_share_links"),
    )
    op.create_index("ix_share_links_item_id", "share_links", ["item_id"])
    op.create_table(
        "activities",
        sa.Column("file_id", sa.String(22), nullable=False),
        sa.Column("activity_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name="fk_activities_file_id_files", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("file_id", "activity_id", name="pk_activities"),
    )


def downgrade() -> None:
    op.drop_table("activities")
    op.drop_index("ix_share_links_item_id", table_name="share_links")
    op.drop_table("share_links")
    with op.batch_alter_table("access_tokens") as batch:
        batch.alter_column("file_id", existing_type=sa.String(32), type_=sa.String(22), existing_nullable=False)
    with op.batch_alter_table("locks") as batch:
        batch.drop_column("user_name")
