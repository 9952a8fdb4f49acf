"""Load test of the production shape: PostgreSQL, Redis, two `serve`, a `worker`, a `scheduler`; N clients mixing
ingest and queries for S seconds; then exact totals (stored = sent once, rollups = raw) and throughput, p50/p99.

    cd bench && ../.venv/bin/python load.py --seconds 60 --clients 16

Everything runs as subprocesses of the CLI on 127.0.0.1 with ANALYTICS_* variables; the PostgreSQL database is
created and dropped here, the Redis database number (--redis-db) must be empty and is flushed at the end. Exit 1
when the totals are not exact or any request failed (429s from a configured rate limit are counted apart).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from sqlalchemy import create_engine, text

from analytics_gql.storage.tables import rollup_tables

PG_ADMIN = os.environ.get("ANALYTICS_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
COUNTRIES = ["US", "DE", "IN", "BR", "KE", "ET", "FR", "JP", None]
QUERIES = {
    "top": "query($start: DateTime) { top(dimension: BLOG, range: {start: $start}, limit: 10) "
           "{ totalViews otherViews nodes { key views share } } }",
    "blogViews": "query($start: DateTime) { blogViews(groupBy: COUNTRY, granularity: DAY, range: {start: $start}, "
                 "first: 100) { totalCount nodes { key periodStart views } } }",
    "performance": "query($start: DateTime) { performance(granularity: DAY, timeZone: \"Europe/Berlin\", "
                   "range: {start: $start}) { points { periodStart views growth blogsCreated } } }",
}
QUERY_DAYS = {"top": 7, "blogViews": 30, "performance": 14}  # ranges relative to now: start = now - days
STATUS = "{ rollupStatus { pendingEvents } }"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(instant: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as a dashboard sends it."""
    return instant.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Stack:
    """The subprocesses of one run, their logs in a temp folder; stop() ends them all (SIGTERM, then SIGKILL)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.logs = Path(tempfile.mkdtemp(prefix="ag_load_"))
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def _popen(self, name: str, args: tuple[str, ...]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as out:
            return subprocess.Popen([sys.executable, "-m", "analytics_gql.cli", *args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT)

    def run(self, name: str, *args: str) -> None:
        """Run a CLI command to completion (killed if we are interrupted); raise with its log when it fails."""
        proc = self._popen(name, args)
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if code != 0:
            raise RuntimeError(f"analytics-gql {' '.join(args)} exited {code}:\n{self.log_tail(name)}")

    def start(self, name: str, *args: str) -> None:
        """Start a long-running CLI command."""
        self.procs.append((name, self._popen(name, args)))

    def check_alive(self) -> None:
        """Raise (with its log) when a long-running process has died."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str) -> str:
        """The end of a process's log."""
        return (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]

    def stop(self) -> dict[str, int]:
        """SIGTERM every process, SIGKILL what is still running after 30 s; their exit codes."""
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs:
            try:
                codes[name] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(5)
        self.procs = []
        return codes


