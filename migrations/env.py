"""Alembic environment: the URL comes from the caller's Config or from Settings (ANALYTICS_DATABASE_URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import metadata

config = context.config


def run(connection: Connection) -> None:
    """Run migrations on one connection, in one transaction."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


conn = config.attributes.get("connection")
if conn is not None:
    run(conn)
else:
    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    db = Database(Settings(database_url=url))
    with db.engine.connect() as c:
        run(c)
    db.dispose()
