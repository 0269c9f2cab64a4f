"""Decoder for IAB GPP (Global Privacy Platform) strings.

A GPP string is a header and sections joined by ``~``. The header (itself base64url) holds Type
(6 bits, always 3), Version (6 bits, 1) and the section ids as a Fibonacci range; the sections
follow in the same order, one per id. This module decodes the header and these sections:

* 2 ``tcfeuv2`` with :func:`privacy.consent.tcf.decode_tc_string` (same segments as a TC string);
* 5 ``tcfcav1`` with :func:`privacy.consent.tcfca.decode_tcfcav1` (both vendor-list layouts,
  told apart by a canonical re-encoding check as the reference does);
* 6 ``uspv1`` (the four-character CCPA string, validated);
* 7 ``usnat`` (MSPA US National, versions 1 and 2) and every US state section, 8-27 (``usca`` ...
  ``usri``), each with its GPC or sensitive-data sub-section, from one field table
  (:data:`US_LAYOUTS`).

Section 1 (``tcfeuv1``) is not decoded: it is listed in :attr:`GppString.undecoded_sections`
with a typed :class:`NotAppliedReason` in :attr:`GppString.not_applied_reasons`, never applied,
and never an error for the rest of the string. ``tcfeuv1`` is *refused on purpose*
(:attr:`NotAppliedReason.DEPRECATED_SECTION`): the registry marks it deprecated, neither
``@iabgpp/cmpapi`` (``GppModel.decodeModel`` skips id 1 without a word) nor ``iabgpp-java``
implements it, so there is no reference decoder to be at parity with, and TCF EU v1 consent is
no longer valid under the TCF policy anyway. Ids with no
registered name are also listed in :attr:`GppString.unknown_sections`.

Strict where the specification is strict, tolerant exactly where IAB's reference decoder
(``@iabgpp/cmpapi``, ``IABTechLab/iabgpp-es``) is, and never a *different* successful decode:
where the reference accepts something we refuse, we raise :class:`GppDecodeError`. The tolerances:

* **Short usnat.** ``UsNatCoreSegment.decodeSegment`` reads a core of exactly 60 or 66 bits with
  the version-1 layout (12 sensitive-data and 2 known-child entries) whatever the version says,
  and fills the missing entries with 0 (not applicable); a longer core is read with the
  version-2 layout and, when the version is 1, cut back to 12 and 2 entries. We do the same, and
  refuse (instead of dropping) a non-zero entry that the cut would lose.
* **MspaCoveredTransaction 0.** The spec defines 1 (yes) and 2 (no); the reference decodes 0 (its
  earlier encoders wrote it as the default, see GppModel "decode defaults from all sections").
  We decode it as :attr:`MspaMode.NOT_APPLICABLE`. A 2-bit value of 3 is undefined everywhere
  and still refused (the reference would keep it as the number 3).
* **Padding.** Zero bits after the last field are ignored (see :mod:`privacy.consent.bits`).

Sources: the GPP "Consent String Specification" and "Section Information" pages and the MSPA US
National and state technical specifications (``InteractiveAdvertisingBureau/Global-Privacy-
Platform``), and ``@iabgpp/cmpapi`` 3.2.0 (``encoder/segment/Us*CoreSegment.js``,
``Us*GpcSegment.js``, ``Us*SensitiveDataConsentSegment.js``, ``UspV1CoreSegment.js``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Literal

from privacy.consent.bits import BitReader, ConsentStringDecodeError, expand_ranges, is_base64url
from privacy.consent.tcf import TcfDecodeError, TCString, decode_tc_string
from privacy.consent.tcfca import TcfCaDecodeError, TcfCaV1Section, decode_tcfcav1

GPP_HEADER_TYPE = 3
GPP_VERSION = 1
SECTION_TCFEUV2 = 2
SECTION_HEADER = 3
SECTION_USPV1 = 6
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
        23: "usmn",
        24: "usmd",
        25: "usin",
        26: "usky",
        27: "usri",
    }
)


class GppDecodeError(ConsentStringDecodeError):
    """A GPP string does not decode; the message names the section, segment and bit offset."""

    code = "gpp-string-invalid"


class NotAppliedReason(StrEnum):
    """Why a GPP section was kept only raw, never applied (a stable wire value)."""

    #: ``tcfeuv1`` (id 1): deprecated by IAB; no reference decoder exists; consent under TCF EU
    #: v1 is no longer valid, so idgraph refuses to interpret it.
    DEPRECATED_SECTION = "deprecated_section"
    #: an id the GPP section registry does not define.
    UNKNOWN_SECTION = "unknown_section"


SECTION_TCFEUV1 = 1
SECTION_TCFCAV1 = 5


class Notice(IntEnum):
    """A US notice field (2 bits)."""

    NOT_APPLICABLE = 0
    PROVIDED = 1
    NOT_PROVIDED = 2


class OptOut(IntEnum):
    """A US opt-out field (2 bits)."""

    NOT_APPLICABLE = 0
    OPTED_OUT = 1
    DID_NOT_OPT_OUT = 2


class Consent(IntEnum):
    """A US consent field (2 bits)."""

    NOT_APPLICABLE = 0
    NO_CONSENT = 1
    CONSENT = 2


class MspaMode(IntEnum):
    """A US MSPA field (2 bits). MspaCoveredTransaction 0 is a tolerated legacy default."""

    NOT_APPLICABLE = 0
    YES = 1
    NO = 2


# -- the US section table ------------------------------------------------------------------------

Subsection = Literal["gpc", "sensitive"]
_MSPA = "MspaCoveredTransaction MspaOptOutOptionMode MspaServiceProviderMode"
_PROCESSING = "ProcessingNotice SaleOptOutNotice TargetedAdvertisingOptOutNotice"
_SHARING = "SharingNotice SaleOptOutNotice TargetedAdvertisingOptOutNotice"
_OPT_OUTS = "SaleOptOut TargetedAdvertisingOptOut"
_MSPA_FIRST = f"MspaVersion MspaCoveredTransaction MspaMode {_PROCESSING} {_OPT_OUTS}"
# The field holding the section version (6 bits); every other field is 2 bits per entry.
_VERSION_FIELDS = frozenset({"Version", "MspaVersion"})
COVERED_TRANSACTION = "MspaCoveredTransaction"


@dataclass(frozen=True)
class UsSectionLayout:
    """One US section's core fields in order: ``(IAB field name, entries)``.

    ``entries`` 0 is a scalar; a positive count is a list of that many 2-bit entries.
    ``subsection`` is what may follow the core after a ``.``: the GPC sub-section (2-bit type 1,
    one bit) or, for Indiana, Kentucky and Rhode Island, a sensitive-data-consent sub-section
    (``sensitive_entries`` 2-bit entries, no type field).
    """

    section_id: int
    name: str
    fields: tuple[tuple[str, int], ...]
    subsection: Subsection | None = None
    sensitive_entries: int = 0
    versions: frozenset[int] = frozenset({1})


def _fields(spec: str) -> tuple[tuple[str, int], ...]:
    out: list[tuple[str, int]] = []
    for token in spec.split():
        name, _, count = token.partition("*")
        out.append((name, int(count) if count else 0))
    return tuple(out)


def _layout(
    section_id: int,
    spec: str,
    subsection: Subsection | None = "gpc",
    *,
    sensitive_entries: int = 0,
    versions: frozenset[int] = frozenset({1}),
) -> UsSectionLayout:
    return UsSectionLayout(
        section_id,
        SECTION_NAMES[section_id],
        _fields(spec),
        subsection,
        sensitive_entries,
        versions,
    )


#: Every US section, by id, as ``@iabgpp/cmpapi`` 3.2.0 lays it out (field names as IAB spells
#: them, so a decoded section compares field by field with the reference decoder).
US_LAYOUTS: Mapping[int, UsSectionLayout] = MappingProxyType(
    {
        layout.section_id: layout
        for layout in (
            _layout(
                7,
                "Version SharingNotice SaleOptOutNotice SharingOptOutNotice "
                "TargetedAdvertisingOptOutNotice SensitiveDataProcessingOptOutNotice "
                "SensitiveDataLimitUseNotice SaleOptOut SharingOptOut TargetedAdvertisingOptOut "
                "SensitiveDataProcessing*16 KnownChildSensitiveDataConsents*3 "
                f"PersonalDataConsents {_MSPA}",
                versions=frozenset({1, 2}),
            ),
            _layout(
                8,
                "Version SaleOptOutNotice SharingOptOutNotice SensitiveDataLimitUseNotice "
                "SaleOptOut SharingOptOut SensitiveDataProcessing*9 "
                f"KnownChildSensitiveDataConsents*2 PersonalDataConsents {_MSPA}",
            ),
            _layout(
                9,
                f"Version {_SHARING} {_OPT_OUTS} SensitiveDataProcessing*8 "
                f"KnownChildSensitiveDataConsents {_MSPA}",
                None,
            ),
            _layout(
                10,
                f"Version {_SHARING} {_OPT_OUTS} SensitiveDataProcessing*7 "
                f"KnownChildSensitiveDataConsents {_MSPA}",
            ),
            _layout(
                11,
                f"Version {_SHARING} SensitiveDataProcessingOptOutNotice {_OPT_OUTS} "
                f"SensitiveDataProcessing*8 KnownChildSensitiveDataConsents {_MSPA}",
                None,
            ),
            _layout(
                12,
                f"Version {_SHARING} {_OPT_OUTS} SensitiveDataProcessing*8 "
                f"KnownChildSensitiveDataConsents*3 {_MSPA}",
            ),
            _layout(
                13,
                f"Version {_PROCESSING} {_OPT_OUTS} SensitiveDataProcessing*8 "
                f"KnownChildSensitiveDataConsents*3 AdditionalDataProcessingConsent {_MSPA}",
                None,
            ),
            _layout(
                14,
                f"Version {_SHARING} {_OPT_OUTS} SensitiveDataProcessing*8 "
                f"KnownChildSensitiveDataConsents*3 AdditionalDataProcessingConsent {_MSPA}",
            ),
            _layout(
                15,
                f"Version {_PROCESSING} {_OPT_OUTS} SensitiveDataProcessing*11 "
                f"KnownChildSensitiveDataConsents*3 AdditionalDataProcessingConsent {_MSPA}",
            ),
            _layout(
                16,
                f"Version {_PROCESSING} {_OPT_OUTS} SensitiveDataProcessing*8 "
                f"KnownChildSensitiveDataConsents AdditionalDataProcessingConsent {_MSPA}",
            ),
            _layout(
                17,
                f"Version {_PROCESSING} {_OPT_OUTS} SensitiveDataProcessing*9 "
                f"KnownChildSensitiveDataConsents*5 AdditionalDataProcessingConsent {_MSPA}",
            ),
            _layout(
                18,
                f"Version {_PROCESSING} SensitiveDataOptOutNotice {_OPT_OUTS} "
                f"SensitiveDataProcessing*8 KnownChildSensitiveDataConsents {_MSPA}",
            ),
            _layout(
                19,
                f"Version {_PROCESSING} {_OPT_OUTS} SensitiveDataProcessing*8 "
                f"KnownChildSensitiveDataConsents AdditionalDataProcessingConsent {_MSPA}",
            ),
            _layout(
                20,
                f"Version {_PROCESSING} {_OPT_OUTS} SensitiveDataProcessing*8 "
                f"KnownChildSensitiveDataConsents*3 AdditionalDataProcessingConsent {_MSPA}",
            ),
            _layout(
                21,
                f"Version {_PROCESSING} {_OPT_OUTS} SensitiveDataProcessing*10 "
                f"KnownChildSensitiveDataConsents*5 AdditionalDataProcessingConsent {_MSPA}",
            ),
            _layout(
                22,
                f"Version {_PROCESSING} {_OPT_OUTS} SensitiveDataProcessing*8 "
                f"KnownChildSensitiveDataConsents AdditionalDataProcessingConsent {_MSPA}",
            ),
            _layout(
                23,
                f"Version {_PROCESSING} {_OPT_OUTS} SensitiveDataProcessing*8 "
                f"KnownChildSensitiveDataConsents AdditionalDataProcessingConsent {_MSPA}",
            ),
            _layout(24, f"{_MSPA_FIRST} AdditionalDataProcessingConsent"),
            *(
                _layout(
                    section_id,
                    f"{_MSPA_FIRST} KnownChildSensitiveDataConsents "
                    "AdditionalDataProcessingConsent",
                    "sensitive",
                    sensitive_entries=8,
                )
                for section_id in (25, 26, 27)
            ),
        )
    }
)

#: The opt-out kinds a purpose can bind to, and the field that carries each in a US section.
US_OPT_OUT_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "sale": "SaleOptOut",
        "sharing": "SharingOptOut",
        "targeted_advertising": "TargetedAdvertisingOptOut",
    }
)

FieldValue = int | tuple[int, ...]


@dataclass(frozen=True)
class UsSection:
    """A decoded US section (``usnat`` or a state): its fields by IAB name, and sub-sections.

    ``fields`` maps each core field (``"SaleOptOut"``) to its value: an int, or a tuple for
    list fields, exactly as ``@iabgpp/cmpapi`` reports them. ``gpc`` is ``None`` when the
    section has no GPC sub-section (absent is not "false"); ``sensitive_data_processing`` holds
    the Indiana/Kentucky/Rhode Island sensitive-data sub-section, ``None`` when absent.
    """

    section_id: int
    name: str
    version: int
    fields: Mapping[str, FieldValue]
    gpc: bool | None = None
    sensitive_data_processing: tuple[int, ...] | None = None

    def opt_out(self, kind: str) -> OptOut | None:
        """The value of the ``kind`` opt-out (``sale``...); ``None`` if the section has no such
        field (``usva`` has no sharing opt-out, say)."""
        value = self.fields.get(US_OPT_OUT_FIELDS[kind])
        return None if value is None or isinstance(value, tuple) else OptOut(value)

    def consents(self, field_name: str) -> tuple[Consent, ...]:
        """The entries of a consent list or scalar field as :class:`Consent` (empty if absent)."""
        value = self.fields.get(field_name)
        if field_name == "SensitiveDataProcessing" and self.sensitive_data_processing is not None:
            value = self.sensitive_data_processing
        if value is None:
            return ()
        return tuple(Consent(v) for v in (value if isinstance(value, tuple) else (value,)))

    @property
    def mspa_covered_transaction(self) -> MspaMode:
        """Whether the transaction is covered by the MSPA (0 only from legacy encoders)."""
        value = self.fields[COVERED_TRANSACTION]
        assert not isinstance(value, tuple)  # noqa: S101 - a scalar in every layout
        return MspaMode(value)


@dataclass(frozen=True)
class UsNatSection:
    """GPP section 7 (``usnat``) with typed fields; :class:`UsSection` holds the same values.

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

    @classmethod
    def from_section(cls, section: UsSection) -> UsNatSection:
        """The typed view of a decoded ``usnat`` :class:`UsSection`."""
        f = section.fields

        def scalar(name: str) -> int:
            value = f[name]
            assert not isinstance(value, tuple)  # noqa: S101 - the usnat layout fixes the shape
            return value

        return cls(
            version=section.version,
            sharing_notice=Notice(scalar("SharingNotice")),
            sale_opt_out_notice=Notice(scalar("SaleOptOutNotice")),
            sharing_opt_out_notice=Notice(scalar("SharingOptOutNotice")),
            targeted_advertising_opt_out_notice=Notice(scalar("TargetedAdvertisingOptOutNotice")),
            sensitive_data_processing_opt_out_notice=Notice(
                scalar("SensitiveDataProcessingOptOutNotice")
            ),
            sensitive_data_limit_use_notice=Notice(scalar("SensitiveDataLimitUseNotice")),
            sale_opt_out=OptOut(scalar("SaleOptOut")),
            sharing_opt_out=OptOut(scalar("SharingOptOut")),
            targeted_advertising_opt_out=OptOut(scalar("TargetedAdvertisingOptOut")),
            sensitive_data_processing=section.consents("SensitiveDataProcessing"),
            known_child_sensitive_data_consents=section.consents("KnownChildSensitiveDataConsents"),
            personal_data_consents=Consent(scalar("PersonalDataConsents")),
            mspa_covered_transaction=MspaMode(scalar(COVERED_TRANSACTION)),
            mspa_opt_out_option_mode=MspaMode(scalar("MspaOptOutOptionMode")),
            mspa_service_provider_mode=MspaMode(scalar("MspaServiceProviderMode")),
            gpc=section.gpc,
        )


