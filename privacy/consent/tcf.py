"""Decoder for IAB TCF v2 TC strings (the TCF v2.2 "TC String" format).

A TC string is segments joined by ``.``. The first is the core segment; the optional segments
that follow each start with a 3-bit segment type: 1 disclosed vendors, 2 allowed vendors (legacy,
decoded), 3 publisher TC. Field widths follow the IAB "Transparency & Consent String and Global
Vendor List Format" specification, checked against the reference implementation
``InteractiveAdvertisingBureau/iabtcf-es`` (``modules/core/src/encoder/BitLength.ts``,
``sequence/FieldSequence.ts``, ``field/VendorVectorEncoder.ts``,
``field/PurposeRestrictionVectorEncoder.ts``).

Decoding is strict: a truncated segment, a version other than 2, an unknown or repeated segment
type, a range whose end is below its start, a vendor id 0 or above ``MaxVendorId``, bad base64url
or unexpected trailing bits all raise :class:`TcfDecodeError`. See ``docs/consent-strings.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from privacy.consent.bits import (
    BitReader,
    ConsentStringDecodeError,
    IdRange,
    expand_ranges,
    merge_ranges,
    read_publisher_purposes,
)

TCF_VERSION = 2
#: The first TcfPolicyVersion of TCF v2.2.
TCF_V22_POLICY_VERSION = 4

SEGMENT_DISCLOSED_VENDORS = 1
SEGMENT_ALLOWED_VENDORS = 2
SEGMENT_PUBLISHER_TC = 3
_SEGMENT_NAMES = {
    SEGMENT_DISCLOSED_VENDORS: "disclosed vendors",
    SEGMENT_ALLOWED_VENDORS: "allowed vendors",
    SEGMENT_PUBLISHER_TC: "publisher TC",
}


class TcfDecodeError(ConsentStringDecodeError):
    """A TC string does not decode; the message names the segment and bit offset."""

    code = "tcf-string-invalid"


class RestrictionType(IntEnum):
    """A publisher restriction's type (2 bits)."""

    NOT_ALLOWED = 0
    REQUIRE_CONSENT = 1
    REQUIRE_LEGITIMATE_INTEREST = 2
    UNDEFINED = 3


@dataclass(frozen=True)
class VendorVector:
    """A set of vendor ids with the ``MaxVendorId`` it was encoded with.

    Bitfield and range encodings of the same set decode to equal vectors: the encoding is a
    size optimisation, not meaning.
    """

    max_vendor_id: int
    vendor_ids: frozenset[int]

    def __contains__(self, vendor_id: object) -> bool:
        return vendor_id in self.vendor_ids


@dataclass(frozen=True)
class PublisherRestriction:
    """A publisher's restriction of one purpose for some vendors.

    ``vendor_ranges`` are inclusive, sorted and merged, so equal sets compare equal. They are
    kept as ranges because one restriction can cover up to 65535 vendors.
    """

    purpose_id: int
    restriction_type: RestrictionType
    vendor_ranges: tuple[IdRange, ...]

    def applies_to(self, vendor_id: int) -> bool:
        """Whether this restriction covers ``vendor_id``."""
        return any(start <= vendor_id <= end for start, end in self.vendor_ranges)

    def vendor_ids(self) -> frozenset[int]:
        """The vendor ids this restriction covers."""
        return expand_ranges(self.vendor_ranges)


@dataclass(frozen=True)
class PublisherTC:
    """The publisher TC segment (type 3): the publisher's own purposes and custom purposes."""

    purpose_consents: frozenset[int]
    purpose_legitimate_interests: frozenset[int]
    num_custom_purposes: int
    custom_purpose_consents: frozenset[int]
    custom_purpose_legitimate_interests: frozenset[int]


