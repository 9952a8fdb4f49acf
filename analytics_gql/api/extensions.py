"""Strawberry schema extensions: caches, query-bomb limits, scope guard, error policy and per-field metrics."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as max_aliases_rule
from strawberry.types.execution import ExecutionResult
from strawberry.types.graphql import OperationType

from analytics_gql.api import metrics
from analytics_gql.errors import UserError
from analytics_gql.settings import Settings

log = logging.getLogger("analytics_gql.api")

MAX_DEPTH = 12
MAX_ALIASES = 30
MAX_TOKENS = 1000  # graphql-core lexes ~10 us a token here: a refused bomb costs <= ~12 ms (S1: 25 ms)
CACHE_SIZE = 512

INTERNAL_MESSAGE = "Internal server error"
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?", re.DOTALL)
# graphql-core reports bad argument values met during execution (e.g. through a variable) with a path but no
# original error; they are the client's mistake, unlike "Cannot return null..." which is ours.
_CLIENT_EXECUTION_MESSAGES = ("Argument ", "Variable ", "Expected value of type", "Enum ", "Int cannot", "Float cannot")


def _request_id(context: Any) -> str:
    return str(getattr(context, "request_id", "") or "-")


def classify(error: GraphQLError) -> tuple[str, str] | None:
    """(code, message) for an error that is safe to show, or None when it must be masked."""
    original = error.original_error
    root = original
    while isinstance(root, GraphQLError) and root.original_error is not None:
        root = root.original_error
    if isinstance(root, UserError):
        return root.code, root.message
    if original is None:
        # Syntax, validation and variable-coercion errors are about the client's document, never about our state.
        if error.path is None or error.message.startswith(_CLIENT_EXECUTION_MESSAGES):
            return "BAD_USER_INPUT", error.message
        return None
    if error.path is None and isinstance(original, (GraphQLError, ValueError, TypeError, KeyError)):
        # Before execution: graphql-core or a scalar's parse_value refusing a variable (unknown enum, bad DateTime).
        return "BAD_USER_INPUT", error.message
    return None


def present(error: GraphQLError, *, suggestions: bool, request_id: str) -> GraphQLError:
    """The error as the client sees it: shown with its code, or masked as INTERNAL (and logged) when unsafe."""
    if error.extensions and "code" in error.extensions:
        return error  # already presented
    shown = classify(error)
    if shown is None:
        original = error.original_error or error
        log.error("internal error in GraphQL operation (request %s, path %s)", request_id, error.path,
                  exc_info=(type(original), original, original.__traceback__))
        return GraphQLError(INTERNAL_MESSAGE, nodes=error.nodes, source=error.source, positions=error.positions,
                            path=error.path, extensions={"code": "INTERNAL", "requestId": request_id})
    code, message = shown
    if not suggestions:
        # Suggestions leak the schema's names when introspection is off (F18).
        message = _SUGGESTION.sub("", message)
    return GraphQLError(message, nodes=error.nodes, source=error.source, positions=error.positions,
                        path=error.path, extensions={"code": code})


class ErrorPolicy(SchemaExtension):
    """Show UserErrors (with their code) and document errors; mask everything else as INTERNAL and log it."""

    def __init__(self, *, suggestions: bool) -> None:
        self.suggestions = suggestions

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if isinstance(result, (GraphQLExecutionResult, ExecutionResult)) and result.errors:
            rid = _request_id(self.execution_context.context)
            result.errors = [present(e, suggestions=self.suggestions, request_id=rid) for e in result.errors]


class ScopeGuard(SchemaExtension):
    """Queries need the `read` scope; mutations check their own scope in the resolver (ctx.require)."""

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        require = getattr(ec.context, "require", None)
        if require is not None and ec.operation_type == OperationType.QUERY:
            try:
                require("read")
            except UserError as e:
                # Setting the result short-circuits execution: no resolver runs.
                ec.result = GraphQLExecutionResult(data=None, errors=[GraphQLError(e.message, original_error=e)])
        yield


class FieldMetrics(SchemaExtension):
    """Count and time each root field (the unit operators ask about: blogViews, top, performance...)."""

    # Nested fields pass straight through `resolve`: the fast execution context may skip it for them (execution.py).
    resolves_root_fields_only = True

    def resolve(self, _next: Callable[..., Any], root: Any, info: Any, *args: Any,
                **kwargs: Any) -> Any:
        """Time root fields only; nested fields pass straight through."""
        if info.path.prev is not None:
            return _next(root, info, *args, **kwargs)
        field = info.field_name
        start = time.perf_counter()
        try:
            result = _next(root, info, *args, **kwargs)
        except Exception:
            metrics.observe_field(field, time.perf_counter() - start, ok=False)
            raise
        if hasattr(result, "__await__"):
            return _timed(result, field, start)
        metrics.observe_field(field, time.perf_counter() - start, ok=True)
        return result


async def _timed(awaitable: Any, field: str, start: float) -> Any:
    try:
        value = await awaitable
    except Exception:
        metrics.observe_field(field, time.perf_counter() - start, ok=False)
        raise
    metrics.observe_field(field, time.perf_counter() - start, ok=True)
    return value


def schema_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """Extension factories for strawberry.Schema(extensions=...), built for these settings."""
    # Rule classes are built once: the validation cache keys on them, so a new class per request would never hit.
    rules = [
        *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
        max_aliases_rule(MAX_ALIASES),
    ]
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    suggestions = settings.introspection
    tracing: list[Callable[[], SchemaExtension]] = []
    if settings.tracing:
        from analytics_gql.api import tracing as otel

        tracing.append(otel.extension())
    return [
        *tracing,
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: AddValidationRules(rules),
        lambda: ParserCache(maxsize=CACHE_SIZE),
        lambda: ValidationCache(maxsize=CACHE_SIZE),
        ScopeGuard,
        FieldMetrics,
        lambda: ErrorPolicy(suggestions=suggestions),
    ]
