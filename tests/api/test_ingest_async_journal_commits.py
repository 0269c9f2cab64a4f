"""Concurrent ``Prefer: respond-async`` batches share journal commits (services.async_ingest
``AsyncIngest.submit``): the first submit appends at once, those that arrive during its
fsync'd commit are appended together by the next one, each answered only once the commit that
holds its row returned; a group the full journal refuses as a whole is appended batch by batch,
so each caller gets its own answer.

Real journal, graph and vault files, real crypto. Held deterministically: the first append is
parked on the journal's own lock (taken by the test), the others are waited for until they are
queued behind it, nothing is timed (each wait has a 30 s cap that only a hung test hits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from services.async_ingest import AcceptedJob, AsyncIngest, AsyncIngestLimits
from services.inputs import ingest_inputs
from storage.journal import JournalFullError
from tests.api.test_ingest_async import Served, _batch, fake_clock_jobs, served
from tests.conftest import TEST_STORE
from tests.support.waits import wait_until

__all__ = ["served"]  # the fixture, used by name

pytestmark = pytest.mark.skipif(
    TEST_STORE == "neo4j", reason="the ingest journal lives in the SQLite graph file"
)


def _submitter(jobs: AsyncIngest, pool: ThreadPoolExecutor) -> Callable[[str], Future[AcceptedJob]]:
    def submit(name: str) -> Future[AcceptedJob]:
        events = ingest_inputs(_batch(name))  # 3 events
        assert events is not None
        return pool.submit(jobs.submit, events, key_id="k1")

    return submit


@contextmanager
def _commits(jobs: AsyncIngest) -> Iterator[list[str]]:
    """The statements the journal file's connection runs meanwhile."""
    statements: list[str] = []
    conn = jobs._journal._conn
    conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        conn.set_trace_callback(None)


def _parked_first(
    jobs: AsyncIngest, submit: Callable[[str], Future[AcceptedJob]]
) -> Future[AcceptedJob]:
    """Submit batch "first" while the test holds the journal's lock: its append waits there,
    as the writer of its group (nothing else queued)."""
    first = submit("first")
    wait_until(lambda: jobs._appends._writing and not jobs._appends._queue)
    return first


def test_batches_submitted_during_a_journal_commit_share_the_next_commit(served: Served) -> None:
    jobs = served.jobs
    with ThreadPoolExecutor(4) as pool, _commits(jobs) as statements:
        submit = _submitter(jobs, pool)
        with jobs._journal._lock:
            first = _parked_first(jobs, submit)
            others = [submit(name) for name in ("b", "c", "d")]
            wait_until(lambda: len(jobs._appends._queue) == 3)  # all three behind the first
            assert not first.done()
        accepted = [f.result(30) for f in (first, *others)]

    # Four batches, two journal commits: the first alone, the three behind it together
    # (one commit each before).
    assert sum(s == "COMMIT" for s in statements) == 2
    assert jobs._appends.groups == 2
    assert [a.events for a in accepted] == [3] * 4
    assert jobs.queued_events() == 12
    # Each batch is queued once, in the order it was submitted, and applied with its outcomes.
    queued = jobs._journal.queued(100)
    assert [b.job_id for b in queued] == [a.job_id for a in accepted]
    assert len({b.seq for b in queued}) == 4
    assert jobs.apply_once() == 12
    for job in accepted:
        status = jobs.job(job.job_id, key_id="k1")
        assert status.status == "applied"
        assert status.results is not None
        assert [r["outcome"] for r in status.results] == ["created"] * 3


def test_a_full_journal_refuses_only_the_batches_past_its_bound_when_they_came_together(
    served: Served,
) -> None:
    # Room for 7 events: "first" (3) is appended alone; "b" and "c" (3 each) arrive during its
    # commit and would pass the bound together (9): the group is refused as a whole, then
    # appended batch by batch, so "b" fits (6) and only "c" is refused.
    with (
        fake_clock_jobs(served, AsyncIngestLimits(max_queued_events=7)) as (jobs, _),
        ThreadPoolExecutor(3) as pool,
    ):
        submit = _submitter(jobs, pool)
        with jobs._journal._lock:
            first = _parked_first(jobs, submit)
            b, c = submit("b"), submit("c")
            wait_until(lambda: len(jobs._appends._queue) == 2)
        assert first.result(30).events == 3
        assert b.result(30).events == 3
        with pytest.raises(JournalFullError) as refused:
            c.result(30)

        assert (refused.value.queued, refused.value.limit) == (6, 7)
        assert jobs.queued_events() == 6
        assert len(jobs._kept) == 2  # nothing is kept for the refused batch
        assert [q.job_id for q in jobs._journal.queued(100)] == [
            first.result().job_id,
            b.result().job_id,
        ]
