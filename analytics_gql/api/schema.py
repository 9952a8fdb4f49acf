"""The Strawberry schema: queries (blogViews, top, performance, rollupStatus) and mutations; resolvers stay short."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from analytics_gql import reports
from analytics_gql.api.context import Context
from analytics_gql.api.execution import execution_context_class
from analytics_gql.api.extensions import schema_extensions
from analytics_gql.api.types import (
    AuthorInput,
    BlogInput,
    BlogViewsResult,
    Comparison,
    Dimension,
    Granularity,
    IngestResult,
    PerformanceResult,
    RefreshResult,
    RollupStatus,
    TimeRange,
    TopOrder,
    TopResult,
    ViewFilter,
    ViewInput,
    author_record,
    blog_record,
    comparison_to_domain,
    filter_to_domain,
    granularity_to_domain,
    range_to_domain,
    resume,
    view_record,
)
from analytics_gql.domain import queries as Q
from analytics_gql.errors import BadInput
from analytics_gql.settings import Settings
from analytics_gql.storage import rollups as rollup_store

Info = strawberry.Info[Context, None]
MAX_ITEMS = 10_000


_READER_FIELDS = frozenset({"readers", "totalReaders", "readersGrowth", "previousReaders"})


def _wants_readers(info: Info) -> bool:
    """True when any reader field is selected under this root field (fragments included; @skip/@include are not
    evaluated, so a skipped reader field still reads the sets: never the other way round)."""
    def walk(selections: list[object]) -> bool:
        return any(getattr(s, "name", None) in _READER_FIELDS or walk(getattr(s, "selections", None) or [])
                   for s in selections)

    return walk(list(info.selected_fields))


def _items(items: list[object], what: str) -> None:
    if len(items) > MAX_ITEMS:
        raise BadInput(f"at most {MAX_ITEMS} {what} per call (got {len(items)}); split the list or use "
                       f"POST /ingest/{what}")


@strawberry.type
class Query:
    @strawberry.field(description="Views (and distinct blogs) per group, and per period when a granularity is "
                                  "given. Ordered by periodStart, views descending, key. `compare` (without "
                                  "granularity) adds each row's views in a comparison range.")
    async def blog_views(self, info: Info, group_by: Dimension, granularity: Granularity | None = None,
                         range: TimeRange | None = None, filter: ViewFilter | None = None,
                         time_zone: str | None = None, first: int | None = 100,
                         after: str | None = None, compare: Comparison | None = None) -> BlogViewsResult:
        ctx = info.context
        q = Q.BlogViewsQuery(
            group_by=Q.Dimension(group_by.value), range=range_to_domain(range, time_zone, ctx.settings.timezone),
            granularity=granularity_to_domain(granularity) if granularity is not None else None,
            filter=filter_to_domain(filter),
            # CONTRACT 3: `first: Int = 100`, so an explicit null means the default.
            first=Q.check_between(100 if first is None else first, 1, Q.MAX_PAGE, "first"),
            compare=comparison_to_domain(compare), readers=_wants_readers(info))
        query = q.identity()
        page = await ctx.read(reports.blog_views, resume(q, after), share=not ctx.transient_pages, quick=True)
        return BlogViewsResult.from_domain(page, query)

    @strawberry.field(description="The top `limit` groups by views (ties broken by key), or by distinct readers "
                                  "with orderBy: READERS. `compare` adds each row's views in a comparison range.")
    async def top(self, info: Info, dimension: Dimension, range: TimeRange | None = None,
                  filter: ViewFilter | None = None, time_zone: str | None = None, limit: int | None = 10,
                  compare: Comparison | None = None, order_by: TopOrder | None = TopOrder.VIEWS) -> TopResult:
        ctx = info.context
        q = Q.TopQuery(dimension=Q.Dimension(dimension.value),
                       range=range_to_domain(range, time_zone, ctx.settings.timezone),
                       filter=filter_to_domain(filter),  # CONTRACT 3: `limit: Int = 10`; null means the default
                       limit=Q.check_between(10 if limit is None else limit, 1, Q.MAX_LIMIT, "limit"),
                       compare=comparison_to_domain(compare), readers=_wants_readers(info),
                       by_readers=order_by is TopOrder.READERS)
        return TopResult.from_domain(await ctx.read(reports.top, q, quick=True))

    @strawberry.field(description="A dense series: every period meeting the range, with blogs created and "
                                  "same-window growth against the previous period. At most 10,000 points.")
    async def performance(self, info: Info, granularity: Granularity, range: TimeRange,
                          filter: ViewFilter | None = None, author_id: strawberry.ID | None = None,
                          time_zone: str | None = None) -> PerformanceResult:
        ctx = info.context
        f = filter_to_domain(filter)
        if author_id is not None:
            from analytics_gql.domain import filters as F

            f = F.And((f, F.atom(F.Field.AUTHOR, str(author_id))))
        q = Q.PerformanceQuery(granularity=granularity_to_domain(granularity),
                               range=range_to_domain(range, time_zone, ctx.settings.timezone), filter=f,
                               readers=_wants_readers(info))
        return PerformanceResult.from_domain(await ctx.read(reports.performance, q, quick=True))

    @strawberry.field(description="Watermark, pending raw events, last pass and rows per rollup grain.")
    async def rollup_status(self, info: Info) -> RollupStatus:
        ctx = info.context
        return RollupStatus.from_domain(await ctx.read(rollup_store.status, ctx.settings.retention_days))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Insert or update authors (scope ingest); up to 10,000 a call.")
    async def upsert_authors(self, info: Info, authors: list[AuthorInput]) -> IngestResult:
        info.context.require("ingest")  # the key's scope first: a read-only key learns nothing about its input
        _items(authors, "authors")  # type: ignore[arg-type]
        return IngestResult.from_domain(await info.context.ingest("authors", [author_record(a) for a in authors]))

    @strawberry.mutation(description="Insert or update blogs (scope ingest); up to 10,000 a call.")
    async def upsert_blogs(self, info: Info, blogs: list[BlogInput]) -> IngestResult:
        info.context.require("ingest")  # the key's scope first: a read-only key learns nothing about its input
        _items(blogs, "blogs")  # type: ignore[arg-type]
        return IngestResult.from_domain(await info.context.ingest("blogs", [blog_record(b) for b in blogs]))

    @strawberry.mutation(description="Record views (scope ingest); a view whose eventId is stored counts once.")
    async def record_views(self, info: Info, views: list[ViewInput]) -> IngestResult:
        info.context.require("ingest")  # the key's scope first: a read-only key learns nothing about its input
        _items(views, "views")  # type: ignore[arg-type]
        return IngestResult.from_domain(await info.context.ingest("views", [view_record(v) for v in views]))

    @strawberry.mutation(description="Enqueue a rollup pass (scope admin).")
    async def refresh_rollups(self, info: Info) -> RefreshResult:
        return RefreshResult(enqueued=await info.context.enqueue_refresh())


class _Schema(strawberry.Schema):
    """Errors are logged by ErrorPolicy (each masked INTERNAL error once, with its request id). Strawberry's own
    logging of every error would also log each client mistake (BAD_USER_INPUT) at ERROR with a traceback and the
    client's strings."""

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        return None


def build_schema(settings: Settings, *, fast: bool = True,
                 extensions: tuple[type[SchemaExtension], ...] = ()) -> strawberry.Schema:
    """The executable schema with the security and performance extensions for `settings`.

    `fast=False` completes results with graphql-core's own execution context (api/execution.py has the fast path;
    tests compare the two); `extensions` are appended to the standard ones (tests)."""
    return _Schema(query=Query, mutation=Mutation, extensions=[*schema_extensions(settings), *extensions],
                   execution_context_class=execution_context_class() if fast else None,
                   config=StrawberryConfig(disable_field_suggestions=not settings.introspection))


def sdl() -> str:
    """The schema in SDL, as committed in schema.graphql."""
    schema = strawberry.Schema(query=Query, mutation=Mutation)
    return schema.as_str() + "\n"
