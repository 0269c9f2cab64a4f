"""The ingest applier process's counts on the server's ``/metrics``: an applier in another
process (``idgraph ingest-applier``) tallies into a file (``services.metrics.TalliedMetrics``),
and the server adds the file's counts to its own series, so that a scrape reads as if one
process had counted everything. The end-to-end case (a real ``idgraph serve`` and its child) is
in ``tests/cli/test_ingest_applier_process.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import Metrics
from identity.errors import IdGraphError
from services.metrics import (
    STORE_BUCKETS,
    ApplierStart,
    IngestApplierNotStartedError,
    JournalBatchSource,
    StoreOperation,
    TalliedMetrics,
    Tallies,
    TallyFile,
)
from tests.support.ingest_samples import sample_outcomes

# Below the first bound, on a bound, between bounds, on the last bound, past it.
DURATIONS = (0.0004, 0.001, 0.003, 0.7, 10.0, 42.0, 0.02)
APPLIED = ("idgraph_ingest_", "idgraph_store_seconds")


def _series(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(APPLIED) and not sample.name.endswith("_created")
    }


def test_a_scrape_reads_as_one_process_counting_everything_when_an_applier_counted_part(
    tmp_path: Path,
) -> None:
    outcomes = sample_outcomes()
    file = TallyFile(tmp_path / "applier.json")
    applier = TalliedMetrics(file)
    applier.record_ingest(outcomes[:3])
    applier.record_opened_batches(JournalBatchSource.JOURNAL, 2)
    for seconds in DURATIONS[:4]:
        applier.observe_store(StoreOperation.INGEST, seconds)
    applier.flush()

    server = Metrics(file.read)
    server.record_ingest(outcomes[3:])
    server.record_opened_batches(JournalBatchSource.MEMORY, 1)
    for seconds in DURATIONS[4:]:
        server.store_seconds.labels(StoreOperation.INGEST.value).observe(seconds)

    alone = Metrics()
    alone.record_ingest(outcomes)
    alone.record_opened_batches(JournalBatchSource.JOURNAL, 2)
    alone.record_opened_batches(JournalBatchSource.MEMORY, 1)
    for seconds in DURATIONS:
        alone.store_seconds.labels(StoreOperation.INGEST.value).observe(seconds)

    merged, expected = _series(server), _series(alone)
    assert merged.keys() == expected.keys()
    assert merged == {key: pytest.approx(value) for key, value in expected.items()}
    bucket = ("idgraph_store_seconds_bucket", frozenset({("operation", "ingest"), ("le", "0.001")}))
    assert merged[bucket] == 2  # 0.0004 and 0.001 (buckets are "at or below")
    # The console's dashboard totals count the applier's events too.
    assert server.totals((server.ingest_events, "outcome")) == alone.totals(
        (alone.ingest_events, "outcome")
    )


def test_the_dashboard_totals_read_the_tally_file_once_when_several_are_asked_for(
    tmp_path: Path,
) -> None:
    file = TallyFile(tmp_path / "applier.json")
    applier = TalliedMetrics(file)
    applier.record_ingest(sample_outcomes())
    applier.flush()
    reads: list[Tallies] = []

    def read() -> Tallies:
        reads.append(file.read())
        return reads[-1]

    server = Metrics(read)
    server.record_ingest(sample_outcomes()[:1])
    events, refused = server.totals(
        (server.ingest_events, "outcome"), (server.refused_identifiers, "reason")
    )
    assert len(reads) == 1
    assert events == {"created": 3.0, "refused": 1.0, "linked": 1.0, "duplicate": 1.0}
    assert refused == {reason: float(n) for reason, n in file.read().refused.items()}
    assert refused  # the applier counted refusals; the server none


def test_an_applier_started_again_goes_on_counting_from_the_file(tmp_path: Path) -> None:
    file = TallyFile(tmp_path / "applier.json")
    first = TalliedMetrics(file)
    first.record_ingest(sample_outcomes())
    first.observe_store(StoreOperation.INGEST, 0.3)
    first.flush()

    second = TalliedMetrics(file)  # after a crash: what the first wrote, nothing more
    second.record_ingest(sample_outcomes()[:1])
    second.observe_store(StoreOperation.INGEST, 0.3)
    second.flush()

    tallies = file.read()
    assert tallies.events == {"created": 3, "refused": 1, "linked": 1, "duplicate": 1}
    assert tallies.facts == {"stored": 5, "quarantined": 1, "dropped": 4}
    ingest = tallies.store["ingest"]
    assert ingest.count == 2
    assert ingest.seconds == pytest.approx(0.6)
    assert ingest.buckets[STORE_BUCKETS.index(0.5)] == 2


def test_the_tally_file_is_readable_by_its_owner_only_when_written(tmp_path: Path) -> None:
    file = TallyFile(tmp_path / "applier.json")
    counted = TalliedMetrics(file)
    counted.record_ingest(sample_outcomes())
    counted.flush()
    assert file.path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["applier.json"]  # no temp file left


def test_nothing_is_written_when_nothing_was_counted(tmp_path: Path) -> None:
    file = TallyFile(tmp_path / "applier.json")
    TalliedMetrics(file).flush()
    assert not file.path.exists()
    assert file.read() == Tallies()


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "[1, 2]",
        json.dumps({"format": 2, "events": {"created": 1}}),
        json.dumps({"events": {"created": 1}}),
    ],
)
def test_a_missing_damaged_or_foreign_file_reads_as_nothing_counted(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "applier.json"
    path.write_text(content, encoding="utf-8")
    assert TallyFile(path).read() == Tallies()
    assert TallyFile(tmp_path / "missing.json").read() == Tallies()
    # The server's scrape does not fail on it either.
    assert b"idgraph_ingest_events_total" in generate_latest(Metrics(TallyFile(path).read).registry)


def test_only_label_values_of_the_fixed_sets_are_read_back(tmp_path: Path) -> None:
    """A label value is never taken from the file unless it is one the server declares: a
    damaged or hand-edited file cannot put free text into a scrape."""
    path = tmp_path / "applier.json"
    good_buckets = [0] * len(STORE_BUCKETS) + [1]
    path.write_text(
        json.dumps(
            {
                "format": 1,
                "events": {"created": 2, "ann@example.org": 5, "linked": -1, "merged": 1.5},
                "refused": {"suppressed": 1, "p_123": 1},
                "facts": {"stored": 3},
                "opened": {"journal": 4, "elsewhere": 1},
                "store": {
                    "ingest": {"buckets": good_buckets, "seconds": 12.0},
                    "resolve": {"buckets": [1, 2], "seconds": 1.0},
                    "customer-42": {"buckets": good_buckets, "seconds": 1.0},
                    "explain": {"buckets": good_buckets, "seconds": -1},
                },
            }
        ),
        encoding="utf-8",
    )
    tallies = TallyFile(path).read()
    assert tallies.events == {"created": 2}
    assert tallies.refused == {"suppressed": 1}
    assert tallies.facts == {"stored": 3}
    assert tallies.opened == {"journal": 4}
    assert tallies.store.keys() == {"ingest"}
    scrape = generate_latest(Metrics(TallyFile(path).read).registry).decode()
    for text in ("ann@example.org", "p_123", "elsewhere", "customer-42"):
        assert text not in scrape


def test_a_tally_that_cannot_be_written_is_written_at_the_next_flush(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    file = TallyFile(gone / "applier.json")
    counted = TalliedMetrics(file)
    counted.record_ingest(sample_outcomes())
    counted.flush()  # the directory is missing: logged, not raised
    assert not file.path.exists()
    gone.mkdir()
    counted.flush()  # nothing counted since, but the first write is still owed
    assert file.read().events == {"created": 2, "refused": 1, "linked": 1, "duplicate": 1}


def test_the_first_look_is_written_with_the_run_id_when_nothing_was_counted(
    tmp_path: Path,
) -> None:
    file = TallyFile(tmp_path / "applier.json")
    applier = TalliedMetrics(file, run_id="run-2")
    assert file.read().run_id is None
    applier.mark_started()
    assert file.read() == Tallies(run_id="run-2")
    applier.record_ingest(sample_outcomes())
    applier.flush()
    assert file.read().run_id == "run-2"  # kept by every later write
    assert file.read().events["created"] == 2


def test_an_applier_started_again_takes_the_counts_but_not_the_run_id_of_the_file(
    tmp_path: Path,
) -> None:
    file = TallyFile(tmp_path / "applier.json")
    earlier = TalliedMetrics(file, run_id="earlier-server")
    earlier.mark_started()
    earlier.record_ingest(sample_outcomes())
    earlier.flush()

    later = TalliedMetrics(file, run_id="this-server")
    later.record_ingest(sample_outcomes()[:1])
    later.flush()  # counted before its first look (not done by the applier, but possible)
    assert file.read().run_id is None
    assert file.read().events["created"] == 3
    later.mark_started()
    assert file.read().run_id == "this-server"


def test_a_first_look_that_cannot_be_written_is_written_at_the_next_flush(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    file = TallyFile(gone / "applier.json")
    applier = TalliedMetrics(file, run_id="run-3")
    applier.mark_started()  # logged, not raised
    assert not gone.exists()  # and the directory is not made again
    gone.mkdir()
    applier.flush()
    assert file.read().run_id == "run-3"


def test_the_applier_has_started_only_once_the_file_holds_this_servers_run_id(
    tmp_path: Path,
) -> None:
    file = TallyFile(tmp_path / "applier.json")
    start = ApplierStart(file, "this-server")
    assert not start.started()  # no file yet
    with pytest.raises(IngestApplierNotStartedError) as refused:
        start.check()
    assert isinstance(refused.value, IdGraphError)
    assert str(refused.value) == "not ready: the ingest applier has not started yet"

    earlier = TalliedMetrics(file, run_id="earlier-server")  # left by an earlier server's child
    earlier.mark_started()
    assert not start.started()

    TalliedMetrics(file, run_id="this-server").mark_started()
    assert start.started()
    start.check()
    file.path.unlink()  # once started, always started: the file is not read again
    assert start.started()


def test_a_run_id_that_is_not_a_short_string_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "applier.json"
    for run_id in (42, "", "x" * 65, ["run"]):
        path.write_text(json.dumps({"format": 1, "run_id": run_id}), encoding="utf-8")
        assert TallyFile(path).read().run_id is None
