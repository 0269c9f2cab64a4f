"""PII-scanner quality and cost on two deterministic, labelled, synthetic sets.

Usage (from the repository root)::

    .venv/bin/python bench/pii_quality.py                    # 600 sentences per set, seed 7
    .venv/bin/python bench/pii_quality.py --sample 60 --json /tmp/pii.json

Two sets, each scored with the NER model on and off (patterns only, the scanner before the
model), in the same run:

* **project set** (this file): names from inline lists, e-mail addresses from them, phone
  numbers that libphonenumber accepts as valid, IBANs with correct check digits, street addresses
  of DE/FR/UK/US with postcodes, in EN/DE/FR templates, some with the context a form or a letter
  gives (``Name:``, ``Dear``, ``Tel.``), some bare; about a fifth hold no personal data at all but
  look like marketing data. It labels no LOCATION or ORGANIZATION, so findings of those types
  are left out of its score.
* **held-out set** (``bench/pii_heldout.py``): Faker values of locales the NER model was never
  trained on, in templates written apart from the training templates, labelled PERSON, LOCATION,
  ORGANIZATION, STREET_ADDRESS, EMAIL_ADDRESS, PHONE_NUMBER, IBAN_CODE, CREDIT_CARD. No public
  PII evaluation set is used anywhere (an outside set is kept aside for acceptance).

Scoring: a gold span is *found* when a predicted span of the same class overlaps it; a predicted
span is *correct* when it overlaps a gold span of its class. Precision = correct predictions /
predictions, recall = found gold spans / gold spans, F2 weighs recall four times as much as
precision (a missed value is a leak; a false alarm is a redaction too many). Predicted types
outside a set's classes (EU_VAT_ID, ...) are false positives in "overall". ``any`` ignores
types: a gold span found by any finding, a finding overlapping any gold span.

Cost: ``scan_many`` over the project set in µs per value, beside the patterns-only scanner and
a one-regex baseline (ratios); ``scan`` latency per distinct value (p50/p95, ms) over both
sets; construction time and the RSS the model adds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "STREET_ADDRESS")
HELDOUT_CLASSES = (
    "PERSON", "LOCATION", "ORGANIZATION", "STREET_ADDRESS", "EMAIL_ADDRESS", "PHONE_NUMBER",
    "IBAN_CODE", "CREDIT_CARD",
)  # fmt: skip
# Entity types the shipped policy allows in the behavioural and interests categories.
MARKETING_ALLOWED = frozenset({"LOCATION", "ORGANIZATION"})
EMAIL_BASELINE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")

FIRST_NAMES = {
    "en": ["James", "Emma", "Oliver", "Sophie", "Harry", "Charlotte", "George", "Amelia",
           "Thomas", "Olivia", "Daniel", "Grace", "Michael", "Jessica", "William", "Hannah"],
    "de": ["Lukas", "Anna-Lena", "Jürgen", "Sabine", "Maximilian", "Katharina", "Felix",
           "Ursula", "Jonas", "Leonie", "Stefan", "Birgit", "Matthias", "Jana", "Tobias", "Heike"],
    "fr": ["Pierre", "Élodie", "François", "Chloé", "Julien", "Camille", "Mathieu", "Léa",
           "Nicolas", "Manon", "Sébastien", "Inès", "Antoine", "Margaux", "Hugo", "Aurélie"],
}  # fmt: skip
LAST_NAMES = {
    "en": ["Smith", "Johnson", "Taylor", "Brown", "Wilson", "Davies", "Evans", "Thompson",
           "O'Brien", "Walker", "Wright", "Robinson", "Hughes", "Edwards", "Clarke", "Turner"],
    "de": ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
           "Schulz", "Hoffmann", "Schröder", "Koch", "Richter", "Klein", "Wolf", "Neumann"],
    "fr": ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit", "Durand", "Leroy",
           "Moreau", "Lefèvre", "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine"],
}  # fmt: skip
TITLES = {"en": ["Mr", "Mrs", "Ms", "Dr"], "de": ["Herr", "Frau", "Dr."], "fr": ["M.", "Mme"]}
EMAIL_DOMAINS = ["gmail.com", "web.de", "gmx.de", "t-online.de", "orange.fr", "free.fr",
                 "outlook.com", "yahoo.fr", "btinternet.com", "example.co.uk"]  # fmt: skip

DE_STREET_STEMS = ["Haupt", "Bahnhof", "Goethe", "Schiller", "Linden", "Berg", "Garten",
                   "Kirch", "Mozart", "Rosen", "Wald", "Schul"]  # fmt: skip
DE_SUFFIXES = ["straße", "str.", "weg", "allee", "platz", "gasse", "ring"]
DE_ADJ_STREETS = ["Berliner Straße", "Frankfurter Allee", "Kölner Straße", "Alte Landstraße"]
DE_CITIES = [("10115", "Berlin"), ("80331", "München"), ("50667", "Köln"), ("20095", "Hamburg"),
             ("60311", "Frankfurt am Main"), ("04109", "Leipzig")]  # fmt: skip
FR_STREETS = ["rue de la Paix", "avenue Victor Hugo", "boulevard Saint-Michel",
              "rue du Faubourg Saint-Antoine", "place de la République", "rue des Lilas",
              "avenue de la Liberté", "chemin des Vignes", "rue Nationale",
              "allée des Tilleuls"]  # fmt: skip
FR_CITIES = [("75002", "Paris"), ("69001", "Lyon"), ("13001", "Marseille"),
             ("31000", "Toulouse"), ("33000", "Bordeaux"), ("59000", "Lille")]  # fmt: skip
UK_STREETS = ["Baker Street", "High Street", "Church Road", "Station Road", "Victoria Avenue",
              "Mill Lane", "Park Road", "Queens Drive", "King Street", "Elm Grove"]  # fmt: skip
UK_CITIES = [("London", "NW1 6XE"), ("Manchester", "M1 1AE"), ("Leeds", "LS1 4AP"),
             ("Bristol", "BS1 5TR"), ("Glasgow", "G2 1DY"), ("Oxford", "OX1 2JD")]  # fmt: skip
US_STREETS = ["Main Street", "Oak Avenue", "Maple Drive", "Sunset Boulevard", "Elm Street",
              "Lake Shore Drive", "Pine Road", "Washington Avenue"]  # fmt: skip
US_CITIES = [("Springfield", "IL 62704"), ("Austin", "TX 73301"), ("Denver", "CO 80202"),
             ("Portland", "OR 97201"), ("Boston", "MA 02108")]  # fmt: skip

# Phone shapes per region: (region, national prefix choices, digits to add after the prefix).
PHONE_SHAPES = [
    ("DE", ["151", "160", "171", "176", "30", "89", "40", "221"], 8),
    ("FR", ["6", "7", "1", "4"], 8),
    ("GB", ["7911", "7400", "20 7946", "161"], 6),
    ("NL", ["6", "20"], 8),
    ("ES", ["612", "655", "91"], 6),
    ("IT", ["347", "333", "06"], 7),
    ("US", ["212", "415", "312", "646"], 7),
]

# Sentences with placeholders: {NAME} {EMAIL} {PHONE} {IBAN} {ADDRESS} {CITY}. {CITY} is coarse
# location, not personal data, and must not be found.
TEMPLATES = {
    "en": [
        "Dear {NAME}, thank you for subscribing to our newsletter.",
        "Please contact {TITLE} {NAME} at {EMAIL} about the order.",
        "My name is {NAME} and my email is {EMAIL}.",
        "Name: {NAME}, phone: {PHONE}",
        "Call me on {PHONE} after 6pm.",
        "Customer email: {EMAIL}",
        "Reply to {EMAIL} or call {PHONE}.",
        "Refund to IBAN {IBAN}, please.",
        "Bank details: {IBAN} (account holder {TITLE} {NAME})",
        "Ship to {ADDRESS}.",
        "Billing address: {ADDRESS}",
        "{NAME} lives at {ADDRESS} and can be reached on {PHONE}.",
        "Kind regards,\n{NAME}",
        "{NAME} signed up from {CITY} last week.",
        "Contact: {NAME} <{EMAIL}>",
        "The parcel for {TITLE} {NAME} goes to {ADDRESS}; tel. {PHONE}",
        "Mobile {PHONE}, email {EMAIL}",
        "Please debit {IBAN} monthly.",
    ],
    "de": [
        "Sehr geehrte {TITLE} {NAME}, vielen Dank für Ihre Bestellung.",
        "Hallo {NAME}, dein Warenkorb wartet auf dich.",
        "Mein Name ist {NAME}, erreichbar unter {PHONE}.",
        "Lieferadresse: {ADDRESS}",
        "Bitte senden Sie die Rechnung an {EMAIL}.",
        "Kunde {NAME} wohnt in der {ADDRESS}.",
        "Telefon: {PHONE}",
        "Die Erstattung geht auf das Konto {IBAN}.",
        "Bankverbindung: IBAN {IBAN}, Kontoinhaber {NAME}",
        "E-Mail {EMAIL}, Handy {PHONE}",
        "Viele Grüße\n{NAME}",
        "{NAME} hat den Newsletter in {CITY} abonniert.",
        "Rückruf bitte unter {PHONE} an {TITLE} {NAME}.",
        "Anschrift: {ADDRESS}; Mail: {EMAIL}",
    ],
    "fr": [
        "Bonjour {NAME}, votre commande est expédiée.",
        "Je m'appelle {NAME}, mon numéro est le {PHONE}.",
        "Adresse de livraison : {ADDRESS}",
        "Merci d'écrire à {EMAIL}.",
        "{TITLE} {NAME} habite au {ADDRESS}.",
        "Téléphone : {PHONE}",
        "Virement sur le compte {IBAN}.",
        "Nom : {NAME}, e-mail : {EMAIL}",
        "Cordialement,\n{NAME}",
        "{NAME} a visité la boutique de {CITY}.",
        "Contactez {TITLE} {NAME} au {PHONE} ou par mail {EMAIL}.",
        "RIB : {IBAN}, adresse {ADDRESS}",
    ],
}
CLEAN = [
    "visited the shoes category 3 times",
    "age band 25-34",
    "Berlin",
    "Black Friday Sale: 30% off all Nike Air Max 90",
    "Newsletter opened on 2026-03-01 at 09:15",
    "order #48213 shipped, 2 items, total €129.99",
    "Warenkorb mit 3 Artikeln abgebrochen",
    "Neue Schuhe im Sale angesehen",
    "Lieblingskategorie: Sport & Outdoor",
    "a cliqué sur la newsletter du 12/03",
    "Panier abandonné : 2 articles, 59,90 €",
    "Interested in Running, Yoga and Cycling",
    "Loyalty tier Gold since 2021",
    "Region: Île-de-France, Country: FR",
    "Stadt München, Bundesland Bayern",
    "viewed product SKU 884512 twice",
    "Platz 3 im Ranking der Bestseller",
    "Campaign SUMMER25 clicked from Instagram",
    "Preferred store: Hamburg Mitte",
    "Session length 312 seconds, 14 page views",
    "Lieferung nach Frankfurt am Main gewünscht",
    "Top brands: Adidas Originals, New Balance, Puma",
    "Abonnement Premium Plus, renouvellement le 01/09",
    "Coupon WELCOME10 redeemed on the app",
]


@dataclass(frozen=True)
class Sample:
    """One sentence and its gold spans ``(class, start, end)``."""

    text: str
    gold: tuple[tuple[str, int, int], ...]
    language: str


@dataclass
class Tally:
    """Counts for one class."""

    gold: int = 0
    found: int = 0
    predicted: int = 0
    correct: int = 0

    def precision(self) -> float:
        """Correct predictions / predictions (1.0 when nothing was predicted)."""
        return self.correct / self.predicted if self.predicted else 1.0

    def recall(self) -> float:
        """Found gold spans / gold spans (1.0 when there was nothing to find)."""
        return self.found / self.gold if self.gold else 1.0

    def f2(self) -> float:
        """F-beta with beta = 2."""
        p, r = self.precision(), self.recall()
        return 5 * p * r / (4 * p + r) if p + r else 0.0


@dataclass
class Generator:
    """Deterministic values and sentences for one seed."""

    rng: random.Random
    _fillers: dict[str, Callable[[str], tuple[str, str | None]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._fillers = {
            "NAME": lambda lang: (self.name(lang), "PERSON"),
            "TITLE": lambda lang: (self.rng.choice(TITLES[lang]), None),
            "EMAIL": lambda lang: (self.email(lang), "EMAIL_ADDRESS"),
            "PHONE": lambda lang: (self.phone(lang), "PHONE_NUMBER"),
            "IBAN": lambda lang: (self.iban(lang), "IBAN_CODE"),
            "ADDRESS": lambda lang: (self.address(lang), "STREET_ADDRESS"),
            "CITY": lambda lang: (self.city(lang), None),
        }

    def name(self, lang: str) -> str:
        """A first and last name, sometimes last name only (after a title)."""
        return f"{self.rng.choice(FIRST_NAMES[lang])} {self.rng.choice(LAST_NAMES[lang])}"

    def email(self, lang: str) -> str:
        """``first.last@domain`` in ASCII, sometimes with a digit suffix."""
        first = _ascii(self.rng.choice(FIRST_NAMES[lang])).lower()
        last = _ascii(self.rng.choice(LAST_NAMES[lang])).lower().replace("'", "")
        suffix = str(self.rng.randint(1, 99)) if self.rng.random() < 0.3 else ""
        return f"{first}.{last}{suffix}@{self.rng.choice(EMAIL_DOMAINS)}"

    def phone(self, lang: str) -> str:
        """A number libphonenumber calls valid, national or international format."""
        preferred = {"en": ("GB", "US"), "de": ("DE", "DE", "NL"), "fr": ("FR", "FR", "ES", "IT")}
        region = self.rng.choice(preferred[lang])
        if self.rng.random() < 0.3:
            region = self.rng.choice(PHONE_SHAPES)[0]
        shape = next(s for s in PHONE_SHAPES if s[0] == region)
        for _ in range(200):
            prefix = self.rng.choice(shape[1]).replace(" ", "")
            rest = "".join(str(self.rng.randint(0, 9)) for _ in range(shape[2]))
            national = prefix + rest
            if region == "US":
                national = prefix + str(self.rng.randint(2, 9)) + rest[1:]
            number = phonenumbers.parse(national, region)
            if phonenumbers.is_valid_number(number):
                style = self.rng.choice(
                    (
                        phonenumbers.PhoneNumberFormat.NATIONAL,
                        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                    )
                )
                return phonenumbers.format_number(number, style)
        raise RuntimeError(f"no valid {region} number generated")

    def iban(self, lang: str) -> str:
        """An IBAN with correct check digits, compact or in groups of four."""
        country = self.rng.choice(
            {"en": ("GB",), "de": ("DE", "NL"), "fr": ("FR", "ES", "IT")}[lang]
        )

        def digits(n: int) -> str:
            return "".join(str(self.rng.randint(0, 9)) for _ in range(n))

        bban = {
            "DE": lambda: digits(18),
            "GB": lambda: self.rng.choice(["NWBK", "BARC", "LOYD", "MIDL"]) + digits(14),
            "NL": lambda: self.rng.choice(["ABNA", "INGB", "RABO"]) + digits(10),
            "FR": lambda: _french_bban(digits(5), digits(5), digits(11)),
            "ES": lambda: digits(20),
            "IT": lambda: self.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + digits(22),
        }[country]()
        iban = country + _iban_check_digits(country, bban) + bban
        if self.rng.random() < 0.5:
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban

    def address(self, lang: str) -> str:
        """A street address; with postcode and city more often than not."""
        rng = self.rng
        with_city = rng.random() < 0.7
        if lang == "de":
            street = (
                rng.choice(DE_ADJ_STREETS)
                if rng.random() < 0.25
                else rng.choice(DE_STREET_STEMS) + rng.choice(DE_SUFFIXES)
            )
            number = f"{rng.randint(1, 180)}{rng.choice(['', '', 'a', 'b'])}"
            postcode, city = rng.choice(DE_CITIES)
            return f"{street} {number}" + (f", {postcode} {city}" if with_city else "")
        if lang == "fr":
            number = f"{rng.randint(1, 120)}{rng.choice(['', '', ' bis'])}"
            postcode, city = rng.choice(FR_CITIES)
            tail = f", {postcode} {city}" if with_city else ""
            return f"{number} {rng.choice(FR_STREETS)}{tail}"
        if rng.random() < 0.5:
            city, postcode = rng.choice(UK_CITIES)
            head = f"{rng.randint(1, 250)}{rng.choice(['', '', 'B'])} {rng.choice(UK_STREETS)}"
            return head + (f", {city} {postcode}" if with_city else "")
        city, state_zip = rng.choice(US_CITIES)
        head = f"{rng.randint(100, 9999)} {rng.choice(US_STREETS)}"
        return head + (f", {city}, {state_zip}" if with_city else "")

    def city(self, lang: str) -> str:
        """A city name alone (coarse location: not to be reported)."""
        return self.rng.choice({"en": UK_CITIES, "de": DE_CITIES, "fr": FR_CITIES}[lang])[
            0 if lang == "en" else 1
        ]

    def sample(self) -> Sample:
        """One sentence: about one in five without personal data."""
        lang = self.rng.choice(("en", "en", "de", "de", "fr"))
        if self.rng.random() < 0.2:
            return Sample(self.rng.choice(CLEAN), (), lang)
        template = self.rng.choice(TEMPLATES[lang])
        parts: list[str] = []
        gold: list[tuple[str, int, int]] = []
        cursor = 0
        length = 0
        for match in re.finditer(r"\{([A-Z]+)\}", template):
            literal = template[cursor : match.start()]
            parts.append(literal)
            length += len(literal)
            value, cls = self._fillers[match.group(1)](lang)
            if cls is not None:
                gold.append((cls, length, length + len(value)))
            parts.append(value)
            length += len(value)
            cursor = match.end()
        parts.append(template[cursor:])
        return Sample("".join(parts), tuple(gold), lang)


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616: 98 - (BBAN + country + "00", letters as 10..35) mod 97."""
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


