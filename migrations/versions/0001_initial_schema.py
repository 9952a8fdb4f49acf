"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 03:38:27.029210
"""

from __future__ import annotations

import pycountry
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "countries",
        sa.Column("code", sa.String(length=2), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_countries")),
    )
    op.create_table(
        "rollup_horizons",
        sa.Column("grain", sa.String(length=8), nullable=False),
        sa.Column("kept_from", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("grain", name=op.f("pk_rollup_horizons")),
    )
    op.create_table(
        "rollup_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("last_run_at", sa.BigInteger(), nullable=True),
        sa.Column("last_run_events", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_run_ms", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_compact_at", sa.BigInteger(), nullable=True),
        sa.Column("last_audit_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_state")),
    )
    op.create_table(
        "view_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("viewer_id", sa.String(length=255), nullable=True),
        sa.Column("viewer_country", sa.String(length=2), nullable=True),
        sa.Column("viewed_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_view_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_view_events_event_id")),
    )
    with op.batch_alter_table("view_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_view_events_viewed_at"), ["viewed_at"], unique=False)

    op.create_table(
        "views_day",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("viewer_country", sa.String(length=2), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", "viewer_country", name=op.f("pk_views_day")),
    )
    op.create_table(
        "views_hour",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("viewer_country", sa.String(length=2), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", "viewer_country", name=op.f("pk_views_hour")),
    )
    op.create_table(
        "views_month",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("viewer_country", sa.String(length=2), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", "viewer_country", name=op.f("pk_views_month")),
    )
    op.create_table(
        "views_week",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("viewer_country", sa.String(length=2), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", "viewer_country", name=op.f("pk_views_week")),
    )
    op.create_table(
        "views_year",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("blog_id", sa.Integer(), nullable=False),
        sa.Column("viewer_country", sa.String(length=2), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "blog_id", "viewer_country", name=op.f("pk_views_year")),
    )
    op.create_table(
        "authors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("country_code", sa.String(length=2), nullable=True),
        sa.ForeignKeyConstraint(["country_code"], ["countries.code"], name=op.f("fk_authors_country_code_countries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authors")),
        sa.UniqueConstraint("external_id", name=op.f("uq_authors_external_id")),
    )
    with op.batch_alter_table("authors", schema=None) as batch_op:
        batch_op.create_index("ix_authors_country_code", ["country_code"], unique=False)

    op.create_table(
        "blogs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("country_code", sa.String(length=2), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["authors.id"], name=op.f("fk_blogs_author_id_authors")),
        sa.ForeignKeyConstraint(["country_code"], ["countries.code"], name=op.f("fk_blogs_country_code_countries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blogs")),
        sa.UniqueConstraint("external_id", name=op.f("uq_blogs_external_id")),
    )
    with op.batch_alter_table("blogs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blogs_author_id"), ["author_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_blogs_country_code"), ["country_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_blogs_created_at"), ["created_at"], unique=False)

    # Every ISO 3166-1 country is known from the start (CONTRACT 1), from pycountry"s maintained list.
    countries = sa.table("countries", sa.column("code", sa.String), sa.column("name", sa.String))
    op.bulk_insert(countries, [{"code": c.alpha_2, "name": c.name} for c in pycountry.countries])


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("blogs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blogs_created_at"))
        batch_op.drop_index(batch_op.f("ix_blogs_country_code"))
        batch_op.drop_index(batch_op.f("ix_blogs_author_id"))

    op.drop_table("blogs")
    with op.batch_alter_table("authors", schema=None) as batch_op:
        batch_op.drop_index("ix_authors_country_code")

    op.drop_table("authors")
    op.drop_table("views_year")
    op.drop_table("views_week")
    op.drop_table("views_month")
    op.drop_table("views_hour")
    op.drop_table("views_day")
    with op.batch_alter_table("view_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_view_events_viewed_at"))

    op.drop_table("view_events")
    op.drop_table("rollup_state")
    op.drop_table("rollup_horizons")
    op.drop_table("countries")
