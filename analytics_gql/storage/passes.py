"""What a rollup pass does differently per database, in one place (rollup.refresh runs the same steps on both).

SQLite has one writer: a chunk's deltas (the raw scans and everything derived from them, most of the work) are
computed in a read transaction first, into the connection's temp tables, while writers go on (WAL); the write lock
(BEGIN IMMEDIATE) is then held only to add them and move the watermark, if the watermark is still where the deltas
start. Its single writer draws every new id above the committed ones, so `max(id)` read outside the lock is a safe
target. PostgreSQL: the target is `pg_safe_high` (a brief EXCLUSIVE lock on the raw table in its own transaction,
so no in-flight writer can still commit a lower id), the pass lock is a transaction advisory lock, and the deltas
are computed inside the locked transaction (MVCC: writers and readers are not blocked by it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection

from analytics_gql.storage import rollups as store
from analytics_gql.storage.engine import Database

# Raw ids folded per pass transaction when ANALYTICS_ROLLUP_CHUNK is unset (docs/BENCHMARKS-HISTORY.md,
# "Rollup pass cost").
# SQLite: a chunk holds the single write lock only while it adds its deltas, computed beforehand without the lock;
# the adding grows with the chunk (writers waited up to ~2 s with 1,000,000 ids, docs/BENCHMARKS.md, "Rollup pass").
# PostgreSQL: a pass transaction blocks no writer and no reader (MVCC; it takes the raw table's EXCLUSIVE lock only
# in its own short transaction first, R6), and only other passes, compaction and audit wait for its lock. Its cost
# is rewriting rollup rows that every chunk touches again, so a chunk is larger there, still bounded: a crash redoes
# at most one chunk, and its largest statement (the day x blog x reader-country delta) stays well under the
# default statement_timeout (30 s).
SQLITE_CHUNK = 1_000_000
PG_CHUNK = 5_000_000
# R6: a pass may queue ingest behind its EXCLUSIVE lock request for at most this long before skipping a round.
WRITER_LOCK_TIMEOUT_MS = 200


class WritersBusy(Exception):  # noqa: N818 - a signal, not an error
    """PostgreSQL writers kept the raw table busy past WRITER_LOCK_TIMEOUT_MS: skip this round."""


@dataclass(frozen=True)
class PassDialect:
    """The per-database steps of a pass."""

    db: Database

    @property
    def default_chunk(self) -> int:
        """Raw ids per pass transaction by default."""
        return SQLITE_CHUNK if self.db.sqlite else PG_CHUNK

    @property
    def deltas_before_lock(self) -> bool:
        """True where a chunk's deltas are computed before the pass lock is taken (SQLite)."""
        return self.db.sqlite

    @property
    def temps_outlive_transactions(self) -> bool:
        """True where delta temp tables stay on the connection after commit or rollback (SQLite)."""
        return self.db.sqlite

    def fixed_target(self) -> int | None:
        """The pass's safe_high taken before any chunk (PostgreSQL), or None where the first chunk reads it
        (SQLite: max(id) is safe outside the lock). Raises WritersBusy when writers hold the raw table."""
        if self.db.sqlite:
            return None
        with self.db.engine.connect() as conn, conn.begin():
            # Short, separate transaction: commit releases the EXCLUSIVE lock at once (see pg_safe_high).
            target = store.pg_safe_high(conn, WRITER_LOCK_TIMEOUT_MS)
        if target is None:
            raise WritersBusy
        return target

    @contextmanager
    def begin_locked(self, conn: Connection, *, wait: bool) -> Iterator[bool]:
        """A write transaction on `conn` holding the pass lock; False when `wait` is False and another pass holds
        it. SQLite: BEGIN IMMEDIATE makes us the single writer. PostgreSQL: a transaction advisory lock."""
        conn.execution_options(write=True)
        with conn.begin():
            yield self.db.sqlite or store.pg_pass_lock(conn, wait=wait)

    def tune(self, conn: Connection) -> None:
        """Settings for one pass transaction (PostgreSQL: work_mem, synchronous_commit, jit)."""
        if not self.db.sqlite:
            store.pg_tune_pass(conn)


def of(db: Database) -> PassDialect:
    """The pass steps for `db`."""
    return PassDialect(db)
