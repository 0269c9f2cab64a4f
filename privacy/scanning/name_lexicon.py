"""The lexical second opinion on the NER model's entities: is this span a name at all?

idgraph's NER model (``models/pii_ner``) sees the *shape* of words, not the words: an unseen
capitalised phrase ("Golden Lagoon Picks", "Rain Shell Jacket") looks to it exactly like an
unseen name, and on clean marketing values it raised a false alarm on four values in five.
This module reads the word lists shipped in the pinned model directory (``lexicon.json``, built
by ``tools/pii_model/lexicon.py`` from the training locales' Faker name lists, common-word and
stop-word lists, legal forms and street types) and reviews every entity the model proposes:

* a ``PERSON`` needs a name signal: a known first or family name that is not also an ordinary
  word, or two or more capitalised words none of which is an ordinary word (a name from a
  language the lists do not cover). A span holding an ordinary word ("Dusty Rose"), a digit,
  only initials, or a single unknown word ("Kraftwerk") is dropped; one holding a legal form
  ("Solberg ASA") is an ``ORGANIZATION``; one holding a street type and no name is dropped.
* an ``ORGANIZATION`` or ``LOCATION`` made of ordinary words only ("Survey answer",
  "Beginners") is dropped, unless it is a listed place ("Senegal"); one of two or more name-like
  words that opens with a known first name or holds a known name that is no ordinary word
  ("Ryan Anderson Wood", "Matea Golubić") is a ``PERSON``: the model's commonest confusion.
* lists ("Stancu, Luca and Natașa Popa") are split at commas and conjunctions first.
* lower-case words at the edges of a capitalised span ("Klemen left", "c/o Danilo") are trimmed.

It also finds names the model missed: a capitalised known first name followed by one or two
name-like words ("Hilde Sivertsen"), or a known family name, a comma and a first name ("BARNES,
SAM").

Every entity gets a score that says how strong its signal is (:data:`SCORE_NAME` for a listed
name, :data:`SCORE_SHAPE` for capitalised unknown words only), so a deployment trades recall for
precision per type with the scanner's thresholds. Pure Python (no spaCy, no presidio): the
scanner passes token texts and gets token ranges back.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LEXICON_FILE",
    "SCORE_MODEL",
    "SCORE_NAME",
    "SCORE_SHAPE",
    "NameLexicon",
    "Reading",
    "fold",
]

LEXICON_FILE = "lexicon.json"
# Scores of a reviewed entity: the model's entity with a listed name (or a non-person entity the
# lists do not contradict); a name found by the lists alone, beside or after the model; a person
# read from the shape of capitalised unknown words only (names of languages the lists lack).
SCORE_MODEL = 0.85
SCORE_NAME = 0.75
SCORE_SHAPE = 0.65

_LETTERS = re.compile(r"[^\W\d_]")
_INITIAL = re.compile(r"^[^\W\d_]\.?$")
_DIGIT = re.compile(r"\d")
# Words that separate the names of a list ("A, B and C"); "&" is not one: it joins a company.
_SEPARATORS = frozenset(
    {",", ";", ":", "/", "and", "und", "et", "og", "och", "y", "en", "or", "oder"}
)
# Titles and name particles: neither a name nor an ordinary word inside a name.
_NEUTRAL = frozenset(
    {
        "mr", "mrs", "ms", "miss", "dr", "prof", "herr", "frau", "m", "mme", "mlle", "sir", "dame",
        "van", "von", "der", "den", "de", "di", "da", "del", "della", "du", "le", "la", "ter",
        "dos", "das", "do", "zu", "af", "al", "bin", "ben", "mc", "mac", "st", "cev", "sig", "sr",
        "jr", "ing", "mgr", "bc", "sra", "sig.ra",
    }
)  # fmt: skip
_ORG_SIGNS = frozenset({"&"})


def fold(word: str) -> str:
    """Case-fold and drop diacritics: "Gelencsér", "GELENCSER" and "gelencser" are one word."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).strip(".")


@dataclass(frozen=True)
class Reading:
    """An entity over tokens ``start``..``end`` (end exclusive) of the text, with its score."""

    label: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class _Token:
    index: int
    text: str
    kind: str  # digit, initial, org, street, name, weak, common, neutral, unknown, punct
    capitalised: bool


