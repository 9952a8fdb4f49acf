"""Run a Markdown document's examples against a live server: its fenced blocks, in order (docs/API.md says how).

Blocks the runner reads, by their info string (the words after the opening fence):
- `ndjson file=NAME`: a file the `sh run` examples may use, written to their working folder;
- `sh setup`: the `ANALYTICS_*=value` settings the server is started with;
- `sh run`: a shell command (curl), run with `127.0.0.1:8000` pointed at the live server;
- `graphql key=KEY [wait]`: a document sent to POST /graphql with that key, its variables in a following
  `json variables` block;
- `json answer` / `text answer` right after an example: its exact answer. In JSON, the string "<now>" stands for an
  instant of the test run (an ISO 8601 date-time with offset between the server's start and the answer); in text,
  a last line `HTTP NNN` is the status (curl -w) and the lines before it the body, compared as JSON when the
  expected body is JSON. `wait` repeats the example until its answer matches (a background job, up to 30 s).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BLOCK = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NOW = "<now>"
DOC_PORT = "127.0.0.1:8000"
SETTING = re.compile(r"\b(ANALYTICS_[A-Z_]+)=('[^']*'|\"[^\"]*\"|\S+)")
STATUS_LINE = re.compile(r"^HTTP (\d{3})$")


@dataclass
class Block:
    """One fenced block: its language, its attributes (`key=value` or bare flags), its text and line."""

    lang: str
    attrs: dict[str, str]
    text: str
    line: int


@dataclass
class Example:
    """A request (a GraphQL document or a shell command) and the answer the document shows for it."""

    kind: str  # "graphql" or "sh"
    text: str
    line: int
    answer: Block
    key: str | None = None
    variables: dict[str, Any] | None = None
    wait: bool = False


@dataclass
class Document:
    """What a document holds for the runner."""

    files: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)


def blocks(markdown: str) -> list[Block]:
    """Every fenced block, with its info string split into a language and attributes."""
    out = []
    for m in BLOCK.finditer(markdown):
        words = m.group(1).split()
        attrs = dict((w.split("=", 1) + [""])[:2] for w in words[1:])
        out.append(Block(words[0].lower() if words else "", attrs, m.group(2), markdown.count("\n", 0, m.start()) + 1))
    return out


def parse(markdown: str) -> Document:
    """The files, server settings and examples of a document; an example without its answer is an error."""
    doc = Document()
    found = blocks(markdown)
    i = 0
    while i < len(found):
        b = found[i]
        if b.lang == "ndjson" and "file" in b.attrs:
            doc.files[b.attrs["file"]] = b.text
        elif b.lang == "sh" and "setup" in b.attrs:
            doc.settings.update({k: v.strip("'\"") for k, v in SETTING.findall(b.text)})
        elif (b.lang == "sh" and "run" in b.attrs) or (b.lang == "graphql" and "key" in b.attrs):
            ex = Example("sh" if b.lang == "sh" else "graphql", b.text, b.line, answer=b, key=b.attrs.get("key"),
                         wait="wait" in b.attrs)
            if i + 1 < len(found) and "variables" in found[i + 1].attrs:
                i += 1
                ex.variables = json.loads(found[i].text)
            i += 1
            assert i < len(found) and "answer" in found[i].attrs, f"line {b.line}: example without an answer block"
            ex.answer = found[i]
            doc.examples.append(ex)
        i += 1
    return doc


def match(expected: Any, got: Any, since: dt.datetime, path: str = "$") -> list[str]:
    """Where `got` differs from `expected` (empty: it matches), "<now>" standing for an instant since `since`."""
    if expected == NOW:
        try:
            instant = dt.datetime.fromisoformat(got)
        except (TypeError, ValueError):
            return [f"{path}: {got!r} is not a date-time"]
        now = dt.datetime.now(dt.UTC)
        if instant.tzinfo is None or not since - dt.timedelta(seconds=1) <= instant <= now + dt.timedelta(seconds=1):
            return [f"{path}: {got!r} is not an instant between {since.isoformat()} and {now.isoformat()}"]
        return []
    if isinstance(expected, dict) and isinstance(got, dict):
        if expected.keys() != got.keys():
            return [f"{path}: keys {sorted(got)} instead of {sorted(expected)}"]
        return [d for k in expected for d in match(expected[k], got[k], since, f"{path}.{k}")]
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{path}: {len(got)} items instead of {len(expected)}: {got!r}"]
        pairs = enumerate(zip(expected, got, strict=True))
        return [d for n, (e, g) in pairs for d in match(e, g, since, f"{path}[{n}]")]
    if type(expected) is not type(got) or expected != got:
        return [f"{path}: {got!r} instead of {expected!r}"]
    return []


def compare_text(expected: str, got: str, since: dt.datetime) -> list[str]:
    """A shell example's output against its `text answer` (status line, then a JSON or text body)."""
    want, have = expected.rstrip("\n").split("\n"), got.rstrip("\n").split("\n")
    problems = []
    if STATUS_LINE.match(want[-1]):
        if want[-1] != have[-1]:
            problems.append(f"status {have[-1]!r} instead of {want[-1]!r}")
        want, have = want[:-1], have[:-1]
    body = "\n".join(want)
    if body.lstrip().startswith(("{", "[")):
        try:
            return problems + match(json.loads(body), json.loads("\n".join(have)), since)
        except json.JSONDecodeError as e:
            return [*problems, f"not JSON ({e}): {got!r}"]
    if want != have:
        problems.append(f"output {have!r} instead of {want!r}")
    return problems


def run(ex: Example, base: str, cwd: Path) -> str:
    """The example's output: the whole JSON response body (GraphQL) or the command's stdout (sh)."""
    if ex.kind == "graphql":
        headers = {"Authorization": f"Bearer {ex.key}"}
        r = httpx.post(f"{base}/graphql", json={"query": ex.text, "variables": ex.variables}, headers=headers,
                       timeout=30)
        return r.text
    command = ex.text.replace(DOC_PORT, base.removeprefix("http://"))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"line {ex.line}: exit {done.returncode}: {done.stderr[-1000:]}"
    return done.stdout


def check(ex: Example, base: str, cwd: Path, since: dt.datetime) -> list[str]:
    """Run one example (repeatedly when it says `wait`) and compare its output with its answer."""
    deadline = time.monotonic() + (30 if ex.wait else 0)
    while True:
        out = run(ex, base, cwd)
        if ex.answer.lang == "json":
            problems = match(json.loads(ex.answer.text), json.loads(out), since)
        else:
            problems = compare_text(ex.answer.text, out, since)
        if not problems or time.monotonic() >= deadline:
            return [f"line {ex.line}: {p}" for p in problems] + ([f"got: {out}"] if problems else [])
        time.sleep(0.2)
