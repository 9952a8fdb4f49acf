"""Start/stop a throw-away local Citus cluster (coordinator + workers) for tests.

Nodes live in ``base/coord``, ``base/w1`` ... ``base/wN`` and listen on
127.0.0.1 at ``port`` (coordinator), ``port + 1`` ... ``port + N`` (workers).
When run as root, server commands run as the ``postgres`` OS user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

PG_USER = "postgres"
HOST = "127.0.0.1"

_CONF = """# written by tests/citus_cluster.py
port = {port}
listen_addresses = '{host}'
unix_socket_directories = '/tmp'
shared_preload_libraries = 'citus'
wal_level = logical
max_connections = 200
max_prepared_transactions = 200
fsync = off
synchronous_commit = off
full_page_writes = off
"""

_HBA = """# written by tests/citus_cluster.py
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
"""


def _as_pg(cmd: list) -> list:
    """Prefix ``cmd`` so it runs as the postgres user when we are root."""
    cmd = [str(c) for c in cmd]
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *cmd]
    return cmd


def _run(cmd: list, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a server-side command (as postgres if root) and capture output."""
    proc = subprocess.run(_as_pg(cmd), cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc


def _nodes(base: Path, port: int, workers: int) -> list:
    """Return ``[(datadir, port), ...]`` with the coordinator first."""
    nodes = [(base / "coord", port)]
    nodes += [(base / f"w{i}", port + i) for i in range(1, workers + 1)]
    return nodes


def _node(base: Path, index: int, port: int) -> tuple:
    """Datadir and port of node ``index`` (0 = coordinator, 1.. = workers)."""
    name = "coord" if index == 0 else f"w{index}"
    return base / name, port + index


def psql(pg_bin: Path, port: int, sql: str, db: str = "postgres") -> str:
    """Run ``sql`` on a node via psql and return its unaligned output."""
    cmd = [Path(pg_bin) / "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At",
           "-h", HOST, "-p", str(port), "-U", PG_USER, "-d", db, "-c", sql]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        raise RuntimeError(f"psql :{port} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _init_node(pg_bin: Path, datadir: Path, port: int) -> None:
    """initdb ``datadir`` if needed and (re)write its config files."""
    datadir.parent.mkdir(parents=True, exist_ok=True)
    if not (datadir / "PG_VERSION").exists():
        datadir.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(datadir.parent, PG_USER, PG_USER)
            shutil.chown(datadir, PG_USER, PG_USER)
        _run([Path(pg_bin) / "initdb", "-D", datadir, "-U", PG_USER,
              "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"], cwd=datadir.parent)
    conf = datadir / "postgresql.conf"
    include = "include_if_exists = 'citus_cluster.conf'\n"
    if include not in conf.read_text():
        with conf.open("a") as fh:
            fh.write("\n" + include)
    (datadir / "citus_cluster.conf").write_text(_CONF.format(port=port, host=HOST))
    (datadir / "pg_hba.conf").write_text(_HBA)
    if os.geteuid() == 0:
        for name in ("citus_cluster.conf", "pg_hba.conf"):
            shutil.chown(datadir / name, PG_USER, PG_USER)


def _is_running(pg_bin: Path, datadir: Path) -> bool:
    """True if pg_ctl reports a server running in ``datadir``."""
    proc = _run([Path(pg_bin) / "pg_ctl", "-D", datadir, "status"],
                cwd=datadir.parent, check=False)
    return proc.returncode == 0


def _wait_ready(pg_bin: Path, port: int, timeout: float = 60.0) -> None:
    """Block until the node on ``port`` accepts queries."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            psql(pg_bin, port, "SELECT 1")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _start(pg_bin: Path, datadir: Path, port: int) -> None:
    """Start one node with pg_ctl (no-op if already running) and wait."""
    if not _is_running(pg_bin, datadir):
        _run([Path(pg_bin) / "pg_ctl", "-D", datadir, "-l", datadir / "server.log",
              "-w", "-t", "60", "start"], cwd=datadir.parent)
    _wait_ready(pg_bin, port)


def _stop(pg_bin: Path, datadir: Path) -> None:
    """Fast-stop one node if it is running."""
    if datadir.exists() and _is_running(pg_bin, datadir):
        _run([Path(pg_bin) / "pg_ctl", "-D", datadir, "-m", "fast",
              "-w", "-t", "60", "stop"], cwd=datadir.parent)


def start_cluster(pg_bin: Path, base: Path, port: int = 9700, workers: int = 2) -> str:
    """Init (if needed), start and wire up the cluster; return the coordinator URL."""
    pg_bin, base = Path(pg_bin), Path(base)
    nodes = _nodes(base, port, workers)
    for datadir, node_port in nodes:
        _init_node(pg_bin, datadir, node_port)
        _start(pg_bin, datadir, node_port)
        psql(pg_bin, node_port, "CREATE EXTENSION IF NOT EXISTS citus")
    psql(pg_bin, port, f"SELECT citus_set_coordinator_host('{HOST}', {port})")
    for _, node_port in nodes[1:]:
        psql(pg_bin, port, f"SELECT citus_add_node('{HOST}', {node_port})")
        psql(pg_bin, port, f"SELECT citus_activate_node('{HOST}', {node_port}) "
             f"FROM pg_dist_node WHERE nodeport = {node_port} AND NOT isactive")
    return f"postgresql+psycopg://{PG_USER}@{HOST}:{port}/postgres"


def stop_cluster(pg_bin: Path, base: Path) -> None:
    """Stop every node found under ``base`` (workers first)."""
    pg_bin, base = Path(pg_bin), Path(base)
    workers = sorted(base.glob("w[0-9]*"), key=lambda p: int(p.name[1:]))
    for datadir in [*workers, base / "coord"]:
        _stop(pg_bin, datadir)


def stop_node(pg_bin: Path, base: Path, index: int, port: int = 9700) -> None:
    """Stop node ``index`` (0 = coordinator, 1.. = workers)."""
    datadir, _ = _node(Path(base), index, port)
    _stop(Path(pg_bin), datadir)


def start_node(pg_bin: Path, base: Path, index: int, port: int = 9700) -> None:
    """Start node ``index`` again (0 = coordinator, 1.. = workers) and wait."""
    datadir, node_port = _node(Path(base), index, port)
    _start(Path(pg_bin), datadir, node_port)


def active_workers(pg_bin: Path, port: int = 9700) -> list:
    """``host:port`` of workers the coordinator currently lists as active."""
    out = psql(Path(pg_bin), port,
               "SELECT node_name || ':' || node_port FROM citus_get_active_worker_nodes() ORDER BY 1")
    return out.splitlines()


if __name__ == "__main__":  # python tests/citus_cluster.py [base] [port]
    import sys

    _base = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/citus-cluster")
    _port = int(sys.argv[2]) if len(sys.argv) > 2 else 9700
    _bin = Path("/usr/lib/postgresql/15/bin")
    print(start_cluster(_bin, _base, _port))
    print(active_workers(_bin, _port))


def create_database(admin_url: str, name: str) -> str:
    """A new Citus database `name` on the cluster whose coordinator `admin_url` reaches (its `postgres` database):
    created on every node, the extension installed everywhere, the workers registered. Returns its URL."""
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    base = admin_url.rsplit("/", 1)[0]
    try:
        with admin.connect() as c:
            workers = [(h, int(p)) for h, p in c.execute(text("SELECT * FROM citus_get_active_worker_nodes()"))]
            host, port = c.execute(text("SELECT inet_server_addr()::text, inet_server_port()")).one()
            c.execute(text("SET citus.enable_create_database_propagation = on"))
            c.execute(text(f'CREATE DATABASE "{name}"'))
        for h, p in workers:
            worker = create_engine(f"postgresql+psycopg://{PG_USER}@{h}:{p}/{name}", isolation_level="AUTOCOMMIT")
            with worker.connect() as c:
                c.execute(text("CREATE EXTENSION IF NOT EXISTS citus"))
            worker.dispose()
        url = f"{base}/{name}"
        coord = create_engine(url, isolation_level="AUTOCOMMIT")
        with coord.connect() as c:
            c.execute(text("CREATE EXTENSION IF NOT EXISTS citus"))
            c.execute(text("SELECT citus_set_coordinator_host(:h, :p)"), {"h": host.split("/")[0], "p": port})
            for h, p in workers:
                c.execute(text("SELECT citus_add_node(:h, :p)"), {"h": h, "p": p})
        coord.dispose()
        return url
    finally:
        admin.dispose()


def drop_database(admin_url: str, name: str) -> None:
    """Drop a database made by create_database from every node."""
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text("SET citus.enable_create_database_propagation = on"))
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def add_worker(pg_bin: Path, base: Path, index: int, databases: list, port: int = 9700) -> None:
    """Start a new worker node ``index`` (port + index) and add it to the cluster in each of ``databases``
    (the extension installed there first), as an operator adding a machine would."""
    datadir, wport = _node(base, index, port)
    _init_node(pg_bin, datadir, wport)
    _start(pg_bin, datadir, wport)
    for db in databases:  # every database and its extension first: adding the node connects to all of them
        if not psql(pg_bin, wport, f"SELECT 1 FROM pg_database WHERE datname = '{db}'"):
            psql(pg_bin, wport, f'CREATE DATABASE "{db}"')
        psql(pg_bin, wport, "CREATE EXTENSION IF NOT EXISTS citus", db=db)
    for db in databases:
        psql(pg_bin, port, f"SELECT citus_add_node('{HOST}', {wport})", db=db)
