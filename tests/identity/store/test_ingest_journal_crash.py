"""A batch answered 202 (``Prefer: respond-async``) survives SIGKILL and is applied after the
restart, exactly once, also when the kill lands between the apply's graph commit and the journal
file's settlement; while it waits in the journal, and after, no raw value is in any file of the
data dir.

Real processes, a real kill: ``idgraph serve`` is started with an applier that lingers an hour
(``IDGRAPH_INGEST_APPLY_LINGER_MS`` and ``_IDLE_MS``), so the batches are still queued when the
server is killed, whatever the machine's speed; the restarted server lingers not at all and
applies them. For the kill between the two commits a child process applies the queue with the
service's own wiring and a journal that SIGKILLs its process at that point (before or after the
journal file's commit): deterministic, no timing.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from privacy.access.api_keys import Scope
from storage.journal import journal_path
from tests.support.crash_harness import (
    REPO,
    SAFETY_TIMEOUT,
    ServerProcess,
    bearer,
    prepare_data_dir,
    service_env,
)
from tests.support.ingest_samples import cookie_of, email_cookie_batch, email_of
from tests.support.journal_processes import ASYNC, SQLITE_JOURNAL_ONLY, finished_job

pytestmark = SQLITE_JOURNAL_ONLY

HOUR_MS = "3600000"
TRAITS = {"city": "Harrogate"}


def _served(tmp_path: Path) -> tuple[Path, dict[str, str], ServerProcess]:
    """A data dir with its keys, an ingest and resolve API key for it, and a server on it (not
    started yet)."""
    data = tmp_path / "data"
    prepare_data_dir(data)
    key = bearer(data, "journal-crash", frozenset({Scope.INGEST, Scope.RESOLVE}))
    return data, key, ServerProcess(data, tmp_path)


def _tag(n: int) -> str:
    return f"crash-journal-{n}"


def _batch(n: int) -> dict[str, Any]:
    return email_cookie_batch(_tag(n), 4, traits=TRAITS)


def _cookies(n: int) -> list[str]:
    return [cookie_of(_tag(n), k) for k in range(4)]


def _needles() -> list[bytes]:
    emails = [email_of(_tag(n), k) for n in range(3) for k in range(4)]
    cookies = [cookie for n in range(3) for cookie in _cookies(n)]
    values = [*emails, *(v.lower() for v in emails), TRAITS["city"], *cookies]
    return [v.encode() for v in values]


def _found(data_dir: Path) -> list[str]:
    needles = _needles()
    return [
        f"{path.name}: {needle!r}"
        for path in sorted(data_dir.rglob("*"))
        if path.is_file()
        for needle in needles
        if needle in path.read_bytes()
    ]


def _graph(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{data_dir / 'graph.sqlite3'}?mode=ro", uri=True) as conn:
        rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


def _queue(data_dir: Path) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """(queued batches, their events) and the kept count, read from the journal file."""
    journal = journal_path(data_dir / "graph.sqlite3")
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
        queued = conn.execute("SELECT count(*), sum(events) FROM ingest_journal").fetchone()
        kept = conn.execute("SELECT events FROM ingest_journal_backlog").fetchall()
    conn.close()
    return tuple(queued), kept


def _three_queued_then_killed(server: ServerProcess, key: dict[str, str]) -> list[str]:
    """Start ``server`` with an applier that lingers an hour, post three batches (answered 202),
    SIGKILL it with them still queued: their job locations."""
    server.extra_env = {
        "IDGRAPH_INGEST_APPLY_LINGER_MS": HOUR_MS,
        "IDGRAPH_INGEST_APPLY_IDLE_MS": HOUR_MS,
    }
    server.start()
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        accepted = [
            client.post("/v1/ingest", json=_batch(n), headers=key | ASYNC) for n in range(3)
        ]
    assert [a.status_code for a in accepted] == [202, 202, 202]
    assert server.kill()
    return [a.headers["Location"] for a in accepted]


def test_a_202_batch_is_applied_after_sigkill_and_restart_when_it_was_queued(
    tmp_path: Path,
) -> None:
    data, key, server = _served(tmp_path)
    try:
        accepted = _three_queued_then_killed(server, key)
        # Killed with the batches acknowledged and queued: in the journal, sealed.
        queued, kept = _queue(data)
        # The count the triggers keep (what a submit checks the bound against) survived too.
        assert queued == (3, 12)
        assert kept == [(12,)]
        assert _graph(data, "SELECT count(*) FROM persons") == [(0,)]
        assert _found(data) == []

        server.extra_env = {"IDGRAPH_INGEST_APPLY_LINGER_MS": "0"}
        server.start()
        with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
            jobs = [finished_job(client, location, key) for location in accepted]
            assert [job["status"] for job in jobs] == ["applied"] * 3
            assert [job["outcomes"] for job in jobs] == [{"created": 4}] * 3
            for n in range(3):
                for k in range(4):
                    resolved = client.post(
                        "/v1/resolve",
                        json={
                            "identifier": {
                                "type": "cookie_id",
                                "value": _cookies(n)[k],
                            }
                        },
                        headers=key,
                    )
                    assert resolved.status_code == 200, resolved.text
    finally:
        server.kill()
    assert _queue(data) == ((0, None), [(0,)])
    assert _graph(data, "PRAGMA integrity_check") == [("ok",)]
    assert _found(data) == []


# The child: the service's wiring (build_container on the same data dir), its AsyncIngest, and
# a journal whose settle() SIGKILLs the process before (or after) the journal file's commit.
_APPLY_AND_DIE = """
import os, signal, sys
from bootstrap.container import build_container
from bootstrap.settings import Settings
from services.async_ingest import AsyncIngest
from storage.journal import SqliteIngestJournal, journal_path

