"""The PII scanner: real presidio on idgraph's real NER model, offline (no mocks of it)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pydantic
import pytest
import spacy
import yaml

from identity.errors import ConfigurationError, InputLimitError
from privacy.scanning import (
    PiiFinding,
    PiiScanner,
    ScannerConfig,
    ScannerConfigurationError,
    ScannerModelError,
    redact,
)
from privacy.scanning.model_files import model_fingerprint
from privacy.scanning.presidio_scanner import (
    MAX_TEXT_CHARS,
    NER_ENTITIES,
    PII_NER_MODEL_DIR,
    PII_NER_MODEL_SHA256,
    PresidioPiiScanner,
)
from tests.support.bench_support import run_bench

REPO = Path(__file__).resolve().parents[3]

# (entity type, text, the value inside the text that must be found)
DETECTED = [
    ("EMAIL_ADDRESS", "Please reply to anna.schmidt@web.de today.", "anna.schmidt@web.de"),
    ("PHONE_NUMBER", "Call me on +49 151 23456789 after 6pm.", "+49 151 23456789"),
    ("PHONE_NUMBER", "Telefon: 030 12345678", "030 12345678"),
    ("PHONE_NUMBER", "Tél : 01 42 68 53 00", "01 42 68 53 00"),
    ("PHONE_NUMBER", "mobile 07911 123456", "07911 123456"),
    (
        "IBAN_CODE",
        "Refund to IBAN DE89 3704 0044 0532 0130 00, please.",
        "DE89 3704 0044 0532 0130 00",
    ),
    ("IBAN_CODE", "RIB: FR1420041010050500013M02606", "FR1420041010050500013M02606"),
    ("CREDIT_CARD", "credit card 4111 1111 1111 1111 on file", "4111 1111 1111 1111"),
    ("IP_ADDRESS", "login from ip 192.168.10.24 at noon", "192.168.10.24"),
    ("PERSON", "Please contact Mr. John Smith about the order.", "John Smith"),
    ("PERSON", "Sehr geehrte Frau Anna-Lena Müller, danke.", "Anna-Lena Müller"),
    ("PERSON", "Je m'appelle Pierre Dupont.", "Pierre Dupont"),
    ("PERSON", "Name: Jan de Vries", "Jan de Vries"),
    ("PERSON", "Dear Charlotte Evans, welcome!", "Charlotte Evans"),
    ("PERSON", "Kind regards,\nMaria Rossi", "Maria Rossi"),
    ("PERSON", "Kunde Jürgen Weber hat bestellt", "Jürgen Weber"),
    (
        "STREET_ADDRESS",
        "Lieferadresse: Hauptstraße 12, 10115 Berlin",
        "Hauptstraße 12, 10115 Berlin",
    ),
    ("STREET_ADDRESS", "Anschrift: Berliner Straße 5a", "Berliner Straße 5a"),
    (
        "STREET_ADDRESS",
        "J'habite au 12 rue de la Paix, 75002 Paris.",
        "12 rue de la Paix, 75002 Paris",
    ),
    (
        "STREET_ADDRESS",
        "Ship to 10 Downing Street, London SW1A 2AA",
        "10 Downing Street, London SW1A 2AA",
    ),
    (
        "STREET_ADDRESS",
        "HQ: 1600 Amphitheatre Parkway, Mountain View, CA 94043",
        "1600 Amphitheatre Parkway, Mountain View, CA 94043",
    ),
    (
        "STREET_ADDRESS",
        "Adres: Keizersgracht 123, 1015 CJ Amsterdam",
        "Keizersgracht 123, 1015 CJ Amsterdam",
    ),
    (
        "STREET_ADDRESS",
        "Vive en Calle de Alcalá, 45, 28014 Madrid",
        "Calle de Alcalá, 45, 28014 Madrid",
    ),
    ("STREET_ADDRESS", "Indirizzo: Via Roma 10, 00184 Roma", "Via Roma 10, 00184 Roma"),
    ("EU_VAT_ID", "USt-IdNr.: DE136695976", "DE136695976"),
    ("EU_VAT_ID", "Partita IVA IT00743110157", "IT00743110157"),
    ("EU_VAT_ID", "N° TVA FR40303265045", "FR40303265045"),
    ("EU_VAT_ID", "BTW-nummer NL004495445B01", "NL004495445B01"),
    ("DE_TAX_ID", "Ihre Steuer-ID lautet 86095742719.", "86095742719"),
    ("UK_NHS", "NHS number 943 476 5919", "943 476 5919"),
    ("UK_NINO", "National insurance number: AB 12 34 56 C", "AB 12 34 56 C"),
    ("ES_NIF", "DNI/NIF: 12345678Z", "12345678Z"),
    ("IT_FISCAL_CODE", "codice fiscale RSSMRA85T10A562S", "RSSMRA85T10A562S"),
    ("PL_PESEL", "PESEL: 44051401359", "44051401359"),
]

CLEAN = [
    "visited the shoes category 3 times",
    "age band 25-34",
    "Berlin",
    "Lieferung nach Frankfurt am Main gewünscht",
    "Black Friday Sale: 30% off all Nike Air Max 90",
    "Newsletter opened on 2026-03-01 at 09:15",
    "order #48213 shipped, 2 items, total €129.99",
    "Neue Schuhe im Sale angesehen",
    "Platz 3 im Ranking der Bestseller",
    "Dear Customer, thanks for shopping with us",
    "Hallo Team, hier ist der Bericht",
    "Panier abandonné : 2 articles, 59,90 €",
    "Top brands: Adidas Originals, New Balance, Puma",
    "Preferred store: Hamburg Mitte",
    "found us via Google Ads 3 times",  # "via" the preposition, not an Italian street
    "Thanks, Marketing Team",  # a sign-off by a team is not a person
    "",
]


@pytest.fixture(scope="module")
def scanner() -> PresidioPiiScanner:
    """The patterns alone, for the module (the pattern recognizers' own tests; construction is
    the slow part). Explicit: the default config also runs the NER model."""
    return PresidioPiiScanner(ScannerConfig(ner=False))


@pytest.fixture(scope="module")
def ner_scanner() -> PresidioPiiScanner:
    """The scanner with idgraph's NER model (the default config)."""
    return PresidioPiiScanner(ScannerConfig(ner=True))


