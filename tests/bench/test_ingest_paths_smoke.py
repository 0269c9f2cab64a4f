"""Smoke test of bench/ingest_paths.py: every mode runs and counts its commits (no timing)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.bench_support import run_bench


def test_ingest_paths_runs_bulk_callers_and_groups_and_counts_their_commits(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "paths.json"
    done = run_bench(
        "ingest_paths.py",
        "--requests",
        "4",
        "--batch",
        "5",
        "--rounds",
        "1",
        "--groups",
        "2",
        "--json",
        str(figures),
        timeout=300,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(figures.read_text(encoding="utf-8"))
    runs = {run["mode"]: run for run in doc["runs"]}
    assert runs.keys() == {"bulk", "callers", "groups-2"}
    assert all(run["events"] == 20 for run in runs.values())
    assert runs["bulk"]["commits"] == 1  # 20 events: one bulk batch
    assert runs["groups-2"]["commits"] == 2  # 4 bodies, 2 per transaction
    assert 1 <= runs["callers"]["commits"] <= 4  # 4 bodies, sharing transactions or not
    assert "callers_events_per_second_over_bulk" in doc["ratios"]
