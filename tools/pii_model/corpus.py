"""The training corpus of idgraph's PII NER model: seeded templates filled from Faker.

``python -m tools.pii_model.corpus --count 20 --seed 1`` prints a few sentences with their
spans. The templates here are for training only; ``bench/pii_quality.py`` evaluates on its
own templates and its own locales (see :mod:`tools.pii_model.values`).
"""

from __future__ import annotations

import argparse
import json
import random

from tools.pii_model.values import TRAIN_LOCALES, TRAIN_NOT_PII, Span, ValueMaker, fill

TRAIN_TEMPLATES = (
    # forms and records
    "Name: {NAME}", "Full name: {NAME}\nAddress: {ADDRESS}", "name={NAME}; city={CITY}",
    "Customer: {NAME}, {ADDRESS}", "Contact person: {NAME} ({ORG})", "Employer: {ORG}",
    "Company: {ORG}, {ADDRESS}", "Shipping address: {ADDRESS}", "Billing address:\n{ADDRESS}",
    "Address: {ADDRESS}\nPhone: {PHONE}", "{NAME}\n{ADDRESS}", "{NAME}, {JOB} at {ORG}",
    "Recipient: {TITLE} {LAST}", "Born in {CITY}, {COUNTRY} on {DATE}", "Nationality: {COUNTRY}",
    "Location: {CITY}, {REGION}", "first_name: {FIRST}, last_name: {LAST}", "{NAME} <{EMAIL}>",
    '{{"name": "{NAME}", "city": "{CITY}"}}', "{NAME},{EMAIL},{PHONE},{CITY}",
    "Account holder: {NAME}, IBAN {IBAN}", "Emergency contact: {NAME}, {PHONE}",
    # letters and mail
    "Dear {NAME},\nthank you for your order from {DATE}.", "Hi {FIRST}, your parcel is on its way.",
    "Kind regards,\n{NAME}\n{JOB}, {ORG}", "Best,\n{FIRST}", "Hello {TITLE} {LAST}, welcome back!",
    "Please forward this to {NAME} in our {CITY} office.",
    "{NAME} from {ORG} asked about the {THING} offer.",
    # free text and chat
    "My name is {NAME} and I live at {ADDRESS}.", "I'm {FIRST}, I moved to {CITY} in {YEAR}.",
    "hey its {FIRST} again, can you ship to {ADDRESS}?", "{NAME} called about order {NUM}.",
    "Spoke with {NAME} today; she works for {ORG} in {CITY}.",
    "{NAME} was born on {DATE} and lives in {CITY}.", "We met {NAME} at the {ORG} booth in {CITY}.",
    "The package for {NAME} was left at {ADDRESS}.", "{NAME} ({EMAIL}) signed up via {URL}.",
    "Please update my address to {ADDRESS}, thanks, {FIRST}", "{FIRST} {LAST} joined {ORG} in {YEAR}.",
    "Our driver could not find {ADDRESS} in {CITY}.", "Send the invoice to {ORG}, attn. {NAME}.",
    "In {YEAR} {NAME} opened a store in {CITY}.", "{NAME} prefers delivery to {ADDRESS}.",
    "Ticket {NUM}: {NAME} reports the app crashes since {DATE}.",
    "Review by {NAME} from {CITY}: great {THING}!", "Transfer from {NAME} to {ORG}, ref {NUM}.",
    "{TITLE} {NAME} will visit {CITY}, {COUNTRY} next week.",
    # German
    "Sehr geehrte {TITLE} {LAST},\nvielen Dank für Ihre Bestellung.", "Hallo {FIRST}, dein Paket ist unterwegs.",
    "Mein Name ist {NAME}, ich wohne in {ADDRESS}.", "Lieferadresse: {ADDRESS}", "Anschrift:\n{NAME}\n{ADDRESS}",
    "Kunde {NAME} aus {CITY} hat angerufen.", "{NAME} arbeitet bei {ORG} in {CITY}.",
    "Mit freundlichen Grüßen\n{NAME}", "Ansprechpartner: {NAME}, {ORG}", "Geboren am {DATE} in {CITY}",
    "Bitte die Rechnung an {ORG}, {ADDRESS} senden.", "Wohnort: {CITY}, Land: {COUNTRY}",
    "{NAME} hat am {DATE} den {THING} gekauft.", "Umzug nach {ADDRESS} geplant, Grüße {FIRST}",
    # French
    "Bonjour {FIRST}, votre commande est prête.", "Je m'appelle {NAME} et j'habite {ADDRESS}.",
    "Adresse de livraison : {ADDRESS}", "Cordialement,\n{NAME}", "{TITLE} {LAST} travaille chez {ORG}.",
    "Client : {NAME}, {CITY}", "{NAME} a déménagé à {CITY} en {YEAR}.", "Né le {DATE} à {CITY} ({COUNTRY})",
    "Merci {FIRST} pour votre avis sur {THING}.", "Société : {ORG}, siège : {ADDRESS}",
    # Spanish, Italian, Dutch
    "Me llamo {NAME} y vivo en {ADDRESS}.", "Dirección: {ADDRESS}", "Mi chiamo {NAME}, abito a {CITY}.",
    "Indirizzo: {ADDRESS}", "Mijn naam is {NAME}, ik woon in {CITY}.", "Adres: {ADDRESS}",
    # no personal data (but capitalised words, numbers and dates)
    "{THING} starts on {DATE}.", "Viewed {THING} {NUM} times", "Opened the {THING} email on {DATE}",
    "During {YEAR} sales grew by {NUM} percent.", "Top category: {THING}", "{THING} | {THING} | {THING}",
    "Clicked {URL} from the {THING} campaign", "Order {NUM} shipped, total {NUM} EUR",
    "Interested in {THING} and {THING}", "Since {YEAR}: {THING} member", "{JOB} wanted, apply by {DATE}",
    "Section: {THING}", "{THING}: {NUM} items", "Newsletter sent {DATE}, {NUM} opens",
    "Warenkorb abgebrochen: {THING}", "Panier : {NUM} articles, {THING}", "Rating {NUM}/5 for {THING}",
    "{THING} - {THING}", "Updated {THING} on {DATE}", "In {YEAR} the {THING} was launched.",
    "Stores in {CITY} and {CITY} are open on {DATE}.", "Weather in {CITY}: sunny",
    "Ships from {COUNTRY} within {NUM} days", "Event: {THING} {YEAR}", "Position: {JOB}",
    # version 2: names, addresses and companies in the middle of running text and in records
    "{NAME}", "{ADDRESS}", "{ORG}", "{CITY}", "{FIRST}", "{NAME} | {CITY}",
    "Yesterday {NAME} told me the {THING} was sold out.", "According to {NAME}, the order is late.",
    "I spoke to {NAME} and {NAME} about the {THING} launch.", "Thanks to {NAME} for the quick reply!",
    "The reviewer, {NAME}, gave it {NUM} stars.", "When {NAME} visited {CITY}, the {THING} was closed.",
    "Our colleague {NAME} ({JOB}) will call you.", "cc: {NAME}; bcc: {NAME}",
    "assigned to {NAME} by {NAME} on {DATE}", "owner={NAME} status=open", "contact_person: {NAME}",
    "Please ask {FIRST} whether {ADDRESS} is still correct.", "the courier left it with {NAME} next door",
    "ok thanks {FIRST}!", "lol {FIRST} you forgot the {THING}", "{NAME} liked your post about {THING}",
    "Winner of the {THING} raffle: {NAME} from {CITY}!", "Congratulations {NAME}, you earned {NUM} points.",
    "Order {NUM} for {NAME}, {ADDRESS}, {COUNTRY}", "Invoice to: {ORG}\n{ADDRESS}\n{COUNTRY}",
    "Delivery attempt failed at {ADDRESS} (recipient: {NAME}).", "Pickup point: {ORG}, {ADDRESS}",
    "{ORG} ({CITY}) renewed the contract; signed by {NAME}.", "Supplier {ORG} ships from {CITY}, {COUNTRY}.",
    "The meeting with {ORG} is at their office, {ADDRESS}.", "Tenant: {NAME}; landlord: {ORG}",
    "NAME: {NAME}  ADDRESS: {ADDRESS}", "CUSTOMER {NAME} CITY {CITY}", "REF {NUM} / {NAME} / {ORG}",
    "{NAME} hat sich über den {THING} beschwert.", "Gestern rief {NAME} aus {CITY} an.",
    "Die Lieferung an {NAME}, {ADDRESS}, kam zurück.", "Vertrag mit {ORG} unterschrieben von {NAME}.",
    "Paket für {NAME} liegt bei {ORG} in {CITY}.", "laut {NAME} stimmt die adresse {ADDRESS} nicht",
    "{NAME} a appelé hier au sujet de {THING}.", "Le colis de {NAME} est arrivé à {ADDRESS}.",
    "Contrat signé par {NAME} pour {ORG}.", "Merci à {NAME} de {CITY} pour son message.",
    "{NAME} ha scritto da {CITY}.", "Pedido de {NAME} enviado a {ADDRESS}.", "{NAME} woont op {ADDRESS}.",
    "{NAME} asui osoitteessa {ADDRESS}.", "{NAME} lakik: {ADDRESS}", "Tilaaja: {NAME}, {CITY}",
    "Megrendelő: {NAME}, {ADDRESS}", "Zamawiający: {NAME}, {ADDRESS}",
    # version 2: marketing text with capitalised words, headings and brands (no personal data)
    "{OPENER}, the {PHRASE} is here!", "{OPENER}: {PHRASE} - up to {NUM}% off",
    "{PHRASE} | {PHRASE}", "{PHRASE}", "{THING}", "Shop the {PHRASE} now", "New in: {PHRASE}",
    "{OPENER}! Our {PHRASE} ends on {DATE}.", "{PHRASE} by {THING}", "Only at {PHRASE}: {THING}",
    "{OPENER} {PHRASE} Lovers", "{PHRASE} Weekend in {CITY}", "{OPENER} to the {PHRASE}",
    "Personal Information", "Contact Info", "Your Profile", "Delivery Address",
    "Billing Address", "First Name", "Last Name", "Full Name", "Street Address", "Postal Code",
    "Persönliche Daten", "Vorname", "Nachname", "Adresse", "Informations personnelles", "Nom",
    "Prénom", "Dear Customer, your {PHRASE} order has shipped.", "Hallo Team, {PHRASE} ist live.",
    "Hi there, check out {PHRASE} and {THING}.", "Listen to {THING} on {PHRASE} Radio",
    "{THING} live in {CITY} on {DATE}", "Tickets for {THING} and {THING} on sale now",
    "Watched {THING} trailer", "Campaign {PHRASE} via Google Ads, CTR {NUM}",
    "utm_campaign={PHRASE}&utm_source={THING}", "Segment: {PHRASE} ({NUM} members)",
    "Audience {PHRASE} synced to Facebook Ads", "{JOB}", "Preferred brand: {THING}",
    "Favourite band: {THING}", "Lieblingsmarke: {THING}", "Marque préférée : {THING}",
    "{PHRASE} Gift Set, {NUM} EUR", "Bundle {PHRASE} + {PHRASE}", "{NUM} x {PHRASE}",
    "Neue {PHRASE} jetzt im Shop", "Die {PHRASE} ist da", "La {PHRASE} est arrivée",
    "{PHRASE} {YEAR}: {THING} edition", "Status: Active, Tier: Gold, Channel: Email",
    "Source: Newsletter, Medium: Email, Campaign: {PHRASE}", "Category Shoes > Running > Trail",
    "NEW ARRIVALS: {PHRASE}", "FREE SHIPPING ON {PHRASE}", "{OPENER} {PHRASE}",
)  # fmt: skip


def generate(count: int, seed: int) -> list[tuple[str, list[Span]]]:
    """``count`` labelled training sentences for ``seed`` (same seed, same sentences)."""
    maker = ValueMaker(TRAIN_LOCALES, seed)
    fillers = maker.fillers(TRAIN_NOT_PII)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        maker.pick_locale()
        out.append(fill(rng.choice(TRAIN_TEMPLATES), fillers))
    return out


def main() -> None:
    """Print sentences and spans as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for text, spans in generate(args.count, args.seed):
        print(json.dumps({"text": text, "spans": spans}, ensure_ascii=False))


if __name__ == "__main__":
    main()
