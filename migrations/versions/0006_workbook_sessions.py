"""Graph workbook sessions and their long-running operations

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workbook_sessions",
        sa.Column("id", sa.String(22), nullable=False),
        sa.Column("file_id", sa.String(22), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("persist", sa.Boolean(), nullable=False),
        sa.Column("blob", sa.String(64), nullable=True),
        sa.Column("base_version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workbook_sessions"),
    )
    op.create_index("ix_workbook_sessions_file_id", "workbook_sessions", ["file_id"])
    op.create_index("ix_workbook_sessions_expires_at", "workbook_sessions", ["expires_at"])
    op.create_table(
        "workbook_operations",
        sa.Column("id", sa.String(22), nullable=False),
        sa.Column("file_id", sa.String(22), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("persist", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(22), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workbook_operations"),
    )
    op.create_index("ix_workbook_operations_expires_at", "workbook_operations", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_workbook_operations_expires_at", table_name="workbook_operations")
    op.drop_table("workbook_operations")
    op.drop_index("ix_workbook_sessions_expires_at", table_name="workbook_sessions")
    op.drop_index("ix_workbook_sessions_file_id", table_name="workbook_sessions")
    op.drop_table("workbook_sessions")