@dataclass(frozen=True)
class TCString:
    """A decoded TCF v2 TC string: the core segment and any optional segments.

    Id sets hold 1-based ids (purpose 1 is the first bit). Optional segments that were not in
    the string are ``None``.
    """

    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    tcf_policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    special_feature_optins: frozenset[int]
    purpose_consents: frozenset[int]
    purpose_legitimate_interests: frozenset[int]
    purpose_one_treatment: bool
    publisher_cc: str
    vendor_consents: VendorVector
    vendor_legitimate_interests: VendorVector
    publisher_restrictions: tuple[PublisherRestriction, ...]
    disclosed_vendors: VendorVector | None = None
    allowed_vendors: VendorVector | None = None
    publisher_tc: PublisherTC | None = None

    @property
    def pre_v22_policy(self) -> bool:
        """Whether the string was made under a TCF policy before v2.2 (policy version below 4).

        TCF v2.2 (policy version 4) dropped legitimate interest for purposes 3-6 and changed the
        texts users saw; a CMP still writing 2 or 3 collected consent under the old rules.
        """
        return self.tcf_policy_version < TCF_V22_POLICY_VERSION

    def purpose_consent(self, purpose_id: int) -> bool:
        """Whether the user consented to ``purpose_id``."""
        return purpose_id in self.purpose_consents

    def purpose_legitimate_interest(self, purpose_id: int) -> bool:
        """Whether legitimate interest for ``purpose_id`` was established (and not objected to)."""
        return purpose_id in self.purpose_legitimate_interests

    def special_feature_optin(self, feature_id: int) -> bool:
        """Whether the user opted in to special feature ``feature_id``."""
        return feature_id in self.special_feature_optins

    def vendor_consent(self, vendor_id: int) -> bool:
        """Whether the user consented to ``vendor_id``."""
        return vendor_id in self.vendor_consents

    def vendor_legitimate_interest(self, vendor_id: int) -> bool:
        """Whether legitimate interest was established for ``vendor_id``."""
        return vendor_id in self.vendor_legitimate_interests

    def vendor_disclosed(self, vendor_id: int) -> bool | None:
        """Whether ``vendor_id`` was disclosed; ``None`` without a disclosed-vendors segment."""
        if self.disclosed_vendors is None:
            return None
        return vendor_id in self.disclosed_vendors

    def restrictions_for(self, vendor_id: int, purpose_id: int) -> tuple[RestrictionType, ...]:
        """The publisher restriction types that apply to ``vendor_id`` for ``purpose_id``."""
        return tuple(
            restriction.restriction_type
            for restriction in self.publisher_restrictions
            if restriction.purpose_id == purpose_id and restriction.applies_to(vendor_id)
        )


def _read_range_entries(
    reader: BitReader, field: str, *, max_vendor_id: int | None
) -> tuple[IdRange, ...]:
    """NumEntries (12 bits), then entries: IsARange (1), start (16) and, for a range, end (16)."""
    count = reader.read_int(12, f"{field} NumEntries")
    ranges: list[IdRange] = []
    for index in range(count):
        entry = f"{field} entry {index + 1}"
        entry_bit = reader.position
        is_range = reader.read_bool(f"{entry} IsARange")
        start = reader.read_int(16, f"{entry} start vendor id")
        end = reader.read_int(16, f"{entry} end vendor id") if is_range else start
        if start == 0:
            raise reader.error("bad_range", f"{entry} has vendor id 0", at_bit=entry_bit)
        if end < start:
            raise reader.error(
                "bad_range", f"{entry} ends at {end}, before its start {start}", at_bit=entry_bit
            )
        if max_vendor_id is not None and end > max_vendor_id:
            raise reader.error(
                "bad_range",
                f"{entry} reaches vendor id {end}, above MaxVendorId {max_vendor_id}",
                at_bit=entry_bit,
            )
        ranges.append((start, end))
    return merge_ranges(ranges)


def _read_vendor_vector(reader: BitReader, field: str) -> VendorVector:
    """MaxVendorId (16), IsRangeEncoding (1), then a MaxVendorId-bit bitfield or range entries."""
    max_vendor_id = reader.read_int(16, f"{field} MaxVendorId")
    if reader.read_bool(f"{field} IsRangeEncoding"):
        ranges = _read_range_entries(reader, field, max_vendor_id=max_vendor_id)
        return VendorVector(max_vendor_id, expand_ranges(ranges))
    return VendorVector(max_vendor_id, reader.read_bitfield(max_vendor_id, f"{field} BitField"))


def _read_publisher_restrictions(reader: BitReader) -> tuple[PublisherRestriction, ...]:
    count = reader.read_int(12, "NumPubRestrictions")
    restrictions: list[PublisherRestriction] = []
    for index in range(count):
        field = f"PubRestriction {index + 1}"
        entry_bit = reader.position
        purpose_id = reader.read_int(6, f"{field} PurposeId")
        if purpose_id == 0:
            raise reader.error("bad_purpose", f"{field} has purpose id 0", at_bit=entry_bit)
        restriction_type = RestrictionType(reader.read_int(2, f"{field} RestrictionType"))
        ranges = _read_range_entries(reader, field, max_vendor_id=None)
        restrictions.append(PublisherRestriction(purpose_id, restriction_type, ranges))
    return tuple(restrictions)