def _french_bban(bank: str, branch: str, account: str) -> str:
    """French BBAN with a correct RIB key."""
    key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97
    return f"{bank}{branch}{account}{key:02d}"


def generate(count: int, seed: int) -> list[Sample]:
    """``count`` labelled sentences, the same for the same seed."""
    generator = Generator(random.Random(seed))
    return [generator.sample() for _ in range(count)]


def score(
    gold: Sequence[Sequence[tuple[str, int, int]]],
    predictions: Sequence[Sequence[Any]],
    classes: Sequence[str],
    unscored: frozenset[str] = frozenset(),
) -> dict[str, Tally]:
    """Span-overlap scoring per gold class, plus ``other`` and ``any`` (type-blind).

    ``other`` holds predictions of types outside ``classes`` (false positives in "overall");
    predictions of an ``unscored`` type are left out entirely (the set does not label them).
    ``any``: a gold span is found by an overlapping prediction of any type; a prediction is
    correct when it overlaps any gold span.
    """
    tallies = {cls: Tally() for cls in (*classes, "other", "any")}
    known = set(classes)
    for spans, found in zip(gold, predictions, strict=True):
        predicted = [
            (f.entity_type if f.entity_type in known else "other", f.start, f.end)
            for f in found
            if f.entity_type not in unscored
        ]
        for cls, start, end in spans:
            tallies[cls].gold += 1
            tallies["any"].gold += 1
            overlapping = [p for p, s, e in predicted if s < end and start < e]
            tallies[cls].found += cls in overlapping
            tallies["any"].found += bool(overlapping)
        for cls, start, end in predicted:
            overlapping = [g for g, s, e in spans if s < end and start < e]
            tallies[cls].predicted += 1
            tallies[cls].correct += cls in overlapping
            tallies["any"].predicted += 1
            tallies["any"].correct += bool(overlapping)
    return tallies


