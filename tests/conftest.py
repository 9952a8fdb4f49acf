"""Shared fixtures: a migrated database per test on SQLite and on PostgreSQL, Redis, Hypothesis profiles.

PostgreSQL and Redis tests skip locally when the service is missing, and fail under CI (CI=true), so a
missing service can never pass silently (DESIGN 7.7).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine, text

from analytics_gql.settings import Settings
from analytics_gql.storage import schema
from analytics_gql.storage.engine import Database

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("ANALYTICS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# Engineers sharing one server name their throw-away databases apart (ag_tpl_*/ag_test_* by default).
DB_PREFIX = os.environ.get("ANALYTICS_TEST_DB_PREFIX", "ag")
REDIS_URL = os.environ.get("ANALYTICS_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
# A Citus coordinator's admin database (e.g. postgresql+psycopg://postgres@127.0.0.1:9700/postgres; a cluster is
# started by tests/citus_cluster.py or by hand). Unset: no test runs on Citus, also under CI (Citus is not in this
# machine's package registries). Set: tests marked `citus` also run on a database of their own on the cluster.
CITUS_ADMIN_URL = os.environ.get("ANALYTICS_TEST_CITUS_URL", "")
DB_KINDS = ["sqlite", "postgresql", *(["citus"] if CITUS_ADMIN_URL else [])]

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if CI else "dev"))


def missing_service(what: str) -> None:
    """Fail under CI, skip locally: a missing service must never pass silently."""
    if CI:
        pytest.fail(f"{what} is required under CI=true but is not reachable")
    pytest.skip(f"{what} not reachable (set CI=true to make this a failure)")


class PgServer:
    """Creates throw-away databases from one migrated template (fast, and never touches others' databases)."""

    def __init__(self) -> None:
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.template: str | None = None
        self.base = PG_ADMIN_URL.rsplit("/", 1)[0]

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def _create_template(self) -> str:
        name = f"{DB_PREFIX}_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        db = Database(Settings(database_url=self.url(name)))
        schema.upgrade(db)
        db.dispose()
        self.template = name
        return name

    def new_database(self, *, migrated: bool = True) -> str:
        name = f"{DB_PREFIX}_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as c:
            if migrated:
                tpl = self.template or self._create_template()
                c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{tpl}"'))
            else:
                c.execute(text(f'CREATE DATABASE "{name}"'))
        return name

    def drop(self, name: str) -> None:
        with self.admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        if self.template:
            self.drop(self.template)
        self.admin.dispose()


_pg: PgServer | None = None
_pg_error: str | None = None


def pg_server() -> PgServer:
    """The session's PostgreSQL helper, or a skip/fail when PostgreSQL is missing."""
    global _pg, _pg_error
    if _pg is None and _pg_error is None:
        try:
            srv = PgServer()
            with srv.admin.connect() as c:
                c.execute(text("SELECT 1"))
            _pg = srv
        except Exception as e:  # noqa: BLE001 - any failure means the service is missing
            _pg_error = str(e).splitlines()[0]
    if _pg is None:
        missing_service(f"PostgreSQL at {PG_ADMIN_URL} ({_pg_error})")
    assert _pg is not None
    return _pg


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _pg is not None:
        _pg.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The Citus variant of `db_url` only for tests marked `citus` (each needs a database made on every node)."""
    keep, drop = [], []
    for item in items:
        on_citus = "[citus" in item.nodeid or "-citus" in item.nodeid
        (drop if on_citus and item.get_closest_marker("citus") is None else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def citus_database() -> Iterator[str]:
    """A new, migrated database on the Citus cluster (distributed by `migrate`), dropped afterwards."""
    import citus_cluster

    name = f"{DB_PREFIX}_citus_{uuid.uuid4().hex[:12]}"
    try:
        url = citus_cluster.create_database(CITUS_ADMIN_URL, name)
    except Exception as e:  # noqa: BLE001 - any failure means the cluster is missing
        pytest.fail(f"ANALYTICS_TEST_CITUS_URL is set but no database could be made there: {e}")
    try:
        database = Database(Settings(database_url=url))
        schema.upgrade(database)
        database.dispose()
        yield url
    finally:
        citus_cluster.drop_database(CITUS_ADMIN_URL, name)


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """URL of a fresh, migrated database: one SQLite file, or one new PostgreSQL database (or Citus database, for
    tests marked `citus` when ANALYTICS_TEST_CITUS_URL is set)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if request.param == "citus":
        yield from citus_database()
        return
    srv = pg_server()
    name = srv.new_database()
    try:
        yield srv.url(name)
    finally:
        srv.drop(name)


@pytest.fixture
def db(db_url: str, tmp_path) -> Iterator[Database]:  # type: ignore[no-untyped-def]
    """A migrated Database on SQLite and on PostgreSQL (every db test runs on both)."""
    database = Database(Settings(database_url=db_url))
    if database.sqlite:
        schema.upgrade(database)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An unmigrated database URL on PostgreSQL (for migration tests)."""
    srv = pg_server()
    name = srv.new_database(migrated=False)
    try:
        yield srv.url(name)
    finally:
        srv.drop(name)


@pytest.fixture
def redis_url() -> str:
    """A Redis URL on a database number of our own, flushed; fails under CI when Redis is missing."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.flushdb()
        client.close()
    except Exception as e:  # noqa: BLE001
        missing_service(f"Redis at {REDIS_URL} ({e})")
    return REDIS_URL
