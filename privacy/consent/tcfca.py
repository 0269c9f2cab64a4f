"""Decoder for GPP section 5, ``tcfcav1`` (IAB TCF Canada v1.x).

The section is up to three ``.``-separated segments, told apart by their first character as
``@iabgpp/cmpapi`` (3.2.0, ``TcfCaV1.decodeSection``) does: ``A``-``H`` the core segment
(its 6-bit Version is below 8), ``I``-``P`` the disclosed-vendors segment (3-bit type 1) and
``Y``-``f`` the publisher-purposes segment (3-bit type 3).

**Two vendor-list layouts, one canonical check.** The TCF Canada spec codes vendor id lists
(``VendorExpressConsent``, ``VendorImpliedConsent``, ``DisclosedVendors``) and the ids of
``PubRestrictions`` as *optimized Fibonacci ranges*; an earlier IAB encoder wrote them with
16-bit fixed ranges instead. The reference decoder reads a core or disclosed-vendors segment
with the Fibonacci layout, re-encodes what it read, and keeps it only if the re-encoding is a
prefix of the input bits; otherwise it tries the legacy fixed-range layout the same way. We do
exactly that: :func:`_decode_with_canonical_check` parses a layout, re-encodes the values with
IAB's canonical encoder rules (:func:`_encode_optimized_range`: the shorter of range and
bitfield, ties to the range; groups of consecutive ids as one range) and accepts the layout only
when that encoding equals the bits read. Where neither layout round-trips the reference falls
back to a "best effort" decode; we refuse (:class:`GppDecodeError` ``non_canonical``), so we
never report fields the string does not unambiguously carry.

One tolerance, as the reference: a core that ends (zero padding only) before the
``PubRestrictions`` count, as IAB's earlier encoder wrote it, decodes with no restrictions.

Also refused where the reference is lenient: a missing core segment (the reference would fill
in the current time as ``Created``), a repeated or empty segment, a Version other than 1, a
language outside A-Z, ids that are not strictly increasing, and non-zero padding (see
:mod:`privacy.consent.bits`).

Sources: "TCF Canada v1.x" in the GPP section registry (``InteractiveAdvertisingBureau/
Global-Privacy-Platform``, ``Sections/TCF Canada v1.md``) and ``@iabgpp/cmpapi`` 3.2.0
(``encoder/section/TcfCaV1.js``, ``encoder/segment/TcfCaV1*Segment.js``,
``encoder/datatype/EncodableOptimized*Range.js``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TypeVar

from privacy.consent.bits import (
    BitReader,
    ConsentStringDecodeError,
    PurposeBits,
    bits_of,
    read_publisher_purposes,
)

_WHERE = "section 5 (tcfcav1)"
T = TypeVar("T")


class TcfCaDecodeError(ConsentStringDecodeError):
    """A ``tcfcav1`` section does not decode (raised as a GPP error by the GPP decoder)."""

    code = "gpp-string-invalid"


@dataclass(frozen=True)
class PubRestriction:
    """One ``PubRestrictions`` entry: purpose id, restriction type (0-3) and vendor ids."""

    purpose_id: int
    restriction_type: int
    vendor_ids: tuple[int, ...]


@dataclass(frozen=True)
class TcfCaV1Section:
    """A decoded ``tcfcav1`` section. Purpose and feature sets hold 1-based ids.

    Express consent is the person's opt-in; implied consent is Canadian law's "implied
    consent" (the TCF Canada policy lets a vendor rely on it for some purposes).
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
    use_non_standard_stacks: bool
    special_feature_express_consent: frozenset[int]
    purposes_express_consent: frozenset[int]
    purposes_implied_consent: frozenset[int]
    vendor_express_consent: tuple[int, ...]
    vendor_implied_consent: tuple[int, ...]
    pub_restrictions: tuple[PubRestriction, ...]
    pub_purposes_express_consent: frozenset[int] = frozenset()
    pub_purposes_implied_consent: frozenset[int] = frozenset()
    num_custom_purposes: int = 0
    custom_purposes_express_consent: frozenset[int] = frozenset()
    custom_purposes_implied_consent: frozenset[int] = frozenset()
    disclosed_vendors: tuple[int, ...] = ()

    def purpose_consent(self, purpose_id: int, *, implied: bool) -> bool:
        """Express consent to ``purpose_id``, or implied consent when ``implied`` is allowed."""
        return purpose_id in self.purposes_express_consent or (
            implied and purpose_id in self.purposes_implied_consent
        )

    def vendor_consent(self, vendor_id: int, *, implied: bool) -> bool:
        """Express consent for ``vendor_id``, or implied when ``implied`` is allowed."""
        return vendor_id in self.vendor_express_consent or (
            implied and vendor_id in self.vendor_implied_consent
        )

    def restriction_types(self, vendor_id: int, purpose_id: int) -> tuple[int, ...]:
        """The restriction types the publisher set for ``vendor_id`` on ``purpose_id``."""
        return tuple(
            r.restriction_type
            for r in self.pub_restrictions
            if r.purpose_id == purpose_id and vendor_id in r.vendor_ids
        )


