"""``IDGRAPH_INGEST_APPLIER=process``: ``idgraph serve`` leaves the ingest journal to a child
``idgraph ingest-applier`` process, restarts it when it dies and stops it with itself; the app
starts no applier thread and keeps no accepted batch in memory; the applier process exits when
its parent is gone, a child that cannot start is not restarted, and the applier thread logs with
the fields its starter bound (``process=ingest-applier``); the server is ready (``/readyz``)
only once its applier child has looked at the journal.

Real processes (``idgraph serve`` on a free port, a real SIGKILL), the real app and store.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import structlog.testing
from fastapi.testclient import TestClient

from api.app import create_app
from bench.load import children_of
from bootstrap import container as container_module
from bootstrap.container import build_container
from bootstrap.settings import Settings
from cli.applier import ApplierChild
from privacy.access.api_keys import Scope
from services.async_ingest import JournalApplier
from services.inputs import ingest_inputs
from services.metrics import ApplierExits, TalliedMetrics, TallyFile
from tests.support.crash_harness import (
    APPLIER_TALLY_FILE,
    SAFETY_TIMEOUT,
    ServerProcess,
    bearer,
    prepare_data_dir,
    run_cli,
    running,
)
from tests.support.ingest_samples import cookie_of, email_cookie_batch
from tests.support.journal_processes import (
    ASYNC,
    SQLITE_JOURNAL_ONLY,
    finished_job,
    wait_for,
)

pytestmark = SQLITE_JOURNAL_ONLY


def _batch(n: int) -> dict[str, Any]:
    return email_cookie_batch(f"applier-process-{n}")


def _cookie(n: int, k: int) -> str:
    return cookie_of(f"applier-process-{n}", k)


def _scraped(client: httpx.Client, key: dict[str, str], series: str) -> float:
    scrape = client.get("/metrics", headers=key)
    assert scrape.status_code == 200, scrape.text
    return _metric(scrape.text, series)


def _metric(text: str, line_start: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(line.rsplit(" ", 1)[1])


def test_serve_applies_in_its_child_process_restarts_it_and_stops_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_data_dir(data)
    key = bearer(data, "applier-process", frozenset({Scope.INGEST, Scope.RESOLVE, Scope.METRICS}))
    # The defaults: IDGRAPH_INGEST_APPLIER (auto) and IDGRAPH_INGEST_APPLIER_TALLY_FILE (unset:
    # serve keeps the tallies in a temporary directory of its own).
    server = ServerProcess(data, tmp_path, tally_file=False)
    assert "IDGRAPH_INGEST_APPLIER" not in os.environ
    server.start()
    try:
        pid = server.pid()
        assert pid is not None
        wait_for(lambda: len(children_of(pid)) == 1, "one applier child")
        (first,) = children_of(pid)
        with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
            accepted = client.post("/v1/ingest", json=_batch(0), headers=key | ASYNC)
            assert accepted.status_code == 202, accepted.text
            job = finished_job(client, accepted.headers["Location"], key)
            assert job["status"] == "applied"
            assert job["outcomes"] == {"created": 3}

            # Its counts reach the server's /metrics (written after each group).
            created = 'idgraph_ingest_events_total{outcome="created"}'
            wait_for(lambda: _scraped(client, key, created) == 3, "the child's counts scraped")

            # A child that dies is started again, and the journal goes on being applied.
            os.kill(first, 9)
            wait_for(lambda: children_of(pid) not in ((), (first,)), "a new applier child")
            again = client.post("/v1/ingest", json=_batch(1), headers=key | ASYNC)
            assert again.status_code == 202, again.text
            assert finished_job(client, again.headers["Location"], key)["outcomes"] == {
                "created": 3
            }
            resolved = client.post(
                "/v1/resolve",
                json={"identifier": {"type": "cookie_id", "value": _cookie(1, 2)}},
                headers=key,
            )
            assert resolved.status_code == 200, resolved.text

            # The server's /metrics counts what its children applied, the first child's six
            # events' worth included: the second went on counting from where the first stopped.
            wait_for(lambda: _scraped(client, key, created) == 6, "both children's counts")
            scrape = client.get("/metrics", headers=key)
            opened = 'idgraph_ingest_journal_batches_opened_total{source="journal"}'
            assert _metric(scrape.text, opened) == 2
            ingest = 'idgraph_store_seconds_count{operation="ingest"}'
            assert _metric(scrape.text, ingest) >= 2
        (second,) = children_of(pid)
        tally = Path(_environ(second, "IDGRAPH_INGEST_APPLIER_TALLY_FILE"))
        assert tally.is_file()
        assert tally.parent.name.startswith("idgraph-")  # serve's own directory

        # Stopping the server stops its applier.
        assert server.process is not None
        server.process.terminate()
        # uvicorn shuts down, then re-raises the SIGTERM it caught: -15, as without a child.
        assert server.process.wait(SAFETY_TIMEOUT) in (0, -15)
        assert not running(second)
        # The tally file's private directory went with it, though uvicorn re-raised the SIGTERM.
        assert not tally.parent.exists()
    finally:
        server.kill()


def _environ(pid: int, name: str) -> str:
    """``name``'s value in the environment process ``pid`` was started with."""
    prefix = name.encode() + b"="
    (value,) = [
        entry.removeprefix(prefix)
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if entry.startswith(prefix)
    ]
    return value.decode()


