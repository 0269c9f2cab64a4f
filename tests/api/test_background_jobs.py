"""Background jobs on a store that connects in the background (api/background.py).

While a Neo4j store is still connecting, the DSR worker and the retention schedule wait for it
with one log line instead of failing (and logging a stack trace) every interval; once the store
is ready they run as usual. The stores are real: an unreachable Neo4j port for "never ready",
and the real SQLite store behind :class:`DeferredGraphStore` for "ready later".
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from bootstrap.container import build_container
from bootstrap.settings import Settings
from identity.errors import StoreUnavailableError
from identity.resolution import ResolutionEngine
from identity.store.deferred import DeferredGraphStore, StoreState
from identity.store.port import GraphStore
from identity.store.sqlite import SqliteGraphStore
from privacy.access.api_keys import Scope
from tests.conftest import POLICY_DIR
from tests.support.crash_harness import free_port

EMAIL = "waiting.jobs@privacy-shop.de"
# Long enough for ~20 passes of each job at this interval: the old code logged a failure on
# every one of them. Not a timing assertion: the checks count log lines, whatever the speed.
WATCH_S = 1.0
INTERVAL_S = 0.05


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": tmp_path / "data",
        "policy_dir": POLICY_DIR,
        "default_region": "GB",
        "dsr_worker_interval_seconds": INTERVAL_S,
        "retention_interval_seconds": INTERVAL_S,
        "rate_limit_per_minute": 0,
    }
    values.update(extra)
    return Settings(**values)


def _events(log: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if isinstance(line, dict)]


def _named(log: io.StringIO, *names: str) -> list[dict[str, Any]]:
    return [e for e in _events(log) if e.get("event") in names]


FAILURE_EVENTS = ("background_job_failed", "erasure_recovery_failed", "dsr_shred_checkpoint_failed")


def test_jobs_wait_quietly_when_the_neo4j_store_is_not_connected(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    settings = _settings(
        tmp_path,
        store_url=f"bolt://127.0.0.1:{free_port()}",  # nobody listens: connection refused
        neo4j_password="not-used-for-a-refused-connection",
        neo4j_startup_timeout_seconds=600,
    )
    container = build_container(settings, store_in_background=True)
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
            time.sleep(WATCH_S)
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "not reachable yet" in ready.json()["detail"]
    finally:
        container.close()
    assert _named(log_stream, *FAILURE_EVENTS) == []
    (waiting,) = _named(log_stream, "background_jobs_waiting_for_store")
    assert waiting["jobs"] == ["dsr", "retention"]
    assert "Neo4j not reachable yet" in waiting["reason"]
    assert _named(log_stream, "background_jobs_store_ready") == []


class _OpensWhenAllowed:
    """Opens the real SQLite store once ``gate`` is set; refused until then (a database that is
    still starting)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gate = threading.Event()

    def __call__(self) -> GraphStore:
        if not self.gate.is_set():
            raise StoreUnavailableError("connection refused (test database still starting)")
        return SqliteGraphStore(self.path)


def test_jobs_start_once_the_store_is_ready_and_process_what_is_queued(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    settings = _settings(tmp_path)
    # A person and an access request queued while the store was up (worker off meanwhile).
    container = build_container(settings.model_copy(update={"dsr_worker_interval_seconds": 0}))
    _, ingest = container.api_keys.create("ingest", frozenset({Scope.INGEST}))
    _, dsr = container.api_keys.create("dsr", frozenset({Scope.DSR}))
    subject = [{"type": "email", "value": EMAIL}]
    with TestClient(create_app(container=container)) as client:
        made = client.post(
            "/v1/identify",
            json={"source": "web", "identifiers": subject},
            headers={"Authorization": f"Bearer {ingest}"},
        )
        assert made.status_code == 200, made.text
        queued = client.post(
            "/v1/dsr",
            json={"request_id": "wait-1", "type": "access", "subject_identities": subject},
            headers={"Authorization": f"Bearer {dsr}"},
        )
        assert queued.status_code == 202, queued.text
    container.close()

    # The same data dir, now with the graph behind a store that connects in the background.
    opener = _OpensWhenAllowed(settings.data_dir / "graph.sqlite3")
    deferred = DeferredGraphStore(opener, timeout_s=600, name="test store")
    base = build_container(settings)
    base.store.close()
    engine = ResolutionEngine(
        deferred,
        base.keyring,
        base.identity_policy,
        sealer=base.vault,
        person_decision_purposes=base.purposes.ids,
    )
    container = dataclasses.replace(base, store=deferred, engine=engine)
    deferred.on_connected = container.erasure.recover
    deferred.start()
    headers = {"Authorization": f"Bearer {dsr}"}
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
            time.sleep(WATCH_S)
            assert client.get("/v1/dsr/wait-1", headers=headers).json()["status"] == "pending"
            assert _named(log_stream, *FAILURE_EVENTS) == []
            opener.gate.set()
            assert deferred.wait(300) is StoreState.READY
            deadline = time.monotonic() + 300  # a net against hangs only
            status = "pending"
            while status != "completed" and time.monotonic() < deadline:
                time.sleep(INTERVAL_S)
                status = client.get("/v1/dsr/wait-1", headers=headers).json()["status"]
            assert status == "completed"
    finally:
        container.close()
    assert _named(log_stream, *FAILURE_EVENTS) == []
    assert len(_named(log_stream, "background_jobs_waiting_for_store")) == 1
    assert len(_named(log_stream, "background_jobs_store_ready")) == 1
