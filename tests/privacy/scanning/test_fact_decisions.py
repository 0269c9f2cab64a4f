"""What FactIntake decides per value, pinned on the shipped policy with the real scanner.

The decision step reads its per-category rules (allowed entities, action, special) from maps
built once from the frozen policy, and skips the findings pass for values the scanner found
nothing in. These tests hold the observable results to the policy: payload bytes (compact JSON,
keys sorted, ASCII-escaped), status, the entity types recorded, and the special-category switch
in both positions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from identity.errors import BatchValidationError
from identity.model import FactKind, FactStatus
from privacy.scanning import ScannerConfig
from privacy.scanning.facts import EventInput, FactIntake, load_facts_policy
from privacy.scanning.presidio_scanner import PresidioPiiScanner

REPO = Path(__file__).resolve().parents[3]
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def scanner() -> PresidioPiiScanner:
    return PresidioPiiScanner(ScannerConfig(ner=False))


def _intake(scanner: PresidioPiiScanner, *, accept_special: bool = False) -> FactIntake:
    policy = load_facts_policy(REPO / "policies" / "categories.yaml")
    if accept_special:
        policy = policy.model_copy(update={"accept_special_categories": True})
    return FactIntake(policy, scanner)


def test_clean_values_are_stored_as_canonical_json_when_nothing_is_found(
    scanner: PresidioPiiScanner,
) -> None:
    facts = _intake(scanner).prepare(
        {"interests": ["running", "caf\u00e9"], "visit_count": 3},
        [EventInput("purchase", AT, {"currency": "EUR", "amount": 12.5})],
        AT,
    )
    by_name = {f.name: f for f in facts}
    assert by_name["interests"].payload == b'["running","caf\\u00e9"]'
    assert by_name["visit_count"].payload == b"3"
    assert by_name["purchase"].kind is FactKind.EVENT
    assert by_name["purchase"].payload == b'{"properties":{"amount":12.5,"currency":"EUR"}}'
    assert all(f.status is FactStatus.ACTIVE and f.pii == () for f in facts)


def test_found_pii_is_redacted_quarantined_or_refused_as_each_category_says(
    scanner: PresidioPiiScanner,
) -> None:
    intake = _intake(scanner)
    email = "write to ann.lee@example.com please"
    redacted = intake.prepare({"favourite_category": email, "visit_count": 1}, [], AT)
    (category,) = [f for f in redacted if f.name == "favourite_category"]
    assert category.status is FactStatus.ACTIVE
    assert category.pii == ("EMAIL_ADDRESS",)
    assert json.loads(category.payload) == "write to <EMAIL_ADDRESS> please"
    with pytest.raises(BatchValidationError) as refused:
        intake.prepare({"age_band": "a@example.com"}, [], AT)
    assert [e.reason for e in refused.value.errors] == ["pii_not_allowed"]
    assert "a@example.com" not in str(refused.value)
    (unknown,) = intake.prepare(
        None, [EventInput("not_declared_event", AT, {"note": email, "n": 2})], AT
    )
    assert unknown.status is FactStatus.QUARANTINED
    assert unknown.pii == ("EMAIL_ADDRESS",)
    assert json.loads(unknown.payload) == {"properties": {"n": 2, "note": email}}


@pytest.mark.parametrize("accept_special", [False, True])
def test_special_category_values_follow_accept_special_categories_when_set_either_way(
    scanner: PresidioPiiScanner, accept_special: bool
) -> None:
    intake = _intake(scanner, accept_special=accept_special)
    if not accept_special:
        with pytest.raises(BatchValidationError) as refused:
            intake.prepare({"health_interest": "diabetes"}, [], AT)
        assert [e.reason for e in refused.value.errors] == ["special_category"]
        return
    (fact,) = intake.prepare({"health_interest": "diabetes"}, [], AT)
    assert fact.category == "special_category"
    assert fact.payload == b'"diabetes"'