@pytest.fixture(scope="module")
def strict_scanner() -> PresidioPiiScanner:
    """Higher thresholds for phones and names, an extra phone context word, fast recycling."""
    config = ScannerConfig.model_validate(
        yaml.safe_load(
            textwrap.dedent(
                """
                default_threshold: 0.4
                thresholds: {PHONE_NUMBER: 0.7, PERSON: 0.8}
                context_words: {PHONE_NUMBER: [hotline]}
                """
            )
        )
    )
    return PresidioPiiScanner(config, recycle_after=3)


def _span(text: str, value: str) -> tuple[int, int]:
    start = text.index(value)
    return start, start + len(value)


def _types_over(findings: list[PiiFinding], start: int, end: int) -> set[str]:
    return {f.entity_type for f in findings if f.start < end and start < f.end}


@pytest.mark.parametrize(("entity", "text", "value"), DETECTED)
def test_entity_is_found_when_the_sentence_holds_it(
    scanner: PresidioPiiScanner, entity: str, text: str, value: str
) -> None:
    findings = scanner.scan(text)
    start, end = _span(text, value)

    matching = [f for f in findings if f.entity_type == entity]
    assert matching, f"{entity} not found; got {[f.entity_type for f in findings]}"
    # The finding covers the value (a little context may be included, never less than most).
    covered = sum(min(f.end, end) - max(f.start, start) for f in matching if f.start < end)
    assert covered >= 0.8 * (end - start)


@pytest.mark.parametrize("text", CLEAN)
def test_nothing_is_found_when_the_text_is_clean_marketing_data(
    scanner: PresidioPiiScanner, text: str
) -> None:
    assert scanner.scan(text) == []


@pytest.mark.parametrize(
    "text", ["Berlin", "Paris", "Frankfurt am Main", "Rue de Rivoli", "Baker Street", "via Roma"]
)
def test_street_address_is_not_found_when_there_is_no_house_number(
    scanner: PresidioPiiScanner, text: str
) -> None:
    assert "STREET_ADDRESS" not in {f.entity_type for f in scanner.scan(f"shop in {text}")}


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("order 86095742719 shipped", "DE_TAX_ID"),  # valid Steuer-ID check digit, no context
        ("ticket 943 476 5919 closed", "UK_NHS"),  # valid NHS check digit, no context
    ],
)
def test_digit_only_id_is_not_reported_when_no_context_word_supports_it(
    scanner: PresidioPiiScanner, text: str, entity: str
) -> None:
    assert entity not in {f.entity_type for f in scanner.scan(text)}


