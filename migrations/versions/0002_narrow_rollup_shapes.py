"""narrow rollup shapes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 04:49:25.364561
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "views_day_by_blog",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", name=op.f("pk_views_day_by_blog")),
    )
    op.create_table(
        "views_day_by_country",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("viewer_country", sa.String(length=2), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "viewer_country", name=op.f("pk_views_day_by_country")),
    )
    op.create_table(
        "views_hour_by_blog",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", name=op.f("pk_views_hour_by_blog")),
    )
    op.create_table(
        "views_hour_by_country",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("viewer_country", sa.String(length=2), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "viewer_country", name=op.f("pk_views_hour_by_country")),
    )
    op.create_table(
        "views_month_by_blog",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", name=op.f("pk_views_month_by_blog")),
    )
    op.create_table(
        "views_month_by_country",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("viewer_country", sa.String(length=2), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "viewer_country", name=op.f("pk_views_month_by_country")),
    )
    op.create_table(
        "views_week_by_blog",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", name=op.f("pk_views_week_by_blog")),
    )
    op.create_table(
        "views_week_by_country",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("viewer_country", sa.String(length=2), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "viewer_country", name=op.f("pk_views_week_by_country")),
    )
    op.create_table(
        "views_year_by_blog",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", name=op.f("pk_views_year_by_blog")),
    )
    op.create_table(
        "views_year_by_country",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("viewer_country", sa.String(length=2), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "viewer_country", name=op.f("pk_views_year_by_country")),
    )
    # Backfill from the full shape, so a database rolled up before this revision answers exactly at once.
    for grain in ("hour", "day", "week", "month", "year"):
        for key, name in (("blog_id", "blog"), ("viewer_country", "country")):
            op.execute(
                f"INSERT INTO views_{grain}_by_{name} (bucket, {key}, views) "
                f"SELECT bucket, {key}, SUM(views) FROM views_{grain} GROUP BY bucket, {key}"
            )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("views_year_by_country")
    op.drop_table("views_year_by_blog")
    op.drop_table("views_week_by_country")
    op.drop_table("views_week_by_blog")
    op.drop_table("views_month_by_country")
    op.drop_table("views_month_by_blog")
    op.drop_table("views_hour_by_country")
    op.drop_table("views_hour_by_blog")
    op.drop_table("views_day_by_country")
    op.drop_table("views_day_by_blog")
