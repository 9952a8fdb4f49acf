"""Benchmark: what a BI dashboard sends, against one `analytics-gql serve` under live ingest, answers checked exactly.

    .venv/bin/python bench/traffic.py                                   # SQLite, 1,000,000 views, default phases
    .venv/bin/python bench/traffic.py --db postgresql --json /tmp/t.json  # PostgreSQL, 10,000,000 views
    .venv/bin/python bench/traffic.py --reuse-url sqlite:////tmp/t.db   # built there once (kept), reused after
    .venv/bin/python bench/traffic.py --smoke --json /tmp/t.json        # tiny: tests/api/test_bench_traffic.py

The database is made with the CLI only: `analytics-gql migrate`, `seed` (200 authors, 2,000 blogs, 400 days,
views/10 viewers), `rollup`; no manual ANALYZE (the project analyses itself). PostgreSQL: a throw-away database
created and dropped here (ANALYTICS_BENCH_PG_URL, as bench/databases.py). One `analytics-gql serve` (one uvicorn
worker, 127.0.0.1, a free port, an API key with ingest and read scopes, in-process passes every
--rollup-interval s). The mix, a seeded random choice per request: `top(BLOG)`, `top(AUTHOR)`,
`blogViews(COUNTRY, MONTH)`, `performance(DAY)` over the last 24 h, 7 d, 30 d or 365 d in UTC, America/New_York,
Asia/Kolkata or Australia/Lord_Howe, without a filter (half) or with a blog country or author filter. Relative
mix: start and end computed per request from the clock (milliseconds, the zone's offset); fixed mix: the same
questions ending at the whole hour before the phase started, so the server's cache can reuse them.
Phases: a cold sweep (every question shape of the mix once, relative: what a cold cache pays; --no-sweep skips
it), a short warm-up; (1) one client, relative; (2) N keep-alive clients, relative; a cold sweep of the fixed
mix's questions (ranges computed once, before it); (3) N clients, fixed; in
2 and 3 another client posts ~1,000 views/s to /ingest/views (NDJSON, viewedAt now, blogs, viewers and their
countries sampled from the stored events, 10% new one-time visitors). Each client is a process with one
`http.client` keep-alive connection and a pre-serialised body per request (client CPU is reported beside the
server's). Then, with ingest stopped (unfolded events included), a sample of the questions sent is asked again as
sent and compared, every row and value, with answers the bench computes itself in SQL over `view_events`.
Exit status 1 on any error or mismatch; the acceptance lines (issue targets) are printed with YES/NO.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from databases import PG_ADMIN
from serving import serve
from sqlalchemy import Connection, Engine, create_engine, text

CLI = str(Path(sys.executable).with_name("analytics-gql"))
KEY = "bench-traffic"  # ANALYTICS_API_KEYS=bench-traffic:ingest,read
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
ONE_US = dt.timedelta(microseconds=1)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
SPANS = {"24h": DAY_US, "7d": 7 * DAY_US, "30d": 30 * DAY_US, "365d": 365 * DAY_US}
ZONES = {z: ZoneInfo(z) for z in ("UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")}
_V = "$r: TimeRange!, $f: ViewFilter, $tz: String"
_ARGS = "range: $r, filter: $f, timeZone: $tz"
_TOP = "{ totalViews otherViews nodes { rank key label views blogCount share } } }"
KINDS = {
    "top BLOG": f"query TopBlogs({_V}) {{ top(dimension: BLOG, {_ARGS}, limit: 10) {_TOP}",
    "top AUTHOR": f"query TopAuthors({_V}) {{ top(dimension: AUTHOR, {_ARGS}, limit: 10) {_TOP}",
    "blogViews COUNTRY MONTH": f"query ByCountry({_V}) {{ blogViews(groupBy: COUNTRY, granularity: MONTH, {_ARGS}, "
                               "first: 1000) { totalCount nodes { key label periodStart periodLabel blogCount views } "
                               "} }",
    "performance DAY": f"query Series({_V}) {{ performance(granularity: DAY, {_ARGS}) "
                       "{ points { periodStart periodEnd label views blogsCreated growth partial } } }",
}
NAMES = list(KINDS)
PREFIX = [json.dumps({"query": doc})[:-1] for doc in KINDS.values()]  # '{"query": "..."' (no closing brace)
WARM = b'{"query": "{ __typename }"}'
FROM = "view_events e JOIN blogs b ON b.id = e.blog_id JOIN authors a ON a.id = b.author_id"
FILTER_COLUMNS = {"country": "b.country_code", "author": "a.external_id"}


def iso(u: int, zone: ZoneInfo) -> str:
    """An instant (microseconds) as ISO 8601 with milliseconds and the zone's offset."""
    return (EPOCH + dt.timedelta(microseconds=u)).astimezone(zone).isoformat(timespec="milliseconds")


def instant(s: str) -> int:
    return (dt.datetime.fromisoformat(s.replace("Z", "+00:00")) - EPOCH) // ONE_US


def now_ms_us() -> int:
    """Now, in microseconds, truncated to the millisecond."""
    return time.time_ns() // 1_000_000 * 1000


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (as bench/query.py); NaN when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


# ---------------------------------------------------------------- the questions


def body(kind: int, start: str, end: str, zone: str, filt: str) -> bytes:
    """The pre-serialised POST /graphql body (document per kind, range / zone / filter as variables)."""
    return (f'{PREFIX[kind]}, "variables": {{"r": {{"start": "{start}", "end": "{end}"}}, "tz": "{zone}", '
            f'"f": {filt}}}}}').encode()


