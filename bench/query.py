"""Benchmark: GraphQL answers through HTTP vs a raw GROUP BY (same database) and DuckDB (1 thread), same run.

    .venv/bin/python bench/query.py                          # 1M and 10M views, SQLite and PostgreSQL
    .venv/bin/python bench/query.py --views 1000000 --db postgresql --json /tmp/q.json

Per database and size: seed N views (`loading.seed`: 200 authors, 2,000 blogs, ~3 years back), fold them into the
rollups (`rollup.catch_up`), ANALYZE, start `analytics-gql serve` (one uvicorn worker, 127.0.0.1, a free port,
ANALYTICS_ROLLUP_INTERVAL=3600 so no pass runs during the measurement) and time, for 1 month, 1 year and 3 years:
`top(dimension: BLOG)`, `blogViews(groupBy: COUNTRY, granularity: MONTH)`, the same `blogViews` without periods
(an answer of fixed size, for the 3-year / 1-month cost), `performance(granularity: DAY)` in UTC and in
America/New_York. Each answer is checked against the raw SQL and DuckDB answers (exact, not just timed).
Baselines: the same question as one raw GROUP BY over `view_events` in the same database (median of a few runs),
and DuckDB scanning the same raw events (exported from that database into an in-memory table) with
`SET threads=1`, only the query timed. Then requests/s for `top` (1 year) with 8 concurrent keep-alive clients.
PostgreSQL uses a throw-away database it creates and drops (ANALYTICS_BENCH_PG_URL, default the local server).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import httpx
from databases import throwaway_database
from serving import pct, server
from sqlalchemy import text

from analytics_gql import loading, rollup
from analytics_gql.domain.calendar import DAY_US, midnight_us, offset_segments
from analytics_gql.storage.engine import Database

DAYS = 3 * 366 + 40  # the 3-year range lies inside the seeded window
NY = "America/New_York"
RANGES = {"1m": 1, "1y": 12, "3y": 36}  # months back from today


# ---------------------------------------------------------------- the questions


@dataclass(frozen=True)
class Question:
    """One question (`kind`) over one range of whole local dates [start, end) in `zone`."""

    kind: str  # "top", "blogViews", "blogViewsTotal", "performance" (or "floor": `{ __typename }`)
    span: str
    zone: str
    start: dt.date
    end: dt.date

    @property
    def name(self) -> str:
        names = {"floor": "floor", "top": "top BLOG", "blogViews": "blogViews COUNTRY MONTH",
                 "blogViewsTotal": "blogViews COUNTRY", "performance": "performance DAY"}
        return names[self.kind]

    @property
    def lo(self) -> int:
        return midnight_us(self.start, ZoneInfo(self.zone))

    @property
    def hi(self) -> int:
        return midnight_us(self.end, ZoneInfo(self.zone))

    @property
    def gql(self) -> str:
        """The GraphQL document sent (dates are read in the query's zone)."""
        rng = f'range: {{start: "{self.start.isoformat()}", end: "{self.end.isoformat()}"}}'
        meta = "meta { sources { source rows } }"
        if self.kind == "floor":  # what the HTTP + GraphQL path costs with no resolver work
            return "{ __typename }"
        if self.kind == "top":
            return (f"{{ top(dimension: BLOG, {rng}) {{ totalViews otherViews "
                    f"nodes {{ rank key label views blogCount share }} {meta} }} }}")
        if self.kind == "blogViews":
            return (f"{{ blogViews(groupBy: COUNTRY, granularity: MONTH, {rng}, first: 1000) {{ totalCount "
                    f"nodes {{ key label periodStart periodLabel blogCount views }} {meta} }} }}")
        if self.kind == "blogViewsTotal":  # the same grouping without periods: an answer whose size is fixed
            return (f"{{ blogViews(groupBy: COUNTRY, {rng}, first: 1000) {{ totalCount "
                    f"nodes {{ key label blogCount views }} {meta} }} }}")
        return (f'{{ performance(granularity: DAY, {rng}, timeZone: "{self.zone}") {{ points {{ periodStart '
                f"periodEnd label views blogsCreated growth partial }} {meta} }} }}")

    def raw_sql(self, dialect: str) -> str:
        """The same question as one GROUP BY over the raw events (`dialect`: sqlite, postgresql or duckdb)."""
        if self.kind == "top":  # all blogs' counts; ranking 2,000 rows is left to Python (favours the baseline)
            return (f"SELECT blog_id, COUNT(*) FROM view_events WHERE viewed_at >= {self.lo} "
                    f"AND viewed_at < {self.hi} GROUP BY blog_id")
        if self.kind == "blogViewsTotal":
            return ("SELECT COALESCE(b.country_code, '--') AS k, COUNT(*) AS v, COUNT(DISTINCT e.blog_id) AS n "
                    "FROM view_events e JOIN blogs b ON b.id = e.blog_id "
                    f"WHERE e.viewed_at >= {self.lo} AND e.viewed_at < {self.hi} GROUP BY 1")
        if self.kind == "blogViews":
            return (f"SELECT {_month_case(self)} AS p, COALESCE(b.country_code, '--') AS k, COUNT(*) AS v, "
                    "COUNT(DISTINCT e.blog_id) AS n FROM view_events e JOIN blogs b ON b.id = e.blog_id "
                    f"WHERE e.viewed_at >= {self.lo} AND e.viewed_at < {self.hi} GROUP BY 1, 2")
        # Local day number = (instant + offset in force) / day; from one day early (the first point's growth).
        lo = midnight_us(self.start - dt.timedelta(days=1), ZoneInfo(self.zone))
        div = "//" if dialect == "duckdb" else "/"  # DuckDB's / is float division
        return (f"SELECT (viewed_at + {_offset_case(self.zone, lo, self.hi)}) {div} {DAY_US} AS day, COUNT(*) "
                f"FROM view_events WHERE viewed_at >= {lo} AND viewed_at < {self.hi} GROUP BY 1")

    def from_raw(self, rows: list[tuple[Any, ...]], blog_keys: dict[int, str]) -> Any:
        """The comparable answer from raw rows: what the GraphQL answer must equal."""
        if self.kind == "top":
            ranked = sorted(((blog_keys[int(b)], int(v)) for b, v in rows), key=lambda kv: (-kv[1], kv[0]))
            return sum(v for _, v in ranked), ranked[:10]
        if self.kind == "blogViewsTotal":
            totals = sorted(((str(k), int(v), int(n)) for k, v, n in rows), key=lambda r: (-r[1], r[0]))
            return len(totals), totals
        if self.kind == "blogViews":
            ordered = sorted(((int(p), str(k), int(v), int(n)) for p, k, v, n in rows),
                             key=lambda r: (r[0], -r[2], r[1]))
            return len(ordered), [(k, v, n) for _, k, v, n in ordered[:1000]]
        by_day = {int(d): int(v) for d, v in rows}
        first = (self.start - dt.date(1970, 1, 1)).days
        return [by_day.get(first + i, 0) for i in range((self.end - self.start).days)]

    def from_gql(self, data: dict[str, Any]) -> Any:
        """The comparable answer from the GraphQL `data`."""
        if self.kind == "top":
            t = data["top"]
            return t["totalViews"], [(n["key"], n["views"]) for n in t["nodes"]]
        if self.kind == "blogViewsTotal":
            bv = data["blogViews"]
            return bv["totalCount"], [(n["key"], n["views"], n["blogCount"]) for n in bv["nodes"]]
        if self.kind == "blogViews":
            bv = data["blogViews"]
            return bv["totalCount"], [(n["key"], n["views"], n["blogCount"]) for n in bv["nodes"]]
        return [p["views"] for p in data["performance"]["points"]]


def _offset_case(zone: str, lo: int, hi: int) -> str:
    segs = offset_segments(ZoneInfo(zone), lo, hi)
    if len(segs) == 1:
        return str(segs[0][1])
    whens = " ".join(f"WHEN viewed_at >= {t} THEN {off}" for t, off in reversed(segs[1:]))
    return f"(CASE {whens} ELSE {segs[0][1]} END)"


def _months_back(d: dt.date, months: int) -> dt.date:
    m = d.year * 12 + d.month - 1 - months
    return dt.date(m // 12, m % 12 + 1, min(d.day, 28))


def _month_case(q: Question) -> str:
    """The month index (0 = the range's first, partial, month) of e.viewed_at, from the local month starts."""
    z = ZoneInfo(q.zone)
    bounds: list[int] = []
    m = q.start.year * 12 + q.start.month  # the first month starting after q.start
    while (d := dt.date(m // 12, m % 12 + 1, 1)) < q.end:
        bounds.append(midnight_us(d, z))
        m += 1
    if not bounds:
        return "0"
    whens = " ".join(f"WHEN e.viewed_at < {b} THEN {i}" for i, b in enumerate(bounds))
    return f"(CASE {whens} ELSE {len(bounds)} END)"


def questions(today: dt.date) -> list[Question]:
    """The fifteen questions (5 kinds x 3 ranges), ranges as whole local dates ending today (exclusive)."""
    out = []
    for span, months in RANGES.items():
        start = _months_back(today, months)
        out += [Question("top", span, "UTC", start, today), Question("blogViews", span, "UTC", start, today),
                Question("blogViewsTotal", span, "UTC", start, today),
                Question("performance", span, "UTC", start, today), Question("performance", span, NY, start, today)]
    return out


# ---------------------------------------------------------------- databases, server, timing


def analyze(db: Database) -> None:
    """Fresh planner statistics after the bulk load and the pass (what autovacuum would do soon after)."""
    with db.engine.connect() as conn:
        if db.sqlite:
            conn.execute(text("ANALYZE"))
            conn.commit()
        else:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))


@contextmanager
def kept_database(url: str) -> Iterator[Database]:
    """An existing database (migrated here), kept afterwards: seed and fold once, measure as often as needed."""
    from analytics_gql.settings import Settings
    from analytics_gql.storage import schema

    db = Database(Settings(database_url=url, statement_timeout_ms=0))
    schema.upgrade(db)
    try:
        yield db
    finally:
        db.dispose()


@dataclass
class Result:
    """Timings (seconds) and answers of one question."""

    q: Question
    cold: float = 0.0  # the first request after the pass: the rollup part is read (cache miss)
    uncached: list[float] = field(default_factory=list)  # a server with ANALYTICS_QUERY_CACHE=false
    tail: list[float] = field(default_factory=list)  # warm, with a live tail of new events above the watermark
    http: list[float] = field(default_factory=list)  # warm: repeated requests (rollup part from the cache)
    sources: list[dict[str, Any]] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    duck: list[float] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)

    @property
    def agree(self) -> str:
        """"ok" when GraphQL, raw SQL and DuckDB gave the same answer."""
        a = self.answers
        if a.get("gql") == a.get("gql-cold") == a.get("raw") == a.get("duck"):
            return "ok"
        return "DIFFER: " + ", ".join(f"{k}={v[:80]}" for k, v in a.items())


def time_one(client: httpx.Client, q: Question) -> tuple[float, Any]:
    """One request, timed (the first one for a question after a pass is the cold one)."""
    t0 = time.perf_counter()
    r = client.post("/graphql", json={"query": q.gql})
    took = time.perf_counter() - t0
    answer = r.json()
    if r.status_code != 200 or "errors" in answer:
        raise RuntimeError(f"{q.name} {q.span}: {r.status_code} {str(answer)[:500]}")
    return took, answer["data"]


def time_http(client: httpx.Client, q: Question, requests: int, warmup: int, budget: float) -> tuple[list[float], Any]:
    """Sequential keep-alive requests: warm-up, then up to `requests` (or `budget` seconds, at least 20)."""
    body = {"query": q.gql}
    answer = None
    for _ in range(warmup):
        r = client.post("/graphql", json=body)
        answer = r.json()
        if r.status_code != 200 or "errors" in answer:
            raise RuntimeError(f"{q.name} {q.span}: {r.status_code} {str(answer)[:500]}")
    times: list[float] = []
    t_end = time.perf_counter() + budget
    while len(times) < requests and (len(times) < 20 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        r = client.post("/graphql", json=body)
        times.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"{q.name} {q.span}: HTTP {r.status_code}")
    return times, answer["data"] if answer else None


def time_calls(fn: Callable[[], Any], runs: int, budget: float) -> tuple[list[float], Any]:
    """One warm-up call (its result is returned), then up to `runs` timed calls (at least 2) within `budget` s."""
    answer = fn()
    times: list[float] = []
    t_end = time.perf_counter() + budget
    while len(times) < runs and (len(times) < 2 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times, answer


def export_to_duckdb(db: Database, workdir: Path) -> duckdb.DuckDBPyConnection:
    """The same raw events and blogs in an in-memory DuckDB (loaded with all threads, queried with one)."""
    path = workdir / "view_events.csv"
    cols = "SELECT blog_id, viewer_country, viewed_at FROM view_events"
    raw = db.engine.raw_connection()
    try:
        with open(path, "w", newline="") as f:
            if db.sqlite:
                cur = raw.cursor()
                cur.execute(cols)
                w = csv.writer(f)
                while batch := cur.fetchmany(100_000):
                    w.writerows(batch)
                cur.close()
            else:
                with raw.cursor() as cur, cur.copy(f"COPY ({cols}) TO STDOUT (FORMAT csv)") as cp:  # type: ignore[attr-defined]
                    for chunk in cp:
                        f.write(bytes(chunk).decode())
        cur2 = raw.cursor()
        cur2.execute("SELECT id, external_id, country_code FROM blogs")
        blogs = list(cur2.fetchall())
        cur2.close()
    finally:
        raw.close()
    con = duckdb.connect()
    con.execute(f"CREATE TABLE view_events AS SELECT * FROM read_csv('{path}', header=false, "
                "columns={'blog_id': 'INTEGER', 'viewer_country': 'VARCHAR', 'viewed_at': 'BIGINT'})")
    con.execute("CREATE TABLE blogs (id INTEGER, external_id VARCHAR, country_code VARCHAR)")
    con.executemany("INSERT INTO blogs VALUES (?, ?, ?)", [tuple(b) for b in blogs])
    con.execute("SET threads=1")
    path.unlink()
    return con


async def concurrent_rps(base: str, q: Question, clients: int, total: int) -> tuple[float, list[float]]:
    """Requests/s with `clients` concurrent keep-alive clients sharing `total` requests (bounded, loopback)."""
    body = {"query": q.gql}
    left = total
    lat: list[float] = []
    errors = 0

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            r = await c.post("/graphql", json=body)
            lat.append(time.perf_counter() - t0)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as c:
        for _ in range(clients):  # warm the connections
            await c.post("/graphql", json=body)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{errors} non-200 answers under load")
    return total / wall, lat


# ---------------------------------------------------------------- one run


def run(kind: str, n: int, a: argparse.Namespace, report: dict[str, Any]) -> None:
    prefix = os.environ.get("ANALYTICS_BENCH_DB_PREFIX", "ag_bench_q")  # helpers sharing a server use their own
    with tempfile.TemporaryDirectory(prefix="bench_query_") as d, \
            (kept_database(a.db_url) if a.db_url else throwaway_database(kind, prefix=prefix)) as db:
        work = Path(d)
        t0 = time.perf_counter()
        fresh = loading.is_empty(db)
        if fresh:  # a kept database (--database-url) is seeded and folded once, then reused as it is
            loading.seed(db, authors=200, blogs=2_000, views=n, days=DAYS, seed=1, progress=False)
        seed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        passed = rollup.catch_up(db, db.settings, progress=False, quiet=True)
        fold_s = time.perf_counter() - t0
        if fresh:
            analyze(db)
        print(f"\n== {kind} {n:,} views: seed {seed_s:.0f} s, rollup {fold_s:.0f} s ({passed.events:,} events)",
              flush=True)
        with db.read() as conn:
            blog_keys = {int(i): str(k) for i, k in conn.execute(text("SELECT id, external_id FROM blogs"))}
            rows = {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar()
                    for t in ("view_events", "views_hour_by_country", "views_day_by_blog", "views_month", "views_year")}
        print("   rows: " + ", ".join(f"{t} {c:,}" for t, c in rows.items()), flush=True)
        today = dt.datetime.now(dt.UTC).date()
        qs = questions(today)
        results = [Result(q) for q in qs]
        url = db.settings.db_url
        log = work.parent / f"bench_query_serve_{kind}.log"
        with server(url, log) as base, httpx.Client(base_url=base, timeout=120) as client:
            floor = time_http(client, Question("floor", "-", "UTC", today, today), a.requests, a.warmup, a.budget)[0]
            print(f"   floor: {{ __typename }} through HTTP p50 {pct(floor, 50) * 1e3:.2f} ms, "
                  f"p99 {pct(floor, 99) * 1e3:.2f} ms", flush=True)
            for r in results:  # cold: each question's first request since the server started (after the pass)
                r.cold, ans = time_one(client, r.q)
                r.answers["gql-cold"] = str(r.q.from_gql(ans))
            for r in results:
                r.http, ans = time_http(client, r.q, a.requests, a.warmup, a.budget)
                r.sources = next(iter(ans.values()))["meta"]["sources"]
                r.answers["gql"] = str(r.q.from_gql(ans))
            rps, lat = asyncio.run(concurrent_rps(base, _top_1y(results).q, 8, a.load))
            if a.tail:
                # New events above the watermark (late ones, viewed yesterday, so every range holds them): the warm
                # rollup parts plus a live tail to read and add.
                last = midnight_us(today, ZoneInfo("UTC")) - 1
                with db.write() as conn:
                    from analytics_gql.storage import ingest
                    ingest.insert_views(conn, [(None, 1 + i % 2000, None, "US" if i % 3 else None, last - i * 1000)
                                               for i in range(a.tail)])
                # Same server (its start-up pass ran long ago; the next is an hour away), so the events stay a tail.
                for r in (r for r in results if r.q.kind == "top"):
                    r.tail, ans = time_http(client, r.q, a.requests, a.warmup, a.budget)
                    tail_rows = {s["source"]: s["rows"] for s in next(iter(ans.values()))["meta"]["sources"]}["tail"]
                    print(f"   {r.q.name} {r.q.span} warm with a {a.tail:,}-event tail ({tail_rows} tail rows): "
                          f"p50 {pct(r.tail, 50) * 1e3:.2f} ms, p99 {pct(r.tail, 99) * 1e3:.2f} ms", flush=True)
                with db.write() as conn:  # the raw baselines below count the same events as the answers above
                    conn.execute(text("DELETE FROM view_events WHERE id > (SELECT watermark FROM rollup_state)"))
        print(f"   top 1y, 8 concurrent clients: {rps:,.0f} requests/s (p50 {pct(lat, 50) * 1e3:.1f} ms, "
              f"p99 {pct(lat, 99) * 1e3:.1f} ms)", flush=True)
        if a.uncached_requests:
            with server(url, log, cache=False) as base, httpx.Client(base_url=base, timeout=120) as client:
                for r in results:
                    r.uncached, _ = time_http(client, r.q, a.uncached_requests, 1, a.budget)
        for r in results:
            def raw(q: Question = r.q) -> list[tuple[Any, ...]]:
                with db.read() as conn:
                    if not db.sqlite:  # PostgreSQL's default for a bare query (the application turns JIT off)
                        conn.execute(text("SET LOCAL jit = on"))
                    return [tuple(x) for x in conn.execute(text(q.raw_sql(db.engine.dialect.name)))]
            r.raw, rows_ = time_calls(raw, a.raw_runs, a.budget)
            r.answers["raw"] = str(r.q.from_raw(rows_, blog_keys))
        duck = export_to_duckdb(db, work)
        for r in results:
            def dq(q: Question = r.q) -> list[tuple[Any, ...]]:
                return duck.execute(q.raw_sql("duckdb")).fetchall()
            r.duck, rows_ = time_calls(dq, 10, a.budget)
            r.answers["duck"] = str(r.q.from_raw(rows_, blog_keys))
        duck.close()
        print_results(kind, n, results, rps)
        report.setdefault("runs", []).append({
            "db": kind, "views": n, "seed_s": seed_s, "rollup_s": fold_s, "rows": rows, "rps_top_1y_8c": rps,
            "floor_p50_ms": pct(floor, 50) * 1e3, "load_p50_ms": pct(lat, 50) * 1e3, "load_p99_ms": pct(lat, 99) * 1e3,
            "questions": [{
                "q": r.q.name, "span": r.q.span, "zone": r.q.zone, "n": len(r.http),
                "cold_ms": r.cold * 1e3,
                "uncached_p50_ms": pct(r.uncached, 50) * 1e3 if r.uncached else None,
                "tail_p50_ms": pct(r.tail, 50) * 1e3 if r.tail else None,
                "tail_p99_ms": pct(r.tail, 99) * 1e3 if r.tail else None,
                "p50_ms": pct(r.http, 50) * 1e3, "p95_ms": pct(r.http, 95) * 1e3, "p99_ms": pct(r.http, 99) * 1e3,
                "raw_ms": statistics.median(r.raw) * 1e3, "duck_ms": statistics.median(r.duck) * 1e3,
                "agree": r.agree, "sources": r.sources} for r in results]})


def _top_1y(results: list[Result]) -> Result:
    return next(r for r in results if r.q.name == "top BLOG" and r.q.span == "1y")


def print_results(kind: str, n: int, results: list[Result], rps: float) -> None:
    print(f"   {'question':24} {'zone':16} {'range':5} {'cold':>8} {'uncached':>9} {'warm p50':>9} {'p95':>8} "
          f"{'p99':>8} {'raw SQL':>9} {'DuckDB':>8} {'raw/warm':>8} {'raw/cold':>8} {'duck/warm':>9} "
          f"{'duck/cold':>9}  answers  plan (source:rows)")
    for r in results:
        p50, raw, dk = pct(r.http, 50), statistics.median(r.raw), statistics.median(r.duck)
        unc = f"{pct(r.uncached, 50) * 1e3:8.1f}ms" if r.uncached else f"{'-':>10}"
        plan = " ".join(f"{s['source']}:{s['rows']}" for s in r.sources)
        print(f"   {r.q.name:24} {r.q.zone:16} {r.q.span:5} {r.cold * 1e3:7.1f}ms {unc} {p50 * 1e3:8.2f}ms "
              f"{pct(r.http, 95) * 1e3:7.2f}ms {pct(r.http, 99) * 1e3:7.2f}ms {raw * 1e3:8.0f}ms {dk * 1e3:7.1f}ms "
              f"{raw / p50:7.0f}x {raw / r.cold:7.1f}x {dk / p50:8.2f}x {dk / r.cold:8.2f}x  {r.agree:8} {plan}")
    for label, value in (("warm p50", lambda r: pct(r.http, 50)), ("cold", lambda r: r.cold),
                         ("uncached p50", lambda r: pct(r.uncached, 50) if r.uncached else float("nan"))):
        print(f"   3y / 1m ({label}): " + ", ".join(
            f"{name} {zone}: {value(by['3y']) / value(by['1m']):.2f}x"
            for (name, zone), by in _by_question(results).items()))
    t = _top_1y(results)
    for label, value in (("warm", lambda r: pct(r.http, 50)), ("cold", lambda r: r.cold)):
        print(f"   targets ({kind}, {n:,}, {label}): 1y raw/p50 >= 100x: "
              + ", ".join(f"{r.q.name}/{r.q.zone} {'yes' if statistics.median(r.raw) / value(r) >= 100 else 'NO'}"
                          for r in results if r.q.span == "1y")
              + "; 1y no slower than DuckDB: "
              + ", ".join(f"{r.q.name}/{r.q.zone} {'yes' if value(r) <= statistics.median(r.duck) else 'NO'}"
                          for r in results if r.q.span == "1y"), flush=True)
    print(f"   top 1y p50 <= 5 ms (warm): {'yes' if pct(t.http, 50) <= 0.005 else 'NO'}"
          f", p99 <= 25 ms: {'yes' if pct(t.http, 99) <= 0.025 else 'NO'}"
          f"; >= 400 req/s: {'yes' if rps >= 400 else 'NO'}", flush=True)


def _by_question(results: list[Result]) -> dict[tuple[str, str], dict[str, Result]]:
    out: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        out.setdefault((r.q.name, r.q.zone), {})[r.q.span] = r
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--requests", type=int, default=200, help="timed requests per question (after warm-up)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--budget", type=float, default=30.0, help="seconds per question before stopping early")
    p.add_argument("--raw-runs", type=int, default=3, help="timed raw SQL runs per question (median)")
    p.add_argument("--load", type=int, default=2_000, help="requests shared by the 8 concurrent clients")
    p.add_argument("--uncached-requests", type=int, default=20,
                   help="timed requests per question on a second server with ANALYTICS_QUERY_CACHE=false (0: skip)")
    p.add_argument("--tail", type=int, default=10_000,
                   help="new events added above the watermark for a warm-with-tail run of `top` (0: skip)")
    p.add_argument("--database-url", help="use (and keep) this database; seeded and folded only when it is empty")
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args()
    kinds = ["sqlite", "postgresql"] if a.db == "both" else [a.db]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "analytics_gql", "migrations"], capture_output=True,
                           text=True).stdout.split("\n")
    print(f"commit {head}{' + uncommitted changes in analytics_gql/migrations' if any(dirty) else ''}; "
          f"reporting zone UTC; DuckDB {duckdb.__version__} threads=1")
    report: dict[str, Any] = {"commit": head, "dirty": [x for x in dirty if x]}
    for n in a.views:
        for kind in kinds:
            run(kind, n, a, report)
            if a.json:
                a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
