"""A Citus cluster (distributed PostgreSQL): which tables are distributed how, and making it so at `migrate`.

A database whose `citus` extension is installed is a Citus deployment (docs/SCALING.md): `migrate` first creates
the same schema as on one PostgreSQL node, then `distribute` turns it into the cluster's layout, once:
- `view_events` and every table keyed by blog (the blog rollup shapes and their reader sets) are distributed by
  `blog_id` and co-located, so a statement grouped by blog, or filtered to one, runs on the workers shard by shard;
  their keys all start or end with `blog_id` (Citus requires every unique key of a distributed table to hold it).
  `view_events` keeps `id` first in its primary key, so the pass's id range is still an index range on each shard;
  `eventId` is unique per blog (CONTRACT 1), the key is (event_id, blog_id).
- `countries`, `authors`, `blogs` and the `viewers` dictionary are reference tables (a copy on every node), so the
  raw and rollup statements join them on the workers.
- The blog-less shapes (totals and reader country, their reader sets) and the bookkeeping (watermark, horizons,
  versions) stay plain tables on the coordinator: a pass writes each of them one row per bucket (and country), a
  question reads a few hundred rows, and neither needs a worker (docs/BENCHMARKS.md, "Citus cluster beside one
  PostgreSQL node").
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from analytics_gql.storage.tables import SHAPE_KEYS, reader_tables, rollup_tables

REFERENCE_TABLES = ("countries", "authors", "blogs", "viewers")
BLOG_TABLES = tuple(t.name for (_, s), t in [*rollup_tables.items(), *reader_tables.items()]
                    if "blog_id" in SHAPE_KEYS[s])
LOCAL_TABLES = tuple(t.name for (_, s), t in [*rollup_tables.items(), *reader_tables.items()]
                     if "blog_id" not in SHAPE_KEYS[s])


def installed(conn: Connection) -> bool:
    """True when the connected PostgreSQL database has the citus extension (a Citus coordinator)."""
    if conn.dialect.name != "postgresql":
        return False
    return conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).first() is not None


def on_citus(conn: Connection) -> bool:
    """installed(), remembered per DBAPI connection (asked on hot paths: every ingest batch and pass step)."""
    info = conn.connection.info
    if "citus" not in info:
        info["citus"] = installed(conn)
    return bool(info["citus"])


def distributed(conn: Connection) -> dict[str, str]:
    """Each Citus table of this database and its kind: 'distributed' (by blog_id) or 'reference'."""
    rows = conn.execute(text(
        "SELECT logicalrelid::regclass::text, partmethod FROM pg_dist_partition"
    ))
    return {name: ("reference" if method == "n" else "distributed") for name, method in rows}


def distribute(conn: Connection) -> list[str]:
    """Give a freshly migrated Citus database its layout (module docstring); a no-op once done. Returns what it did.

    Runs in the caller's transaction, after the migrations; existing rows move to the shards with their tables.
    """
    done = distributed(conn)
    actions: list[str] = []
    for name in REFERENCE_TABLES:
        if name not in done:
            conn.execute(text("SELECT create_reference_table(:t)"), {"t": name})
            actions.append(f"reference {name}")
    if "view_events" not in done:
        # Keys that hold the distribution column: id first (the pass's range scans), eventId unique per blog.
        conn.execute(text("ALTER TABLE view_events DROP CONSTRAINT pk_view_events"))
        conn.execute(text("ALTER TABLE view_events ADD CONSTRAINT pk_view_events PRIMARY KEY (id, blog_id)"))
        conn.execute(text("ALTER TABLE view_events DROP CONSTRAINT uq_view_events_event_id"))
        conn.execute(text(
            "ALTER TABLE view_events ADD CONSTRAINT uq_view_events_event_id UNIQUE (event_id, blog_id)"))
        conn.execute(text("SELECT create_distributed_table('view_events', 'blog_id')"))
        actions.append("distributed view_events by blog_id")
    for name in BLOG_TABLES:
        if name not in done:
            conn.execute(text("SELECT create_distributed_table(:t, 'blog_id', colocate_with => 'view_events')"),
                         {"t": name})
            actions.append(f"distributed {name} by blog_id")
    return actions
