"""Throw-away, migrated benchmark databases: a temp SQLite file, or a PostgreSQL database created and dropped."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, text

from analytics_gql.settings import Settings
from analytics_gql.storage import schema
from analytics_gql.storage.engine import Database

PG_ADMIN = os.environ.get("ANALYTICS_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def throwaway_database(kind: str, *, prefix: str = "ag_bench", **settings: Any) -> Iterator[Database]:
    """A migrated database of `kind` ("sqlite" or "postgresql"), removed afterwards; `settings` go to Settings."""
    settings.setdefault("statement_timeout_ms", 0)
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{prefix}_") as d:
            db = Database(Settings(database_url=f"sqlite:///{d}/bench.db", **settings))
            schema.upgrade(db)
            try:
                yield db
            finally:
                db.dispose()
        return
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    db = Database(Settings(database_url=PG_ADMIN.rsplit("/", 1)[0] + "/" + name, **settings))
    try:
        schema.upgrade(db)
        yield db
    finally:
        db.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
