"""Identifier values and their normalization.

A raw identifier arrives as ``(type, value)``. Normalization turns the value into its canonical
form so that the same real-world identifier always hashes to the same digest (``Foo@X.com`` and
``foo@x.com `` are one email). Each identifier type in ``policies/identity.yaml`` names one of
the normalizers below.

Privacy: :class:`NormalizedIdentifier` holds a raw personal value in memory for the short time
between parsing and hashing. Its ``repr`` hides the value so it cannot leak into logs or
tracebacks by accident.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from identity.errors import InvalidIdentifierError
from identity.frozen import quick_init


class Normalizer(StrEnum):
    """The normalization rule an identifier type uses."""

    EMAIL = "email"
    PHONE = "phone"
    MOBILE_AD_ID = "mobile_ad_id"
    SHA256_HEX = "sha256_hex"
    OPAQUE = "opaque"
    OPAQUE_CASE_INSENSITIVE = "opaque_case_insensitive"


@quick_init
@dataclass(frozen=True, slots=True)
class NormalizedIdentifier:
    """An identifier in canonical form, not yet hashed. Never persisted, never logged."""

    type: str
    value: str = field(repr=False)

    def __repr__(self) -> str:
        return f"NormalizedIdentifier(type={self.type!r}, value=<redacted>)"


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _fail(identifier_type: str, reason: str, message: str) -> InvalidIdentifierError:
    return InvalidIdentifierError(identifier_type, reason, message)


def normalize_email(identifier_type: str, value: str, _region: str | None) -> str:
    """Trim, validate syntax (no DNS lookups: they leak the domain and are slow) and lowercase.

    The whole address is lowercased. RFC 5321 allows case-sensitive local parts, but no mail
    provider in practice treats them so, and lowercasing is what ad platforms expect before they
    hash an email; linking ``Ann@x.com`` and ``ann@x.com`` as one person is the intended behaviour.
    """
    candidate = value.strip()
    fast = _fast_ascii_email(candidate)
    if fast is not None:
        return fast
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError:
        # The library's message can quote parts of the address; ours never does.
        raise _fail(identifier_type, "invalid_email", "not a valid email address") from None
    return result.normalized.lower()


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")


@functools.lru_cache(maxsize=65_536)
def _valid_domain(domain: str) -> str | None:
    """The domain as email-validator normalizes it, or ``None`` if it refuses it.

    Cached because domains repeat heavily in real data (a handful of providers) and the
    per-character IDNA checks dominate the cost of normalizing an email. The cache holds domain
    names only, in process memory, never local parts.
    """
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def _fast_ascii_email(candidate: str) -> str | None:
    """The normalized form of a plain ASCII address (dot-atom local part), else ``None``.

    Gives exactly what the full validator gives for such addresses (tests compare both); anything
    unusual (quoted local parts, non-ASCII, comments, odd lengths) returns ``None`` and takes the
    full path.
    """
    if not candidate.isascii() or candidate.count("@") != 1 or len(candidate) > 254:
        return None
    local, domain = candidate.split("@")
    if len(local) > 64 or not _DOT_ATOM.fullmatch(local):
        return None
    normalized_domain = _valid_domain(domain)
    if normalized_domain is None:
        return None  # the full path raises the error
    return f"{local}@{normalized_domain}".lower()


_E164 = re.compile(r"\+([1-9][0-9]{6,14})")


@functools.lru_cache(maxsize=1024)
def _simple_national_prefix(country_code: int) -> str | None:
    """The national prefix ``parse`` would strip for ``country_code`` when it is a plain digit
    string (``"0"``, ``"1"``, ``""`` for none); ``None`` when the country's parsing rule is a
    pattern (a carrier code, a mobile token), where only ``parse`` knows the answer."""
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return None
    prefix = metadata.national_prefix_for_parsing or metadata.national_prefix or ""
    return prefix if prefix.isdigit() or not prefix else None


# The number types libphonenumber's validity check tries after the general description
# (``_number_type_helper``): a number is valid for a region when it matches the general
# description and at least one of these.
_NUMBER_TYPE_DESCS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)


@dataclass(frozen=True, slots=True)
class _NumberDesc:
    """One ``PhoneNumberDesc``, compiled once: possible lengths (empty: any) and its pattern."""

    lengths: frozenset[int]
    pattern: re.Pattern[str]

    def matches(self, national: str) -> bool:
        return (not self.lengths or len(national) in self.lengths) and bool(
            self.pattern.fullmatch(national)
        )


def _number_desc(desc: phonenumbers.PhoneNumberDesc | None) -> _NumberDesc | None:
    if desc is None or not desc.national_number_pattern:
        return None  # libphonenumber: no pattern never matches
    return _NumberDesc(frozenset(desc.possible_length), re.compile(desc.national_number_pattern))


@dataclass(frozen=True, slots=True)
class _RegionRule:
    """What ``is_valid_number`` checks of one region's metadata, compiled once."""

    general: _NumberDesc | None
    types: tuple[_NumberDesc, ...]
    # Per number length, the patterns of every type that allows it as one alternation (made on
    # first use): one regex match instead of up to ten, with the same answer, since only
    # *whether* some type matches counts here, not which one.
    any_type: dict[int, re.Pattern[str] | None] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, metadata: phonenumbers.PhoneMetadata) -> _RegionRule:
        descs = (_number_desc(getattr(metadata, name)) for name in _NUMBER_TYPE_DESCS)
        return cls(_number_desc(metadata.general_desc), tuple(d for d in descs if d is not None))

    def known_type(self, national: str) -> bool:
        """``_number_type_helper(national, metadata) != UNKNOWN``."""
        if self.general is None or not self.general.matches(national):
            return False
        length = len(national)
        if length not in self.any_type:
            patterns = [
                f"(?:{d.pattern.pattern})"
                for d in self.types
                if not d.lengths or length in d.lengths
            ]
            self.any_type[length] = re.compile("|".join(patterns)) if patterns else None
        pattern = self.any_type[length]
        return pattern is not None and pattern.fullmatch(national) is not None


