"""Alembic environment: the URL comes from the caller's Config or from Settings (ANALYTICS_DATABASE_URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import metadata

config = context.config
MIGRATION_LOCK_KEY = 0x6D696772617465  # "migrate"; not the keys of the rollup pass or of ingest (storage/)


def run(connection: Connection) -> None:
    """Run migrations on one connection, in one transaction."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Concurrent `migrate`s (one per replica at deploy) take turns: the second reads the version table only
            # once the first has committed, and finds nothing left to do. Without this both ran the same DDL and
            # one failed ("relation already exists"), or ran a data migration twice. Released at commit.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


conn = config.attributes.get("connection")
if conn is not None:
    run(conn)
else:
    url = config.get_main_option("sqlalchemy.url") or Settings().db_url
    db = Database(Settings(database_url=url))
    with db.engine.connect() as c:
        run(c)
    db.dispose()
