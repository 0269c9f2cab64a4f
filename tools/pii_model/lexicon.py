"""The word lists the PII scanner reads beside its NER model (``lexicon.json`` in the model dir).

    .venv/bin/python -m tools.pii_model.lexicon [--out privacy/scanning/models/pii_ner]

A model that sees only the shape of words cannot tell "Golden Lagoon Picks" from "Gyöngyi
Lakatos": both are capitalised words it never saw. These lists give the scanner the missing
lexical signal (see :mod:`privacy.scanning.name_lexicon` for how it is used):

* ``first_names`` and ``last_names``: every given and family name in Faker's person providers
  of the **training** locales (``tools.pii_model.values.TRAIN_LOCALES``). Never the held-out
  locales: the held-out bench set measures names the scanner has no list for.
* ``common_words``: ordinary words of the languages the scanner reads: the most frequent words
  of English (30,000) and of German, French, Spanish, Italian and Dutch (10,000 each) from
  wordfreq's bundled frequency lists, Faker's lorem word lists, job-title and colour words, and
  spaCy's stop-word lists. A span holding such a word that is no listed name is a phrase, not a
  name. Frequent names are in these lists too ("John", "Maria"): the scanner reads a word that
  is both as weaker evidence, never as a phrase.
* ``org_words``: legal forms and company words (Faker's company suffixes and the training
  corpus's legal forms): a span holding one is an organisation, not a person.
* ``places``: countries, states, regions and cities named in Faker's address providers of the
  training locales (whole names, folded): a ``LOCATION`` that is one of them is kept even when
  its words are ordinary ones ("Senegal", "New Jersey").
* ``street_words``: street types (Faker's street suffixes and a short list): a span holding one
  is an address or a place, not a person.

Every entry is folded the way the scanner folds tokens (case-folded, diacritics dropped), so
"Gelencsér", "GELENCSER" and "gelencser" are one entry. Output is sorted JSON: the same Faker
and spaCy versions give the same file, hence the same model fingerprint. Built at training time
(``make pii-model`` calls :func:`write_lexicon`); Faker is a development dependency only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import wordfreq
from faker import Faker

from privacy.scanning.name_lexicon import LEXICON_FILE, fold
from tools.pii_model.values import LEGAL_FORMS, TRAIN_LOCALES

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "privacy" / "scanning" / "models" / "pii_ner"

# Faker locales whose lorem provider holds a real word list of a language the scanner reads.
# (Not Danish, Polish or Czech: their lists hold words that are common given names there,
# "Bjørn" is "bear", and marketing values are rarely written in them.)
WORD_LOCALES = ("en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "de_AT", "nl_BE", "es_MX")
# wordfreq languages and how many of their most frequent words count as ordinary words: English
# deeper, since marketing values are mostly English ("Stripes", "Espresso", "Beginners").
FREQUENT_WORDS = {
    "en": 30_000,
    "de": 10_000,
    "fr": 10_000,
    "es": 10_000,
    "it": 10_000,
    "nl": 10_000,
}
# spaCy languages whose stop-word list is read (function words: "the", "und", "avec", ...).
STOP_WORD_LANGUAGES = (
    "en", "de", "fr", "es", "it", "nl", "pt", "sv", "da", "pl", "cs", "fi", "hu", "lv", "ga",
)  # fmt: skip
# Street types Faker's street suffix lists miss, in the languages the scanner reads.
EXTRA_STREET_WORDS = (
    "street", "st", "road", "rd", "avenue", "ave", "lane", "drive", "boulevard", "blvd", "way",
    "place", "square", "court", "terrace", "close", "crescent", "quay", "parade", "strasse",
    "straße", "str", "weg", "allee", "platz", "gasse", "ring", "rue", "avenue", "chemin",
    "impasse", "allée", "calle", "avenida", "via", "viale", "piazza", "straat", "laan", "plein",
    "ulica", "ul", "utca", "tér", "katu", "tie", "gatan", "vej", "gade", "apt", "suite", "unit",
    "flat", "floor",
)  # fmt: skip
_WORD = re.compile("[^\\W\\d_]+(?:['\u2019-][^\\W\\d_]+)*")


def _words(values: Iterable[object]) -> set[str]:
    out: set[str] = set()
    for value in values:
        out.update(fold(w) for w in _WORD.findall(str(value)))
    return out


def _attr_values(provider: object, names: Iterable[str]) -> list[object]:
    out: list[object] = []
    for name in names:
        value = getattr(provider, name, None)
        if isinstance(value, dict):
            out.extend(value.keys())
        elif isinstance(value, (list, tuple)):
            # A few providers list (code, name) pairs; the name is the last item.
            out.extend(v[-1] if isinstance(v, tuple) and v else v for v in value)
    return out


def build_lexicon() -> dict[str, list[str]]:  # noqa: PLR0912 - one branch per provider kind
    """The six folded word lists, each sorted."""
    first: set[str] = set()
    last: set[str] = set()
    common: set[str] = set()
    org: set[str] = set()
    street: set[str] = {fold(w) for w in EXTRA_STREET_WORDS}
    places: set[str] = set()
    for locale in TRAIN_LOCALES:
        for provider in Faker(locale).get_providers():
            module = type(provider).__module__
            if ".person." in module:
                first |= _words(
                    _attr_values(
                        provider,
                        (
                            "first_names",
                            "first_names_male",
                            "first_names_female",
                            "first_names_nonbinary",
                        ),
                    )
                )
                last |= _words(
                    _attr_values(provider, ("last_names", "last_names_male", "last_names_female"))
                )
            elif ".company." in module:
                org |= _words(_attr_values(provider, ("company_suffixes",)))
            elif ".address." in module:
                street |= _words(_attr_values(provider, ("street_suffixes", "street_prefixes")))
            elif ".job." in module or ".color." in module:
                common |= _words(_attr_values(provider, ("jobs", "all_colors")))
    for locale in WORD_LOCALES:
        for provider in Faker(locale).get_providers():
            if ".lorem." in type(provider).__module__:
                common |= _words(_attr_values(provider, ("word_list",)))
    for language, count in FREQUENT_WORDS.items():
        common |= _words(wordfreq.top_n_list(language, count))
    stop: set[str] = set()
    for language in STOP_WORD_LANGUAGES:
        stop_words = importlib.import_module(f"spacy.lang.{language}.stop_words").STOP_WORDS
        stop |= {fold(w) for w in stop_words}
    common |= stop
    # "and Sons" is a company suffix, but "and" is no sign of a company by itself; the legal
    # forms stay even where they spell a short word ("AG", "AS", "SA": the scanner reads them as
    # a legal form only when capitalised).
    org = (org - stop) | _words(LEGAL_FORMS)
    for locale in TRAIN_LOCALES:
        fake = Faker(locale)
        for provider in fake.get_providers():
            if ".address." in type(provider).__module__:
                places |= {
                    fold(str(v))
                    for v in _attr_values(
                        provider,
                        (
                            "countries",
                            "states",
                            "regions",
                            "provinces",
                            "cities",
                            "real_city_names",
                            "administrative_units",
                            "departments",
                            "cantons",
                            "counties",
                        ),
                    )
                }
    # One-letter "words" (initials) and the names themselves are judged by the scanner; a word
    # list that held "a" or "i" would hide initials.
    common = {w for w in common if len(w) > 1}
    return {
        "first_names": sorted(first),
        "last_names": sorted(last),
        "common_words": sorted(common),
        "org_words": sorted(w for w in org if len(w) > 1),
        "street_words": sorted(street),
        "places": sorted(p for p in places if p),
    }


def write_lexicon(model_dir: Path) -> Path:
    """Write ``lexicon.json`` into ``model_dir``; return its path."""
    path = model_dir / LEXICON_FILE
    text = json.dumps(build_lexicon(), ensure_ascii=False, indent=0, sort_keys=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def main() -> None:
    """Write the lexicon beside an existing model (``make pii-model`` also does it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    args = parser.parse_args()
    path = write_lexicon(args.out)
    lists = json.loads(path.read_text(encoding="utf-8"))
    print(path, {name: len(words) for name, words in lists.items()})


if __name__ == "__main__":
    main()
