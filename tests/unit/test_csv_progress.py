"""The CSV reader reports the bytes it consumed per batch, so `import` shows progress for CSV files too."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics_gql.domain import intake


def test_csv_batches_report_the_bytes_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "IMPORT_BATCH", 1000)
    path = tmp_path / "views.csv"
    rows = [f"e{i},blog-{i % 7},viewer-{i},KE,2025-02-01T12:{i % 60:02d}:00Z" for i in range(3000)]
    path.write_text("eventId,blogId,viewerId,viewerCountry,viewedAt\n" + "\n".join(rows) + "\n")
    with open(path, "rb") as stream:
        batches = list(intake.csv_batches(stream))
    assert [len(b) for b, _, _ in batches] == [1000, 1000, 1000]
    steps = [n for _, n, _ in batches]
    assert all(n > 0 for n in steps), steps  # the bar moves with every batch
    assert sum(steps) == path.stat().st_size
    assert [last for _, _, last in batches] == [1001, 2001, 3001]
