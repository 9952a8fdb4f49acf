"""In-process timing of the read path (no HTTP) against a raw GROUP BY in the same run, on an existing database.

Usage: ANALYTICS_DATABASE_URL=... python bench/query_paths.py [--end 2026-11-29] [--repeat 7]
Seed and fold first (analytics-gql seed ... && analytics-gql rollup). Prints p50 per question and range, and for
`top` and the UTC daily series the ratio raw GROUP BY / rollup path measured in the same run (PostgreSQL).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from analytics_gql import reports
from analytics_gql.domain import queries as Q
from analytics_gql.domain.calendar import Granularity
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database


def p50(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of fn() in milliseconds."""
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)


def main() -> None:
    """Run every question over 1 month, 1 year and 3 years."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--end", default=dt.date.today().isoformat())
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    db = Database(Settings())
    end = dt.date.fromisoformat(args.end)

    def spec(days: int, tz: str = "UTC") -> Q.RangeSpec:
        return Q.range_spec((end - dt.timedelta(days=days)).isoformat(), end.isoformat(), tz, "UTC")

    def via(fn: Callable[..., Any], q: Any) -> Callable[[], Any]:
        def run() -> Any:
            with db.read() as c:
                return fn(c, q)
        return run

    def raw(sql: str, s: Q.RangeSpec) -> Callable[[], Any]:
        def run() -> Any:
            with db.read() as c:
                return c.execute(text(sql), {"s": s.start, "e": s.end}).all()
        return run

    raw_top = ("SELECT blog_id, count(*) FROM view_events WHERE viewed_at >= :s AND viewed_at < :e "
               "GROUP BY blog_id ORDER BY 2 DESC LIMIT 10")
    raw_daily = ("SELECT viewed_at / 86400000000, count(*) FROM view_events WHERE viewed_at >= :s AND viewed_at < :e "
                 "GROUP BY 1")
    print(f"database: {db.engine.url.render_as_string(hide_password=True)}")
    for label, days in (("1 month", 30), ("1 year", 365), ("3 years", 1095)):
        top = p50(via(reports.top, Q.TopQuery(Q.Dimension.BLOG, spec(days))), args.repeat)
        top_raw = p50(raw(raw_top, spec(days)), max(3, args.repeat // 2))
        bv = p50(via(reports.blog_views, Q.BlogViewsQuery(Q.Dimension.COUNTRY, spec(days), Granularity.MONTH)),
                 args.repeat)
        perf = p50(via(reports.performance, Q.PerformanceQuery(Granularity.DAY, spec(days))), args.repeat)
        perf_raw = p50(raw(raw_daily, spec(days)), max(3, args.repeat // 2))
        perf_ny = p50(via(reports.performance, Q.PerformanceQuery(Granularity.DAY, spec(days, "America/New_York"))),
                      args.repeat)
        print(f"{label:8s} top {top:6.1f} ms (raw {top_raw:6.1f}, x{top_raw / top:5.1f}) | blogViews country/month "
              f"{bv:6.1f} ms | performance day UTC {perf:6.1f} ms (raw {perf_raw:6.1f}, x{perf_raw / perf:5.1f}) "
              f"| New York {perf_ny:6.1f} ms")


if __name__ == "__main__":
    main()
