"""APScheduler 3 triggers that only `.send()` the rollup actors; the database lock makes extra sends harmless."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from analytics_gql import logs
from analytics_gql.jobs.actors import Actors
from analytics_gql.settings import Settings

log = logging.getLogger(__name__)


def _sender(actor: Any, *args: Any) -> Callable[[], bool]:
    """A tick that enqueues one message; a broker failure is logged, never raised (the next tick retries)."""

    def tick() -> bool:
        t0 = time.monotonic()
        try:
            actor.send(*args)
            return True
        except Exception as e:  # noqa: BLE001 - a down or frozen Redis must not kill the scheduler (R3)
            log.warning("could not enqueue %s after %.1f s: %s", actor.actor_name, time.monotonic() - t0, e)
            return False

    tick.__name__ = f"send_{actor.actor_name}"
    return tick


def make_scheduler(settings: Settings, actors: Actors) -> BackgroundScheduler:
    """A scheduler (not started): refresh every rollup_interval s, compaction and audit daily."""
    interval = settings.rollup_interval
    # coalesce + max_instances=1: a stalled scheduler catching up sends one message, not a burst;
    # misfire grace: a tick late by less than an interval still runs.
    sched = BackgroundScheduler(timezone=dt.UTC, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": max(1, interval)})
    sched.add_job(_sender(actors.refresh), "interval", seconds=interval, id="refresh_rollups",
                  next_run_time=dt.datetime.now(dt.UTC))
    if settings.retention_days:
        sched.add_job(_sender(actors.compact), "cron", hour=3, minute=17, id="compact_rollups",
                      misfire_grace_time=3600)
    sched.add_job(_sender(actors.audit, 200), "cron", hour=4, minute=7, id="audit_rollups", misfire_grace_time=3600)
    return sched


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1):
        pass


def run_forever(settings: Settings) -> None:
    """The `scheduler` command: over Redis it only enqueues; embedded it also runs an in-process worker."""
    from analytics_gql.jobs import runtime

    logs.configure(settings.log_format)
    if not settings.redis_url:
        log.info("ANALYTICS_REDIS_URL unset: running the scheduler with an in-process worker")
        rt = runtime.start_embedded(settings)
        try:
            wait_for_signal()
        finally:
            rt.stop()
        return
    from analytics_gql.jobs.broker import make_broker

    broker, actors = make_broker(settings)
    sched = make_scheduler(settings, actors)
    sched.start()
    log.info("scheduler started: refresh every %s s", settings.rollup_interval)
    try:
        wait_for_signal()
    finally:
        sched.shutdown(wait=False)
        broker.close()