def test_phone_wins_over_a_checksum_id_when_the_number_has_phone_context(
    scanner: PresidioPiiScanner,
) -> None:
    text = "Rückruf bitte unter 333 761 7409"  # an Italian mobile that also passes the NHS check
    start, end = _span(text, "333 761 7409")
    assert _types_over(scanner.scan(text), start, end) == {"PHONE_NUMBER"}


def test_scanner_reports_every_entity_type_it_was_built_with(
    scanner: PresidioPiiScanner, ner_scanner: PresidioPiiScanner
) -> None:
    assert isinstance(scanner, PiiScanner)
    assert {entity for entity, _, _ in DETECTED} <= scanner.entities
    assert ner_scanner.entities == scanner.entities | set(NER_ENTITIES)
    assert "URL" not in scanner.entities  # page URLs are ordinary marketing values


def test_finding_disappears_when_its_entity_threshold_is_raised(
    scanner: PresidioPiiScanner, strict_scanner: PresidioPiiScanner
) -> None:
    phone = "contact 030 12345678"  # no phone context word: trunk-prefixed number, 0.6
    titled_name = "Dear Charlotte Evans"  # greeting: 0.55

    assert {f.entity_type for f in scanner.scan(phone)} == {"PHONE_NUMBER"}
    assert {f.entity_type for f in scanner.scan(titled_name)} == {"PERSON"}
    assert strict_scanner.scan(phone) == []
    assert strict_scanner.scan(titled_name) == []
    # A stronger reading still passes the raised threshold.
    assert {f.entity_type for f in strict_scanner.scan("Telefon: 030 12345678")} == {"PHONE_NUMBER"}


def test_configured_context_word_lifts_a_finding_over_the_threshold(
    scanner: PresidioPiiScanner, strict_scanner: PresidioPiiScanner
) -> None:
    text = "hotline 030 12345678"
    strict = strict_scanner.scan(text)
    assert [f.entity_type for f in strict] == ["PHONE_NUMBER"]
    assert strict[0].score > max(f.score for f in scanner.scan(text))


def test_construction_fails_when_config_names_an_unknown_entity() -> None:
    config = ScannerConfig(thresholds={"SHOE_SIZE": 0.5})
    with pytest.raises(ScannerConfigurationError) as caught:
        PresidioPiiScanner(config)
    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.field == "thresholds"
    assert "SHOE_SIZE" in str(caught.value)


