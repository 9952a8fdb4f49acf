"""Logging for the long-running commands (serve, scheduler, worker): JSON lines for collectors, readable lines on a
terminal, routine noise kept out.

`ANALYTICS_LOG_FORMAT`: `auto` (the default: JSON unless stderr is a terminal), `json` or `text`. A JSON line has
`time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`, then whichever request fields the record
carries (`REQUEST_FIELDS`: the request id, the key's name, never the key, the GraphQL operation name, the duration
and the status), and `exception` with the traceback for masked errors.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import orjson

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("auto", "json", "text")
# Extra attributes of a record (logging's `extra=`) that both formats show, in this order.
REQUEST_FIELDS = ("request_id", "method", "route", "status", "duration_ms", "key", "operation", "errors")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {f: getattr(record, f) for f in REQUEST_FIELDS if getattr(record, f, None) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(), **_extras(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """The readable line, request fields appended as `name=value`."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The record as a readable line (and its traceback below it)."""
        line = super().format(record)
        extras = _extras(record)
        if not extras:
            return line
        head, sep, rest = line.partition("\n")
        return head + " " + " ".join(f"{k}={v}" for k, v in extras.items()) + sep + rest


def formatter(fmt: str = "auto", stream: Any = None) -> logging.Formatter:
    """The formatter `fmt` names; `auto` is text on a terminal (`stream`, default stderr) and JSON otherwise."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "auto":
        out = stream if stream is not None else sys.stderr
        fmt = "text" if hasattr(out, "isatty") and out.isatty() else "json"
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure(fmt: str = "auto") -> None:
    """INFO to stderr in one format. APScheduler logs every run of every job at INFO ("Running job ...", "executed
    successfully"): two lines each rollup interval, so its executors log warnings (missed runs, errors) only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, sys.stderr))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
