"""The dashboard at GET /dashboard: a page of our own over POST /graphql, served offline (vendored uPlot).

Everything the page shows comes from one GraphQL document per view (api/static/dashboard/dashboard.js): totals
with their change against the previous period (`top(compare: PREVIOUS_PERIOD)`), the `performance` series beside
the previous period's, top blogs, authors, countries and reader countries with share bars. Its state (range, time
zone, filters) lives in the URL's query string, so a view can be shared; a key typed in is kept in the tab's
sessionStorage only. Same Content-Security-Policy as GraphiQL: no inline script, no other origin.
"""

from __future__ import annotations

import html

import orjson

from analytics_gql.api.graphiql import CONTENT_SECURITY_POLICY

__all__ = ["CONTENT_SECURITY_POLICY", "page"]


def page(*, endpoint: str, keys_required: bool, default_zone: str) -> str:
    """The dashboard's HTML for `endpoint` (POST /graphql)."""
    config = {"endpoint": endpoint, "keysRequired": keys_required, "defaultZone": default_zone}
    payload = orjson.dumps(config).decode().replace("</", "<\\/")  # "</" cannot appear inside a <script> block
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>analytics-gql · dashboard</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/static/dashboard/uPlot.min.css">
  <link rel="stylesheet" href="/static/dashboard/dashboard.css">
</head>
<body>
  <header>
    <h1>analytics-gql</h1>
    <form id="controls" autocomplete="off">
      <fieldset class="ranges" aria-label="range">
        <label><input type="radio" name="range" value="24h"> 24 h</label>
        <label><input type="radio" name="range" value="7d"> 7 d</label>
        <label><input type="radio" name="range" value="30d" checked> 30 d</label>
        <label><input type="radio" name="range" value="12m"> 12 months</label>
        <label><input type="radio" name="range" value="custom"> custom</label>
      </fieldset>
      <span class="custom">
        <label>from <input type="date" name="start"></label>
        <label>to <input type="date" name="end"></label>
      </span>
      <label>time zone <input type="text" name="tz" list="zones" size="16" spellcheck="false"></label>
      <details class="filters">
        <summary>filters</summary>
        <label>blogs <input type="text" name="blog" placeholder="ids, comma separated" spellcheck="false"></label>
        <label>authors <input type="text" name="author" placeholder="ids" spellcheck="false"></label>
        <label>blog countries <input type="text" name="country" placeholder="e.g. KE,ET" spellcheck="false"></label>
        <label>reader countries <input type="text" name="viewerCountry" placeholder="e.g. US,DE"
          spellcheck="false"></label>
      </details>
      <label class="key" hidden>API key <input type="password" name="key" autocomplete="off"></label>
      <button type="submit">show</button>
    </form>
  </header>
  <main>
    <p id="status" role="status">Loading…</p>
    <section class="totals" aria-label="totals">
      <div class="total" id="total-views"><h2>Views</h2><p class="value">–</p><p class="change"></p></div>
      <div class="total" id="total-readers"><h2>Readers</h2><p class="value">–</p><p class="change"></p></div>
      <div class="total" id="total-created"><h2>Blogs created</h2><p class="value">–</p><p class="change"></p></div>
    </section>
    <section class="chart-box" aria-label="views over time">
      <h2>Views over time <span class="legend"></span></h2>
      <div id="chart"></div>
    </section>
    <section class="tops">
      <div class="top" id="top-BLOG"><h2>Top blogs</h2><ol></ol></div>
      <div class="top" id="top-AUTHOR"><h2>Top authors</h2><ol></ol></div>
      <div class="top" id="top-COUNTRY"><h2>Blog countries</h2><ol></ol></div>
      <div class="top" id="top-VIEWER_COUNTRY"><h2>Reader countries</h2><ol></ol></div>
    </section>
    <p class="meta" id="meta"></p>
  </main>
  <datalist id="zones"></datalist>
  <script id="dashboard-config" type="application/json">{payload}</script>
  <script src="/static/dashboard/uPlot.iife.min.js"></script>
  <script src="/static/dashboard/dashboard.js"></script>
  <noscript>{html.escape("The dashboard needs JavaScript; clients can POST to " + endpoint)}</noscript>
</body>
</html>
"""