# -- canonical encoders (IAB's rules, to check a parse) -------------------------------------------


def _int(value: int, width: int) -> str:
    return format(value, f"0{width}b")


def _fibonacci(value: int) -> str:
    fibs = [1, 2]
    while fibs[-1] + fibs[-2] <= value:
        fibs.append(fibs[-1] + fibs[-2])
    bits = ["0"] * len(fibs)
    for index in range(len(fibs) - 1, -1, -1):
        if value >= fibs[index]:
            bits[index] = "1"
            value -= fibs[index]
    return "".join(bits).rstrip("0") + "1"


def _groups(ids: tuple[int, ...]) -> list[tuple[int, int]]:
    groups: list[tuple[int, int]] = []
    for vendor in ids:
        if groups and groups[-1][1] + 1 == vendor:
            groups[-1] = (groups[-1][0], vendor)
        else:
            groups.append((vendor, vendor))
    return groups


def _encode_fibonacci_range(ids: tuple[int, ...]) -> str:
    groups = _groups(ids)
    out = [_int(len(groups), 12)]
    offset = 0
    for start, end in groups:
        if start == end:
            out.append("0" + _fibonacci(start - offset))
        else:
            out.append("1" + _fibonacci(start - offset) + _fibonacci(end - start))
        offset = end
    return "".join(out)


def _encode_fixed_range(ids: tuple[int, ...]) -> str:
    groups = _groups(ids)
    out = [_int(len(groups), 12)]
    for start, end in groups:
        out.append("0" + _int(start, 16) if start == end else "1" + _int(start, 16) + _int(end, 16))
    return "".join(out)


def _encode_optimized_range(ids: tuple[int, ...], *, legacy: bool) -> str:
    top = ids[-1] if ids else 0
    ranged = (_encode_fixed_range if legacy else _encode_fibonacci_range)(ids)
    if len(ranged) <= top:
        return _int(top, 16) + "1" + ranged
    present = set(ids)
    return _int(top, 16) + "0" + "".join("1" if i + 1 in present else "0" for i in range(top))


# -- readers ---------------------------------------------------------------------------------------


def _increasing(reader: BitReader, ids: list[int], field: str) -> tuple[int, ...]:
    if any(b <= a for a, b in pairwise(ids)):
        raise reader.error("bad_range", f"{field} ids are not strictly increasing")
    return tuple(ids)


def _read_range(reader: BitReader, field: str, *, legacy: bool) -> tuple[int, ...]:
    """A Fibonacci range (spec) or a 16-bit fixed range (legacy encoder)."""
    if not legacy:
        ranges = reader.read_fibonacci_range(field)
    else:
        count = reader.read_int(12, f"{field} count")
        ranges_list: list[tuple[int, int]] = []
        for index in range(count):
            entry = f"{field} entry {index + 1}"
            if reader.read_bool(f"{entry} type"):
                start = reader.read_int(16, f"{entry} start")
                ranges_list.append((start, reader.read_int(16, f"{entry} end")))
            else:
                single = reader.read_int(16, entry)
                ranges_list.append((single, single))
        ranges = tuple(ranges_list)
    ids: list[int] = []
    for start, end in ranges:
        if end < start or end - start > 65_535 or start < 1:
            raise reader.error("bad_range", f"{field} has an empty or oversized range")
        ids.extend(range(start, end + 1))
        if len(ids) > 65_535:
            raise reader.error("bad_range", f"{field} names more than 65535 ids")
    return _increasing(reader, ids, field)


def _read_optimized_range(reader: BitReader, field: str, *, legacy: bool) -> tuple[int, ...]:
    top = reader.read_int(16, f"{field} max id")
    if reader.read_bool(f"{field} is a range"):
        return _read_range(reader, field, legacy=legacy)
    return tuple(sorted(reader.read_bitfield(top, field)))


def _flags(ids: frozenset[int], n: int) -> str:
    return "".join("1" if i + 1 in ids else "0" for i in range(n))


