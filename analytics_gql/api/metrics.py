"""Prometheus metrics: GraphQL root-field requests and latency, HTTP requests, rows ingested, rollup lag."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from analytics_gql.storage.engine import Database

log = logging.getLogger("analytics_gql.api")

# One registry for the process (not prometheus' global default): the app can be built many times in tests.
REGISTRY = CollectorRegistry(auto_describe=True)

GRAPHQL_FIELD_REQUESTS = Counter(
    "analytics_graphql_field_requests", "GraphQL root-field resolutions, by field and outcome",
    ["field", "outcome"], registry=REGISTRY,
)
GRAPHQL_FIELD_LATENCY = Histogram(
    "analytics_graphql_field_seconds", "GraphQL root-field resolution time, by field",
    ["field"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_REQUESTS = Counter(
    "analytics_http_requests", "HTTP requests, by route and status", ["route", "status"], registry=REGISTRY,
)
ROWS_INGESTED = Counter(
    "analytics_rows_ingested", "Rows loaded through the API, by kind and outcome", ["kind", "outcome"],
    registry=REGISTRY,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def observe_field(field: str, seconds: float, *, ok: bool) -> None:
    """Record one root-field resolution."""
    GRAPHQL_FIELD_REQUESTS.labels(field, "ok" if ok else "error").inc()
    GRAPHQL_FIELD_LATENCY.labels(field).observe(seconds)


def observe_ingest(kind: str, result: Any) -> None:
    """Record an ingest result's accepted / duplicate / rejected counts."""
    for outcome in ("accepted", "duplicates", "rejected"):
        n = int(getattr(result, outcome, 0) or 0)
        if n:
            ROWS_INGESTED.labels(kind, outcome).inc(n)


def rollup_status(db: Database, statement_timeout_ms: int | None = None) -> dict[str, Any] | None:
    """Pending events and the last pass's bookkeeping, or None while unavailable (module or database).

    Blocking: run it on a worker thread, with a bound on the wait (a locked table or a frozen server).
    """
    try:
        from analytics_gql.storage import rollups  # guarded: the API must serve even if rollups are broken
    except ImportError:
        return None
    try:
        with db.read(statement_timeout_ms=statement_timeout_ms) as conn:
            # Not rollups.status(): that counts every raw row and rollup row, too heavy for each scrape.
            state = rollups.read_state(conn)
            watermark = state.watermark if state is not None else 0
            return {
                "pending_events": rollups.pending_events(conn, watermark),
                "last_run_ms": state.last_run_ms if state is not None and state.last_run_at is not None else None,
                "last_run_at": state.last_run_at if state is not None else None,
            }
    except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
        log.warning("rollup status unavailable for /metrics", exc_info=True)
        return None


class RollupCollector(Collector):
    """The rollup lag and the last pass's duration, as read from the database for this scrape."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the rollup gauges."""
        st = self.status
        pending = st["pending_events"]
        if pending is not None:
            yield GaugeMetricFamily("analytics_rollup_pending_events",
                                    "Raw events above the watermark (rollup lag)", value=float(pending))
        ms = st["last_run_ms"]
        if ms is not None:
            yield GaugeMetricFamily("analytics_rollup_last_pass_seconds",
                                    "Duration of the last rollup pass", value=float(ms) / 1000.0)
        last = st["last_run_at"]
        if last is not None:
            yield GaugeMetricFamily("analytics_rollup_last_run_timestamp_seconds",
                                    "When the last rollup pass ran (Unix time)", value=last / 1_000_000)


def render(status: dict[str, Any] | None) -> bytes:
    """The exposition text: process-wide metrics plus, when `status` (from rollup_status) is given, the gauges."""
    text = generate_latest(REGISTRY)
    if status is not None:
        extra = CollectorRegistry(auto_describe=False)
        extra.register(RollupCollector(status))
        text += generate_latest(extra)
    return text
