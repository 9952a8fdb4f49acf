"""The dashboard in headless Chromium (Debian's chromium and chromedriver, through Selenium) against a live `serve`
with API keys and known data (issue 14, acceptance 3).

The page asks for a key, keeps it for the tab, shows totals and top rows equal to the API's answers (and to
counts made here from the loaded data), updates when the range or a filter changes (the URL follows), draws its
chart, stays within a phone's width, and never requests anything from another origin: other hosts do not resolve
for this browser, and the page's own resource timings name only the server. Skips locally without chromium or
chromedriver, fails under CI=true.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import missing_service
from test_graphiql_browser import cli, free_port, stop, wait_healthy, write_ndjson

READ_KEY = "dash-read-key"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
# Two blog countries; views in Feb 2025 (a fixed custom range) and in the last days (the relative presets).
BLOGS = [("b1", "Kenya Notes", "a1", "KE"), ("b2", "Berlin Diary", "a2", "DE"), ("b3", "Nairobi Eats", "a1", "KE")]
FEB = [("b1", "US", 2, 10), ("b2", "DE", 5, 4), ("b3", "KE", 20, 6), ("b1", "IN", 27, 3)]  # blog, reader, day, n
JAN = [("b2", "DE", 15, 2)]  # the previous period of Feb 1-28 is Jan 4-31
RECENT = [("b3", "US", 1, 7), ("b2", "KE", 3, 5), ("b1", "DE", 12, 2)]  # blog, reader, hours ago... x n


def browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists()
                                              else None)
    if not chromium or not driver:
        missing_service("chromium and chromedriver (apt-get install -y chromium chromium-driver)")
    assert chromium and driver
    return chromium, driver


def views_records() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for blog, reader, day, n in FEB:
        out += [{"eventId": f"f-{blog}-{day}-{i}", "blogId": blog, "viewerCountry": reader,
                 "viewerId": f"{reader}-{i % 3}", "viewedAt": f"2025-02-{day:02d}T{10 + i % 10:02d}:00:00Z"}
                for i in range(n)]
    for blog, reader, day, n in JAN:
        out += [{"eventId": f"j-{blog}-{day}-{i}", "blogId": blog, "viewerCountry": reader,
                 "viewerId": f"{reader}-{i % 3}", "viewedAt": f"2025-01-{day:02d}T12:00:00Z"} for i in range(n)]
    for blog, reader, hours, n in RECENT:
        out += [{"eventId": f"r-{blog}-{hours}-{i}", "blogId": blog, "viewerCountry": reader,
                 "viewedAt": (NOW - dt.timedelta(hours=hours, minutes=i)).isoformat()} for i in range(n)]
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    browser_paths()
    tmp = tmp_path_factory.mktemp("dashboard")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env |= {"ANALYTICS_DATABASE_URL": f"sqlite:///{tmp / 'dash.db'}", "ANALYTICS_API_KEYS": f"{READ_KEY}:read",
            "ANALYTICS_TIMEZONE": "UTC"}
    run = {"cwd": tmp, "env": env, "check": True, "capture_output": True, "timeout": 120}
    subprocess.run([*cli(), "migrate"], **run)  # type: ignore[call-overload]
    write_ndjson(tmp / "authors.ndjson", [{"id": "a1", "name": "Amina", "country": "KE"},
                                          {"id": "a2", "name": "Bernd", "country": "DE"}])
    write_ndjson(tmp / "blogs.ndjson", [{"id": b, "title": t, "authorId": a, "country": c,
                                         "createdAt": "2025-01-02T00:00:00Z"} for b, t, a, c in BLOGS])
    write_ndjson(tmp / "views.ndjson", views_records())
    for kind in ("authors", "blogs", "views"):
        subprocess.run([*cli(), "import", kind, str(tmp / f"{kind}.ndjson"), "--no-progress"],  # type: ignore[call-overload]
                       **run)
    subprocess.run([*cli(), "rollup"], **run)  # type: ignore[call-overload]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*cli(), "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(base, proc)
        yield base
    finally:
        stop(proc)
        log.close()


def make_driver(width: int, height: int, *, mobile: bool = False) -> Any:
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for a driver online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-extensions", f"--window-size={width},{height}",
                 # Nothing but the server resolves: a request to any other host fails instead of leaving.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    if mobile:
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0}})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    d = make_driver(1280, 1500)
    try:
        yield d
    finally:
        d.quit()


def answers(d: Any) -> int:
    """How many views the page has shown or refused since it loaded."""
    return int(d.execute_script("return document.body.dataset.answers || '0'"))


def settle(d: Any, seen: int = 0, seconds: float = 30) -> str:
    """Wait until the page has settled more than `seen` answers; the body's state."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(d) > seen:
            return str(d.execute_script("return document.body.dataset.state"))
        time.sleep(0.1)
    raise AssertionError(f"the dashboard did not settle: {d.find_element('id', 'status').text!r}")


