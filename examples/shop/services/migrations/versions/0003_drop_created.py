"""Drop payments.created (destructive): releases made before it read and write that
column and would fail on this schema, so no release declares 0003 compatible, and a
rollback across it is refused unless forced. The downgrade brings the column back, but
not the values it held.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("created")


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(
            sa.Column("created", sa.DateTime, nullable=False, server_default=sa.func.now())
        )
