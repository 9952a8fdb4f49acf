"""GraphiQL in a real headless browser (Debian's chromium) against `analytics-gql serve`: a saved query runs.

Skips locally when chromium is missing, fails under CI=true. The page's `?example=NAME&run=1` opens a saved
example and presses GraphiQL's run button; --dump-dom then shows what GraphiQL rendered in its result pane.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from conftest import missing_service

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    missing_service("chromium (apt-get install -y chromium)")
    raise AssertionError("unreachable")


def cli() -> list[str]:
    script = Path(sys.executable).with_name("analytics-gql")
    return [str(script)] if script.exists() else [sys.executable, "-m", "analytics_gql.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("serve did not become healthy")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a `serve` started by a browser test: SIGTERM, then SIGKILL after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def visible_text(dom: str, marker: str) -> str:
    """The text of the element whose class attribute contains `marker`, tags stripped and spaces collapsed."""
    start = dom.find(marker)
    assert start >= 0, f"{marker} not in the page"
    text = html.unescape(re.sub(r"<[^>]+>", "", dom[start:]))
    return re.sub(r"\s+", " ", text.replace("\xa0", " "))


def write_ndjson(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


@pytest.mark.timeout(240)
def test_graphiql_runs_a_saved_query_in_chromium(tmp_path: Path) -> None:
    browser = chromium()
    import analytics_gql.api.schema  # noqa: F401 - `serve` needs the real schema: a broken import fails here
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env["ANALYTICS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'browser.db'}"
    run = {"cwd": tmp_path, "env": env, "check": True, "capture_output": True, "timeout": 120}
    subprocess.run([*cli(), "migrate"], **run)  # type: ignore[call-overload]
    views = [5, 3, 2]  # views per blog: the saved "top-blogs" query must show these totals
    write_ndjson(tmp_path / "authors.ndjson", [{"id": "a1", "name": "Abebe", "country": "ET"}])
    write_ndjson(tmp_path / "blogs.ndjson", [
        {"id": f"b{i}", "title": f"Blog number {i}", "authorId": "a1", "createdAt": "2025-01-03T10:00:00Z"}
        for i in range(len(views))])
    write_ndjson(tmp_path / "views.ndjson", [
        {"eventId": f"e{i}-{j}", "blogId": f"b{i}", "viewedAt": "2025-02-01T12:00:00Z"}
        for i, n in enumerate(views) for j in range(n)])
    for kind in ("authors", "blogs", "views"):
        path = str(tmp_path / f"{kind}.ndjson")
        subprocess.run([*cli(), "import", kind, path, "--no-progress"], **run)  # type: ignore[call-overload]

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([*cli(), "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(base, proc)
        for budget in (20_000, 60_000, 120_000):
            # Chromium dumps the page when its virtual time budget is spent, whether the query's answer (real
            # time: a server on a loaded machine) has arrived or not: an empty result window is asked again with a
            # larger budget (a CI run on a busy 2-core machine once dumped it empty); a wrong answer is not.
            with tempfile.TemporaryDirectory() as profile:
                out = subprocess.run(
                    # A tall window: CodeMirror only renders the result lines that are in view.
                    [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget}",
                     "--window-size=1400,3000", "--dump-dom", f"{base}/graphql?example=top-blogs&run=1"],
                    capture_output=True, timeout=180, check=False)
            dom = out.stdout.decode("utf-8", "replace")
            assert "graphiql-container" in dom, f"GraphiQL did not render: {out.stderr.decode()[-2000:]}"
            result = visible_text(dom, "result-window")
            if '"totalViews"' in result or '"errors"' in result:
                break
        assert f'"totalViews": {sum(views)}' in result, result[:2000]
        assert '"otherViews": 0' in result
        for rank, (i, n) in enumerate(sorted(enumerate(views), key=lambda p: -p[1]), 1):
            assert f'"rank": {rank}, "key": "b{i}", "label": "Blog number {i}", "views": {n}' in result, result[:2000]
        assert '"errors"' not in result
    finally:
        stop(proc)
        log.close()
