"""The Kafka stream bench (``bench/stream.py``) at a tiny size on the live broker: it runs end to
end, in two alternating rounds that each read every record, and leaves nothing in the temporary
directory (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.bench_support import run_bench

pytestmark = pytest.mark.kafka


def test_stream_bench_runs_both_modes_and_removes_its_work_directory(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Until stop 34 every run left an idgraph-bench-stream-* directory (events, graphs, keys and,
    # with a broker of its own, the broker's data) in /tmp; run_bench fails on anything left.
    monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka_bootstrap)
    figures = tmp_path / "stream.json"
    done = run_bench(
        "stream.py", "--identifiers", "200", "--rounds", "2", "--json", str(figures), timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(figures.read_text())
    assert data["consume"]["events"] == data["bulk"]["events"] > 0
    # Both rounds read the whole topic (a fresh group each, from the start), in alternating order.
    assert [r["order"] for r in data["rounds"]] == [["consume", "bulk"], ["bulk", "consume"]]
    for each in data["rounds"]:
        assert each["consume"]["events"] == each["bulk"]["events"] == data["events"]
        assert 0 < each["consume"]["cpu_seconds"] <= each["consume"]["run_cpu_seconds"]
    assert data["ratio_spread"][0] <= data["ratio"] <= data["ratio_spread"][1]
    assert "ratio consume/bulk: median" in done.stdout
