"""Normalization per identifier type, including refusals."""

from __future__ import annotations

from collections.abc import Callable

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from identity.errors import InvalidIdentifierError, UnknownIdentifierTypeError
from identity.identifiers import _parse_phone, _valid_number, normalize_email, normalize_phone
from identity.policy import IdentityPolicy

VALID = [
    ("email", "  Ann.Lee@Shop.DE ", "ann.lee@shop.de"),
    ("email", "ANN+news@shop.de", "ann+news@shop.de"),
    ("phone", "+44 20 7946 0958", "+442079460958"),
    ("phone", "020 7946 0958", "+442079460958"),  # national format, default region GB
    ("phone", "+1 (650) 253-0000", "+16502530000"),
    ("idfa", "6D92078A-8246-4BA4-AE5B-76104861E7DC", "6d92078a-8246-4ba4-ae5b-76104861e7dc"),
    ("gaid", "{38400000-8cf0-11bd-b23e-10b96e40000d}", "38400000-8cf0-11bd-b23e-10b96e40000d"),
    ("customer_id", "  CRM-00042 ", "CRM-00042"),  # case kept: issuers may be case-sensitive
    ("cookie_id", "GA1.2.1234.5678", "GA1.2.1234.5678"),
    ("anonymous_id", "a1b2c3", "a1b2c3"),
    (
        "email_sha256",
        "B4C9A289323B21A01C3E940F150EB9B8C542587F1ABFD8F0E1CC1FFC5E475514",
        "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514",
    ),
]

INVALID = [
    ("email", "not-an-email", "invalid_email"),
    ("email", "ann@localhost", "invalid_email"),
    ("email", "ann@@shop.de", "invalid_email"),
    ("email", "a" * 400 + "@shop.de", "too_long"),
    ("phone", "12", "invalid_phone"),
    ("phone", "+44 20 7946 09", "invalid_phone"),
    ("phone", "call me", "invalid_phone"),
    ("idfa", "not-a-uuid", "invalid_ad_id"),
    ("idfa", "6d92078a82464ba4ae5b76104861e7", "invalid_ad_id"),
    ("email_sha256", "abc123", "invalid_sha256"),
    ("email_sha256", "z" * 64, "invalid_sha256"),
    ("customer_id", "   ", "empty"),
    ("customer_id", "abc\x00def", "control_characters"),
    ("cookie_id", "x" * 257, "too_long"),
]


@pytest.mark.parametrize(("identifier_type", "raw", "expected"), VALID)
def test_normalize_gives_canonical_form_when_value_is_valid(
    policy: IdentityPolicy, identifier_type: str, raw: str, expected: str
) -> None:
    assert policy.normalize(identifier_type, raw, "GB").value == expected


@pytest.mark.parametrize(("identifier_type", "raw", "reason"), INVALID)
def test_normalize_refuses_with_reason_and_no_value_when_invalid(
    policy: IdentityPolicy, identifier_type: str, raw: str, reason: str
) -> None:
    with pytest.raises(InvalidIdentifierError) as caught:
        policy.normalize(identifier_type, raw, "GB")
    assert caught.value.reason == reason
    if len(raw.strip()) > 3:
        assert raw.strip() not in str(caught.value)


def test_phone_without_country_is_refused_when_no_default_region(policy: IdentityPolicy) -> None:
    with pytest.raises(InvalidIdentifierError) as caught:
        policy.normalize("phone", "020 7946 0958", None)
    assert caught.value.reason == "phone_missing_country"


def test_unknown_type_is_refused_and_known_types_are_listed(policy: IdentityPolicy) -> None:
    with pytest.raises(UnknownIdentifierTypeError) as caught:
        policy.normalize("passport", "X123", "GB")
    assert "email" in str(caught.value)


@pytest.mark.parametrize(
    ("identifier_type", "raw", "reason"),
    [
        ("email", "test@shop.de", "blocked_pattern"),
        ("email", "someone@example.com", "blocked_pattern"),
        ("idfa", "00000000-0000-0000-0000-000000000000", "blocked_value"),
        ("gaid", "00000000-0000-0000-0000-000000000000", "blocked_value"),
        ("customer_id", "NULL", "blocked_value"),  # matched case-insensitively
        (
            "email_sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "blocked_value",
        ),
    ],
)
def test_blocked_values_are_recognised_after_normalization(
    policy: IdentityPolicy, identifier_type: str, raw: str, reason: str
) -> None:
    identifier = policy.normalize(identifier_type, raw, "GB")
    assert policy.blocked_reason(identifier) == reason