def _decode_with_canonical_check(
    segment: str,
    where: str,
    parse: Callable[[BitReader, bool], T],
    encode: Callable[[T, bool], str],
    provisional: Callable[[T], bool] = lambda _: False,
) -> T:
    """Parse ``segment`` with the Fibonacci layout, else the legacy one, keeping the first whose
    canonical re-encoding is exactly the bits read (the reference's ``tryDecode``)."""
    bits = bits_of(segment)
    first_error: ConsentStringDecodeError | None = None
    parsed = False
    fallback: T | None = None
    for legacy in (False, True):
        reader = BitReader(segment, where=where, error=TcfCaDecodeError)
        try:
            value = parse(reader, legacy)
        except ConsentStringDecodeError as error:
            # Our parse fails only where IAB's would not round-trip either (our limits, 64-bit
            # Fibonacci codewords and 65535 ids, sit above what a 16-bit max id allows), so
            # moving on to the legacy layout is what the reference does too.
            first_error = first_error or error
            continue
        parsed = True
        if encode(value, legacy) == bits[: reader.position]:
            reader.finish()
            if not provisional(value):
                return value
            # The reference reaches a tolerated reading only after every layout failed its
            # round trip: keep it, but let a later layout that round-trips win.
            fallback = value
    if fallback is not None:
        return fallback
    if first_error is not None and not parsed:
        raise first_error
    raise TcfCaDecodeError(
        "non_canonical",
        f"{where}: re-encoding it gives other bits under both vendor-list layouts (Fibonacci "
        "and legacy fixed ranges), so what it says is ambiguous",
    )


@dataclass(frozen=True)
class _Core:
    version: int
    created: int
    last_updated: int
    cmp_id: int
    cmp_version: int
    consent_screen: int
    language: str
    vendor_list_version: int
    policy_version: int
    non_standard: bool
    special_features: frozenset[int]
    express: frozenset[int]
    implied: frozenset[int]
    vendor_express: tuple[int, ...]
    vendor_implied: tuple[int, ...]
    restrictions: tuple[PubRestriction, ...]
    restrictions_absent: bool = False


def _parse_core(reader: BitReader, legacy: bool) -> _Core:
    version = reader.read_int(6, "Version")
    if version != 1:
        raise reader.error("unsupported_version", f"Version is {version}, expected 1", at_bit=0)
    created = reader.read_int(36, "Created")
    last_updated = reader.read_int(36, "LastUpdated")
    cmp_id = reader.read_int(12, "CmpId")
    cmp_version = reader.read_int(12, "CmpVersion")
    screen = reader.read_int(6, "ConsentScreen")
    language = reader.read_6bit_letters(2, "ConsentLanguage")
    vendor_list_version = reader.read_int(12, "VendorListVersion")
    policy_version = reader.read_int(6, "TcfPolicyVersion")
    non_standard = reader.read_bool("UseNonStandardStacks")
    special = reader.read_bitfield(12, "SpecialFeatureExpressConsent")
    express = reader.read_bitfield(24, "PurposesExpressConsent")
    implied = reader.read_bitfield(24, "PurposesImpliedConsent")
    vendor_express = _read_optimized_range(reader, "VendorExpressConsent", legacy=legacy)
    vendor_implied = _read_optimized_range(reader, "VendorImpliedConsent", legacy=legacy)
    restrictions: list[PubRestriction] = []
    if not legacy and reader.remaining < 12:
        # Tolerance (reference parity): IAB's earlier encoder wrote no PubRestrictions field;
        # the reference's best-effort decode reads such a core with the Fibonacci layout and no
        # restrictions (GppModel.test.ts "decode defaults from all sections", iabgpp-rs
        # tcfcav1_basic). Fewer than 12 bits left cannot hold the count, so none is there.
        return _Core(
            version, created, last_updated, cmp_id, cmp_version, screen, language,
            vendor_list_version, policy_version, non_standard, special, express, implied,
            vendor_express, vendor_implied, (), restrictions_absent=True,
        )  # fmt: skip
    for index in range(reader.read_int(12, "PubRestrictions count")):
        field = f"PubRestrictions entry {index + 1}"
        purpose = reader.read_int(6, f"{field} purpose")
        kind = reader.read_int(2, f"{field} type")
        ids = (
            _read_range(reader, field, legacy=True)
            if legacy
            else _read_optimized_range(reader, field, legacy=False)
        )
        restrictions.append(PubRestriction(purpose, kind, ids))
    return _Core(
        version,
        created,
        last_updated,
        cmp_id,
        cmp_version,
        screen,
        language,
        vendor_list_version,
        policy_version,
        non_standard,
        special,
        express,
        implied,
        vendor_express,
        vendor_implied,
        tuple(restrictions),
    )


