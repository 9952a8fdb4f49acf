"""Export (CONTRACT 3): the rows of one `blogViews`, `top` or `performance` field as CSV or NDJSON.

The document goes through the same schema, extensions, scopes and error masking as `POST /graphql`: it is checked
and rewritten here, then executed page by page. One row per node (`blogViews`, `top`) or point (`performance`),
one column per selected leaf field of it, in selection order, named by its response key. `blogViews` is exported
whole: its `first` becomes the largest page and its `after` a variable that walks every page, so memory holds one
page at a time. Each page is exact as of the moment it is read (like any query); a range that ends before the
export starts gives the same rows whenever it runs, barring late events.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    ArgumentNode,
    BooleanValueNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    NamedTypeNode,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    VariableDefinitionNode,
    VariableNode,
    parse,
    print_ast,
    value_from_ast_untyped,
    visit,
)
from graphql.language import Visitor
from strawberry import Schema

from analytics_gql.domain.queries import MAX_PAGE

ROWS = {"blogViews": "nodes", "top": "nodes", "performance": "points"}
CSV_TYPE = "text/csv; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"
AFTER_VARIABLE = "exportAfter_"
PAGE_INFO_ALIAS = "exportPageInfo_"
log = logging.getLogger("analytics_gql.api")
_STATUS = {"BAD_USER_INPUT": 400, "UNAUTHENTICATED": 401, "FORBIDDEN": 403, "RATE_LIMITED": 429}


class ExportError(Exception):
    """The export cannot start: an HTTP status and a GraphQL-shaped error body (sent as JSON, before any row)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def bad_input(message: str) -> ExportError:
    """A client mistake in the document, answered like GraphQL's BAD_USER_INPUT."""
    return ExportError(400, {"errors": [{"message": message, "extensions": {"code": "BAD_USER_INPUT"}}]})


@dataclass
class Plan:
    """The checked export: the field, its response key and rows key, the columns and the document to run."""

    field: str
    root_key: str
    rows_key: str
    columns: list[str]
    query: str
    variables: dict[str, Any]
    operation: str | None
    paged: bool


def _condition(node: FieldNode | InlineFragmentNode | FragmentSpreadNode, name: str,
               variables: dict[str, Any]) -> bool | None:
    """The `if` of the node's @skip or @include: a literal or a variable's value (None when absent)."""
    for d in node.directives or ():
        if d.name.value != name:
            continue
        for a in d.arguments or ():
            if a.name.value != "if":
                continue
            if isinstance(a.value, BooleanValueNode):
                return a.value.value
            if isinstance(a.value, VariableNode):
                value = variables.get(a.value.name.value)
                if not isinstance(value, bool):
                    raise bad_input(f"${a.value.name.value} of @{name} must be a Boolean")
                return value
        raise bad_input(f"@{name} needs a Boolean `if`")
    return None


def _included(node: FieldNode | InlineFragmentNode | FragmentSpreadNode, variables: dict[str, Any]) -> bool:
    return _condition(node, "skip", variables) is not True and _condition(node, "include", variables) is not False


def _fields(selection_set: SelectionSetNode | None, fragments: dict[str, FragmentDefinitionNode],
            variables: dict[str, Any], seen: frozenset[str] = frozenset()) -> list[FieldNode]:
    """The fields of a selection set in order, fragments expanded and @skip/@include applied."""
    out: list[FieldNode] = []
    for sel in selection_set.selections if selection_set is not None else ():
        if not _included(sel, variables):  # type: ignore[arg-type]
            continue
        if isinstance(sel, FieldNode):
            out.append(sel)
        elif isinstance(sel, InlineFragmentNode):
            out.extend(_fields(sel.selection_set, fragments, variables, seen))
        elif isinstance(sel, FragmentSpreadNode) and sel.name.value in fragments and sel.name.value not in seen:
            out.extend(_fields(fragments[sel.name.value].selection_set, fragments, variables,
                               seen | {sel.name.value}))
    return out


def _key(f: FieldNode) -> str:
    return f.alias.value if f.alias is not None else f.name.value


def _operation(doc: DocumentNode, name: str | None) -> OperationDefinitionNode:
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    if name is not None:
        ops = [o for o in ops if o.name is not None and o.name.value == name]
        if not ops:
            raise bad_input(f"no operation named {name[:64]!r} in the document")
    if len(ops) != 1:
        raise bad_input("the document must hold exactly one operation (or name one with operationName)")
    if ops[0].operation is not OperationType.QUERY:
        raise bad_input("export runs queries only")
    return ops[0]


