"""What the tests of real servers over the asynchronous ingest journal share
(``tests/cli/test_ingest_applier_process.py``,
``tests/identity/store/test_ingest_journal_crash.py``): their SQLite-only mark, the ``Prefer``
header that queues a batch, and their waits, which are :func:`tests.support.waits.wait_until`
with the crash harness's safety net (a restarted server with its applier child can take far
longer than 30 s to answer on a loaded two-core machine)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.crash_harness import GRAPH, SAFETY_TIMEOUT
from tests.support.waits import wait_until

# The journal is a file beside the SQLite graph file: on Neo4j there is none (the preference is
# ignored), so these tests have nothing to look at there.
SQLITE_JOURNAL_ONLY = pytest.mark.skipif(
    GRAPH.uri is not None, reason="the ingest journal lives in the SQLite graph file"
)
# POST /v1/ingest with it: queued in the journal, answered 202 with the job's Location.
ASYNC = {"Prefer": "respond-async"}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """:func:`wait_until` ``condition`` (every 50 ms: a poll that may be an HTTP request) with the
    harness's :data:`SAFETY_TIMEOUT` as its net against hangs."""
    wait_until(condition, what, timeout_s=SAFETY_TIMEOUT, poll_s=0.05)


def finished_job(client: httpx.Client, location: str, key: dict[str, str]) -> dict[str, Any]:
    """The job at ``location`` (a 202's ``Location``) once it is no longer queued."""
    job: dict[str, Any] = {}

    def finished() -> bool:
        job.update(client.get(location, headers=key).json())
        return bool(job["status"] != "queued")

    wait_for(finished, f"{location} applied")
    return job
