"""Secrets never leave the process (issue 13 item 3): API keys and the password in ANALYTICS_DATABASE_URL are
SecretStr; every CLI command and a live `serve` run with known secrets, through good calls and every kind of
failure (wrong key, missing scope, bad query, bad ingest lines, an unreachable database, a malformed key list), and
each captured line of stdout, stderr and the server's log is searched for them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from jobs_helpers import free_port
from sqlalchemy.engine import make_url

from analytics_gql.settings import ApiKey, Settings

ROOT = Path(__file__).resolve().parents[2]
READ_KEY, INGEST_KEY, ADMIN_KEY = "rk-S3CRET-7f3a9c", "ik-S3CRET-0d2e41", "ak-S3CRET-b58c67"
KEYS = f"{READ_KEY}:read;{INGEST_KEY}:ingest;{ADMIN_KEY}:admin"
DB_PASSWORD = "pw-S3CRET-91e0aa"
REDIS_PASSWORD = "redis-S3CRET-44c1"
SECRETS = (READ_KEY, INGEST_KEY, ADMIN_KEY, DB_PASSWORD, REDIS_PASSWORD)


def assert_no_secret(text: str, where: str) -> None:
    for line in text.splitlines():
        assert "S3CRET" not in line, f"{where} leaked a secret: {line!r}"
        for s in SECRETS:
            assert s not in line and s[:8] not in line, f"{where} leaked (part of) a secret: {line!r}"


def with_password(url: str) -> str:
    """The URL with the known password (trust authentication accepts and ignores it); SQLite keeps no password."""
    u = make_url(url)
    return u.set(password=DB_PASSWORD).render_as_string(hide_password=False) if u.password is None and \
        u.get_backend_name() == "postgresql" else url


def run(args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    full.update(env)
    done = subprocess.run([sys.executable, "-m", "analytics_gql.cli", *args], cwd=cwd, env=full, input=stdin,
                          capture_output=True, text=True, timeout=180)
    assert_no_secret(done.stdout, f"`{' '.join(args)}` stdout")
    assert_no_secret(done.stderr, f"`{' '.join(args)}` stderr")
    return done


def test_settings_and_keys_never_show_a_secret_in_a_repr() -> None:
    s = Settings(database_url=f"postgresql+psycopg://u:{DB_PASSWORD}@db/x", api_keys=KEYS,
                 redis_url=f"redis://:{REDIS_PASSWORD}@cache:6379/0")
    for text in (repr(s), str(s), str(s.model_dump()), repr(s.keys), str(s.keys), *(k.name for k in s.keys)):
        assert_no_secret(text, "a repr")
    assert s.db_url.endswith(f":{DB_PASSWORD}@db/x") and s.redis_dsn == f"redis://:{REDIS_PASSWORD}@cache:6379/0"
    assert [k.key for k in s.keys] == [READ_KEY, INGEST_KEY, ADMIN_KEY]
    assert ApiKey(READ_KEY, frozenset({"read"})).name == ApiKey(READ_KEY, frozenset()).name != s.keys[1].name


@pytest.mark.parametrize("keys", [f"{READ_KEY}", f"{READ_KEY}:reed", f"ok:read;{ADMIN_KEY}", f"{INGEST_KEY}:"])
def test_a_malformed_key_list_is_refused_without_showing_it(keys: str, tmp_path: Path) -> None:
    done = run(["status"], {"ANALYTICS_API_KEYS": keys, "ANALYTICS_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"},
               tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: ANALYTICS_API_KEYS: API key entry ")


def test_every_command_and_a_live_server_keep_the_secrets(db_url: str, tmp_path: Path) -> None:
    url = with_password(db_url)
    env = {"ANALYTICS_DATABASE_URL": url, "ANALYTICS_API_KEYS": KEYS, "ANALYTICS_RETENTION": "raw=3650d"}
    for args in (["migrate"], ["seed", "--views", "2000", "--blogs", "20", "--authors", "4", "--days", "20"],
                 ["rollup"], ["status"], ["status", "--json"], ["audit"], ["compact"]):
        done = run(args, env, tmp_path)
        assert done.returncode == 0, done.stderr
    bad = '{"id": "a1", "name": "A"}\n{"id": 5}\nnot json\n'
    assert run(["import", "authors", "-", "--no-progress"], env, tmp_path, stdin=bad).returncode == 2
    if "postgresql" in url:  # a database that refuses the connection: the error names it without the password
        down = make_url(url).set(port=1).render_as_string(hide_password=False)
        done = run(["status"], {**env, "ANALYTICS_DATABASE_URL": down}, tmp_path)
        assert done.returncode == 1 and done.stderr.startswith("error: cannot reach the database")

    port = free_port()
    log = tmp_path / "serve.log"
    full = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "analytics_gql.cli", "serve", "--port", str(port)], cwd=ROOT,
                                env={**full, **env, "ANALYTICS_ROLLUP_INTERVAL": "1"}, stdout=sink,
                                stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.1)
            exercise(base)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(40)
    text = log.read_text()
    assert f"127.0.0.1:{port}" in text  # the log was captured (uvicorn names the address it serves)
    assert_no_secret(text, "serve's log")
    # Not a terminal: JSON lines (ANALYTICS_LOG_FORMAT=auto), the requests among them, named by key fingerprint.
    docs = [json.loads(line) for line in text.splitlines()]
    assert all({"time", "level", "logger", "message"} <= d.keys() for d in docs)
    requests = [d for d in docs if d["logger"] == "analytics_gql.requests"]
    assert [(d["status"], d.get("key")) for d in requests if d["route"] == "/graphql"][:5] == [
        (200, ApiKey(READ_KEY, frozenset()).name), (200, ApiKey(ADMIN_KEY, frozenset()).name), (401, None),
        (401, None), (200, ApiKey(INGEST_KEY, frozenset()).name)]


def exercise(base: str) -> None:
    """Good and bad calls with right, wrong and near-miss keys; every answer is searched too."""
    answers = []
    q = {"query": "{ top(dimension: BLOG, limit: 3) { totalViews nodes { key views } } }"}
    for headers in ({"Authorization": f"Bearer {READ_KEY}"}, {"X-API-Key": ADMIN_KEY}, {},
                    {"Authorization": f"Bearer {READ_KEY}x"}, {"Authorization": f"Bearer {INGEST_KEY}"}):
        answers.append(httpx.post(f"{base}/graphql", json=q, headers=headers, timeout=30))
    assert [r.status_code for r in answers] == [200, 200, 401, 401, 200]
    assert answers[0].json()["data"]["top"]["totalViews"] == 2000
    read = {"Authorization": f"Bearer {READ_KEY}"}
    answers += [
        httpx.post(f"{base}/graphql", headers=read, timeout=30,
                   json={"query": '{ top(dimension: BLOG, timeZone: "Mars/Base") { totalViews } }'}),
        httpx.post(f"{base}/graphql", json={"query": "mutation { refreshRollups { enqueued } }"}, headers=read,
                   timeout=30),
        httpx.post(f"{base}/graphql?api_key={READ_KEY}", json=q, timeout=30),
        httpx.post(f"{base}/ingest/views", content='{"blogId": "nope"}\n{bad\n',
                   headers={"Authorization": f"Bearer {INGEST_KEY}", "Content-Type": "application/x-ndjson"},
                   timeout=30),
        httpx.get(f"{base}/metrics", timeout=30),
    ]
    assert [r.status_code for r in answers[5:]] == [200, 200, 401, 400, 200]
    for r in answers:
        assert_no_secret(r.text, f"the answer to {r.request.method} {r.request.url.path}")
        assert_no_secret(str(r.headers), "answer headers")
