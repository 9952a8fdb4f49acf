"""Alembic migrations, shipped in the package as analytics_gql.migrations (located by storage/schema.py)."""
