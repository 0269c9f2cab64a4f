"""Event idempotency (issue 13, finding 5): a per-event ``message_id`` (or Segment's
``messageId``) is applied once within the message window on every ingest path: ``/v1/identify``,
``/v1/ingest``, ``/v1/consent`` and bulk files (the stream consumer has its own tests in
tests/stream). A resend is answered like a success, ``duplicate`` with ``deduplicated: true``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from privacy.access.api_keys import Scope
from services.bulk import ingest_file
from tests.conftest import TEST_STORE, Api
from tests.support.response_checks import forms_of

SECRET_ID = "order-4711-for-ann.secret@shop.example"


def _event(email: str, message_id: str | None = None, key: str = "message_id") -> dict[str, Any]:
    body: dict[str, Any] = {
        "identifiers": [{"type": "email", "value": email}],
        "source": "web",
        "timestamp": "2026-03-01T09:00:00+00:00",
        "events": [{"name": "purchase", "properties": {"items": 1}}],
    }
    if message_id is not None:
        body[key] = message_id
    return body


def _facts(api: Api) -> int:
    return api.container.store.stats().facts


def test_identify_resent_with_its_message_id_is_answered_duplicate_and_stores_nothing(
    api: Api,
) -> None:
    first = api.client.post(
        "/v1/identify", json=_event("ann@shop.example", "m-1"), headers=api.ingest
    )
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "created"
    assert "deduplicated" not in first.json()
    facts = _facts(api)
    again = api.client.post(
        "/v1/identify", json=_event("ann@shop.example", "m-1"), headers=api.ingest
    )
    assert again.status_code == 200, again.text
    assert again.json() == {
        "outcome": "duplicate",
        "deduplicated": True,
        "new_identifiers": 0,
        "refused": [],
        "facts": {"stored": 0, "quarantined": 0, "dropped": 0},
    }
    assert _facts(api) == facts
    # Without a message id the same body is a new event (its purchase is stored again).
    api.client.post("/v1/identify", json=_event("ann@shop.example"), headers=api.ingest)
    assert _facts(api) == facts + 1


def test_segment_message_id_spelling_is_accepted_on_identify(api: Api) -> None:
    body = _event("bo@shop.example", "ajs-42", key="messageId")
    first = api.client.post("/v1/identify", json=body, headers=api.ingest)
    assert first.status_code == 200, first.text
    # Either spelling names the same id.
    same = _event("bo@shop.example", "ajs-42")
    again = api.client.post("/v1/identify", json=same, headers=api.ingest)
    assert again.json()["deduplicated"] is True


def test_ingest_batches_apply_each_message_id_once_across_and_within_batches(api: Api) -> None:
    batch = {"events": [_event("cy@shop.example", "b-1"), _event("cy@shop.example", "b-2")]}
    first = api.client.post("/v1/ingest", json=batch, headers=api.ingest)
    assert first.status_code == 200, first.text
    facts = _facts(api)
    resent = {
        "events": [
            _event("cy@shop.example", "b-2"),
            _event("cy@shop.example", "b-3"),
            _event("cy@shop.example", "b-3"),
        ]
    }
    second = api.client.post("/v1/ingest", json=resent, headers=api.ingest)
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["outcomes"] == {"duplicate": 2, "unchanged": 1}
    assert [r.get("deduplicated", False) for r in body["results"]] == [True, False, True]
    assert _facts(api) == facts + 1  # only b-3's purchase


def test_consent_resent_with_its_message_id_records_nothing_again(api: Api) -> None:
    _, token = api.container.api_keys.create("consent", frozenset({Scope.CONSENT}))
    headers = {"Authorization": f"Bearer {token}"}
    body = {
        "identifiers": [{"type": "email", "value": "di@shop.example"}],
        "decisions": {"marketing_email": True},
        "message_id": "c-1",
    }
    first = api.client.post("/v1/consent", json=body, headers=headers)
    assert first.status_code == 200, first.text
    consents = api.container.store.stats().consents
    assert consents >= 1
    again = api.client.post("/v1/consent", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["outcome"] == "duplicate"
    assert again.json()["deduplicated"] is True
    assert again.json()["recorded"] == []
    assert api.container.store.stats().consents == consents


@pytest.mark.parametrize("bad", ["", "x" * 257, "line\nbreak", "\ud800", 42])
def test_a_malformed_message_id_is_a_422_and_writes_nothing(api: Api, bad: object) -> None:
    before = api.container.store.stats()
    body = _event("ed@shop.example", None)
    body["message_id"] = bad
    # json.dumps escapes a lone surrogate as \\ud800, as a sender's JSON library would.
    response = api.client.post(
        "/v1/identify",
        content=json.dumps(body),
        headers={**api.ingest, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["pointer"] == "#/message_id"
    assert api.container.store.stats() == before


def test_message_ids_are_stored_only_as_keyed_digests(api: Api) -> None:
    for _ in range(2):
        response = api.client.post(
            "/v1/identify", json=_event("fay@shop.example", SECRET_ID), headers=api.ingest
        )
        assert response.status_code == 200
        assert SECRET_ID.encode() not in response.content
    if TEST_STORE != "sqlite":
        return  # Neo4j store files: the scans of tests/identity/store/test_neo4j_live.py
    data_dir = api.container.settings.data_dir
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name.endswith("-wal") for p in files)
    for path in files:
        blob = path.read_bytes()
        for form in forms_of(SECRET_ID) | forms_of("order-4711"):
            assert form not in blob, f"message id in {path.name}"


# -- bulk files ---------------------------------------------------------------------------------


class _InterruptedError(Exception):
    """Stands in for a kill: raised from the progress callback part-way through the file."""


def _bulk_file(path: Path, rows: int) -> None:
    lines = []
    for i in range(rows):
        row = _event(f"bulk{i % 7}@shop.example")
        row["events"][0]["properties"] = {"items": i}
        lines.append(json.dumps(row))
    lines.append(json.dumps(_event("bulk0@shop.example")))  # identical rows on two lines ...
    lines.append(json.dumps(_event("bulk0@shop.example")))  # ... are two events
    path.write_text("\n".join(lines) + "\n")


def test_a_rerun_of_an_interrupted_bulk_file_converges_exactly_events_included(
    api: Api, tmp_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    rows = 95
    _bulk_file(source, rows)
    service = api.container.ingest
    read = [0]
    size = source.stat().st_size

    def interrupt(n: int) -> None:
        read[0] += n
        if read[0] > size // 2:
            raise _InterruptedError

    with pytest.raises(_InterruptedError):
        ingest_file(service, source, actor="cli", batch_size=10, progress=interrupt)
    # Facts: one purchase per row, and each email kept once (encrypted) for activation; the first
    # batch already names all seven emails.
    kept_emails = 7
    partial = api.container.store.stats()
    committed = partial.facts - kept_emails
    assert 0 < committed < rows
    assert committed % 10 == 0  # whole batches
    rerun = ingest_file(service, source, actor="cli", batch_size=10)
    assert rerun.outcomes["duplicate"] == committed  # the committed rows, skipped
    done = api.container.store.stats()
    assert done.facts == rows + 2 + kept_emails  # every row's purchase exactly once
    assert done.persons == kept_emails
    # A third run changes nothing at all.
    third = ingest_file(service, source, actor="cli", batch_size=10)
    assert third.outcomes == {"duplicate": rows + 2}
    assert api.container.store.stats() == done


def test_bulk_csv_rows_may_carry_their_own_message_id(api: Api, tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text(
        "source,message_id,email\ncrm,row-a,gil@shop.example\ncrm,row-a,hal@shop.example\n"
    )
    report = ingest_file(api.container.ingest, source, actor="cli")
    assert report.outcomes == {"created": 1, "duplicate": 1}
    assert api.container.store.stats().persons == 1
