"""Graph drives: shared drives and members, item metadata, Graph upload sessions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("drives") as batch:
        batch.alter_column("owner_id", existing_type=sa.String(64), nullable=True)
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="personal"))
        batch.add_column(sa.Column("name", sa.String(256), nullable=False, server_default=""))
    op.create_table(
        "drive_members",
        sa.Column("drive_id", sa.String(22), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["drive_id"], ["drives.id"], name="fk_drive_members_drive_id_drives", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_drive_members_user_id_users"),
        sa.PrimaryKeyConstraint("drive_id", "user_id", name="pk_drive_members"),
    )
    with op.batch_alter_table("folders") as batch:
        batch.add_column(sa.Column("modified_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("created_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch.add_column(sa.Column("fs_created_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("fs_modified_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("modified_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch.add_column(sa.Column("fs_created_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("fs_modified_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("upload_sessions") as batch:
        batch.alter_column("file_id", existing_type=sa.String(22), nullable=True)
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="cspp"))
        batch.add_column(sa.Column("total", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("target", sa.Text(), nullable=True))
        batch.add_column(sa.Column("result", sa.String(22), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("upload_sessions") as batch:
        for column in ("result", "target", "total", "kind"):
            batch.drop_column(column)
        batch.alter_column("file_id", existing_type=sa.String(22), nullable=False)
    with op.batch_alter_table("files") as batch:
        for column in ("fs_modified_at", "fs_created_at", "description", "modified_by"):
            batch.drop_column(column)
    with op.batch_alter_table("folders") as batch:
        for column in ("fs_modified_at", "fs_created_at", "description", "created_by", "version", "modified_at"):
            batch.drop_column(column)
    op.drop_table("drive_members")
    with op.batch_alter_table("drives") as batch:
        batch.drop_column("name")
        batch.drop_column("kind")
        batch.alter_column("owner_id", existing_type=sa.String(64), nullable=False)