@pytest.mark.parametrize(
    "mapping",
    [
        {"default_threshold": 1.5},
        {"thresholds": {"PERSON": -0.1}},
        {"thresholds": {"person": 0.5}},
        {"context_words": {"PERSON": [""]}},
        {"language": "english"},
        {"treshold": 0.5},  # a typo must not be ignored
    ],
)
def test_config_is_rejected_when_a_field_is_invalid(mapping: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ScannerConfig.model_validate(mapping)


def test_config_is_frozen_and_threshold_falls_back_to_default() -> None:
    config = ScannerConfig.model_validate({"default_threshold": 0.3, "thresholds": {"PERSON": 0.7}})
    assert config.threshold_for("PERSON") == 0.7
    assert config.threshold_for("EMAIL_ADDRESS") == 0.3
    with pytest.raises(pydantic.ValidationError):
        config.language = "de"  # type: ignore[misc]


def test_redact_hides_every_value_and_keeps_the_rest(scanner: PresidioPiiScanner) -> None:
    text = (
        "Sehr geehrte Frau Anna-Lena Müller, Lieferadresse: Hauptstraße 12, 10115 Berlin; "
        "Mail anna.mueller@gmx.de, Telefon +49 151 23456789, IBAN DE89370400440532013000."
    )
    values = [
        "Anna-Lena Müller",
        "Hauptstraße 12",
        "10115 Berlin",
        "anna.mueller@gmx.de",
        "+49 151 23456789",
        "DE89370400440532013000",
    ]

    redacted = redact(text, scanner.scan(text))

    for value in values:
        assert value not in redacted
    assert redacted == (
        "Sehr geehrte Frau <PERSON>, Lieferadresse: <STREET_ADDRESS>; "
        "Mail <EMAIL_ADDRESS>, Telefon <PHONE_NUMBER>, IBAN <IBAN_CODE>."
    )


def test_redact_merges_overlapping_and_adjacent_findings_under_the_strongest_label() -> None:
    text = "abcdefghij"
    findings = [
        PiiFinding("PHONE_NUMBER", 2, 5, 0.4),
        PiiFinding("IBAN_CODE", 4, 7, 1.0),  # overlaps the phone
        PiiFinding("PERSON", 7, 8, 0.5),  # adjacent to the IBAN
    ]
    assert redact(text, findings) == "ab<IBAN_CODE>ij"
    assert redact(text, findings, template="[{entity_type}:{entity_type}]") == (
        "ab[IBAN_CODE:IBAN_CODE]ij"
    )
    assert redact(text, [PiiFinding("PERSON", 0, 1, 0.5), PiiFinding("PERSON", 3, 4, 0.5)]) == (
        "<PERSON>bc<PERSON>efghij"
    )
    assert redact(text, []) == text


def test_redact_refuses_findings_that_lie_outside_the_text() -> None:
    with pytest.raises(ValueError, match="outside"):
        redact("short", [PiiFinding("PERSON", 2, 40, 0.9)])


def test_finding_rejects_an_impossible_span_or_score() -> None:
    with pytest.raises(ValueError, match="span"):
        PiiFinding("PERSON", 5, 5, 0.5)
    with pytest.raises(ValueError, match="score"):
        PiiFinding("PERSON", 0, 5, 1.5)


def test_findings_never_contain_the_matched_text(scanner: PresidioPiiScanner) -> None:
    text = "Mr. John Smith, john.smith@example.co.uk, +44 20 7946 0958, Baker Street 221B"
    findings = scanner.scan(text)
    assert len(findings) >= 3
    assert {field.name for field in dataclasses.fields(PiiFinding)} == {
        "entity_type",
        "start",
        "end",
        "score",
    }
    for finding in findings:
        assert not hasattr(finding, "__dict__")  # slots: nothing can be attached later
        shown = repr(finding) + str(finding) + repr(findings)
        for value in ("John", "Smith", "john.smith", "7946", "Baker"):
            assert value not in shown


def test_presidio_logs_never_carry_the_scanned_values(
    scanner: PresidioPiiScanner, caplog: pytest.LogCaptureFixture
) -> None:
    text = "Telefon 030 98765432, Kunde Ottilie Brandhuber, IBAN DE89 3704 0044 0532 0130 00"
    caplog.set_level(logging.DEBUG)
    # presidio's logger is at WARNING by default (no per-recognizer start-up lines); an operator
    # who turns it up to DEBUG must still see no values.
    caplog.set_level(logging.DEBUG, logger="presidio-analyzer")

    scanner.scan(text)
    scanner.scan_many([text, text])

    presidio_records = [r for r in caplog.records if r.name == "presidio-analyzer"]
    # presidio does log at DEBUG in this path (e.g. the context words around a match), so this
    # test would see a leak if the filter did not withhold the arguments.
    assert presidio_records
    assert any("withheld" in r.getMessage() for r in presidio_records)
    for value in ("98765432", "Ottilie", "Brandhuber", "3704", "telefon"):
        assert value not in caplog.text.lower()


def test_scan_many_returns_what_scan_returns_in_the_same_order(
    scanner: PresidioPiiScanner,
) -> None:
    texts = [text for _, text, _ in DETECTED[:12]] + CLEAN[:4]
    assert scanner.scan_many(texts) == [scanner.scan(text) for text in texts]
    assert scanner.scan_many([]) == []


def test_ner_scan_many_finds_what_scan_finds_when_some_values_have_no_word(
    ner_scanner: PresidioPiiScanner,
) -> None:
    # Values without two letters in a row skip the model (a cost cut, never a finding less):
    # one batch mixes them with values the model must read, in both orders.
    texts = [
        "2026-03-01T09:15:00+01:00",
        "Ticket raised by Katalin Vörös about a late parcel.",
        "+49 151 23456789",
        "4111 1111 1111 1111",
        "She moved to Tampere last year.",
        "129.99",
        "",
    ]
    for batch in (texts, texts[::-1]):
        assert ner_scanner.scan_many(batch) == [ner_scanner.scan(text) for text in batch]
    found = ner_scanner.scan_many(texts)
    assert {f.entity_type for f in found[1]} >= {"PERSON"}
    assert {f.entity_type for f in found[2]} == {"PHONE_NUMBER"}
    assert {f.entity_type for f in found[3]} == {"CREDIT_CARD"}


def test_concurrent_scans_give_the_same_findings_as_sequential_ones(
    scanner: PresidioPiiScanner,
) -> None:
    texts = [text for _, text, _ in DETECTED]
    expected = [scanner.scan(text) for text in texts]
    results: dict[int, list[list[PiiFinding]]] = {}

    def work(worker: int) -> None:
        results[worker] = [scanner.scan(text) for text in texts]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[n] == expected for n in range(4))