@dataclass(frozen=True, slots=True)
class _CountryRule:
    """``is_valid_number`` for the numbers of one country calling code, compiled once.

    ``regions``: for a code shared by several regions, how ``region_code_for_number`` picks one
    (each region's leading-digits pattern if it has one, else its full type check), in
    libphonenumber's order; ``valid``: the rule of each region for ``is_valid_number_for_region``,
    or ``None`` where that check fails before looking at the number.
    """

    regions: tuple[tuple[str, re.Pattern[str] | None, _RegionRule | None], ...]
    valid: dict[str, _RegionRule | None]

    def is_valid(self, national: str) -> bool:
        region = self._region(national)
        rule = self.valid.get(region) if region is not None else None
        return rule is not None and rule.known_type(national)

    def _region(self, national: str) -> str | None:
        if len(self.regions) == 1:
            return self.regions[0][0]
        for region, leading, rule in self.regions:
            if leading is not None:
                if leading.match(national):
                    return region
            elif rule is not None and rule.known_type(national):
                return region
        return None


@functools.lru_cache(maxsize=512)
def _country_rule(country_code: int) -> _CountryRule:
    """The compiled validity rule of ``country_code`` (one of ``COUNTRY_CODE_TO_REGION_CODE``)."""
    names = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country_code]
    regions: list[tuple[str, re.Pattern[str] | None, _RegionRule | None]] = []
    valid: dict[str, _RegionRule | None] = {}
    for name in names:
        # region_code_for_number: metadata_for_region; a region without metadata is skipped.
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(name.upper(), None)
        if len(names) > 1 and metadata is not None:
            if metadata.leading_digits is not None:
                regions.append((name, re.compile(metadata.leading_digits), None))
            else:
                regions.append((name, None, _RegionRule.of(metadata)))
        # is_valid_number_for_region: metadata_for_region_or_calling_code, and the region's
        # own country code must be this one (except the non-geographic "001").
        for_region = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            country_code, name.upper()
        )
        matches_code = (
            name == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
            or phonenumbers.country_code_for_valid_region(name) == country_code
        )
        valid[name] = _RegionRule.of(for_region) if for_region and matches_code else None
    if len(names) == 1:
        regions = [(names[0], None, None)]
    return _CountryRule(tuple(regions), valid)


def _valid_number(country_code: int, national: str) -> bool:
    """``phonenumbers.is_valid_number`` of the number ``+<country_code><national>`` whose
    national significant number is ``national`` (no Italian leading zero), at a fraction of
    its cost: the same checks in the same order, on patterns compiled once per country code
    instead of looked up per call (~14 us a number in libphonenumber, most of a bulk phone's
    normalization). Differentially tested against libphonenumber over every country code."""
    return _country_rule(country_code).is_valid(national)


