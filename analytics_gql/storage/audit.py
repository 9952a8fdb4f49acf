"""Rollup write side, audit: sampled cells recomputed from raw events, and their repair."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, insert, select, text, tuple_, update

from analytics_gql.domain.calendar import Grain
from analytics_gql.storage.fold import drop_temps
from analytics_gql.storage.tables import (
    ROLLUPS_VERSION,
    SHAPE_KEYS,
    STATE_ID,
    UNKNOWN_COUNTRY,
    Shape,
    bump_version,
    rollup_state,
    rollup_tables,
    view_events,
)

Key = tuple[int, int | None, str | None]  # (bucket, blog_id, viewer_country); None where the shape has no such key


@dataclass(frozen=True, slots=True)
class Cell:
    """One rollup cell: its table (grain and shape), key, instant interval, and the views it holds (0 if absent)."""

    grain: Grain
    shape: Shape
    bucket: int
    blog_id: int | None
    viewer_country: str | None
    start: int
    end: int
    stored: int


def project(shape: Shape, bucket: int, blog_id: int, viewer_country: str) -> Key:
    """A full key narrowed to what `shape` keeps."""
    keys = SHAPE_KEYS[shape]
    return (bucket, blog_id if "blog_id" in keys else None, viewer_country if "viewer_country" in keys else None)


def _key_cols(table: Table, shape: Shape) -> list[Any]:
    return [table.c.bucket, *(table.c[k] for k in SHAPE_KEYS[shape])]


def _as_key(shape: Shape, row: tuple[Any, ...]) -> Key:
    keys = SHAPE_KEYS[shape]
    values = dict(zip(keys, row[1:], strict=True))
    blog = values.get("blog_id")
    country = values.get("viewer_country")
    return (int(row[0]), None if blog is None else int(blog), None if country is None else str(country))


def sample_stored_cells(conn: Connection, grain: Grain, shape: Shape, n: int) -> list[Key]:
    """Up to `n` random keys stored in one rollup table."""
    t = rollup_tables[(grain, shape)]
    rows = conn.execute(select(*_key_cols(t, shape)).order_by(func.random()).limit(n))
    return [_as_key(shape, tuple(r)) for r in rows]


def sample_raw_events(conn: Connection, ids: list[int]) -> list[tuple[int, int, str]]:
    """(viewed_at, blog_id, viewer_country) of the raw events with the given ids that exist."""
    if not ids:
        return []
    rows = conn.execute(select(view_events.c.viewed_at, view_events.c.blog_id,
                               func.coalesce(view_events.c.viewer_country, UNKNOWN_COUNTRY))
                        .where(view_events.c.id.in_(ids)))
    return [(int(a), int(b), str(c)) for a, b, c in rows]


def stored_views(conn: Connection, grain: Grain, shape: Shape, keys: list[Key]) -> dict[Key, int]:
    """Views stored in one rollup table for the given keys (missing keys are absent from the result)."""
    t = rollup_tables[(grain, shape)]
    cols = _key_cols(t, shape)
    out: dict[Key, int] = {}
    for i in range(0, len(keys), 500):
        batch = [tuple(v for v in k if v is not None) for k in keys[i:i + 500]]
        cond = tuple_(*cols).in_(batch) if len(cols) > 1 else cols[0].in_([b[0] for b in batch])
        for row in conn.execute(select(*cols, t.c.views).where(cond)):
            out[_as_key(shape, tuple(row[:-1]))] = int(row[-1])
    return out


def raw_counts(conn: Connection, cells: list[Cell], wm: int) -> list[int]:
    """Raw views (id <= wm) per cell, recomputed from its instant interval, one statement per shape.

    Cells keyed by blog drive the join from the raw table (SQLite: CROSS JOIN fixes the loop order; PostgreSQL
    hashes the cells), so their cost is one pass over raw whatever their number and length. Cells without a blog
    key are counted through the viewed_at index over their interval, so the caller samples few long ones.
    """
    if not cells:
        return []
    on_commit = " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""
    drop_temps(conn, "audit_cells")
    conn.execute(text("CREATE TEMP TABLE audit_cells (i INTEGER PRIMARY KEY, shape VARCHAR(16), blog_id INTEGER, "
                      f"viewer_country VARCHAR(2), lo BIGINT, hi BIGINT){on_commit}"))
    prefix = "temp." if conn.dialect.name == "sqlite" else ""
    conn.execute(text(f"CREATE INDEX {prefix}ix_audit_cells ON audit_cells (blog_id, viewer_country)"))
    conn.execute(text("INSERT INTO audit_cells (i, shape, blog_id, viewer_country, lo, hi) "
                      "VALUES (:i, :shape, :blog_id, :viewer_country, :lo, :hi)"),
                 [{"i": i, "shape": c.shape.value, "blog_id": c.blog_id, "viewer_country": c.viewer_country,
                   "lo": c.start, "hi": c.end} for i, c in enumerate(cells)])
    vc = f"COALESCE(e.viewer_country, '{UNKNOWN_COUNTRY}')"
    statements = {
        Shape.FULL: "SELECT c.i AS i, count(*) AS n FROM view_events e CROSS JOIN audit_cells c "
                    f"WHERE c.shape = 'full' AND e.blog_id = c.blog_id AND {vc} = c.viewer_country "
                    "AND e.viewed_at >= c.lo AND e.viewed_at < c.hi AND e.id <= :wm GROUP BY c.i",
        Shape.BY_BLOG: "SELECT c.i AS i, count(*) AS n FROM view_events e CROSS JOIN audit_cells c "
                       "WHERE c.shape = 'by_blog' AND e.blog_id = c.blog_id "
                       "AND e.viewed_at >= c.lo AND e.viewed_at < c.hi AND e.id <= :wm GROUP BY c.i",
    }
    counts: dict[int, int] = {}
    for shape in {c.shape for c in cells} & set(statements):
        counts.update({int(i): int(n) for i, n in conn.execute(text(statements[shape]), {"wm": wm})})
    # Cells without a blog: one indexed count each (a correlated subquery per cell is the same work, and Citus
    # cannot plan one from a coordinator table into the distributed raw table).
    for i, c in enumerate(cells):
        if c.shape in (Shape.BY_COUNTRY, Shape.TOTAL):
            country = f" AND {vc} = :vc" if c.shape is Shape.BY_COUNTRY else ""
            counts[i] = int(conn.execute(text(
                "SELECT count(*) FROM view_events e WHERE e.viewed_at >= :lo AND e.viewed_at < :hi AND e.id <= :wm"
                + country), {"lo": c.start, "hi": c.end, "wm": wm, "vc": c.viewer_country}).scalar_one())
    drop_temps(conn, "audit_cells")
    return [counts.get(i, 0) for i in range(len(cells))]


def set_cell(conn: Connection, cell: Cell, views: int) -> None:
    """Overwrite one rollup cell with the recomputed count (deleting it when 0).

    Every shape is an independent sum over raw events, so one cell is repaired on its own.
    """
    t = rollup_tables[(cell.grain, cell.shape)]
    values: dict[str, Any] = {"bucket": cell.bucket}
    if cell.blog_id is not None:
        values["blog_id"] = cell.blog_id
    if cell.viewer_country is not None:
        values["viewer_country"] = cell.viewer_country
    cond = [t.c[k] == v for k, v in values.items()]
    conn.execute(t.delete().where(*cond))
    if views:
        conn.execute(insert(t).values(**values, views=views))
    bump_version(conn, ROLLUPS_VERSION)  # a repaired cell changes answers at an unchanged watermark


def record_audit(conn: Connection, at_us: int) -> None:
    """Remember when the audit last ran."""
    conn.execute(update(rollup_state).where(rollup_state.c.id == STATE_ID).values(last_audit_at=at_us))