def test_pipeline_forgets_scanned_tokens_when_it_is_recycled(
    strict_scanner: PresidioPiiScanner,
) -> None:
    # spaCy interns every token in the pipeline's string store; recycling bounds how long a
    # scanned value stays in memory. (Reads the adapter's pipeline: the retention is the point.)
    marker = "zyxwvutsrq.unique@example.org"
    strict_scanner.scan(f"mail {marker}")
    nlp = strict_scanner._nlp_engine.nlp["en"]
    assert marker in nlp.vocab.strings

    before = strict_scanner.scan("Telefon: 030 12345678")
    strict_scanner.scan_many(["one", "two", "three", "four"])

    assert marker not in strict_scanner._nlp_engine.nlp["en"].vocab.strings
    assert strict_scanner.scan("Telefon: 030 12345678") == before


def test_scan_refuses_a_text_over_the_limit_without_echoing_it(
    scanner: PresidioPiiScanner,
) -> None:
    with pytest.raises(InputLimitError) as caught:
        scanner.scan("x@example.com " * (MAX_TEXT_CHARS // 10))
    assert "example" not in str(caught.value)
    with pytest.raises(InputLimitError):
        scanner.scan_many(["ok", "y" * (MAX_TEXT_CHARS + 1)])


def test_construction_loads_only_the_pinned_model_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[object] = []
    real_load = spacy.load

    def record(name: object, *args: object, **kwargs: object) -> object:
        loaded.append(name)
        return real_load(name, *args, **kwargs)  # type: ignore[arg-type]

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("spaCy model download attempted")

    monkeypatch.setattr(spacy, "load", record)
    monkeypatch.setattr("spacy.cli.download", refuse)

    fresh = PresidioPiiScanner(ScannerConfig(ner=True))
    assert "EMAIL_ADDRESS" in {f.entity_type for f in fresh.scan("Mail: a.b@example.com")}
    assert loaded == [PII_NER_MODEL_DIR]
    loaded.clear()
    PresidioPiiScanner(ScannerConfig(ner=False))  # the patterns alone: no model
    assert loaded == []
    PresidioPiiScanner(ScannerConfig())  # the default runs the model, from its directory too
    assert loaded == [PII_NER_MODEL_DIR]


def test_construction_fails_when_the_model_files_are_not_the_pinned_ones(tmp_path: Path) -> None:
    copy = tmp_path / "pii_ner"
    shutil.copytree(PII_NER_MODEL_DIR, copy)
    assert model_fingerprint(copy) == PII_NER_MODEL_SHA256  # an exact copy is accepted
    PresidioPiiScanner(ScannerConfig(ner=True), model_dir=copy)

    meta = copy / "meta.json"
    version = json.loads(meta.read_text(encoding="utf-8"))["version"]
    meta.write_text(
        meta.read_text(encoding="utf-8").replace(version, f"{version}.1"), encoding="utf-8"
    )
    with pytest.raises(ScannerModelError, match="is not the pinned") as caught:
        PresidioPiiScanner(ScannerConfig(ner=True), model_dir=copy)
    assert isinstance(caught.value, ConfigurationError)

    with pytest.raises(ScannerModelError, match="does not exist"):
        PresidioPiiScanner(ScannerConfig(ner=True), model_dir=tmp_path / "missing")


def test_patterns_alone_run_without_the_model_when_ner_is_off(tmp_path: Path) -> None:
    # ner=False never reads the model directory, so a missing one is no error.
    patterns = PresidioPiiScanner(ScannerConfig(ner=False), model_dir=tmp_path / "missing")
    assert not {"LOCATION", "ORGANIZATION"} & patterns.entities
    text = "Sehr geehrte Frau Anna-Lena Müller, Lieferadresse: Hauptstraße 12, 10115 Berlin"
    assert {f.entity_type for f in patterns.scan(text)} == {"PERSON", "STREET_ADDRESS"}


# Names, places, organisations and addresses with no pattern or context word to find them by:
# the NER model's work. (Written for this test; the model never saw these sentences.)
NER_FOUND = [
    ("PERSON", "Ticket raised by Katalin Vörös about a late parcel.", "Katalin Vörös"),
    ("PERSON", "yesterday Bjørn T. Halvorsen asked for a refund", "Bjørn T. Halvorsen"),
    ("PERSON", "Spoke with Emeka Okafor on Tuesday.", "Emeka Okafor"),
    ("LOCATION", "She moved to Tampere last year.", "Tampere"),
    (
        "ORGANIZATION",
        "Invoice for Brightwater Logistics Ltd, due in May.",
        "Brightwater Logistics Ltd",
    ),
    ("STREET_ADDRESS", "Parcel went to 18 Snyder Laneway, Jasonstad.", "18 Snyder Laneway"),
]


@pytest.mark.parametrize(("entity", "text", "value"), NER_FOUND)
def test_ner_model_finds_what_no_pattern_describes(
    ner_scanner: PresidioPiiScanner, scanner: PresidioPiiScanner, entity: str, text: str, value: str
) -> None:
    start, end = _span(text, value)
    assert entity in _types_over(ner_scanner.scan(text), start, end)
    assert entity not in _types_over(scanner.scan(text), start, end)  # patterns alone miss it


@pytest.mark.parametrize(
    ("entity", "text", "value"),
    [
        ("IBAN_CODE", "iban de89 3704 0044 0532 0130 00 please", "de89 3704 0044 0532 0130 00"),
        ("IBAN_CODE", "refund to gb82west12345698765432", "gb82west12345698765432"),
        ("CREDIT_CARD", "card 4000 0000 0000 0000 006 on file", "4000 0000 0000 0000 006"),
        ("CREDIT_CARD", "card 6011000000000000001 charged", "6011000000000000001"),
        ("CREDIT_CARD", "visa 4222222222222 expired", "4222222222222"),
    ],
)
def test_iban_in_any_case_and_cards_of_13_to_19_digits_are_found(
    scanner: PresidioPiiScanner, entity: str, text: str, value: str
) -> None:
    start, end = _span(text, value)
    assert entity in _types_over(scanner.scan(text), start, end)


def test_card_number_is_not_reported_when_its_luhn_digit_is_wrong(
    scanner: PresidioPiiScanner,
) -> None:
    assert "CREDIT_CARD" not in {
        f.entity_type for f in scanner.scan("card 4000 0000 0000 0000 007")
    }


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("During 1971 the shop opened its first branch.", "STREET_ADDRESS"),
        ("Coupon SPRING20 applied to the basket", "STREET_ADDRESS"),  # a code, not "…ring 20"
        ("Offering 20 new styles this Spring 2026", "STREET_ADDRESS"),
        ("Listening to White Stripes while shopping", "PERSON"),
        ("Personal Info", "PERSON"),
        ("ref 17151 2450 in the export", "PHONE_NUMBER"),  # valid Italian landline shape
    ],
)
def test_false_positive_of_the_old_scanner_is_not_reported_when_nothing_supports_it(
    scanner: PresidioPiiScanner, text: str, entity: str
) -> None:
    assert entity not in {f.entity_type for f in scanner.scan(text)}


