"""PII-scanner quality and cost on a deterministic, labelled, synthetic EN/DE/FR set.

Usage (from the repository root)::

    .venv/bin/python bench/pii_quality.py                    # 600 sentences, seed 7
    .venv/bin/python bench/pii_quality.py --sample 60 --json /tmp/pii.json

The generator builds every value itself (no network, no external data): names from inline
lists, e-mail addresses from them, phone numbers that libphonenumber accepts as valid, IBANs with
correct check digits, street addresses of DE/FR/UK/US with postcodes. Each value is embedded in
a sentence template, some with the context a form or a letter gives (``Name:``, ``Dear``, ``Tel.``),
some bare; about a fifth of the sentences hold no personal data at all but look like marketing
data (counts, product names, city names, prices, dates).

Scoring: a gold span is *found* when a predicted span of the same class overlaps it; a predicted
span is *correct* when it overlaps a gold span of its class. Precision = correct predictions /
predictions, recall = found gold spans / gold spans, F2 weighs recall four times as much as
precision (a missed value is a leak; a false alarm is a redaction too many). Predicted types
outside the five gold classes (EU_VAT_ID, CREDIT_CARD, ...) are false positives in "overall".

Cost: ``scan_many`` over all sentences, in µs per value, beside a same-run baseline (one
compiled e-mail regex over the same texts) as a ratio. Construction is reported apart.
"""

from __future__ import annotations

import argparse
import json
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
# Scanner entity types that count as one of the gold classes.
TYPE_TO_CLASS = {name: name for name in CLASSES}
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


def score(samples: Sequence[Sample], predictions: Sequence[Sequence[Any]]) -> dict[str, Tally]:
    """Span-overlap scoring per gold class; ``other`` holds predictions outside the classes."""
    tallies = {cls: Tally() for cls in (*CLASSES, "other")}
    for sample, found in zip(samples, predictions, strict=True):
        predicted = [(TYPE_TO_CLASS.get(f.entity_type, "other"), f.start, f.end) for f in found]
        for cls, start, end in sample.gold:
            tallies[cls].gold += 1
            if any(p == cls and s < end and start < e for p, s, e in predicted):
                tallies[cls].found += 1
        for cls, start, end in predicted:
            tallies[cls].predicted += 1
            if any(g == cls and s < end and start < e for g, s, e in sample.gold):
                tallies[cls].correct += 1
    return tallies


def _per_value_us(fn: Callable[[], object], values: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1e6 / max(values, 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate, scan, score, print; write JSON if asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=600, help="sentences to generate")
    parser.add_argument("--sample", type=int, default=0, help="score only the first N sentences")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", metavar="OUT", help="also write every figure as JSON")
    args = parser.parse_args(argv)

    from privacy.scanning import ScannerConfig
    from privacy.scanning.presidio_scanner import PresidioPiiScanner

    samples = generate(args.count, args.seed)
    if args.sample:
        samples = samples[: args.sample]
    texts = [s.text for s in samples]

    started = time.perf_counter()
    scanner = PresidioPiiScanner(ScannerConfig())
    construct_s = time.perf_counter() - started

    predictions = scanner.scan_many(texts)
    tallies = score(samples, predictions)
    overall = Tally(
        gold=sum(t.gold for t in tallies.values()),
        found=sum(t.found for t in tallies.values()),
        predicted=sum(t.predicted for t in tallies.values()),
        correct=sum(t.correct for t in tallies.values()),
    )

    repeat = 1 if len(texts) < 100 else 3
    scan_many_us = _per_value_us(lambda: scanner.scan_many(texts), len(texts), repeat)
    scan_loop_us = _per_value_us(lambda: [scanner.scan(t) for t in texts], len(texts), repeat)
    baseline_us = _per_value_us(
        lambda: [list(EMAIL_BASELINE.finditer(t)) for t in texts], len(texts), 5
    )

    with_pii = sum(1 for s in samples if s.gold)
    print(
        f"PII quality: {len(samples)} sentences (seed {args.seed}), {with_pii} with personal "
        f"data, {overall.gold} gold spans; scanner built in {construct_s:.2f} s"
    )
    header = f"{'entity':<16}{'gold':>6}{'found':>7}{'pred':>6}{'correct':>9}"
    print(header + f"{'precision':>11}{'recall':>8}{'F2':>7}")
    rows: dict[str, dict[str, float | int]] = {}
    for cls in (*CLASSES, "overall"):
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
    ratio = scan_many_us / baseline_us if baseline_us else float("inf")
    print(
        f"cost per value: scan_many {scan_many_us:.1f} µs, scan loop {scan_loop_us:.1f} µs, "
        f"baseline email regex {baseline_us:.2f} µs; ratio scan_many/baseline {ratio:.0f}x"
    )

    if args.json:
        figures = {
            "sentences": len(samples),
            "seed": args.seed,
            "with_pii": with_pii,
            "construct_seconds": round(construct_s, 3),
            "classes": rows,
            "other_false_positives": other,
            "cost_us_per_value": {
                "scan_many": round(scan_many_us, 2),
                "scan_loop": round(scan_loop_us, 2),
                "baseline_email_regex": round(baseline_us, 3),
                "ratio_scan_many_to_baseline": round(ratio, 1),
            },
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:  # run as a script: make the repository importable
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
