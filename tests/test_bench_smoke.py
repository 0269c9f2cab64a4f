"""Smoke test of the ingest benchmark: it runs and prints its table (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_prints_both_modes_and_ratio_when_run_at_tiny_scale(tmp_path: Path) -> None:
    figures = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "ingest.py"),
            "--identifiers",
            "400",
            "--tmp-dir",
            str(tmp_path),
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    assert {"mode", "floor", "real"} <= rows.keys()
    assert rows["floor"][1] == rows["real"][1]  # both modes processed the same identifier values
    assert "ratio real/floor throughput:" in done.stdout
    assert "rejected rows=0" in done.stdout
    # The generated data forces merges and refusals, and the graph ends as the generator predicts.
    assert "merged=4" in done.stdout
    assert "store after real run: persons=100, identifiers=400, links=300, refusals=1" in (
        done.stdout
    )
    assert "EXPECTED" not in done.stdout
    assert figures.is_file()