@dataclass
class Stats:
    """One client's tallies (merged after the run, so no locks while it runs)."""

    latency: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    limited: int = 0
    sent: set[str] = field(default_factory=set)  # distinct event ids of batches answered 200
    uncertain: set[str] = field(default_factory=set)  # sent, but the outcome is unknown (transport error, 5xx)
    resent: int = 0  # lines re-sent on purpose with an event id the server already had
    accepted: int = 0
    duplicates: int = 0

    def merge(self, other: Stats) -> None:
        """Add another client's tallies to these."""
        for kind, values in other.latency.items():
            self.latency.setdefault(kind, []).extend(values)
        self.errors.update(other.errors)
        self.sent |= other.sent
        self.uncertain |= other.uncertain
        for name in ("limited", "resent", "accepted", "duplicates"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Client:
    """One closed-loop client on one keep-alive connection: ingest batches and dashboard queries, until a deadline."""

    def __init__(self, n: int, base: str, keys: dict[str, str], args: argparse.Namespace, run_id: str) -> None:
        self.n, self.args, self.run_id = n, args, run_id
        self.rng = random.Random(n)
        self.http = httpx.Client(base_url=base, timeout=60)
        self.keys = keys
        self.stats = Stats()
        self.seq = 0
        self.history: list[bytes] = []  # lines this client had accepted, for deliberate re-sends
        weights = [1 / (i + 1) ** 0.9 for i in range(args.blogs)]  # skewed popularity, like the seed
        self.blogs = self.rng.choices(range(1, args.blogs + 1), weights, k=4096)

    def loop(self, deadline: float, stop: threading.Event) -> None:
        """Run requests until the deadline or until asked to stop."""
        try:
            while time.monotonic() < deadline and not stop.is_set():
                if self.rng.random() < self.args.ingest_share:
                    self.ingest()
                else:
                    self.query(self.rng.choice(list(QUERIES)))
        finally:
            self.http.close()

    def _view(self, now: dt.datetime) -> bytes:
        self.seq += 1
        ago = dt.timedelta(seconds=self.rng.uniform(1, 30 * 86_400))
        view: dict[str, Any] = {"eventId": f"{self.run_id}-{self.n}-{self.seq}", "viewedAt": iso(now - ago),
                                "blogId": f"seed-b{self.rng.choice(self.blogs)}",
                                "viewerId": f"u{self.rng.randrange(50_000)}",
                                "viewerCountry": self.rng.choice(COUNTRIES)}
        return orjson.dumps({k: v for k, v in view.items() if v is not None})  # some readers have no country

    def ingest(self) -> None:
        """POST one NDJSON batch of new views, sometimes with lines this server already stored (a client retry)."""
        now = dt.datetime.now(dt.UTC)
        lines = [self._view(now) for _ in range(self.args.batch)]
        again = self.rng.sample(self.history, min(10, len(self.history))) if self.rng.random() < 0.2 else []
        ids = [orjson.loads(line)["eventId"] for line in lines]
        body = b"\n".join(lines + again) + b"\n"
        headers = {"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {self.keys['ingest']}"}
        t0 = time.perf_counter()
        try:
            r = self.http.post("/ingest/views", content=body, headers=headers)
        except httpx.HTTPError as e:
            self.stats.errors[f"ingest {type(e).__name__}"] += 1
            self.stats.uncertain.update(ids)
            return
        self.stats.latency.setdefault("ingest", []).append(time.perf_counter() - t0)
        if self._limited(r):
            return  # not stored: the batch's ids were never sent as far as the totals go
        reply = r.json() if r.status_code == 200 else None
        if reply is None or reply["rejected"]:
            self.stats.errors[f"ingest {r.status_code}"] += 1
            self.stats.uncertain.update(ids)
            return
        self.stats.sent.update(ids)
        self.stats.resent += len(again)
        self.stats.accepted += reply["accepted"]
        self.stats.duplicates += reply["duplicates"]
        self.history.extend(self.rng.sample(lines, 3))

    def _limited(self, r: httpx.Response) -> bool:
        """A deliberate 429 (a configured rate limit): counted apart, and waited out (at most 1 s)."""
        if r.status_code != 429:
            return False
        self.stats.limited += 1
        time.sleep(min(float(r.headers.get("retry-after", "1")), 1.0))
        return True

    def query(self, kind: str) -> None:
        """One dashboard question over a range relative to now."""
        start_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=QUERY_DAYS[kind])
        if self.args.hour_starts:  # a dashboard that rounds "the last N days" to the hour
            start_at = start_at.replace(minute=0, second=0, microsecond=0)
        start = iso(start_at)
        body = {"query": QUERIES[kind], "variables": {"start": start}}
        t0 = time.perf_counter()
        try:
            r = self.http.post("/graphql", json=body, headers={"Authorization": f"Bearer {self.keys['read']}"})
        except httpx.HTTPError as e:
            self.stats.errors[f"{kind} {type(e).__name__}"] += 1
            return
        self.stats.latency.setdefault(kind, []).append(time.perf_counter() - t0)
        if not self._limited(r) and (r.status_code != 200 or r.json().get("errors")):
            code = r.status_code if r.status_code != 200 else r.json()["errors"][0]["extensions"].get("code")
            self.stats.errors[f"{kind} {code}"] += 1


def gql(base: str, key: str, query: str) -> dict[str, Any]:
    """One GraphQL answer's data (raises on errors)."""
    r = httpx.post(f"{base}/graphql", json={"query": query}, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    body = r.json()
    if r.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"{query}: HTTP {r.status_code} {body}")
    return body["data"]  # type: ignore[no-any-return]


def wait_ready(bases: list[str], stack: Stack, timeout: float = 60) -> None:
    """Until every API process answers /readyz 200."""
    deadline = time.monotonic() + timeout
    for base in bases:
        while True:
            stack.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{base} not ready after {timeout} s")
            time.sleep(0.2)


