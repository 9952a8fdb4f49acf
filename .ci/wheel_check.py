"""CI step: build the wheel, install it into a fresh venv outside the checkout, run every operator command from there.

Run by .ci/run with the checkout's .venv python (its pip builds the wheel); it never imports the package itself.
On SQLite and on a PostgreSQL database of its own (created and dropped on 127.0.0.1:5432, user postgres) it runs
migrate, seed, rollup, status, export-schema, export and a serve that must answer a GraphQL query with the seeded
numbers.
Exit 0 only when every check passed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qtAX", "-c"]
SEED = {"authors": 5, "blogs": 20, "views": 3000, "days": 30, "seed": 7}
QUERY = "{ top(dimension: BLOG, limit: 1000) { totalViews nodes { views } } rollupStatus { pendingEvents } }"
# Build trees never copied into the clean source copy: a stale build/lib would smuggle deleted modules into the wheel.
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                                    ".hypothesis", "*.db", "*.db-*", "out")
START = time.monotonic()


class CheckFailed(Exception):
    """A command failed or answered something else than expected."""


def say(message: str) -> None:
    """One progress line with the elapsed time."""
    print(f"[wheel {time.monotonic() - START:5.1f}s] {message}", flush=True)


def run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a command; its stdout, or CheckFailed with everything it printed."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise CheckFailed(f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout}{done.stderr}")
    return done.stdout


def expect(ok: bool, message: str) -> None:
    """Fail the step with `message` unless `ok`."""
    if not ok:
        raise CheckFailed(message)


def build_wheel(tmp: Path) -> Path:
    """Build the wheel from a clean copy of the checkout (what a release would build)."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp / "dist"), str(src)],
        cwd=tmp)
    wheels = list((tmp / "dist").glob("analytics_gql-*.whl"))
    expect(len(wheels) == 1, f"expected one wheel, found {wheels}")
    return wheels[0]


def install(wheel: Path, tmp: Path) -> Path:
    """A fresh venv holding only the wheel and its dependencies; its bin folder."""
    venv = tmp / "venv"
    # The checkout's pip installs into the new venv (pip --python): no ensurepip there. --no-compile: the .pyc of
    # a few thousand dependency files are what the machine spends most of this step on, and prove nothing here.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-compile",
         str(wheel)], cwd=tmp)
    where = run([str(venv / "bin" / "python"), "-c", "import analytics_gql.storage.schema as s; "
                 "print(s.__file__); print(s.migrations_dir())"], cwd=tmp, env=clean_env(venv / "bin", None))
    for line in where.split():
        expect(Path(line).is_relative_to(venv), f"the package or its migrations are not in the venv: {line}")
    return venv / "bin"


def clean_env(bin_dir: Path, database_url: str | None) -> dict[str, str]:
    """The environment of an operator's shell: no ANALYTICS_* or PYTHONPATH from CI, only the database URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_") and k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    if database_url:
        env["ANALYTICS_DATABASE_URL"] = database_url
    return env


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    """One HTTP request; its status and JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def serve_and_query(cli: str, env: dict[str, str], work: Path, raw_views: int) -> None:
    """`serve` on a free port answers /readyz and a GraphQL query whose numbers match the database."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(work / "serve.log", "w") as log:
        proc = subprocess.Popen([cli, "serve", "--port", str(port)], cwd=work, env=env, stdout=log, stderr=log)
    try:
        wait_ready(proc, base, work / "serve.log")
        status, answer = http("POST", f"{base}/graphql", {"query": QUERY})
        expect(status == 200 and "errors" not in answer, f"POST /graphql answered {status}: {answer}")
        data = answer["data"]
        assert isinstance(data, dict)
        top, pending = data["top"], data["rollupStatus"]["pendingEvents"]
        views = [n["views"] for n in top["nodes"]]
        expect(top["totalViews"] == raw_views == SEED["views"],
               f"totalViews {top['totalViews']}, raw events {raw_views}, seeded {SEED['views']}")
        expect(sum(views) == raw_views and len(views) <= SEED["blogs"], f"per-blog views {views} != {raw_views}")
        expect(pending == 0, f"pendingEvents {pending} after `rollup`")
        say(f"  serve: POST /graphql totalViews={raw_views} over {len(views)} blogs, pendingEvents=0")
        for path in ("/dashboard", "/static/dashboard/dashboard.js", "/static/dashboard/uPlot.iife.min.js",
                     "/static/graphiql/graphiql.min.js", "/static/graphiql/init.js"):
            with urllib.request.urlopen(base + path, timeout=10) as r:  # the wheel carries the pages' files
                expect(r.status == 200 and len(r.read()) > 100, f"GET {path} answered {r.status}")
        say("  serve: the dashboard and GraphiQL pages and their vendored files from the wheel")
    finally:
        proc.terminate()
        rc = proc.wait(timeout=30)
    expect(rc == 0, f"serve exited {rc} on SIGTERM\n{(work / 'serve.log').read_text()}")
    say("  serve: stopped on SIGTERM (exit 0)")


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    """Poll /readyz until it answers 200 (60 s at most)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        expect(proc.poll() is None, f"serve exited {proc.returncode}\n{log.read_text()}")
        try:
            status, body = http("GET", f"{base}/readyz")
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.3)
    raise CheckFailed(f"serve did not become ready within 60 s\n{log.read_text()}")


