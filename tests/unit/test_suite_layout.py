"""The suite's own layout: pytest imports test modules by basename (rootdir-relative, no packages), so two
`test_x.py` in different folders break collection of the whole run (it did once: tests/api and tests/unit)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
