"""Throw-away, migrated benchmark databases: a temp SQLite file, or a PostgreSQL database created and dropped."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from analytics_gql.settings import Settings
from analytics_gql.storage import schema
from analytics_gql.storage.engine import Database

PG_ADMIN = os.environ.get("ANALYTICS_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# A Citus coordinator's admin database (tests/citus_cluster.py starts a cluster: coordinator 9700, workers 9701-2).
CITUS_ADMIN = os.environ.get("ANALYTICS_BENCH_CITUS_URL", "postgresql+psycopg://postgres@127.0.0.1:9700/postgres")


@contextmanager
def throwaway_database(kind: str, *, prefix: str = "ag_bench", **settings: Any) -> Iterator[Database]:
    """A migrated database of `kind` ("sqlite", "postgresql" or "citus"), removed afterwards; `settings` go to
    Settings."""
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
    if kind == "citus":
        yield from _citus_database(prefix, settings)
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


def _citus_database(prefix: str, settings: dict[str, Any]) -> Iterator[Database]:
    """A database on every node of the Citus cluster, migrated (and so distributed), dropped afterwards."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import citus_cluster

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = citus_cluster.create_database(CITUS_ADMIN, name)
    db = Database(Settings(database_url=url, **settings))
    try:
        schema.upgrade(db)
        yield db
    finally:
        db.dispose()
        citus_cluster.drop_database(CITUS_ADMIN, name)