def commands(bin_dir: Path, database_url: str, work: Path, count_views: list[str] | None) -> None:
    """Every operator command from the installed wheel against one database, from `work` (outside the checkout)."""
    cli, env = str(bin_dir / "analytics-gql"), clean_env(bin_dir, database_url)
    say(f"  {run([cli, 'migrate'], cwd=work, env=env).strip()}")
    seed_args = [f"--{k}={v}" for k, v in SEED.items()]
    say(f"  {run([cli, 'seed', *seed_args], cwd=work, env=env).strip()}")
    say(f"  {run([cli, 'rollup'], cwd=work, env=env).strip()}")
    doc = json.loads(run([cli, "status", "--json", "--max-lag", "0"], cwd=work, env=env))
    expect(doc["pendingEvents"] == 0 and doc["lagSeconds"] == 0 and doc["lastPass"]["events"] == SEED["views"],
           f"status after the rollup: {doc}")
    say(f"  status: watermark id {doc['watermarkId']:,}, pending 0, lag 0, last pass {doc['lastPass']['events']:,} "
        f"events; {len(doc['tables'])} tables")
    run([cli, "export-schema", "-o", str(work / "schema.graphql")], cwd=work, env=env)
    expect((work / "schema.graphql").read_text() == (ROOT / "schema.graphql").read_text(),
           "export-schema from the wheel differs from the committed schema.graphql")
    say("  export-schema: identical to schema.graphql")
    (work / "top.graphql").write_text("{ top(dimension: BLOG, limit: 3) { nodes { key views } totalViews } }")
    lines = run([cli, "export", str(work / "top.graphql")], cwd=work, env=env).splitlines()
    expect(lines[0] == "key,views" and len(lines) == 4 and all(line.count(",") == 1 for line in lines),
           f"export from the wheel: {lines}")
    say(f"  export: CSV header and {len(lines) - 1} rows")
    if count_views is None:
        with sqlite3.connect(work / "analytics.db") as conn:
            raw = int(conn.execute("SELECT count(*) FROM view_events").fetchone()[0])
    else:
        raw = int(run(count_views, cwd=work).strip())
    serve_and_query(cli, env, work, raw)


def on_sqlite(bin_dir: Path, tmp: Path) -> None:
    """The embedded default: a SQLite file in the working folder."""
    work = tmp / "sqlite"
    work.mkdir()
    say("SQLite")
    commands(bin_dir, "sqlite:///./analytics.db", work, None)


def on_postgresql(bin_dir: Path, tmp: Path) -> None:
    """A PostgreSQL database created for this check and dropped after it."""
    name = f"ag_wheel_{os.getpid()}"
    work = tmp / "postgresql"
    work.mkdir()
    say(f"PostgreSQL (database {name})")
    run([*PG_ADMIN, f"CREATE DATABASE {name}"], cwd=tmp)
    try:
        count = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", name, "-qtAX", "-c",
                 "SELECT count(*) FROM view_events"]
        commands(bin_dir, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", work, count)
    finally:
        run([*PG_ADMIN, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], cwd=tmp)


def main() -> int:
    """Build, install, run on both databases; 0 when all passed."""
    with tempfile.TemporaryDirectory(prefix="ag-wheel-") as name:
        tmp = Path(name).resolve()
        try:
            expect(not tmp.is_relative_to(ROOT), f"the temporary folder {tmp} is inside the checkout")
            wheel = build_wheel(tmp)
            say(f"built {wheel.name}")
            bin_dir = install(wheel, tmp)
            say(f"installed into {bin_dir.parent} (package and migrations from site-packages)")
            on_sqlite(bin_dir, tmp)
            on_postgresql(bin_dir, tmp)
        except (CheckFailed, subprocess.TimeoutExpired) as e:
            print(f"wheel check FAILED: {e}", file=sys.stderr)
            return 1
    say("all wheel checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
