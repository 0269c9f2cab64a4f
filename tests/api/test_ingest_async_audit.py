"""Asynchronous ingest when the consent audit append fails after the apply's commit.

The synchronous path answers 503 ``consent-audit-failed`` (the records are stored; resend to
write the entries). An async job has no request to answer: it used to stay ``applied`` with the
failure only in a log line, and nobody wrote the entries. Now the job shows the error while the
applier retries the entries, and the error is gone once they are written.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from identity.errors import StoreUnavailableError
from privacy.access.api_keys import Scope
from privacy.auditing.log import AuditLogUnavailableError
from tests.conftest import TEST_STORE

pytestmark = pytest.mark.skipif(
    TEST_STORE == "neo4j", reason="the ingest journal lives in the SQLite graph file"
)


@pytest.fixture
def container(settings: Settings, log_stream: io.StringIO) -> Iterator[Container]:
    built = build_container(settings)
    try:
        yield built
    finally:
        built.close()


def test_an_applied_job_shows_the_audit_failure_until_the_entries_are_retried_when_it_failed(
    container: Container, monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    # No lifespan (no applier thread): the test drains the journal and retries itself.
    client = TestClient(create_app(container=container), raise_server_exceptions=False)
    _, token = container.api_keys.create("ingest", frozenset({Scope.INGEST}))
    key = {"Authorization": f"Bearer {token}"}
    jobs = container.async_ingest
    assert jobs is not None

    def broken(_: object) -> None:
        raise AuditLogUnavailableError("audit log error: disk I/O error")

    monkeypatch.setattr(container.audit, "append", broken)
    event = {"identifiers": [{"type": "cookie_id", "value": "ck-audit-1"}], "source": "web"}
    accepted = client.post(
        "/v1/ingest",
        json={"events": [event]},
        headers=key | {"Prefer": "respond-async", "Sec-GPC": "1"},
    )
    assert accepted.status_code == 202, accepted.text
    assert jobs.apply_once() == 1

    job = client.get(accepted.headers["Location"], headers=key).json()
    assert job["status"] == "applied"  # the records are stored
    assert job["results"][0]["consents"]["recorded"] >= 1
    assert job["error"] == "ConsentAuditError"
    assert jobs.pending_audits() == 1
    assert '"consent_audit_missing"' in log_stream.getvalue()
    with pytest.raises(StoreUnavailableError):
        jobs.retry_consent_audits()  # still down: kept for the next loop
    assert jobs.pending_audits() == 1

    monkeypatch.undo()
    assert jobs.retry_consent_audits() == 0

    job = client.get(accepted.headers["Location"], headers=key).json()
    assert job["status"] == "applied"
    assert "error" not in job
    recorded = [e for e in container.audit.entries() if e.action == "consent.recorded"]
    assert len(recorded) == job["results"][0]["consents"]["recorded"]
    assert container.audit.verify().ok
