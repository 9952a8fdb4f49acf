"""Benchmark: the cost of `compare` (issue 14, acceptance 4): each question with and without it, same run.

    .venv/bin/python bench/compare.py                     # 1M views, SQLite and PostgreSQL
    .venv/bin/python bench/compare.py --views 10000000 --db postgresql

Per database: `migrate`, `seed --views N` (200 authors, 2,000 blogs, 400 days back) and `rollup` through the CLI,
as a user would (no manual ANALYZE: the commands keep the planner statistics themselves), then one `serve`
(127.0.0.1, a free port, no pass during the run). For each question, requests alternate A (without `compare`) and
B (the same with `compare`) on one keep-alive connection, every request with its range computed afresh from now at
millisecond precision (what a dashboard sends); after a warm-up, the p50 of each and the ratio B/A are printed
against the target (<= 2x). Exactness, checked in the run: B's `comparison.totalViews` equals the views of A's
question asked over B's comparison range, and B's rows' views equal A's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from serving import CLI, pct, server
from sqlalchemy import create_engine, text

PG_ADMIN = os.environ.get("ANALYTICS_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TARGET = 2.0


@dataclass(frozen=True)
class Question:
    """A field's document with `{compare}` where the argument goes; `days` back from now."""

    name: str
    field: str
    doc: str
    days: int
    compare: str = "PREVIOUS_PERIOD"


QUESTIONS = [
    Question("top(BLOG) 30 d", "top", "{{ top(dimension: BLOG, limit: 10, range: {r}{c}) {{ totalViews nodes {{ key "
             "views{p} }}{i} }} }}", 30),
    Question("top(COUNTRY) 365 d", "top", "{{ top(dimension: COUNTRY, limit: 10, range: {r}{c}) {{ totalViews "
             "nodes {{ key views{p} }}{i} }} }}", 365),
    Question("top(AUTHOR) 7 d, prev. year", "top", "{{ top(dimension: AUTHOR, limit: 10, range: {r}{c}) {{ "
             "totalViews nodes {{ key views{p} }}{i} }} }}", 7, "PREVIOUS_YEAR"),
    Question("blogViews(BLOG) 90 d, 100 rows", "blogViews", "{{ blogViews(groupBy: BLOG, first: 100, range: {r}{c}) "
             "{{ totalCount nodes {{ key views{p} }}{i} }} }}", 90),
    Question("blogViews(VIEWER_COUNTRY) 365 d", "blogViews", "{{ blogViews(groupBy: VIEWER_COUNTRY, range: {r}{c}) "
             "{{ totalCount nodes {{ key views{p} }}{i} }} }}", 365),
]


def document(q: Question, *, compare: bool, start: str, end: str) -> str:
    return q.doc.format(r=f'{{start: "{start}", end: "{end}"}}', c=f", compare: {q.compare}" if compare else "",
                        p=" previousViews change" if compare else "",
                        i=" comparison { start end totalViews }" if compare else "")


def now_range(days: int) -> tuple[str, str]:
    end = dt.datetime.now(dt.UTC)
    return (end - dt.timedelta(days=days)).isoformat(timespec="milliseconds"), end.isoformat(timespec="milliseconds")


def ask(client: httpx.Client, doc: str) -> dict[str, Any]:
    r = client.post("/graphql", json={"query": doc})
    body = r.json()
    if r.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"{r.status_code} {str(body)[:500]}")
    return body["data"]  # type: ignore[no-any-return]


def check(client: httpx.Client, q: Question) -> None:
    """B's rows are A's rows; B's comparison total is A's question over B's comparison range."""
    start, end = now_range(q.days)
    a = ask(client, document(q, compare=False, start=start, end=end))[q.field]
    b = ask(client, document(q, compare=True, start=start, end=end))[q.field]
    if [(n["key"], n["views"]) for n in a["nodes"]] != [(n["key"], n["views"]) for n in b["nodes"]]:
        raise AssertionError(f"{q.name}: rows differ with compare")
    cmp = b["comparison"]
    before = ask(client, document(q, compare=False, start=cmp["start"], end=cmp["end"]))[q.field]
    total = before["totalViews"] if q.field == "top" else sum(n["views"] for n in before["nodes"])
    if q.field == "top" and total != cmp["totalViews"]:
        raise AssertionError(f"{q.name}: comparison total {cmp['totalViews']} != {total}")
    if q.field == "blogViews" and before["totalCount"] <= len(before["nodes"]) and total != cmp["totalViews"]:
        raise AssertionError(f"{q.name}: comparison total {cmp['totalViews']} != {total}")