def _strict_e164(candidate: str) -> tuple[int, str] | None:
    """The country code and national significant number of an already-E.164 string (``+`` and
    7-15 digits), found without ``parse``; ``None`` when ``parse`` is needed.

    Most bulk data arrives in E.164 already, and ``parse`` costs ~20 us a number. For such a
    string the result of ``parse`` is known: country codes are prefix-free, so the first 1-3
    digits that name one are the country code, and the rest is the national number as is, unless
    it starts with a zero (Italian leading zeros) or with the country's national prefix (which
    ``parse`` may strip), or the country strips by pattern: those take the slow path. The validity
    check (``is_valid_number``) is the same on both paths, and so is the output (E.164 of this
    number is the string itself).
    """
    match = _E164.fullmatch(candidate)
    if match is None:
        return None
    digits = match.group(1)
    for length in (1, 2, 3):
        country_code = int(digits[:length])
        if phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code):
            national = digits[length:]
            prefix = _simple_national_prefix(country_code)
            if (
                prefix is None
                or national.startswith("0")
                or (prefix and national.startswith(prefix))
            ):
                return None
            return country_code, national
    return None


def normalize_phone(identifier_type: str, value: str, region: str | None) -> str:
    """Parse with libphonenumber and format as E.164 (``+4420...``).

    Numbers without a country prefix are read in ``region`` (the ``IDGRAPH_DEFAULT_REGION``
    setting); with no region set they are refused rather than guessed.
    """
    candidate = value.strip()
    fast = _strict_e164(candidate)
    if fast is not None and _valid_number(*fast):
        return candidate  # E.164 of that number is the string itself
    # Not strict E.164, or not valid: the general path (which words the error exactly as ever).
    return _parse_phone(identifier_type, candidate, region)


def _parse_phone(identifier_type: str, candidate: str, region: str | None) -> str:
    """The general path of :func:`normalize_phone`: libphonenumber's ``parse``."""
    try:
        parsed = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        if region is None and not candidate.startswith("+"):
            raise _fail(
                identifier_type,
                "phone_missing_country",
                "phone number has no +country prefix and no default region is configured",
            ) from None
        raise _fail(identifier_type, "invalid_phone", "not a parseable phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise _fail(identifier_type, "invalid_phone", "not a valid phone number for its region")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_mobile_ad_id(identifier_type: str, value: str, _region: str | None) -> str:
    """IDFA/GAID: canonical lowercase hyphenated UUID.

    The all-zero id is a valid UUID here but the shipped policy blocks it: iOS returns it when
    the user denied tracking and Android after an opt-out, so linking on it would merge every
    opted-out device into one person. Blocking (not rejecting) it keeps the event's other
    identifiers and records the refusal.
    """
    candidate = value.strip()
    try:
        parsed = uuid.UUID(candidate)
    except ValueError:
        raise _fail(
            identifier_type, "invalid_ad_id", "not a UUID-formatted advertising id"
        ) from None
    if len(candidate.replace("-", "").strip("{}").removeprefix("urn:uuid:")) != 32:
        raise _fail(identifier_type, "invalid_ad_id", "not a UUID-formatted advertising id")
    return str(parsed)


def normalize_sha256_hex(identifier_type: str, value: str, _region: str | None) -> str:
    """A partner-supplied SHA-256 of a normalized email: 64 hex digits, lowercased.

    Kept as its own type because idgraph cannot check how the partner normalized the email
    before hashing; it links to a plain email only through an event that names both.
    """
    candidate = value.strip().lower()
    if not _SHA256_HEX.fullmatch(candidate):
        raise _fail(identifier_type, "invalid_sha256", "not 64 hexadecimal digits")
    if candidate == "0" * 64:
        raise _fail(identifier_type, "invalid_sha256", "all-zero digest")
    return candidate


def normalize_opaque(identifier_type: str, value: str, _region: str | None) -> str:
    """Customer ids, cookies, anonymous ids: trimmed, case preserved, no control characters."""
    candidate = value.strip()
    if not candidate:
        raise _fail(identifier_type, "empty", "empty value")
    if _CONTROL.search(candidate):
        raise _fail(identifier_type, "control_characters", "contains control characters")
    return candidate


def normalize_opaque_case_insensitive(identifier_type: str, value: str, region: str | None) -> str:
    """Like :func:`normalize_opaque` but lowercased, for ids whose issuers ignore case."""
    return normalize_opaque(identifier_type, value, region).lower()


NormalizeFn = Callable[[str, str, str | None], str]

NORMALIZERS: dict[Normalizer, NormalizeFn] = {
    Normalizer.EMAIL: normalize_email,
    Normalizer.PHONE: normalize_phone,
    Normalizer.MOBILE_AD_ID: normalize_mobile_ad_id,
    Normalizer.SHA256_HEX: normalize_sha256_hex,
    Normalizer.OPAQUE: normalize_opaque,
    Normalizer.OPAQUE_CASE_INSENSITIVE: normalize_opaque_case_insensitive,
}
