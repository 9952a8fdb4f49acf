"""keep only rollup shapes that compress: drop hour/day/week full keys and hour by blog

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 09:10:00

The full (blog, reader country) key at hour, day and week, and hour x blog, hold about one row per raw event
(docs/BENCHMARKS-HISTORY.md, "Rollups with compressive shapes only"), so a pass paid for writing them while they
saved the reader little. The remaining shapes
hold every count those tables held at a coarser grain or a narrower key; the planner reads raw events where
no kept shape fits (storage/tables.py SHAPE_GRAINS). Nothing else changes: the data they held is derivable.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DROPPED_FULL = ("views_hour", "views_day", "views_week")


KEPT = ["views_month", "views_year"] + [
    f"views_{g}_{s}" for g in ("hour", "day", "week", "month", "year") for s in ("by_country", "total")] + [
    f"views_{g}_by_blog" for g in ("day", "week", "month", "year")]


def upgrade() -> None:
    """Apply this revision."""
    for name in DROPPED_FULL:
        op.drop_table(name)
    op.drop_table("views_hour_by_blog")
    if op.get_bind().dialect.name == "postgresql":
        # Room on each page for the updated row version: a pass adding late events to existing cells then makes
        # HOT updates (no new index entry), which halved such passes here (docs/BENCHMARKS-HISTORY.md). Applies to pages
        # written from now on; rollup tables are rewritten by a rebuild.
        for name in KEPT:
            op.execute(f"ALTER TABLE {name} SET (fillfactor = 70)")


def downgrade() -> None:
    """Revert this revision: recreate the tables and make the next pass rebuild every rollup from raw events.

    The dropped tables cannot be refilled from the kept shapes, and refilling them here would need the pass's
    bucketing; instead the watermark goes back to 0 and all rollups are emptied, which the next pass refills
    exactly. That needs every raw event, so the downgrade refuses once raw events were compacted.
    """
    conn = op.get_bind()
    compacted = conn.execute(sa.text(
        "SELECT COUNT(*) FROM rollup_horizons WHERE grain = 'raw' AND kept_from > 0")).scalar()
    if compacted:
        raise RuntimeError("raw events were compacted: the dropped rollup tables cannot be rebuilt; "
                           "restore a backup taken before revision 0004 instead")
    for name in DROPPED_FULL:
        op.create_table(
            name,
            sa.Column("bucket", sa.Integer(), nullable=False),
            sa.Column("blog_id", sa.Integer(), nullable=False),
            sa.Column("viewer_country", sa.String(length=2), nullable=False),
            sa.Column("views", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("bucket", "blog_id", "viewer_country", name=op.f(f"pk_{name}")),
        )
    op.create_table(
        "views_hour_by_blog",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", name=op.f("pk_views_hour_by_blog")),
    )
    for grain in ("hour", "day", "week", "month", "year"):
        for suffix in ("", "_by_blog", "_by_country", "_total"):
            op.execute(f"DELETE FROM views_{grain}{suffix}")
    op.execute("DELETE FROM rollup_horizons WHERE grain <> 'raw'")
    op.execute("UPDATE rollup_state SET watermark = 0")
    if conn.dialect.name == "postgresql":
        for name in KEPT:
            op.execute(f"ALTER TABLE {name} RESET (fillfactor)")
