"""the token a token was issued under, so that revoking one revokes the other

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Tokens issued before the upgrade have no parent: a revoked API token leaves their launch tokens as it did.
    with op.batch_alter_table("access_tokens") as batch:
        batch.add_column(sa.Column("parent_jti", sa.String(length=22), nullable=True))
        batch.create_index(batch.f("ix_access_tokens_parent_jti"), ["parent_jti"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_index(batch.f("ix_access_tokens_parent_jti"))
        batch.drop_column("parent_jti")