class NameLexicon:
    """The word lists of ``lexicon.json`` and the review of NER entities against them."""

    def __init__(
        self,
        first_names: frozenset[str],
        last_names: frozenset[str],
        common_words: frozenset[str],
        org_words: frozenset[str],
        street_words: frozenset[str],
        places: frozenset[str],
    ) -> None:
        self._first = first_names
        self._names = first_names | last_names
        self._common = common_words
        self._org = org_words
        self._street = street_words
        self._places = places

    @classmethod
    def load(cls, model_dir: Path) -> NameLexicon:
        """Read ``lexicon.json`` from ``model_dir`` (a file covered by the model fingerprint).

        Raises ``OSError`` if it is missing and ``ValueError`` if it is not the expected JSON.
        """
        lists = json.loads((model_dir / LEXICON_FILE).read_text(encoding="utf-8"))
        if not isinstance(lists, dict):
            raise ValueError(f"{LEXICON_FILE} is not an object")  # noqa: TRY004 - a format error
        try:
            return cls(
                *(
                    frozenset(str(w) for w in lists[key])
                    for key in (
                        "first_names",
                        "last_names",
                        "common_words",
                        "org_words",
                        "street_words",
                        "places",
                    )
                )
            )
        except KeyError as error:
            raise ValueError(f"{LEXICON_FILE} lacks the list {error}") from error

    # -- token classes -------------------------------------------------------------------------

    def _kind(self, text: str) -> str:  # noqa: PLR0911 - one return per token class
        if not _LETTERS.search(text):
            return "digit" if _DIGIT.search(text) else "punct"
        if _DIGIT.search(text):
            return "digit"
        if text in _ORG_SIGNS:
            return "org"
        if _INITIAL.match(text):
            return "initial"
        word = fold(text)
        if word in _NEUTRAL:
            return "neutral"
        if word in self._org and (text[:1].isupper() or len(word) > 3):
            # "AG", "AS", "SA" are legal forms when written as such, words otherwise.
            return "org"
        if word in self._street:
            return "street"
        parts = [p for p in re.split("[-'\u2019]", word) if p] or [word]
        if any(p in self._names for p in parts):
            # A name that is also an ordinary word ("Rose", "White", "Will") is weaker evidence.
            return "weak" if word in self._common else "name"
        if word in self._common or any(p in self._common for p in parts):
            return "common"
        return "unknown"

    def _tokens(self, texts: Sequence[str], offset: int = 0) -> list[_Token]:
        out = []
        for i, text in enumerate(texts):
            kind = "punct" if text in _SEPARATORS and not text[:1].isupper() else self._kind(text)
            capitalised = text[:1].isupper()
            out.append(_Token(offset + i, text, kind, capitalised))
        return out

    def _is_first(self, token: _Token) -> bool:
        return token.kind in ("name", "weak") and fold(token.text) in self._first

    # -- review of the model's entities --------------------------------------------------------

    def review(self, label: str, texts: Sequence[str], offset: int = 0) -> list[Reading]:
        """The readings of an entity ``label`` over the token ``texts`` (at token ``offset``).

        Empty when the lists say it is no entity; more than one when it was a list of names.
        """
        tokens = self._tokens(texts, offset)
        if label == "STREET_ADDRESS":
            return self._review_street(tokens)
        if label == "PERSON" and any(t.kind == "digit" for t in tokens):
            if any(t.kind == "street" for t in tokens):
                # "Alekseev Squares Flat 40": a street with a number, read as a name.
                return self._review_street(tokens)
            # A name runs up to the first number ("Jane G.;53559 John Port"); a phrase with a
            # code in it ("Coupon SPRING20 applied") has nothing name-like before it.
            first_digit = next(i for i, t in enumerate(tokens) if t.kind == "digit")
            tokens = tokens[:first_digit]
        if label == "LOCATION" and fold(" ".join(t.text for t in _trim(tokens))) in self._places:
            part = _trim(tokens)
            return [Reading(label, part[0].index, part[-1].index + 1, SCORE_MODEL)]
        if label in ("PERSON", "ORGANIZATION", "LOCATION") and any(t.kind == "org" for t in tokens):
            # A legal form or "&": the whole span is one company, not a list to split.
            part = _trim(tokens)
            return (
                [Reading("ORGANIZATION", part[0].index, part[-1].index + 1, SCORE_MODEL)]
                if (part)
                else []
            )
        part = _trim(tokens)
        if len(part) == 3 and part[1].text == "," and self._is_first(part[2]):
            # "Peterson, Steven": a name written family name first, whatever the model said.
            reading = self._review_part("PERSON", part)
            return [reading] if reading else []
        readings = []
        for part in _split(tokens, keep_inverted=label == "PERSON"):
            reading = self._review_part(label, _trim(part))
            if reading is not None:
                readings.append(reading)
        return readings

    def _review_part(self, label: str, part: list[_Token]) -> Reading | None:
        if not part:
            return None
        start, end = part[0].index, part[-1].index + 1
        words = [t for t in part if t.kind not in ("punct", "initial", "neutral")]
        if not words:
            return None
        if label == "PERSON":
            score = self._person_score(words, sum(t.kind == "initial" for t in part))
            return Reading("PERSON", start, end, score) if score else None
        # ORGANIZATION, LOCATION: a first name opening name-like words is the model's commonest
        # confusion; ordinary words alone are a phrase, not a place or a company.
        if (
            len(words) >= 2
            and self._person_score(words)
            and (self._is_first(words[0]) or any(t.kind == "name" for t in words))
        ):
            return Reading("PERSON", start, end, SCORE_NAME)
        if all(t.kind in ("common", "digit") for t in words):
            return None
        return Reading(label, start, end, SCORE_MODEL)

    def _review_street(self, tokens: list[_Token]) -> list[Reading]:
        """A street address needs a street type, or a number beside a word that is not an
        ordinary one ("Vrančovičova 5"); "size 42" is neither."""
        part = _trim(tokens)
        kinds = {t.kind for t in part}
        if "street" in kinds or ("digit" in kinds and kinds & {"name", "weak", "unknown"}):
            return [Reading("STREET_ADDRESS", part[0].index, part[-1].index + 1, SCORE_MODEL)]
        return []

    def _person_score(  # noqa: PLR0911 - one return per kind of evidence
        self, words: list[_Token], initials: int = 0
    ) -> float:
        kinds = [t.kind for t in words]
        if any(k in ("digit", "org", "street") for k in kinds):
            return 0.0
        common = kinds.count("common")
        if common:
            # One ordinary word is tolerated beside two other name-like tokens of which one is
            # a listed name or an initial ("Bjørn T. Halvorsen": "bjørn" is a word too); more,
            # or less support, is a phrase ("Great Chelsea Boots", "Dusty Rose").
            support = len(words) - common + initials
            named = initials or any(k in ("name", "weak") for k in kinds)
            capitalised = all(t.capitalised for t in words)
            return SCORE_SHAPE if common == 1 and support >= 2 and named and capitalised else 0.0
        if "name" in kinds:
            return SCORE_MODEL
        if initials and all(t.capitalised for t in words):
            return SCORE_NAME  # "J. Sprenger", "Eve V.", "I. E. Oprea"
        if len(words) < 2:
            # A listed first name alone that is also a word ("José", "Will"): the model's word,
            # weakly; one unknown or ambiguous word ("Kraftwerk", "English") is not enough.
            first = words[0]
            return SCORE_SHAPE if first.capitalised and self._is_first(first) else 0.0
        if "weak" in kinds:
            return SCORE_NAME  # "Grace Brown": every word a name, though also a word
        if all(t.capitalised for t in words):
            return SCORE_SHAPE  # capitalised words no list knows: a name of another language
        return 0.0

    # -- names the model missed ----------------------------------------------------------------

    def find_names(self, texts: Sequence[str], taken: Sequence[bool]) -> list[Reading]:
        """Names in the token ``texts`` outside the ``taken`` tokens (the kept entities).

        A capitalised listed first name followed by one or two capitalised or initial tokens,
        none an ordinary word ("Hilde Sivertsen", "HANA N CAGALJ"), or a listed family name,
        a comma and a listed first name ("BARNES, SAM").
        """
        tokens = self._tokens(texts)
        out: list[Reading] = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if taken[i] or not token.capitalised or token.kind != "name":
                i += 1
                continue
            end = i + 1
            while (
                end < len(tokens)
                and end - i < 4
                and not taken[end]
                and tokens[end].capitalised
                and tokens[end].kind in ("name", "weak", "unknown", "initial")
            ):
                end += 1
            comma_first = (
                end == i + 1
                and i + 2 < len(tokens)
                and tokens[i + 1].text == ","
                and not taken[i + 2]
                and tokens[i + 2].capitalised
                and tokens[i + 2].kind == "name"
                and fold(tokens[i + 2].text) in self._first
            )
            if comma_first:
                out.append(Reading("PERSON", i, i + 3, SCORE_NAME))
                i += 3
            elif end > i + 1 and self._is_first(token):
                while tokens[end - 1].kind == "initial" and end - 1 > i + 1:
                    end -= 1
                out.append(Reading("PERSON", i, end, SCORE_NAME))
                i = end
            else:
                i += 1
        return out


def _split(tokens: list[_Token], *, keep_inverted: bool) -> list[list[_Token]]:
    """Split a span at list separators ("A, B and C"); with ``keep_inverted`` a name written
    "Last, First" (one word, a comma, one word) stays one."""
    if not any(t.kind == "punct" and fold(t.text) in _SEPARATORS for t in tokens):
        return [tokens]
    if keep_inverted and len(tokens) == 3 and tokens[1].text == ",":
        return [tokens]
    parts: list[list[_Token]] = [[]]
    for token in tokens:
        if token.kind == "punct" and fold(token.text) in _SEPARATORS:
            parts.append([])
        else:
            parts[-1].append(token)
    return [p for p in parts if p]


def _trim(tokens: list[_Token]) -> list[_Token]:
    """Drop punctuation at the edges, and lower-case words at the edges of a capitalised span."""
    capitalised = any(t.capitalised and t.kind != "initial" for t in tokens)
    start, end = 0, len(tokens)

    def loose(token: _Token) -> bool:
        if token.kind == "punct":
            return True
        return capitalised and not token.capitalised and token.kind not in ("org", "digit")

    while start < end and loose(tokens[start]):
        start += 1
    while end > start and loose(tokens[end - 1]):
        end -= 1
    return tokens[start:end]