# Clean marketing values the NER model alone read as names, places or companies (issue 16: a
# finding on 80.5 % of clean marketing values). Written for this test, apart from the training
# corpus and the bench's marketing set.
MARKETING_VALUES = [
    "Listening to White Stripes while shopping",
    "Personal Info",
    "Rain Shell Jacket - now 30% off",
    "Review: Dusty Rose looked different from the photos, returned it.",
    "Webinar: Copper Lanterns for Beginners",
    "Survey answer: I found you through Pinterest",
    "Coupon SPRING20 applied to Trail Boots",
    "Great Chelsea Boots, size 42, colour Sand",
    "Envío gratis en Camisetas Básicas",
    "Loyalty level Platinum, 40 points to go",
]


@pytest.mark.parametrize("text", MARKETING_VALUES)
def test_ner_reports_no_person_or_address_when_the_value_is_clean_marketing_text(
    ner_scanner: PresidioPiiScanner, text: str
) -> None:
    found = {f.entity_type for f in ner_scanner.scan(text)}
    assert not found & {"PERSON", "STREET_ADDRESS"}, found


@pytest.mark.parametrize(
    ("entity", "text", "value"),
    [
        # The model reads these as organisations; a listed first name makes them a person.
        ("PERSON", "Payout to Ryan Anderson Wood, account on file.", "Ryan Anderson Wood"),
        ("PERSON", "Attendees: Vera Novak, Ivo Horvat and Tomas Kral.", "Ivo Horvat"),
        ("PERSON", "Support ticket from Peterson, Steven about the app.", "Peterson, Steven"),
        ("PERSON", "Personal details - Hilde Sivertsen, born 1973", "Hilde Sivertsen"),
    ],
)
def test_ner_reports_a_person_when_the_lexicon_knows_the_name(
    ner_scanner: PresidioPiiScanner, entity: str, text: str, value: str
) -> None:
    start, end = _span(text, value)
    assert entity in _types_over(ner_scanner.scan(text), start, end)


