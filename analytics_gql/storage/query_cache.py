"""A per-process cache of read results that cannot change while the data versions they were read under hold.

What is cached is only the part of an answer that is fixed by the rollup state: rollup buckets and raw events at
or below the watermark, as grouped by a statement of `storage/queries.py`, stored with the watermark it was read
at. The key is the question (windows, shape, dimension, filter) and the state key (rollup zone, retention
horizons, the dimension and rollup versions of `data_versions`), all read in the request's own snapshot. Events
above that watermark are never cached: they are read live and added to the cached part, so answers stay exact
under continuous ingest and across passes (a pass only moves events from above the watermark into the rollups).

Bounded by entries and by rows (least recently used first out), shared by the threads of one process; a lock
guards every structure. Values are treated as immutable once stored.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

# How many dimension versions keep a label lookup (old snapshots still finishing may ask for the previous one).
_LABEL_VERSIONS = 4


@dataclass
class CacheStats:
    """Counters for tests and benchmarks."""

    hits: int
    misses: int
    entries: int
    rows: int


class Labels:
    """Keys and labels of dimension members (blogs, authors, countries) as of one dimensions version."""

    def __init__(self, max_rows: int) -> None:
        self._lock = threading.Lock()
        self._tables: dict[str, dict[Any, tuple[str, str]]] = {}
        self.max_rows = max_rows

    def known(self, table: str, ids: set[Any]) -> tuple[dict[Any, tuple[str, str]], set[Any]]:
        """The (key, label) of the ids this lookup holds, and the ids it lacks."""
        with self._lock:
            known = self._tables.get(table, {})
            missing = {i for i in ids if i not in known}
            return known, missing

    def add(self, table: str, rows: dict[Any, tuple[str, str]]) -> dict[Any, tuple[str, str]]:
        """Remember rows (unless that would pass the bound) and return the table's lookup including them."""
        with self._lock:
            current = self._tables.get(table, {})
            merged = {**current, **rows}
            if sum(len(t) for t in self._tables.values()) + len(rows) <= self.max_rows:
                self._tables[table] = merged
            return merged


class QueryCache:
    """LRU over (question, rollup state) -> an immutable result part, bounded by entries and rows."""

    def __init__(self, max_entries: int, max_rows: int) -> None:
        self.max_entries = max_entries
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._rows = 0
        self._hits = 0
        self._misses = 0
        self._labels: OrderedDict[int | None, Labels] = OrderedDict()

    def get(self, key: Hashable, accept: Callable[[Any], bool] | None = None) -> Any | None:
        """The stored value (now most recently used), or None; a value `accept` refuses counts as a miss."""
        with self._lock:
            found = self._entries.get(key)
            if found is None or (accept is not None and not accept(found[0])):
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return found[0]

    def peek(self, key: Hashable) -> Any | None:
        """The stored value or None, leaving recency and the hit and miss counts alone (background work)."""
        with self._lock:
            found = self._entries.get(key)
            return None if found is None else found[0]

    def put(self, key: Hashable, value: Any, rows: int) -> None:
        """Store a value that holds `rows` rows; evict the least recently used until both bounds hold."""
        rows = max(1, rows)
        if rows > self.max_rows:
            return  # larger than the whole budget: answering it again is cheaper than evicting everything
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._rows -= old[1]
            self._entries[key] = (value, rows)
            self._rows += rows
            while len(self._entries) > self.max_entries or self._rows > self.max_rows:
                _, (_, n) = self._entries.popitem(last=False)
                self._rows -= n

    def labels(self, version: int | None) -> Labels:
        """The label lookup for one dimensions version (created empty on first use)."""
        with self._lock:
            found = self._labels.get(version)
            if found is None:
                found = self._labels[version] = Labels(self.max_rows)
                while len(self._labels) > _LABEL_VERSIONS:
                    self._labels.popitem(last=False)
            else:
                self._labels.move_to_end(version)
            return found

    def clear(self) -> None:
        """Forget everything (counters included)."""
        with self._lock:
            self._entries.clear()
            self._labels.clear()
            self._rows = self._hits = self._misses = 0

    def stats(self) -> CacheStats:
        """Hits, misses, entries and rows held."""
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._entries), self._rows)