def _read_publisher_tc(reader: BitReader) -> PublisherTC:
    consents, legitimate, custom, custom_consents, custom_legitimate = read_publisher_purposes(
        reader, "Consent", "LITransparency"
    )
    return PublisherTC(
        purpose_consents=consents,
        purpose_legitimate_interests=legitimate,
        num_custom_purposes=custom,
        custom_purpose_consents=custom_consents,
        custom_purpose_legitimate_interests=custom_legitimate,
    )


def decode_tc_string(s: str) -> TCString:
    """Decode a TCF v2 TC string; raise :class:`TcfDecodeError` saying where it is malformed."""
    if not s:
        raise TcfDecodeError("empty", "TC string is empty")
    segments = s.split(".")
    core = BitReader(segments[0], where="core segment", error=TcfDecodeError)
    version = core.read_int(6, "Version")
    if version != TCF_VERSION:
        raise core.error(
            "unsupported_version", f"Version is {version}; only TCF v2 is supported", at_bit=0
        )
    created = core.read_datetime_deciseconds("Created")
    last_updated = core.read_datetime_deciseconds("LastUpdated")
    cmp_id = core.read_int(12, "CmpId")
    cmp_version = core.read_int(12, "CmpVersion")
    consent_screen = core.read_int(6, "ConsentScreen")
    consent_language = core.read_6bit_letters(2, "ConsentLanguage")
    vendor_list_version = core.read_int(12, "VendorListVersion")
    tcf_policy_version = core.read_int(6, "TcfPolicyVersion")
    is_service_specific = core.read_bool("IsServiceSpecific")
    use_non_standard_texts = core.read_bool("UseNonStandardTexts")
    special_feature_optins = core.read_bitfield(12, "SpecialFeatureOptIns")
    purpose_consents = core.read_bitfield(24, "PurposesConsent")
    purpose_legitimate_interests = core.read_bitfield(24, "PurposesLITransparency")
    purpose_one_treatment = core.read_bool("PurposeOneTreatment")
    publisher_cc = core.read_6bit_letters(2, "PublisherCC")
    vendor_consents = _read_vendor_vector(core, "VendorConsents")
    vendor_legitimate_interests = _read_vendor_vector(core, "VendorLegitimateInterests")
    publisher_restrictions = _read_publisher_restrictions(core)
    core.finish()

    seen: set[int] = set()
    disclosed: VendorVector | None = None
    allowed: VendorVector | None = None
    publisher_tc: PublisherTC | None = None
    for number, segment in enumerate(segments[1:], start=2):
        reader = BitReader(segment, where=f"segment {number}", error=TcfDecodeError)
        segment_type = reader.read_int(3, "SegmentType")
        if segment_type not in _SEGMENT_NAMES:
            raise reader.error(
                "unknown_segment", f"SegmentType {segment_type} is not an optional segment type"
            )
        if segment_type in seen:
            raise reader.error(
                "duplicate_segment",
                f"a second {_SEGMENT_NAMES[segment_type]} segment (type {segment_type})",
                at_bit=0,
            )
        seen.add(segment_type)
        if segment_type == SEGMENT_DISCLOSED_VENDORS:
            disclosed = _read_vendor_vector(reader, "DisclosedVendors")
        elif segment_type == SEGMENT_ALLOWED_VENDORS:
            allowed = _read_vendor_vector(reader, "AllowedVendors")
        else:
            publisher_tc = _read_publisher_tc(reader)
        reader.finish()

    return TCString(
        version=version,
        created=created,
        last_updated=last_updated,
        cmp_id=cmp_id,
        cmp_version=cmp_version,
        consent_screen=consent_screen,
        consent_language=consent_language,
        vendor_list_version=vendor_list_version,
        tcf_policy_version=tcf_policy_version,
        is_service_specific=is_service_specific,
        use_non_standard_texts=use_non_standard_texts,
        special_feature_optins=special_feature_optins,
        purpose_consents=purpose_consents,
        purpose_legitimate_interests=purpose_legitimate_interests,
        purpose_one_treatment=purpose_one_treatment,
        publisher_cc=publisher_cc,
        vendor_consents=vendor_consents,
        vendor_legitimate_interests=vendor_legitimate_interests,
        publisher_restrictions=publisher_restrictions,
        disclosed_vendors=disclosed,
        allowed_vendors=allowed,
        publisher_tc=publisher_tc,
    )
