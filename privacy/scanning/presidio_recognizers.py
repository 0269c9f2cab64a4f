"""Recognizers idgraph adds to presidio's: what EU marketing data needs and presidio lacks.

Everything here is a pattern plus context words; names, places, organisations and addresses
without a pattern are the NER model's (see :mod:`privacy.scanning.presidio_scanner`):

* :class:`PersonNameRecognizer` finds names by what surrounds them (titles, "my name is",
  "Name:", greetings, sign-offs) and, without the NER model, with a low score that only
  context can lift over the threshold, runs of capitalised words.
* :class:`StreetAddressRecognizer` finds street addresses of DE/AT/CH, FR, UK, US, NL, ES and IT:
  a street-type word next to a house number, optionally followed by postcode and city.
* :class:`EuVatIdRecognizer` finds country-prefixed EU VAT ids and checks the check digits of
  the formats whose algorithm is public.
* :class:`ContextRequiredRecognizer` makes presidio's digit-only id recognizers (German tax id,
  NHS number, PESEL) require a context word, since a check digit alone passes one number in ten.
* :class:`OfflineEmailRecognizer` and :class:`EuPhoneRecognizer` are presidio's own, made to
  never touch the network and to cover EU phone regions.

None of these classes logs, and none keeps the text it analysed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import phonenumbers
import regex  # type: ignore[import-untyped]  # presidio's regex engine; no stubs
import tldextract
from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    LocalRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DeTaxIdRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    NhsRecognizer,
    PhoneRecognizer,
    PlPeselRecognizer,
)

# Case-sensitive matching for the patterns below: presidio compiles patterns with IGNORECASE by
# default, which would turn "a capitalised word" into "any word". Case-insensitive parts are
# scoped with (?i:...) inside the patterns.
CASE_SENSITIVE_FLAGS = regex.DOTALL | regex.MULTILINE

EU_PHONE_REGIONS = (
    "DE",
    "FR",
    "GB",
    "NL",
    "ES",
    "IT",
    "AT",
    "BE",
    "CH",
    "IE",
    "PL",
    "SE",
    "DK",
    "US",
)


# --------------------------------------------------------------------------------------------
# E-mail, without the network
# --------------------------------------------------------------------------------------------

# tldextract's default extractor downloads the public suffix list on first use (and caches it
# in the user's home). The scanner must never reach out: it runs on ingest hosts without
# internet, and a lookup that blocks or fails would stall ingest. This extractor uses only the
# snapshot bundled with the package: no URLs, no disk cache.
_OFFLINE_TLD_EXTRACT = tldextract.TLDExtract(
    suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True
)


def warm_up_offline_suffix_list() -> None:
    """Load the bundled public suffix list now, so the first scan does not pay for it."""
    _OFFLINE_TLD_EXTRACT("example.com")


class OfflineEmailRecognizer(EmailRecognizer):
    """presidio's e-mail recognizer, validating the domain against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        """An address counts only if its domain ends in a known public suffix."""
        return bool(_OFFLINE_TLD_EXTRACT(pattern_text).fqdn)


# --------------------------------------------------------------------------------------------
# Phone numbers in EU regions
# --------------------------------------------------------------------------------------------

PHONE_CONTEXT = [
    "phone", "telephone", "tel", "mobile", "cell", "call", "whatsapp", "fax", "sms",
    "telefon", "rufnummer", "handy", "mobil", "festnetz",
    "téléphone", "tél", "portable", "numéro", "appeler",
    "teléfono", "móvil", "llamar", "telefono", "cellulare", "telefoon", "bellen",
]  # fmt: skip

# No phone number valid in the supported regions has fewer digits than this (national
# significant numbers are at least 5 digits plus a trunk or country prefix).
_MIN_PHONE_DIGITS = 6
# phonenumbers.Leniency.VALID: the match must be a valid number of its region, which is what
# keeps order numbers and dates out.
_LENIENCY_VALID = 1
# Stretches of text that could hold a phone number: digits with the separators people write
# between them, optionally after "+", "00" or "(". Everything else cannot be a phone number.
# Dates are digit runs with separators too, and some are valid numbers somewhere (20260301).
_DATE_SHAPED = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
# An extension ("x123", "ext. 12") belongs to the number: without it the stretch would end
# inside a word ("0199x123") and not be a candidate at all.
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+])(?:\+|\b00)?\(?\d[\d \t().\-/]{4,}\d(?:[ ]?(?:x|ext\.?)[ ]?\d{1,6})?(?![\w])"
)

