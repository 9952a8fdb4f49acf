"""OpenTelemetry spans for GraphQL operations when ANALYTICS_TRACING is on (optional: the `otel` extra).

Strawberry's OpenTelemetryExtension makes an operation span with parsing and validation spans under it, and a span
per resolved field. Here only root fields get a span (`blogViews`, `top`, ...: where the time goes); nested fields
pass straight through, and the class says so (`resolves_root_fields_only`), so api/execution.py keeps its fast path
for nested leaves. Spans go where the standard OTEL_* variables say (OTLP over HTTP; OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_SERVICE_NAME, ...), unless the process already installed a tracer provider of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import isawaitable
from typing import Any

from strawberry.extensions import SchemaExtension

from analytics_gql.api.execution import ROOT_ONLY_ATTRIBUTE
from analytics_gql.errors import UserError

MISSING = "ANALYTICS_TRACING=true needs OpenTelemetry: pip install 'analytics-gql[otel]'"


def extension() -> type[SchemaExtension]:
    """The schema extension making the spans (UserError when OpenTelemetry is not installed)."""
    try:
        from strawberry.extensions.tracing import OpenTelemetryExtension
    except ImportError:
        raise UserError(MISSING) from None

    class RootFieldSpans(OpenTelemetryExtension):
        """Operation, parsing, validation and root-field spans; nested fields untraced."""

        async def resolve(self, _next: Callable[..., Any], root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
            if info.path.prev is not None:
                result = _next(root, info, *args, **kwargs)
                return await result if isawaitable(result) else result
            return await super().resolve(_next, root, info, *args, **kwargs)

    setattr(RootFieldSpans, ROOT_ONLY_ATTRIBUTE, True)
    return RootFieldSpans


def install_exporter() -> None:
    """A global tracer provider exporting spans over OTLP/HTTP in batches, unless one is installed already."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise UserError(MISSING) from None
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": "analytics-gql"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
