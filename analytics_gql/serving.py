"""The composition root of `serve` and `demo`: the app, wired to the jobs runtime, served with what runs beside it.

api and jobs are independent layers (pyproject.toml, import-linter): the API never imports the jobs. This module,
above both, gives the app `jobs.runtime.enqueue_refresh` for refreshRollups and, on the embedded default (no
ANALYTICS_REDIS_URL), starts the in-process worker and scheduler beside the server.
"""

from __future__ import annotations

from analytics_gql import logs
from analytics_gql.api import server
from analytics_gql.api.app import create_app
from analytics_gql.jobs import runtime
from analytics_gql.settings import Settings


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API until SIGINT or SIGTERM; on the embedded default with the scheduler and an in-process worker."""
    logs.configure(settings.log_format)
    if settings.tracing:
        from analytics_gql.api import tracing

        tracing.install_exporter()
    app = create_app(settings, enqueue=runtime.enqueue_refresh)
    embedded = settings.redis_url is None
    server.run(app, host=host, port=port, jobs=(lambda: runtime.start_embedded(settings)) if embedded else None)
