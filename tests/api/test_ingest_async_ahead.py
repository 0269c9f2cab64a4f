"""The journal's applier prepares the batches queued after a group while that group is written
(services.async_ingest ``AsyncIngest.apply_once``), and the next group uses that preparation
only while those batches are still the oldest queued: each batch is applied once, with the
outcomes it would have had.

Real app, real journal, graph and vault files, real crypto. ``IngestService.prepare`` is
wrapped to record which thread prepared how many events (the real method runs); the calls are
compared as counts, not in order (the two threads prepare at the same time). No applier loop
thread: each test drains the journal itself with ``apply_once``, nothing is timed.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from identity.model import IdentityEvent
from identity.resolution import PreparedEvents
from services.async_ingest import AsyncIngest, AsyncIngestLimits
from tests.api.test_ingest_async import Served, _submit, fake_clock_jobs, served
from tests.conftest import TEST_STORE
from tests.support.waits import wait_until

__all__ = ["served"]  # the fixture, used by name

pytestmark = pytest.mark.skipif(
    TEST_STORE == "neo4j", reason="the ingest journal lives in the SQLite graph file"
)

AHEAD = "idgraph-ingest-prepare-ahead"
MAIN = threading.main_thread().name
# One 3-event batch (tests.api.test_ingest_async._batch) per group.
ONE_BATCH = AsyncIngestLimits(apply_max_events=3)


def _record_prepares(served: Served, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record (thread name, events) of every ``IngestService.prepare`` call of the container's
    ingest service (the one the appliers below write through)."""
    ingest = served.container.ingest
    real = ingest.prepare
    calls: list[tuple[str, int]] = []

    def prepare(events: Sequence[IdentityEvent]) -> PreparedEvents:
        calls.append((threading.current_thread().name, len(events)))
        return real(events)

    monkeypatch.setattr(ingest, "prepare", prepare)
    return calls


def _hold_writes(
    jobs: AsyncIngest, monkeypatch: pytest.MonkeyPatch, ready: Callable[[], bool]
) -> None:
    """Each group ``jobs`` writes ends its transaction only once ``ready()`` (waited for, not
    timed): the prepare-ahead thread then surely looked at the queue during the write, however
    the two threads were scheduled."""
    journal = jobs._journal
    record_applied = journal.record_applied

    def held(conn: Any, finished: Any, now_ms: int, keep_ms: int) -> None:
        wait_until(ready)
        record_applied(conn, finished, now_ms, keep_ms)

    monkeypatch.setattr(journal, "record_applied", held)


def _applied_once(jobs: AsyncIngest, job_ids: list[str]) -> None:
    for job_id in job_ids:
        job = jobs.job(job_id, key_id="k1")
        assert job.status == "applied", job
        assert job.results is not None
        # Created, not duplicate: each batch was written exactly once.
        assert [r["outcome"] for r in job.results] == ["created"] * 3


