"""The ingest mutations through POST /graphql on both databases: exact counts, 0-based error indexes, last-wins
upserts, the 10,000-item limit (refused before anything is stored), and what was stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from analytics_gql.api.app import create_app
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import authors, blogs, view_events

pytestmark = pytest.mark.citus  # also on a Citus cluster when ANALYTICS_TEST_CITUS_URL is set


RESULT = "{ accepted duplicates rejected errors { index message } }"
AUTHORS = f"mutation($a: [AuthorInput!]!) {{ upsertAuthors(authors: $a) {RESULT} }}"
BLOGS = f"mutation($b: [BlogInput!]!) {{ upsertBlogs(blogs: $b) {RESULT} }}"
VIEWS = f"mutation($v: [ViewInput!]!) {{ recordViews(views: $v) {RESULT} }}"
T0_US = 1_738_411_200_000_000  # 2025-02-01T12:00:00Z


def stored_views(db: Database) -> list[tuple[Any, ...]]:
    """(event_id, blog client id, viewer_id, viewer_country, viewed_at) of every stored view, by raw id."""
    with db.read() as conn:
        q = (select(view_events.c.event_id, blogs.c.external_id, view_events.c.viewer_id,
                    view_events.c.viewer_country, view_events.c.viewed_at)
             .join(blogs, blogs.c.id == view_events.c.blog_id).order_by(view_events.c.id))
        return [tuple(r) for r in conn.execute(q)]


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:
    # The default 64 KB body cannot carry 10,000 views; the item limit is what is tested here.
    settings = Settings(database_url=db.settings.db_url, max_body_bytes=1 << 20)
    with TestClient(create_app(settings, db)) as c:
        yield c


def call(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    r = client.post("/graphql", json={"query": query, "variables": variables})
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def reply(accepted: int, duplicates: int, rejected: int, *errors: tuple[int, str]) -> dict[str, Any]:
    return {"accepted": accepted, "duplicates": duplicates, "rejected": rejected,
            "errors": [{"index": i, "message": m} for i, m in errors]}


def test_mutations_count_exactly_and_name_bad_items_by_index(client: TestClient, db: Database) -> None:
    got = call(client, AUTHORS, a=[{"id": "a1", "name": "Abebe"}, {"id": "a2", "name": "Bo", "country": "ke"},
                                   {"id": "a1", "name": "Abebe B.", "country": "ET"}])
    assert got == {"data": {"upsertAuthors": reply(2, 0, 1, (1, "country: 'ke' must be upper case (KE)"))}}
    got = call(client, BLOGS, b=[
        {"id": "b1", "title": "First", "authorId": "a1", "createdAt": "2025-01-01T00:00:00Z"},
        {"id": "b2", "title": "Orphan", "authorId": "ghost", "createdAt": "2025-01-01T00:00:00Z"},
        {"id": "b1", "title": "Hello", "authorId": "a1", "country": "KE", "createdAt": "2025-01-02T00:00:00+01:00"},
    ])
    assert got == {"data": {"upsertBlogs": reply(2, 0, 1, (1, "unknown author 'ghost': load it first"))}}
    with db.read() as conn:
        assert [tuple(r) for r in conn.execute(select(authors.c.external_id, authors.c.name, authors.c.country_code)
                                               .order_by(authors.c.external_id))] == [("a1", "Abebe B.", "ET")]
        assert [tuple(r) for r in conn.execute(select(blogs.c.external_id, blogs.c.title, blogs.c.country_code,
                                                      blogs.c.created_at))] == [("b1", "Hello", "KE",
                                                                                 1_735_772_400_000_000)]
    views = [
        {"eventId": "e1", "blogId": "b1", "viewerId": "u1", "viewerCountry": "KE", "viewedAt": "2025-02-01T12:00:00Z"},
        {"eventId": "e2", "blogId": "nope", "viewedAt": "2025-02-01T12:00:00Z"},
        {"eventId": "e1", "blogId": "b1", "viewedAt": "2025-02-01T13:00:00Z"},  # stored just before: a duplicate
        {"blogId": "b1", "viewerCountry": "XX", "viewedAt": "2025-02-01T12:00:00Z"},
        {"blogId": "b1", "viewedAt": "2025-02-01T14:00:00+02:00"},
        {"eventId": "e3", "blogId": "b1", "viewerId": "u\u0000", "viewedAt": "2025-02-01T12:00:00Z"},
        {"eventId": "e4", "blogId": "b1", "viewedAt": "2025-02-01T12:00:01"},  # no offset: UTC
    ]
    got = call(client, VIEWS, v=views)
    assert got == {"data": {"recordViews": reply(
        3, 1, 3, (1, "unknown blog 'nope': load the blog first"),
        (3, "viewerCountry: 'XX' is not an ISO 3166-1 alpha-2 country code"),
        (5, "viewerId: contains a NUL character"))}}
    want = [("e1", "b1", "u1", "KE", T0_US), (None, "b1", None, None, T0_US), ("e4", "b1", None, None, T0_US + 10**6)]
    assert stored_views(db) == want
    got = call(client, VIEWS, v=views)  # a retry stores nothing new (the id-less view is a new view, by contract)
    assert got["data"]["recordViews"]["duplicates"] == 3 and got["data"]["recordViews"]["accepted"] == 1
    assert stored_views(db) == [*want, (None, "b1", None, None, T0_US)]


def test_ten_thousand_items_a_call_and_not_one_more(client: TestClient, db: Database) -> None:
    call(client, AUTHORS, a=[{"id": "a1", "name": "Abebe"}])
    call(client, BLOGS, b=[{"id": "b1", "title": "T", "authorId": "a1", "createdAt": "2025-01-01T00:00:00Z"}])
    views = [{"eventId": f"e{i}", "blogId": "b1", "viewedAt": "2025-02-01T12:00:00Z"} for i in range(10_001)]
    got = call(client, VIEWS, v=views)
    assert got["data"] is None
    (error,) = got["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith("at most 10000 views per call (got 10001)")
    assert stored_views(db) == []
    got = call(client, VIEWS, v=views[:10_000])
    assert got == {"data": {"recordViews": reply(10_000, 0, 0)}}
    assert [r[0] for r in stored_views(db)] == [f"e{i}" for i in range(10_000)]
    for query, name, key in ((AUTHORS, "authors", "a"), (BLOGS, "blogs", "b")):
        item = {"id": "x", "name": "N"} if key == "a" else {"id": "x", "title": "T", "authorId": "a1",
                                                            "createdAt": "2025-01-01T00:00:00Z"}
        got = call(client, query, **{key: [item] * 10_001})
        assert got["errors"][0]["message"].startswith(f"at most 10000 {name} per call (got 10001)")


def test_scope_is_checked_before_the_input(db: Database) -> None:
    """A read-only key sending too many items is FORBIDDEN (its scope), not BAD_USER_INPUT (its input): the key is
    judged before anything it sent; an ingest key gets the limit's message. Nothing is stored either way."""
    settings = Settings(database_url=db.settings.db_url, max_body_bytes=1 << 20, api_keys="r1:read;l1:ingest")
    views = [{"eventId": f"e{i}", "blogId": "b1", "viewedAt": "2025-02-01T12:00:00Z"} for i in range(10_001)]
    with TestClient(create_app(settings, db)) as c:
        for key, code in (("r1", "FORBIDDEN"), ("l1", "BAD_USER_INPUT")):
            for query, variables in ((VIEWS, {"v": views}), (AUTHORS, {"a": [{"id": "a", "name": "A"}] * 10_001})):
                r = c.post("/graphql", json={"query": query, "variables": variables},
                           headers={"Authorization": f"Bearer {key}"})
                assert [e["extensions"]["code"] for e in r.json()["errors"]] == [code], r.json()
    assert stored_views(db) == []
