"""Jobs with the in-process broker: the scheduler enqueues, the worker thread folds, duplicates never double count."""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path

from jobs_helpers import wait_caught_up

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "db"))
from rollup_helpers import add_events, assert_exact, stored  # noqa: E402

from analytics_gql.domain.calendar import DAY_US, Grain  # noqa: E402
from analytics_gql.errors import UserError  # noqa: E402
from analytics_gql.jobs import runtime  # noqa: E402
from analytics_gql.jobs.actors import QUEUE  # noqa: E402
from analytics_gql.jobs.scheduler import make_scheduler  # noqa: E402
from analytics_gql.settings import Settings  # noqa: E402
from analytics_gql.storage.engine import Database  # noqa: E402
from analytics_gql.storage.tables import Shape  # noqa: E402

LO = 788_918_400_000_000


def events(r: random.Random, n: int) -> list[tuple[int, str | None, int]]:
    return [(r.randint(1, 20), r.choice([None, "US", "IN"]), LO + r.randrange(400 * DAY_US)) for _ in range(n)]


def test_scheduler_enqueues_and_in_process_worker_folds(db: Database) -> None:
    """Acceptance 4 (embedded): ingest while the runtime runs; the rollups catch up by themselves, exactly."""
    s = Settings(database_url=db.settings.db_url, rollup_interval=1)
    rt = runtime.start_embedded(s)
    r = random.Random(1)
    try:
        for _ in range(3):
            add_events(db, events(r, 200))
            time.sleep(0.3)
        wait_caught_up(db, 15)
        add_events(db, events(r, 50))  # folded by a later tick, with no one asking
        wait_caught_up(db, 15)
    finally:
        rt.stop()
    assert_exact(db, "UTC")
    with db.read() as conn:
        assert sum(stored(conn)[(Grain.YEAR, Shape.TOTAL)].values()) == 650


def test_duplicate_messages_and_three_schedulers_do_not_double_count(db: Database) -> None:
    """F3/F4/R5: three schedulers, four worker threads and bursts of duplicate sends while ingest runs."""
    s = Settings(database_url=db.settings.db_url, rollup_interval=1)
    rt = runtime.start_embedded(s, scheduler=False, threads=4)
    scheds = [make_scheduler(s, rt.actors) for _ in range(3)]
    r = random.Random(2)
    try:
        for sc in scheds:
            sc.start()
        for _ in range(5):
            add_events(db, events(r, 100))
            for _ in range(5):
                assert runtime.enqueue_refresh(s)
            time.sleep(0.2)
        wait_caught_up(db, 20)
    finally:
        for sc in scheds:
            sc.shutdown(wait=False)
        rt.stop()
    assert_exact(db, "UTC")
    with db.read() as conn:
        assert sum(stored(conn)[(Grain.DAY, Shape.TOTAL)].values()) == 500


def test_actors_are_declared_with_explicit_limits(tmp_path: Path) -> None:
    """Queue name, retries and time limits are explicit; nothing connects at declaration."""
    from analytics_gql.jobs.broker import make_broker

    broker, actors = make_broker(Settings(database_url=f"sqlite:///{tmp_path}/none.db"))
    try:
        for a in (actors.refresh, actors.compact, actors.audit):
            assert a.queue_name == QUEUE
            assert a.options["max_retries"] == 3 and a.options["time_limit"] >= 60_000
            assert a.options["throws"] == (UserError,)  # RebuildRequired needs an operator: never retried
        assert {a.actor_name for a in (actors.refresh, actors.compact, actors.audit)} == {
            "refresh_rollups", "compact_rollups", "audit_rollups"}
        assert not (tmp_path / "none.db").exists()
    finally:
        broker.close()


def test_enqueue_refresh_without_a_runtime_is_false(tmp_path: Path) -> None:
    """Embedded and nothing consuming: refreshRollups reports enqueued=false instead of pretending."""
    assert runtime.enqueue_refresh(Settings(database_url=f"sqlite:///{tmp_path}/x.db")) is False


def test_runtime_stop_waits_for_a_running_pass(db: Database) -> None:
    """Stopping the runtime mid-backlog leaves exact rollups (the pass in flight commits or rolls back whole)."""
    from rollup_helpers import bulk_events

    from analytics_gql import rollup

    bulk_events(db, 30_000)
    s = Settings(database_url=db.settings.db_url, rollup_interval=1, rollup_chunk=500)
    rt = runtime.start_embedded(s)
    deadline = time.monotonic() + 30
    while not 0 < rollup.status(db, s).watermark_id < 30_000:  # a pass is in the middle of the backlog
        assert time.monotonic() < deadline, "no pass started"
        time.sleep(0.005)
    stopper = threading.Thread(target=rt.stop)
    stopper.start()
    stopper.join(60)
    assert not stopper.is_alive()
    # stop() returned after the pass in flight ended: nothing folds any more, and every chunk is whole.
    stopped_at = rollup.status(db, s).watermark_id
    time.sleep(1.5)  # more than a rollup interval
    assert rollup.status(db, s).watermark_id == stopped_at > 0
    assert_exact(db, "UTC")


class _SlowActor:
    """Stands in for an actor whose broker is frozen: each send blocks for `seconds` (counts overlaps)."""

    def __init__(self, seconds: float) -> None:
        self.actor_name = "slow"
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.sends = 0
        self._lock = threading.Lock()

    def send(self, *args: object) -> None:
        with self._lock:
            self.running += 1
            self.sends += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1


def test_scheduler_jobs_coalesce_and_never_overlap(tmp_path: Path) -> None:
    """R3/R5: ticks coalesce, one instance at most (a send stuck on a frozen broker is not piled on), daily
    compaction only with a retention policy; the exact triggers and limits."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    from analytics_gql.jobs.actors import Actors

    slow = _SlowActor(2.5)
    actors = Actors(refresh=slow, compact=slow, audit=slow, database=None)  # type: ignore[arg-type]
    s = Settings(database_url=f"sqlite:///{tmp_path}/none.db", rollup_interval=1, retention="raw=30d")
    sched = make_scheduler(s, actors)
    sched.start(paused=True)  # job defaults are applied when the scheduler starts
    jobs = {j.id: j for j in sched.get_jobs()}
    assert set(jobs) == {"refresh_rollups", "compact_rollups", "audit_rollups"}
    for j in jobs.values():
        assert (j.coalesce, j.max_instances) == (True, 1)
    refresh = jobs["refresh_rollups"]
    assert isinstance(refresh.trigger, IntervalTrigger) and refresh.trigger.interval.total_seconds() == 1
    assert refresh.misfire_grace_time == 1
    for name, hour, minute in (("compact_rollups", "3", "17"), ("audit_rollups", "4", "7")):
        trig = jobs[name].trigger
        assert isinstance(trig, CronTrigger)
        fields = {f.name: str(f) for f in trig.fields}
        assert (fields["hour"], fields["minute"]) == (hour, minute) and jobs[name].misfire_grace_time == 3600
    assert jobs["audit_rollups"].args == ()  # the sample size is bound in the sender
    no_policy = make_scheduler(Settings(database_url=s.db_url, rollup_interval=1), actors)
    assert {j.id for j in no_policy.get_jobs()} == {"refresh_rollups", "audit_rollups"}
    # Behaviour: a send blocking 2.5 s with 1 s ticks never runs twice at once.
    sched.resume()
    try:
        time.sleep(4.5)
    finally:
        sched.shutdown(wait=True)
    assert slow.most == 1 and slow.sends == 2
