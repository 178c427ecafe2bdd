"""leases on files, and named locks

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 07:55:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("lease_token", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_files_lease_expires", ["lease_expires_at"], unique=False)

    op.create_table(
        "locks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=36), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("locks")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("ix_files_lease_expires")
        batch_op.drop_column("lease_token")
        batch_op.drop_column("lease_expires_at")