def _overall(tallies: dict[str, Tally]) -> Tally:
    typed = [t for name, t in tallies.items() if name != "any"]
    return Tally(
        gold=sum(t.gold for t in typed),
        found=sum(t.found for t in typed),
        predicted=sum(t.predicted for t in typed),
        correct=sum(t.correct for t in typed),
    )


def _print_table(title: str, classes: Sequence[str], tallies: dict[str, Tally]) -> dict[str, Any]:
    """Print one quality table; return its rows for the JSON output."""
    print(title)
    header = f"{'entity':<16}{'gold':>6}{'found':>7}{'pred':>6}{'correct':>9}"
    print(header + f"{'precision':>11}{'recall':>8}{'F2':>7}")
    rows: dict[str, dict[str, float | int]] = {}
    overall = _overall(tallies)
    for cls in (*classes, "overall", "any"):
        tally = overall if cls == "overall" else tallies[cls]
        rows[cls] = {
            "gold": tally.gold,
            "found": tally.found,
            "predicted": tally.predicted,
            "correct": tally.correct,
            "precision": round(tally.precision(), 4),
            "recall": round(tally.recall(), 4),
            "f2": round(tally.f2(), 4),
        }
        print(
            f"{cls:<16}{tally.gold:>6}{tally.found:>7}{tally.predicted:>6}{tally.correct:>9}"
            f"{tally.precision():>11.3f}{tally.recall():>8.3f}{tally.f2():>7.3f}"
        )
    other = tallies["other"].predicted
    print(f"other entity types reported (false positives, in overall): {other}")
    print(
        f"overall: precision={overall.precision():.3f} recall={overall.recall():.3f} "
        f"F2={overall.f2():.3f}"
    )
    return {"classes": rows, "other_false_positives": other}


