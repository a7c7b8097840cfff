"""upload sessions' chunks, indexed as their pieces arrive

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 14:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Sessions open during the upgrade start with nothing indexed: their commit decodes what was not.
    with op.batch_alter_table("upload_sessions") as batch:
        batch.add_column(sa.Column("indexed", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("indexed_frames", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("frame_error", sa.Text(), nullable=True))
    op.create_table(
        "upload_session_chunks",
        sa.Column("token", sa.String(length=22), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("chunk_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("matches", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["token"],
            ["upload_sessions.token"],
            name=op.f("fk_upload_session_chunks_token_upload_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token", "start", name=op.f("pk_upload_session_chunks")),
    )


def downgrade() -> None:
    op.drop_table("upload_session_chunks")
    with op.batch_alter_table("upload_sessions") as batch:
        for column in ("frame_error", "indexed_frames", "indexed"):
            batch.drop_column(column)
