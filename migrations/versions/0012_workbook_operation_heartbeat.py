"""a workbook operation's heartbeat, so that one whose worker died is answered failed

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No default: an operation made before (or by a node still running the older code while others upgrade)
    # has NULL, and is judged by its created_at, its last sign of life. A default of the upgrade's time would
    # give an operation orphaned by the restart that brought the upgrade a heartbeat it never had.
    with op.batch_alter_table("workbook_operations") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workbook_operations") as batch:
        batch.drop_column("heartbeat_at")
