"""Jobs over Redis with real `analytics-gql worker` / `scheduler` processes, and Redis faults (F6-F9, R3-R5)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import missing_service
from jobs_helpers import PrivateRedis, cli, stop, wait_caught_up

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "db"))
from rollup_helpers import add_events, assert_exact, bulk_events, stored  # noqa: E402

from analytics_gql import rollup  # noqa: E402
from analytics_gql.domain.calendar import DAY_US, Grain  # noqa: E402
from analytics_gql.jobs import runtime  # noqa: E402
from analytics_gql.jobs.broker import make_broker  # noqa: E402
from analytics_gql.jobs.scheduler import _sender  # noqa: E402
from analytics_gql.settings import Settings  # noqa: E402
from analytics_gql.storage import rollups as store  # noqa: E402
from analytics_gql.storage.engine import Database  # noqa: E402
from analytics_gql.storage.tables import Shape  # noqa: E402

LO = 788_918_400_000_000


def events(r: random.Random, n: int) -> list[tuple[int, str | None, int]]:
    return [(r.randint(1, 20), r.choice([None, "US", "IN"]), LO + r.randrange(400 * DAY_US)) for _ in range(n)]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server on a port of our own: the shared server is never killed or frozen."""
    if shutil.which("redis-server") is None:
        missing_service("a redis-server binary (to run a private Redis we may kill and freeze)")
    srv = PrivateRedis(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        if srv.proc is not None:
            os.kill(srv.proc.pid, signal.SIGCONT)
        srv.kill()


def test_worker_and_three_schedulers_over_redis(db: Database, redis_url: str) -> None:
    """Acceptance 4 / R5: a real worker process and three scheduler processes; duplicates never double count."""
    env = {"ANALYTICS_DATABASE_URL": db.settings.db_url, "ANALYTICS_REDIS_URL": redis_url,
           "ANALYTICS_ROLLUP_INTERVAL": "1"}
    procs = [cli(["worker", "--threads", "2"], env)] + [cli(["scheduler"], env) for _ in range(3)]
    r = random.Random(3)
    s = Settings(database_url=db.settings.db_url, redis_url=redis_url)
    try:
        for _ in range(4):
            add_events(db, events(r, 250))
            assert runtime.enqueue_refresh(s)  # and a duplicate on top of the ticks
            time.sleep(0.5)
        wait_caught_up(db, 60)
    finally:
        stop(procs)
    assert all(p.returncode == 0 for p in procs), [p.stderr.read()[-2000:] for p in procs if p.stderr]
    assert_exact(db, "UTC")
    with db.read() as conn:
        assert sum(stored(conn)[(Grain.YEAR, Shape.TOTAL)].values()) == 1000


def test_worker_sigkill_mid_actor_then_exact(db: Database, redis_url: str) -> None:
    """F9 / R4: kill -9 the worker while it folds a backlog; the next worker's pass makes the totals exact."""
    bulk_events(db, 60_000)
    env = {"ANALYTICS_DATABASE_URL": db.settings.db_url, "ANALYTICS_REDIS_URL": redis_url,
           "ANALYTICS_ROLLUP_CHUNK": "5000"}
    s = Settings(database_url=db.settings.db_url, redis_url=redis_url)
    worker = cli(["worker", "--threads", "1"], env)
    try:
        assert runtime.enqueue_refresh(s)
        deadline = time.monotonic() + 60
        wm = 0
        while time.monotonic() < deadline and not wm:
            with db.read() as conn:
                wm = store.watermark(conn)
            time.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        with db.read() as conn:
            assert 0 < store.watermark(conn) < 60_000
        assert_exact(db, "UTC")
        worker = cli(["worker", "--threads", "1"], env)
        assert runtime.enqueue_refresh(s)  # the next tick supersedes the lost message
        wait_caught_up(db, 60)
    finally:
        stop([worker])
    assert_exact(db, "UTC")


def test_frozen_redis_never_blocks_a_tick(db: Database, private_redis: PrivateRedis) -> None:
    """F7 / R3: Redis SIGSTOPped: sends give up within 3 s, ingest and passes stay exact; SIGCONT resumes."""
    s = Settings(database_url=db.settings.db_url, redis_url=private_redis.url, redis_timeout=1.0)
    broker, actors = make_broker(s)
    tick = _sender(actors.refresh)
    try:
        assert tick()
        assert private_redis.proc is not None
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        for send in (tick, lambda: runtime.enqueue_refresh(s)):
            t0 = time.monotonic()
            assert send() is False
            assert time.monotonic() - t0 < 3
        add_events(db, events(random.Random(4), 100))  # ingest and direct passes do not need Redis
        rollup.refresh(db, db.settings)
        assert_exact(db, "UTC")
        os.kill(private_redis.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while not tick() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tick()
    finally:
        broker.close()


def test_redis_killed_then_restarted_empty(db: Database, private_redis: PrivateRedis) -> None:
    """F6 / F8 / R3: Redis killed during ticks, then restarted empty: the worker reconnects and catches up."""
    env = {"ANALYTICS_DATABASE_URL": db.settings.db_url, "ANALYTICS_REDIS_URL": private_redis.url,
           "ANALYTICS_ROLLUP_INTERVAL": "1", "ANALYTICS_REDIS_TIMEOUT": "1"}
    procs = [cli(["worker", "--threads", "1"], env), cli(["scheduler"], env)]
    r = random.Random(5)
    try:
        add_events(db, events(r, 100))
        wait_caught_up(db, 30)
        private_redis.kill()  # F6: gone mid-ticks (and every queued message with it)
        add_events(db, events(r, 100))
        time.sleep(3)
        assert all(p.poll() is None for p in procs), "worker and scheduler survive a Redis outage"
        private_redis.start()  # F8: back, empty
        took = wait_caught_up(db, 30)
        print(f"caught up {took:.1f} s after Redis came back")
    finally:
        stop(procs)
    assert_exact(db, "UTC")
    with db.read() as conn:
        assert sum(stored(conn)[(Grain.MONTH, Shape.TOTAL)].values()) == 200