def test_serve_is_ready_only_when_its_applier_has_looked_at_the_journal(tmp_path: Path) -> None:
    """``/readyz`` says 200 once the child has looked at the journal (it takes seconds to
    start, and a batch accepted before would wait for it), never on the strength of a tally
    file an earlier server's child left at the same path (here one killed with SIGKILL)."""
    data = tmp_path / "data"
    prepare_data_dir(data)
    key = bearer(data, "applier-ready", frozenset({Scope.INGEST}))
    server = ServerProcess(data, tmp_path)  # the tally file in the data dir: it outlives servers
    tally = TallyFile(data / APPLIER_TALLY_FILE)
    runs: list[str] = []
    for start in range(2):
        server.start()  # returns at the first /readyz 200
        pid = server.pid()
        assert pid is not None
        try:
            written = tally.read().run_id  # at once: the child wrote it before the 200
            (child,) = children_of(pid)
            runs.append(_environ(child, "IDGRAPH_INGEST_APPLIER_RUN_ID"))
            assert written == runs[-1]
            with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
                accepted = client.post("/v1/ingest", json=_batch(10 + start), headers=key | ASYNC)
                assert accepted.status_code == 202, accepted.text
                assert (
                    finished_job(client, accepted.headers["Location"], key)["status"] == "applied"
                )
        finally:
            server.kill()
        assert not running(child)  # kill() returns once the server's children are gone too
    assert runs[0] != runs[1]  # the second server waited for its own child, not the file


def _process_mode(settings: Settings, tally: TallyFile) -> Settings:
    """``settings`` as a server under ``idgraph serve`` with its applier child has them: the
    tally file and the run id ``this-run``."""
    return settings.model_copy(
        update={
            "ingest_applier": "process",
            "ingest_applier_tally_file": tally.path,
            "ingest_applier_run_id": "this-run",
        }
    )


def test_readyz_is_503_until_the_applier_of_this_run_has_looked_at_the_journal(
    settings: Settings, tmp_path: Path
) -> None:
    tally = TallyFile(tmp_path / "applier.json")
    process = _process_mode(settings, tally)
    TalliedMetrics(tally, run_id="an-earlier-run").mark_started()  # an earlier server's child
    with TestClient(create_app(process), raise_server_exceptions=False) as client:
        with structlog.testing.capture_logs() as logs:
            waiting = client.get("/readyz")
        assert waiting.status_code == 503
        # Expected while starting: an info line, not a request_failed error per probe.
        assert [(e["event"], e["log_level"]) for e in logs if "not" in e["event"]] == [
            ("request_not_ready", "info")
        ]
        assert not [e for e in logs if e["log_level"] == "error"]
        assert waiting.headers["content-type"] == "application/problem+json"
        problem = waiting.json()
        assert problem["type"] == "urn:idgraph:problem:ingest-applier-not-started"
        assert problem["detail"] == "not ready: the ingest applier has not started yet"
        assert client.get("/livez").status_code == 200

        TalliedMetrics(tally, run_id="this-run").mark_started()  # this run's child's first look
        assert client.get("/readyz").json() == {"status": "ready"}

    # An app that applies in its own thread waits for no other process, whatever the file says.
    tally.path.unlink()
    thread = process.model_copy(update={"ingest_applier": "thread"})
    with TestClient(create_app(thread)) as client:
        assert client.get("/readyz").json() == {"status": "ready"}