def test_the_applier_prepares_the_next_batches_while_a_group_is_written_when_more_are_queued(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_prepares(served, monkeypatch)
    with fake_clock_jobs(served, ONE_BATCH) as (jobs, _):
        job_ids = [_submit(jobs, f"ahead-{n}") for n in range(3)]
        ahead = [1]  # batches prepared ahead by the end of the next write
        _hold_writes(jobs, monkeypatch, lambda: calls.count((AHEAD, 3)) >= ahead[0])

        assert jobs.apply_once() == 3
        # The first group prepared on the applier's thread; the batch after it meanwhile.
        assert Counter(calls) == Counter([(MAIN, 3), (AHEAD, 3)])
        ahead[0] = 2
        assert jobs.apply_once() == 3
        # The second group was the batch prepared ahead: not prepared again.
        assert Counter(calls) == Counter([(MAIN, 3), (AHEAD, 3), (AHEAD, 3)])
        assert jobs.apply_once() == 3
        assert Counter(calls) == Counter([(MAIN, 3), (AHEAD, 3), (AHEAD, 3)])
        assert jobs.apply_once() == 0

        _applied_once(jobs, job_ids)
    for n in range(3):
        assert served.resolve("cookie_id", f"ck-async-ahead-{n}-2") == 200


def test_a_batch_that_arrives_while_a_group_is_written_is_prepared_for_the_next_group(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_prepares(served, monkeypatch)
    with fake_clock_jobs(served, AsyncIngestLimits()) as (jobs, _):
        job_ids = [_submit(jobs, "during-0")]
        journal = jobs._journal
        record_applied = journal.record_applied

        def arrive_meanwhile(conn: Any, finished: Any, now_ms: int, keep_ms: int) -> None:
            # In the group's transaction (its last statements): a batch is accepted now, and
            # the transaction goes on once the prepare-ahead thread took it (waited for, not
            # timed).
            if len(job_ids) == 1:
                job_ids.append(_submit(jobs, "during-1"))
                wait_until(lambda: (AHEAD, 3) in calls)
            record_applied(conn, finished, now_ms, keep_ms)

        monkeypatch.setattr(journal, "record_applied", arrive_meanwhile)

        assert jobs.apply_once() == 3
        assert Counter(calls) == Counter([(MAIN, 3), (AHEAD, 3)])
        assert jobs.apply_once() == 3
        # The second group was prepared ahead: not prepared again.
        assert Counter(calls) == Counter([(MAIN, 3), (AHEAD, 3)])
        assert jobs.apply_once() == 0

        _applied_once(jobs, job_ids)
    assert served.resolve("cookie_id", "ck-async-during-1-2") == 200


def test_a_batch_another_process_queues_while_a_group_is_written_is_prepared_for_the_next(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The applier process's case (``idgraph ingest-applier``): the server accepts the batches,
    so no submit in the applier's process wakes its prepare-ahead thread; it looks at the queue
    again after a poll's wait instead of waiting for a wake-up that never comes."""
    calls = _record_prepares(served, monkeypatch)
    with (
        fake_clock_jobs(served, AsyncIngestLimits()) as (applier, _),
        fake_clock_jobs(served, AsyncIngestLimits()) as (server, _),
    ):
        job_ids = [_submit(server, "elsewhere-0")]
        journal = applier._journal
        record_applied = journal.record_applied

        def arrive_meanwhile(conn: Any, finished: Any, now_ms: int, keep_ms: int) -> None:
            if len(job_ids) == 1:  # accepted by the other AsyncIngest (another process's)
                job_ids.append(_submit(server, "elsewhere-1"))
                wait_until(lambda: (AHEAD, 3) in calls)
            record_applied(conn, finished, now_ms, keep_ms)

        monkeypatch.setattr(journal, "record_applied", arrive_meanwhile)

        assert applier.apply_once() == 3
        assert applier.apply_once() == 3
        assert Counter(calls) == Counter([(MAIN, 3), (AHEAD, 3)])  # the second: prepared ahead
        assert applier.apply_once() == 0
        _applied_once(applier, job_ids)
    assert served.resolve("cookie_id", "ck-async-elsewhere-1-2") == 200


def test_a_batch_prepared_ahead_is_not_applied_again_when_another_applier_applied_it(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two appliers on the same files (two processes): the first prepares batch 1 while it
    # writes batch 0, the second applies batch 1 meanwhile; the first's next group is then
    # batch 2 alone, prepared afresh, and its preparation of batch 1 is dropped.
    calls = _record_prepares(served, monkeypatch)
    with (
        fake_clock_jobs(served, ONE_BATCH) as (first, _),
        fake_clock_jobs(served, ONE_BATCH) as (second, _),
    ):
        job_ids = [_submit(first, f"race-{n}") for n in range(3)]
        ahead = [1]  # batches prepared ahead (by either applier) by the end of the next write
        for jobs in (first, second):
            _hold_writes(jobs, monkeypatch, lambda: calls.count((AHEAD, 3)) >= ahead[0])

        assert first.apply_once() == 3  # batch 0; batch 1 prepared ahead
        ahead[0] = 2
        assert second.apply_once() == 3  # batch 1, from its row; batch 2 prepared ahead
        assert first.apply_once() == 3  # batch 2: its head is not what it prepared
        assert Counter(calls) == Counter([(MAIN, 3), (AHEAD, 3), (MAIN, 3), (AHEAD, 3), (MAIN, 3)])
        assert first.apply_once() == 0
        assert second.apply_once() == 0

        _applied_once(first, job_ids)
    for n in range(3):
        assert served.resolve("cookie_id", f"ck-async-race-{n}-2") == 200
