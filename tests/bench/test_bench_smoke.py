"""Smoke test of the ingest benchmark: it runs and prints its table (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.bench_support import run_bench


def test_bench_prints_both_modes_and_ratio_when_run_at_tiny_scale(tmp_path: Path) -> None:
    figures = tmp_path / "bench.json"
    done = run_bench(
        "ingest.py",
        "--identifiers",
        "400",
        "--tmp-dir",
        str(tmp_path),
        "--json",
        str(figures),
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    # Table rows: mode, identifiers, seconds, identifiers/s, peak RSS MiB.
    rows = {
        cells[0]: cells
        for cells in (line.split() for line in done.stdout.splitlines())
        if len(cells) == 5 and cells[0] in {"floor", "real"}
    }
    assert "mode" in done.stdout.split()
    assert rows.keys() == {"floor", "real"}
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


def test_bench_with_attributes_runs_three_modes_and_prints_the_scan_cost(tmp_path: Path) -> None:
    figures = tmp_path / "bench.json"
    done = run_bench(
        "ingest.py",
        "--identifiers",
        "400",
        "--attributes",
        "5",
        "--tmp-dir",
        str(tmp_path),
        "--json",
        str(figures),
        timeout=300,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    # Table rows: mode, identifiers, attr values, seconds, identifiers/s, attr values/s, RSS.
    modes = {"floor", "real-noscan", "real"}
    rows = {
        cells[0]: cells
        for cells in (line.split() for line in done.stdout.splitlines())
        if len(cells) == 7 and cells[0] in modes
    }
    assert rows.keys() == modes
    # Every mode processed the same identifier and attribute values: 100 persons x 5 traits.
    assert {(cells[1], cells[2]) for cells in rows.values()} == {("410", "500")}
    assert "ratio real-noscan/floor throughput:" in done.stdout
    assert "ratio real/floor throughput:" in done.stdout
    assert "scan cost per value: (t_real - t_noscan) / string values =" in done.stdout
    assert "scan cost per distinct value:" in done.stdout
    # Clean values (and one redacted phone number): every trait is stored, none quarantined.
    assert "real-noscan facts: stored=500, quarantined=0" in done.stdout
    assert "real facts: stored=500, quarantined=0" in done.stdout
    assert done.stdout.count("rejected rows=0") == 2
    assert "EXPECTED" not in done.stdout
    doc = json.loads(figures.read_text(encoding="utf-8"))
    assert doc["modes"].keys() == modes
    assert {"string_values", "distinct_string_values"} <= doc["scan_cost"].keys()
