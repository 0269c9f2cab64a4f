"""A ``Prefer: respond-async`` batch's sealed bytes do not outlive it (services.async_ingest,
privacy.dsr.erasure): an applied batch's row is zeroed, the frames written when it was queued are
truncated from the journal's WAL by an erasure and by the applier when nothing is queued, and a
day key is shredded once no queued batch needs it and its day ended more than a day ago.

Real app, real journal and vault files, real crypto; no applier thread except where the loop
itself is the subject (waited for, not timed)."""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bootstrap.settings import Settings
from privacy.keys.vault import DataKeyDestroyedError
from services.async_ingest import AsyncIngestLimits, JournalApplier
from storage.journal import journal_path
from tests.api.test_ingest_async import (
    ASYNC,
    EMAIL,
    Served,
    _served,
    _submit,
    fake_clock_jobs,
)
from tests.conftest import TEST_STORE

pytestmark = pytest.mark.skipif(
    TEST_STORE == "neo4j", reason="the ingest journal lives beside the SQLite graph file"
)

PREFIX = "ingestjournal-"
# The day-key test's fake clock starts here (its day keys are named by date).
DAY_0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def served(settings: Settings, log_stream: io.StringIO) -> Iterator[Served]:
    yield from _served(settings)


def _journal(served: Served) -> Path:
    return journal_path(served.container.settings.data_dir / "graph.sqlite3")


def _queued_sealed(served: Served) -> list[bytes]:
    conn = sqlite3.connect(_journal(served))
    try:
        return [bytes(row[0]) for row in conn.execute("SELECT sealed FROM ingest_journal")]
    finally:
        conn.close()


def _holding(served: Served, needle: bytes) -> list[str]:
    """The journal's files (main, WAL, shared memory) whose bytes contain ``needle``."""
    journal = _journal(served)
    return [
        path.name[len(journal.name) :] or "main"
        for path in (journal, *(journal.with_name(journal.name + s) for s in ("-wal", "-shm")))
        if path.exists() and needle in path.read_bytes()
    ]


def _applied_and_left_in_the_wal(served: Served) -> bytes:
    """Queue one batch naming EMAIL, apply it; its sealed bytes (zeroed in the journal file,
    still in the WAL frame its queueing wrote: the precondition every test here starts from)."""
    person = {"identifiers": [{"type": "email", "value": EMAIL}], "source": "web"}
    queued = served.client.post(
        "/v1/ingest", json={"events": [person]}, headers=served.keys[0] | ASYNC
    )
    assert queued.status_code == 202, queued.text
    (sealed,) = _queued_sealed(served)
    assert served.jobs.apply_once() == 1
    assert served.resolve("email", EMAIL) == 200
    assert _queued_sealed(served) == []
    assert _holding(served, sealed) == ["-wal"]
    return sealed


def test_an_erasure_truncates_the_journals_wal_when_it_held_an_applied_batch(
    served: Served,
) -> None:
    sealed = _applied_and_left_in_the_wal(served)
    container = served.container

    # The container's erasure service: the journal's checkpoint is attached there.
    container.erasure.erase(
        [container.identity_policy.normalize("email", EMAIL, "GB")], "dsr-journal-1", "cli"
    )

    assert served.resolve("email", EMAIL) == 404
    assert _holding(served, sealed) == []
    wal = _journal(served).with_name(_journal(served).name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_the_applier_truncates_the_journals_wal_when_nothing_is_queued(served: Served) -> None:
    sealed = _applied_and_left_in_the_wal(served)
    still = {"identifiers": [{"type": "cookie_id", "value": "ck-upkeep-queued"}], "source": "web"}
    queued = served.client.post(
        "/v1/ingest", json={"events": [still]}, headers=served.keys[0] | ASYNC
    )
    assert queued.status_code == 202

    served.jobs.housekeep(idle=False)  # something is queued: the WAL is left alone
    assert _holding(served, sealed) == ["-wal"]
    assert served.jobs.apply_once() == 1

    served.jobs.housekeep(idle=True)

    assert _holding(served, sealed) == []


def test_the_applier_loop_truncates_the_wal_after_draining(served: Served) -> None:
    applier = JournalApplier(served.jobs, poll_s=0.05)
    applier.start()
    try:
        person = {"identifiers": [{"type": "email", "value": EMAIL}], "source": "web"}
        queued = served.client.post(
            "/v1/ingest", json={"events": [person]}, headers=served.keys[0] | ASYNC
        )
        assert queued.status_code == 202
        (sealed,) = _queued_sealed(served)
        _eventually(lambda: served.resolve("email", EMAIL) == 200)
        _eventually(lambda: _holding(served, sealed) == [])
    finally:
        applier.stop()


def test_a_day_key_is_shredded_once_its_batches_are_applied_and_its_day_is_over(
    served: Served,
) -> None:
    vault = served.container.vault
    with fake_clock_jobs(served, AsyncIngestLimits(), DAY_0) as (jobs, clock):
        _submit(jobs, "day-0")
        assert jobs.apply_once() == 3
        clock.advance(days=1)
        waiting = _submit(jobs, "day-1")  # sealed under 2026-12-07's key, left queued
        # Only the journal's keys are listed (the ingest made keys for the persons' nodes too).
        assert vault.owners_starting(PREFIX) == [f"{PREFIX}20261206", f"{PREFIX}20261207"]

        # 2026-12-07 is yesterday: nothing is shredded yet.
        assert jobs.shred_spent_keys() == []
        clock.advance(days=1)
        # 2026-12-08: the 6th ended more than a day ago and nothing queued is sealed under it.
        assert jobs.shred_spent_keys() == [f"{PREFIX}20261206"]
        clock.advance(days=1)
        # 2026-12-09: the 7th is old too, but a queued batch is sealed under it: kept.
        assert jobs.shred_spent_keys() == []
        assert jobs.apply_once() == 3
        assert jobs.job(waiting, key_id="k1").status == "applied"

        jobs.housekeep(idle=True)  # the applier's loop, on a new day

        assert vault.owners_starting(PREFIX) == []
        # A shredded day key is never made again: nothing can be sealed or opened under it.
        with pytest.raises(DataKeyDestroyedError):
            vault.encrypt(f"{PREFIX}20261206", "job_x", b"x")


def _eventually(check: Callable[[], bool], within_s: float = 20.0) -> None:
    """Wait for the applier thread (not a timed assertion: the bound only stops a hung test)."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("the applier did not get there")
        time.sleep(0.02)
