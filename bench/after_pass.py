"""Benchmark: the first answer after a rollup pass, reusing the cached part vs reading it again (same run).

    .venv/bin/python bench/after_pass.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/DB
    .venv/bin/python bench/after_pass.py --views 1000000 --db postgresql      # a throw-away database

A pass moves the watermark, so the cached rollup part of every question was read at an older watermark. Each
round: warm every question up, record `--events` new views spread over the last 300 days (late events touch old
buckets), run a pass, then time the first request of each question and (after the background re-reads settled)
the next one. Rounds alternate between reuse on (`REUSE_TAIL` as shipped: the old part plus the events above its
watermark as tail) and reuse off (`REUSE_TAIL = 0`: the part is read again, what every request after a pass paid
before), so both see the same machine load. In process (httpx over ASGI: no sockets), answers checked equal.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import sys
import time
from contextlib import ExitStack
from typing import Any

import httpx
from databases import throwaway_database
from sqlalchemy import text

from analytics_gql import loading, rollup
from analytics_gql.api.app import create_app
from analytics_gql.settings import Settings
from analytics_gql.storage import parts as P
from analytics_gql.storage.engine import Database

END = dt.datetime.now(dt.UTC).date()  # the seed ends now
QUESTIONS = {
    "top BLOG 1 year": "{ top(dimension: BLOG, range: {start: \"%s\", end: \"%s\"}) { totalViews nodes { key views "
                       "blogCount } } }",
    "blogViews COUNTRY MONTH 1 year": "{ blogViews(groupBy: COUNTRY, granularity: MONTH, range: {start: \"%s\", "
                                      "end: \"%s\"}, first: 1000) { totalCount nodes { key periodStart views "
                                      "blogCount } } }",
    "performance DAY 1 year": "{ performance(granularity: DAY, range: {start: \"%s\", end: \"%s\"}) { points { "
                              "periodStart views growth } } }",
}
SHIPPED = P.REUSE_TAIL


def doc(template: str) -> str:
    return template % ((END - dt.timedelta(days=365)).isoformat(), END.isoformat())


async def ask(client: httpx.AsyncClient, query: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = await client.post("/graphql", json={"query": query})
    elapsed = time.perf_counter() - t0
    body = r.json()
    assert r.status_code == 200 and not body.get("errors"), body
    return elapsed, body["data"]


async def measure(db: Database, settings: Settings, events: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    with db.read() as conn:
        blogs = [r[0] for r in conn.execute(text("SELECT external_id FROM blogs ORDER BY id LIMIT 500"))]
    app = create_app(settings, db)
    out: dict[str, dict[str, list[float]]] = {k: {"reuse first": [], "reuse next": [], "re-read first": [],
                                                  "re-read next": []} for k in QUESTIONS}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            for rnd in range(2 * rounds):
                reuse = rnd % 2 == 0
                P.REUSE_TAIL = SHIPPED if reuse else 0
                for template in QUESTIONS.values():
                    for _ in range(3):
                        await ask(client, doc(template))
                rng = random.Random(rnd)
                base = dt.datetime.combine(END, dt.time(), dt.UTC)
                loading.ingest_records(db, "views", [
                    {"blogId": rng.choice(blogs),
                     "viewedAt": (base - dt.timedelta(seconds=rng.randrange(300 * 86_400))).isoformat()}
                    for _ in range(events)])
                rollup.catch_up(db, settings, progress=False, quiet=True)
                label = "reuse" if reuse else "re-read"
                for name, template in QUESTIONS.items():
                    first, a = await ask(client, doc(template))
                    db.settle()
                    nxt, b = await ask(client, doc(template))
                    assert a == b, name  # same data, whichever part served it
                    out[name][f"{label} first"].append(first)
                    out[name][f"{label} next"].append(nxt)
    P.REUSE_TAIL = SHIPPED
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", help="a seeded database to use (and keep); else a throw-away one is seeded")
    p.add_argument("--views", type=int, default=1_000_000, help="views to seed into a throw-away database")
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    p.add_argument("--events", type=int, default=1_000, help="new views per pass")
    p.add_argument("--rounds", type=int, default=5, help="rounds per mode (reuse on / off, alternating)")
    a = p.parse_args()
    with ExitStack() as stack:
        if a.db_url:
            settings = Settings(database_url=a.db_url, rollup_interval=3600)
            db = Database(settings)
            stack.callback(db.dispose)
        else:
            db = stack.enter_context(throwaway_database(a.db, prefix="ag_bench_after"))
            settings = Settings(database_url=db.settings.db_url, rollup_interval=3600)
            t0 = time.perf_counter()
            loading.seed(db, authors=200, blogs=2_000, views=a.views, days=3 * 366 + 40, seed=1, progress=False)
            rollup.catch_up(db, settings, progress=False, quiet=True)
            print(f"seeded and folded {a.views:,} views in {time.perf_counter() - t0:.0f} s", flush=True)
        print(f"{os.uname().nodename}; load {os.getloadavg()[0]:.1f}; {a.events:,} new views per pass, "
              f"{a.rounds} rounds per mode; REUSE_TAIL {SHIPPED:,}")
        res = asyncio.run(measure(db, settings, a.events, a.rounds))
    print(f"{'question':32} {'reuse first':>12} {'re-read first':>14} {'ratio':>6} {'reuse next':>11} "
          f"{'re-read next':>13}   (median ms)")
    for name, cols in res.items():
        med = {k: statistics.median(v) * 1e3 for k, v in cols.items()}
        print(f"{name:32} {med['reuse first']:12.1f} {med['re-read first']:14.1f} "
              f"{med['re-read first'] / med['reuse first']:5.1f}x {med['reuse next']:11.1f} "
              f"{med['re-read next']:13.1f}")


if __name__ == "__main__":
    sys.exit(main())