class UspFlag(IntEnum):
    """A uspv1 (CCPA) character: ``Y``, ``N`` or ``-`` (not applicable)."""

    NOT_APPLICABLE = 0
    YES = 1
    NO = 2


_USP_FLAGS = {"Y": UspFlag.YES, "N": UspFlag.NO, "-": UspFlag.NOT_APPLICABLE}


@dataclass(frozen=True)
class UspV1Section:
    """GPP section 6 (``uspv1``, the IAB CCPA "US Privacy String" ``1YNN``).

    ``opt_out_sale`` ``YES`` means the person opted out of the sale of their data.
    """

    version: int
    notice: UspFlag
    opt_out_sale: UspFlag
    lspa_covered: UspFlag


@dataclass(frozen=True)
class GppString:
    """A decoded GPP string.

    ``raw_sections`` maps every section id to its raw section string (decoded ones included).
    ``us_sections`` holds every decoded US section (``usnat`` and the states) by name.
    """

    version: int
    section_ids: tuple[int, ...]
    raw_sections: Mapping[int, str]
    tcfeuv2: TCString | None = None
    tcfcav1: TcfCaV1Section | None = None
    usnat: UsNatSection | None = None
    uspv1: UspV1Section | None = None
    us_sections: Mapping[str, UsSection] = field(default_factory=lambda: MappingProxyType({}))
    unknown_sections: tuple[int, ...] = ()
    undecoded_sections: tuple[int, ...] = ()
    not_applied_reasons: Mapping[int, NotAppliedReason] = field(
        default_factory=lambda: MappingProxyType({})
    )

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


