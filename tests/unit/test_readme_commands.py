"""README.md and .ci/run agree: CI runs exactly the test command the README shows, and the first screen holds both."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

from analytics_gql.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DEMO_COMMAND = "python3.11 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/analytics-gql demo"
FIRST_SCREEN_LINES = 25


def readme_test_command() -> str:
    """The one non-fence line between the test-command markers, parsed independently of .ci/run's awk."""
    section = README.split("<!-- test-command -->", 1)[1].split("<!-- /test-command -->", 1)[0]
    lines = [ln.strip() for ln in section.splitlines() if ln.strip() and not ln.strip().startswith("```")]
    assert len(lines) == 1, lines
    return lines[0]


def test_ci_runs_the_readme_test_command() -> None:
    out = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--print-test-command"], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=30).stdout
    assert out == readme_test_command() + "\n"


def test_ci_run_reads_the_command_from_the_readme_markers() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in script
    # Running the extracted command, not a second hard-coded copy that could drift.
    assert 'bash -c "$TEST_COMMAND"' in script
    assert readme_test_command() not in script


def test_both_commands_are_on_the_first_screen() -> None:
    first_screen = "\n".join(README.splitlines()[:FIRST_SCREEN_LINES])
    assert DEMO_COMMAND in first_screen
    assert readme_test_command() in first_screen


def test_test_command_installs_dev_extras_and_runs_pytest_from_a_fresh_venv() -> None:
    parts = [shlex.split(p) for p in readme_test_command().split("&&")]
    assert parts[0] == ["python3.11", "-m", "venv", ".venv"]
    assert parts[1] == [".venv/bin/pip", "install", "-e", ".[dev]"]
    assert parts[2][:3] == [".venv/bin/python", "-m", "pytest"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dev = project["optional-dependencies"]["dev"]
    assert any(re.match(r"pytest\b", d) for d in dev)


def test_demo_and_documented_subcommands_exist() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = set(sub.choices)
    assert "demo" in choices
    # Every `analytics-gql NAME` in the README's CLI table is a real subcommand, and every subcommand is documented.
    documented = set(re.findall(r"^\| `([a-z-]+)[ `]", README, re.M))
    assert documented == choices