def test_bare_digit_group_is_a_phone_when_a_context_word_says_so(
    scanner: PresidioPiiScanner,
) -> None:
    text = "Tel. 17151 2450"
    start, end = _span(text, "17151 2450")
    assert _types_over(scanner.scan(text), start, end) == {"PHONE_NUMBER"}


NO_NETWORK_SCRIPT = """
import json, socket, sys
import spacy

attempts = []

def refuse(*args, **kwargs):
    # Libraries may swallow the error and fall back (tldextract does), so record the attempt.
    attempts.append(repr(args[1:2]))
    raise OSError("network access attempted")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse  # a lookup is an attempt too, and comes before any connect
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
except OSError as error:
    assert "network access attempted" in str(error)
else:
    sys.exit("the socket patch is not effective")
attempts.clear()

from privacy.scanning import ScannerConfig
from privacy.scanning.presidio_scanner import PresidioPiiScanner

scanner = PresidioPiiScanner(ScannerConfig(ner=True))  # the model loads from disk, offline
texts = ["Mail anna@example.co.uk or bob@mail.example.com", "Tel. +49 151 23456789"]
found = [sorted({f.entity_type for f in found} - {"PERSON", "ORGANIZATION", "LOCATION"})
         for found in scanner.scan_many(texts)]
print(json.dumps({"attempts": attempts, "found": found}))
"""


def test_construct_and_scan_never_touch_the_network(tmp_path: Path) -> None:
    # A fresh interpreter, so nothing (tldextract's suffix list above all) is already loaded,
    # and a home directory with no tldextract cache in it.
    done = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["found"] == [["EMAIL_ADDRESS"], ["PHONE_NUMBER"]]


def test_quality_bench_prints_precision_recall_and_f2_when_run_on_a_sample(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "pii.json"
    done = run_bench(
        "pii_quality.py",
        "--sample",
        "40",
        "--json",
        str(figures),
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("entity"))
    assert header.split()[-3:] == ["precision", "recall", "F2"]
    rows = {line.split()[0] for line in lines if line.strip()}
    expected = {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "STREET_ADDRESS"}
    assert expected | {"overall"} <= rows
    assert any(line.startswith("overall: precision=") and "F2=" in line for line in lines)
    assert any(line.startswith("cost per value:") and "ratio" in line for line in lines)
    data = json.loads(figures.read_text(encoding="utf-8"))
    assert data["sentences"] == 40
    assert set(data["classes"]) == expected | {"overall", "any"}
    assert any(line.startswith("== marketing negative set") for line in lines)
    assert data["marketing"]["values"] == 40
    assert 0 <= data["marketing_patterns_only"]["false_alarm_rate"] <= 1
    assert data["latency_ms"]["ner"]["cpu_p95"] > 0