def fixed_ranges(now: int) -> dict[tuple[str, str], tuple[str, str]]:
    """The fixed mix's ranges: ending at the last whole hour before `now` (computed once, before its sweep)."""
    end = now // HOUR_US * HOUR_US
    return {(s, z): (iso(end - span, zi), iso(end, zi)) for s, span in SPANS.items() for z, zi in ZONES.items()}


def pick(rng: random.Random, filters: list[str], zones: list[str],
         fixed: dict[tuple[str, str], tuple[str, str]] | None) -> tuple[int, bytes]:
    """One question: kind, span, zone and filter drawn from `rng`; range relative to now unless `fixed`."""
    kind = rng.randrange(len(NAMES))
    span = rng.choice(list(SPANS))
    zone = rng.choice(zones)
    filt = "null" if rng.random() < 0.5 else rng.choice(filters)
    if fixed is not None:
        start, end = fixed[(span, zone)]
    else:
        now = now_ms_us()
        start, end = iso(now - SPANS[span], ZONES[zone]), iso(now, ZONES[zone])
    return kind, body(kind, start, end, zone, filt)


# ---------------------------------------------------------------- clients (one process each)


@dataclass
class ClientCfg:
    cid: int
    port: int
    phase: str
    seed: int
    filters: list[str]
    zones: list[str]
    fixed: dict[tuple[str, str], tuple[str, str]] | None
    t_start: float  # wall clock (time.time(): the same in every process)
    t_end: float
    samples: int  # bodies kept (reservoir) for the exactness check


