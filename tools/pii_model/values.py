"""Values for the synthetic PII corpora: Faker, per locale, seeded, never the network.

Both the training corpus (:mod:`tools.pii_model.corpus`) and the held-out evaluation set of
``bench/pii_quality.py`` draw values from here, but from *disjoint* locale lists (so disjoint
name, street and city lists) and through disjoint sentence templates: the held-out score
measures how the model does on names and addresses it never saw, in sentences it never saw.

A value is a ``(text, label)`` pair; ``label`` is an NER label or ``None`` for text the model
must learn to leave alone (e-mail addresses, dates and numbers are the pattern recognizers'
job; products, job titles and headings are not personal data).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from faker import Faker

NER_LABELS = ("PERSON", "LOCATION", "ORGANIZATION", "STREET_ADDRESS")

# Training locales: the markets idgraph's users sell in, plus neighbours for name variety.
TRAIN_LOCALES = (
    "en_US", "en_GB", "en_IE", "en_CA", "de_DE", "de_AT", "de_CH", "fr_FR", "fr_CH", "fr_CA",
    "it_IT", "es_ES", "es_MX", "nl_NL", "nl_BE", "pl_PL", "pt_PT", "pt_BR", "sv_SE", "da_DK",
    "cs_CZ", "en_IN",
)  # fmt: skip
# Held-out locales: no name, street or city list in common with the training locales.
HELDOUT_LOCALES = (
    "hu_HU", "fi_FI", "ro_RO", "hr_HR", "sk_SK", "no_NO", "en_AU", "sl_SI", "tr_TR", "lt_LT",
    "en_NZ", "et_EE",
)  # fmt: skip

# Capitalised words that are not personal data: the model must see them unlabelled, or any
# capitalised pair becomes a name. (Written for training; the held-out set has its own list.)
TRAIN_NOT_PII = (
    "Order Summary", "Account Settings", "Shipping Options", "Customer Service", "Black Friday",
    "Premium Plus", "Air Max", "Summer Sale", "Gift Card", "Cyber Monday", "Privacy Policy",
    "Terms of Service", "Return Policy", "Loyalty Program", "Early Access", "Limited Edition",
    "Running Shoes", "Yoga Mat", "Winter Jacket", "Smart Watch", "Rolling Stones", "Daft Punk",
    "Arctic Monkeys", "Pink Floyd", "Star Wars", "Harry Potter", "Champions League",
    "Tour de France", "New Year", "Easter Monday", "Mother's Day", "Christmas Eve", "Warenkorb",
    "Kundenkonto",
    "Versandart", "Sommerschlussverkauf", "Rechnungsdetails", "Mon Compte", "Panier",
    "Livraison Express", "Soldes d'Hiver", "Contact Details", "Billing Info", "Payment Method",
    "Product Details", "Delivery Notes", "Home Page", "Sign In", "Sign Up", "Data Protection",
    "Green Day", "Coldplay", "Metallica", "Nike", "Adidas Originals", "New Balance",
)  # fmt: skip
HELDOUT_NOT_PII = (
    "Profile Overview", "Checkout Page", "Flash Deal", "Spring Collection", "Trail Runner",
    "Foo Fighters", "Kings of Leon", "Radiohead", "Lord of the Rings", "World Cup", "Boxing Day",
    "Newsletter Archive", "Wish List", "Fast Delivery", "Kontoübersicht", "Bestellstatus",
    "Mes Favoris", "Nouveautés", "Account Details", "Saved Addresses", "Order History",
)  # fmt: skip

Value = tuple[str, str | None]


class ValueMaker:
    """Seeded value factory over a list of Faker locales (one locale drawn per sentence)."""

    def __init__(self, locales: Sequence[str], seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers = {}
        for index, locale in enumerate(locales):
            fake = Faker(locale)
            fake.seed_instance(seed * 1000 + index)
            self.fakers[locale] = fake
        self.locales = list(locales)
        self.fake = self.fakers[self.locales[0]]

    def pick_locale(self) -> None:
        """Use one locale for the next sentence (a German name with a German street)."""
        self.fake = self.fakers[self.rng.choice(self.locales)]

    # -- labelled values ---------------------------------------------------------------------

    def name(self) -> Value:
        """A person's name in one of the shapes people write it."""
        fake, rng = self.fake, self.rng
        first, last = fake.first_name(), fake.last_name()
        roll = rng.random()
        if roll < 0.35:
            text = f"{first} {last}"
        elif roll < 0.5:
            text = f"{first} {_initial(fake)}. {last}"
        elif roll < 0.58:
            text = f"{first} {_initial(fake)} {last}"
        elif roll < 0.7:
            text = fake.name()
        elif roll < 0.76:
            text = f"{last}, {first}"
        elif roll < 0.82:
            text = f"{first} {fake.first_name()} {last}"
        elif roll < 0.88:
            text = f"{first} {last}-{fake.last_name()}"
        elif roll < 0.94:
            text = first
        else:
            text = f"{first[0]}. {last}"
        if rng.random() < 0.04:
            text = text.lower()
        elif rng.random() < 0.03:
            text = text.upper()
        return text, "PERSON"

    def first_name(self) -> Value:
        """A first name alone."""
        return self.fake.first_name(), "PERSON"

    def last_name(self) -> Value:
        """A family name alone (after a title in most templates)."""
        return self.fake.last_name(), "PERSON"

    def address(self) -> Value:
        """A street address: street line, sometimes a unit, often postcode and city."""
        fake, rng = self.fake, self.rng
        street = _one_line(fake.street_address())
        roll = rng.random()
        if roll < 0.15:
            street = f"{fake.building_number()} {fake.street_name()}"
        if rng.random() < 0.2:
            unit = rng.choice(("Apt.", "Apt", "Suite", "Unit", "Flat", "#", "Wohnung", "App."))
            street = f"{street} {unit} {rng.randint(1, 999)}"
        tail = rng.random()
        if tail < 0.35:
            return street, "STREET_ADDRESS"
        if tail < 0.7:
            return f"{street}, {_postcode(fake)} {fake.city()}", "STREET_ADDRESS"
        if tail < 0.85:
            return f"{street}, {fake.city()}", "STREET_ADDRESS"
        return _one_line(fake.address()), "STREET_ADDRESS"

    def city(self) -> Value:
        """A city (LOCATION)."""
        return self.fake.city(), "LOCATION"

    def country(self) -> Value:
        """A country name (LOCATION), in the locale's language."""
        return self.fake.country(), "LOCATION"

    def region(self) -> Value:
        """A state, region or city again where the locale has no regions (LOCATION)."""
        for attr in ("state", "region", "administrative_unit"):
            if hasattr(self.fake, attr):
                try:
                    return str(getattr(self.fake, attr)()), "LOCATION"
                except (AttributeError, TypeError):
                    continue
        return self.city()

    def company(self) -> Value:
        """A company name (ORGANIZATION)."""
        return _one_line(self.fake.company()), "ORGANIZATION"

    # -- unlabelled context values -----------------------------------------------------------

    def email(self) -> Value:
        """An e-mail address (a pattern recognizer's job, not the model's)."""
        return self.fake.email(), None

    def phone(self) -> Value:
        """A phone number as the locale writes it."""
        return self.fake.phone_number(), None

    def date(self) -> Value:
        """A date in one of several formats."""
        fmt = self.rng.choice(("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%B %d, %Y", "%d %B %Y"))
        return self.fake.date_between("-60y", "today").strftime(fmt), None

    def year(self) -> Value:
        """A four-digit year."""
        return str(self.rng.randint(1950, 2026)), None

    def number(self) -> Value:
        """A count, order number or amount."""
        return self.rng.choice(
            (
                str(self.rng.randint(1, 99)),
                f"#{self.rng.randint(10000, 999999)}",
                f"{self.rng.randint(5, 900)}.{self.rng.randint(0, 99):02d}",
            )
        ), None

    def iban(self) -> Value:
        """An IBAN of the locale (or a generic one)."""
        try:
            return self.fake.iban(), None
        except AttributeError:
            return Faker("de_DE").iban(), None

    def job(self) -> Value:
        """A job title: capitalised words that are not a name."""
        return _one_line(self.fake.job()), None

    def url(self) -> Value:
        """A URL."""
        return self.fake.url(), None

    def fillers(self, not_pii: Sequence[str]) -> dict[str, Callable[[], Value]]:
        """The placeholder table of the templates."""
        return {
            "NAME": self.name,
            "FIRST": self.first_name,
            "LAST": self.last_name,
            "ADDRESS": self.address,
            "CITY": self.city,
            "COUNTRY": self.country,
            "REGION": self.region,
            "ORG": self.company,
            "EMAIL": self.email,
            "PHONE": self.phone,
            "DATE": self.date,
            "YEAR": self.year,
            "NUM": self.number,
            "IBAN": self.iban,
            "JOB": self.job,
            "URL": self.url,
            "THING": lambda: (self.rng.choice(not_pii), None),
            "TITLE": lambda: (
                self.rng.choice(("Mr", "Mrs", "Ms", "Dr.", "Herr", "Frau", "M.", "Mme", "Prof.")),
                None,
            ),
        }


Span = tuple[int, int, str]
_SLOT = re.compile(r"\{([A-Z]+)\}")


def fill(template: str, fillers: dict[str, Callable[[], Value]]) -> tuple[str, list[Span]]:
    """Replace each ``{SLOT}`` in ``template``; return the text and its labelled spans."""
    parts: list[str] = []
    spans: list[Span] = []
    cursor = length = 0
    for match in _SLOT.finditer(template):
        literal = template[cursor : match.start()]
        parts.append(literal)
        length += len(literal)
        value, label = fillers[match.group(1)]()
        if label is not None:
            spans.append((length, length + len(value), label))
        parts.append(value)
        length += len(value)
        cursor = match.end()
    parts.append(template[cursor:])
    return "".join(parts), spans


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", ", ", text.strip())


def _initial(fake: Faker) -> str:
    return str(fake.first_name()[0]).upper()


def _postcode(fake: Faker) -> str:
    for attr in ("postcode", "zipcode", "postalcode"):
        if hasattr(fake, attr):
            return str(getattr(fake, attr)())
    return str(fake.random_int(1000, 99999))
