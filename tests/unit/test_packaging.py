"""pyproject.toml's package list and data match the files on disk, so a wheel carries every module and migration."""

from __future__ import annotations

import tomllib
from pathlib import Path

from analytics_gql.storage import schema

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def package_folder(name: str) -> Path:
    """Where setuptools takes package `name` from: under its package-dir mapping, else its dotted path."""
    for prefix, folder in SETUPTOOLS.get("package-dir", {}).items():
        if name == prefix or name.startswith(prefix + "."):
            return ROOT / folder / Path(*name[len(prefix):].lstrip(".").split("."))
    return ROOT / Path(*name.split("."))


def test_every_package_on_disk_is_listed_and_every_listed_one_exists() -> None:
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "analytics_gql").rglob("__init__.py")}
    listed = set(SETUPTOOLS["packages"])
    assert listed == on_disk | {"analytics_gql.migrations"}
    for name in listed:
        assert (package_folder(name) / "__init__.py").is_file(), name


def test_every_package_data_pattern_matches_a_file() -> None:
    # An entry matching nothing (once `alembic.ini`) ships nothing and hides what the wheel lacks.
    for package, patterns in SETUPTOOLS["package-data"].items():
        for pattern in patterns:
            assert list(package_folder(package).glob(pattern)), f"{package}: {pattern} matches no file"


def test_the_mapped_migrations_hold_every_revision_file() -> None:
    patterns = SETUPTOOLS["package-data"]["analytics_gql.migrations"]
    shipped = {p for pattern in patterns for p in (ROOT / "migrations").glob(pattern)}
    every = {p for p in (ROOT / "migrations").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    # env.py and __init__.py are modules of the package; everything else must be package data.
    assert every - shipped == {ROOT / "migrations" / "env.py", ROOT / "migrations" / "__init__.py"}


def test_the_editable_install_locates_the_checkouts_migrations() -> None:
    assert schema.migrations_dir() == ROOT / "migrations"
