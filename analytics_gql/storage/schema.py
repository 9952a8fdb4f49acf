"""Schema management through Alembic: upgrade to head, and whether a database is at head."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from analytics_gql.storage import citus
from analytics_gql.storage.engine import Database

# The repository's top-level migrations/, mapped into the package by pyproject.toml: inside site-packages from a
# wheel or `pip install .`, the checkout's folder from an editable install. Named, not imported: it is not a layer.
MIGRATIONS_PACKAGE = "analytics_gql.migrations"


def migrations_dir() -> Path:
    """The folder holding env.py and versions/, wherever the package was installed from."""
    found = resources.files(MIGRATIONS_PACKAGE)
    if not isinstance(found, Path) or not (found / "env.py").is_file():
        # Alembic reads scripts by path, so a zipped install (zipapp, zipimport) cannot migrate.
        raise RuntimeError(f"{MIGRATIONS_PACKAGE} is not an unpacked folder with env.py ({found}); reinstall the "
                           "package from a wheel or with `pip install .`")
    return found


def alembic_config(db: Database) -> Config:
    """An Alembic Config pointing at the packaged migrations and at `db` (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", db.settings.db_url.replace("%", "%%"))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Apply migrations up to `revision` (the only way the schema is created)."""
    with db.engine.connect() as conn:
        cfg = alembic_config(db)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        if conn.in_transaction():
            conn.commit()
        if revision == "head" and citus.installed(conn):  # a Citus coordinator: the cluster's layout, once
            citus.distribute(conn)
        if conn.in_transaction():
            conn.commit()


def downgrade(db: Database, revision: str = "base") -> None:
    """Revert migrations down to `revision`."""
    with db.engine.connect() as conn:
        cfg = alembic_config(db)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        if conn.in_transaction():
            conn.commit()


def head_revision(db: Database) -> str | None:
    """The newest revision in the migrations folder."""
    return ScriptDirectory.from_config(alembic_config(db)).get_current_head()


def current_revision(conn: Connection) -> str | None:
    """The revision the connected database is at (None when never migrated)."""
    return MigrationContext.configure(conn).get_current_revision()