# -- decoders --------------------------------------------------------------------------------------

_USNAT_V1_BITS = frozenset({60, 66})  # a version-1 core: 60 bits, or 66 once padded
_USNAT_V1_COUNTS = {"SensitiveDataProcessing": 12, "KnownChildSensitiveDataConsents": 2}


def _read_two_bit(reader: BitReader, name: str) -> int:
    """A 2-bit value; 3 is undefined in every US field. MspaCoveredTransaction 0 passes on
    purpose (the reference decodes it, see the module docstring)."""
    start = reader.position
    value = reader.read_int(2, name)
    if value == 3:
        raise reader.error(
            "undefined_value", f"{name} is 3, which the spec does not define", at_bit=start
        )
    return value


def _decode_us_core(
    layout: UsSectionLayout, core: str, where: str
) -> tuple[int, dict[str, FieldValue]]:
    reader = BitReader(core, where=f"{where} core", error=GppDecodeError)
    counts = dict(layout.fields)
    v1_layout = False
    if layout.section_id == SECTION_USNAT and reader.remaining in _USNAT_V1_BITS:
        # Reference parity (UsNatCoreSegment.decodeSegment): a 60- or 66-bit core is the
        # version-1 layout, whatever its Version field says.
        counts.update(_USNAT_V1_COUNTS)
        v1_layout = True
    values: dict[str, FieldValue] = {}
    version = 0
    for name, _ in layout.fields:
        entries = counts[name]
        if name in _VERSION_FIELDS:
            version = reader.read_int(6, name)
            if version not in layout.versions:
                allowed = " or ".join(str(v) for v in sorted(layout.versions))
                raise reader.error(
                    "unsupported_version",
                    f"{layout.name} {name} {version} is not {allowed}",
                    at_bit=0,
                )
            values[name] = version
        elif entries:
            values[name] = tuple(
                _read_two_bit(reader, f"{name} {index + 1}") for index in range(entries)
            )
        else:
            values[name] = _read_two_bit(reader, name)
    reader.finish()
    if layout.section_id == SECTION_USNAT:
        _fit_usnat_lists(values, version, v1_layout=v1_layout, where=f"{where} core")
    return version, values


