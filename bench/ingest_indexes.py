"""What each index of view_events costs a bulk insert: the bare insert of the ingest baseline into tables shaped
like view_events with 0, 1, 2 or 3 of its indexes (and a BRIN variant on PostgreSQL), in one run.

Usage: .venv/bin/python bench/ingest_indexes.py [--rows 1000000] [--skip-pg] [--skip-sqlite]

Same rows and 50k-row transactions as bench/ingest.py's baselines (no parsing, no duplicate handling): a psycopg
binary COPY on PostgreSQL (a throw-away database), executemany on SQLite (a temp file, WAL, synchronous=NORMAL,
and the import's bulk settings: 256 MB page cache, wal_autocheckpoint 100,000 pages, checkpoint at the end).
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

PG_ADMIN = os.environ.get("ANALYTICS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres").replace(
    "+psycopg", ""
)
COLUMNS = "id {id}, event_id varchar(255){uq}, blog_id integer NOT NULL, viewer_id varchar(255), " \
          "viewer_country varchar(2), viewed_at bigint NOT NULL"
# name -> (id column, unique event_id, index on viewed_at)
SHAPES = {
    "no index (baseline shape + id)": ("{serial}", "", None),
    "PK id": ("{serial} PRIMARY KEY", "", None),
    "PK id + unique event_id": ("{serial} PRIMARY KEY", " UNIQUE", None),
    "PK id + viewed_at": ("{serial} PRIMARY KEY", "", "btree"),
    "view_events: PK + unique + viewed_at": ("{serial} PRIMARY KEY", " UNIQUE", "btree"),
    "PK + unique + BRIN viewed_at (PostgreSQL)": ("{serial} PRIMARY KEY", " UNIQUE", "brin"),
}


def make_rows(n: int) -> list[tuple[str, int, str, str | None, int]]:
    """Rows like the ingest benchmark's: sequential event ids, 2,000 blogs, random instants over a year."""
    rng = random.Random(1)
    now = 1_780_000_000_000_000
    countries = ["KE", "US", "DE", "IN", "BR", None]
    return [(f"e-{i}", rng.randrange(1, 2001), f"v{rng.randrange(100_000)}", rng.choice(countries),
             now - rng.randrange(365 * 86_400 * 10**6)) for i in range(1, n + 1)]


def ddl(shape: str, serial: str) -> list[str]:
    ident, uq, ts = SHAPES[shape]
    out = [f"CREATE TABLE t ({COLUMNS.format(id=ident.format(serial=serial), uq=uq)})"]
    if ts == "btree":
        out.append("CREATE INDEX t_ts ON t (viewed_at)")
    elif ts == "brin":
        out.append("CREATE INDEX t_ts ON t USING brin (viewed_at)")
    return out


def bench_pg(rows: list, shapes: list[str]) -> dict[str, float]:
    name = f"ag_ingest_idx_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    out = {}
    try:
        with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + name) as pg:
            for shape in shapes:
                pg.execute("DROP TABLE IF EXISTS t")
                for stmt in ddl(shape, "bigserial"):
                    pg.execute(stmt)
                pg.commit()
                pg.execute("CHECKPOINT")
                pg.commit()
                t0 = time.perf_counter()
                for i in range(0, len(rows), 50_000):
                    copy = "COPY t (event_id, blog_id, viewer_id, viewer_country, viewed_at) FROM STDIN (FORMAT BINARY)"
                    with pg.cursor().copy(copy) as cp:
                        cp.set_types(["text", "int4", "text", "text", "int8"])
                        for r in rows[i : i + 50_000]:
                            cp.write_row(r)
                    pg.commit()
                out[shape] = time.perf_counter() - t0
                print(f"PostgreSQL {shape:<44} {len(rows) / out[shape]:>10,.0f} rows/s", flush=True)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


def bench_sqlite(rows: list, shapes: list[str]) -> dict[str, float]:
    out = {}
    with tempfile.TemporaryDirectory(prefix="ag_ingest_idx_") as d:
        for shape in shapes:
            if "BRIN" in shape:
                continue
            con = sqlite3.connect(Path(d) / f"{len(out)}.db", isolation_level=None)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-262144", "wal_autocheckpoint=100000"):
                con.execute(f"PRAGMA {pragma}")
            for stmt in ddl(shape, "INTEGER"):
                con.execute(stmt)
            insert = "INSERT INTO t (event_id, blog_id, viewer_id, viewer_country, viewed_at) VALUES (?, ?, ?, ?, ?)"
            t0 = time.perf_counter()
            for i in range(0, len(rows), 50_000):
                con.execute("BEGIN IMMEDIATE")
                con.executemany(insert, rows[i : i + 50_000])
                con.execute("COMMIT")
            con.execute("PRAGMA wal_checkpoint(PASSIVE)")
            out[shape] = time.perf_counter() - t0
            con.close()
            print(f"SQLite     {shape:<44} {len(rows) / out[shape]:>10,.0f} rows/s", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--skip-pg", action="store_true")
    p.add_argument("--skip-sqlite", action="store_true")
    args = p.parse_args()
    rows = make_rows(args.rows)
    shapes = list(SHAPES)
    results = []
    if not args.skip_sqlite:
        results.append(("SQLite", bench_sqlite(rows, shapes)))
    if not args.skip_pg:
        results.append(("PostgreSQL", bench_pg(rows, shapes)))
    print()
    for dbname, times in results:
        base = times[shapes[0]]
        for shape, seconds in times.items():
            print(f"{dbname:<10} {shape:<44} {args.rows / seconds:>10,.0f} rows/s  {base / seconds:5.0%} of no index")


if __name__ == "__main__":
    sys.exit(main())