def http_floor(bases: list[str], requests: int = 200) -> float:
    """The same-run baseline: p50 (ms) of GET /healthz on one keep-alive connection per API process, idle."""
    times = []
    for base in bases:
        with httpx.Client(base_url=base, timeout=10) as c:
            for _ in range(requests):
                t0 = time.perf_counter()
                c.get("/healthz").raise_for_status()
                times.append(time.perf_counter() - t0)
    return pct(times, 0.5)


def wait_caught_up(base: str, key: str, stack: Stack, timeout: float) -> float:
    """Seconds until rollupStatus reports 0 pending events (the worker folded everything)."""
    t0 = time.monotonic()
    while gql(base, key, STATUS)["rollupStatus"]["pendingEvents"] != 0:
        stack.check_alive()
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"rollups not caught up after {timeout} s")
        time.sleep(0.25)
    return time.monotonic() - t0


def run_clients(bases: list[str], keys: dict[str, str], args: argparse.Namespace, run_id: str) -> tuple[Stats, float]:
    """The clients, spread over the API processes, for args.seconds; merged stats and the elapsed time."""
    clients = [Client(i, bases[i % len(bases)], keys, args, run_id) for i in range(args.clients)]
    stop = threading.Event()
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    threads = [threading.Thread(target=c.loop, args=(deadline, stop), daemon=True) for c in clients]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    finally:
        stop.set()  # Ctrl-C: the clients finish their request in flight and stop
        for t in threads:
            t.join(90)
    elapsed = time.monotonic() - t0
    total = Stats()
    for c in clients:
        total.merge(c.stats)
    return total, elapsed


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values, in milliseconds."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else float("nan")


def check_totals(url: str, stats: Stats, seeded: int, run_id: str, bases: list[str], key: str) -> list[str]:
    """Print every exactness check; the labels of those that failed (none: EXACT)."""
    engine = create_engine(url)
    with engine.connect() as c:
        def one(sql: str, **params: str) -> int:
            return int(c.execute(text(sql), params).scalar_one())

        raw = one("SELECT count(*) FROM view_events")
        ours = one("SELECT count(*) FROM view_events WHERE event_id LIKE :p", p=f"{run_id}-%")
        top_id = one("SELECT coalesce(max(id), 0) FROM view_events")
        watermark = one("SELECT watermark FROM rollup_state WHERE id = 1")
        sums = {t.name: one(f"SELECT coalesce(sum(views), 0) FROM {t.name}") for t in rollup_tables.values()}
    engine.dispose()
    bad = {name: s for name, s in sums.items() if s != raw}
    checks = [
        (f"stored views of this run {ours:,} = distinct event ids sent {len(stats.sent):,}", ours == len(stats.sent)),
        (f"accepted in replies {stats.accepted:,} = distinct sent", stats.accepted == len(stats.sent)),
        (f"duplicates in replies {stats.duplicates:,} = lines re-sent on purpose {stats.resent:,}",
         stats.duplicates == stats.resent),
        (f"raw events {raw:,} = seeded {seeded:,} + distinct sent", raw == seeded + len(stats.sent)),
        (f"watermark id {watermark:,} = newest raw id {top_id:,}", watermark == top_id),
        (f"every rollup table's sum(views) = raw {raw:,} ({len(sums)} tables{'; off: ' if bad else ''}{bad or ''})",
         not bad),
        ("no request with an unknown outcome", not stats.uncertain),
    ]
    for base in bases:
        total = gql(base, key, "{ top(dimension: COUNTRY, limit: 1) { totalViews } }")["top"]["totalViews"]
        checks.append((f"GraphQL totalViews over everything at {base}: {total:,} = raw", total == raw))
    for label, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {label}")
    return [label for label, ok in checks if not ok]