def plan(query: str, variables: dict[str, Any] | None, operation: str | None) -> Plan:
    """Check the document and rewrite it for paging; ExportError (400) on anything export cannot run."""
    try:
        doc = parse(query, max_tokens=20_000)
    except GraphQLError as e:
        raise bad_input(e.message) from None
    op = _operation(doc, operation)
    if any(d.variable.name.value == AFTER_VARIABLE for d in op.variable_definitions or ()):
        raise bad_input(f"${AFTER_VARIABLE} is reserved by export")
    fragments = {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}
    values = dict(variables or {})
    defaults = {d.variable.name.value: value_from_ast_untyped(d.default_value)
                for d in op.variable_definitions or () if d.default_value is not None}
    conditions = {**defaults, **values}  # what @skip/@include see (the document itself keeps its defaults)
    roots = [f for f in _fields(op.selection_set, fragments, conditions) if f.name.value != "__typename"]
    if len(roots) != 1 or roots[0].name.value not in ROWS:
        raise bad_input("export needs exactly one root field among blogViews, top and performance")
    root = roots[0]
    rows_name = ROWS[root.name.value]
    rows = [f for f in _fields(root.selection_set, fragments, conditions) if f.name.value == rows_name]
    if len({_key(f) for f in rows}) != 1:
        raise bad_input(f"select the rows of {root.name.value} once: {rows_name} {{ ... }}")
    columns: list[str] = []
    for f in (c for r in rows for c in _fields(r.selection_set, fragments, conditions)):
        if f.selection_set is not None:
            raise bad_input(f"export columns are leaf fields; {_key(f)!r} is an object")
        if _key(f) not in columns:
            columns.append(_key(f))
    if not columns:
        raise bad_input(f"select at least one field of {rows_name}")
    paged = root.name.value == "blogViews"
    if paged:
        op = _paged(op, root, values)
    doc = DocumentNode(definitions=tuple(op if d is _original(doc, op) else d for d in doc.definitions))
    return Plan(root.name.value, _key(root), _key(rows[0]), columns, print_ast(doc), values,
                op.name.value if op.name is not None else None, paged)


def _original(doc: DocumentNode, op: OperationDefinitionNode) -> OperationDefinitionNode | None:
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    name = op.name.value if op.name is not None else None
    for o in ops:
        if (o.name.value if o.name is not None else None) == name:
            return o
    return None


def _paged(op: OperationDefinitionNode, root: FieldNode, values: dict[str, Any]) -> OperationDefinitionNode:
    """`root` with first = MAX_PAGE, after = $exportAfter_ and the page info selected; unused variables dropped."""
    args = [a for a in root.arguments or () if a.name.value not in ("first", "after")]
    args += [ArgumentNode(name=NameNode(value="first"), value=IntValueNode(value=str(MAX_PAGE))),
             ArgumentNode(name=NameNode(value="after"), value=VariableNode(name=NameNode(value=AFTER_VARIABLE)))]
    template = parse("{ pageInfo { hasNextPage endCursor } }").definitions[0]
    info: FieldNode = template.selection_set.selections[0]  # type: ignore[attr-defined]
    extra: SelectionNode = FieldNode(alias=NameNode(value=PAGE_INFO_ALIAS), name=info.name, arguments=(),
                                     directives=(), selection_set=info.selection_set)
    assert root.selection_set is not None
    new_root = FieldNode(alias=root.alias, name=root.name, arguments=tuple(args), directives=root.directives,
                         selection_set=SelectionSetNode(selections=(*root.selection_set.selections, extra)))

    class Swap(Visitor):
        def enter_field(self, node: FieldNode, *_: Any) -> Any:
            return new_root if node is root else None

    swapped: OperationDefinitionNode = visit(op, Swap())
    used: set[str] = set()

    class Uses(Visitor):
        def enter_variable(self, node: VariableNode, _key: Any, _parent: Any, _path: Any, ancestors: Any) -> None:
            if not any(isinstance(a, VariableDefinitionNode) for a in ancestors):
                used.add(node.name.value)

    visit(swapped.selection_set, Uses())
    defs = [d for d in swapped.variable_definitions or () if d.variable.name.value in used]
    for d in swapped.variable_definitions or ():
        if d.variable.name.value not in used:
            values.pop(d.variable.name.value, None)
    defs.append(VariableDefinitionNode(variable=VariableNode(name=NameNode(value=AFTER_VARIABLE)),
                                       type=NamedTypeNode(name=NameNode(value="String")), directives=()))
    return OperationDefinitionNode(operation=swapped.operation, name=swapped.name,
                                   variable_definitions=tuple(defs), directives=swapped.directives,
                                   selection_set=swapped.selection_set)


