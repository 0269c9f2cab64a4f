"""Smoke test of bench/sql_cost.py: both modes' statements are timed (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.bench_support import run_bench

INSERT_IDENTIFIERS = (
    "INSERT INTO identifiers (pk, node_id, type, key_id, digest, person, first_seen, last_seen) "
    "VALUES (?..)"
)


def test_sql_cost_times_the_statements_of_both_modes_when_run_at_tiny_scale(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "sql.json"
    done = run_bench(
        "sql_cost.py",
        "--identifiers",
        "400",
        "--tmp-dir",
        str(tmp_path),
        "--json",
        str(figures),
        timeout=180,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "400 same-work" in done.stdout
    assert "400 real" in done.stdout
    doc = json.loads(figures.read_text(encoding="utf-8"))
    assert doc.keys() == {"400"}
    for mode in ("same-work", "real"):
        costs = doc["400"][mode]
        # Both write the same identifiers rows through the same statement, and commit.
        assert costs[INSERT_IDENTIFIERS] > 0
        assert costs["COMMIT"] > 0
        statements = {k: v for k, v in costs.items() if k not in {"process", "sqlite", "rest"}}
        assert abs(sum(statements.values()) - costs["sqlite"]) < 1e-6 * max(1.0, costs["sqlite"])
        assert costs["process"] > 0
        # Only statements of the measured span: the real store's schema set-up runs before it.
        assert not any(k.startswith("CREATE ") for k in statements)
