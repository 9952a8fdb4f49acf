"""The dashboard at GET /dashboard: a page of our own over POST /graphql, served offline (vendored uPlot).

Everything the page shows comes from one GraphQL document per view (api/static/dashboard/dashboard.js): totals
with their change against the previous period (`top(compare: PREVIOUS_PERIOD)`), the `performance` series beside
the previous period's, top blogs, authors, countries and reader countries with share bars. Its state (range, time
zone, filters) lives in the URL's query string, so a view can be shared; a key typed in is kept in the tab's
sessionStorage only. Same Content-Security-Policy as GraphiQL: no inline script, no other origin.
"""

from __future__ import annotations

import html
from pathlib import Path

import orjson

from analytics_gql.api.graphiql import CONTENT_SECURITY_POLICY

__all__ = ["CONTENT_SECURITY_POLICY", "page"]

# The page, with the config and the <noscript> text put in per request (a file: no Python in the markup).
_TEMPLATE = (Path(__file__).resolve().parent / "templates" / "dashboard.html").read_text(encoding="utf-8")


def page(*, endpoint: str, keys_required: bool, default_zone: str) -> str:
    """The dashboard's HTML for `endpoint` (POST /graphql)."""
    config = {"endpoint": endpoint, "keysRequired": keys_required, "defaultZone": default_zone}
    payload = orjson.dumps(config).decode().replace("</", "<\\/")  # "</" cannot appear inside a <script> block
    noscript = html.escape("The dashboard needs JavaScript; clients can POST to " + endpoint)
    return _TEMPLATE.replace("__CONFIG__", payload).replace("__NOSCRIPT__", noscript)
