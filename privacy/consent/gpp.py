"""Decoder for IAB GPP (Global Privacy Platform) strings.

A GPP string is a header and sections joined by ``~``. The header (itself base64url) holds Type
(6 bits, always 3), Version (6 bits, 1) and the section ids as a Fibonacci range; the sections
follow in the same order, one per id. This module decodes the header, section 2 (``tcfeuv2``,
with :func:`privacy.consent.tcf.decode_tc_string`: same segments as a TC string) and section 7
(``usnat``, MSPA US National, versions 1 and 2, with its GPC sub-section). Every other section is
kept as its raw string: ids missing from :data:`SECTION_NAMES` are listed in
:attr:`GppString.unknown_sections`; all sections kept raw are in
:attr:`GppString.undecoded_sections`. Neither is an error.

Sources: the GPP "Consent String Specification" and "Section Information" pages and the MSPA US
National technical specification (``InteractiveAdvertisingBureau/Global-Privacy-Platform``), and
the reference implementation ``IABTechLab/iabgpp-es`` (``HeaderV1CoreSegment.ts``,
``UsNatCoreSegment.ts``, ``UsNatV1CoreSegment.ts``, ``UsNatGpcSegment.ts``,
``FibonacciIntegerRangeEncoder.ts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import TypeVar

from privacy.consent.bits import BitReader, ConsentStringDecodeError, expand_ranges, is_base64url
from privacy.consent.tcf import TcfDecodeError, TCString, decode_tc_string

GPP_HEADER_TYPE = 3
GPP_VERSION = 1
SECTION_TCFEUV2 = 2
SECTION_HEADER = 3
SECTION_USNAT = 7

#: Registered GPP section ids and their client-side API prefixes ("Section Information" page and
#: the per-section specifications). Id 3 is the header itself; id 4 (signal integrity) has no
#: prefix and is treated as unknown.
SECTION_NAMES: Mapping[int, str] = MappingProxyType(
    {
        1: "tcfeuv1",
        2: "tcfeuv2",
        5: "tcfcav1",
        6: "uspv1",
        7: "usnat",
        8: "usca",
        9: "usva",
        10: "usco",
        11: "usut",
        12: "usct",
        13: "usfl",
        14: "usmt",
        15: "usor",
        16: "ustx",
        17: "usde",
        18: "usia",
        19: "usne",
        20: "usnh",
        21: "usnj",
        22: "ustn",
    }
)

# usnat core layout per version: (SensitiveDataProcessing entries, KnownChildSensitiveDataConsents
# entries). Version 1 (Dec 2022) has 12 and 2; version 2 (2024, second amended MSPA) has 16 and 3.
_USNAT_LAYOUTS = {1: (12, 2), 2: (16, 3)}
_USNAT_SUBSECTION_GPC = 1


class GppDecodeError(ConsentStringDecodeError):
    """A GPP string does not decode; the message names the section, segment and bit offset."""

    code = "gpp-string-invalid"


class Notice(IntEnum):
    """A usnat notice field (2 bits)."""

    NOT_APPLICABLE = 0
    PROVIDED = 1
    NOT_PROVIDED = 2


class OptOut(IntEnum):
    """A usnat opt-out field (2 bits)."""

    NOT_APPLICABLE = 0
    OPTED_OUT = 1
    DID_NOT_OPT_OUT = 2


class Consent(IntEnum):
    """A usnat consent field (2 bits)."""

    NOT_APPLICABLE = 0
    NO_CONSENT = 1
    CONSENT = 2


class MspaMode(IntEnum):
    """A usnat MSPA field (2 bits). MspaCoveredTransaction has no NOT_APPLICABLE."""

    NOT_APPLICABLE = 0
    YES = 1
    NO = 2


@dataclass(frozen=True)
class UsNatSection:
    """GPP section 7 (``usnat``): the core sub-section and, when present, the GPC sub-section.

    ``gpc`` is ``None`` when the string has no GPC sub-section (absent is not "false").
    """

    version: int
    sharing_notice: Notice
    sale_opt_out_notice: Notice
    sharing_opt_out_notice: Notice
    targeted_advertising_opt_out_notice: Notice
    sensitive_data_processing_opt_out_notice: Notice
    sensitive_data_limit_use_notice: Notice
    sale_opt_out: OptOut
    sharing_opt_out: OptOut
    targeted_advertising_opt_out: OptOut
    sensitive_data_processing: tuple[Consent, ...]
    known_child_sensitive_data_consents: tuple[Consent, ...]
    personal_data_consents: Consent
    mspa_covered_transaction: MspaMode
    mspa_opt_out_option_mode: MspaMode
    mspa_service_provider_mode: MspaMode
    gpc: bool | None = None


@dataclass(frozen=True)
class GppString:
    """A decoded GPP string.

    ``raw_sections`` maps every section id to its raw section string (decoded ones included).
    """

    version: int
    section_ids: tuple[int, ...]
    raw_sections: Mapping[int, str]
    tcfeuv2: TCString | None = None
    usnat: UsNatSection | None = None
    unknown_sections: tuple[int, ...] = ()
    undecoded_sections: tuple[int, ...] = ()

    @property
    def gpc(self) -> bool | None:
        """The usnat GPC sub-section's value; ``None`` without usnat or without that sub-section."""
        return None if self.usnat is None else self.usnat.gpc

    def section_name(self, section_id: int) -> str | None:
        """The registered API prefix of ``section_id`` (``"usnat"``); ``None`` if unregistered."""
        return SECTION_NAMES.get(section_id)

    def usnat_opt_outs(self) -> dict[str, bool]:
        """Explicit usnat opt-outs: keys ``sale``, ``sharing``, ``targeted_advertising``.

        A value is ``True`` only when the string records ``OPTED_OUT``; "not applicable" and
        "did not opt out" are ``False``. GPC is reported apart, by :attr:`gpc`, so the policy
        engine decides how to combine them. Empty when the string has no usnat section.
        """
        if self.usnat is None:
            return {}
        return {
            "sale": self.usnat.sale_opt_out is OptOut.OPTED_OUT,
            "sharing": self.usnat.sharing_opt_out is OptOut.OPTED_OUT,
            "targeted_advertising": self.usnat.targeted_advertising_opt_out is OptOut.OPTED_OUT,
        }


