"""data versions (cache fingerprints for dimensions and rollup repairs)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 09:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "data_versions",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_data_versions")),
    )
    op.execute("INSERT INTO data_versions (name, version) VALUES ('dimensions', 0), ('rollups', 0)")


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("data_versions")
