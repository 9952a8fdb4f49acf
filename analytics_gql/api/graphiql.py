"""The GraphiQL page (vendored assets, served offline) and its saved example queries."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Inline scripts are not allowed: the config travels in a JSON <script> block that the browser never executes.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class Example:
    """A saved query shown as a GraphiQL tab."""

    name: str
    query: str
    variables: dict[str, Any] | None = None


def _last_30_days(today: date) -> dict[str, str]:
    return {"start": (today - timedelta(days=30)).isoformat(), "end": today.isoformat()}


# (name, query, variables from today's date): ranges are relative to the day the page is served.
_EXAMPLES: list[tuple[str, str, Callable[[date], dict[str, str]] | None]] = [
        ("top-blogs", """\
# The ten most viewed blogs over all the data, with each one's share of all views.
query TopBlogs {
  top(dimension: BLOG, limit: 10) {
    totalViews
    otherViews
    nodes { rank key label views blogCount share }
    meta { asOf watermark }
  }
}
""", None),
        ("views-by-country-monthly", """\
# Views per reader country and month over the last year (one page of 20 rows; pass endCursor as `after`).
query ViewsByCountryMonthly($start: DateTime!) {
  blogViews(groupBy: VIEWER_COUNTRY, granularity: MONTH, range: {start: $start}, first: 20) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { key label periodLabel blogCount views }
    meta { asOf watermark }
  }
}
""", lambda t: {"start": (t - timedelta(days=365)).isoformat()}),
        ("daily-performance", """\
# A dense daily series for the last 30 days in New York time, with growth against the day before.
query DailyPerformance($start: DateTime!, $end: DateTime!) {
  performance(granularity: DAY, range: {start: $start, end: $end}, timeZone: "America/New_York") {
    points { label views blogsCreated growth partial }
    meta { asOf watermark }
  }
}
""", _last_30_days),
        ("top-blogs-vs-previous-period", """\
# The top blogs of the last 30 days against the 30 days before: previousViews and change (percent) per row.
query TopBlogsVsPreviousPeriod($start: DateTime!, $end: DateTime!) {
  top(dimension: BLOG, limit: 10, range: {start: $start, end: $end}, compare: PREVIOUS_PERIOD) {
    totalViews
    nodes { rank key label views previousViews change }
    comparison { start end totalViews }
  }
}
""", _last_30_days),
        ("top-blogs-by-readers", """\
# The blogs with the most distinct readers over the last 30 days (exact), with all readers of the range together
# (totalReaders is not a sum of rows: one reader of two blogs counts once).
query TopBlogsByReaders($start: DateTime!, $end: DateTime!) {
  top(dimension: BLOG, limit: 10, orderBy: READERS, range: {start: $start, end: $end}) {
    totalViews
    totalReaders
    nodes { rank key label views readers }
  }
}
""", _last_30_days),
        ("top-authors-filtered", """\
# Top authors by views from readers in the US or the UK, excluding blogs based in the US.
query TopAuthorsFiltered {
  top(
    dimension: AUTHOR
    limit: 5
    filter: {viewerCountry: {in: ["US", "GB"]}, not: {country: {eq: "US"}}}
  ) {
    totalViews
    nodes { rank key label views share }
  }
}
""", None),
        ("rollup-status", """\
# How far the rollups have folded in the raw events, and what each grain holds.
query RollupStatus {
  rollupStatus {
    watermark
    pendingEvents
    lastRunAt
    grains { grain rows oldest newest retainedFor }
  }
}
""", None),
]


def examples(today: date | None = None) -> list[Example]:
    """The saved example queries; ranges are relative to `today` so they always cover recent data."""
    day = today or datetime.now(UTC).date()
    return [Example(name, query, variables(day) if variables else None) for name, query, variables in _EXAMPLES]


def page(*, endpoint: str, keys_required: bool, today: date | None = None) -> str:
    """The GraphiQL HTML page for `endpoint`."""
    config = {
        "endpoint": endpoint,
        "examples": [
            {"name": e.name, "query": e.query,
             "variables": orjson.dumps(e.variables, option=orjson.OPT_INDENT_2).decode() if e.variables else None}
            for e in examples(today)
        ],
        # With keys configured, the headers tab shows where the key goes (never a real key).
        "headers": '{"X-API-Key": "paste your key here"}' if keys_required else None,
    }
    # "</" cannot appear inside a <script> block; JSON allows escaping it.
    payload = orjson.dumps(config).decode().replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>analytics-gql · GraphiQL</title>
  <link rel="stylesheet" href="/static/graphiql/graphiql.min.css">
  <style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script id="graphiql-config" type="application/json">{payload}</script>
  <script src="/static/graphiql/react.production.min.js"></script>
  <script src="/static/graphiql/react-dom.production.min.js"></script>
  <script src="/static/graphiql/graphiql.min.js"></script>
  <script src="/static/graphiql/init.js"></script>
  <noscript>{html.escape("GraphiQL needs JavaScript; clients can POST to " + endpoint)}</noscript>
</body>
</html>
"""