_E = TypeVar("_E", bound=IntEnum)


def _read_enum(
    reader: BitReader, enum: type[_E], field: str, *, allowed: set[int] | None = None
) -> _E:
    start = reader.position
    value = reader.read_int(2, field)
    if value not in (allowed if allowed is not None else {member.value for member in enum}):
        raise reader.error(
            "undefined_value", f"{field} is {value}, which the spec does not define", at_bit=start
        )
    return enum(value)


def _decode_usnat(section: str) -> UsNatSection:
    parts = section.split(".")
    reader = BitReader(parts[0], where="section 7 (usnat) core", error=GppDecodeError)
    version = reader.read_int(6, "Version")
    layout = _USNAT_LAYOUTS.get(version)
    if layout is None:
        raise reader.error(
            "unsupported_version", f"usnat Version {version} is not 1 or 2", at_bit=0
        )
    sensitive_count, child_count = layout
    notices = [
        _read_enum(reader, Notice, name)
        for name in (
            "SharingNotice",
            "SaleOptOutNotice",
            "SharingOptOutNotice",
            "TargetedAdvertisingOptOutNotice",
            "SensitiveDataProcessingOptOutNotice",
            "SensitiveDataLimitUseNotice",
        )
    ]
    opt_outs = [
        _read_enum(reader, OptOut, name)
        for name in ("SaleOptOut", "SharingOptOut", "TargetedAdvertisingOptOut")
    ]
    sensitive = tuple(
        _read_enum(reader, Consent, f"SensitiveDataProcessing {index + 1}")
        for index in range(sensitive_count)
    )
    child = tuple(
        _read_enum(reader, Consent, f"KnownChildSensitiveDataConsents {index + 1}")
        for index in range(child_count)
    )
    personal = _read_enum(reader, Consent, "PersonalDataConsents")
    covered = _read_enum(
        reader, MspaMode, "MspaCoveredTransaction", allowed={MspaMode.YES, MspaMode.NO}
    )
    opt_out_mode = _read_enum(reader, MspaMode, "MspaOptOutOptionMode")
    service_provider_mode = _read_enum(reader, MspaMode, "MspaServiceProviderMode")
    reader.finish()

    gpc: bool | None = None
    for number, part in enumerate(parts[1:], start=2):
        sub = BitReader(part, where=f"section 7 (usnat) sub-section {number}", error=GppDecodeError)
        subsection_type = sub.read_int(2, "SubsectionType")
        if subsection_type != _USNAT_SUBSECTION_GPC:
            raise sub.error(
                "unknown_subsection", f"SubsectionType {subsection_type} is not GPC (1)", at_bit=0
            )
        if gpc is not None:
            raise sub.error("duplicate_subsection", "a second GPC sub-section", at_bit=0)
        gpc = sub.read_bool("Gpc")
        sub.finish()

    return UsNatSection(
        version=version,
        sharing_notice=notices[0],
        sale_opt_out_notice=notices[1],
        sharing_opt_out_notice=notices[2],
        targeted_advertising_opt_out_notice=notices[3],
        sensitive_data_processing_opt_out_notice=notices[4],
        sensitive_data_limit_use_notice=notices[5],
        sale_opt_out=opt_outs[0],
        sharing_opt_out=opt_outs[1],
        targeted_advertising_opt_out=opt_outs[2],
        sensitive_data_processing=sensitive,
        known_child_sensitive_data_consents=child,
        personal_data_consents=personal,
        mspa_covered_transaction=covered,
        mspa_opt_out_option_mode=opt_out_mode,
        mspa_service_provider_mode=service_provider_mode,
        gpc=gpc,
    )


