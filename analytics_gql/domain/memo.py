"""Results derived from an immutable object, found again by that object's identity.

The query cache hands the same page object (a list of ranked rows) to every request that asks the same question
of the same data (storage/parts.py, `Part.pages`). What later layers derive from such a page (report rows,
GraphQL objects) is then the same too, so they memoise it here instead of rebuilding a 1,000-row page per request.
An entry holds a reference to its source, so the source's id cannot be reused by another object while the entry
exists; a lookup also checks the source by identity and the extra key by equality.
"""

from __future__ import annotations

import threading
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class SharedList(list[Any]):
    """A list that is memoised and shared between requests: nobody mutates it, so what is derived from it (the
    output objects of api/execution.py) may be memoised on its identity as well."""


class IdentityMemo(Generic[V]):
    """At most `size` values, each keyed by the identity of a source object and a key compared by equality."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[int, tuple[object, object, V]] = {}
        self._lock = threading.Lock()

    def get(self, source: object, key: object = None) -> V | None:
        """The value stored for this very `source` object and an equal `key`, or None."""
        found = self._entries.get(id(source))
        if found is not None and found[0] is source and found[1] == key:
            return found[2]
        return None

    def put(self, source: object, value: V, key: object = None) -> V:
        """Remember `value` for `source` and `key` (all entries are dropped when full); return it."""
        with self._lock:
            if len(self._entries) >= self._size:
                self._entries.clear()
            self._entries[id(source)] = (source, key, value)
        return value