# How a number is written says how likely it is a phone number at all. A number with a country
# code ("+49 ...", "0049 ...") or a trunk prefix ("030 ...", "(0)20 ...") or in the NANP shape
# "(212) 555-0142" is one; a bare group of digits that happens to be valid somewhere ("17151
# 2450" is a valid Italian landline) is an order number, a postcode and a house number, a
# count, as often as a phone. Those need a context word ("Tel.", "call", "Handy") to be reported.
PHONE_SCORE_INTERNATIONAL = 0.75
PHONE_SCORE_NATIONAL = 0.6
PHONE_SCORE_BARE_DIGITS = 0.3
# A number written like a phone number (country code, or the NANP shape) that no region calls
# valid, only possible (right length): unassigned area codes, made-up test data. The shape is
# the evidence; it is scored below a valid number of the same shape.
PHONE_SCORE_POSSIBLE = 0.5
_TRUNK_PREFIXED = re.compile(r"\(?0\)?")
_EXTENSION = re.compile(r"[ ]?(?:x|ext\.?)[ ]?\d{1,6}$")
_NANP_SHAPED = re.compile(
    r"(?:(?:\+?1|001)[ .\-]?)?(?:\([2-9]\d{2}\)[ ]?|[2-9]\d{2}[ .\-])[2-9]\d{2}[ .\-]\d{4}"
)