where = sys.argv[1]

class DyingJournal(SqliteIngestJournal):
    def settle(self, jobs, now_ms, keep_ms):
        if where == "before-settle":
            os.kill(os.getpid(), signal.SIGKILL)
        super().settle(jobs, now_ms, keep_ms)
        os.kill(os.getpid(), signal.SIGKILL)

container = build_container(Settings())
graph = container.settings.data_dir / "graph.sqlite3"
jobs = AsyncIngest(container.ingest, DyingJournal(journal_path(graph), graph), container.vault,
                   container.async_ingest.limits)
jobs.apply_once()
sys.exit(3)  # not reached: the settle kills the process
"""


@pytest.mark.parametrize("where", ["before-settle", "after-settle"])
def test_each_202_batch_is_applied_once_after_restart_when_killed_between_the_two_commits(
    tmp_path: Path, where: str
) -> None:
    data, key, server = _served(tmp_path)
    try:
        accepted = _three_queued_then_killed(server, key)

        child = subprocess.run(
            [sys.executable, "-c", _APPLY_AND_DIE, where],
            cwd=REPO,
            env=service_env(data),
            capture_output=True,
            timeout=SAFETY_TIMEOUT,
            check=False,
        )
        assert child.returncode == -9, child.stderr.decode()[-2000:]
        # Killed after the graph committed the events with their markers.
        applied_facts = _graph(data, "SELECT count(*) FROM facts")
        assert _graph(data, "SELECT count(*) FROM persons") == [(12,)]
        assert _graph(data, "SELECT count(*) FROM ingest_applied") == [(3,)]
        if where == "before-settle":
            assert _queue(data) == ((3, 12), [(12,)])  # the journal never heard of it
        else:
            assert _queue(data) == ((0, None), [(0,)])  # settled; the markers still there

        server.extra_env = {"IDGRAPH_INGEST_APPLY_LINGER_MS": "0"}
        server.start()
        with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
            jobs = [finished_job(client, location, key) for location in accepted]
            # The first apply's results (a second apply would have found every person).
            assert [job["status"] for job in jobs] == ["applied"] * 3
            assert [job["outcomes"] for job in jobs] == [{"created": 4}] * 3
            # One more async batch: applied by the restarted applier, numbered past the others.
            later = client.post("/v1/ingest", json=_batch(3), headers=key | ASYNC)
            assert later.status_code == 202
            assert finished_job(client, later.headers["Location"], key)["outcomes"] == {
                "created": 4
            }
    finally:
        server.kill()
    assert _graph(data, "SELECT count(*) FROM persons") == [(16,)]
    (facts,) = _graph(data, "SELECT count(*) FROM facts")
    assert facts[0] == applied_facts[0][0] * 4 // 3  # nothing applied twice
    assert _queue(data) == ((0, None), [(0,)])
    assert _graph(data, "SELECT count(*) FROM ingest_applied") == [(1,)]  # the last one's
    assert _graph(data, "PRAGMA integrity_check") == [("ok",)]
    assert _found(data) == []


def test_each_202_batch_is_applied_once_when_the_server_is_killed_at_random_points(
    tmp_path: Path,
) -> None:
    """Batches posted one after another while the applier applies at once (no linger); the
    server is SIGKILLed after a seeded random number of 202s (in an accept, an apply, a settle
    or between them, wherever it lands), restarted, and so on. Then: every 202'd job is applied
    with its first apply's outcomes, each batch's persons exist all or none (the one in flight
    at a kill may be either), and no batch was applied twice (the facts per anchor)."""
    rng = random.Random(1443)
    data, key, server = _served(tmp_path)
    server.extra_env = {"IDGRAPH_INGEST_APPLY_LINGER_MS": "0", "IDGRAPH_INGEST_APPLY_IDLE_MS": "0"}
    accepted: dict[int, str] = {}
    posted = 0
    try:
        for _ in range(3):
            server.start()
            acks = rng.randint(3, 12)
            with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
                for _ in range(acks):
                    response = client.post("/v1/ingest", json=_batch(posted), headers=key | ASYNC)
                    assert response.status_code == 202, response.text
                    accepted[posted] = response.headers["Location"]
                    posted += 1
                # One more in flight when the kill lands (answered or not).
                killer = threading.Timer(rng.uniform(0.0, 0.05), server.kill)
                killer.start()
                try:
                    late = client.post("/v1/ingest", json=_batch(posted), headers=key | ASYNC)
                    if late.status_code == 202:
                        accepted[posted] = late.headers["Location"]
                except httpx.TransportError:
                    pass  # killed before it answered: all or nothing
                posted += 1
            killer.join()
            server.kill()
        server.start()
        with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
            jobs = {n: finished_job(client, location, key) for n, location in accepted.items()}
            assert {n: job["outcomes"] for n, job in jobs.items()} == {
                n: {"created": 4} for n in accepted
            }
            present: dict[int, bool] = {}
            for n in range(posted):
                found = [
                    client.post(
                        "/v1/resolve",
                        json={"identifier": {"type": "cookie_id", "value": cookie}},
                        headers=key,
                    ).status_code
                    for cookie in _cookies(n)
                ]
                assert set(found) in ({200}, {404}), (n, found)
                present[n] = found[0] == 200
            assert all(present[n] for n in accepted)
    finally:
        server.kill()
    batches = sum(present.values())
    assert _graph(data, "SELECT count(*) FROM persons") == [(4 * batches,)]
    # The same facts on every anchor (a batch applied twice would double its anchors' facts).
    assert len(set(_graph(data, "SELECT count(*) FROM facts GROUP BY node"))) == 1
    assert _queue(data) == ((0, None), [(0,)])
    assert _graph(data, "PRAGMA integrity_check") == [("ok",)]
    assert _found(data) == []
