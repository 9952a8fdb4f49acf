"""`blogsCreated` of performance points: blogs created in each window that can have matching views.

Depends only on the dimension tables, so the stable part is cached per dimensions version; windows ending at "now"
are cut as for views and their last sub-hour piece is counted live.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from analytics_gql.domain import filters as F
from analytics_gql.domain.planning import TAIL, Plan, Run
from analytics_gql.storage.read_context import ReadContext, cache_of, cut_windows, plan_for, sql_allowed
from analytics_gql.storage.read_sql import blogs_created_sql


def blogs_created(conn: Connection, windows: list[tuple[int, int]], f: F.Filter,
                  ctx: ReadContext | None = None) -> dict[int, int]:
    """Blogs created in each window that can have matching views (the filter holds for some reader country).

    Depends only on the dimension tables: with a context, cached per dimensions version.
    """
    blog_filter = F.blog_level(f)
    if blog_filter == F.FALSE:
        return {}
    # Windows ending at "now" are cut as for views (split_moving): the part before the cut is cached, the rest
    # (blogs created in under an hour) is counted live.
    stable, moving = cut_windows(windows)
    runs = plan_for(stable, None).runs.get(TAIL, [])
    out: dict[int, int] = {}
    if runs:
        sql, params = blogs_created_sql(runs, blog_filter)
        cache = cache_of(conn) if ctx is not None and ctx.dimensions_version is not None else None
        key = (sql, tuple(sorted(params.values.items())), "dimensions", ctx.dimensions_version if ctx else None)
        found = cache.get(key) if cache is not None else None
        if found is not None:
            out = found
        else:
            sql_allowed(conn)
            out = {int(i): int(n) for i, n in conn.execute(text(sql), params.values)}
            if cache is not None:
                cache.put(key, out, len(out))
    if moving:
        live = Plan(watermark=0)
        for i, lo, hi in moving:
            live.add(Run(TAIL, lo, hi, i, hi - lo))
        sql, params = blogs_created_sql(live.runs[TAIL], blog_filter)
        sql_allowed(conn)
        out = dict(out)  # the cached dict is shared: never changed
        for i, n in conn.execute(text(sql), params.values):
            out[int(i)] = out.get(int(i), 0) + int(n)
    return out