def ask(base: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{base}/graphql", json={"query": query, "variables": variables},
                   headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=30)
    body = r.json()
    assert r.status_code == 200 and not body.get("errors"), body
    return body["data"]  # type: ignore[no-any-return]


TOPS = """query($r: TimeRange!, $f: ViewFilter, $tz: String, $g: Granularity!) {
  BLOG: top(dimension: BLOG, range: $r, filter: $f, timeZone: $tz, limit: 10, compare: PREVIOUS_PERIOD) { ...T }
  AUTHOR: top(dimension: AUTHOR, range: $r, filter: $f, timeZone: $tz, limit: 10) { ...T }
  COUNTRY: top(dimension: COUNTRY, range: $r, filter: $f, timeZone: $tz, limit: 10) { ...T }
  VIEWER_COUNTRY: top(dimension: VIEWER_COUNTRY, range: $r, filter: $f, timeZone: $tz, limit: 10) { ...T }
  series: performance(granularity: $g, range: $r, filter: $f, timeZone: $tz) { points { views } } }
fragment T on TopResult { totalViews totalReaders nodes { key views readers } comparison { start end totalViews } }"""
PREVIOUS_READERS = """query($r: TimeRange!, $f: ViewFilter, $tz: String) {
  top(dimension: BLOG, range: $r, filter: $f, timeZone: $tz) { totalReaders } }"""


def shown(d: Any) -> dict[str, Any]:
    """What the page shows: totals, each top list's (key, views) and the chart's state."""
    return d.execute_script("""
      const tops = {};
      for (const dim of ["BLOG", "AUTHOR", "COUNTRY", "VIEWER_COUNTRY"]) {
        tops[dim] = [...document.querySelectorAll(`#top-${dim} li[data-key]`)].map(
          li => [li.dataset.key, Number(li.dataset.views), Number(li.dataset.readers)]);
      }
      const views = document.getElementById("total-views");
      const readers = document.getElementById("total-readers");
      const chart = document.getElementById("chart");
      return {views: Number(views.dataset.value), previous: Number(views.dataset.previous),
              readers: Number(readers.dataset.value), previousReaders: Number(readers.dataset.previous),
              text: views.innerText, tops, points: Number(chart.dataset.points), ink: Number(chart.dataset.ink),
              question: JSON.parse(document.body.dataset.question), search: location.search,
              resources: performance.getEntriesByType("resource").map(e => e.name).concat([location.href]),
              overflow: document.documentElement.scrollWidth - window.innerWidth};""")


def agrees_with_api(base: str, page: dict[str, Any]) -> dict[str, Any]:
    """The page's numbers equal the API's answer to the very question the page sent."""
    data = ask(base, TOPS, page["question"])
    assert page["views"] == data["BLOG"]["totalViews"]
    assert page["previous"] == data["BLOG"]["comparison"]["totalViews"]
    assert page["readers"] == data["BLOG"]["totalReaders"]
    c = data["BLOG"]["comparison"]
    before = ask(base, PREVIOUS_READERS, {"r": {"start": c["start"], "end": c["end"]}, "f": page["question"]["f"],
                                          "tz": page["question"]["tz"]})
    assert page["previousReaders"] == before["top"]["totalReaders"]
    for dim in ("BLOG", "AUTHOR", "COUNTRY", "VIEWER_COUNTRY"):
        assert page["tops"][dim] == [[n["key"], n["views"], n["readers"]] for n in data[dim]["nodes"]], dim
    assert page["points"] == len(data["series"]["points"])
    return data


def type_into(d: Any, name: str, text: str) -> None:
    field = d.find_element("name", name)
    field.clear()
    field.send_keys(text)