def _print_false_alarms(title: str, predictions: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Print how many clean values got a finding, per entity type; return the figures."""
    flagged: dict[str, int] = {}
    for found in predictions:
        for entity in {f.entity_type for f in found}:
            flagged[entity] = flagged.get(entity, 0) + 1
    values = len(predictions)
    any_flagged = sum(1 for found in predictions if found)
    # What the shipped policy acts on: a marketing value lands in a behavioural or interests
    # category, which allows LOCATION and ORGANIZATION (places and brands); anything else found
    # there is redacted or refused.
    acted_on = sum(1 for found in predictions if {f.entity_type for f in found} - MARKETING_ALLOWED)
    print(title)
    print(
        f"values {values}, with any finding {any_flagged} ({any_flagged / max(values, 1):.1%}), "
        f"with a finding the behavioural category does not allow {acted_on} "
        f"({acted_on / max(values, 1):.1%}); "
        + ", ".join(f"{k} {v}" for k, v in sorted(flagged.items()))
    )
    return {
        "values": values,
        "with_any_finding": any_flagged,
        "false_alarm_rate": round(any_flagged / max(values, 1), 4),
        "with_disallowed_finding": acted_on,
        "disallowed_rate": round(acted_on / max(values, 1), 4),
        "per_type": dict(sorted(flagged.items())),
    }


def _per_value_us(fn: Callable[[], object], values: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1e6 / max(values, 1)


def _latencies_ms(scan: Callable[[str], object], texts: Sequence[str]) -> dict[str, float]:
    """p50/p95/max of one ``scan`` call per distinct value, in ms (after one warm-up pass).

    Wall time and this process's CPU time: on a shared machine the wall figures include the
    time other processes held the cores, the CPU figures are what a quiet core would need.
    """
    for text in texts[:20]:
        scan(text)
    wall, cpu = [], []
    for text in texts:
        started, started_cpu = time.perf_counter(), time.process_time()
        scan(text)
        wall.append((time.perf_counter() - started) * 1e3)
        cpu.append((time.process_time() - started_cpu) * 1e3)
    wall.sort()
    cpu.sort()

    def at(values: list[float], share: float) -> float:
        return round(values[min(len(values) - 1, int(len(values) * share))], 3)

    return {
        "p50": at(wall, 0.5),
        "p95": at(wall, 0.95),
        "max": round(wall[-1], 3),
        "cpu_p50": at(cpu, 0.5),
        "cpu_p95": at(cpu, 0.95),
    }


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0915 - one linear report
    """Generate, scan, score, print; write JSON if asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=600, help="sentences per set")
    parser.add_argument("--sample", type=int, default=0, help="score only the first N sentences")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", metavar="OUT", help="also write every figure as JSON")
    parser.add_argument(
        "--model",
        type=Path,
        help="score another model directory (e.g. an earlier version) instead of the pinned one",
    )
    args = parser.parse_args(argv)

    from bench.pii_heldout import generate as generate_heldout
    from bench.pii_heldout import generate_marketing
    from privacy.scanning import ScannerConfig
    from privacy.scanning.presidio_scanner import PresidioPiiScanner

    samples = generate(args.count, args.seed)
    heldout = generate_heldout(args.count, args.seed)
    marketing = generate_marketing(args.count, args.seed)
    if args.sample:
        samples, heldout = samples[: args.sample], heldout[: args.sample]
        marketing = marketing[: args.sample]
    texts = [s.text for s in samples]
    heldout_texts = [text for text, _ in heldout]

    # The patterns-only scanner first (what idgraph shipped before the model), so the RSS the
    # NER scanner adds on top is its own.
    rss_start = _rss_mib()
    started = time.perf_counter()
    patterns_only = PresidioPiiScanner(ScannerConfig(ner=False))
    construct_patterns_s = time.perf_counter() - started
    rss_patterns = _rss_mib()
    started = time.perf_counter()
    if args.model:
        from privacy.scanning.model_files import model_fingerprint

        model = {"model_dir": args.model, "model_sha256": model_fingerprint(args.model)}
        scanner = PresidioPiiScanner(ScannerConfig(ner=True), **model)
    else:
        scanner = PresidioPiiScanner(ScannerConfig(ner=True))
    construct_s = time.perf_counter() - started
    rss_ner = _rss_mib()

    print(
        f"PII quality: {len(samples)} project sentences (seed {args.seed}), "
        f"{sum(1 for s in samples if s.gold)} with personal data; {len(heldout)} held-out "
        f"sentences; scanner with NER built in {construct_s:.2f} s "
        f"(patterns only: {construct_patterns_s:.2f} s)"
    )
    # The project set labels no LOCATION or ORGANIZATION (its cities are coarse location, its
    # brands are brands): those findings are left out of its score, not counted either way.
    unscored = frozenset({"LOCATION", "ORGANIZATION"})
    project_gold = [s.gold for s in samples]
    project = _print_table(
        "\n== project set (bench templates and name lists), NER on ==",
        CLASSES,
        score(project_gold, scanner.scan_many(texts), CLASSES, unscored),
    )
    project_old = _print_table(
        "\n== project set, patterns only (NER off) ==",
        CLASSES,
        score(project_gold, patterns_only.scan_many(texts), CLASSES, unscored),
    )
    heldout_gold = [[(label, s, e) for s, e, label in spans] for _, spans in heldout]
    held = _print_table(
        "\n== held-out set (unseen locales and templates), NER on ==",
        HELDOUT_CLASSES,
        score(heldout_gold, scanner.scan_many(heldout_texts), HELDOUT_CLASSES),
    )
    held_old = _print_table(
        "\n== held-out set, patterns only (NER off) ==",
        HELDOUT_CLASSES,
        score(heldout_gold, patterns_only.scan_many(heldout_texts), HELDOUT_CLASSES),
    )

    market = _print_false_alarms(
        "\n== marketing negative set (clean values), NER on ==", scanner.scan_many(marketing)
    )
    market_old = _print_false_alarms(
        "\n== marketing negative set, patterns only (NER off) ==",
        patterns_only.scan_many(marketing),
    )

    repeat = 1 if len(texts) < 100 else 3
    all_texts = [*texts, *heldout_texts]
    scan_many_us = _per_value_us(lambda: scanner.scan_many(texts), len(texts), repeat)
    scan_loop_us = _per_value_us(lambda: [scanner.scan(t) for t in texts], len(texts), repeat)
    patterns_us = _per_value_us(lambda: patterns_only.scan_many(texts), len(texts), repeat)
    baseline_us = _per_value_us(
        lambda: [list(EMAIL_BASELINE.finditer(t)) for t in texts], len(texts), 5
    )
    latency = _latencies_ms(scanner.scan, all_texts)
    latency_old = _latencies_ms(patterns_only.scan, all_texts)
    ratio = scan_many_us / baseline_us if baseline_us else float("inf")
    print(
        f"\ncost per value: scan_many {scan_many_us:.1f} µs, scan loop {scan_loop_us:.1f} µs, "
        f"patterns only {patterns_us:.1f} µs, baseline email regex {baseline_us:.2f} µs; "
        f"ratio scan_many/baseline {ratio:.0f}x, NER/patterns-only "
        f"{scan_many_us / patterns_us:.2f}x"
    )
    print(
        f"latency of scan() per distinct value ({len(all_texts)} values): NER "
        f"p50 {latency['p50']:.2f} ms, p95 {latency['p95']:.2f} ms, max {latency['max']:.2f} ms; "
        f"patterns only p50 {latency_old['p50']:.2f} ms, p95 {latency_old['p95']:.2f} ms"
    )
    print(
        f"CPU time of scan() per distinct value: NER p50 {latency['cpu_p50']:.2f} ms, "
        f"p95 {latency['cpu_p95']:.2f} ms; patterns only p50 {latency_old['cpu_p50']:.2f} ms, "
        f"p95 {latency_old['cpu_p95']:.2f} ms; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    from privacy.scanning.presidio_scanner import PII_NER_MODEL_DIR

    model_dir = args.model or PII_NER_MODEL_DIR
    model_bytes = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    print(
        f"model: load {construct_s - construct_patterns_s:+.2f} s over patterns only, RSS "
        f"{rss_ner - rss_patterns:+.1f} MiB over patterns only (process {rss_ner:.0f} MiB, "
        f"patterns-only scanner {rss_patterns - rss_start:+.1f} MiB), "
        f"{model_bytes / 2**20:.1f} MiB on disk"
    )

    if args.json:
        figures = {
            "sentences": len(samples),
            "heldout_sentences": len(heldout),
            "seed": args.seed,
            "with_pii": sum(1 for s in samples if s.gold),
            "construct_seconds": round(construct_s, 3),
            "construct_patterns_only_seconds": round(construct_patterns_s, 3),
            **project,
            "patterns_only": project_old,
            "heldout": held,
            "heldout_patterns_only": held_old,
            "marketing": market,
            "marketing_patterns_only": market_old,
            "cost_us_per_value": {
                "scan_many": round(scan_many_us, 2),
                "scan_loop": round(scan_loop_us, 2),
                "patterns_only_scan_many": round(patterns_us, 2),
                "baseline_email_regex": round(baseline_us, 3),
                "ratio_scan_many_to_baseline": round(ratio, 1),
            },
            "latency_ms": {"ner": latency, "patterns_only": latency_old},
            "load_average_1m": round(os.getloadavg()[0], 2),
            "rss_mib": {
                "process": round(rss_ner, 1),
                "ner_over_patterns_only": round(rss_ner - rss_patterns, 1),
            },
            "model_bytes": model_bytes,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    # The held-out set comes from Faker, whose output depends on str hashing in a few
    # providers: pin it so a seed always gives the same sentences.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(  # noqa: S606 - this same script, a fixed argv
            sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"}
        )
    if str(ROOT) not in sys.path:  # run as a script: make the repository importable
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