def _fit_usnat_lists(
    values: dict[str, FieldValue], version: int, *, v1_layout: bool, where: str
) -> None:
    """Give usnat's two list fields the length its version defines, as the reference does."""
    full = {"SensitiveDataProcessing": 16, "KnownChildSensitiveDataConsents": 3}
    for name, v1_count in _USNAT_V1_COUNTS.items():
        current = values[name]
        assert isinstance(current, tuple)  # noqa: S101 - list fields are tuples by construction
        if v1_layout and version != 1:
            values[name] = current + (0,) * (full[name] - v1_count)
        elif not v1_layout and version == 1:
            if any(current[v1_count:]):
                raise GppDecodeError(
                    "undefined_value",
                    f"{where}: {name} has {len(current)} entries with a non-zero entry past the "
                    f"{v1_count} that usnat version 1 defines",
                )
            values[name] = current[:v1_count]


def _decode_us_section(layout: UsSectionLayout, section: str) -> UsSection:
    where = f"section {layout.section_id} ({layout.name})"
    core, *subsections = section.split(".")
    version, values = _decode_us_core(layout, core, where)
    gpc: bool | None = None
    sensitive: tuple[int, ...] | None = None
    if subsections and layout.subsection is None:
        raise GppDecodeError(
            "unknown_subsection", f"{where}: has no sub-sections, but one follows the core"
        )
    if len(subsections) > 1:
        raise GppDecodeError(
            "duplicate_subsection", f"{where}: {len(subsections)} sub-sections follow the core"
        )
    for part in subsections:
        sub = BitReader(part, where=f"{where} sub-section 2", error=GppDecodeError)
        if layout.subsection == "gpc":
            subsection_type = sub.read_int(2, "SubsectionType")
            if subsection_type != 1:
                raise sub.error(
                    "unknown_subsection",
                    f"SubsectionType {subsection_type} is not GPC (1)",
                    at_bit=0,
                )
            gpc = sub.read_bool("Gpc")
        else:
            sensitive = tuple(
                _read_two_bit(sub, f"SensitiveDataProcessing {index + 1}")
                for index in range(layout.sensitive_entries)
            )
        sub.finish()
    return UsSection(
        section_id=layout.section_id,
        name=layout.name,
        version=version,
        fields=MappingProxyType(values),
        gpc=gpc,
        sensitive_data_processing=sensitive,
    )


