"""The lexicon's review of NER entities, on small word lists written for the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privacy.scanning.name_lexicon import (
    LEXICON_FILE,
    SCORE_MODEL,
    SCORE_NAME,
    SCORE_SHAPE,
    NameLexicon,
    Reading,
    fold,
)
from privacy.scanning.presidio_scanner import PII_NER_MODEL_DIR

LEXICON = NameLexicon(
    first_names=frozenset({"anna", "ryan", "rose", "chelsea", "steven"}),
    last_names=frozenset({"gelencser", "anderson", "wood", "white", "peterson"}),
    common_words=frozenset(
        {"rose", "white", "stripes", "dusty", "boots", "great", "wood", "bjørn", "size"}
    ),
    org_words=frozenset({"gmbh", "ag"}),
    street_words=frozenset({"street", "strasse"}),
    places=frozenset({"senegal", "new jersey"}),
)


def _review(label: str, text: str) -> list[tuple[str, str, float]]:
    words = text.split()
    return [
        (r.label, " ".join(words[r.start : r.end]), r.score) for r in LEXICON.review(label, words)
    ]


def test_fold_drops_case_and_diacritics() -> None:
    assert fold("Gelencsér") == fold("GELENCSER") == "gelencser"


@pytest.mark.parametrize(
    "text",
    ["White Stripes", "Dusty Rose", "Great Chelsea Boots", "Kraftwerk", "J. K.", "Coupon SPRING20"],
)
def test_person_is_dropped_when_the_span_has_no_name_signal(text: str) -> None:
    assert _review("PERSON", text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Anna Gelencsér", ("PERSON", "Anna Gelencsér", SCORE_MODEL)),
        ("Rose White", ("PERSON", "Rose White", SCORE_NAME)),  # names that are words too
        ("Gülçe Ülker", ("PERSON", "Gülçe Ülker", SCORE_SHAPE)),  # unlisted, capitalised
        ("J. Sprenger", ("PERSON", "J. Sprenger", SCORE_NAME)),
        ("Bjørn T. Halvorsen", ("PERSON", "Bjørn T. Halvorsen", SCORE_SHAPE)),
        ("Klemen left", ("PERSON", "Klemen", 0.0)),  # trimmed, then one unknown word: dropped
    ],
)
def test_person_is_kept_with_a_score_by_its_signal(
    text: str, expected: tuple[str, str, float]
) -> None:
    assert _review("PERSON", text) == ([expected] if expected[2] else [])


def test_organisation_that_opens_with_a_first_name_is_a_person() -> None:
    assert _review("ORGANIZATION", "Ryan Anderson Wood") == [
        ("PERSON", "Ryan Anderson Wood", SCORE_NAME)
    ]
    assert _review("ORGANIZATION", "Peterson , Steven") == [
        ("PERSON", "Peterson , Steven", SCORE_MODEL)
    ]


def test_person_with_a_legal_form_is_an_organisation() -> None:
    assert _review("PERSON", "Anderson Wood GmbH") == [
        ("ORGANIZATION", "Anderson Wood GmbH", SCORE_MODEL)
    ]


def test_list_of_names_is_split_into_people() -> None:
    found = _review("PERSON", "Anna Gelencsér , Ryan Wood and Zoltán Kovács")
    assert [text for _, text, _ in found] == ["Anna Gelencsér", "Ryan Wood", "Zoltán Kovács"]
    assert {label for label, _, _ in found} == {"PERSON"}


def test_location_of_ordinary_words_is_dropped_unless_it_is_a_listed_place() -> None:
    assert _review("LOCATION", "Dusty Boots") == []
    assert _review("LOCATION", "New Jersey") == [("LOCATION", "New Jersey", SCORE_MODEL)]
    assert _review("LOCATION", "Senegal") == [("LOCATION", "Senegal", SCORE_MODEL)]


def test_street_needs_a_street_type_or_a_number_beside_a_name() -> None:
    assert _review("STREET_ADDRESS", "size 42") == []
    assert _review("STREET_ADDRESS", "Vrančovičova 5") == [
        ("STREET_ADDRESS", "Vrančovičova 5", SCORE_MODEL)
    ]
    assert _review("PERSON", "Alekseev Street 40") == [
        ("STREET_ADDRESS", "Alekseev Street 40", SCORE_MODEL)
    ]


def test_names_the_model_missed_are_found_outside_its_entities() -> None:
    words = [
        "Personal",
        "details",
        "-",
        "Anna",
        "Gelencsér",
        ",",
        "born",
        "1985",
        ";",
        "Peterson",
        ",",
        "Steven",
    ]
    taken = [False] * len(words)
    found = LEXICON.find_names(words, taken)
    assert found == [Reading("PERSON", 3, 5, SCORE_NAME), Reading("PERSON", 9, 12, SCORE_NAME)]
    taken[3] = True
    assert LEXICON.find_names(words, taken) == [Reading("PERSON", 9, 12, SCORE_NAME)]


def test_load_refuses_a_lexicon_without_one_of_its_lists(tmp_path: Path) -> None:
    lists = json.loads((PII_NER_MODEL_DIR / LEXICON_FILE).read_text(encoding="utf-8"))
    del lists["places"]
    (tmp_path / LEXICON_FILE).write_text(json.dumps(lists), encoding="utf-8")
    with pytest.raises(ValueError, match="places"):
        NameLexicon.load(tmp_path)


def test_shipped_lexicon_knows_no_name_of_a_held_out_locale_only() -> None:
    # The held-out bench set measures names the lists do not hold: a sample of held-out-only
    # family names (Estonian, Lithuanian, Slovene, Turkish) must be absent.
    lexicon = json.loads((PII_NER_MODEL_DIR / LEXICON_FILE).read_text(encoding="utf-8"))
    names = set(lexicon["first_names"]) | set(lexicon["last_names"])
    assert not {"aavik", "kazlauskas", "petrauskas", "krajnc", "zupancic", "yorulmaz"} & names
