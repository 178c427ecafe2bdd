"""windowed dispatch: files.dispatched_at and the workers' registry

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_files_dispatched", ["dispatched_at"], unique=False)
        batch_op.create_index(
            "ix_files_job_waiting", ["job_id", "status", "dispatched_at", "position"], unique=False
        )
    # Files already queued when the schema changes were sent the old way, all at once: they
    # count as dispatched, so the scheduler does not send them a second time.
    op.execute(
        "UPDATE files SET dispatched_at = touched_at "
        "WHERE status IN ('PENDING', 'IN_PROGRESS') AND input_bytes IS NOT NULL"
    )

    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("ix_files_job_waiting")
        batch_op.drop_index("ix_files_dispatched")
        batch_op.drop_column("dispatched_at")