def _decode_header(header: str, section_count: int) -> tuple[int, tuple[int, ...]]:
    reader = BitReader(header, where="header", error=GppDecodeError)
    header_type = reader.read_int(6, "Type")
    if header_type != GPP_HEADER_TYPE:
        raise reader.error("not_gpp", f"Type is {header_type}, expected 3 (GPP header)", at_bit=0)
    version = reader.read_int(6, "Version")
    if version != GPP_VERSION:
        raise reader.error("unsupported_version", f"Version is {version}, expected 1", at_bit=6)
    ranges = reader.read_fibonacci_range("SectionIds")
    reader.finish()
    # Count before expanding: a hostile range could name billions of ids, but the string must
    # carry one section per id, so the count is bounded by the input length.
    listed = sum(end - start + 1 for start, end in ranges)
    if listed != section_count:
        raise GppDecodeError(
            "section_count",
            f"header: lists {listed} section ids but the string has {section_count} sections",
        )
    return version, tuple(sorted(expand_ranges(ranges)))


def decode_gpp_string(s: str) -> GppString:
    """Decode a GPP string; raise :class:`GppDecodeError` saying where it is malformed."""
    if not s:
        raise GppDecodeError("empty", "GPP string is empty")
    header, *sections = s.split("~")
    version, section_ids = _decode_header(header, len(sections))
    raw: dict[int, str] = {}
    tcfeuv2: TCString | None = None
    usnat: UsNatSection | None = None
    undecoded: list[int] = []
    for section_id, section in zip(section_ids, sections, strict=True):
        where = f"section {section_id} ({SECTION_NAMES.get(section_id, 'unknown')})"
        if section_id == SECTION_HEADER:
            raise GppDecodeError("bad_section_id", "header: lists section id 3 (the header)")
        if not all(is_base64url(part) for part in section.split(".")):
            raise GppDecodeError(
                "bad_section", f"{where}: is empty or holds a character outside base64url and '.'"
            )
        raw[section_id] = section
        if section_id == SECTION_TCFEUV2:
            try:
                tcfeuv2 = decode_tc_string(section)
            except TcfDecodeError as error:
                raise GppDecodeError(error.reason, f"{where}: {error.message}") from error
        elif section_id == SECTION_USNAT:
            usnat = _decode_usnat(section)
        else:
            undecoded.append(section_id)
    return GppString(
        version=version,
        section_ids=section_ids,
        raw_sections=MappingProxyType(raw),
        tcfeuv2=tcfeuv2,
        usnat=usnat,
        unknown_sections=tuple(sid for sid in undecoded if sid not in SECTION_NAMES),
        undecoded_sections=tuple(undecoded),
    )
