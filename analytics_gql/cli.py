"""The composition root: `analytics-gql` subcommands wire Settings, the database, jobs and the server."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from analytics_gql.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


class Unreachable(Exception):
    """The database did not accept a connection (exit status 1: worth retrying, unlike a bad setting)."""


def _check_url(settings: Settings) -> URL:
    """Refuse an ANALYTICS_DATABASE_URL no dialect can use (for commands that must start while it is down)."""
    from analytics_gql.storage.engine import check_url

    return check_url(settings.db_url)


def _check_sqlite_file(url: URL) -> None:
    """Refuse a SQLite path with no file (storage/engine.check_sqlite_file)."""
    from analytics_gql.storage.engine import check_sqlite_file

    check_sqlite_file(url)


def _db(settings: Settings, *, migrated: bool = True):  # type: ignore[no-untyped-def]
    """The Database, checked before any work: the URL parses, a connection opens and (`migrated`) the schema is
    at head; each failure is one `error:` line instead of a traceback from deep inside the command."""
    from sqlalchemy.exc import DBAPIError

    from analytics_gql.errors import UserError
    from analytics_gql.storage import schema
    from analytics_gql.storage.engine import Database

    url = _check_url(settings)
    if migrated:
        _check_sqlite_file(url)
    db = Database(settings)
    try:
        with db.engine.connect() as conn:
            current = schema.current_revision(conn)
    except DBAPIError as e:
        db.dispose()
        detail = str(e.orig if e.orig is not None else e).strip().splitlines()
        raise Unreachable(detail[0] if detail else type(e).__name__) from None
    if migrated:
        head = schema.head_revision(db)
        if current != head:
            db.dispose()
            raise UserError(f"the database is not migrated (at revision {current}, head is {head}): "
                            "run `analytics-gql migrate` first")
    return db


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the Alembic migrations up to head."""
    from analytics_gql.storage import schema

    db = _db(settings, migrated=False)
    schema.upgrade(db)
    print(f"migrated {db.engine.url.render_as_string(hide_password=True)} to {schema.head_revision(db)}")
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    """Import NDJSON or CSV authors, blogs or views; bad lines are reported, good lines kept."""
    from analytics_gql import loading

    result = loading.import_path(_db(settings), args.kind, args.path, progress=None if args.progress else False)
    return 0 if result.rejected == 0 else 2


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    """Generate realistic synthetic authors, blogs and views."""
    from analytics_gql import loading

    loading.seed(_db(settings), authors=args.authors, blogs=args.blogs, views=args.views, days=args.days,
                 seed=args.seed, progress=None, viewers=args.viewers)
    return 0


def cmd_rollup(settings: Settings, args: argparse.Namespace) -> int:
    """Run rollup passes until caught up (or rebuild every grain when asked)."""
    from analytics_gql import rollup

    db = _db(settings)
    if args.rebuild:
        result = rollup.rebuild(db, settings, progress=None, patience_s=args.wait)
    else:
        result = rollup.catch_up(db, settings, progress=None, patience_s=args.wait)
    return 1 if result.skipped else 0  # not caught up: a scheduler or script calling this must see it


