"""reader sets: the viewer dictionary and Roaring bitmaps of distinct readers per rollup cell

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:20:00

Events folded before this revision are in no set: `rollup_state.readers_from` records the watermark at upgrade,
and readers are refused with an error naming `analytics-gql rollup --rebuild` until a rebuild recomputes every
grain from raw (which resets it to 0). View counts are unaffected.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (table, key columns) as storage/tables.READER_GRAINS has them at this revision.
READER_TABLES = [
    ("readers_day_total", ()), ("readers_week_total", ()), ("readers_month_total", ()), ("readers_year_total", ()),
    ("readers_month_by_country", ("viewer_country",)), ("readers_year_by_country", ("viewer_country",)),
    ("readers_month_by_blog", ("blog_id",)), ("readers_year_by_blog", ("blog_id",)),
    ("readers_year_full", ("blog_id", "viewer_country")),
]
_TYPES = {"blog_id": sa.Integer(), "viewer_country": sa.String(length=2)}


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "viewers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("viewer_id", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_viewers")),
        sa.UniqueConstraint("viewer_id", name=op.f("uq_viewers_viewer_id")),
    )
    for name, keys in READER_TABLES:
        op.create_table(
            name,
            sa.Column("bucket", sa.Integer(), nullable=False),
            *[sa.Column(k, _TYPES[k], nullable=False) for k in keys],
            sa.Column("readers", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("bucket", *keys, name=op.f(f"pk_{name}")),
        )
    with op.batch_alter_table("rollup_state") as batch:
        batch.add_column(sa.Column("readers_from", sa.BigInteger(), server_default="0", nullable=False))
    op.execute("UPDATE rollup_state SET readers_from = watermark")


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("rollup_state") as batch:
        batch.drop_column("readers_from")
    for name, _keys in reversed(READER_TABLES):
        op.drop_table(name)
    op.drop_table("viewers")
