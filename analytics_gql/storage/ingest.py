"""Bulk writes: upsert authors and blogs by client id; append view events (PostgreSQL COPY, SQLite executemany)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from analytics_gql.storage import citus
from analytics_gql.storage.engine import is_sqlite
from analytics_gql.storage.tables import DIMENSIONS_VERSION, authors, blogs, bump_version, view_events

# A view row as stored: (event_id, blog_id, viewer_id, viewer_country, viewed_at us).
ViewRow = tuple[str | None, int, str | None, str | None, int]

_SQLITE_INSERT = (
    "INSERT OR IGNORE INTO view_events (event_id, blog_id, viewer_id, viewer_country, viewed_at) VALUES (?, ?, ?, ?, ?)"
)
_PG_COLUMNS = "(event_id, blog_id, viewer_id, viewer_country, viewed_at)"
_PG_TYPES = ["text", "int4", "text", "text", "int8"]
_PG_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS ingest_views_staging (line int4 NOT NULL, event_id text, blog_id int4 NOT NULL,"
    " viewer_id text, viewer_country text, viewed_at int8 NOT NULL) ON COMMIT DELETE ROWS"
)


_PG_FROM_STAGING = (
    f"INSERT INTO view_events {_PG_COLUMNS} SELECT event_id, blog_id, viewer_id, viewer_country, viewed_at"
    " FROM ingest_views_staging ORDER BY line ON CONFLICT DO NOTHING"
)
_DEADLOCK_ATTEMPTS = 5
# Held shared by each staging INSERT until its commit; taken exclusively by a deadlock victim before it retries.
INGEST_LOCK_KEY = 0x696E67657374  # "ingest"; the rollup pass has its own key


def upsert_authors(conn: Connection, rows: Sequence[tuple[str, str, str | None]]) -> None:
    """Insert or update authors given as (external_id, name, country); the last of repeated ids wins."""
    last = {r[0]: r for r in rows}  # one row per key: PostgreSQL refuses to update a row twice in one statement
    if not last:
        return
    ins = _insert(conn, authors)
    stmt = ins.on_conflict_do_update(
        index_elements=[authors.c.external_id],
        set_={"name": ins.excluded.name, "country_code": ins.excluded.country_code},
    )
    # In key order: two writers upserting the same ids in crossed orders would wait on each other (deadlock).
    conn.execute(stmt, [{"external_id": e, "name": n, "country_code": c} for e, n, c in _by_key(last)])
    # Same transaction: readers' caches of filtered and grouped answers key on this version (query_cache.py).
    bump_version(conn, DIMENSIONS_VERSION)


def upsert_blogs(conn: Connection, rows: Sequence[tuple[str, str, int, str | None, int]]) -> None:
    """Insert or update blogs given as (external_id, title, author_id, country, created_at); last repeat wins."""
    last = {r[0]: r for r in rows}
    if not last:
        return
    ins = _insert(conn, blogs)
    stmt = ins.on_conflict_do_update(
        index_elements=[blogs.c.external_id],
        set_={
            "title": ins.excluded.title,
            "author_id": ins.excluded.author_id,
            "country_code": ins.excluded.country_code,
            "created_at": ins.excluded.created_at,
        },
    )
    conn.execute(
        stmt,
        [
            {"external_id": e, "title": t, "author_id": a, "country_code": c, "created_at": at}
            for e, t, a, c, at in _by_key(last)  # in key order, as authors
        ],
    )
    bump_version(conn, DIMENSIONS_VERSION)


def _by_key(rows: dict[str, Any]) -> list[Any]:
    return [rows[k] for k in sorted(rows)]


def author_ids(conn: Connection, external_ids: Iterable[str]) -> dict[str, int]:
    """Map author client ids to stored ids (one query; unknown ids are absent)."""
    return _resolve(conn, "authors", external_ids)


def blog_ids(conn: Connection, external_ids: Iterable[str]) -> dict[str, int]:
    """Map blog client ids to stored ids (one query; unknown ids are absent)."""
    return _resolve(conn, "blogs", external_ids)


def _resolve(conn: Connection, table: str, external_ids: Iterable[str]) -> dict[str, int]:
    keys = list(set(external_ids))
    if not keys:
        return {}
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if is_sqlite(conn):
            # One bound JSON array instead of thousands of placeholders (SQLite caps their number).
            cur.execute(
                f"SELECT external_id, id FROM {table} WHERE external_id IN (SELECT value FROM json_each(?))",
                (json.dumps(keys),),
            )
        else:
            cur.execute(f"SELECT external_id, id FROM {table} WHERE external_id = ANY(%s)", (keys,))
        return dict(cur.fetchall())
    finally:
        cur.close()


def insert_views(conn: Connection, rows: Sequence[ViewRow], *, direct: bool = True) -> int:
    """Append view rows in the given order (ids follow it); a repeated event_id is skipped. Returns rows stored.

    On PostgreSQL, `direct` first tries a plain COPY into view_events (no event id may conflict) and falls back
    to the staging path when one does; pass False when duplicates are expected (e.g. the previous batch had some).
    """
    if not rows:
        return 0
    if is_sqlite(conn):
        return _insert_views_sqlite(conn, rows)
    return _insert_views_pg(conn, rows, direct=direct)


# SQLite settings for one connection while it bulk-loads (both safe in WAL mode, neither weakens durability):
# a page cache that holds view_events' two secondary indexes (their inserts land on random pages), and fewer
# checkpoints: each one rewrites the index pages that every 50k-row commit dirties again (together +55% in a
# throw-away probe, 1M rows).
# The WAL may grow to ~400 MB meanwhile; the import ends with a checkpoint.
_SQLITE_BULK = {"cache_size": -262_144, "wal_autocheckpoint": 100_000}


@contextmanager
def bulk_loading(conn: Connection) -> Iterator[None]:
    """Tune this connection for a long series of bulk-insert transactions, and restore it afterwards."""
    if not is_sqlite(conn):
        yield
        return
    raw = conn.connection.dbapi_connection
    assert raw is not None
    saved = {name: raw.execute(f"PRAGMA {name}").fetchone()[0] for name in _SQLITE_BULK}
    for name, value in _SQLITE_BULK.items():
        raw.execute(f"PRAGMA {name}={int(value)}")
    try:
        yield
    finally:
        for name, value in saved.items():
            raw.execute(f"PRAGMA {name}={int(value)}")
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for readers; the next commits finish the job


def count_views(conn: Connection) -> int:
    """The number of stored view events."""
    return int(conn.execute(select(func.count()).select_from(view_events)).scalar_one())


def has_views(conn: Connection) -> bool:
    """True when at least one view event is stored."""
    return conn.execute(select(view_events.c.id).limit(1)).first() is not None


def _insert(conn: Connection, table: Any) -> Any:
    return sqlite.insert(table) if is_sqlite(conn) else postgresql.insert(table)


def _insert_views_sqlite(conn: Connection, rows: Sequence[ViewRow]) -> int:
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        # sqlite3 sums the changes of every executemany row: ignored duplicates are not counted.
        cur.executemany(_SQLITE_INSERT, rows)
        return int(cur.rowcount)
    finally:
        cur.close()


def _insert_views_pg(conn: Connection, rows: Sequence[ViewRow], *, direct: bool) -> int:
    if not any(r[0] is not None for r in rows):
        return _pg_copy(conn, rows)  # no event ids means nothing can conflict: COPY straight into the table
    if direct and not citus.on_citus(conn):
        # (Citus reports a worker's unique violation as an internal error, which cannot be told apart: staging.)
        # Optimistic: a plain COPY into view_events is 2-3x cheaper than staging + INSERT .. ON CONFLICT, and the
        # unique index on event_id is the check: an id already stored, repeated in the batch, or committed meanwhile
        # by a concurrent importer (the COPY waits for that transaction, like ON CONFLICT does) raises a unique
        # violation; the savepoint then undoes the partial COPY and the batch goes through staging, which skips them.
        # No pre-check query is needed: the index probe the COPY makes anyway is the check.
        # Two importers copying the same new ids in crossed orders wait on each other; PostgreSQL aborts one
        # (deadlock detected): its savepoint rollback frees the other, and it goes through staging as well.
        try:
            with conn.begin_nested():
                return _pg_copy(conn, rows)
        except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
            pass
    return _pg_staging_rows(conn, rows)


def _pg_copy(conn: Connection, rows: Iterable[ViewRow]) -> int:
    """Binary COPY straight into view_events (raises on a unique violation)."""
    n = 0
    with conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
        with cur.copy(f"COPY view_events {_PG_COLUMNS} FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(_PG_TYPES)
            write = cp.write_row
            for r in rows:
                write(r)
                n += 1
    return n


def _pg_staging_rows(conn: Connection, rows: Sequence[ViewRow]) -> int:
    """COPY into a session temp table, then one INSERT .. SELECT in line order skipping known event ids."""
    with conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(_PG_STAGING)
        with cur.copy(
            "COPY ingest_views_staging (line, event_id, blog_id, viewer_id, viewer_country, viewed_at)"
            " FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["int4", *_PG_TYPES])
            write = cp.write_row
            for i, r in enumerate(rows):
                write((i, *r))
        # Two writers inserting the same new ids in crossed orders each wait for the other's row (ON CONFLICT waits
        # for the transaction that holds it): PostgreSQL aborts one. Its savepoint rollback frees the other; it then
        # waits for every writer holding the ingest lock (shared) to commit, so that its retry finds their ids
        # stored and skips them, instead of crossing them again. A retry with no wait deadlocked again and again.
        # Citus reports the rows an INSERT .. SELECT read, not those it stored: they are counted from RETURNING.
        returning = citus.on_citus(conn)
        for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
            try:
                with conn.begin_nested():
                    cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", (INGEST_LOCK_KEY,))
                    cur.execute(_PG_FROM_STAGING + (" RETURNING 1" if returning else ""))
                    stored = len(cur.fetchall()) if returning else int(cur.rowcount)
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == _DEADLOCK_ATTEMPTS:
                    raise
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (INGEST_LOCK_KEY,))
        # Emptied now (not only at commit) so a second call in the same transaction starts clean.
        cur.execute("TRUNCATE ingest_views_staging")
        return stored