def cmd_compact(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the retention policy: delete what is folded in and past its horizon."""
    from analytics_gql import rollup

    print(rollup.compact(_db(settings), settings).summary())
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    """Recompute sampled rollup cells from raw events and repair drift."""
    from analytics_gql import rollup

    report = rollup.audit(_db(settings), settings, sample=args.sample, repair=not args.no_repair)
    print(report.summary())
    return 0 if report.ok or not args.no_repair else 3


def _status_json(st: Any, max_lag: float | None) -> dict[str, Any]:
    """The `status --json` document: rollupStatus's fields under the same names, then the operator's extras."""
    from analytics_gql.domain.calendar import from_us

    def iso(us: int | None) -> str | None:
        return from_us(us).isoformat() if us is not None else None

    rs = st.rollup
    lag = st.lag_us / 1e6
    return {
        "watermark": iso(rs.watermark), "watermarkId": rs.watermark_id, "pendingEvents": rs.pending_events,
        "oldestPending": None if st.oldest_pending_id is None else {
            "id": st.oldest_pending_id, "viewedAt": iso(st.oldest_pending_viewed_at),
            "ageSeconds": round((st.now - st.oldest_pending_viewed_at) / 1e6, 3)},
        "lagSeconds": round(lag, 3), "maxLag": max_lag, "lagExceeded": max_lag is not None and lag > max_lag,
        "lastRunAt": iso(rs.last_run_at),
        "lastPass": None if st.last_run_ms is None else {"events": rs.last_run_events,
                                                          "seconds": st.last_run_ms / 1000},
        "timezone": rs.timezone,
        "grains": [{"grain": g.grain, "rows": g.rows, "oldest": iso(g.oldest), "newest": iso(g.newest),
                    "retainedFor": g.retained_for, "completeFrom": iso(st.horizons.get(g.grain) or None)}
                   for g in rs.grains],
        "tables": [{"name": t.name, "grain": t.grain, "shape": t.shape, "rows": t.rows, "bytes": t.bytes}
                   for t in st.tables],
        "asOf": iso(st.now),
    }


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _status_lines(doc: dict[str, Any], colour: bool) -> list[str]:
    """The readable `status` report (colours only when `colour`: a terminal, NO_COLOR unset)."""
    def paint(text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if colour else text

    def when(iso: str | None) -> str:
        return iso.replace("T", " ").replace("+00:00", " UTC") if iso else "never"

    lag = doc["lagSeconds"]
    lag_text = f"lag {lag:,.3f} s"
    if doc["lagExceeded"]:
        lag_text = paint(lag_text + f" > --max-lag {doc['maxLag']:g} s", "1;31")
    elif doc["pendingEvents"]:
        lag_text = paint(lag_text, "33")
    else:
        lag_text = paint(lag_text, "32")
    lines = [f"watermark   {when(doc['watermark'])} (raw id {doc['watermarkId']:,})",
             f"pending     {doc['pendingEvents']:,} event(s), {lag_text}"]
    if doc["oldestPending"]:
        op = doc["oldestPending"]
        lines.append(f"oldest      id {op['id']:,}, viewed at {when(op['viewedAt'])} ({op['ageSeconds']:,.3f} s ago)")
    last = doc["lastPass"]
    lines.append(f"last pass   {when(doc['lastRunAt'])}" + (
        f": {last['events']:,} event(s) in {last['seconds']:.3f} s" if last else ""))
    lines.append(f"zone        {doc['timezone'] or '(no pass yet)'}")
    kept = []
    for g in doc["grains"]:
        days = "forever" if g["retainedFor"] is None else f"{g['retainedFor']} d"
        kept.append(f"{g['grain']} {days}" + (f" (complete from {when(g['completeFrom'])})"
                                              if g["completeFrom"] else ""))
    lines.append("retention   " + ", ".join(kept))
    lines.append("")
    lines.append(f"{'table':<24} {'grain':<6} {'shape':<11} {'rows':>12} {'size':>10}")
    for t in doc["tables"]:
        lines.append(f"{t['name']:<24} {t['grain']:<6} {t['shape'] or '-':<11} {t['rows']:>12,} "
                     f"{_human_size(t['bytes']):>10}")
    return lines


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the rollup lag and bookkeeping (exit 3 when the lag exceeds --max-lag)."""
    import json

    from analytics_gql import rollup

    doc = _status_json(rollup.operator_status(_db(settings), settings), args.max_lag)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print("\n".join(_status_lines(doc, colour)))
    return 3 if doc["lagExceeded"] else 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Run a Dramatiq worker over Redis for the rollup actors."""
    _check_url(settings)
    from analytics_gql.jobs import worker

    return worker.run(settings, threads=args.threads)


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    """Run the APScheduler process that enqueues rollup and compaction jobs."""
    _check_url(settings)
    from analytics_gql.jobs import scheduler

    scheduler.run_forever(settings)
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve GraphQL (and, on the embedded default, the scheduler and an in-process worker)."""
    _check_sqlite_file(_check_url(settings))
    from analytics_gql import serving

    serving.serve(settings, host=args.host, port=args.port)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Migrate, seed demo data when the database is empty, fold it in, then serve with live rollups."""
    from analytics_gql import loading, rollup, serving
    from analytics_gql.storage import schema

    db = _db(settings, migrated=False)
    schema.upgrade(db)
    if loading.is_empty(db):
        loading.seed(db, authors=200, blogs=2_000, views=args.views, days=400, seed=1, progress=None,
                     viewers=max(1_000, args.views // 10))
    rollup.catch_up(db, settings, progress=None)
    db.dispose()
    print(f"GraphiQL: http://{args.host}:{args.port}/graphql")
    print(f"Dashboard: http://{args.host}:{args.port}/dashboard")
    serving.serve(settings, host=args.host, port=args.port)
    return 0


def cmd_export_schema(settings: Settings, args: argparse.Namespace) -> int:
    """Print the GraphQL schema (SDL), or write it to a file."""
    from analytics_gql.api.schema import sdl

    text = sdl()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """Run one blogViews, top or performance query and write its rows as CSV or NDJSON (every page)."""
    from functools import partial

    import anyio
    import orjson

    from analytics_gql.api import export
    from analytics_gql.api.context import Context
    from analytics_gql.api.schema import build_schema

    try:
        with open(args.query_file, encoding="utf-8") as f:
            query = f.read()
    except OSError as e:
        print(f"error: cannot read {args.query_file}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        variables = orjson.loads(args.variables) if args.variables else None
    except orjson.JSONDecodeError as e:
        print(f"error: --variables is not valid JSON: {e}", file=sys.stderr)
        return 2
    if variables is not None and not isinstance(variables, dict):
        print("error: --variables must be a JSON object", file=sys.stderr)
        return 2
    db = _db(settings)
    ctx = Context(settings=settings, db=db)
    schema = build_schema(settings)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115 - closed below
    failed = False
    try:
        rows = anyio.run(partial(export.write, schema, ctx, query, variables, args.operation_name, out,
                                 ndjson=args.format == "ndjson"))
    except export.ExportError as e:
        for err in e.body.get("errors", []):
            code = (err.get("extensions") or {}).get("code", "INTERNAL")
            print(f"error: {code}: {err.get('message')}", file=sys.stderr)
        failed = True
        return 2 if e.status == 400 else 1
    except BrokenPipeError:  # `| head`: the reader has gone, which is not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no second broken-pipe message at exit
        return 0
    finally:
        if args.output:
            out.close()
            if failed:
                os.remove(args.output)  # nothing but a header was written: leave no file that looks like one
        else:
            out.flush()
        db.dispose()
    if args.output:
        print(f"{rows} rows written to {args.output}", file=sys.stderr)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    p = argparse.ArgumentParser(prog="analytics-gql", description="GraphQL analytics server for blog platforms.")
    sub = p.add_subparsers(dest="command", required=True)
    _serving_commands(sub)
    _data_commands(sub)
    return p


def _serving_commands(sub: Any) -> None:
    """migrate, serve, demo, worker, scheduler, rollup, compact, audit."""
    sub.add_parser("migrate", help=cmd_migrate.__doc__).set_defaults(fn=cmd_migrate)

    s = sub.add_parser("serve", help=cmd_serve.__doc__)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("demo", help=cmd_demo.__doc__)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--views", type=int, default=300_000)
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("worker", help=cmd_worker.__doc__)
    s.add_argument("--threads", type=int, default=2)
    s.set_defaults(fn=cmd_worker)
    sub.add_parser("scheduler", help=cmd_scheduler.__doc__).set_defaults(fn=cmd_scheduler)

    s = sub.add_parser("rollup", help=cmd_rollup.__doc__)
    s.add_argument("--rebuild", action="store_true", help="drop and recompute every grain (after a zone change)")
    s.add_argument("--wait", type=_non_negative_float, default=600.0, metavar="SECONDS",
                   help="give up (exit 1) when busy writers keep every round from starting for this long")
    s.set_defaults(fn=cmd_rollup)
    sub.add_parser("compact", help=cmd_compact.__doc__).set_defaults(fn=cmd_compact)

    s = sub.add_parser("audit", help=cmd_audit.__doc__)
    s.add_argument("--sample", type=_positive_int, default=200, help="cells to recompute per rollup table")
    s.add_argument("--no-repair", action="store_true", help="report drift only")
    s.set_defaults(fn=cmd_audit)


def _data_commands(sub: Any) -> None:
    """status, import, seed, export, export-schema."""
    s = sub.add_parser("status", help=cmd_status.__doc__)
    s.add_argument("--json", action="store_true", help="one JSON document (rollupStatus's fields and more)")
    s.add_argument("--max-lag", type=_non_negative_float, default=None, metavar="SECONDS",
                   help="exit 3 when the oldest pending event may have waited longer than this")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("import", help=cmd_import.__doc__)
    s.add_argument("kind", choices=["authors", "blogs", "views"])
    s.add_argument("path", help="NDJSON file, CSV (by .csv extension), or - for stdin")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    s.set_defaults(fn=cmd_import)

    s = sub.add_parser("seed", help=cmd_seed.__doc__)
    s.add_argument("--authors", type=int, default=100)
    s.add_argument("--blogs", type=int, default=1_000)
    s.add_argument("--views", type=int, default=100_000)
    s.add_argument("--days", type=int, default=365)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--viewers", type=_positive_int, default=None, metavar="N",
                   help="distinct viewer ids (returning readers and one-time visitors; default views/10, >= 1000)")
    s.set_defaults(fn=cmd_seed)

    s = sub.add_parser("export", help=cmd_export.__doc__)
    s.add_argument("query_file", metavar="QUERY_FILE", help="a GraphQL document with one blogViews, top or "
                   "performance field")
    s.add_argument("--variables", metavar="JSON", help="the operation's variables, a JSON object")
    s.add_argument("--operation-name", metavar="NAME", help="the operation to run when the file holds several")
    s.add_argument("--format", choices=["csv", "ndjson"], default="csv")
    s.add_argument("-o", "--output", metavar="FILE", help="write to this file instead of stdout")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("export-schema", help=cmd_export_schema.__doc__)
    s.add_argument("-o", "--output", help="write to this file instead of stdout")
    s.set_defaults(fn=cmd_export_schema)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `analytics-gql` console script."""
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    from analytics_gql.errors import UserError

    try:
        settings = Settings()
    except ValidationError as e:
        for err in e.errors():
            name = "ANALYTICS_" + "_".join(str(part) for part in err["loc"]).upper()
            print(f"error: {name}: {err['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    try:
        return int(args.fn(settings, args) or 0)
    except UserError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    except Unreachable as e:
        print(f"error: cannot reach the database: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
