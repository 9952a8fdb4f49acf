"""rollup totals per bucket

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 04:58:59.394447
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "views_day_total",
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_views_day_total")),
    )
    op.create_table(
        "views_hour_total",
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_views_hour_total")),
    )
    op.create_table(
        "views_month_total",
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_views_month_total")),
    )
    op.create_table(
        "views_week_total",
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_views_week_total")),
    )
    op.create_table(
        "views_year_total",
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_views_year_total")),
    )
    # Backfill from the full shape, so a database rolled up before this revision answers exactly at once.
    for grain in ("hour", "day", "week", "month", "year"):
        op.execute(
            f"INSERT INTO views_{grain}_total (bucket, views) "
            f"SELECT bucket, SUM(views) FROM views_{grain} GROUP BY bucket"
        )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("views_year_total")
    op.drop_table("views_week_total")
    op.drop_table("views_month_total")
    op.drop_table("views_hour_total")
    op.drop_table("views_day_total")