@dataclass
class Records:
    """What one query client measured: per request kind, send time, latency (s), HTTP status, error flag."""

    phase: str
    kinds: list[int] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    bad: list[bool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few error answers
    samples: list[tuple[int, bytes]] = field(default_factory=list)
    cpu: float = 0.0


def _sleep_until(t: float) -> None:
    while (d := t - time.time()) > 0:
        time.sleep(min(d, 0.05))


def _post(conn: http.client.HTTPConnection, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn.request("POST", path, body=data, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def query_client(cfg: ClientCfg, out: Any) -> None:
    """Back-to-back keep-alive requests of the mix from t_start to t_end; the Records go to `out`."""
    rng = random.Random(f"{cfg.seed}:{cfg.phase}:{cfg.cid}")
    conn = http.client.HTTPConnection("127.0.0.1", cfg.port, timeout=120)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    rec = Records(cfg.phase)
    _sleep_until(cfg.t_start - 0.3)
    _post(conn, "/graphql", WARM, headers)  # the connection is open and warm when the phase starts
    _sleep_until(cfg.t_start)
    while (t := time.time()) < cfg.t_end:
        kind, data = pick(rng, cfg.filters, cfg.zones, cfg.fixed)
        t0 = time.perf_counter()
        try:
            status, resp = _post(conn, "/graphql", data, headers)
        except (OSError, http.client.HTTPException) as e:
            status, resp = 0, repr(e).encode()
            conn.close()  # reconnects on the next request
        lat = time.perf_counter() - t0
        bad = status != 200 or b'"errors":' in resp  # a key "errors" (a label's quotes would be escaped)
        rec.kinds.append(kind)
        rec.sent.append(t)
        rec.lat.append(lat)
        rec.status.append(status)
        rec.bad.append(bad)
        if bad and len(rec.errors) < 5:
            rec.errors.append(f"{NAMES[kind]} HTTP {status}: {resp[:300]!r} <- {data[-300:]!r}")
        n = len(rec.lat)  # reservoir sample of the bodies sent
        if len(rec.samples) < cfg.samples:
            rec.samples.append((kind, data))
        elif (j := rng.randrange(n)) < cfg.samples:
            rec.samples[j] = (kind, data)
    conn.close()
    rec.cpu = sum(os.times()[:2])
    out.put(rec)


@dataclass
class IngestCfg:
    port: int
    phase: str
    seed: int
    run: str  # makes eventIds unique across runs on one database
    pool: list[tuple[str, str | None, str | None]]  # (blogId, viewerId, viewerCountry) of stored events
    rate: float  # views per second
    batch: int  # views per POST
    t_start: float
    t_end: float


@dataclass
class IngestStats:
    phase: str
    batches: int = 0
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0  # HTTP != 200 or no answer
    lat: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    last: float = 0.0  # wall clock of the last answer
    cpu: float = 0.0


def _ndjson(cfg: IngestCfg, rng: random.Random, first: int, now: int) -> bytes:
    lines = []
    when = iso(now, ZONES["UTC"])
    for n in range(first, first + cfg.batch):
        blog, viewer, country = rng.choice(cfg.pool)
        if rng.random() < 0.1:  # a one-time visitor
            viewer = f"tv-{cfg.run}-{cfg.phase}-{n}"
        view: dict[str, Any] = {"eventId": f"te-{cfg.run}-{cfg.phase}-{n}", "blogId": blog, "viewedAt": when}
        if viewer is not None:
            view["viewerId"] = viewer
        if country is not None:
            view["viewerCountry"] = country
        lines.append(json.dumps(view))
    return ("\n".join(lines) + "\n").encode()


def ingest_client(cfg: IngestCfg, out: Any) -> None:
    """POST /ingest/views: `batch` views every batch/rate s (late batches go at once), viewedAt = now."""
    rng = random.Random(f"{cfg.seed}:ingest:{cfg.phase}")
    conn = http.client.HTTPConnection("127.0.0.1", cfg.port, timeout=120)
    headers = {"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {KEY}"}
    st = IngestStats(cfg.phase)
    step = cfg.batch / cfg.rate
    _sleep_until(cfg.t_start)
    while (due := cfg.t_start + st.batches * step) < cfg.t_end:
        _sleep_until(due)
        data = _ndjson(cfg, rng, st.sent, now_ms_us())
        t0 = time.perf_counter()
        try:
            status, resp = _post(conn, "/ingest/views", data, headers)
        except (OSError, http.client.HTTPException) as e:
            status, resp = 0, repr(e).encode()
            conn.close()
        st.lat.append(time.perf_counter() - t0)
        st.last = time.time()
        st.batches += 1
        st.sent += cfg.batch
        if status == 200:
            answer = json.loads(resp)
            st.accepted += answer["accepted"]
            st.duplicates += answer["duplicates"]
            st.rejected += answer["rejected"]
        else:
            st.failed += 1
            if len(st.errors) < 5:
                st.errors.append(f"HTTP {status}: {resp[:300]!r}")
    conn.close()
    st.cpu = sum(os.times()[:2])
    out.put(st)


# ---------------------------------------------------------------- a phase


@dataclass
class Ctx:
    """What every phase needs: the server, the database (read by the bench), the choices of the mix."""

    args: argparse.Namespace
    url: str
    engine: Engine
    port: int
    pid: int
    run: str
    filters: list[str]
    pool: list[tuple[str, str | None, str | None]]
    samples: list[tuple[str, int, bytes]] = field(default_factory=list)  # (phase, kind, body)


class PassWatch:
    """Polls rollup_state (twice a second, from the bench's own connection) for the passes the server runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.passes: dict[int, tuple[int, int]] = {}  # started (µs) -> (ms, events)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            with self.engine.connect() as c:
                row = c.execute(text("SELECT last_run_at, last_run_ms, last_run_events FROM rollup_state")).first()
            if row is not None and row[0] is not None:
                self.passes[int(row[0])] = (int(row[1]), int(row[2]))

    def __enter__(self) -> PassWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(ctx: Ctx, name: str, clients: int, seconds: float, *, fixed: dict[tuple[str, str], tuple[str, str]]
              | None, ingest: float) -> dict[str, Any]:
    """Run one phase (query clients, and an ingest client when `ingest` > 0); its figures. `fixed`: the fixed
    mix's ranges (None: relative to each request's clock)."""
    a = ctx.args
    fork = mp.get_context("fork")
    out = fork.Queue()
    t_start = time.time() + 1.0
    t_end = t_start + seconds
    procs = [fork.Process(target=query_client, args=(ClientCfg(
        c, ctx.port, name, a.seed, ctx.filters, a.zones, fixed, t_start, t_end, a.exact_sample), out))
             for c in range(clients)]
    if ingest > 0:
        cfg = IngestCfg(ctx.port, name, a.seed, ctx.run, ctx.pool, ingest, a.ingest_batch, t_start, t_end)
        procs.append(fork.Process(target=ingest_client, args=(cfg, out)))
    cpu0 = server_cpu(ctx.pid)
    for p in procs:
        p.start()
    with PassWatch(ctx.engine) as watch:
        got = [out.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join()
    cpu = server_cpu(ctx.pid) - cpu0
    recs = [r for r in got if isinstance(r, Records)]
    ing = next((r for r in got if isinstance(r, IngestStats)), None)
    ctx.samples += [(name, k, b) for r in recs for k, b in r.samples]
    passes = [(s, ms, ev) for s, (ms, ev) in sorted(watch.passes.items()) if s >= t_start * 1e6 - 1e6]
    res = summarise(recs, t_start, passes)
    res.update(name=name, clients=clients, seconds=seconds, fixed=fixed is not None, server_cpu_s=cpu,
               client_cpu_s=sum(r.cpu for r in recs), passes=[{"started": iso(s, ZONES["UTC"]), "ms": ms,
                                                               "events": ev} for s, ms, ev in passes])
    if ing is not None:
        wall = max(ing.last - t_start, 1e-9)
        res["ingest"] = {"batches": ing.batches, "sent": ing.sent, "accepted": ing.accepted,
                         "duplicates": ing.duplicates, "rejected": ing.rejected, "failed": ing.failed,
                         "rate": ing.accepted / wall, "p50_ms": pct(ing.lat, 50) * 1e3,
                         "p99_ms": pct(ing.lat, 99) * 1e3, "errors": ing.errors, "client_cpu_s": ing.cpu}
    print_phase(res)
    return res


def sweep(ctx: Ctx, fixed: dict[tuple[str, str], tuple[str, str]] | None) -> dict[str, Any]:
    """Every question shape of the mix (kind x span x zone x filter) asked once (relative to now, or the `fixed`
    ranges), one connection: what a cold cache pays before it holds the mix (the phases measure the steady state)."""
    conn = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=300)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    rec = Records("sweep")
    cpu0, t_start = server_cpu(ctx.pid), time.time()
    for kind in range(len(NAMES)):
        for span, length in SPANS.items():
            for zone in ctx.args.zones:
                for filt in ["null", *ctx.filters]:
                    now = now_ms_us()
                    start, end = fixed[(span, zone)] if fixed else (iso(now - length, ZONES[zone]),
                                                                      iso(now, ZONES[zone]))
                    data = body(kind, start, end, zone, filt)
                    sent, t0 = time.time(), time.perf_counter()
                    status, resp = _post(conn, "/graphql", data, headers)
                    bad = status != 200 or b'"errors":' in resp
                    rec.kinds.append(kind)
                    rec.sent.append(sent)
                    rec.lat.append(time.perf_counter() - t0)
                    rec.status.append(status)
                    rec.bad.append(bad)
                    if bad and len(rec.errors) < 5:
                        rec.errors.append(f"{NAMES[kind]} {span} {zone} {filt} HTTP {status}: {resp[:200]!r}")
    conn.close()
    res = summarise([rec], t_start, [])
    res.update(name=f"cold sweep, {'fixed' if fixed else 'relative'} (every question shape once)", clients=1,
               seconds=res["wall_s"], fixed=fixed is not None,
               server_cpu_s=server_cpu(ctx.pid) - cpu0, client_cpu_s=0.0, passes=[])
    res["slowest_ms"] = [round(x * 1e3) for x in sorted(rec.lat, reverse=True)[:5]]
    print_phase(res)
    return res


def summarise(recs: list[Records], t_start: float, passes: list[tuple[int, int, int]]) -> dict[str, Any]:
    """p50/p99 per kind and overall, requests/s, errors; latencies of requests overlapping a pass apart."""
    rows = [(k, s, lat, st, bad) for r in recs for k, s, lat, st, bad in zip(r.kinds, r.sent, r.lat, r.status,
                                                                           r.bad, strict=True)]
    lats = [x[2] for x in rows]
    wall = max((s + lat for _, s, lat, _, _ in rows), default=t_start) - t_start
    spans = [(st / 1e6, st / 1e6 + ms / 1e3) for st, ms, _ in passes]
    during = [lat for _, s, lat, _, _ in rows if any(s < b and s + lat > a for a, b in spans)]
    kinds = {NAMES[i]: [x[2] for x in rows if x[0] == i] for i in range(len(NAMES))}
    return {
        "requests": len(rows), "wall_s": wall, "rps": len(rows) / wall if wall > 0 else 0.0,
        "p50_ms": pct(lats, 50) * 1e3, "p99_ms": pct(lats, 99) * 1e3, "max_ms": max(lats, default=0.0) * 1e3,
        "kinds": {k: {"n": len(v), "p50_ms": pct(v, 50) * 1e3, "p99_ms": pct(v, 99) * 1e3} for k, v in kinds.items()},
        "errors": sum(x[4] for x in rows), "statuses": sorted({x[3] for x in rows}),
        "error_samples": [e for r in recs for e in r.errors][:5],
        "during_pass": {"n": len(during), "p50_ms": pct(during, 50) * 1e3, "p99_ms": pct(during, 99) * 1e3},
    }


def print_phase(r: dict[str, Any]) -> None:
    print(f"\n== {r['name']}: {r['clients']} client(s), {'fixed' if r['fixed'] else 'relative'} mix, "
          f"{r['seconds']:.0f} s: {r['requests']:,} requests, {r['rps']:,.0f} requests/s, p50 {r['p50_ms']:.2f} ms, "
          f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.0f} ms, errors {r['errors']}", flush=True)
    for k, v in r["kinds"].items():
        print(f"   {k:24} n {v['n']:6,}  p50 {v['p50_ms']:7.2f} ms  p99 {v['p99_ms']:7.2f} ms")
    cores = r["wall_s"] or 1
    print(f"   CPU: server {r['server_cpu_s']:.1f} s ({r['server_cpu_s'] / cores:.2f} cores), query clients "
          f"{r['client_cpu_s']:.1f} s ({r['client_cpu_s'] / cores:.2f} cores)")
    if r["passes"]:
        d = r["during_pass"]
        print("   passes: " + ", ".join(f"{p['started'][11:19]} {p['events']:,} events {p['ms']} ms"
                                       for p in r["passes"])
              + f"; requests overlapping a pass: {d['n']:,}, p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms")
    if (i := r.get("ingest")) is not None:
        print(f"   ingest: {i['accepted']:,} accepted of {i['sent']:,} sent ({i['rate']:,.0f} views/s), "
              f"{i['duplicates']} duplicates, {i['rejected']} rejected, {i['failed']} failed batches; POST p50 "
              f"{i['p50_ms']:.1f} ms, p99 {i['p99_ms']:.1f} ms; client CPU {i['client_cpu_s']:.1f} s")
        for e in i["errors"]:
            print(f"   ingest error: {e}")
    for e in r["error_samples"]:
        print(f"   error: {e}")


# ---------------------------------------------------------------- exact answers from raw SQL


def midnight(d: dt.date, zone: ZoneInfo) -> int:
    """The instant local date `d` starts in `zone` (datetime(D, tzinfo=zone), the contract's definition)."""
    return (dt.datetime(d.year, d.month, d.day, tzinfo=zone) - EPOCH) // ONE_US


def local_date(u: int, zone: ZoneInfo) -> dt.date:
    return (EPOCH + dt.timedelta(microseconds=u)).astimezone(zone).date()


def _offset(u: int, zone: ZoneInfo) -> int:
    off = (EPOCH + dt.timedelta(microseconds=u)).astimezone(zone).utcoffset()
    assert off is not None
    return off // ONE_US


def offset_sql(zone: ZoneInfo, lo: int, hi: int) -> str:
    """The UTC offset in force at e.viewed_at, for lo <= viewed_at < hi: transitions found by probing every
    6 hours and bisecting to the microsecond (zoneinfo only, none of the project's calendar code)."""
    segs = [(lo, _offset(lo, zone))]
    t = lo
    while t < hi:
        nxt = min(t + 6 * HOUR_US, hi)
        if _offset(nxt, zone) != segs[-1][1]:
            a, b = t, nxt  # the offset changes in (a, b]
            while b - a > 1:
                m = (a + b) // 2
                a, b = (m, b) if _offset(m, zone) == segs[-1][1] else (a, m)
            segs.append((b, _offset(b, zone)))
        t = nxt
    if len(segs) == 1:
        return str(segs[0][1])
    whens = " ".join(f"WHEN e.viewed_at >= {s} THEN {o}" for s, o in reversed(segs[1:]))
    return f"(CASE {whens} ELSE {segs[0][1]} END)"


class Raw:
    """The mix's answers as GROUP BYs over view_events (+ blogs, authors, countries), composed in Python."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.countries = {str(c): str(n) for c, n in conn.execute(text("SELECT code, name FROM countries"))}

    def _where(self, f: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        if not f:
            return "", {}
        ((attr, spec),) = f.items()
        return f" AND {FILTER_COLUMNS[attr]} = :fv", {"fv": spec["eq"]}

    def _rows(self, select: str, lo: int, hi: int, f: dict[str, Any] | None, group: str) -> list[Any]:
        w, params = self._where(f)
        sql = f"SELECT {select} FROM {FROM} WHERE e.viewed_at >= :lo AND e.viewed_at < :hi{w}{group}"
        return list(self.conn.execute(text(sql), {"lo": lo, "hi": hi, **params}))

    def top(self, dim: str, lo: int, hi: int, f: dict[str, Any] | None) -> Any:
        key = {"BLOG": "b.external_id, b.title", "AUTHOR": "a.external_id, a.name"}[dim]
        rows = self._rows(f"{key}, COUNT(*), COUNT(DISTINCT e.blog_id)", lo, hi, f, f" GROUP BY {key}")
        ranked = sorted(((str(k), str(lab), int(v), int(n)) for k, lab, v, n in rows), key=lambda r: (-r[2], r[0]))
        total = sum(r[2] for r in ranked)
        shown = ranked[:10]
        return total, total - sum(r[2] for r in shown), [(i + 1, k, lab, v, n, v / total)
                                                         for i, (k, lab, v, n) in enumerate(shown)]

    def blog_views(self, lo: int, hi: int, zone: ZoneInfo, f: dict[str, Any] | None) -> Any:
        d = local_date(lo, zone)
        months = [(d.year, d.month)]
        while midnight(dt.date(*_next_month(*months[-1]), 1), zone) < hi:
            months.append(_next_month(*months[-1]))
        starts = [midnight(dt.date(y, m, 1), zone) for y, m in months]
        whens = " ".join(f"WHEN e.viewed_at < {s} THEN {i}" for i, s in enumerate(starts[1:]))
        case = f"(CASE {whens} ELSE {len(starts) - 1} END)" if len(starts) > 1 else "0"
        rows = self._rows(f"{case}, b.country_code, COUNT(*), COUNT(DISTINCT e.blog_id)", lo, hi, f,
                          " GROUP BY 1, 2")
        ordered = sorted(((int(p), str(c) if c is not None else "--", int(v), int(n)) for p, c, v, n in rows),
                         key=lambda r: (r[0], -r[2], r[1]))
        return len(ordered), [(starts[p], f"{months[p][0]:04d}-{months[p][1]:02d}", c,
                               self.countries[c] if c != "--" else "Unknown", n, v) for p, c, v, n in ordered[:1000]]

    def _count(self, a: int, b: int, f: dict[str, Any] | None) -> int:
        return int(self._rows("COUNT(*)", a, b, f, "")[0][0])

    def performance(self, lo: int, hi: int, zone: ZoneInfo, f: dict[str, Any] | None) -> Any:
        days, d = [], local_date(lo, zone)
        while d <= local_date(hi, zone):
            if midnight(d, zone) < hi and midnight(d + dt.timedelta(days=1), zone) > lo:
                days.append(d)
            d += dt.timedelta(days=1)
        one = dt.timedelta(days=1)
        h_lo, h_hi = midnight(days[0] - one, zone), midnight(days[-1] + one, zone)
        hist = {EPOCH.date() + dt.timedelta(days=int(n)): int(v) for n, v in self._rows(
            f"(e.viewed_at + {offset_sql(zone, h_lo, h_hi)}) / {DAY_US}, COUNT(*)", h_lo, h_hi, f, " GROUP BY 1")}

        def window(a: int, b: int, day: dt.date) -> int:  # a whole local day from the histogram, else a COUNT
            whole = (a, b) == (midnight(day, zone), midnight(day + one, zone))
            return hist.get(day, 0) if whole else self._count(a, b, f)

        w, params = self._where(f)
        created = sorted(int(c) for (c,) in self.conn.execute(text(
            f"SELECT b.created_at FROM blogs b JOIN authors a ON a.id = b.author_id WHERE 1 = 1{w}"), params))
        points = []
        for day in days:
            ps, pe, prev = midnight(day, zone), midnight(day + one, zone), midnight(day - one, zone)
            a, b = max(ps, lo), min(pe, hi)
            n = window(a, b, day)
            pa, pb = prev + (a - ps), min(prev + (b - ps), ps)
            before = window(pa, pb, day - one) if pa < pb else 0
            growth = None if before == 0 else round((n - before) / before * 100, 2)
            c = bisect.bisect_left(created, b) - bisect.bisect_left(created, a)
            points.append((ps, pe, f"{day.isoformat()} ({c} {'blog' if c == 1 else 'blogs'})", n, c, growth,
                           (a, b) != (ps, pe)))
        return points

    def answer(self, kind: str, variables: dict[str, Any]) -> Any:
        lo, hi = instant(variables["r"]["start"]), instant(variables["r"]["end"])
        zone, f = ZoneInfo(variables["tz"]), variables["f"]
        if kind.startswith("top "):
            return self.top(kind.split()[1], lo, hi, f)
        if kind.startswith("blogViews"):
            return self.blog_views(lo, hi, zone, f)
        return self.performance(lo, hi, zone, f)


def _next_month(y: int, m: int) -> tuple[int, int]:
    return (y + 1, 1) if m == 12 else (y, m + 1)


def from_gql(kind: str, data: dict[str, Any]) -> Any:
    """The GraphQL answer in Raw's shape (instants as microseconds)."""
    if kind.startswith("top "):
        t = data["top"]
        return t["totalViews"], t["otherViews"], [(n["rank"], n["key"], n["label"], n["views"], n["blogCount"],
                                                   n["share"]) for n in t["nodes"]]
    if kind.startswith("blogViews"):
        bv = data["blogViews"]
        return bv["totalCount"], [(instant(n["periodStart"]), n["periodLabel"], n["key"], n["label"],
                                   n["blogCount"], n["views"]) for n in bv["nodes"]]
    return [(instant(p["periodStart"]), instant(p["periodEnd"]), p["label"], p["views"], p["blogsCreated"],
             p["growth"], p["partial"]) for p in data["performance"]["points"]]


def _first_difference(got: Any, want: Any) -> str:
    if isinstance(got, list | tuple) and isinstance(want, list | tuple):
        if len(got) != len(want):
            return f"length {len(got)} != {len(want)}; " + _first_difference(list(got)[:len(want)],
                                                                               list(want)[:len(got)])
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if g != w:
                return f"[{i}] " + _first_difference(g, w)
        return "equal"
    return f"got {got!r}, want {want!r}"


def exactness(ctx: Ctx, n: int) -> dict[str, Any]:
    """Ask `n` of the questions sent (spread over the phases) again, as sent; compare with Raw's answers."""
    rng = random.Random(ctx.args.seed)
    phases = sorted({p for p, _, _ in ctx.samples})
    chosen: list[tuple[str, int, bytes]] = []
    for i, ph in enumerate(phases):
        pool = [s for s in ctx.samples if s[0] == ph]
        chosen += rng.sample(pool, min(len(pool), n // len(phases) + (i < n % len(phases))))
    with ctx.engine.connect() as c:
        pending = c.execute(text("SELECT (SELECT COUNT(*) FROM view_events WHERE id > "
                                 "(SELECT watermark FROM rollup_state))")).scalar()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    matched, errored, failures = 0, 0, []
    t0 = time.perf_counter()
    for ph, kind, data in chosen:
        # A connection per question: the raw SQL between two can outlast uvicorn's 5 s keep-alive.
        conn = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=300)
        status, resp = _post(conn, "/graphql", data, headers)
        conn.close()
        answer = json.loads(resp)
        variables = json.loads(data)["variables"]
        with ctx.engine.connect() as c:
            want = Raw(c).answer(NAMES[kind], variables)
        got = from_gql(NAMES[kind], answer["data"]) if status == 200 and "errors" not in answer else answer
        if got == want:
            matched += 1
            continue
        failed = got is answer  # no answer to compare (HTTP error or GraphQL errors), rather than a wrong one
        errored += failed
        diff = json.dumps(answer)[:300] if failed else _first_difference(got, want)[:400]
        failures.append(f"{'(error) ' if failed else '(different answer) '}{ph} {NAMES[kind]} "
                        f"{json.dumps(variables)}: {diff}")
    return {"asked": len(chosen), "matched": matched, "errored": errored, "mismatches": failures,
            "pending_events": int(pending or 0), "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------- database and server


def _cli(url: str, *argv: str, timeout: float = 7200) -> float:
    """Run one `analytics-gql` command on `url`; seconds taken."""
    env = {**os.environ, "ANALYTICS_DATABASE_URL": url, "ANALYTICS_TIMEZONE": "UTC",
           "ANALYTICS_STATEMENT_TIMEOUT_MS": "0"}
    for k in ("ANALYTICS_API_KEYS", "ANALYTICS_REDIS_URL", "ANALYTICS_RETENTION"):
        env.pop(k, None)
    t0 = time.perf_counter()
    p = subprocess.run([CLI, *argv], env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"analytics-gql {' '.join(argv)}: exit {p.returncode}\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return time.perf_counter() - t0


def build(url: str, views: int, seed: int) -> dict[str, float]:
    """migrate, seed, rollup through the CLI (no manual ANALYZE); seconds per step."""
    out = {"migrate_s": _cli(url, "migrate")}
    out["seed_s"] = _cli(url, "seed", "--authors", "200", "--blogs", "2000", "--views", str(views), "--days", "400",
                         "--viewers", str(max(1000, views // 10)), "--seed", str(seed))
    out["rollup_s"] = _cli(url, "rollup")
    return out


def _has_views(url: str) -> bool:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return bool(c.execute(text("SELECT EXISTS (SELECT 1 FROM view_events)")).scalar())
    except Exception:  # noqa: BLE001 - not migrated (or no such table): build it
        return False
    finally:
        eng.dispose()


@contextmanager
def database(a: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any]]]:
    """The database URL and how it was built: --reuse-url (built there when empty, kept), else a throw-away one."""
    if a.reuse_url:
        if _has_views(a.reuse_url):
            yield a.reuse_url, {"reused": True}
        else:
            yield a.reuse_url, {"reused": False, **build(a.reuse_url, a.views, a.seed)}
        return
    if a.db == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench_traffic_") as d:
            url = f"sqlite:///{d}/traffic.db"
            yield url, build(url, a.views, a.seed)
        return
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"{os.environ.get('ANALYTICS_BENCH_DB_PREFIX', 'ag_bench')}_traffic_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
        yield url, build(url, a.views, a.seed)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def server(url: str, interval: int, log: Path) -> Iterator[tuple[int, int]]:
    """`analytics-gql serve` (bench/serving.serve: one worker) with in-process passes every `interval` s and one API
    key; yields (port, pid)."""
    unset = ("ANALYTICS_REDIS_URL", "ANALYTICS_RETENTION", "ANALYTICS_RATE_LIMIT", "ANALYTICS_QUERY_CACHE")
    env: dict[str, str | None] = {"ANALYTICS_ROLLUP_INTERVAL": str(interval),
                                  "ANALYTICS_API_KEYS": f"{KEY}:ingest,read", **dict.fromkeys(unset)}
    with serve(url, log, env, probe="/readyz") as (port, proc):
        yield port, proc.pid


def wait_caught_up(engine: Engine, timeout: float = 600) -> float:
    """Wait until the server's passes have folded every stored event (a reused database may hold a tail)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with engine.connect() as c:
            if c.execute(text("SELECT COUNT(*) FROM view_events WHERE id > (SELECT watermark FROM rollup_state)"
                              )).scalar() == 0:
                return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError("the server's passes did not catch up")


def mix_choices(engine: Engine, seed: int) -> tuple[list[str], list[tuple[str, str | None, str | None]], Any]:
    """Filters (4 blog countries with the most blogs, 4 authors), the ingest pool (20,000 stored events spread
    over the ids) and the database's size."""
    rng = random.Random(seed)
    with engine.connect() as c:
        countries = [str(r[0]) for r in c.execute(text(
            "SELECT country_code FROM blogs WHERE country_code IS NOT NULL GROUP BY country_code "
            "ORDER BY COUNT(*) DESC, country_code LIMIT 4"))]
        authors = sorted(str(r[0]) for r in c.execute(text("SELECT external_id FROM authors")))
        top_id = int(c.execute(text("SELECT COALESCE(MAX(id), 0) FROM view_events")).scalar() or 0)
        step = max(1, top_id // 20_000)
        pool = [(str(b), v, cc) for b, v, cc in c.execute(text(
            f"SELECT b.external_id, e.viewer_id, e.viewer_country FROM view_events e JOIN blogs b ON b.id = e.blog_id "
            f"WHERE e.id % {step} = 0 LIMIT 20000"))]
        size = {t: int(c.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() or 0)
                for t in ("view_events", "blogs", "authors", "viewers")}
    filters = [json.dumps({"country": {"eq": x}}) for x in countries]
    filters += [json.dumps({"author": {"eq": x}}) for x in rng.sample(authors, min(4, len(authors)))]
    return filters, pool, size


# ---------------------------------------------------------------- report and main


def acceptance(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its measured value."""
    p1, p2, p3 = (report["phases"][k] for k in ("phase1", "phase2", "phase3"))
    errors = sum(p["errors"] for p in report["phases"].values()) + sum(
        p.get("ingest", {}).get("failed", 0) for p in report["phases"].values())
    ex = report["exactness"]
    ratio = p2["p50_ms"] / p3["p50_ms"] if p3["p50_ms"] > 0 else float("inf")
    return [
        {"name": "phase 1 relative p50 <= 8 ms", "value": f"{p1['p50_ms']:.2f} ms", "ok": p1["p50_ms"] <= 8},
        {"name": "phase 2 >= 400 requests/s", "value": f"{p2['rps']:.0f} requests/s", "ok": p2["rps"] >= 400},
        {"name": "phase 2 p99 <= 60 ms", "value": f"{p2['p99_ms']:.2f} ms", "ok": p2["p99_ms"] <= 60},
        {"name": "phase 2 p50 / phase 3 p50 <= 1.5", "value": f"{ratio:.2f}", "ok": ratio <= 1.5},
        {"name": "0 errors (queries of every phase, ingest batches)", "value": str(errors), "ok": errors == 0},
        {"name": "exact answers (sample re-asked vs raw SQL)", "value": f"{ex['matched']}/{ex['asked']}",
         "ok": ex["asked"] > 0 and ex["matched"] == ex["asked"]},
    ]


def run(a: argparse.Namespace, report: dict[str, Any]) -> None:
    with database(a) as (url, built):
        report["build"] = built
        print(f"database {a.db if not a.reuse_url else url}: {built}", flush=True)
        engine = create_engine(url)
        log = Path(tempfile.gettempdir()) / "bench_traffic_serve.log"
        try:
            with server(url, a.rollup_interval, log) as (port, pid):
                print(f"serve on 127.0.0.1:{port} (pid {pid}, log {log}), passes every {a.rollup_interval} s; "
                      f"caught up after {wait_caught_up(engine):.1f} s", flush=True)
                filters, pool, size = mix_choices(engine, a.seed)
                report["size"] = size
                print("rows: " + ", ".join(f"{k} {v:,}" for k, v in size.items()) + f"; filters {filters}")
                ctx = Ctx(a, url, engine, port, pid, uuid.uuid4().hex[:8], filters, pool)
                phases = report["phases"] = {}
                if a.sweep:
                    report["sweep"] = sweep(ctx, None)
                if a.warmup > 0:
                    report["warmup"] = run_phase(ctx, "warmup", 1, a.warmup, fixed=None, ingest=0)
                    ctx.samples.clear()
                phases["phase1"] = run_phase(ctx, "phase1", 1, a.phase1, fixed=None, ingest=0)
                phases["phase2"] = run_phase(ctx, "phase2", a.clients, a.phase2, fixed=None, ingest=a.ingest_rate)
                ranges = fixed_ranges(time.time_ns() // 1000)  # once, for the sweep and phase 3
                if a.sweep:
                    report["sweep_fixed"] = sweep(ctx, ranges)
                phases["phase3"] = run_phase(ctx, "phase3", a.clients, a.phase3, fixed=ranges, ingest=a.ingest_rate)
                ex = report["exactness"] = exactness(ctx, a.exact_sample)
                print(f"\n== exactness: {ex['matched']}/{ex['asked']} re-asked answers equal the raw SQL answers, "
                      f"{ex['asked'] - ex['matched'] - ex['errored']} differ, {ex['errored']} were errors "
                      f"({ex['pending_events']:,} events not folded yet when checked; {ex['seconds']:.0f} s)")
                for m in ex["mismatches"]:
                    print(f"   MISMATCH {m}")
        finally:
            engine.dispose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--views", type=int, help="seeded views (default 1,000,000 on SQLite, 10,000,000 on PostgreSQL)")
    p.add_argument("--reuse-url", help="use this database: built there (and kept) when it holds no views")
    p.add_argument("--clients", type=int, default=8, help="keep-alive query clients in phases 2 and 3")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                   help="ask every question shape of the mix once before the phases (cold cost; default on)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of one relative client before phase 1")
    p.add_argument("--phase1", type=float, default=20.0)
    p.add_argument("--phase2", type=float, default=60.0)
    p.add_argument("--phase3", type=float, default=60.0)
    p.add_argument("--ingest-rate", type=float, default=1000.0, help="views/s posted during phases 2 and 3")
    p.add_argument("--ingest-batch", type=int, default=100, help="views per POST /ingest/views")
    p.add_argument("--rollup-interval", type=int, default=30, help="ANALYTICS_ROLLUP_INTERVAL of the server")
    p.add_argument("--exact-sample", type=int, default=30, help="questions re-asked and checked against raw SQL")
    p.add_argument("--zones", type=lambda s: s.split(","), default=list(ZONES),
                   help=f"comma-separated time zones of the mix, among {','.join(ZONES)} (default all)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiny: 20,000 views, SQLite, 3 s phases, 2 clients, "
                   "100 views/s, passes every 2 s, 12 answers checked")
    p.add_argument("--json", type=Path, help="also write every figure here")
    a = p.parse_args(argv)
    if bad := [z for z in a.zones if z not in ZONES]:
        p.error(f"--zones: {bad} not among {', '.join(ZONES)}")
    if a.smoke:
        a.db, a.views, a.clients, a.warmup, a.phase1, a.phase2, a.phase3 = "sqlite", a.views or 20_000, 2, 1, 3, 3, 3
        a.ingest_rate, a.ingest_batch, a.rollup_interval, a.exact_sample = 100.0, 10, 2, 12
    if a.views is None:
        a.views = 1_000_000 if a.db == "sqlite" else 10_000_000
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    git = ["git", "-C", str(Path(__file__).resolve().parents[1]), "--no-optional-locks"]  # read-only (no index refresh)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = [x for x in subprocess.run([*git, "status", "--porcelain", "analytics_gql", "migrations"],
                                       capture_output=True, text=True).stdout.split("\n") if x]
    load0 = os.getloadavg()
    print(f"commit {head}{' + uncommitted changes in analytics_gql/migrations' if dirty else ''}; "
          f"{os.cpu_count()} CPUs; load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
          f"{a.db}, {a.views:,} views; zones {', '.join(a.zones)}", flush=True)
    report: dict[str, Any] = {"commit": head, "dirty": dirty, "db": a.db, "views": a.views, "loadavg_start": load0,
                              "options": {k: str(v) for k, v in vars(a).items()}}
    try:
        run(a, report)
    finally:
        if a.json:  # what was measured so far, also when a step failed
            a.json.write_text(json.dumps(report, indent=1))
    report["loadavg_end"] = load1 = os.getloadavg()
    report["acceptance"] = acceptance(report)
    print(f"\nload average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    for line in report["acceptance"]:
        print(f"   {line['name']}: {line['value']}: {'YES' if line['ok'] else 'NO'}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    bad = [x for x in report["acceptance"] if x["name"].startswith(("0 errors", "exact")) and not x["ok"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
