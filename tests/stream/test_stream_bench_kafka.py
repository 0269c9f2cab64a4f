"""The Kafka stream bench (``bench/stream.py``) at a tiny size on the live broker: it runs end to
end and leaves nothing in the temporary directory (no timing asserted)."""

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
    done = run_bench("stream.py", "--identifiers", "200", "--json", str(figures), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(figures.read_text())
    assert data["consume"]["events"] == data["bulk"]["events"] > 0
    assert "ratio consume/bulk" in done.stdout