@pytest.mark.timeout(300)
def test_dashboard_shows_the_apis_answers_and_follows_range_and_filters(server: str, browser: Any) -> None:
    d = browser
    d.get(f"{server}/dashboard?range=custom&start=2025-02-01&end=2025-02-28&tz=UTC")
    assert settle(d) == "error"  # keys are configured: the page asks for one
    assert "UNAUTHENTICATED" in d.find_element("id", "status").text
    assert d.find_element("name", "key").is_displayed()
    type_into(d, "key", READ_KEY)
    d.find_element("css selector", "button[type=submit]").click()
    assert settle(d, 1) == "ready"

    page = shown(d)
    feb = sum(n for *_x, n in FEB)
    assert (page["views"], page["previous"]) == (feb, sum(n for *_x, n in JAN))  # counted here, not asked
    assert "+" in page["text"] and f"{feb}" in page["text"]
    by_blog = Counter[str]()
    for blog, _reader, _day, n in FEB:
        by_blog[blog] += n
    readers = {"b1": 6, "b2": 3, "b3": 3}  # viewerIds "<country>-<i % 3>": three per (blog, reader country)
    assert page["tops"]["BLOG"] == [[b, n, readers[b]]
                                    for b, n in sorted(by_blog.items(), key=lambda p: (-p[1], p[0]))]
    assert page["tops"]["COUNTRY"] == [["KE", 19, 9], ["DE", 4, 3]]
    assert (page["readers"], page["previousReaders"]) == (12, 2)  # Feb: 4 x 3 ids; Jan: DE-0, DE-1
    assert page["question"]["r"] == {"start": "2025-02-01", "end": "2025-03-01"}  # the last day is included
    assert page["points"] == 28 and page["ink"] > 1_000  # one point a day, and the canvas is painted
    agrees_with_api(server, page)

    # A filter: reader countries US and IN only; the URL follows.
    d.find_element("css selector", "details.filters summary").click()
    type_into(d, "viewerCountry", "us, in")
    d.find_element("css selector", "button[type=submit]").click()
    assert settle(d, 2) == "ready"
    page = shown(d)
    assert page["views"] == 13 and "viewerCountry=us%2C+in" in page["search"]
    assert page["tops"]["VIEWER_COUNTRY"] == [["US", 10, 3], ["IN", 3, 3]]
    agrees_with_api(server, page)

    # A relative range: the last 7 days (ends now, millisecond precision), the filter cleared.
    type_into(d, "viewerCountry", "")
    d.find_element("css selector", "button[type=submit]").click()
    assert settle(d, 3) == "ready"
    d.find_element("css selector", "input[name=range][value='7d']").find_element("xpath", "..").click()
    assert settle(d, 4) == "ready"
    page = shown(d)
    assert page["views"] == sum(n for *_x, n in RECENT) and page["search"].startswith("?range=7d")
    assert page["question"]["g"] == "HOUR" and page["points"] in (168, 169)
    assert page["ink"] > 1_000
    agrees_with_api(server, page)

    # The key stays for the tab: a reload (a shared URL opened again) answers without asking.
    d.refresh()
    assert settle(d) == "ready"
    assert shown(d)["views"] == sum(n for *_x, n in RECENT)

    resources = shown(d)["resources"]
    assert resources and all(url.startswith(server + "/") for url in resources), resources
    console = [e for e in d.get_log("browser") if e["level"] == "SEVERE"
               and "401" not in e["message"]]  # the first, keyless request is refused on purpose
    assert not console, console


@pytest.mark.timeout(180)
def test_dashboard_fits_a_phone_and_serves_under_the_csp(server: str) -> None:
    d = make_driver(390, 844, mobile=True)
    try:
        d.get(f"{server}/dashboard?range=custom&start=2025-02-01&end=2025-02-28&tz=UTC")
        settle(d)
        d.execute_script("sessionStorage.setItem('analytics-gql.dashboard.key', arguments[0])", READ_KEY)
        d.refresh()
        assert settle(d) == "ready"
        page = shown(d)
        assert page["views"] == sum(n for *_x, n in FEB)
        assert page["overflow"] <= 0, "the page is wider than the phone's screen"
        assert page["ink"] > 500
    finally:
        d.quit()
    r = httpx.get(f"{server}/dashboard")
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert "<script>" not in r.text  # no inline script: only the JSON config block and our files
    for asset in ("/static/dashboard/dashboard.js", "/static/dashboard/uPlot.iife.min.js",
                  "/static/dashboard/dashboard.css", "/static/dashboard/LICENSE.uplot"):
        assert httpx.get(server + asset).status_code == 200, asset