def test_readyz_says_when_the_applier_keeps_exiting_before_it_starts(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that crashes at every start is reported as such (its exits and last status),
    not as "not started yet" for ever; once it has started, earlier exits do not matter."""
    exits = ApplierExits()  # this test's own: serve's supervisor records into the module's
    monkeypatch.setattr(container_module, "APPLIER_EXITS", exits)
    tally = TallyFile(tmp_path / "applier.json")
    process = _process_mode(settings, tally)
    with TestClient(create_app(process), raise_server_exceptions=False) as client:
        starting = client.get("/readyz").json()
        assert starting["type"] == "urn:idgraph:problem:ingest-applier-not-started"
        exits.record(1)
        exits.record(1)
        with structlog.testing.capture_logs() as logs:
            crashing = client.get("/readyz")
        assert crashing.status_code == 503
        assert crashing.headers["content-type"] == "application/problem+json"
        problem = crashing.json()
        assert problem["type"] == "urn:idgraph:problem:ingest-applier-restarting"
        assert "exited 2 time(s) before it started (last exit status 1)" in problem["detail"]
        assert "ingest_applier_process_exited" in problem["detail"]
        assert [e["event"] for e in logs if "not" in e["event"]] == ["request_not_ready"]
        assert not [e for e in logs if e["log_level"] == "error"]
        TalliedMetrics(tally, run_id="this-run").mark_started()
        assert client.get("/readyz").json() == {"status": "ready"}


def test_the_supervisor_tells_every_exit_of_a_crashing_child_and_starts_it_again() -> None:
    statuses: list[int] = []
    child = ApplierChild(
        dict(os.environ),
        lambda: statuses.append(-1000),  # never: status 1 is not "cannot start"
        command=(sys.executable, "-c", "import sys; sys.exit(1)"),
        on_exit=statuses.append,
    )
    child.start()
    try:
        wait_for(lambda: len(statuses) >= 2, "two exits of the crashing child")
    finally:
        child.stop()
    assert statuses[:2] == [1, 1]


def test_the_applier_thread_looks_at_the_journal_before_it_applies_anything(
    settings: Settings,
) -> None:
    container = build_container(settings)
    try:
        jobs = container.async_ingest
        assert jobs is not None
        events = ingest_inputs(_batch(8))
        assert events is not None
        jobs.submit(events, key_id="first-look")  # queued before the applier starts
        queued_at_first_look: list[int] = []
        applier = JournalApplier(
            jobs,
            poll_s=0.05,
            on_first_look=lambda: queued_at_first_look.append(jobs.queued_events()),
        )
        applier.start()
        try:
            wait_for(lambda: jobs.queued_events() == 0, "the batch applied")
        finally:
            applier.stop()
        assert queued_at_first_look == [3]  # once, with the batch not applied yet
    finally:
        container.close()


def _applier_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "idgraph-ingest-applier"}


def test_the_app_starts_no_applier_thread_and_keeps_no_batch_in_memory(
    settings: Settings,
) -> None:
    before = _applier_threads()  # other tests' apps may still be closing theirs
    process = settings.model_copy(update={"ingest_applier": "process"})
    with TestClient(create_app(process)) as client:
        assert _applier_threads() - before == set()
        container = client.app.state.container  # type: ignore[attr-defined]
        assert container.async_ingest.limits.keep_accepted is False
    with TestClient(create_app(settings)) as client:
        assert len(_applier_threads() - before) == 1
        container = client.app.state.container  # type: ignore[attr-defined]
        assert container.async_ingest.limits.keep_accepted is True


def test_the_applier_process_stops_when_its_parent_is_gone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_data_dir(data)
    # Its parent is this test, not process 1: it stops at its first look, as an orphan would.
    done = run_cli(data, "ingest-applier", "--parent-pid", "1")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]


def test_a_child_that_cannot_start_is_not_started_again() -> None:
    gave_up = threading.Event()
    child = ApplierChild(
        dict(os.environ), gave_up.set, command=(sys.executable, "-c", "import sys; sys.exit(2)")
    )
    child.start()
    try:
        assert gave_up.wait(SAFETY_TIMEOUT)
    finally:
        child.stop()


def test_the_applier_thread_carries_the_log_fields_its_starter_bound(settings: Settings) -> None:
    container = build_container(settings)
    try:
        jobs = container.async_ingest
        assert jobs is not None
        seen: list[object] = []

        @contextlib.contextmanager
        def around_apply() -> Iterator[None]:
            seen.append(structlog.contextvars.get_contextvars().get("process"))
            yield

        applier = JournalApplier(jobs, poll_s=0.05, around_apply=around_apply)
        with structlog.contextvars.bound_contextvars(process="ingest-applier"):
            applier.start()  # as run_applier starts it, after the command bound the field
        try:
            events = ingest_inputs(_batch(9))
            assert events is not None
            jobs.submit(events, key_id="applier-context")
            wait_for(lambda: bool(seen), "one apply")
        finally:
            applier.stop()
        assert seen[0] == "ingest-applier"
    finally:
        container.close()