Formatter = Callable[[GraphQLError], dict[str, Any]]


async def _page(schema: Schema, p: Plan, context: Any, after: str | None, fmt: Formatter) -> dict[str, Any]:
    variables = {**p.variables, AFTER_VARIABLE: after} if p.paged else p.variables
    result = await schema.execute(p.query, variable_values=variables, context_value=context, operation_name=p.operation)
    if result.errors:
        errors = [fmt(e) for e in result.errors]
        code = str((errors[0].get("extensions") or {}).get("code", "INTERNAL"))
        raise ExportError(_STATUS.get(code, 500), {"errors": errors, "data": None})
    assert result.data is not None
    # Popped, not read: the execution's objects form reference cycles (Strawberry's execution context, its
    # extensions and graphql-core's) that hold the result until a full garbage collection; taken out of the
    # result, a page is freed as soon as it is sent.
    data: dict[str, Any] = result.data.pop(p.root_key)
    return data


async def rows(schema: Schema, p: Plan, context: Any, fmt: Formatter) -> AsyncIterator[list[dict[str, Any]]]:
    """The rows page by page. The first page is read before this returns (ExportError then means nothing was
    sent yet); an error on a later page ends the iteration with ExportError. Pages are read with
    `transient_pages` set on the context (api/context.Context): no cache keeps pages that are read once."""
    context = dataclasses.replace(context, transient_pages=True)
    data = await _page(schema, p, context, None, fmt)

    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        nonlocal data
        while True:
            yield data[p.rows_key]
            info = data.get(PAGE_INFO_ALIAS) if p.paged else None
            if not info or not info["hasNextPage"]:
                return
            data = await _page(schema, p, context, info["endCursor"], fmt)

    return pages()


def csv_header(columns: list[str]) -> bytes:
    """The header row."""
    return csv_rows(columns, [dict(zip(columns, columns, strict=True))])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def csv_rows(columns: list[str], page: list[dict[str, Any]]) -> bytes:
    """RFC 4180 lines (CRLF, quoted where needed) of one page."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([_cell(row.get(c)) for c in columns] for row in page)
    return out.getvalue().encode("utf-8")


def ndjson_rows(columns: list[str], page: list[dict[str, Any]]) -> bytes:
    """One JSON object per row, keys in column order."""
    return b"".join(orjson.dumps({c: row.get(c) for c in columns}) + b"\n" for row in page)


def error_codes(body: dict[str, Any]) -> list[str]:
    """The distinct error codes of an error body (for the request's log line)."""
    return sorted({str((e.get("extensions") or {}).get("code")) for e in body.get("errors", [])})


async def encode(p: Plan, pages: AsyncIterator[list[dict[str, Any]]], *, ndjson: bool = False,
                 request_id: str = "-") -> AsyncIterator[bytes]:
    """The export's bytes: the CSV header, then each page's lines as soon as it is read (or NDJSON lines).

    A later page that fails (the data moved under a cursor, the database went away) cannot become a JSON error
    any more: the stream is broken off, so a client sees an incomplete response, never a short file that looks
    whole."""
    if not ndjson:
        yield csv_header(p.columns)
    try:
        async for page in pages:
            yield ndjson_rows(p.columns, page) if ndjson else csv_rows(p.columns, page)
    except ExportError as e:
        log.warning("export broken off after its first page (request %s): %s", request_id, error_codes(e.body))
        raise


async def write(schema: Schema, context: Any, query: str, variables: dict[str, Any] | None, operation: str | None,
                out: Any, *, ndjson: bool = False) -> int:
    """Export into the binary file `out` (the CLI); the number of rows. ExportError before anything is written."""
    from analytics_gql.api.extensions import present

    def fmt(e: GraphQLError) -> dict[str, Any]:
        return dict(present(e, suggestions=True, request_id=getattr(context, "request_id", "-")).formatted)

    p = plan(query, variables, operation)
    pages = await rows(schema, p, context, fmt)  # the first page, or ExportError before any byte
    count = 0
    if not ndjson:
        out.write(csv_header(p.columns))
    async for page in pages:
        out.write(ndjson_rows(p.columns, page) if ndjson else csv_rows(p.columns, page))
        count += len(page)
    return count