def report(stats: Stats, elapsed: float, floor: float) -> None:
    """Throughput, latency percentiles per kind (and p50 against the same run's HTTP floor), errors by status."""
    queries = sum(len(v) for k, v in stats.latency.items() if k != "ingest")
    events = len(stats.sent) + stats.resent
    print(f"ran {elapsed:.1f} s: ingest {events / elapsed:,.0f} events/s ({len(stats.latency.get('ingest', []))} "
          f"batches, {len(stats.sent):,} distinct events, {stats.resent:,} re-sent duplicates), "
          f"queries {queries / elapsed:,.1f}/s ({queries:,})")
    print(f"  {'kind':<12} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'p50/floor':>10}  (floor: GET /healthz p50 "
          f"{floor:.2f} ms on an idle keep-alive connection, before the load)")
    for kind in ("ingest", *QUERIES):
        values = stats.latency.get(kind, [])
        p50 = pct(values, 0.5)
        print(f"  {kind:<12} {len(values):>9,} {p50:>8.1f} {pct(values, 0.99):>8.1f} {p50 / floor:>9.0f}x")
    print(f"errors: {sum(stats.errors.values())}{' ' if stats.errors else ''}{dict(stats.errors) or ''}; "
          f"rate limited (429, not errors): {stats.limited}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--ingest-share", type=float, default=0.3, help="share of requests that are ingest batches")
    p.add_argument("--batch", type=int, default=200, help="new views per ingest batch")
    p.add_argument("--authors", type=int, default=200)
    p.add_argument("--blogs", type=int, default=2_000)
    p.add_argument("--seed-views", type=int, default=500_000)
    p.add_argument("--seed-days", type=int, default=365)
    p.add_argument("--hour-starts", action="store_true",
                   help="round the relative range starts down to the hour (default: millisecond precision)")
    p.add_argument("--interval", type=int, default=5, help="ANALYTICS_ROLLUP_INTERVAL (s)")
    p.add_argument("--redis-db", type=int, default=13, help="a Redis database number of this run's own (must be empty)")
    p.add_argument("--rate-limit", help="ANALYTICS_RATE_LIMIT for the API processes (unset: none)")
    return p.parse_args(argv)


def run(args: argparse.Namespace, url: str) -> int:
    """Start the stack on the database at `url`, seed it, load it, check it; the exit status."""
    keys = {"read": secrets.token_urlsafe(16), "ingest": secrets.token_urlsafe(16)}
    env = {"ANALYTICS_DATABASE_URL": url, "ANALYTICS_REDIS_URL": f"redis://127.0.0.1:6379/{args.redis_db}",
           "ANALYTICS_ROLLUP_INTERVAL": str(args.interval), "ANALYTICS_GRAPHIQL": "false",
           "ANALYTICS_INTROSPECTION": "false", "ANALYTICS_API_KEYS": f"{keys['read']}:read;{keys['ingest']}:ingest"}
    if args.rate_limit:
        env["ANALYTICS_RATE_LIMIT"] = args.rate_limit
    stack = Stack(env)
    run_id = uuid.uuid4().hex[:8]
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        t0 = time.monotonic()
        stack.run("migrate", "migrate")
        stack.run("seed", "seed", "--authors", str(args.authors), "--blogs", str(args.blogs), "--views",
                  str(args.seed_views), "--days", str(args.seed_days), "--seed", "1")
        print(f"migrated and seeded {args.seed_views:,} views in {time.monotonic() - t0:.1f} s")
        for i, port in enumerate(ports):
            stack.start(f"serve{i + 1}", "serve", "--host", "127.0.0.1", "--port", str(port))
        stack.start("worker", "worker", "--threads", "2")
        stack.start("scheduler", "scheduler")
        wait_ready(bases, stack)
        print(f"seed folded in {wait_caught_up(bases[0], keys['read'], stack, 300):.1f} s; "
              f"{args.clients} clients for {args.seconds:.0f} s on {len(bases)} API processes")
        floor = http_floor(bases)
        stats, elapsed = run_clients(bases, keys, args, run_id)
        stack.check_alive()
        report(stats, elapsed, floor)
        print(f"caught up {wait_caught_up(bases[0], keys['read'], stack, 300):.1f} s after ingest stopped")
        failures = check_totals(url, stats, args.seed_views, run_id, bases, keys["read"])
        print(f"EXACT: {'no' if failures else 'yes'}")
        return 1 if failures or stats.errors else 0
    finally:
        codes = stack.stop()
        if any(codes.values()):
            print(f"exit codes on SIGTERM: {codes}; logs kept in {stack.logs}")
        else:
            shutil.rmtree(stack.logs, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Create the database and check Redis, run, then drop and flush whatever happened."""
    args = parse_args(argv)
    # SIGINT (even when inherited as ignored) and SIGTERM unwind through the finallys: processes stopped, db dropped.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    r = redis.Redis(host="127.0.0.1", port=6379, db=args.redis_db, socket_timeout=5)
    if r.dbsize():
        print(f"error: Redis database {args.redis_db} is not empty: pick another --redis-db", file=sys.stderr)
        return 2
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"ag_load_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        return run(args, PG_ADMIN.rsplit("/", 1)[0] + "/" + name)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        r.flushdb()
        r.close()


if __name__ == "__main__":
    sys.exit(main())
