"""The Starlette application: /graphql, /export, /ingest/*, health, readiness, metrics, GraphiQL, statics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry import Schema

from analytics_gql.api import dashboard, export, graphiql, ingest_http, metrics
from analytics_gql.api.auth import authenticate
from analytics_gql.api.context import Context, make_limiter
from analytics_gql.api.extensions import INTERNAL_MESSAGE, present
from analytics_gql.api.ratelimit import RateLimiter, caller_bucket
from analytics_gql.settings import Settings
from analytics_gql.storage import schema as migrations
from analytics_gql.storage.engine import Database

log = logging.getLogger("analytics_gql.api")
# One line per request (logs.REQUEST_FIELDS): INFO for the data endpoints, DEBUG for probes, metrics and statics.
request_log = logging.getLogger("analytics_gql.requests")
_OPERATION_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,63}$")
T = TypeVar("T")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Paths that need a key; health, readiness, metrics, GraphiQL's page and its static files do not.
_PROTECTED = ("/graphql", "/export", "/ingest/")
# /readyz and /metrics answer within this many seconds whatever the database does (a locked table, a frozen server):
# a probe or a scrape that hangs is worse than one that says "not ready" or leaves the rollup gauges out.
PROBE_TIMEOUT_S = 3.0
_PROBE_STATEMENT_MS = 2_500  # PostgreSQL ends the probe's statements itself, so abandoned threads do not pile up
_SLOW = {"status": "unavailable", "reason": "database did not answer in time"}
# Browsers send these cross-origin without a preflight ("simple" requests): refusing them stops CSRF.
_JSON_TYPES = ("application/json", "application/graphql-response+json")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    """A GraphQL-shaped error body, also used by the non-GraphQL routes."""
    return json_response({"errors": [{"message": message, "extensions": {"code": code}}]}, status, headers)


class BodyTooLarge(Exception):
    """The request body is over its limit."""


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (without reading on) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge
        except ValueError:
            raise BodyTooLarge from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _route_label(path: str) -> str:
    if path.startswith("/ingest/"):
        return "/ingest"
    if path.startswith("/static/"):
        return "/static"
    if path in ("/graphql", "/export", "/dashboard", "/healthz", "/readyz", "/metrics"):
        return path
    return "other"


class Gate:
    """Request id, HTTP metrics, API-key checks and rate limits, all before any route reads the body."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = settings.keys
        rule = settings.rate_limit_rule
        self.limiter = RateLimiter(rule) if rule is not None else None

    def limited(self, scope: Scope, headers: dict[bytes, bytes]) -> Response | None:
        """A 429 when the (authenticated) caller's bucket is empty, else None after taking a token from it."""
        if self.limiter is None:
            return None
        wait = self.limiter.take(caller_bucket(bool(self.keys), headers, scope.get("client")))
        if not wait:
            return None
        return error_response(429, f"rate limit exceeded ({self.limiter.describe()}); retry after {wait} s",
                              "RATE_LIMITED", {"Retry-After": str(wait)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        route = _route_label(scope["path"])
        status_seen = 500
        started = False
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status_seen, started
            if message["type"] == "http.response.start":
                started = True
                status_seen = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        caller = authenticate(self.keys, headers, scope.get("query_string", b""))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["caller"] = caller
        try:
            path = scope["path"]
            protected = path == "/graphql" and scope["method"] != "GET" or path == "/export" \
                or path.startswith("/ingest/")
            if protected and not caller.authenticated:
                response = error_response(401, caller.problem or "unauthenticated", "UNAUTHENTICATED",
                                          {"WWW-Authenticate": 'Bearer realm="analytics-gql"'})
                await response(scope, receive, send_with_id)
                return
            # Every path that needs a key is a data endpoint and is rate limited, after authentication.
            refused = self.limited(scope, headers) if protected else None
            if refused is not None:
                await refused(scope, receive, send_with_id)
                return
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                # Outside GraphQL (e.g. the database down under /ingest): the same masked error as a resolver's,
                # logged once with the id the client receives, not starlette's bare text/plain 500 without one.
                log.exception("internal error (request %s, %s %s)", request_id, scope["method"], route)
                if started:
                    raise  # too late for another response; the server closes the connection
                body = {"errors": [{"message": INTERNAL_MESSAGE,
                                    "extensions": {"code": "INTERNAL", "requestId": request_id}}]}
                await json_response(body, 500)(scope, receive, send_with_id)
        finally:
            metrics.HTTP_REQUESTS.labels(route, str(status_seen)).inc()
            self.log_request(scope, state, route, status_seen, time.perf_counter() - t0)

    def log_request(self, scope: Scope, state: dict[str, Any], route: str, status: int, seconds: float) -> None:
        """The request's log line: id, method, route (never the URL), status, duration, key name (never the key),
        GraphQL operation name and error codes; no header, query string or body."""
        level = logging.INFO if route in ("/graphql", "/ingest", "/export") and scope["method"] != "GET" \
            else logging.DEBUG
        if not request_log.isEnabledFor(level):
            return
        caller = state.get("caller")
        key = caller.key_name if caller is not None and caller.authenticated else None
        operation = state.get("operation")
        request_log.log(level, "%s %s %d %.1f ms", scope["method"], route, status, seconds * 1000, extra={
            "request_id": state.get("request_id"), "method": scope["method"], "route": route, "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "key": key if key is not None else ("open" if not self.keys else None),
            "operation": operation if isinstance(operation, str) and _OPERATION_NAME.match(operation) else None,
            "errors": state.get("error_codes")})


def _context(request: Request, settings: Settings, db: Database, limiter: anyio.CapacityLimiter,
             enqueue: Callable[[Settings], bool] | None) -> Context:
    caller = request.state.caller
    return Context(settings=settings, db=db, scopes=caller.scopes, request_id=request.state.request_id,
                   authenticated=caller.authenticated, limiter=limiter, enqueue=enqueue)


def _formatted(error: GraphQLError, request_id: str, *, suggestions: bool) -> dict[str, Any]:
    """The error as JSON. Errors raised by extension hooks (e.g. the parser's token limit) bypass ErrorPolicy's
    post-processing inside strawberry, so the same policy is applied here."""
    return dict(present(error, suggestions=suggestions, request_id=request_id).formatted)


class _Handlers:
    """The endpoints of one app: what they share (settings, database, schema, thread limiters, the head revision)."""

    def __init__(self, settings: Settings, database: Database, gql: Schema,
                 enqueue: Callable[[Settings], bool] | None) -> None:
        self.settings, self.database, self.gql, self.enqueue = settings, database, gql, enqueue
        self.limiter = make_limiter()
        # Probes get threads of their own: 16 slow GraphQL requests must not make /readyz wait for a slot.
        self.probe_limiter = anyio.CapacityLimiter(2)
        self.head = migrations.head_revision(database)

    async def probe(self, fn: Callable[[], T], timed_out: T) -> T:
        """fn() on a probe thread, or `timed_out` when it has not answered within PROBE_TIMEOUT_S."""
        with anyio.move_on_after(PROBE_TIMEOUT_S):
            return await anyio.to_thread.run_sync(fn, limiter=self.probe_limiter, abandon_on_cancel=True)
        log.warning("database did not answer a probe within %.1f s", PROBE_TIMEOUT_S)
        return timed_out

    async def graphql_get(self, request: Request) -> Response:
        accepts_html = "text/html" in request.headers.get("accept", "")
        if self.settings.graphiql and accepts_html and "query" not in request.query_params:
            body = graphiql.page(endpoint="/graphql", keys_required=bool(self.settings.keys))
            return HTMLResponse(body, headers={"Content-Security-Policy": graphiql.CONTENT_SECURITY_POLICY,
                                               "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
        # Queries over GET can be triggered cross-site by a link or an <img>: POST only.
        return error_response(405, "GraphQL operations must be sent with POST (Content-Type: application/json)",
                              "METHOD_NOT_ALLOWED", {"Allow": "POST"})

    async def dashboard_get(self, request: Request) -> Response:
        body = dashboard.page(endpoint="/graphql", keys_required=bool(self.settings.keys),
                              default_zone=self.settings.timezone)
        return HTMLResponse(body, headers={"Content-Security-Policy": dashboard.CONTENT_SECURITY_POLICY,
                                           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    async def operation_payload(self, request: Request) -> tuple[str, dict[str, Any] | None, str | None] | Response:
        """The JSON body's query, variables and operation name, or the error response that refuses it."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in _JSON_TYPES:
            return error_response(415, "send the operation as JSON (Content-Type: application/json)",
                                  "BAD_REQUEST")
        try:
            raw = await read_body(request, self.settings.max_body_bytes)
        except BodyTooLarge:
            return error_response(413, f"request body larger than {self.settings.max_body_bytes} bytes",
                                  "PAYLOAD_TOO_LARGE", {"Connection": "close"})
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return error_response(400, "the request body is not valid JSON", "BAD_USER_INPUT")
        if isinstance(payload, list):
            return error_response(400, "batched operations are not supported; send one operation per request",
                                  "BAD_USER_INPUT")
        if not isinstance(payload, dict):
            return error_response(400, "the request body must be a JSON object with a 'query'", "BAD_USER_INPUT")
        query, variables, operation = payload.get("query"), payload.get("variables"), payload.get("operationName")
        if not isinstance(query, str) or not query.strip():
            return error_response(400, "'query' must be a non-empty string", "BAD_USER_INPUT")
        if variables is not None and not isinstance(variables, dict):
            return error_response(400, "'variables' must be a JSON object", "BAD_USER_INPUT")
        if operation is not None and not isinstance(operation, str):
            return error_response(400, "'operationName' must be a string", "BAD_USER_INPUT")
        request.state.operation = operation
        return query, variables, operation

    async def graphql_post(self, request: Request) -> Response:
        parsed = await self.operation_payload(request)
        if isinstance(parsed, Response):
            return parsed
        query, variables, operation = parsed
        ctx = _context(request, self.settings, self.database, self.limiter, self.enqueue)
        try:
            result = await self.gql.execute(query, variable_values=variables, context_value=ctx,
                                            operation_name=operation)
        except Exception as e:  # noqa: BLE001 - e.g. an unknown operationName or a subscription
            name = type(e).__name__
            if name in ("MissingQueryError", "InvalidOperationTypeError", "CannotGetOperationTypeError"):
                return error_response(400, str(e), "BAD_USER_INPUT")
            log.exception("GraphQL execution failed (request %s)", ctx.request_id)
            return error_response(500, INTERNAL_MESSAGE, "INTERNAL")
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            errors = [_formatted(e, ctx.request_id, suggestions=self.settings.introspection) for e in result.errors]
            body = {"errors": errors, "data": result.data}
            request.state.error_codes = sorted({str((e.get("extensions") or {}).get("code")) for e in errors})
        return json_response(body)

    async def export_post(self, request: Request) -> Response:
        parsed = await self.operation_payload(request)
        if isinstance(parsed, Response):
            return parsed
        ctx = _context(request, self.settings, self.database, self.limiter, self.enqueue)
        fmt = partial(_formatted, request_id=ctx.request_id, suggestions=self.settings.introspection)
        as_ndjson = request.query_params.get("format") == "ndjson"
        try:
            plan = export.plan(*parsed)
            pages = await export.rows(self.gql, plan, ctx, fmt)
        except export.ExportError as e:
            request.state.error_codes = export.error_codes(e.body)
            return json_response(e.body, e.status)
        return StreamingResponse(export.encode(plan, pages, ndjson=as_ndjson, request_id=ctx.request_id),
                                 media_type=export.NDJSON_TYPE if as_ndjson else export.CSV_TYPE,
                                 headers={"Content-Disposition": f'attachment; filename="{plan.field}.'
                                                                 f'{"ndjson" if as_ndjson else "csv"}"',
                                          "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    async def ingest(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in ingest_http.KINDS:
            return error_response(404, f"unknown kind {kind[:40]!r}; use one of {', '.join(ingest_http.KINDS)}",
                                  "NOT_FOUND")
        caller = request.state.caller
        if "ingest" not in caller.scopes:
            return error_response(403, "this API key lacks the 'ingest' scope", "FORBIDDEN")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ingest_http.CONTENT_TYPES:
            return error_response(415, "send NDJSON (Content-Type: application/x-ndjson)", "BAD_REQUEST")
        try:
            raw = await read_body(request, self.settings.max_ingest_bytes)
        except BodyTooLarge:
            return error_response(413, f"request body larger than {self.settings.max_ingest_bytes} bytes; split it",
                                  "PAYLOAD_TOO_LARGE", {"Connection": "close"})
        reply = await anyio.to_thread.run_sync(ingest_http.ingest_ndjson, self.database, kind, raw,
                                               limiter=self.limiter)
        return json_response(reply, 400 if reply["rejected"] else 200)

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    def _readiness(self) -> tuple[bool, dict[str, Any]]:
        try:
            with self.database.read(statement_timeout_ms=_PROBE_STATEMENT_MS) as conn:
                current = migrations.current_revision(conn)
        except Exception as e:  # noqa: BLE001 - any failure to talk to the database means not ready
            if getattr(getattr(e, "orig", None), "sqlstate", None) == "57014":  # our statement_timeout ended it
                log.warning("readiness check: database did not answer within %d ms", _PROBE_STATEMENT_MS)
                return False, _SLOW
            log.warning("readiness check: database unreachable", exc_info=True)
            return False, {"status": "unavailable", "reason": "database unreachable"}
        if current != self.head:
            return False, {"status": "unavailable", "reason": "database not migrated to head",
                           "revision": current, "head": self.head}
        return True, {"status": "ready", "revision": current}

    async def readyz(self, request: Request) -> Response:
        ok, body = await self.probe(self._readiness, (False, _SLOW))
        return json_response(body, 200 if ok else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        status = await self.probe(partial(metrics.rollup_status, self.database, _PROBE_STATEMENT_MS), None)
        return Response(metrics.render(status), media_type=metrics.CONTENT_TYPE)


def create_app(settings: Settings, db: Database | None = None, *, schema: Schema | None = None,
               enqueue: Callable[[Settings], bool] | None = None) -> Starlette:
    """The ASGI application; builds the database and the schema from `settings` unless given. `enqueue` is how
    refreshRollups enqueues a pass (the composition root gives jobs/runtime.enqueue_refresh; None: nothing
    enqueued)."""
    own_db = db is None
    database = db if db is not None else Database(settings)
    if schema is None:
        from analytics_gql.api.schema import build_schema

        schema = build_schema(settings)
    h = _Handlers(settings, database, schema, enqueue)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if own_db:
            database.dispose()

    routes: list[BaseRoute] = [
        Route("/graphql", h.graphql_get, methods=["GET", "HEAD"]),
        Route("/graphql", h.graphql_post, methods=["POST"]),
        Route("/export", h.export_post, methods=["POST"]),
        Route("/ingest/{kind}", h.ingest, methods=["POST"]),
        Route("/healthz", h.healthz, methods=["GET", "HEAD"]),
        Route("/readyz", h.readyz, methods=["GET", "HEAD"]),
        Route("/metrics", h.metrics_endpoint, methods=["GET"]),
    ]
    # Each page's files only while the page is on: GraphiQL off means /static/graphiql/* is 404 too.
    if settings.graphiql:
        routes.append(Mount("/static/graphiql", app=StaticFiles(directory=graphiql.STATIC_DIR / "graphiql")))
    if settings.dashboard:
        routes.append(Route("/dashboard", h.dashboard_get, methods=["GET", "HEAD"]))
        routes.append(Mount("/static/dashboard", app=StaticFiles(directory=graphiql.STATIC_DIR / "dashboard")))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.db = database
    app.state.schema = schema
    app.add_middleware(Gate, settings=settings)
    return app

