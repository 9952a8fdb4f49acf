"""Ingest throughput: N generated views imported through loading.import_path, against bare-insert baselines.

Usage: .venv/bin/python bench/ingest.py [--views 1000000] [--skip-pg] [--skip-sqlite]

Baselines are measured in the same run on the same rows (already as Python tuples, so no parsing):
a bare executemany into a plain unindexed SQLite table, and a bare psycopg binary COPY into an unindexed
PostgreSQL table. The PostgreSQL runs use a throwaway database (ANALYTICS_BENCH_DB_PREFIX + "_ingest", default
ag_bench_ingest) created and dropped here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import psycopg
from sqlalchemy import Connection, create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics_gql import loading  # noqa: E402
from analytics_gql.domain.calendar import EPOCH  # noqa: E402
from analytics_gql.domain.records import parse_views  # noqa: E402
from analytics_gql.domain.synthetic import Synthetic  # noqa: E402
from analytics_gql.settings import Settings  # noqa: E402
from analytics_gql.storage import ingest, schema  # noqa: E402
from analytics_gql.storage.engine import Database  # noqa: E402

PG_ADMIN = os.environ.get("ANALYTICS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BENCH_DB = os.environ.get("ANALYTICS_BENCH_DB_PREFIX", "ag_bench") + "_ingest"  # helpers sharing a server use their own
PLAIN = "(event_id text, blog_id integer, viewer_id text, viewer_country text, viewed_at bigint)"


def iso(us: int) -> str:
    """The instant as the ISO form clients send (Z, microseconds only when present)."""
    return (EPOCH + dt.timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


def generate(folder: Path, n: int) -> list[tuple[str | None, int, str | None, str | None, int]]:
    """Write authors/blogs/views NDJSON files; return the view rows as the baselines will insert them."""
    gen = Synthetic(days=365, now_us=loading.now_us(), seed=42)
    authors = gen.authors(200)
    blogs = gen.blogs(2_000, authors)
    with open(folder / "authors.ndjson", "wb") as f:
        for a in authors:
            f.write(orjson.dumps({"id": a.external_id, "name": a.name, "country": a.country}) + b"\n")
    with open(folder / "blogs.ndjson", "wb") as f:
        for b in blogs:
            f.write(orjson.dumps({"id": b.external_id, "title": b.title, "authorId": b.author_external_id,
                                  "country": b.country, "createdAt": iso(b.created_at)}) + b"\n")
    ext = [b.external_id for b in blogs]
    rows = []
    with open(folder / "views.ndjson", "wb") as f:
        seq = 0
        for batch in gen.views(n, list(range(len(blogs))), [b.created_at for b in blogs]):
            lines = []
            for _, b, viewer, country, at in batch:
                seq += 1
                event = f"e-{seq}"
                d = {"eventId": event, "blogId": ext[b], "viewerId": viewer, "viewerCountry": country,
                     "viewedAt": iso(at)}
                lines.append(orjson.dumps(d))
                rows.append((event, b + 1, viewer, country, at))
            f.write(b"\n".join(lines) + b"\n")
    return rows


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f} events/s ({seconds:6.2f} s)"


def import_run(db: Database, folder: Path, n: int) -> tuple[float, float]:
    """Migrate, load authors and blogs, then time the views import; check the count."""
    schema.upgrade(db)
    loading.import_path(db, "authors", str(folder / "authors.ndjson"), progress=False)
    loading.import_path(db, "blogs", str(folder / "blogs.ndjson"), progress=False)
    t0 = time.perf_counter()
    result = loading.import_path(db, "views", str(folder / "views.ndjson"), progress=False)
    elapsed = time.perf_counter() - t0
    assert result.accepted == n and result.rejected == 0, result.summary()
    t0 = time.perf_counter()
    again = loading.import_path(db, "views", str(folder / "views.ndjson"), progress=False)
    again_elapsed = time.perf_counter() - t0
    assert again.accepted == 0 and again.duplicates == n, again.summary()
    return elapsed, again_elapsed


def _timed_batches(db: Database, rows: list, write: Callable[[Connection, list], object]) -> float:
    """Empty view_events (TRUNCATE on PostgreSQL: no dead index entries left behind), then time `write` over
    50k-row transactions on one connection with the import's bulk settings."""
    with db.write() as conn:
        conn.exec_driver_sql("DELETE FROM view_events" if db.sqlite else "TRUNCATE view_events")
    t0 = time.perf_counter()
    with db.engine.connect() as base:
        conn = base.execution_options(write=True)
        with ingest.bulk_loading(conn):
            for i in range(0, len(rows), 50_000):
                with conn.begin():
                    write(conn, rows[i : i + 50_000])
    return time.perf_counter() - t0


