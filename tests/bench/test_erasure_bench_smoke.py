"""Smoke test of the erasure benchmark: it runs at a tiny size and prints its figures."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.bench_support import run_bench


def test_erasure_bench_prints_latencies_baselines_and_batch_when_run_at_tiny_size(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "erasure.json"
    done = run_bench(
        "erasure.py",
        "--sizes",
        "200,400",
        "--samples",
        "5",
        "--batch",
        "10",
        "--tmp-dir",
        str(tmp_path),
        "--json",
        str(figures),
        timeout=180,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    ops = {(cells[0], cells[1]) for cells in rows if len(cells) == 6 and cells[0].isdigit()}
    assert ops == {(n, op) for n in ("200", "400") for op in ("erase", "ingest", "resolve")}
    assert "plans: index seeks only" in done.stdout
    assert "batch of 10 erasures" in done.stdout
    assert "erasure_completed" not in done.stdout + done.stderr  # log lines are off
    report = json.loads(figures.read_text())
    assert [r["identifiers"] for r in report] == [200, 400]
    assert all(r["erase"]["samples"] == 5 for r in report)
