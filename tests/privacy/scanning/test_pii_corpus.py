"""The synthetic corpora of the PII NER model: seeded, labelled right, and kept apart.

The held-out and marketing sets of ``bench/pii_quality.py`` only measure something if they
share no locale, template or distractor list with the training corpus (``tools/pii_model``).
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.pii_heldout import (
    HELDOUT_TEMPLATES,
    MARKETING_TEMPLATES,
    MARKETING_WORDS,
    generate_marketing,
)
from bench.pii_heldout import generate as generate_heldout
from privacy.scanning.name_lexicon import LEXICON_FILE
from privacy.scanning.presidio_scanner import PII_NER_MODEL_DIR
from tools.pii_model.corpus import TRAIN_TEMPLATES, generate
from tools.pii_model.lexicon import write_lexicon
from tools.pii_model.values import (
    HELDOUT_LOCALES,
    HELDOUT_NOT_PII,
    TRAIN_LOCALES,
    TRAIN_NOT_PII,
    TRAIN_PHRASE_HEADS,
    TRAIN_PHRASE_TAILS,
)


def test_training_corpus_is_the_same_when_generated_twice_with_one_seed() -> None:
    assert generate(60, 5) == generate(60, 5)
    assert generate(60, 5) != generate(60, 6)


def test_training_spans_cover_whole_values_when_templates_are_filled() -> None:
    for text, spans in generate(200, 9):
        for start, end, label in spans:
            value = text[start:end]
            assert value == value.strip(), (text, label)
            assert value, (text, label)
            # A span never starts or ends inside a word of the sentence around it.
            assert start == 0 or not text[start - 1].isalnum(), (text, value)
            assert end == len(text) or not text[end].isalnum() or text[end] == "s", (text, value)


def test_training_corpus_holds_names_in_lower_and_upper_case_and_clean_sentences() -> None:
    rows = generate(600, 11)
    names = [text[s:e] for text, spans in rows for s, e, label in spans if label == "PERSON"]
    assert any(n.islower() for n in names)
    assert any(n.isupper() and len(n) > 3 for n in names)
    assert any(re.search(r"\b[A-Z]\.? [A-Z]", n) for n in names)  # initials
    assert sum(1 for _, spans in rows if not spans) > len(rows) // 5  # negatives


def test_held_out_and_marketing_sets_share_nothing_with_training_when_generated() -> None:
    assert not set(TRAIN_LOCALES) & set(HELDOUT_LOCALES)
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)
    assert not set(TRAIN_TEMPLATES) & set(MARKETING_TEMPLATES)
    assert not set(TRAIN_NOT_PII) & set(HELDOUT_NOT_PII)
    trained_words = {w for phrase in TRAIN_NOT_PII for w in phrase.split()}
    trained_words |= set(TRAIN_PHRASE_HEADS) | set(TRAIN_PHRASE_TAILS)
    for slot in ("HEAD", "TAIL", "BAND", "SECTION"):
        assert not set(MARKETING_WORDS[slot]) & trained_words, slot
    assert generate_heldout(30, 7) == generate_heldout(30, 7)
    marketing = generate_marketing(50, 7)
    assert marketing == generate_marketing(50, 7)
    assert all("{" not in value for value in marketing)


def test_shipped_word_lists_are_what_the_lexicon_builder_writes(tmp_path: Path) -> None:
    # The word lists are part of the pinned model: `make pii-model` must rebuild them exactly.
    built = write_lexicon(tmp_path)
    assert built.read_bytes() == (PII_NER_MODEL_DIR / LEXICON_FILE).read_bytes()
