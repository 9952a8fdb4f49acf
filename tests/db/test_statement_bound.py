"""ANALYTICS_STATEMENT_TIMEOUT_MS bounds read statements on both databases (SQLite has no statement_timeout)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from analytics_gql.settings import Settings
from analytics_gql.storage import schema
from analytics_gql.storage.engine import Database

# Counts to a billion: minutes of work on either database, unless something interrupts it.
ENDLESS = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
           "SELECT count(*) FROM n")
# Counts to 300,000: a fraction of a second, more than the bounds below on either database.
SHORTER = ENDLESS.replace("1000000000", "300000")


@pytest.fixture
def bounded(db_url: str) -> Database:
    database = Database(Settings(database_url=db_url, statement_timeout_ms=150))
    if database.sqlite:
        schema.upgrade(database)
    yield database  # type: ignore[misc]
    database.dispose()


def test_a_read_statement_is_interrupted_past_the_bound(bounded: Database) -> None:
    t0 = time.monotonic()
    with pytest.raises(OperationalError, match="interrupted|statement timeout"), bounded.read() as conn:
        conn.execute(text(ENDLESS)).scalar()
    assert time.monotonic() - t0 < 10
    # The connection goes back to the pool healthy: the next read on it answers.
    with bounded.read() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_a_tighter_bound_per_transaction_and_none_without_a_setting(bounded: Database, db_url: str) -> None:
    with pytest.raises(OperationalError, match="interrupted|statement timeout"), \
            bounded.read(statement_timeout_ms=1) as conn:
        conn.execute(text(SHORTER)).scalar()
    unbounded = Database(Settings(database_url=db_url, statement_timeout_ms=0))
    try:
        with unbounded.read() as conn:
            assert conn.execute(text(SHORTER)).scalar() == 300_000
    finally:
        unbounded.dispose()


def test_sqlite_writes_are_not_bounded(tmp_path: Path) -> None:
    """A rollup chunk or an import batch may run longer than a query may: on SQLite only reads are bounded
    (PostgreSQL bounds every statement of the application's connections with its statement_timeout)."""
    database = Database(Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}", statement_timeout_ms=1))
    try:
        with pytest.raises(OperationalError, match="interrupted"), database.read() as conn:
            conn.execute(text(SHORTER)).scalar()
        with database.write() as conn:  # the same connection, back from the pool with a read's deadline set
            assert conn.execute(text(SHORTER)).scalar() == 300_000
    finally:
        database.dispose()


def test_sqlite_a_read_deadline_does_not_outlive_its_checkout(tmp_path: Path) -> None:
    """Driver-level statements on a pooled connection (bulk import PRAGMAs run before any statement of their own)
    must not inherit the deadline of the read that used the connection last."""
    database = Database(Settings(database_url=f"sqlite:///{tmp_path / 'd.db'}", statement_timeout_ms=1))
    try:
        with database.read() as conn:
            conn.execute(text("SELECT 1")).scalar()
        time.sleep(0.01)  # that read's deadline has passed
        with database.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            assert raw.execute(SHORTER).fetchone()[0] == 300_000
    finally:
        database.dispose()


def test_sqlite_the_progress_handler_runs_for_bounded_reads_only(tmp_path: Path) -> None:
    """Each progress-handler call takes the GIL: statements without a bound (passes, imports) run without it."""
    database = Database(Settings(database_url=f"sqlite:///{tmp_path / 'h.db'}"))
    try:
        with database.engine.connect() as conn:
            calls: list[int] = []
            deadline = conn.info["sqlite_deadline"]
            deadline[1] = lambda: calls.append(1)  # never interrupts (returns None)
            conn.execution_options(sqlite_statement_ms=60_000)
            assert conn.execute(text(SHORTER)).scalar() == 300_000
            bounded = len(calls)
            assert bounded > 0
            conn.execution_options(sqlite_statement_ms=0)
            assert conn.execute(text(SHORTER)).scalar() == 300_000
            assert len(calls) == bounded
    finally:
        database.dispose()