class EuPhoneRecognizer(PhoneRecognizer):
    """presidio's libphonenumber-based recognizer for EU regions (and the US), made cheaper.

    presidio runs ``PhoneNumberMatcher`` over the whole text once per region: 14 full passes,
    which made phones 60 % of the scanner's cost. Here the matcher runs only on the stretches
    of digits and separators that could be a number; a number written with "+" needs one
    region (the country code decides), a national one is tried region by region until one
    region accepts it. Leniency stays at VALID: a match must be a valid number of its region,
    which is what keeps order numbers and dates out.
    """

    def __init__(
        self,
        supported_language: str = "en",
        supported_regions: Sequence[str] = EU_PHONE_REGIONS,
        context: list[str] | None = None,
    ) -> None:
        super().__init__(
            context=context or list(PHONE_CONTEXT),
            supported_language=supported_language,
            supported_regions=tuple(supported_regions),
            leniency=_LENIENCY_VALID,
        )

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Find valid phone numbers of the supported regions in ``text``."""
        results: list[RecognizerResult] = []
        for candidate in _PHONE_CANDIDATE.finditer(text):
            window = candidate.group(0)
            if sum(ch.isdigit() for ch in window) < _MIN_PHONE_DIGITS:
                continue
            if _DATE_SHAPED.fullmatch(window.strip()):
                continue
            international = window.lstrip("(").startswith("+")
            regions = self.supported_regions[:1] if international else self.supported_regions
            for region in regions:
                matches = list(
                    phonenumbers.PhoneNumberMatcher(window, region, leniency=_LENIENCY_VALID)
                )
                for match in matches:
                    start = candidate.start() + match.start
                    score = _phone_score(match.raw_string)
                    results.append(self._result(start, start + len(match.raw_string), score))
                if matches:
                    break
            else:
                possible = _possible_phone(window)
                if possible is not None:
                    start = candidate.start() + possible[0]
                    results.append(self._result(start, start + possible[1], PHONE_SCORE_POSSIBLE))
        deduplicated: list[RecognizerResult] = EntityRecognizer.remove_duplicates(results)
        return deduplicated

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(
            entity_type=self.supported_entities[0],
            start=start,
            end=end,
            score=score,
            analysis_explanation=AnalysisExplanation(
                recognizer=type(self).__name__,
                original_score=score,
                textual_explanation="valid phone number of a supported region",
            ),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: type(self).__name__,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


def _possible_phone(window: str) -> tuple[int, int] | None:
    """(offset, length) of a phone-shaped but not valid number in ``window``, if possible."""
    written = window.strip()
    offset = window.index(written[0]) if written else 0
    bare = _EXTENSION.sub("", written)
    if not (written.startswith(("+", "(+", "00")) or _NANP_SHAPED.fullmatch(bare)):
        return None
    try:
        number = phonenumbers.parse(written, "US")
    except phonenumbers.NumberParseException:
        return None
    return (offset, len(written)) if phonenumbers.is_possible_number(number) else None


def _phone_score(raw: str) -> float:
    """The score of a valid number by how it is written (see ``PHONE_SCORE_*``)."""
    written = _EXTENSION.sub("", raw.strip())
    if written.startswith(("+", "00", "(+", "(00")):
        return PHONE_SCORE_INTERNATIONAL
    if _TRUNK_PREFIXED.match(written) or _NANP_SHAPED.fullmatch(written):
        return PHONE_SCORE_NATIONAL
    return PHONE_SCORE_BARE_DIGITS


# --------------------------------------------------------------------------------------------
# Digit-only national ids: a valid check digit is not enough on its own
# --------------------------------------------------------------------------------------------

# presidio scores a checksum-valid match at 1.0. For ids that are nothing but digits, a check
# digit passes for about one random number in ten, so order numbers, customer numbers and
# phone numbers written without "+" would be reported as tax or health ids (and, being scored
# higher, would hide the phone finding). For these ids a valid check digit only keeps the match
# alive at a score below the default threshold; a context word ("Steuer-ID", "NHS", "PESEL")
# lifts it over. A failed check digit still drops the match.
NEEDS_CONTEXT_SCORE = 0.3


def _lowered(patterns: Sequence[Pattern]) -> list[Pattern]:
    return [Pattern(p.name, p.regex, NEEDS_CONTEXT_SCORE) for p in patterns]


class ContextRequiredRecognizer(PatternRecognizer):
    """A presidio checksum recognizer whose matches need a context word to be reported.

    Wraps ``inner`` (e.g. ``NhsRecognizer()``, with its class's ``PATTERNS``): same entity,
    patterns and context words, but the patterns score ``NEEDS_CONTEXT_SCORE`` and a passed
    check digit no longer raises the score to 1.0. A failed check digit still drops the match.
    """

    def __init__(
        self,
        inner: PatternRecognizer,
        inner_patterns: Sequence[Pattern],
        extra_context: Sequence[str] = (),
        supported_language: str = "en",
    ) -> None:
        super().__init__(
            supported_entity=inner.supported_entities[0],
            name=f"{type(inner).__name__}NeedsContext",
            supported_language=supported_language,
            patterns=_lowered(inner_patterns),
            context=[*(inner.context or []), *extra_context],
            global_regex_flags=inner.global_regex_flags,
        )
        self._inner = inner

    def validate_result(self, pattern_text: str) -> bool | None:
        """Drop the match if the check digit fails; otherwise keep its pattern score."""
        return False if self._inner.validate_result(pattern_text) is False else None

    def invalidate_result(self, pattern_text: str) -> bool | None:
        """The wrapped recognizer's pruning rules (e.g. all-equal digits) still apply."""
        invalid: bool | None = self._inner.invalidate_result(pattern_text)
        return invalid


def de_tax_id_recognizer(supported_language: str = "en") -> ContextRequiredRecognizer:
    """German Steuer-IdNr. (``DE_TAX_ID``: 11 digits, check digit), reported with context."""
    extra = ("steuer", "tax", "tin", "identifikationsnummer")
    return ContextRequiredRecognizer(
        DeTaxIdRecognizer(), DeTaxIdRecognizer.PATTERNS, extra, supported_language
    )


def uk_nhs_recognizer(supported_language: str = "en") -> ContextRequiredRecognizer:
    """UK NHS number (``UK_NHS``: 10 digits, mod 11), reported with context."""
    return ContextRequiredRecognizer(
        NhsRecognizer(), NhsRecognizer.PATTERNS, ("nhs",), supported_language
    )


def pl_pesel_recognizer(supported_language: str = "en") -> ContextRequiredRecognizer:
    """Polish PESEL (``PL_PESEL``: 11 digits with a birth date, check digit), with context."""
    return ContextRequiredRecognizer(
        PlPeselRecognizer(), PlPeselRecognizer.PATTERNS, ("pesel",), supported_language
    )


# --------------------------------------------------------------------------------------------
# EU VAT ids
# --------------------------------------------------------------------------------------------

# Formats per the EU VIES documentation (country prefix + national part). GB and XI (Northern
# Ireland) and Swiss UID-MWST are included because EU marketing data holds them too.
_VAT_FORMATS = (
    r"ATU\d{8}",
    r"BE\s?[01]\d{9}",
    r"BG\s?\d{9,10}",
    r"CY\s?\d{8}[A-Z]",
    r"CZ\s?\d{8,10}",
    r"DE\s?\d{9}",
    r"DK\s?\d{8}",
    r"EE\s?\d{9}",
    r"EL\s?\d{9}",
    r"ES\s?[A-Z0-9]\d{7}[A-Z0-9]",
    r"FI\s?\d{8}",
    r"FR\s?[A-HJ-NP-Z0-9]{2}\s?\d{9}",
    r"HR\s?\d{11}",
    r"HU\s?\d{8}",
    r"IE\s?\d[A-Z0-9+*]\d{5}[A-Z]{1,2}",
    r"IT\s?\d{11}",
    r"LT\s?(?:\d{12}|\d{9})",
    r"LU\s?\d{8}",
    r"LV\s?\d{11}",
    r"MT\s?\d{8}",
    r"NL\s?\d{9}B\d{2}",
    r"PL\s?\d{10}",
    r"PT\s?\d{9}",
    r"RO\d{6,10}",
    r"SE\s?\d{10}01",
    r"SI\s?\d{8}",
    r"SK\s?\d{10}",
    r"XI\s?\d{9}",
    r"GB\s?\d{9}(?:\d{3})?",
    r"CHE[-\s]?\d{3}\.?\d{3}\.?\d{3}",
)
_VAT_REGEX = r"\b(?:" + "|".join(_VAT_FORMATS) + r")\b"

VAT_CONTEXT = [
    "vat", "tax", "ust", "umsatzsteuer", "mwst", "uid", "tva", "iva", "btw", "nif", "cif",
    "partita", "p.iva", "intracom", "invoice", "rechnung", "facture", "factura", "fattura",
]  # fmt: skip


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _iso7064_mod11_10_check(digits: str) -> int:
    product = 10
    for char in digits:
        total = (int(char) + product) % 10 or 10
        product = (total * 2) % 11
    check = 11 - product
    return 0 if check == 10 else check


def _vat_checksum(country: str, body: str) -> bool | None:
    """True/False where the check-digit algorithm is public, None where it is not checked."""
    if country == "DE":
        return _iso7064_mod11_10_check(body[:8]) == int(body[8])
    if country == "IT":
        return _luhn_ok(body)
    if country == "BE":
        return 97 - int(body[:8]) % 97 == int(body[8:])
    if country == "FR" and body[:2].isdigit():
        return int(body[:2]) == (12 + 3 * (int(body[2:]) % 97)) % 97
    if country == "NL":
        # Since 2020 sole traders get numbers checked mod 97 over the whole id (letters as
        # 10..35); older numbers use the weighted mod 11 of the BSN/RSIN. Either may be valid.
        numeric = "".join(str(int(ch, 36)) for ch in "NL" + body)
        weighted = sum(int(d) * w for d, w in zip(body[:8], range(9, 1, -1), strict=True))
        return int(numeric) % 97 == 1 or (weighted % 11 != 10 and weighted % 11 == int(body[8]))
    return None


class EuVatIdRecognizer(PatternRecognizer):
    """Country-prefixed EU VAT ids (``EU_VAT_ID``); check digits verified for DE/FR/IT/BE/NL.

    VAT ids identify businesses, but a sole trader's VAT id identifies a natural person, so
    marketing data that carries one carries personal data.
    """

    def __init__(self, supported_language: str = "en", context: list[str] | None = None) -> None:
        super().__init__(
            supported_entity="EU_VAT_ID",
            name="EuVatIdRecognizer",
            supported_language=supported_language,
            patterns=[Pattern("EU VAT id (country prefix)", _VAT_REGEX, 0.5)],
            context=context or list(VAT_CONTEXT),
            global_regex_flags=CASE_SENSITIVE_FLAGS,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        """Check digits where known: a failed check drops the match, a pass scores it 1.0."""
        compact = re.sub(r"[\s.\-]", "", pattern_text)
        country = compact[:2]
        body = compact[3:] if compact.startswith(("ATU", "CHE")) else compact[2:]
        return _vat_checksum(country, body)


# --------------------------------------------------------------------------------------------
# Person names without NER
# --------------------------------------------------------------------------------------------

# A name word: capitalised, letters with inner hyphen or apostrophe (Jean-Pierre, O'Neill).
_NAME_WORD = r"\p{Lu}(?:\p{Ll}+|'\p{Lu}\p{Ll}+)(?:-\p{Lu}\p{Ll}+)?"
_PARTICLE = r"(?:von|van|de|der|den|del|della|di|da|du|dos|zu|le|la|ten|ter)"
_TITLES = (
    r"Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Herr|Frau|Madame|Mme|Mlle|Mademoiselle|Monsieur|M\.|"
    r"Sr|Sra|Srta|Señor|Señora|Don|Doña|Sig|Sig\.ra|Signor|Signora|Dott|Dhr|Mevr|Mevrouw"
)
# Words that follow a greeting or a title but are not names ("Dear Customer", "Hallo Team").
_NOT_NAMES = (
    r"Customer|Customers|Client|Clients|Sir|Sirs|Madam|Team|All|Friend|Friends|Member|Members|"
    r"Valued|Colleague|Colleagues|Everyone|Everybody|Kunde|Kundin|Kunden|Damen|Herren|Kollegen|"
    r"Cliente|Clientes|Amis|Tous|Equipo|Todos|Tutti|Klant|Allemaal|Support|Service|Admin|"
    r"Shopper|Subscriber|Reader|User|Nutzer|Abonnent|Abonnentin|Guest|Gast|"
    r"The|This|That|Our|Your|We|You|It|Der|Die|Das|Le|La|Les|El|Il|Het|De|"
    r"Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|"
    r"January|February|March|April|May|June|July|August|September|October|November|December|"
    r"Thanks|Thank|Regards|Best|Cheers|Hello|Hi|Dear|Hallo|Bonjour|Hola|Ciao|Name|Email|"
    r"Street|Road|Avenue|Lane|Straße|Strasse|Weg|Platz|Rue|Calle|Via|Black|Cyber|New|Summer|"
    r"Winter|Spring|Autumn|Sale|Newsletter|Order|Shop|Store|Premium|Gold|Silver|Basic|Plus"
)
_NOT_A_NAME_START = rf"(?!(?:{_NOT_NAMES}|{_TITLES})\b)"
# A name ends at a word boundary and is not followed by a word that makes it a team or
# department ("Marketing Team").
_NOT_A_NAME_END = (
    r"(?![\p{L}\-'])(?![ \t]+(?:Team|Crew|Service|Support|Department|Group|Shop|Store|"
    r"Abteilung|Equipe|Équipe|Equipo|Squadra|Afdeling)\b)"
)
_FULL_NAME = (
    rf"{_NOT_A_NAME_START}{_NAME_WORD}"
    rf"(?:[ \t]+(?:{_PARTICLE}[ \t]+){{0,2}}{_NOT_A_NAME_START}{_NAME_WORD}){{0,2}}"
    rf"{_NOT_A_NAME_END}"
)

_TITLE_TRIGGER = rf"(?<=\b(?:{_TITLES})\.?[ \t]+)"
_INTRO_TRIGGER = (
    r"(?<=(?i:\bmy name is|\bi am called|\bich heiße|\bich heisse|\bmein name ist|"
    r"\bje m'appelle|\bje m\u2019appelle|\bmon nom est|\bme llamo|\bmi nombre es|\bmi chiamo|"
    r"\bil mio nome è|\bmijn naam is|\bik heet)[ \t]+)"
)
_LABEL_TRIGGER = (
    r"(?<=(?i:\b(?:full name|first name|last name|surname|name|vorname|nachname|"
    r"nom|prénom|nombre|apellidos?|nome|cognome|naam|achternaam|voornaam|contact|kontakt|"
    r"customer|kunde|kundin|client|cliente|klant|ansprechpartner|ansprechpartnerin|"
    r"recipient|empfänger|destinataire|signed by|unterzeichnet von))[ \t]*[:=][ \t]*)"
)
_ROLE_TRIGGER = (
    r"(?<=(?i:\b(?:kontoinhaber|kontoinhaberin|account holder|cardholder|card holder|"
    r"titulaire du compte|titulaire|karteninhaber|karteninhaberin|kunde|kundin|"
    r"ansprechpartner|ansprechpartnerin|empfänger|empfängerin|recipient|destinataire))"
    r"[ \t]+)"
)
_GREETING_TRIGGER = (
    r"(?<=(?i:\b(?:dear|hello|hi|hey|hallo|liebe|lieber|sehr geehrte|sehr geehrter|"
    r"bonjour|cher|chère|salut|hola|estimado|estimada|querido|querida|ciao|gentile|"
    r"caro|cara|beste|geachte|beste))[ \t]+)"
)
_SIGNOFF_TRIGGER = (
    r"(?<=(?i:\b(?:signed|regards|best regards|kind regards|best wishes|best|thanks|"
    r"thank you|cheers|sincerely|yours|mit freundlichen grüßen|viele grüße|beste grüße|"
    r"liebe grüße|grüße|gruß|cordialement|bien à vous|amitiés|saludos|atentamente|"
    r"un saludo|cordiali saluti|distinti saluti|saluti|met vriendelijke groet|groeten))"
    r"[ \t]*[,:\-\u2013\u2014\n][ \t\n]*)"
)

PERSON_CONTEXT = [
    "name", "customer", "contact", "client", "signed", "recipient", "author",
    "kunde", "kundin", "ansprechpartner", "empfänger", "vorname", "nachname",
    "nom", "prénom", "destinataire", "nombre", "apellido", "nome", "cognome", "naam",
]  # fmt: skip


class PersonNameRecognizer(LocalRecognizer):
    """PERSON names found by their surroundings, for a scanner that has no NER model.

    Triggered matches (a title, an introduction, a form label, a greeting or a sign-off right
    before 1-3 capitalised words) score high enough to be reported on their own. Bare runs of
    two or three capitalised words score below any sensible threshold: German capitalises all
    nouns and product names are capitalised everywhere, so only a context word nearby ("Kunde",
    "name", ...) lifts them over. Bare runs that overlap a triggered match are not reported.
    The scanner turns bare runs off (``bare_runs=False``) when its NER model finds names.
    """

    TRIGGERED: tuple[tuple[str, str, float], ...] = (
        ("title", _TITLE_TRIGGER, 0.75),
        ("introduction", _INTRO_TRIGGER, 0.75),
        ("label", _LABEL_TRIGGER, 0.7),
        ("role", _ROLE_TRIGGER, 0.6),
        ("greeting", _GREETING_TRIGGER, 0.55),
        ("sign-off", _SIGNOFF_TRIGGER, 0.5),
    )
    BARE_SCORE = 0.2

    def __init__(
        self,
        supported_language: str = "en",
        context: list[str] | None = None,
        *,
        bare_runs: bool = True,
    ) -> None:
        self._bare_runs = bare_runs
        super().__init__(
            supported_entities=["PERSON"],
            name="PersonNameRecognizer",
            supported_language=supported_language,
            context=context or list(PERSON_CONTEXT),
        )
        flags = regex.MULTILINE | regex.VERSION0
        self._triggered = [
            (kind, regex.compile(trigger + _FULL_NAME, flags), score)
            for kind, trigger, score in self.TRIGGERED
        ]
        two_or_three = (
            rf"(?<![\p{{L}}\p{{N}}'\-]){_NOT_A_NAME_START}{_NAME_WORD}"
            rf"(?:[ \t]+(?:{_PARTICLE}[ \t]+){{0,2}}{_NOT_A_NAME_START}{_NAME_WORD}){{1,2}}"
            r"(?![\p{L}\p{N}])"
        )
        self._bare = regex.compile(two_or_three, flags)

    def load(self) -> None:
        """Nothing to load: the patterns are compiled in the constructor."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Find triggered names, then bare capitalised runs that do not overlap them."""
        found: list[RecognizerResult] = []
        for kind, pattern, score in self._triggered:
            found.extend(
                self._result(m.start(), m.end(), score, kind) for m in pattern.finditer(text)
            )
        for match in self._bare.finditer(text) if self._bare_runs else ():
            start, end = match.span()
            if not any(r.start < end and start < r.end for r in found):
                found.append(self._result(start, end, self.BARE_SCORE, "capitalised words"))
        deduplicated: list[RecognizerResult] = EntityRecognizer.remove_duplicates(found)
        return deduplicated

    def _result(self, start: int, end: int, score: float, kind: str) -> RecognizerResult:
        # The explanation names the rule, never the matched words.
        explanation = AnalysisExplanation(
            recognizer=type(self).__name__,
            original_score=score,
            textual_explanation=f"PERSON after a {kind}",
        )
        return RecognizerResult(
            entity_type="PERSON",
            start=start,
            end=end,
            score=score,
            analysis_explanation=explanation,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: type(self).__name__,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


# --------------------------------------------------------------------------------------------
# Street addresses
# --------------------------------------------------------------------------------------------

_CAP = r"\p{Lu}[\p{L}'\u2019\-]*"
_HOUSE_NO = r"\d{1,4}(?:[ ]?[a-zA-Z](?![\p{L}]))?(?:[ ]?[-/][ ]?\d{1,4}[a-zA-Z]?)?"
# City words: capitalised then lower case, so a UK postcode ("SW1A 2AA") is not read as a city.
_CITY_WORD = r"\p{Lu}\p{Ll}[\p{L}'\u2019\-]*"
_CITY = rf"{_CITY_WORD}(?:[ \-](?:am|an|der|sur|en|de|del|upon|on|{_CITY_WORD})){{0,3}}"
# Postcode + city: DE/FR/ES/IT 5 digits, AT/CH/BE/DK 4 digits, NL "1012 AB", optional "D-".
_EU_POSTCODE_CITY = (
    rf"(?:,?[ \t]+(?:[A-Z]{{1,2}}-)?\d{{4,5}}(?:[ ]?[A-Z]{{2}}(?![\p{{L}}]))?[ \t]+{_CITY})"
)
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?[ ]?\d[A-Z]{2}"
_US_STATE_ZIP = r"[A-Z]{2}[ ]\d{5}(?:-\d{4})?"

# DE/AT/CH and NL: the street type is a suffix of the street name ("Hauptstraße 5",
# "Keizersgracht 12") or a capitalised word after one ("Berliner Straße 5"), then the number.
_SUFFIX_TYPES = (
    r"straße|strasse|str\.|weg|platz|allee|gasse|ring|damm|ufer|chaussee|steig|pfad|"
    r"straat|laan|plein|gracht|kade|singel|dijk|steeg|hof"
)
# As a suffix, "ring" must follow a consonant (Kaiserring, Ostring, Nordring): after a vowel it
# is the English "-ring" of "During 1971", "Offering 20", "Sharing 3". A few English words end
# in a suffix after a consonant too, and are followed by numbers often ("Spring 2026").
_SUFFIX_TYPES_IN_WORD = _SUFFIX_TYPES.replace("ring", "(?<![aeiouyäöü])ring")
# The words end where the next letter would be (not at \b): a coupon code "SPRING20" has no
# word boundary between the word and its digits.
_NOT_STREET_WORDS = (
    r"(?!(?i:spring|string|bring|offspring|hamstring|keyring|earring|arcade)(?![\p{L}]))"
)
_GERMANIC = (
    rf"(?:\b{_NOT_STREET_WORDS}\p{{Lu}}[\p{{L}}\-]*?(?i:{_SUFFIX_TYPES_IN_WORD})"
    rf"|(?:\b{_CAP}[ \t]){{1,2}}(?i:{_SUFFIX_TYPES}))"
    rf"[ \t]*{_HOUSE_NO}\b{_EU_POSTCODE_CITY}?"
)
# FR: number first, then the street type in lower or upper case, then the name.
_FR_TYPES = r"rue|avenue|av\.|boulevard|bd|place|chemin|allée|impasse|quai|cours|route|square"
_FR_LINK = r"(?:de[ ]la|de[ ]l'|de[ ]l\u2019|du|des|de|d'|d\u2019|la|le|les)"
_FRENCH = (
    rf"\b\d{{1,4}}(?:[ ]?(?:bis|ter))?,?[ \t]+(?i:{_FR_TYPES})[ \t]+(?:{_FR_LINK}[ ]?)?{_CAP}"
    rf"(?:[ ](?:{_FR_LINK}[ ]?)?{_CAP}){{0,3}}{_EU_POSTCODE_CITY}?"
)
# UK/US: number first, capitalised name, capitalised street type; then city and a postcode.
_EN_TYPES = (
    r"Street|St\.?|Road|Rd\.?|Lane|Ln\.?|Avenue|Ave\.?|Close|Drive|Dr\.?|Way|Court|Ct\.?|"
    r"Place|Pl\.?|Gardens|Terrace|Crescent|Square|Grove|Row|Mews|Boulevard|Blvd\.?|Parkway|"
    r"Hill|Walk|Park"
)
_ENGLISH = (
    rf"\b\d{{1,5}}[A-Za-z]?[ \t]+(?:{_CAP}[ \t]+){{1,3}}(?:{_EN_TYPES})(?![\p{{L}}])"
    rf"(?:,?[ \t]+(?:Apt|Flat|Suite|Unit)\.?[ \t]*[\w\-]+)?"
    rf"(?:,[ \t]*{_CITY}(?:,?[ \t]+(?:{_UK_POSTCODE}|{_US_STATE_ZIP}))?)?"
)
# ES/IT: the street type first, then the name, then (after an optional comma) the number.
# "Via"/"Viale" only capitalised: lower-case "via" is the English preposition ("via Google Ads
# 3 times"), far more common in marketing events than a lower-case Italian address.
_LATIN_TYPES = (
    r"(?i:calle|c/|avenida|avda\.?|paseo|plaza|camino|carrer|ronda|travesía|"
    r"piazza|p\.zza|corso|largo|vicolo|strada|piazzale|lungomare)|Via|Viale"
)
_LATIN_LINK = r"(?:de[ ]la|de[ ]los|de[ ]las|del|de|la|el|dei|degli|della|delle|di|da|san|santa)"
_LATIN = (
    rf"\b(?:{_LATIN_TYPES})[ \t]+(?:{_LATIN_LINK}[ ])?\p{{Lu}}\p{{Ll}}[\p{{L}}'\u2019\-]*"
    rf"(?:[ ](?:{_LATIN_LINK}[ ])?\p{{Lu}}\p{{Ll}}[\p{{L}}'\u2019\-]*){{0,3}},?[ \t]+"
    rf"(?:(?i:n[º°o]\.?|nr\.?|num\.?)[ ]?)?{_HOUSE_NO}\b{_EU_POSTCODE_CITY}?"
)

ADDRESS_CONTEXT = [
    "address", "street", "lives", "ship", "deliver", "billing", "postal", "mail to",
    "adresse", "anschrift", "wohnt", "liefer", "straße", "rechnungs",
    "domicile", "habite", "livraison", "dirección", "domicilio", "envío", "vive",
    "indirizzo", "residenza", "consegna", "adres", "woont", "bezorg",
]  # fmt: skip


class StreetAddressRecognizer(PatternRecognizer):
    """Street addresses (``STREET_ADDRESS``) of DE/AT/CH, FR, UK, US, NL, ES and IT.

    A match needs a street-type word *and* a house number, so a city, a region or a street
    name on its own (coarse location, which the location category allows) is not reported.
    A following postcode and city are part of the span, so redaction removes them too.
    """

    def __init__(self, supported_language: str = "en", context: list[str] | None = None) -> None:
        super().__init__(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            supported_language=supported_language,
            patterns=[
                Pattern("street address (DE/AT/CH/NL)", _GERMANIC, 0.6),
                Pattern("street address (FR)", _FRENCH, 0.6),
                Pattern("street address (UK/US)", _ENGLISH, 0.6),
                Pattern("street address (ES/IT)", _LATIN, 0.55),
            ],
            context=context or list(ADDRESS_CONTEXT),
            global_regex_flags=CASE_SENSITIVE_FLAGS,
        )


# --------------------------------------------------------------------------------------------
# IBANs in any case, card numbers of every length
# --------------------------------------------------------------------------------------------


class AnyCaseIbanRecognizer(IbanRecognizer):
    """presidio's IBAN recognizer, also for IBANs typed in lower case (``de89 3704 ...``).

    People paste IBANs from forms and chats in whatever case they typed them; the check digits
    do not depend on case (ISO 13616 reads letters case-blind), so neither does the match.
    """

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(
            supported_language=supported_language,
            regex_flags=regex.DOTALL | regex.MULTILINE | regex.IGNORECASE,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        """presidio's check digits and country format, on the upper-cased match."""
        valid: bool | None = super().validate_result(pattern_text.upper())
        return valid


# 13 to 19 digits (ISO/IEC 7812 primary account numbers), optionally in groups separated by
# spaces or dashes, starting with a major-industry digit of payment cards (1-6). presidio's own
# pattern stops at 17 digits, so 18- and 19-digit Visa, Maestro and UnionPay numbers passed.
_CARD_REGEX = r"(?<![\d\-])[1-6]\d{3}(?:[ \-]?\d){9,15}(?![\d\-])"


class CardNumberRecognizer(CreditCardRecognizer):
    """Payment card numbers of 13-19 digits with a valid Luhn check digit (``CREDIT_CARD``)."""

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(
            supported_language=supported_language,
            patterns=[Pattern("card number (13-19 digits)", _CARD_REGEX, 0.3)],
        )

    def validate_result(self, pattern_text: str) -> bool:
        """Luhn over the digits; groups must be written consistently (one kind of separator)."""
        digits = re.sub(r"[ \-]", "", pattern_text)
        if not 13 <= len(digits) <= 19:
            return False
        if " " in pattern_text and "-" in pattern_text:
            return False
        return _luhn_ok(digits)
