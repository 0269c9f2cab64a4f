"""Smoke test of the audience-state upgrade bench at a tiny size (no timing asserted)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bench.member_scan import build
from tests.support.bench_support import run_bench


def test_upgrade_bench_times_both_upgrades_on_copies_and_leaves_the_given_graph_alone(
    tmp_path: Path,
) -> None:
    source = tmp_path / "graph.sqlite3"
    build(source, 300, 5)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    figures_file = tmp_path / "upgrade.json"
    done = run_bench(
        "upgrade.py", "--db", str(source), "--rounds", "2", "--json", str(figures_file), timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(figures_file.read_text())
    # Every mode ran once a round (the bench checks each open left the current state, a row per
    # record).
    runs = figures["runs"]
    modes = ("state 6", "state 5", "state 4", "state 3", "state 2")
    assert [len(runs[mode]) for mode in modes] == [2, 2, 2, 2, 2]
    assert figures["consent_records"] > 0
    for name in ("5_to_6", "4_to_5", "3_to_4", "2_to_3"):
        assert set(figures["upgrades"][name]) == {"seconds", "cpu_seconds", "bytes_written"}
    # An upgrade writes what it fills.
    assert all(
        run["bytes_written"] > 0
        for mode in ("state 5", "state 4", "state 3", "state 2")
        for run in runs[mode]
    )
    assert "upgrade 5 -> 6" in done.stdout
    assert "upgrade 4 -> 5" in done.stdout
    assert "upgrade 3 -> 4" in done.stdout
    assert "upgrade 2 -> 3" in done.stdout
    # The given graph is only read: every layout and upgrade happened on copies.
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before


def test_upgrade_bench_refuses_a_db_that_does_not_exist(tmp_path: Path) -> None:
    refused = run_bench("upgrade.py", "--db", str(tmp_path / "missing.sqlite3"), timeout=60)
    assert refused.returncode == 2
    assert "no such file" in refused.stderr
