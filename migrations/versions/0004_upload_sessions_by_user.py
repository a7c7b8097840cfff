"""upload sessions looked up by user

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 16:00:00
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every CreateUploadSession and UpdateUploadSession counts the user's live sessions and their bytes.
    op.create_index("ix_upload_sessions_user_id_expires_at", "upload_sessions", ["user_id", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_upload_sessions_user_id_expires_at", table_name="upload_sessions")
