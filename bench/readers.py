"""Benchmark: distinct readers from reader sets vs COUNT(DISTINCT) over raw events and DuckDB, same run (issue 12).

    .venv/bin/python bench/readers.py --views 1000000 --viewers 100000 --db sqlite
    .venv/bin/python bench/readers.py --views 10000000 --viewers 1000000 --db postgresql --json /tmp/r.json

Per database: `loading.seed` (200 authors, 2,000 blogs, 400 days, N views from V distinct readers), then
- the backfill, timed: `rollup.catch_up` (reader sets included), and with `--ab-pass` first a counts-only backfill
  of the same events (reader sets switched off in-process) for today's throughput beside it;
- storage: bytes of reader sets (the stored serializations) per raw event, per table and in all;
- `analytics-gql serve` (one uvicorn worker, loopback, ANALYTICS_ROLLUP_INTERVAL=3600) and, over "the last 365
  days" computed per request at millisecond precision, warm keep-alive requests of:
  `top(BLOG, orderBy: READERS)` with totalReaders, `blogViews(COUNTRY, MONTH)` with readers, `performance(DAY)`
  with readers and readersGrowth; each beside the same question without readers (A/B, requests alternating);
- baselines in the same run: `COUNT(DISTINCT viewer_id) ... GROUP BY blog_id` over the same range in the same
  database (median of --raw-runs) and DuckDB (1 thread) over the same raw events;
- exactness: one pinned range per question, the API's readers against raw SQL;
- a pass of 50,000 new events (new and returning readers), timed, then the same size with reader sets off.
No manual ANALYZE: the database is as `seed` + `rollup` leave it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
from databases import throwaway_database
from serving import CLI, pct, server
from sqlalchemy import text

from analytics_gql import loading, rollup
from analytics_gql.storage import reader_sets
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import reader_tables

DAY_US = 86_400_000_000
YEAR_US = 365 * DAY_US


def _now() -> int:
    return time.time_ns() // 1000


def _iso(u: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=u)).isoformat(timespec="milliseconds")


def _range(start: int, end: int) -> str:
    return f'{{start: "{_iso(start)}", end: "{_iso(end)}"}}'


def questions(start: int, end: int) -> dict[str, tuple[str, str]]:
    """(with readers, without) GraphQL documents over [start, end)."""
    r = _range(start, end)
    return {
        "top(BLOG, READERS)": (
            f"{{ top(dimension: BLOG, range: {r}, orderBy: READERS, timeZone: \"UTC\") "
            "{ nodes { key views readers } totalViews totalReaders } }",
            f"{{ top(dimension: BLOG, range: {r}, timeZone: \"UTC\") {{ nodes {{ key views }} totalViews }} }}"),
        "blogViews(COUNTRY, MONTH)": (
            f"{{ blogViews(groupBy: COUNTRY, granularity: MONTH, range: {r}, first: 1000, timeZone: \"UTC\") "
            "{ nodes { key periodStart views readers } } }",
            f"{{ blogViews(groupBy: COUNTRY, granularity: MONTH, range: {r}, first: 1000, timeZone: \"UTC\") "
            "{ nodes { key periodStart views } } }"),
        "performance(DAY)": (
            f"{{ performance(granularity: DAY, range: {r}, timeZone: \"UTC\") "
            "{ points { periodStart views growth readers readersGrowth } } }",
            f"{{ performance(granularity: DAY, range: {r}, timeZone: \"UTC\") "
            "{ points { periodStart views growth } } }"),
    }


def ask(client: httpx.Client, doc: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = client.post("/graphql", json={"query": doc})
    took = time.perf_counter() - t0
    body = r.json()
    if r.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"{r.status_code} {str(body)[:400]}")
    return took, body["data"]


def raw_top_sql(start: int, end: int) -> str:
    return (f"SELECT blog_id, COUNT(DISTINCT viewer_id) AS r, COUNT(*) AS v FROM view_events "
            f"WHERE viewed_at >= {start} AND viewed_at < {end} GROUP BY blog_id")


def timed_sql(db: Database, sql: str, runs: int) -> tuple[float, list[Any]]:
    times, rows = [], []
    for _ in range(runs):
        with db.engine.connect() as conn:
            t0 = time.perf_counter()
            rows = list(conn.execute(text(sql)).all())
            times.append(time.perf_counter() - t0)
    return statistics.median(times), rows


def to_duckdb(db: Database, workdir: Path) -> duckdb.DuckDBPyConnection:
    """The raw events (blog_id, viewer_id, viewed_at) in an in-memory DuckDB, queried with one thread."""
    path = workdir / "events.csv"
    raw = db.engine.raw_connection()
    try:
        with open(path, "w") as f:
            if db.sqlite:
                import csv

                cur = raw.cursor()
                cur.execute("SELECT blog_id, viewer_id, viewed_at FROM view_events")
                w = csv.writer(f)
                while batch := cur.fetchmany(100_000):
                    w.writerows(batch)
            else:
                with raw.cursor() as cur, cur.copy(  # type: ignore[attr-defined]
                        "COPY (SELECT blog_id, viewer_id, viewed_at FROM view_events) TO STDOUT (FORMAT csv)") as cp:
                    for chunk in cp:
                        f.write(bytes(chunk).decode())
    finally:
        raw.close()
    con = duckdb.connect()
    con.execute(f"CREATE TABLE view_events AS SELECT * FROM read_csv('{path}', header=false, "
                "columns={'blog_id': 'INTEGER', 'viewer_id': 'VARCHAR', 'viewed_at': 'BIGINT'})")
    con.execute("SET threads=1")
    path.unlink()
    return con


def storage(db: Database, n: int) -> dict[str, float]:
    """Bytes of stored reader sets per raw event, per table and in all (the serializations' lengths)."""
    out: dict[str, float] = {}
    length = "length" if db.sqlite else "octet_length"
    with db.engine.connect() as conn:
        for t in reader_tables.values():
            size, rows = conn.execute(text(f"SELECT COALESCE(SUM({length}(readers)), 0), COUNT(*) FROM {t.name}")).one()
            out[t.name] = int(size) / n
            out[t.name + " rows"] = int(rows)
    out["all"] = sum(v for k, v in out.items() if not k.endswith(" rows"))
    return out


class _NoSets:
    """Reader sets off in-process (a counts-only pass, for the A/B figures): the fold and its raw delta skipped."""

    def __enter__(self) -> None:
        from analytics_gql.storage import fold as rollups

        self.rollups = rollups
        self.fold, self.deltas = reader_sets.fold, rollups.raw_deltas
        reader_sets.fold = lambda conn: 0  # type: ignore[assignment]

        def counts_only(*a: Any, **k: Any) -> dict[str, str]:
            d = self.deltas(*a, **k)
            d["rollup_readers"] = d["rollup_readers"].replace("viewer_id IS NOT NULL", "1 = 0")
            return d

        rollups.raw_deltas = counts_only  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        reader_sets.fold = self.fold  # type: ignore[assignment]
        self.rollups.raw_deltas = self.deltas  # type: ignore[assignment]


def add_events(db: Database, n: int, new_readers: int) -> None:
    """n new events at recent instants: copies of random recent events (returning readers), a share with new ids."""
    with db.engine.begin() as conn:
        top = int(conn.execute(text("SELECT MAX(id) FROM view_events")).scalar() or 0)
        now = _now()
        conn.execute(text(
            "INSERT INTO view_events (blog_id, viewer_id, viewer_country, viewed_at) "
            "SELECT blog_id, CASE WHEN id % :k = 0 THEN 'new-' || CAST(id AS VARCHAR(20)) || '-' || :tag "
            "ELSE viewer_id END, viewer_country, :now - (id % 3600000) * 1000 FROM view_events "
            "WHERE id > :lo AND id <= :hi"),
            {"k": max(1, n // max(1, new_readers)), "tag": str(now), "now": now, "lo": top - n, "hi": top})


def run(kind: str, a: argparse.Namespace, report: dict[str, Any]) -> None:
    n = a.views
    out: dict[str, Any] = report.setdefault(f"{kind} {n}", {})
    with throwaway_database(kind, prefix="ag_readers") as db, tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        loading.seed(db, authors=200, blogs=2000, views=n, days=400, seed=1, viewers=a.viewers, progress=False)
        out["seed_s"] = time.perf_counter() - t0
        out["ingest_ev_s"] = n / out["seed_s"]
        print(f"{kind}: seed (bulk ingest, COPY) {n:,} views in {out['seed_s']:.1f} s "
              f"({out['ingest_ev_s']:,.0f} views/s)", flush=True)
        if a.ab_pass:
            with _NoSets():
                r = rollup.catch_up(db, db.settings, progress=False, quiet=True)
            out["backfill_counts_only_ev_s"] = r.events / r.seconds
            print(f"{kind}: counts-only backfill {r.events:,} events in {r.seconds:.1f} s "
                  f"({r.events / r.seconds:,.0f} ev/s)", flush=True)
            r = rollup.rebuild(db, db.settings, progress=False)
        else:
            r = rollup.catch_up(db, db.settings, progress=False, quiet=True)
        out["backfill_ev_s"] = r.events / r.seconds
        print(f"{kind}: backfill with reader sets {r.events:,} events in {r.seconds:.1f} s "
              f"({r.events / r.seconds:,.0f} ev/s)", flush=True)
        out["storage"] = storage(db, n)
        print(f"{kind}: reader sets {out['storage']['all']:.2f} bytes per raw event: " + ", ".join(
            f"{k} {v:.2f}" for k, v in out["storage"].items() if not k.endswith(" rows") and k != "all"), flush=True)
        duck = to_duckdb(db, Path(work))
        url = db.settings.db_url
        log = Path(work) / "serve.log"
        with server(url, log) as base, httpx.Client(base_url=base, timeout=120) as client:
            for name, _ in questions(0, 1).items():
                warm: dict[str, list[float]] = {"with": [], "without": []}
                cold = 0.0
                for i in range(a.warmup + a.requests):
                    end = _now()
                    docs = questions(end - YEAR_US, end)[name]
                    # Alternating A/B order, so that drift on this shared machine hits both halves alike.
                    order = [("with", docs[0]), ("without", docs[1])] if i % 2 else [
                        ("without", docs[1]), ("with", docs[0])]
                    for label, doc in order:
                        took, _ = ask(client, doc)
                        if i == 0 and label == "with":
                            cold = took
                        if i >= a.warmup:
                            warm[label].append(took)
                out[name] = {"cold_ms": cold * 1000, **{f"{k}_p50_ms": statistics.median(v) * 1000
                                                         for k, v in warm.items()},
                             **{f"{k}_p99_ms": pct(v, 99) * 1000 for k, v in warm.items()}}
            end = _now()
            start = end - YEAR_US
            out["check"] = check(client, db, start, end)
            raw_s, _ = timed_sql(db, raw_top_sql(start, end), a.raw_runs)
            d_times = []
            for _ in range(a.raw_runs):
                t0 = time.perf_counter()
                duck.execute(raw_top_sql(start, end)).fetchall()
                d_times.append(time.perf_counter() - t0)
            out["top(BLOG, READERS)"]["raw_ms"] = raw_s * 1000
            out["top(BLOG, READERS)"]["duckdb_ms"] = statistics.median(d_times) * 1000
        for label, sets in (("with reader sets", True), ("counts only", False)):
            add_events(db, 50_000, 5_000)
            if sets:
                r = rollup.refresh(db, db.settings, wait=True, analyze=False)
            else:
                with _NoSets():
                    r = rollup.refresh(db, db.settings, wait=True, analyze=False)
            out[f"pass_50k_{'sets' if sets else 'counts'}_s"] = r.seconds
            print(f"{kind}: 50,000-event pass {label}: {r.events:,} events in {r.seconds:.2f} s", flush=True)
    print_results(kind, n, out)


def check(client: httpx.Client, db: Database, start: int, end: int) -> str:
    """One pinned range: top readers and totalReaders, daily readers, against raw SQL."""
    docs = questions(start, end)
    _, top = ask(client, docs["top(BLOG, READERS)"][0])
    _, perf = ask(client, docs["performance(DAY)"][0])
    with db.engine.connect() as conn:
        names = dict(conn.execute(text("SELECT id, external_id FROM blogs")).all())
        raw = {names[b]: (int(r), int(v)) for b, r, v in conn.execute(text(raw_top_sql(start, end)))}
        total = conn.execute(text(f"SELECT COUNT(DISTINCT viewer_id) FROM view_events WHERE viewed_at >= {start} "
                                  f"AND viewed_at < {end}")).scalar()
        day0 = perf["performance"]["points"][len(perf["performance"]["points"]) // 2]
        a = int(dt.datetime.fromisoformat(day0["periodStart"]).timestamp() * 1_000_000)
        day_readers = conn.execute(text(f"SELECT COUNT(DISTINCT viewer_id) FROM view_events WHERE viewed_at >= {a} "
                                        f"AND viewed_at < {a + DAY_US}")).scalar()
    problems = []
    ranked = sorted(raw.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:10]
    if [(x["key"], x["readers"], x["views"]) for x in top["top"]["nodes"]] != [(k, r, v) for k, (r, v) in ranked]:
        problems.append("top")
    if top["top"]["totalReaders"] != total:
        problems.append(f"totalReaders {top['top']['totalReaders']} != {total}")
    if day0["readers"] != day_readers:
        problems.append(f"day readers {day0['readers']} != {day_readers}")
    return "exact" if not problems else "DIFFER: " + "; ".join(problems)


def print_results(kind: str, n: int, out: dict[str, Any]) -> None:
    print(f"\n== {kind}, {n:,} views: answers {out['check']}")
    print(f"ingest (seed) {out['ingest_ev_s']:,.0f} views/s; backfill {out['backfill_ev_s']:,.0f} ev/s with reader sets"
          + (f", {out['backfill_counts_only_ev_s']:,.0f} counts only" if "backfill_counts_only_ev_s" in out else ""))
    print(f"50,000-event pass: {out['pass_50k_sets_s']:.2f} s with reader sets, {out['pass_50k_counts_s']:.2f} s "
          "counts only")
    print(f"reader sets: {out['storage']['all']:.2f} bytes per raw event")
    print(f"{'question (last 365 days, ms precision)':42} {'cold':>8} {'p50':>7} {'p99':>7} {'no readers p50':>15}")
    for name in questions(0, 1):
        q = out[name]
        print(f"{name:42} {q['cold_ms']:8.1f} {q['with_p50_ms']:7.2f} {q['with_p99_ms']:7.2f} "
              f"{q['without_p50_ms']:15.2f}")
    t = out["top(BLOG, READERS)"]
    print(f"top(BLOG, READERS) vs COUNT(DISTINCT) GROUP BY blog_id {t['raw_ms']:.0f} ms: "
          f"{t['raw_ms'] / t['with_p50_ms']:.1f}x; vs DuckDB (1 thread) {t['duckdb_ms']:.0f} ms: "
          f"{t['duckdb_ms'] / t['with_p50_ms']:.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, default=1_000_000)
    p.add_argument("--viewers", type=int, default=100_000)
    p.add_argument("--db", default="both",
                   help="sqlite, postgresql, citus (ANALYTICS_BENCH_CITUS_URL), both (sqlite,postgresql) or a "
                        "comma-separated list run one after the other in this run, e.g. postgresql,citus")
    p.add_argument("--requests", type=int, default=100, help="timed requests per question and variant")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--raw-runs", type=int, default=3)
    p.add_argument("--ab-pass", action=argparse.BooleanOptionalAction, default=True,
                   help="also time a counts-only backfill first (doubles the backfill time)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {head}; {CLI}; DuckDB {duckdb.__version__} threads=1", flush=True)
    report: dict[str, Any] = {"commit": head}
    for kind in (["sqlite", "postgresql"] if a.db == "both" else a.db.split(",")):
        run(kind, a, report)
        if a.json:
            a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
