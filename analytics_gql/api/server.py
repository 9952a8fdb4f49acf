"""`analytics-gql serve`: uvicorn on one worker, plus the in-process jobs on the embedded default."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from analytics_gql import logs
from analytics_gql.api.app import create_app
from analytics_gql.api.context import JOBS_RUNTIME, jobs_runtime
from analytics_gql.settings import Settings

log = logging.getLogger("analytics_gql.api")

# Beyond this many open connections (idle keep-alives included) uvicorn answers 503 at once instead of queueing
# work without bound (F23); below common 1024-descriptor limits, above the 500 concurrent clients we test with.
LIMIT_CONCURRENCY = 800
BACKLOG = 2048


def _start_jobs(settings: Settings) -> Any:
    """Start the embedded scheduler and worker; None (with a warning) when the jobs module is not available."""
    try:
        start_embedded = jobs_runtime().start_embedded
    except ModuleNotFoundError as e:
        if e.name not in (JOBS_RUNTIME, "analytics_gql.jobs"):
            raise  # a real import error inside the jobs package must not be hidden
        log.warning("analytics_gql.jobs.runtime is not available: serving without scheduled rollups")
        return None
    return start_embedded(settings)


def _stop_jobs(handle: Any) -> None:
    """Stop what _start_jobs started, whatever shape of handle it returned."""
    if handle is None:
        return
    for name in ("stop", "shutdown", "close"):
        method = getattr(handle, name, None)
        if callable(method):
            method()
            return
    if callable(handle):
        handle()


def uvicorn_config(app: Any, *, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration `serve` uses: one worker, bounded concurrency, no server banner."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,
        limit_concurrency=LIMIT_CONCURRENCY,
        backlog=BACKLOG,
        timeout_keep_alive=5,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_config=None,
    )


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API until interrupted (loopback by default: pass --host 0.0.0.0 to expose it)."""
    logs.configure()
    config = uvicorn_config(create_app(settings), host=host, port=port)
    server = uvicorn.Server(config)
    jobs = _start_jobs(settings) if settings.redis_url is None else None
    try:
        server.run()
    finally:
        _stop_jobs(jobs)