def _decode_uspv1(section: str) -> UspV1Section:
    """``1`` then three of ``Y``/``N``/``-``; anything else (``1Y``, ``1XYZ``) is refused."""
    where = "section 6 (uspv1)"
    if len(section) != 4:
        raise GppDecodeError(
            "bad_uspv1", f"{where}: is {len(section)} characters long, expected 4 (like 1YNN)"
        )
    if section[0] != "1":
        raise GppDecodeError("unsupported_version", f"{where}: version is not 1")
    flags: list[UspFlag] = []
    for index, (name, char) in enumerate(
        zip(("Notice", "OptOutSale", "LspaCovered"), section[1:], strict=True)
    ):
        flag = _USP_FLAGS.get(char)
        if flag is None:
            raise GppDecodeError(
                "bad_uspv1", f"{where}: character {index + 2} ({name}) is not Y, N or -"
            )
        flags.append(flag)
    return UspV1Section(version=1, notice=flags[0], opt_out_sale=flags[1], lspa_covered=flags[2])


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
    tcfcav1: TcfCaV1Section | None = None
    uspv1: UspV1Section | None = None
    us_sections: dict[str, UsSection] = {}
    undecoded: list[int] = []
    for section_id, section in zip(section_ids, sections, strict=True):
        where = f"section {section_id} ({SECTION_NAMES.get(section_id, 'unknown')})"
        if section_id == SECTION_HEADER:
            raise GppDecodeError("bad_section_id", "header: lists section id 3 (the header)")
        raw[section_id] = section
        if section_id == SECTION_USPV1:
            uspv1 = _decode_uspv1(section)
            continue
        if not all(is_base64url(part) for part in section.split(".")):
            raise GppDecodeError(
                "bad_section", f"{where}: is empty or holds a character outside base64url and '.'"
            )
        layout = US_LAYOUTS.get(section_id)
        if section_id == SECTION_TCFEUV2:
            try:
                tcfeuv2 = decode_tc_string(section)
            except TcfDecodeError as error:
                raise GppDecodeError(error.reason, f"{where}: {error.message}") from error
        elif section_id == SECTION_TCFCAV1:
            try:
                tcfcav1 = decode_tcfcav1(section)
            except TcfCaDecodeError as error:
                raise GppDecodeError(error.reason, error.message) from error
        elif layout is not None:
            us_sections[layout.name] = _decode_us_section(layout, section)
        else:
            undecoded.append(section_id)
    usnat = us_sections.get("usnat")
    reasons = {sid: _not_applied_reason(sid) for sid in undecoded}
    return GppString(
        version=version,
        section_ids=section_ids,
        raw_sections=MappingProxyType(raw),
        tcfeuv2=tcfeuv2,
        tcfcav1=tcfcav1,
        usnat=None if usnat is None else UsNatSection.from_section(usnat),
        uspv1=uspv1,
        us_sections=MappingProxyType(us_sections),
        unknown_sections=tuple(sid for sid in undecoded if sid not in SECTION_NAMES),
        undecoded_sections=tuple(undecoded),
        not_applied_reasons=MappingProxyType(reasons),
    )


def _not_applied_reason(section_id: int) -> NotAppliedReason:
    if section_id == SECTION_TCFEUV1:
        return NotAppliedReason.DEPRECATED_SECTION
    return NotAppliedReason.UNKNOWN_SECTION