def _encode_core(core: _Core, legacy: bool) -> str:
    out = [
        _int(core.version, 6),
        _int(core.created, 36),
        _int(core.last_updated, 36),
        _int(core.cmp_id, 12),
        _int(core.cmp_version, 12),
        _int(core.consent_screen, 6),
        "".join(_int(ord(c) - ord("A"), 6) for c in core.language),
        _int(core.vendor_list_version, 12),
        _int(core.policy_version, 6),
        "1" if core.non_standard else "0",
        _flags(core.special_features, 12),
        _flags(core.express, 24),
        _flags(core.implied, 24),
        _encode_optimized_range(core.vendor_express, legacy=legacy),
        _encode_optimized_range(core.vendor_implied, legacy=legacy),
        "" if core.restrictions_absent else _int(len(core.restrictions), 12),
    ]
    for r in core.restrictions:
        out += [_int(r.purpose_id, 6), _int(r.restriction_type, 2)]
        out.append(
            _encode_fixed_range(r.vendor_ids)
            if legacy
            else _encode_optimized_range(r.vendor_ids, legacy=False)
        )
    return "".join(out)


def _parse_disclosed(reader: BitReader, legacy: bool) -> tuple[int, ...]:
    reader.read_int(3, "DisclosedVendorsSegmentType")  # 1, fixed by the first character
    return _read_optimized_range(reader, "DisclosedVendors", legacy=legacy)


def _encode_disclosed(ids: tuple[int, ...], legacy: bool) -> str:
    return "001" + _encode_optimized_range(ids, legacy=legacy)


def decode_tcfcav1(section: str) -> TcfCaV1Section:
    """Decode a ``tcfcav1`` section; raise :class:`TcfCaDecodeError` saying where it is wrong."""
    segments = section.split(".")
    core: _Core | None = None
    disclosed: tuple[int, ...] | None = None
    purposes: PurposeBits | None
    purposes = None
    for index, segment in enumerate(segments):
        where = f"{_WHERE} segment {index + 1}"
        if not segment:
            raise TcfCaDecodeError("empty_segment", f"{where}: is empty")
        first = segment[0]
        if "A" <= first <= "H":
            if core is not None:
                raise TcfCaDecodeError("duplicate_segment", f"{where}: a second core segment")
            core = _decode_with_canonical_check(
                segment, where, _parse_core, _encode_core, lambda c: c.restrictions_absent
            )
        elif "I" <= first <= "P":
            if disclosed is not None:
                raise TcfCaDecodeError(
                    "duplicate_segment", f"{where}: a second disclosed-vendors segment"
                )
            disclosed = _decode_with_canonical_check(
                segment, where, _parse_disclosed, _encode_disclosed
            )
        elif "Y" <= first <= "Z" or "a" <= first <= "f":
            if purposes is not None:
                raise TcfCaDecodeError(
                    "duplicate_segment", f"{where}: a second publisher-purposes segment"
                )
            reader = BitReader(segment, where=where, error=TcfCaDecodeError)
            reader.read_int(3, "PubPurposesSegmentType")  # 3, fixed by the first character
            purposes = read_publisher_purposes(reader, "ExpressConsent", "ImpliedConsent")
            reader.finish()
        else:
            raise TcfCaDecodeError(
                "unknown_segment", f"{where}: is not a core, publisher or disclosed segment"
            )
    if core is None:
        raise TcfCaDecodeError("missing_core", f"{_WHERE}: has no core segment")
    pub = purposes or (frozenset(), frozenset(), 0, frozenset(), frozenset())
    return TcfCaV1Section(
        version=core.version,
        created=_from_deciseconds(core.created),
        last_updated=_from_deciseconds(core.last_updated),
        cmp_id=core.cmp_id,
        cmp_version=core.cmp_version,
        consent_screen=core.consent_screen,
        consent_language=core.language,
        vendor_list_version=core.vendor_list_version,
        tcf_policy_version=core.policy_version,
        use_non_standard_stacks=core.non_standard,
        special_feature_express_consent=core.special_features,
        purposes_express_consent=core.express,
        purposes_implied_consent=core.implied,
        vendor_express_consent=core.vendor_express,
        vendor_implied_consent=core.vendor_implied,
        pub_restrictions=core.restrictions,
        pub_purposes_express_consent=pub[0],
        pub_purposes_implied_consent=pub[1],
        num_custom_purposes=pub[2],
        custom_purposes_express_consent=pub[3],
        custom_purposes_implied_consent=pub[4],
        disclosed_vendors=disclosed or (),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_deciseconds(deciseconds: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=100 * deciseconds)
