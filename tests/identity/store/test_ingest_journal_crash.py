"""A batch answered 202 (``Prefer: respond-async``) survives SIGKILL and is applied after the
restart; while it waits in the journal, and after, no raw value is in any file of the data dir.

Real processes, a real kill: ``idgraph serve`` is started with an applier that lingers an hour
(``IDGRAPH_INGEST_APPLY_LINGER_MS`` and ``_IDLE_MS``), so the batches are still queued when the
server is killed, whatever the machine's speed; the restarted server lingers not at all and
applies them.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from privacy.access.api_keys import ApiKeyStore, Scope
from tests.support.crash_harness import (
    GRAPH,
    SAFETY_TIMEOUT,
    ServerProcess,
    prepare_data_dir,
)

pytestmark = pytest.mark.skipif(
    GRAPH.uri is not None, reason="the ingest journal lives in the SQLite graph file"
)

ASYNC = {"Prefer": "respond-async"}
HOUR_MS = "3600000"


def _key(data_dir: Path) -> dict[str, str]:
    store = ApiKeyStore(data_dir / "control.sqlite3")
    try:
        _, token = store.create("journal-crash", frozenset({Scope.INGEST, Scope.RESOLVE}))
    finally:
        store.close()
    return {"Authorization": f"Bearer {token}"}


def _batch(n: int) -> dict[str, Any]:
    return {
        "events": [
            {
                "identifiers": [
                    {"type": "email", "value": f"Crash.Journal.{n}.{k}@Mailbox-Journal.net"},
                    {"type": "cookie_id", "value": f"ck-crash-journal-{n}-{k}"},
                ],
                "source": "crm",
                "traits": {"city": "Harrogate"},
            }
            for k in range(4)
        ]
    }


def _needles() -> list[bytes]:
    values = [f"Crash.Journal.{n}.{k}@Mailbox-Journal.net" for n in range(3) for k in range(4)]
    values += [v.lower() for v in values] + ["Harrogate", "ck-crash-journal-"]
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


def _applied(client: httpx.Client, location: str, key: dict[str, str]) -> dict[str, Any]:
    pause = threading.Event()
    for _ in range(int(SAFETY_TIMEOUT * 10)):
        job: dict[str, Any] = client.get(location, headers=key).json()
        if job["status"] != "queued":
            return job
        pause.wait(0.1)
    raise AssertionError(f"{location} still queued after {SAFETY_TIMEOUT:.0f} s")


def test_a_202_batch_is_applied_after_sigkill_and_restart_when_it_was_queued(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    prepare_data_dir(data)
    key = _key(data)
    server = ServerProcess(data, tmp_path)
    server.extra_env = {
        "IDGRAPH_INGEST_APPLY_LINGER_MS": HOUR_MS,
        "IDGRAPH_INGEST_APPLY_IDLE_MS": HOUR_MS,
    }
    server.start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
            accepted = [
                client.post("/v1/ingest", json=_batch(n), headers=key | ASYNC) for n in range(3)
            ]
        assert [a.status_code for a in accepted] == [202, 202, 202]
        assert server.kill()
        # Killed with the batches acknowledged and queued: in the journal, sealed.
        with sqlite3.connect(f"file:{data / 'graph.sqlite3'}?mode=ro", uri=True) as conn:
            queued = conn.execute("SELECT count(*), sum(events) FROM ingest_journal").fetchone()
            # The count the triggers keep (what a submit checks the bound against) survived too.
            kept = conn.execute("SELECT events FROM ingest_journal_backlog").fetchall()
            persons = conn.execute("SELECT count(*) FROM persons").fetchone()[0]
        conn.close()
        assert tuple(queued) == (3, 12)
        assert kept == [(12,)]
        assert persons == 0
        assert _found(data) == []

        server.extra_env = {"IDGRAPH_INGEST_APPLY_LINGER_MS": "0"}
        server.start()
        with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
            jobs = [_applied(client, a.headers["Location"], key) for a in accepted]
            assert [job["status"] for job in jobs] == ["applied"] * 3
            assert [job["outcomes"] for job in jobs] == [{"created": 4}] * 3
            for n in range(3):
                for k in range(4):
                    resolved = client.post(
                        "/v1/resolve",
                        json={
                            "identifier": {
                                "type": "cookie_id",
                                "value": f"ck-crash-journal-{n}-{k}",
                            }
                        },
                        headers=key,
                    )
                    assert resolved.status_code == 200, resolved.text
    finally:
        server.kill()
    with sqlite3.connect(f"file:{data / 'graph.sqlite3'}?mode=ro", uri=True) as conn:
        left = conn.execute("SELECT count(*) FROM ingest_journal").fetchone()[0]
        kept = conn.execute("SELECT events FROM ingest_journal_backlog").fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert left == 0
    assert kept == [(0,)]
    assert _found(data) == []
