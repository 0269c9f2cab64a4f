"""``bootstrap.container.applier_start``: a server waits (``/readyz``) for an applier child only
when it is ``idgraph serve``'s (process mode, a journal, a tally file and a run id), and for
nothing otherwise."""

from __future__ import annotations

from pathlib import Path

from bootstrap.container import applier_start
from bootstrap.settings import Settings
from services.metrics import TalliedMetrics, TallyFile


def test_a_server_waits_only_for_the_applier_child_serve_started_when_settings_say_so(
    tmp_path: Path,
) -> None:
    tally = TallyFile(tmp_path / "applier.json")
    serve = Settings(
        env="test",
        data_dir=tmp_path / "data",
        ingest_applier="process",
        ingest_applier_tally_file=tally.path,
        ingest_applier_run_id="this-run",
    )
    start = applier_start(serve)
    assert start is not None
    assert not start.started()
    TalliedMetrics(tally, run_id="this-run").mark_started()
    assert start.started()  # the start of this run, read from the tally file

    for nothing_to_wait_for in (
        {"ingest_applier": "thread"},
        {"ingest_applier": "auto"},
        {"store_url": "neo4j://localhost:7687"},  # no journal, no applier
        {"ingest_applier_tally_file": None},
        {"ingest_applier_run_id": None},  # an applier started some other way
    ):
        assert applier_start(serve.model_copy(update=nothing_to_wait_for)) is None
