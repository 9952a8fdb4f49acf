"""bench/traffic.py --smoke: the dashboard traffic bench runs end to end (SQLite, seconds-long phases, live ingest)
and its own checks hold: every phase made requests, no errors, the re-asked sample equals raw SQL, ingest stored
views. Performance targets are not asserted here (a smoke database says nothing about them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "traffic.py"


@pytest.mark.timeout(180)
def test_traffic_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "traffic.json"
    p = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out)], capture_output=True, text=True,
                       timeout=170, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads(out.read_text())
    phases = report["phases"]
    assert set(phases) == {"phase1", "phase2", "phase3"}
    for name, phase in phases.items():
        assert phase["requests"] > 0, name
        assert phase["errors"] == 0, (name, phase["error_samples"])
        assert phase["statuses"] == [200], name
    for name in ("phase2", "phase3"):
        ingest = phases[name]["ingest"]
        assert ingest["accepted"] > 0 and ingest["failed"] == 0 and ingest["rejected"] == 0, (name, ingest)
        assert ingest["accepted"] + ingest["duplicates"] == ingest["sent"], (name, ingest)
    exact = report["exactness"]
    assert exact["asked"] > 0 and exact["matched"] == exact["asked"], exact["mismatches"]
    assert {a["name"]: a["ok"] for a in report["acceptance"]}["0 errors (queries of every phase, ingest batches)"]
