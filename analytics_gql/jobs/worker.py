"""The `worker` command: a Dramatiq worker over Redis running the rollup actors."""

from __future__ import annotations

import logging
import sys

import dramatiq

from analytics_gql import logs
from analytics_gql.settings import Settings


def run(settings: Settings, threads: int) -> int:
    """Consume the rollups queue until SIGINT/SIGTERM; an error when ANALYTICS_REDIS_URL is unset."""
    if not settings.redis_url:
        print("error: the worker needs ANALYTICS_REDIS_URL; on the embedded default `serve` (or `scheduler`) "
              "runs an in-process worker", file=sys.stderr)
        return 2
    from analytics_gql.jobs.broker import make_broker
    from analytics_gql.jobs.scheduler import wait_for_signal

    logs.configure(settings.log_format)
    broker, actors = make_broker(settings)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=max(1, threads), worker_timeout=1000)
    worker.start()
    logging.getLogger(__name__).info("worker started with %d thread(s)", threads)
    try:
        wait_for_signal()
    finally:
        worker.stop(timeout=10_000)
        broker.close()
        actors.database.dispose()
    return 0
