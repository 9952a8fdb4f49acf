"""A graphql-core execution context that completes objects of plain leaf fields without per-field machinery.

graphql-core completes every field of every object through `execute_field` (resolve info, argument values,
middleware, the Strawberry resolver wrapper, `complete_value`, `complete_leaf_value`): ~6 us a field here, so a
dense `performance` series of 366 points x 7 fields spent most of its request in that loop. When every field
selected on an object type (after `collect_subfields`: aliases, fragments, `@include`/`@skip` and `__typename`
honoured) is a *plain leaf* - a Strawberry field without a resolver, field extension, permission class or
exception handler, of a scalar type (nullable or not; no enums, no lists), without arguments - the object's result
is exactly `{response key: scalar.coerce_output_value(getattr(obj, python name))}`, which `FastExecutionContext`
builds directly.

Anything unusual falls back to graphql-core's own completion for that object (or for the whole list), which then
produces exactly the value, the error and the error path it always did: a value that is None for a non-null field,
an exception or awaitable value, a value whose type is not a plain Python scalar, a scalar that refuses the value,
a missing attribute, an object type with `is_type_of`, deferred or streamed fields, a middleware (a Strawberry
extension with a `resolve` hook) that does not declare itself root-only (`ROOT_ONLY_ATTRIBUTE`). Root fields never
take the fast path (the objects completed here are always below a root field), so they keep going through every
extension as before.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
import weakref
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from graphql import (
    GRAPHQL_MAX_INT,
    GRAPHQL_MIN_INT,
    GraphQLBoolean,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
)
from graphql import version_info as graphql_version
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import AwaitableOrValue, Path, Undefined

from analytics_gql.domain.memo import IdentityMemo, SharedList

if TYPE_CHECKING:
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext as _Base
else:
    try:  # Strawberry's own context (it passes operation extensions to resolvers); the fast path builds on it
        from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext as _Base
    except ImportError:  # pragma: no cover - another Strawberry layout: no fast path (execution_context_class)
        _Base = object

# The hooks below have graphql-core 3.3's signatures (Executor); with anything else Strawberry's context is used.
SUPPORTED = _Base is not object and (graphql_version.major, graphql_version.minor) == (3, 3)

# A middleware object (Strawberry extension) whose class sets this attribute to True promises that its `resolve`
# hook passes every non-root field straight through, so skipping it for nested leaves changes nothing.
ROOT_ONLY_ATTRIBUTE = "resolves_root_fields_only"
DEFINITION = "strawberry-definition"  # Strawberry's back-reference from a GraphQL type or field to its definition
# Values of these exact types are never awaitable nor exceptions: safe to hand to a scalar's coerce_output_value.
PLAIN_VALUES = frozenset({int, float, str, bool, dt.datetime, dt.date, dt.time, decimal.Decimal, uuid.UUID})

# graphql-core's built-in scalars return a value of exactly this type unchanged (Int: within 32 bits), so the fast
# path skips their serialiser for it; any other value still goes through `coerce_output_value`.
_UNCHANGED = {"Int": int, "String": str, "ID": str, "Boolean": bool}
_BUILTIN_SCALARS = {"Int": GraphQLInt, "String": GraphQLString, "ID": GraphQLID, "Boolean": GraphQLBoolean}

# (response key, python attribute or None for __typename, coerce_output_value, nullable, the type of values that
# coerce_output_value returns unchanged or None)
Entry = tuple[str, str | None, Callable[[Any], Any], bool, type | None]
Plan = tuple[Entry, ...]

# Output of lists marked shared (domain/memo.SharedList: memoised, never mutated), by their identity and the plan.
_SHARED_OUTPUT: IdentityMemo[list[Any]] = IdentityMemo(256)

_plain_fields: weakref.WeakKeyDictionary[GraphQLSchema, dict[str, Mapping[str, tuple[str, GraphQLScalarType, bool]]]]
_plain_fields = weakref.WeakKeyDictionary()


def _plain_field_map(schema: GraphQLSchema, parent: GraphQLObjectType) -> Mapping[str, tuple[str, GraphQLScalarType,
                                                                                              bool]]:
    """GraphQL field name -> (python attribute, scalar type, nullable) of `parent`'s plain leaf fields.

    Computed once per schema and type from Strawberry's definitions."""
    per_schema = _plain_fields.setdefault(schema, {})
    found = per_schema.get(parent.name)
    if found is not None:
        return found
    out: dict[str, tuple[str, GraphQLScalarType, bool]] = {}
    for name, field in parent.fields.items():
        definition = (field.extensions or {}).get(DEFINITION)
        resolve = field.resolve
        if (definition is None or resolve is None or not getattr(resolve, "_is_default", False) or field.args
                or not getattr(definition, "is_basic_field", False)
                or getattr(definition, "default_resolver", None) is not getattr):
            continue
        nullable = not isinstance(field.type, GraphQLNonNull)
        inner = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
        if isinstance(inner, GraphQLScalarType):
            out[name] = (definition.python_name, inner, nullable)
    per_schema[parent.name] = out
    return out