def indexed_ceiling(db: Database, rows: list) -> float:
    """The same bare insert as the baseline (no parsing, no duplicate handling), but into the real, emptied,
    indexed view_events (with the import's SQLite bulk settings): what the schema's three indexes alone allow."""
    cols = "(event_id, blog_id, viewer_id, viewer_country, viewed_at)"

    def bare(conn: Connection, batch: list) -> None:
        if db.sqlite:
            cur = conn.connection.dbapi_connection.cursor()
            cur.executemany(f"INSERT INTO view_events {cols} VALUES (?, ?, ?, ?, ?)", batch)
            cur.close()
        else:
            with conn.connection.driver_connection.cursor() as cur:
                with cur.copy(f"COPY view_events {cols} FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "int4", "text", "text", "int8"])
                    for r in batch:
                        cp.write_row(r)

    return _timed_batches(db, rows, bare)


def storage_only(db: Database, rows: list) -> float:
    """The storage path alone (ingest.insert_views) on pre-parsed rows, into an emptied view_events."""
    return _timed_batches(db, rows, ingest.insert_views)


def bench_sqlite(folder: Path, rows: list, n: int) -> tuple[float, float, float, float, float]:
    base_path = folder / "baseline.db"
    con = sqlite3.connect(base_path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(f"CREATE TABLE plain {PLAIN}")
    t0 = time.perf_counter()
    con.execute("BEGIN")
    for i in range(0, n, 50_000):  # same transaction size as the import
        con.executemany("INSERT INTO plain VALUES (?, ?, ?, ?, ?)", rows[i : i + 50_000])
        con.execute("COMMIT")
        con.execute("BEGIN")
    con.execute("COMMIT")
    base = time.perf_counter() - t0
    con.close()
    db = Database(Settings(database_url=f"sqlite:///{folder / 'import.db'}"))
    try:
        imp = import_run(db, folder, n)
        store = storage_only(db, rows)
        ceil = indexed_ceiling(db, rows)
    finally:
        db.dispose()
    return base, *imp, store, ceil


def bench_pg(folder: Path, rows: list, n: int) -> tuple[float, float, float, float, float]:
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + BENCH_DB
    try:
        with psycopg.connect(url.replace("+psycopg", "")) as pg:
            pg.execute(f"CREATE TABLE plain {PLAIN}")
            pg.commit()
            t0 = time.perf_counter()
            for i in range(0, n, 50_000):
                with pg.cursor().copy("COPY plain FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "int4", "text", "text", "int8"])
                    for r in rows[i : i + 50_000]:
                        cp.write_row(r)
                pg.commit()
            base = time.perf_counter() - t0
            pg.execute("DROP TABLE plain")
            pg.commit()
        db = Database(Settings(database_url=url))
        try:
            imp = import_run(db, folder, n)
            store = storage_only(db, rows)
            ceil = indexed_ceiling(db, rows)
        finally:
            db.dispose()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
        admin.dispose()
    return base, *imp, store, ceil


def parse_only(folder: Path, n: int) -> float:
    """Reading and parsing the views file alone (records.parse_views in 50k-line batches, one process, no database,
    no blog lookup): a floor under any import's time, next to baselines that start from ready tuples."""
    with open(folder / "views.ndjson", "rb") as f:
        lines = f.read().split(b"\n")[:n]
    now = loading.now_us()
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for i in range(0, n, 50_000):
            rows, errors = parse_views(enumerate(lines[i : i + 50_000], i + 1), now)
            assert not errors and len(rows) == len(lines[i : i + 50_000])
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=1_000_000)
    p.add_argument("--skip-pg", action="store_true")
    p.add_argument("--skip-sqlite", action="store_true")
    args = p.parse_args()
    n = args.views
    with tempfile.TemporaryDirectory(prefix="ag_bench_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        rows = generate(folder, n)
        size = (folder / "views.ndjson").stat().st_size
        print(f"generated {n:,} views ({size / 1e6:.0f} MB NDJSON) in {time.perf_counter() - t0:.1f} s")
        parse = parse_only(folder, n)
        report = []
        if not args.skip_sqlite:
            report.append(("SQLite", "bare executemany, plain table", *bench_sqlite(folder, rows, n)))
        if not args.skip_pg:
            report.append(("PostgreSQL", "bare binary COPY, unindexed table", *bench_pg(folder, rows, n)))
        print()
        for dbname, what, base, imp, again, store, ceil in report:
            print(f"{dbname:<10} baseline {what:<34} {rate(n, base)}")
            print(f"{dbname:<10} same bare insert into indexed view_events  {rate(n, ceil)}  ratio {base / ceil:.0%}")
            print(f"{dbname:<10} storage only (indexed view_events)        {rate(n, store)}  ratio {base / store:.0%}")
            print(f"{dbname:<10} import_path (parse+validate+store)        {rate(n, imp)}  ratio {base / imp:.0%}")
            print(f"{dbname:<10} re-import of the same file (duplicates)   {rate(n, again)}")
            print(f"{dbname:<10} parsing alone, no storage (one core)      {rate(n, parse)}  ratio {base / parse:.0%}")


if __name__ == "__main__":
    main()