def timed(client: httpx.Client, fn: Callable[[], str]) -> float:
    doc = fn()
    t0 = time.perf_counter()
    r = client.post("/graphql", json={"query": doc})
    took = time.perf_counter() - t0
    if r.status_code != 200 or b'"errors"' in r.content:
        raise RuntimeError(r.text[:500])
    return took


def measure(base: str, requests: int, warmup: int) -> list[tuple[Question, float, float, float, float]]:
    rows = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for q in QUESTIONS:
            check(client, q)

            def a(q: Question = q) -> str:
                return document(q, compare=False, start=(r := now_range(q.days))[0], end=r[1])

            def b(q: Question = q) -> str:
                return document(q, compare=True, start=(r := now_range(q.days))[0], end=r[1])

            for _ in range(warmup):
                timed(client, a)
                timed(client, b)
            ta: list[float] = []
            tb: list[float] = []
            for i in range(requests):  # ABBA: neither side always goes first
                if i % 2:
                    ta.append(timed(client, a))
                    tb.append(timed(client, b))
                else:
                    tb.append(timed(client, b))
                    ta.append(timed(client, a))
            rows.append((q, statistics.median(ta) * 1000, statistics.median(tb) * 1000, pct(ta, 99) * 1000,
                         pct(tb, 99) * 1000))
    return rows


def prepare(url: str, views: int, log: Path) -> None:
    env = {**os.environ, "ANALYTICS_DATABASE_URL": url, "ANALYTICS_TIMEZONE": "UTC"}
    env.pop("ANALYTICS_API_KEYS", None)
    env.pop("ANALYTICS_REDIS_URL", None)
    with open(log, "ab") as out:
        for args in (["migrate"], ["seed", "--authors", "200", "--blogs", "2000", "--views", str(views), "--days",
                                   "400", "--seed", "7"], ["rollup"]):
            subprocess.run([CLI, *args], env=env, stdout=out, stderr=subprocess.STDOUT, check=True)


def run(kind: str, views: int, a: argparse.Namespace) -> bool:
    work = Path(tempfile.mkdtemp(prefix="ag-compare-"))
    log = work / "log.txt"
    admin = None
    name = None
    if kind == "sqlite":
        url = f"sqlite:///{work / 'compare.db'}"
    else:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"ag_bench_compare_{uuid.uuid4().hex[:8]}"
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        t0 = time.perf_counter()
        prepare(url, views, log)
        print(f"\n{kind}, {views:,} views: migrate + seed + rollup in {time.perf_counter() - t0:.0f} s; "
              f"load {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
        with server(url, log) as base:
            rows = measure(base, a.requests, a.warmup)
    finally:
        if admin is not None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print(f"  {'question':34} {'A p50':>8} {'B p50':>8} {'B/A':>6} {'A p99':>8} {'B p99':>8}  target B/A <= {TARGET}")
    ok = True
    for q, pa, pb, qa, qb in rows:
        ratio = pb / pa
        ok &= ratio <= TARGET
        print(f"  {q.name:34} {pa:7.2f}  {pb:7.2f}  {ratio:5.2f}x {qa:7.2f}  {qb:7.2f}  "
              f"{'yes' if ratio <= TARGET else 'NO'}  ({q.compare})")
    print("  (ms; A without compare, B with it, alternating on one keep-alive connection; answers checked)")
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, default=1_000_000)
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--requests", type=int, default=200, help="timed requests of each of A and B per question")
    p.add_argument("--warmup", type=int, default=10)
    a = p.parse_args()
    kinds = ["sqlite", "postgresql"] if a.db == "both" else [a.db]
    ok = all([run(k, a.views, a) for k in kinds])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
