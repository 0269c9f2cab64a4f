"""The held-out PII set: sentences the NER model was never trained on, about people it never saw.

What differs from the training corpus (``tools/pii_model/corpus.py``):

* locales: Faker's hu_HU, fi_FI, ro_RO, hr_HR, sk_SK, no_NO, en_AU, sl_SI, tr_TR, lt_LT, en_NZ,
  et_EE, none of which the model was trained on, so every name, street and city list is new;
* templates: written separately, in other registers (CRM notes, support tickets, logs, CSV and
  key=value records, longer prose) and with other context words;
* distractors: another list of capitalised non-personal phrases.

Gold classes are PERSON, LOCATION, ORGANIZATION, STREET_ADDRESS (the model's) and
EMAIL_ADDRESS, PHONE_NUMBER, IBAN_CODE, CREDIT_CARD (the pattern recognizers'). Faker's phone
numbers are not all valid numbers (Faker draws digits at random), so PHONE_NUMBER recall here
is a floor: an invalid number is missed on purpose.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from tools.pii_model.values import HELDOUT_LOCALES, HELDOUT_NOT_PII, Span, Value, ValueMaker, fill

HELDOUT_TEMPLATES = (
    "CRM note: {NAME} asked us to stop calling {PHONE}.",
    "Support ticket from {NAME} ({EMAIL}): the {THING} page keeps timing out.",
    "{NAME} wrote in from {CITY} to say the courier never reached {ADDRESS}.",
    "Deliver c/o {NAME}, {ADDRESS}",
    "customer_name={NAME} customer_city={CITY} tier=gold",
    "{NAME};{ADDRESS};{EMAIL}",
    "Refund approved for {NAME}, card {CARD}.",
    "Payout to {NAME}, account {IBANX}.",
    "Lead: {NAME}, {JOB}, {ORG}, {CITY}",
    "We have {NAME} down as the billing contact for {ORG}.",
    "Could you please send the samples to {ADDRESS}? Many thanks, {NAME}",
    "{ORG} placed a bulk order; delivery to {ADDRESS}.",
    "Visitor from {COUNTRY} viewed {THING} twice.",
    "{NAME} left a one-star review: the {THING} arrived broken.",
    "Attendees: {NAME}, {NAME} and {NAME}.",
    "Interview with {NAME}, who grew up in {CITY} and now runs {ORG}.",
    "Return label printed for {ADDRESS} (ref {NUM}).",
    "Signed: {NAME}, {DATE}",
    "The {THING} promotion ran in {CITY} until {DATE}.",
    "Caller said she is {NAME} and her card is {CARD}.",
    "Moved from {ADDRESS} to {ADDRESS} last spring.",
    "Owner of the account: {NAME}; phone on file {PHONE}",
    "Our partner {ORG} from {CITY} sponsors the {THING} event.",
    "Personal details - {NAME}, born {DATE}, {CITY}, {COUNTRY}",
    "Bitte an {NAME} weiterleiten, Adresse {ADDRESS}.",
    "Frau {LAST} aus {CITY} bittet um Rückruf unter {PHONE}.",
    "Le client {NAME} demande une livraison au {ADDRESS}.",
    "Facture au nom de {ORG}, à l'attention de {NAME}.",
    "{THING} — {NUM} views, {NUM} clicks",
    "Best seller in {REGION}: {THING}",
    "Quarterly report: {THING} up, {THING} down since {YEAR}.",
    "Reminder: {THING} closes on {DATE}.",
    "{NAME} mentioned the {THING} on {URL}",
    "Please do not share {EMAIL} with {ORG}.",
)


def _card(maker: ValueMaker) -> Callable[[], Value]:
    def card() -> Value:
        kind = maker.rng.choice(("visa13", "visa16", "visa19", "mastercard", "amex", "discover"))
        number = str(maker.fake.credit_card_number(card_type=kind))
        if maker.rng.random() < 0.4 and len(number) == 16:
            number = " ".join(number[i : i + 4] for i in range(0, 16, 4))
        return number, "CREDIT_CARD"

    return card


def _labelled(inner: Callable[[], Value], label: str) -> Callable[[], Value]:
    def value() -> Value:
        return inner()[0], label

    return value


def generate(count: int, seed: int) -> list[tuple[str, list[Span]]]:
    """``count`` held-out sentences with spans ``(start, end, class)``, the same for a seed."""
    maker = ValueMaker(HELDOUT_LOCALES, seed)
    fillers = maker.fillers(HELDOUT_NOT_PII)
    for slot, label in (("EMAIL", "EMAIL_ADDRESS"), ("PHONE", "PHONE_NUMBER")):
        fillers[slot] = _labelled(fillers[slot], label)
    iban = fillers["IBAN"]

    def iban_any_case() -> Value:
        value = iban()[0]
        return (value.lower() if maker.rng.random() < 0.2 else value), "IBAN_CODE"

    fillers["IBANX"] = iban_any_case
    fillers["CARD"] = _card(maker)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        maker.pick_locale()
        out.append(fill(rng.choice(HELDOUT_TEMPLATES), fillers))
    return out


# -- the marketing negative set ------------------------------------------------------------------
# Values a marketing team really sends through ingest (subject lines, product titles, campaign
# and segment names, page titles, category paths, reviews without names, UTM tags), with no
# personal data in them. Written apart from the training templates and word lists: it measures
# how often the scanner raises a false alarm on clean marketing values, which decides whether the
# NER model can run by default (a false PERSON in a `reject` category refuses a clean write).
MARKETING_TEMPLATES = (
    "{PRODUCT} - now {PCT}% off",
    "{HEAD} {TAIL}: the {SEASON} edit",
    "Subject: {HEAD} {TAIL} ends tonight",
    "Your {PRODUCT} is waiting in the basket",
    "{BRAND} {PRODUCT}, size {SIZE}, colour {COLOUR}",
    "Category: {CATEGORY} > {CATEGORY}",
    "Page title: {HEAD} {TAIL} | {BRAND}",
    "Segment '{HEAD} {TAIL} buyers' refreshed",
    "utm_source={SOURCE}&utm_campaign={HEAD}_{TAIL}",
    "Review: Great {PRODUCT}, fits perfectly. Would buy again.",
    "Review: {COLOUR} looked different from the photos, returned it.",
    "{SEASON} {TAIL} starts {WEEKDAY}",
    "Clicked '{HEAD} {TAIL}' banner on the home page",
    "Played '{SONG}' by {BAND}",
    "Favourite artists: {BAND}, {BAND}",
    "Interests: {CATEGORY}, {CATEGORY}, {CATEGORY}",
    "Store visit: {BRAND} Flagship, {CITY_CENTRE}",
    "{WEEKDAY} Deals: {PRODUCT} and {PRODUCT}",
    "Push: {HEAD} {TAIL} just dropped!",
    "SMS: {BRAND} {SEASON} Sale - {PCT}% off with code {CODE}",
    "Coupon {CODE} applied to {PRODUCT}",
    "{HEAD} {TAIL}",
    "{BRAND}",
    "{PRODUCT}",
    "{SECTION}",
    "{SECTION}: {HEAD} {TAIL}",
    "Webinar: {HEAD} {TAIL} for Beginners",
    "Loyalty level {LEVEL}, {PCT} points to go",
    "Abgebrochener Warenkorb: {PRODUCT} in {COLOUR}",
    "Betreff: {HEAD} {TAIL} - nur bis {WEEKDAY}",
    "Objet : {HEAD} {TAIL}, livraison offerte",
    "Asunto: {HEAD} {TAIL} con envío gratis",
    "Oggetto: {HEAD} {TAIL} in saldo",
    "Onderwerp: {HEAD} {TAIL} nu in de uitverkoop",
    "Preferred channel: {SOURCE}; language: {LANGUAGE}",
    "{BAND} - {SONG} (Live)",
    "Survey answer: I found you through {SOURCE}",
    "Event: {BRAND} {SEASON} Launch Party",
)
MARKETING_WORDS: dict[str, tuple[str, ...]] = {
    "PRODUCT": (
        "Cloud Runner 3",
        "Merino Crew Sweater",
        "Chelsea Boots",
        "Espresso Maker Pro",
        "Linen Shirt",
        "Trail Backpack 30L",
        "Noise Cancelling Headphones",
        "Cast Iron Pan",
        "Organic Face Cream",
        "Rain Shell Jacket",
        "Bamboo Socks",
        "Leather Weekender",
        "Wanderschuh Alpin",
        "Sac à dos Urbain",
        "Camiseta Básica",
        "Giacca Imbottita",
    ),
    "BRAND": (
        "Patagonia",
        "Birkenstock",
        "Nespresso",
        "Uniqlo",
        "Zalando",
        "Decathlon",
        "Lush",
        "Levi's",
        "Jack Wolfskin",
        "Le Creuset",
        "Bose",
        "IKEA",
        "Vans",
        "Converse",
        "Asics",
        "Tchibo",
        "Fnac",
        "Sephora",
        "Mango",
        "Zara Home",
    ),
    "HEAD": (
        "Midnight",
        "Crystal",
        "Copper",
        "Velvet",
        "Maple",
        "Lagoon",
        "Northern",
        "Meadow",
        "Electric",
        "Lucky",
        "Cosmic",
        "Frosty",
        "Coastal",
        "Rustic",
        "Sparkling",
        "Hidden",
        "Bright",
        "Dreamy",
        "Brave",
        "Gentle",
        "Herbst",
        "Frühlings",
        "Été",
        "Primavera",
    ),
    "TAIL": (
        "Selects",
        "Finds",
        "Icons",
        "Classics",
        "Heroes",
        "Lights",
        "Escape",
        "Journey",
        "Rush",
        "Drop",
        "Vault",
        "Getaway",
        "Treats",
        "Specials",
        "Highlights",
        "Revival",
        "Moods",
        "Gems",
        "Trends",
        "Wonders",
        "Aktion",
        "Rabatte",
        "Promos",
        "Novedades",
    ),
    "SEASON": ("Spring", "Summer", "Autumn", "Winter", "Holiday", "Back to School", "Easter"),
    "CATEGORY": (
        "Women",
        "Men",
        "Kids",
        "Outdoor",
        "Footwear",
        "Home & Living",
        "Beauty",
        "Electronics",
        "Sportswear",
        "Accessories",
        "Kitchen",
        "Garden",
        "Toys",
        "Books",
        "Wellness",
    ),
    "SECTION": (
        "Personal Info",
        "Account Overview",
        "Saved Cards",
        "My Orders",
        "Order Tracking",
        "Communication Preferences",
        "Size Guide",
        "Store Locator",
        "Gift Ideas",
        "New Arrivals",
        "Customer Reviews",
        "Returns & Exchanges",
        "Persönliche Angaben",
        "Mes Commandes",
    ),
    "BAND": (
        "White Stripes",
        "The Killers",
        "Florence and the Machine",
        "Massive Attack",
        "Imagine Dragons",
        "Rammstein",
        "Phoenix",
        "Vampire Weekend",
        "Tame Impala",
        "Fleetwood Mac",
        "The National",
        "Sigur Rós",
        "Kraftwerk",
        "Nirvana",
    ),
    "SONG": (
        "Seven Nation Army",
        "Mr. Brightside",
        "Dog Days Are Over",
        "Teardrop",
        "Radioactive",
        "Dreams",
        "Lisztomania",
        "Come As You Are",
        "The Less I Know the Better",
    ),
    "COLOUR": ("Forest Green", "Navy Blue", "Sand", "Charcoal", "Dusty Rose", "Off White"),
    "SIZE": ("S", "M", "L", "XL", "42", "38", "10 UK", "One Size"),
    "PCT": ("10", "15", "20", "25", "30", "40", "50", "70"),
    "WEEKDAY": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "SOURCE": ("Instagram", "TikTok", "Pinterest", "Google", "Newsletter", "YouTube", "Podcast"),
    "CODE": ("SPRING20", "WELCOME15", "VIP30", "FREESHIP", "HELLO10", "XMAS24"),
    "LEVEL": ("Bronze", "Silver", "Gold", "Platinum"),
    "CITY_CENTRE": ("Westfield", "Oxford Street", "Les Halles", "Zeil", "Kurfürstendamm"),
    "LANGUAGE": ("English", "Deutsch", "Français", "Español", "Italiano"),
}


def generate_marketing(count: int, seed: int) -> list[str]:
    """``count`` clean marketing values (no personal data), the same for a seed."""
    rng = random.Random(f"marketing-{seed}")
    out = []
    for _ in range(count):
        template = rng.choice(MARKETING_TEMPLATES)
        out.append(
            re.sub(r"\{([A-Z_]+)\}", lambda m: rng.choice(MARKETING_WORDS[m.group(1)]), template)
        )
    return out
