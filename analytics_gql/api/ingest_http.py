"""POST /ingest/{kind}: NDJSON bodies through the shared loading code, errors reported by line number."""

from __future__ import annotations

from typing import Any, cast

from analytics_gql.api import metrics
from analytics_gql.storage.engine import Database

KINDS = ("authors", "blogs", "views")
# Not text/plain nor form types: those are sent cross-site without a CORS preflight (CSRF on an open server).
CONTENT_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/json")


def split_lines(raw: bytes) -> tuple[list[bytes], list[int]]:
    """The non-blank lines of an NDJSON body and their line numbers (from 1; blank lines count but are skipped)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines: list[bytes] = []
    numbers: list[int] = []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if line.strip():
            lines.append(line)
            numbers.append(n)
    return lines, numbers


def ingest_ndjson(db: Database, kind: str, raw: bytes) -> dict[str, Any]:
    """Store an NDJSON body (blocking; run it in a worker thread) and return the reply body."""
    from analytics_gql.loading import ingest_records  # built in parallel; imported when first used

    lines, numbers = split_lines(raw)
    # Raw bytes go straight to orjson: invalid UTF-8 is a rejected line, not a silently mangled one.
    result = ingest_records(db, kind, cast(list[Any], lines), index_base=0)
    metrics.observe_ingest(kind, result)
    reply = result.to_dict()
    for error in reply["errors"]:
        # ingest_records numbers the non-blank lines it was given; the client counts every line of its file.
        error["line"] = error["index"] = numbers[error["index"]]
    return reply
