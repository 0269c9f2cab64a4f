"""Outbound event documents follow their published, versioned JSON Schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from identity import outbound
from identity.model import ConsentRecord, ConsentSignal
from tests.conftest import REPO

SCHEMAS = REPO / "docs" / "schemas" / "events"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _schema(kind: str) -> dict[str, Any]:
    path: Path = SCHEMAS / f"{kind}.v{outbound.SCHEMA_VERSIONS[kind]}.json"
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.parametrize("kind", sorted(outbound.SCHEMA_VERSIONS))
def test_every_event_kind_has_a_schema_file_whose_id_the_documents_name(kind: str) -> None:
    schema = _schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == outbound.schema_id(kind)


def test_a_consent_changed_document_validates_and_names_only_the_person_id() -> None:
    record = ConsentRecord(
        "c_1",
        "n_secret_node",
        "marketing",
        False,
        T0,
        T0,
        "cmp:onetrust",
        ConsentSignal.GPC,
        "consent",
        "ab" * 32,
    )
    event = outbound.consent_changed(record, "p_123")
    doc = json.loads(event.payload)
    jsonschema.validate(doc, _schema(outbound.CONSENT_CHANGED))
    assert (event.kind, event.person_id, doc["granted"]) == ("consent.changed", "p_123", False)
    # The anchor node id and the proof digest stay inside idgraph.
    assert "n_secret_node" not in event.payload
    assert "ab" * 32 not in event.payload


def test_a_person_erased_document_validates_and_waits_for_its_erasure() -> None:
    event = outbound.person_erased("p_123", "e_0a1b", T0)
    jsonschema.validate(json.loads(event.payload), _schema(outbound.PERSON_ERASED))
    assert event.erasure_id == "e_0a1b"


def test_a_document_missing_a_required_field_fails_its_schema() -> None:
    doc = json.loads(outbound.person_erased("p_1", "e_01", T0).payload)
    del doc["person_id"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, _schema(outbound.PERSON_ERASED))


def test_event_ids_are_unique_and_ordered_by_creation() -> None:
    ids = [outbound.new_event_id() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_a_person_merged_document_validates_and_names_the_absorbed_ids() -> None:
    event = outbound.person_merged("p_keep", ["p_gone2", "p_gone1"], T0)
    document = json.loads(event.payload)
    jsonschema.validate(document, _schema(outbound.PERSON_MERGED))
    assert (event.kind, event.person_id) == (outbound.PERSON_MERGED, "p_keep")
    assert document["merged_person_ids"] == ["p_gone1", "p_gone2"]


def test_a_person_split_document_validates_and_names_the_new_ids_only() -> None:
    event = outbound.person_split("p_kept", ["p_new2", "p_new1"], "unlink", T0)
    document = json.loads(event.payload)
    jsonschema.validate(document, _schema(outbound.PERSON_SPLIT))
    assert (event.kind, event.person_id) == (outbound.PERSON_SPLIT, "p_kept")
    assert outbound.partition_key(event) == "p_kept"  # in order with the person's events
    assert document["split_person_ids"] == ["p_new1", "p_new2"]
    assert set(document) == {
        "schema",
        "type",
        "version",
        "event_id",
        "occurred_at",
        "person_id",
        "split_person_ids",
        "reason",
    }
