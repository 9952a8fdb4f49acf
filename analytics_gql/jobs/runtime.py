"""In-process jobs for the embedded default (broker + worker thread + scheduler), and bounded enqueueing."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import dramatiq
from apscheduler.schedulers.background import BackgroundScheduler

from analytics_gql.jobs.actors import Actors
from analytics_gql.jobs.broker import make_broker
from analytics_gql.jobs.scheduler import make_scheduler
from analytics_gql.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """A running in-process broker, worker and (optionally) scheduler."""

    broker: dramatiq.Broker
    actors: Actors
    worker: dramatiq.Worker
    scheduler: BackgroundScheduler | None

    def stop(self) -> None:
        """Stop the scheduler, let the worker finish its message, close everything."""
        global _embedded
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.worker.stop(timeout=30_000)
        self.broker.close()
        self.actors.database.dispose()
        with _lock:
            if _embedded is self:
                _embedded = None


_lock = threading.Lock()
_embedded: Runtime | None = None
_redis: dict[str, Actors] = {}


def start_embedded(settings: Settings, *, scheduler: bool = True, threads: int = 1) -> Runtime:
    """Start an in-process broker and worker (and the scheduler) for `serve` on the embedded default."""
    global _embedded
    embedded = settings.model_copy(update={"redis_url": None})
    broker, actors = make_broker(embedded)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    sched = make_scheduler(embedded, actors) if scheduler else None
    if sched is not None:
        sched.start()
    rt = Runtime(broker, actors, worker, sched)
    with _lock:
        _embedded = rt
    return rt


def enqueue_refresh(settings: Settings) -> bool:
    """Enqueue one rollup pass (refreshRollups); False when no broker takes it within the Redis timeout."""
    with _lock:
        rt = _embedded
        if rt is None and settings.redis_url:
            dsn = settings.redis_dsn
            assert dsn is not None
            if dsn not in _redis:
                _redis[dsn] = make_broker(settings)[1]
            actors: Actors | None = _redis[dsn]
        else:
            actors = rt.actors if rt is not None else None
    if actors is None:
        return False  # embedded without a running runtime: nothing would consume the message
    try:
        actors.refresh.send()
        return True
    except Exception as e:  # noqa: BLE001 - Redis down or frozen: report, never hang the request (R3)
        log.warning("refresh not enqueued: %s", e)
        return False