class FastExecutionContext(_Base):
    """Strawberry's graphql-core execution context plus the plain-leaf fast path (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        middlewares = manager.middlewares if manager is not None else ()
        self._fast = all(getattr(m, ROOT_ONLY_ATTRIBUTE, False) is True for m in middlewares)
        self._plans: dict[tuple[GraphQLObjectType, int], tuple[FieldDetailsList, Plan | None]] = {}

    def _plan(self, parent: GraphQLObjectType, field_details_list: FieldDetailsList) -> Plan | None:
        """How to build `parent` objects for this selection, or None when graphql-core must do it."""
        key = (parent, id(field_details_list))
        cached = self._plans.get(key)
        if cached is not None:
            return cached[1]
        plan: Plan | None = None
        grouped, new_defer_usages, _ = (self.collect_subfields(parent, field_details_list) if self._fast
                                        else ({}, (), ()))
        if self._fast and parent.is_type_of is None and not new_defer_usages:
            plain = _plain_field_map(self.schema, parent)
            entries: list[Entry] = []
            for response_key, details in grouped.items():
                first = details[0]
                name = first.node.name.value
                if first.node.arguments or any(d.defer_usage is not None or d.fragment_variable_values is not None
                                               for d in details):
                    break
                if name == "__typename":
                    entries.append((response_key, None, str, False, None))
                    continue
                leaf = plain.get(name)
                if leaf is None:
                    break
                attribute, scalar, nullable = leaf
                builtin = _BUILTIN_SCALARS.get(scalar.name)
                unchanged = _UNCHANGED[scalar.name] if builtin is not None and (
                    scalar is builtin or scalar.coerce_output_value is builtin.coerce_output_value) else None
                entries.append((response_key, attribute, scalar.coerce_output_value, nullable, unchanged))
            else:
                plan = tuple(entries)
        self._plans[key] = (field_details_list, plan)  # the list is kept alive so its id stays unique
        return plan

    @staticmethod
    def _build(plan: Plan, typename: str, obj: Any, memo: dict[tuple[str, int], Any] | None = None
               ) -> dict[str, Any] | None:
        """The completed object, or None when anything is unusual (graphql-core then completes it).

        `memo` (one list's items): the serialised form of a date or datetime object already met in this field of an
        earlier item, by identity (the items keep those objects alive while the list is built).
        """
        out: dict[str, Any] = {}
        try:
            for key, attribute, coerce, nullable, unchanged in plan:
                if attribute is None:
                    out[key] = typename
                    continue
                value: Any = getattr(obj, attribute, Undefined)
                kind = type(value)
                if kind is unchanged and (kind is not int or GRAPHQL_MIN_INT <= value <= GRAPHQL_MAX_INT):
                    out[key] = value  # what the built-in scalar's serialiser returns for it
                    continue
                if value is None:
                    if not nullable:
                        return None
                    out[key] = None
                    continue
                if kind not in PLAIN_VALUES:
                    return None
                if memo is not None and (kind is dt.datetime or kind is dt.date):
                    seen = memo.get((key, id(value)))
                    if seen is not None:
                        out[key] = seen
                        continue
                coerced = coerce(value)
                if coerced is None or coerced is Undefined:
                    return None
                if memo is not None and (kind is dt.datetime or kind is dt.date):
                    memo[(key, id(value))] = coerced
                out[key] = coerced
        except Exception:  # noqa: BLE001 - the standard path raises it again, with its path
            return None
        return out

    def complete_object_value(self, return_type: GraphQLObjectType, field_details_list: FieldDetailsList,
                              info: GraphQLResolveInfo[Any], path: Path, result: Any,
                              position_context: Any) -> AwaitableOrValue[dict[str, Any]]:
        if position_context is None:
            plan = self._plan(return_type, field_details_list)
            if plan is not None:
                built = self._build(plan, return_type.name, result)
                if built is not None:
                    return built
        return super().complete_object_value(
            return_type, field_details_list, info, path, result, position_context)

    def complete_list_value(self, return_type: GraphQLList[GraphQLOutputType],
                            field_details_list: FieldDetailsList, info: GraphQLResolveInfo[Any], path: Path,
                            result: AsyncIterable[Any] | Iterable[Any],
                            position_context: Any) -> AwaitableOrValue[list[Any]]:
        item_type = return_type.of_type
        nullable = not isinstance(item_type, GraphQLNonNull)
        inner = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
        if (position_context is None and isinstance(inner, GraphQLObjectType)
                and type(result) in (list, tuple, SharedList)
                and self.get_stream_usage(field_details_list, path) is None):
            plan = self._plan(inner, field_details_list)
            shared = type(result) is SharedList
            if plan is not None and shared:
                done = _SHARED_OUTPUT.get(result, (plan, inner.name))
                if done is not None:
                    return done  # the objects built for this very list before (never mutated, nor is the list)
            if plan is not None:
                build, typename = self._build, inner.name
                memo: dict[tuple[str, int], Any] = {}
                out: list[Any] = []
                for item in result:  # type: ignore[union-attr]  # a list or a tuple
                    if item is None and nullable:
                        out.append(None)
                        continue
                    built = build(plan, typename, item, memo) if item is not None else None
                    if built is None:
                        break  # graphql-core completes the whole list, with its errors and paths
                    out.append(built)
                else:
                    return _SHARED_OUTPUT.put(result, out, (plan, typename)) if shared else out
        return super().complete_list_value(
            return_type, field_details_list, info, path, result, position_context)


def execution_context_class() -> type[FastExecutionContext] | None:
    """The class for `strawberry.Schema(execution_context_class=...)`: the fast one, or None (Strawberry's)."""
    return FastExecutionContext if SUPPORTED else None
