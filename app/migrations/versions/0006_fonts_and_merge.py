"""the font report and the merged PDF: files.fonts, the jobs' strict_fonts and merge options

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 14:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fonts", sa.JSON(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("strict_fonts", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("merge", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("merge_failure_page", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(sa.Column("merged_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("merged_bytes")
        batch_op.drop_column("merge_failure_page")
        batch_op.drop_column("merge")
        batch_op.drop_column("strict_fonts")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("fonts")
