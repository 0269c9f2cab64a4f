"""``POST /v1/ingest`` with ``Prefer: respond-async``: validated, sealed into the durable journal,
answered 202, applied by the journal's applier with the synchronous path's outcomes.

The app is served without its lifespan here (no applier thread), so each test decides when the
journal is drained (``AsyncIngest.apply_once``): nothing is timed.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.routers.identity import respond_async
from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from privacy.access.api_keys import Scope
from privacy.dsr.erasure import ErasureService
from services.async_ingest import AsyncIngest, AsyncIngestLimits, IngestJobNotFoundError
from services.inputs import ingest_inputs
from storage.journal import JournalFullError, SqliteIngestJournal, journal_path
from tests.conftest import TEST_STORE
from tests.support.ingest_samples import cookie_of, email_cookie_batch, email_of

pytestmark = pytest.mark.skipif(
    TEST_STORE == "neo4j", reason="the ingest journal lives in the SQLite graph file"
)

ASYNC = {"Prefer": "respond-async"}
EMAIL = "Journal.Person@Mailbox-Journal.net"
PHONE = "+44 20 7946 0958"


class Served:
    """The real app (no lifespan: no applier thread) and an ingest key of each of two callers."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.client = TestClient(create_app(container=container), raise_server_exceptions=False)
        self.keys: list[dict[str, str]] = []
        for name in ("a", "b"):
            _, token = container.api_keys.create(f"ingest-{name}", frozenset({Scope.INGEST}))
            self.keys.append({"Authorization": f"Bearer {token}"})
        _, resolve = container.api_keys.create("resolve", frozenset({Scope.RESOLVE}))
        self.resolve_key = {"Authorization": f"Bearer {resolve}"}

    @property
    def jobs(self) -> AsyncIngest:
        jobs = self.container.async_ingest
        assert jobs is not None
        return jobs

    def resolve(self, type_: str, value: str) -> int:
        response = self.client.post(
            "/v1/resolve",
            json={"identifier": {"type": type_, "value": value}},
            headers=self.resolve_key,
        )
        return int(response.status_code)


def _served(settings: Settings) -> Iterator[Served]:
    container = build_container(settings)
    try:
        yield Served(container)
    finally:
        container.close()


@pytest.fixture
def served(settings: Settings, log_stream: io.StringIO) -> Iterator[Served]:
    yield from _served(settings)


def _batch(tag: str, n: int = 3) -> dict[str, Any]:
    return email_cookie_batch(f"async-{tag}", n, source="web", traits={"city": "Lisbon"})


def test_an_async_batch_is_answered_202_when_prefer_respond_async(served: Served) -> None:
    response = served.client.post("/v1/ingest", json=_batch("a"), headers=served.keys[0] | ASYNC)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert body["events"] == 3
    assert response.headers["Preference-Applied"] == "respond-async"
    assert response.headers["Location"] == f"/v1/ingest/jobs/{body['job_id']}"
    job = served.client.get(response.headers["Location"], headers=served.keys[0])
    assert job.status_code == 200
    assert job.json()["status"] == "queued"
    assert "results" not in job.json()
    assert served.jobs.queued_events() == 3
    # Queued, not applied: nobody resolves yet.
    assert served.resolve("email", email_of("async-a", 0)) == 404


def test_an_applied_job_gives_the_outcomes_of_the_synchronous_answer_when_drained(
    served: Served,
) -> None:
    # Two batches of the same shape on fresh identifiers, each sent twice: once queued and
    # applied by the journal, once answered synchronously. Same outcomes, same pointers.
    first = served.client.post("/v1/ingest", json=_batch("x"), headers=served.keys[0] | ASYNC)
    second = served.client.post("/v1/ingest", json=_batch("x"), headers=served.keys[0] | ASYNC)
    assert served.jobs.apply_once() == 6  # both batches, one transaction
    expected = served.client.post("/v1/ingest", json=_batch("y"), headers=served.keys[0])
    repeated = served.client.post("/v1/ingest", json=_batch("y"), headers=served.keys[0])
    assert expected.json()["outcomes"] == {"created": 3}
    assert repeated.json()["outcomes"] == {"unchanged": 3}

    for accepted, sync_answer in ((first, expected), (second, repeated)):
        job = served.client.get(accepted.headers["Location"], headers=served.keys[0]).json()
        assert job["status"] == "applied"
        answer = sync_answer.json()
        assert job["results"] == answer["results"]
        assert job["outcomes"] == answer["outcomes"]
        assert job["refused_identifiers"] == answer["refused_identifiers"]
        assert job["expires_at"] > job["finished_at"]
    assert served.resolve("cookie_id", cookie_of("async-x", 2)) == 200
    assert served.jobs.queued_events() == 0


