"""The rollup actors: primitives only, idempotent (the pass lock and watermark make duplicates harmless)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import dramatiq

from analytics_gql import rollup
from analytics_gql.errors import UserError
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database

QUEUE = "rollups"
MINUTE_MS = 60_000
# A failed pass changes nothing, and the next tick (seconds away) redoes it: few, quick retries are enough.
# A UserError (e.g. RebuildRequired) needs an operator, so it is not retried.
_OPTIONS: dict[str, Any] = {"max_retries": 3, "min_backoff": 1_000, "max_backoff": 30_000, "throws": (UserError,)}


@dataclass(frozen=True)
class Actors:
    """The actors declared on one broker, and the database they share."""

    refresh: dramatiq.Actor[[], None]
    compact: dramatiq.Actor[[], None]
    audit: dramatiq.Actor[[int], None]
    database: _LazyDatabase


class _LazyDatabase:
    """One Database per process, created on first use (nothing connects at import or declaration)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Database | None = None
        self._lock = threading.Lock()

    def get(self) -> Database:
        with self._lock:
            if self._db is None:
                self._db = Database(self.settings)
            return self._db

    def dispose(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.dispose()
                self._db = None


def declare(broker: dramatiq.Broker, settings: Settings) -> Actors:
    """Declare refresh_rollups, compact_rollups and audit_rollups on `broker`."""
    lazy = _LazyDatabase(settings)

    # Results are logged by the use case, not returned: no result backend is configured.
    def refresh_rollups() -> None:
        """Fold new raw events into the rollups (skips if another pass runs)."""
        rollup.refresh(lazy.get(), settings)

    def compact_rollups() -> None:
        """Apply the retention policy."""
        rollup.compact(lazy.get(), settings)

    def audit_rollups(sample: int = 200) -> None:
        """Recompute sampled cells from raw and repair drift."""
        rollup.audit(lazy.get(), settings, sample=sample)

    def actor(fn: Any, time_limit_ms: int) -> Any:
        return dramatiq.Actor(fn, broker=broker, actor_name=fn.__name__, queue_name=QUEUE, priority=0,
                              options={**_OPTIONS, "time_limit": time_limit_ms})

    return Actors(refresh=actor(refresh_rollups, 10 * MINUTE_MS), compact=actor(compact_rollups, 60 * MINUTE_MS),
                  audit=actor(audit_rollups, 30 * MINUTE_MS), database=lazy)
