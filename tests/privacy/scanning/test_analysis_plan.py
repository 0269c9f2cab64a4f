"""The scanner's own analysis loop returns what presidio's AnalyzerEngine.analyze returns.

``PresidioPiiScanner`` analyses each text with ``_AnalysisPlan`` instead of calling
``AnalyzerEngine.analyze``: recognizers selected once, a recognizer skipped when the text lacks
a character every one of its patterns needs (a digit, an ``@``), the context steps skipped when
nothing was found. This is a differential test: on the project's PII sentences, the held-out
sentences, clean marketing values, their digit-free and other-script-digit look-alikes, date-
times and IP/e-mail shapes, every text gets the same results (type, span, score, recognizer, in
order) from both, with the NER model on and off. Real presidio and the real model throughout.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from presidio_analyzer import RecognizerResult

from bench.pii_heldout import generate as generate_heldout
from bench.pii_heldout import generate_marketing
from bench.pii_quality import generate as generate_project
from privacy.scanning import ScannerConfig
from privacy.scanning.presidio_scanner import PresidioPiiScanner

SENTENCES = 200  # per set


@pytest.fixture(scope="module", params=[False, True], ids=["patterns", "ner"])
def scanner(request: pytest.FixtureRequest) -> PresidioPiiScanner:
    return PresidioPiiScanner(ScannerConfig(ner=request.param))


def _digit_free(text: str) -> str:
    """Digits swapped for the letters they are mistaken for: ids and numbers without digits."""
    return text.translate(str.maketrans("0123456789", "OlZEASGTBg"))


def _other_script_digits(text: str) -> str:
    """ASCII digits swapped for Arabic-Indic and full-width ones: still decimal digits."""
    arabic = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))
    wide = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
    return text.translate(arabic if len(text) % 2 else wide)


def _datetimes(count: int) -> list[str]:
    rng = random.Random(16)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    out = []
    for _ in range(count):
        offset = timezone(timedelta(minutes=rng.randrange(-23 * 60, 23 * 60 + 1)))
        instant = epoch + timedelta(
            seconds=rng.randrange(-2_000_000_000, 4_000_000_000),
            microseconds=rng.choice([0, rng.randrange(1_000_000)]),
        )
        out.append(instant.astimezone(offset).isoformat())
    return out


SHAPES = [
    "fe80::1ff:fe23:4567:890a",
    "abcd:ef::",
    "::",
    "deadbeef::cafe",
    "reach me at anna.schmidt@web.de or anna(at)web.de",
    "user@localhost",
    "@handle on every network",
    "RSSMRA85T10A562S",
    "RSSMRAURTMLARSNS",  # an Italian fiscal code with every digit written as a letter (omocodia)
    "Tel. +49 (0)30 12345678, Fax 030/1234567-9",
    "GB82 WEST 1234 5698 7654 32",
    "gb82 west 1234 5698 7654 32",
    "Kontoinhaber Max Mustermann, Hauptstraße 5, 10115 Berlin",
    "",
    " ",
    "  \t\n",
]


def _texts() -> list[str]:
    project = [sample.text for sample in generate_project(SENTENCES, 16)]
    heldout = [text for text, _ in generate_heldout(SENTENCES, 16)]
    marketing = generate_marketing(SENTENCES, 16)
    base = [*project, *heldout, *marketing, *SHAPES]
    return [
        *base,
        *(_digit_free(t) for t in base),
        *(_other_script_digits(t) for t in base),
        *_datetimes(300),
    ]


def _plain(results: list[RecognizerResult]) -> list[tuple[str, int, int, float, str]]:
    key = RecognizerResult.RECOGNIZER_NAME_KEY
    return [
        (r.entity_type, r.start, r.end, r.score, (r.recognition_metadata or {}).get(key, ""))
        for r in results
    ]


def test_analysis_plan_returns_the_engines_results_when_given_the_same_texts(
    scanner: PresidioPiiScanner,
) -> None:
    language = scanner.config.language
    engine = scanner._analyzer  # the reference: presidio's own engine on the same recognizers
    plan = scanner._plan
    texts = _texts()
    differing = []
    found = 0
    for text in texts:
        # Each side on its own NLP artifacts: the context enhancer reads, never edits, them.
        reference = engine.analyze(
            text=text,
            language=language,
            entities=scanner._entity_list,
            nlp_artifacts=scanner._nlp_engine.process_text(text, language),
        )
        ours = plan.analyze(text, scanner._nlp_engine.process_text(text, language))
        if _plain(ours) != _plain(reference):
            differing.append(text)
        found += bool(reference)
    assert not differing, f"{len(differing)} of {len(texts)} texts differ, e.g. {differing[:3]}"
    # The sets exercise both sides of every shortcut: texts with and without findings.
    assert 0 < found < len(texts)


def test_scan_and_scan_many_report_what_the_engine_reports_when_filtered_by_threshold(
    scanner: PresidioPiiScanner,
) -> None:
    language = scanner.config.language
    texts = _texts()[::7]
    reference = [
        scanner._to_findings(
            scanner._analyzer.analyze(text=t, language=language, entities=scanner._entity_list)
        )
        if t.strip()
        else []
        for t in texts
    ]
    assert scanner.scan_many(texts) == reference
    assert [scanner.scan(t) for t in texts] == reference