def test_an_invalid_batch_is_refused_as_synchronously_and_nothing_is_queued(
    served: Served,
) -> None:
    bad = _batch("bad")
    bad["events"][1]["identifiers"][0]["value"] = "not-an-email"
    sync = served.client.post("/v1/ingest", json=bad, headers=served.keys[0])
    queued = served.client.post("/v1/ingest", json=bad, headers=served.keys[0] | ASYNC)

    assert queued.status_code == sync.status_code == 422
    assert queued.headers["content-type"] == "application/problem+json"
    assert queued.json()["errors"] == sync.json()["errors"]
    assert served.jobs.queued_events() == 0
    assert served.jobs.apply_once() == 0
    assert served.resolve("email", email_of("async-bad", 0)) == 404


def test_another_keys_job_is_404_when_read(served: Served) -> None:
    accepted = served.client.post("/v1/ingest", json=_batch("own"), headers=served.keys[0] | ASYNC)
    location = accepted.headers["Location"]

    other = served.client.get(location, headers=served.keys[1])
    unknown = served.client.get(
        "/v1/ingest/jobs/job_000000000000000000000000", headers=served.keys[0]
    )

    assert other.status_code == unknown.status_code == 404
    assert other.json()["type"] == "urn:idgraph:problem:ingest-job-not-found"
    assert other.json() | {"instance": None} == unknown.json() | {"instance": None}
    assert served.client.get(location, headers=served.keys[0]).status_code == 200


def test_a_full_journal_answers_503_with_retry_after_when_past_its_bound(
    settings: Settings, log_stream: io.StringIO
) -> None:
    for served in _served(settings.model_copy(update={"ingest_journal_max_events": 5})):
        assert (
            served.client.post(
                "/v1/ingest", json=_batch("f1"), headers=served.keys[0] | ASYNC
            ).status_code
            == 202
        )
        full = served.client.post("/v1/ingest", json=_batch("f2"), headers=served.keys[0] | ASYNC)
        assert full.status_code == 503
        assert full.headers["content-type"] == "application/problem+json"
        assert full.headers["Retry-After"] == "5"
        assert full.json()["type"] == "urn:idgraph:problem:ingest-journal-full"
        assert served.jobs.queued_events() == 3  # the refused batch left nothing
        served.jobs.apply_once()
        again = served.client.post("/v1/ingest", json=_batch("f2"), headers=served.keys[0] | ASYNC)
        assert again.status_code == 202


def _raw_values() -> list[bytes]:
    values = [EMAIL, EMAIL.lower(), "Journal.Person", "2079460958", "442079460958"]
    return [v.encode() for v in values]


