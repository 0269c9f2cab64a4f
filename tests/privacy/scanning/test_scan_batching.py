"""Scanning many requests at once (FactIntake.prepare_many) decides exactly as one by one.

The ingest path scans the traits and event properties of a whole bulk chunk (or a whole
``/v1/ingest`` request) in one scanner batch, so the NER model runs once per chunk. These tests
hold that to the old behaviour: the same facts, the same errors and the same findings as
scanning request by request, on the project's own PII sentences and on clean marketing values,
with the NER model on and off. Real presidio and the real model throughout.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.pii_heldout import generate as generate_heldout
from bench.pii_heldout import generate_marketing
from bench.pii_quality import generate as generate_project
from identity.errors import BatchValidationError, InputLimitError
from identity.model import FactStatus
from privacy.scanning import ScannerConfig
from privacy.scanning.facts import EventInput, FactIntake, FactsOf, load_facts_policy
from privacy.scanning.presidio_scanner import MAX_TEXT_CHARS, PresidioPiiScanner

REPO = Path(__file__).resolve().parents[3]
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SENTENCES = 150  # per set: enough names, addresses, phones and IBANs to matter, quick to scan


@pytest.fixture(scope="module", params=[False, True], ids=["patterns", "ner"])
def scanner(request: pytest.FixtureRequest) -> PresidioPiiScanner:
    return PresidioPiiScanner(ScannerConfig(ner=request.param))


def _texts() -> list[str]:
    project = [sample.text for sample in generate_project(SENTENCES, 7)]
    heldout = [text for text, _ in generate_heldout(SENTENCES, 7)]
    return [*project, *heldout, *generate_marketing(SENTENCES, 7)]


def _intake(scanner: PresidioPiiScanner) -> FactIntake:
    """A fresh intake (empty scan cache) on the shipped policy."""
    return FactIntake(load_facts_policy(REPO / "policies" / "categories.yaml"), scanner)


def _requests(texts: list[str]) -> list[FactsOf]:
    """Requests that put the sentences where every category action applies: redact
    (favourite_category, support text, interests), reject (age_band, preferred_payment),
    quarantine (contact, unknown events); some values repeat, some requests are invalid."""
    requests = []
    for index, text in enumerate(texts):
        traits: dict[str, Any] = {"favourite_category": text[:100], "visit_count": index}
        if index % 3 == 0:
            traits["interests"] = [text[:64], "garden", texts[index - 1][:64]]
        if index % 5 == 0:
            traits["age_band"] = text[:16]
        if index % 7 == 0:
            traits["street_address"] = text[:300]
        if index % 11 == 0:
            traits["visit_count"] = "many"  # wrong type: the request is refused before scanning
        events = [EventInput("support_message", AT, {"topic": "order", "text": text})]
        if index % 4 == 0:
            events.append(EventInput("chat_transcript", AT, {"line": text}))  # undeclared event
        requests.append(FactsOf(traits, events, AT, f"#/events/{index}"))
    return requests


def _outcome(result: object) -> tuple[str, Any]:
    if isinstance(result, BatchValidationError):
        return ("errors", [(type(e).__name__, e.field, e.message) for e in result.errors])
    return ("facts", result)


def test_prepare_many_decides_as_prepare_one_by_one_when_scanned_in_one_batch(
    scanner: PresidioPiiScanner,
) -> None:
    requests = _requests(_texts())
    one_by_one = []
    single = _intake(scanner)
    for request in requests:
        try:
            one_by_one.append(
                _outcome(single.prepare(request.traits, request.events, AT, request.pointer))
            )
        except BatchValidationError as exc:
            one_by_one.append(_outcome(exc))
    batched = [_outcome(result) for result in _intake(scanner).prepare_many(requests)]
    assert batched == one_by_one
    # The sets exercise what matters: refused, redacted and quarantined values, and clean ones.
    refused = [problem for kind, problems in batched if kind == "errors" for problem in problems]
    assert any(name == "PiiRejectedError" for name, _, _ in refused)
    assert any(message.endswith("must be an integer") for _, _, message in refused)
    facts = [fact for kind, prepared in batched if kind == "facts" for fact in prepared]
    assert any(b"<PERSON>" in f.payload or b"<PHONE_NUMBER>" in f.payload for f in facts)
    assert any(f.pii for f in facts)
    assert any(not f.pii for f in facts)
    assert any(f.status is FactStatus.QUARANTINED for f in facts)


def test_scan_many_finds_what_scan_finds_per_value_on_the_pii_sets(
    scanner: PresidioPiiScanner,
) -> None:
    texts = _texts()
    assert scanner.scan_many(texts) == [scanner.scan(text) for text in texts]


def test_a_text_over_the_scanner_limit_fails_only_its_own_request(
    scanner: PresidioPiiScanner,
) -> None:
    long_text = "a" * (MAX_TEXT_CHARS + 1)
    requests = [
        FactsOf({"favourite_category": "garden"}, [], AT, "#/events/0"),
        FactsOf(None, [EventInput("chat_transcript", AT, {"line": long_text})], AT, "#/events/1"),
        FactsOf({"favourite_category": "Call me on +49 151 23456789"}, [], AT, "#/events/2"),
    ]
    first, second, third = _intake(scanner).prepare_many(requests)
    assert isinstance(second, InputLimitError)
    assert not isinstance(first, Exception)
    assert not isinstance(third, Exception)
    assert b"<PHONE_NUMBER>" in third[0].payload
    with pytest.raises(InputLimitError):
        _intake(scanner).prepare(None, [EventInput("chat_transcript", AT, {"x": long_text})], AT)


def test_the_scan_cache_holds_keyed_digests_never_the_plain_sha256_of_a_value(
    scanner: PresidioPiiScanner,
) -> None:
    values = ["anna.schmidt@web.de", "+49 151 23456789", "garden"]
    first, second = _intake(scanner), _intake(scanner)
    for intake in (first, second):
        intake.prepare({"interests": values}, [], AT)
    # The unkeyed SHA-256 of an e-mail address is the "hashed e-mail" ad-tech matches people on;
    # the cache must not hold it (nor any digest a dictionary attack could test candidates with).
    plain = {hashlib.sha256(v.encode()).digest() for v in values}
    keys_first = set(first._cache._items.keys())  # what the cache holds is the point
    keys_second = set(second._cache._items.keys())
    assert len(keys_first) == len(values)
    assert not keys_first & plain
    # A random key per cache: the same values give unrelated digests in another process.
    assert not keys_first & keys_second


def test_the_scan_cache_keeps_the_values_used_last_when_it_is_full(
    scanner: PresidioPiiScanner,
) -> None:
    policy = load_facts_policy(REPO / "policies" / "categories.yaml")
    intake = FactIntake(policy, scanner, cache_size=2)
    first = intake.prepare({"interests": ["garden", "anna.schmidt@web.de"]}, [], AT)
    intake.prepare({"interests": ["garden"]}, [], AT)  # a hit: "garden" is used last now
    intake.prepare({"interests": ["cycling"]}, [], AT)
    digest = intake._cache._digest
    assert intake._cache._items.keys() == [digest("garden"), digest("cycling")]
    # The evicted value is scanned again, with the same findings (redacted as before).
    again = intake.prepare({"interests": ["garden", "anna.schmidt@web.de"]}, [], AT)
    assert [f.payload for f in again] == [f.payload for f in first]
    assert b"<EMAIL_ADDRESS>" in first[0].payload


def test_datetime_value_is_stored_as_given_when_its_fraction_reads_like_a_phone_number(
    scanner: PresidioPiiScanner,
) -> None:
    # The fractional seconds "07.835817" are a valid national phone number to the phone
    # recognizer: scanned, this behavioural timestamp was stored as "...T14:12:<PHONE_NUMBER>".
    value = "2017-03-09T14:12:07.835817+14:37"
    assert [f.entity_type for f in scanner.scan(value)] == ["PHONE_NUMBER"]
    intake = _intake(scanner)
    (fact,) = intake.prepare({"last_purchase_at": value}, [], AT)
    assert fact.payload == f'"{value}"'.encode()
    assert fact.pii == ()
    assert fact.status is FactStatus.ACTIVE
    # A string attribute with the same text is still scanned (and redacted by its category).
    (text_fact,) = intake.prepare({"favourite_category": value}, [], AT)
    assert b"<PHONE_NUMBER>" in text_fact.payload
