"""Test helpers for ingest: the stored view rows, in arrival order, with client blog ids."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import blogs, view_events


def stored_views(db: Database) -> list[tuple[Any, ...]]:
    """(event_id, blog client id, viewer_id, viewer_country, viewed_at) of every stored view, by raw id."""
    with db.read() as conn:
        q = (
            select(view_events.c.event_id, blogs.c.external_id, view_events.c.viewer_id,
                   view_events.c.viewer_country, view_events.c.viewed_at)
            .join(blogs, blogs.c.id == view_events.c.blog_id)
            .order_by(view_events.c.id)
        )
        return [tuple(r) for r in conn.execute(q)]