def _files_hold(data_dir: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            found += [f"{path.name}: {n!r}" for n in needles if n in content]
    return found


def test_no_raw_identifier_is_in_the_files_when_queued_and_when_applied(
    served: Served, settings: Settings
) -> None:
    body = {
        "events": [
            {
                "identifiers": [
                    {"type": "email", "value": EMAIL},
                    {"type": "phone", "value": PHONE},
                ],
                "source": "crm",
                "traits": {"city": "Leeds"},
            }
        ]
    }
    accepted = served.client.post("/v1/ingest", json=body, headers=served.keys[0] | ASYNC)
    assert accepted.status_code == 202, accepted.text
    journal = journal_path(settings.data_dir / "graph.sqlite3")
    assert Path(str(journal) + "-wal").exists()  # the journal's commit is in its WAL
    assert _files_hold(settings.data_dir, _raw_values()) == []
    # The sealed batch is there (sealed): not readable as JSON of the events.
    assert _files_hold(settings.data_dir, [b'"crm"', b"Leeds"]) == []

    assert served.jobs.apply_once() == 1
    assert served.resolve("email", EMAIL) == 200
    assert _files_hold(settings.data_dir, _raw_values()) == []


def test_a_batch_queued_before_an_erasure_does_not_bring_the_person_back_when_applied(
    served: Served,
) -> None:
    person = {"identifiers": [{"type": "email", "value": EMAIL}], "source": "web"}
    assert (
        served.client.post("/v1/ingest", json={"events": [person]}, headers=served.keys[0])
    ).status_code == 200
    queued = served.client.post(
        "/v1/ingest",
        json={"events": [person | {"traits": {"city": "Lisbon"}}]},
        headers=served.keys[0] | ASYNC,
    )
    assert queued.status_code == 202
    container = served.container
    ErasureService(container.store, container.vault, container.keyring, container.audit).erase(
        [container.identity_policy.normalize("email", EMAIL, "GB")], "dsr-async-1", "cli"
    )
    assert served.resolve("email", EMAIL) == 404

    assert served.jobs.apply_once() == 1

    assert served.resolve("email", EMAIL) == 404
    job = served.client.get(queued.headers["Location"], headers=served.keys[0]).json()
    assert job["status"] == "applied"
    assert job["outcomes"] == {"refused": 1}
    assert [r["reason"] for r in job["results"][0]["refused"]] == ["suppressed"]


def test_prefer_is_read_as_rfc_7240_preferences_when_parsed() -> None:
    assert respond_async("respond-async")
    assert respond_async("wait=10, Respond-Async")
    assert respond_async("respond-async; foo=bar")
    assert not respond_async("return=minimal")
    assert not respond_async(None)
    assert not respond_async("respond-asynchronously")


def test_prefer_respond_async_is_not_applied_when_the_store_has_no_journal(
    served: Served,
) -> None:
    # What a Neo4j store gets (no journal: Container.async_ingest is None): written at once.
    served.client.app.state.async_ingest = None  # type: ignore[attr-defined]
    response = served.client.post("/v1/ingest", json=_batch("neo"), headers=served.keys[0] | ASYNC)

    assert response.status_code == 200
    assert "Preference-Applied" not in response.headers
    assert response.json()["outcomes"] == {"created": 3}
    job = served.client.get("/v1/ingest/jobs/job_000000000000000000000000", headers=served.keys[0])
    assert job.status_code == 404


def _tamper(data_dir: Path, *job_ids: str) -> None:
    """Flip a bit of each job's sealed batch in the journal file."""
    conn = sqlite3.connect(journal_path(data_dir / "graph.sqlite3"))
    try:
        for job_id in job_ids:
            (sealed,) = conn.execute(
                "SELECT sealed FROM ingest_journal WHERE job_id = ?", (job_id,)
            ).fetchone()
            tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
            conn.execute(
                "UPDATE ingest_journal SET sealed = ? WHERE job_id = ?", (tampered, job_id)
            )
        conn.commit()
    finally:
        conn.close()


def test_a_batch_whose_sealed_bytes_were_altered_is_failed_when_applied(served: Served) -> None:
    accepted = served.client.post("/v1/ingest", json=_batch("t"), headers=served.keys[0] | ASYNC)
    good = served.client.post("/v1/ingest", json=_batch("u"), headers=served.keys[0] | ASYNC)
    _tamper(served.container.settings.data_dir, accepted.json()["job_id"])

    # Applied by another process's applier (an AsyncIngest of its own on the same files): it
    # has only the journal rows (the accepting process applies the events it validated).
    with fake_clock_jobs(served, AsyncIngestLimits()) as (other, _):
        assert other.apply_once() == 6

    failed = served.client.get(accepted.headers["Location"], headers=served.keys[0]).json()
    assert failed["status"] == "failed"
    assert failed["error"] == "TamperedCiphertextError"
    assert "results" not in failed
    applied = served.client.get(good.headers["Location"], headers=served.keys[0]).json()
    assert applied["status"] == "applied"
    assert served.jobs.queued_events() == 0
    assert served.resolve("cookie_id", cookie_of("async-t", 0)) == 404
    assert served.resolve("cookie_id", cookie_of("async-u", 0)) == 200


class FakeClock:
    """A clock the test moves by hand (the applier's waits and the results' expiry read it)."""

    def __init__(self, start: datetime | None = None) -> None:
        # By default from the real time: the served app reads the same journal with the real
        # clock, and a result this clock expires is 404 to it. A fixed date (2026-12-06 12:00,
        # stop 47) made every result expire for the app 24 h later: two tests failed from then on.
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@contextmanager
def fake_clock_jobs(
    served: Served, limits: AsyncIngestLimits, start: datetime | None = None
) -> Iterator[tuple[AsyncIngest, FakeClock]]:
    """An AsyncIngest on the served store's real journal with ``limits`` and a fake clock (at
    ``start``, by default the real time)."""
    container = served.container
    clock = FakeClock(start)
    graph_file = container.settings.data_dir / "graph.sqlite3"
    jobs = AsyncIngest(
        container.ingest,
        SqliteIngestJournal(journal_path(graph_file), graph_file),
        container.vault,
        limits,
        clock=clock,
    )
    try:
        yield jobs, clock
    finally:
        jobs.close()


def _submit(jobs: AsyncIngest, name: str) -> str:
    """Submit ``_batch(name)`` as caller ``k1``; the job id."""
    events = ingest_inputs(_batch(name))
    assert events is not None
    return jobs.submit(events, key_id="k1").job_id


def test_a_job_result_is_404_when_it_expired(served: Served) -> None:
    with fake_clock_jobs(served, AsyncIngestLimits(keep_results_s=3600)) as (jobs, clock):
        job_id = _submit(jobs, "exp")
        assert jobs.apply_once() == 3
        clock.advance(minutes=59)
        assert jobs.job(job_id, key_id="k1").status == "applied"
        clock.advance(minutes=1)
        with pytest.raises(IngestJobNotFoundError):
            jobs.job(job_id, key_id="k1")
        assert jobs.expire() == 1


def test_the_applier_is_due_once_no_batch_arrived_for_the_idle_time_when_within_the_linger(
    served: Served,
) -> None:
    # A fake clock, the real journal: the linger (an hour) no longer holds the last batches of a
    # burst once nothing new arrived for apply_idle_s; a batch arriving restarts that wait.
    limits = AsyncIngestLimits(apply_linger_s=3600.0, apply_idle_s=0.1)
    with fake_clock_jobs(served, limits) as (jobs, clock):
        assert jobs.due_in_s() is None
        _submit(jobs, "idle-a")
        assert jobs.due_in_s() == pytest.approx(0.1)
        clock.advance(milliseconds=60)
        assert jobs.due_in_s() == pytest.approx(0.04)
        _submit(jobs, "idle-b")  # grew: the idle wait starts again
        assert jobs.due_in_s() == pytest.approx(0.1)
        clock.advance(milliseconds=100)
        assert jobs.due_in_s() == 0.0
        assert jobs.apply_once() == 6
        assert jobs.due_in_s() is None


def test_the_applier_keeps_lingering_when_batches_keep_arriving(served: Served) -> None:
    limits = AsyncIngestLimits(apply_linger_s=1.0, apply_idle_s=0.1)
    with fake_clock_jobs(served, limits) as (jobs, clock):
        for n in range(12):  # a batch every 90 ms: never idle, until the linger ends the wait
            _submit(jobs, f"steady-{n}")
            due = jobs.due_in_s()
            assert due is not None
            assert due == pytest.approx(max(0.0, min(0.1, 1.0 - 0.09 * n)))
            clock.advance(milliseconds=90)


def test_the_accepting_process_applies_its_batches_as_validated_without_unsealing_the_rows(
    served: Served,
) -> None:
    # The row of the first batch is made unreadable: the accepting process's applier applies
    # the events it validated (kept by submit), so it never opens the row; the row stays the
    # durable copy for any other applier (the test above).
    first = served.client.post("/v1/ingest", json=_batch("k"), headers=served.keys[0] | ASYNC)
    second = served.client.post("/v1/ingest", json=_batch("l"), headers=served.keys[0] | ASYNC)
    _tamper(served.container.settings.data_dir, first.json()["job_id"])

    assert served.jobs.apply_once() == 6

    for accepted in (first, second):
        job = served.client.get(accepted.headers["Location"], headers=served.keys[0]).json()
        assert job["status"] == "applied"
        assert job["outcomes"] == {"created": 3}
    assert served.resolve("cookie_id", cookie_of("async-k", 2)) == 200
    assert served.resolve("cookie_id", cookie_of("async-l", 2)) == 200
    assert len(served.jobs._kept) == 0


def test_batches_past_the_kept_bound_are_decoded_from_their_rows_when_applied(
    served: Served,
) -> None:
    # Kept: up to twice apply_max_events (6 here), so the third 3-event batch is not kept and
    # its applier opens its (altered) row.
    with fake_clock_jobs(served, AsyncIngestLimits(apply_max_events=3)) as (jobs, _):
        job_ids = [_submit(jobs, f"bound-{n}") for n in range(3)]
        assert len(jobs._kept) == 2
        _tamper(served.container.settings.data_dir, *job_ids)

        assert [jobs.apply_once() for _ in range(3)] == [3, 3, 3]

        statuses = [jobs.job(j, key_id="k1").status for j in job_ids]
        assert statuses == ["applied", "applied", "failed"]
        assert jobs.job(job_ids[2], key_id="k1").error == "TamperedCiphertextError"


def test_nothing_is_kept_for_a_batch_the_full_journal_refused(served: Served) -> None:
    with fake_clock_jobs(served, AsyncIngestLimits(max_queued_events=5)) as (jobs, _):
        _submit(jobs, "room")
        with pytest.raises(JournalFullError):
            _submit(jobs, "no-room")
        assert len(jobs._kept) == 1
        assert jobs.apply_once() == 3
        assert len(jobs._kept) == 0


def test_a_kept_batch_is_dropped_when_another_processs_applier_settled_it(
    served: Served,
) -> None:
    first = served.client.post("/v1/ingest", json=_batch("p1"), headers=served.keys[0] | ASYNC)
    second = served.client.post("/v1/ingest", json=_batch("p2"), headers=served.keys[0] | ASYNC)
    # Another process's applier takes the first batch (3 events per transaction at most).
    with fake_clock_jobs(served, AsyncIngestLimits(apply_max_events=3)) as (other, _):
        assert other.apply_once() == 3
    assert len(served.jobs._kept) == 2

    assert served.jobs.apply_once() == 3  # the second; the first's kept events are dropped

    assert len(served.jobs._kept) == 0
    for accepted in (first, second):
        job = served.client.get(accepted.headers["Location"], headers=served.keys[0]).json()
        assert job["status"] == "applied"


def _opened_batches(served: Served) -> dict[str, float]:
    """``idgraph_ingest_journal_batches_opened_total`` per source, from the app's /metrics."""
    _, token = served.container.api_keys.create("scraper", frozenset({Scope.METRICS}))
    response = served.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "idgraph_ingest_journal_batches_opened_total"
    }


def test_the_applier_counts_the_batches_it_opened_from_memory_and_from_the_journal(
    served: Served,
) -> None:
    # The app's copy of the applier (app.state.async_ingest) reports to the app's registry.
    app_jobs = served.client.app.state.async_ingest  # type: ignore[attr-defined]
    assert _opened_batches(served) == {"memory": 0.0, "journal": 0.0}
    for tag in ("m1", "m2"):  # accepted by this process: kept as validated
        response = served.client.post(
            "/v1/ingest", json=_batch(tag), headers=served.keys[0] | ASYNC
        )
        assert response.status_code == 202
    # Accepted by another process (an AsyncIngest of its own): this applier decodes its row.
    with fake_clock_jobs(served, AsyncIngestLimits()) as (other, _):
        _submit(other, "j1")

    assert app_jobs.apply_once() == 9

    assert _opened_batches(served) == {"memory": 2.0, "journal": 1.0}
    assert served.resolve("cookie_id", cookie_of("async-j1", 2)) == 200