def test_normalized_identifier_repr_hides_the_value(policy: IdentityPolicy) -> None:
    identifier = policy.normalize("email", "ann@shop.de", "GB")
    assert "ann" not in repr(identifier)
    assert "shop" not in str(identifier)


_LOCAL = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,70}", fullmatch=True)
_DOMAIN = st.sampled_from(
    [
        "shop.de",
        "Mail.Example.ORG",
        "xn--bcher-kva.de",
        "sub.domain.co.uk",
        "x.test",
        "a-.de",
        "localhost",
        "b\u00fccher.de",
        "192.168.0.1",
        "[127.0.0.1]",
        "nodot",
        "x.y",
    ]
)


@settings(max_examples=400, deadline=None)
@given(local=_LOCAL, domain=_DOMAIN)
def test_email_fast_path_agrees_with_the_full_validator(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    try:
        expected: str | None = validate_email(
            address, check_deliverability=False
        ).normalized.lower()
    except EmailNotValidError:
        expected = None
    try:
        got: str | None = normalize_email("email", address, None)
    except InvalidIdentifierError:
        got = None
    assert got == expected


_COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def _phone_outcome(normalize: Callable[[str], str], value: str) -> tuple[str, str]:
    try:
        return ("ok", normalize(value))
    except InvalidIdentifierError as exc:
        return ("error", f"{exc.reason}: {exc.message}")


@settings(max_examples=3000, deadline=None)
@given(
    country=st.sampled_from(_COUNTRY_CODES),
    national=st.text(alphabet="0123456789", min_size=4, max_size=13),
    region=st.sampled_from([None, "GB", "DE", "US"]),
)
@example(country=49, national="15112345678", region=None)  # a valid German mobile
@example(country=39, national="0612345678", region=None)  # Italian leading zero: slow path
@example(country=54, national="91123456789", region=None)  # Argentina: parsed by pattern
@example(country=1, national="2025550123", region=None)
def test_strict_e164_fast_path_answers_exactly_as_libphonenumber_parse_when_given_any_e164(
    country: int, national: str, region: str | None
) -> None:
    value = f"+{country}{national}"
    fast = _phone_outcome(lambda v: normalize_phone("phone", v, region), value)
    slow = _phone_outcome(lambda v: _parse_phone("phone", v.strip(), region), value)
    assert fast == slow


def _example_numbers() -> list[phonenumbers.PhoneNumber]:
    """libphonenumber's example number of every region (and non-geographic code) and type:
    valid numbers of every shape the metadata knows, to mutate below."""
    found: list[phonenumbers.PhoneNumber] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in phonenumbers.PhoneNumberType.values():
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                found.append(number)
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            found.append(number)
    return found


_EXAMPLES = _example_numbers()


def test_compiled_validity_agrees_with_libphonenumber_on_every_example_number() -> None:
    checked = 0
    for number in _EXAMPLES:
        national = str(number.national_number)
        if number.italian_leading_zero:
            continue  # never reaches the compiled check: _strict_e164 sends it to parse
        expected = phonenumbers.is_valid_number(number)
        assert number.country_code is not None
        assert _valid_number(number.country_code, national) == expected, number
        checked += 1
    assert checked > 1000  # every region and type, not a handful


@settings(max_examples=4000, deadline=None)
@given(
    base=st.sampled_from(_EXAMPLES),
    cut=st.integers(0, 3),
    extra=st.text(alphabet="0123456789", max_size=3),
    position=st.integers(0, 14),
    digit=st.sampled_from("0123456789"),
)
def test_compiled_validity_agrees_with_libphonenumber_when_valid_numbers_are_mutated(
    base: phonenumbers.PhoneNumber, cut: int, extra: str, position: int, digit: str
) -> None:
    """Valid numbers with digits changed, dropped or added: near misses of every pattern (the
    random-digit test above finds mostly numbers far from any)."""
    national = str(base.national_number)
    national = national[: len(national) - cut] + extra if cut or extra else national
    if national:
        at = position % len(national)
        national = national[:at] + digit + national[at + 1 :]
    if not national or national.startswith("0"):
        return
    code = base.country_code
    assert code is not None
    number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    assert _valid_number(code, national) == phonenumbers.is_valid_number(number)
    value = f"+{code}{national}"
    for region in (None, "GB"):

        def fast_path(v: str, r: str | None = region) -> str:
            return normalize_phone("phone", v, r)

        def general_path(v: str, r: str | None = region) -> str:
            return _parse_phone("phone", v.strip(), r)

        assert _phone_outcome(fast_path, value) == _phone_outcome(general_path, value)
