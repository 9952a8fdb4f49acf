"""Planner statistics: bring them up to date for the tables a command changed (the one dialect difference here).

Without statistics PostgreSQL guesses a table's size from its pages and every selectivity from constants, and a
join of plan runs with `view_events` was once planned as a sequential scan; SQLite without `sqlite_stat1` picks
indexes by rules of thumb. Autovacuum would analyse eventually (unless it is off, or has not run yet), so the
commands that change many rows (seed, import, rollup, rebuild, compaction, a large scheduled pass) analyse the
tables they changed themselves, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection

from analytics_gql.storage.tables import authors, blogs, reader_tables, rollup_tables, view_events, viewers

# A scheduled pass analyses when it folded at least this many events, or more than PASS_ANALYZE_BASE plus a tenth of
# the events folded before it (PostgreSQL's autovacuum rule, 50 + 10%, with a larger base: ANALYZE is not free).
PASS_ANALYZE_EVENTS = 100_000
PASS_ANALYZE_BASE = 1_000
# SQLite reads at most this many index entries per index (PRAGMA analysis_limit): approximate counts, but an ANALYZE
# of a 10M-row table that never holds the write lock for seconds.
SQLITE_ANALYSIS_LIMIT = 10_000

RAW_TABLES: tuple[str, ...] = (view_events.name,)
DIMENSION_TABLES: tuple[str, ...] = (authors.name, blogs.name)
# The reader sets and the viewer dictionary are written by the same passes as the view counts.
ROLLUP_TABLES: tuple[str, ...] = (*(t.name for t in rollup_tables.values()),
                                  *(t.name for t in reader_tables.values()), viewers.name)
_KNOWN = frozenset(RAW_TABLES + DIMENSION_TABLES + ROLLUP_TABLES)


def pass_needs_analyze(events: int, folded_before: int) -> bool:
    """True when a pass that folded `events` (after `folded_before` ids) changed enough rows to re-analyse."""
    return events >= PASS_ANALYZE_EVENTS or events > PASS_ANALYZE_BASE + folded_before // 10


def analyze(conn: Connection, tables: Iterable[str]) -> None:
    """Refresh the planner statistics of `tables` (names of this schema's tables) in the caller's transaction."""
    names = sorted(set(tables))
    unknown = [n for n in names if n not in _KNOWN]
    if unknown:
        raise ValueError(f"not a table of this schema: {unknown}")  # names are written into the statement
    if not names:
        return
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA analysis_limit = {int(SQLITE_ANALYSIS_LIMIT)}")
        for name in names:
            conn.exec_driver_sql(f"ANALYZE {name}")
        return
    conn.exec_driver_sql("ANALYZE " + ", ".join(names))
