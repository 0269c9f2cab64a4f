"""GPP section 5 (tcfcav1, TCF Canada): decoding, both vendor-list layouts, purpose mapping.

Field-for-field parity with IAB's decoder at scale is in tests/privacy/consent/test_consent_diff.py;
these pin
the behaviours a reader should be able to see without node: the legacy layout, what is refused,
and how express and implied consent map to purposes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from privacy.access.purposes import CaImpliedConsent, PurposesPolicy, load_purposes_policy
from privacy.consent.gpp import GppDecodeError, decode_gpp_string
from privacy.consent.signals import ConsentSignalTranslator
from tests.conftest import POLICY_DIR
from tests.privacy.consent.test_gpp import header
from tests.privacy.consent.test_tcf import BitWriter

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 2, tzinfo=UTC)


def core(
    *,
    express: set[int] = frozenset(),  # type: ignore[assignment]
    implied: set[int] = frozenset(),  # type: ignore[assignment]
    vendors: list[int] = (),  # type: ignore[assignment]
    legacy: bool = False,
    version: int = 1,
) -> BitWriter:
    w = BitWriter().uint(version, 6).timestamp(WHEN).timestamp(WHEN)
    w.uint(7, 12).uint(2, 12).uint(1, 6).letters("FR").uint(40, 12).uint(2, 6).flag(False)
    w.bitfield(set(), 12).bitfield(set(express), 24).bitfield(set(implied), 24)
    # VendorExpressConsent as a range (max id, flag 1, then the range), VendorImpliedConsent empty.
    w.uint(max(vendors, default=0), 16).flag(bool(vendors))
    if not vendors:
        pass
    elif legacy:
        w.uint(len(vendors), 12)
        for vendor in vendors:
            w.flag(False).uint(vendor, 16)
    else:
        w.fibonacci_range(list(vendors))
    return w.uint(0, 16).flag(False).uint(0, 12)


def gpp(*sections: str) -> str:
    return "~".join([header([5]).encode(), ".".join(sections)])


def test_tcfcav1_decodes_both_vendor_list_layouts_when_each_is_canonical() -> None:
    # 100 and 300 as singles: as a Fibonacci range that is shorter than a 300-bit field, and
    # the 16-bit legacy range (12 + 2 * 17 bits) is shorter too, so both are canonical.
    for legacy in (False, True):
        section = decode_gpp_string(gpp(core(vendors=[100, 300], legacy=legacy).encode()))
        assert section.tcfcav1 is not None
        assert section.tcfcav1.vendor_express_consent == (100, 300)
        assert section.tcfcav1.consent_language == "FR"
        assert section.tcfcav1.created == WHEN
        assert section.tcfcav1.disclosed_vendors == ()


def test_tcfcav1_refuses_a_non_canonical_vendor_list_when_no_layout_round_trips() -> None:
    # Ids 1 and 2 written as two singles: IAB's encoder writes them as one range, so neither
    # layout re-encodes to these bits (the reference would fall back to a best-effort decode).
    with pytest.raises(GppDecodeError) as info:
        decode_gpp_string(gpp(core(vendors=[1, 2], legacy=True).encode()))
    assert info.value.reason == "non_canonical"


@pytest.mark.parametrize(
    ("sections", "reason"),
    [
        (lambda: ["YAAAAAAAAAA"], "missing_core"),
        (lambda: [core().encode(), core().encode()], "duplicate_segment"),
        (lambda: [core(version=2).encode()], "unsupported_version"),
        (lambda: [core().encode(), "wAAA"], "unknown_segment"),
    ],
    ids=["no core", "two cores", "version 2", "unknown segment"],
)
def test_tcfcav1_refuses_with_a_typed_reason_when_malformed(sections: object, reason: str) -> None:
    assert callable(sections)
    with pytest.raises(GppDecodeError) as info:
        decode_gpp_string(gpp(*sections()))
    assert info.value.reason == reason


@pytest.fixture(scope="module")
def purposes() -> PurposesPolicy:
    return load_purposes_policy(POLICY_DIR / "purposes.yaml")


def _granted(translator: ConsentSignalTranslator, s: str) -> dict[str, bool]:
    result = translator.gpp_string(s, NOW, NOW)
    assert result.gpp is not None
    assert "tcfcav1" in result.gpp.applied
    assert len({i.purpose for i in result.consents}) == len(result.consents)
    return {i.purpose: i.granted for i in result.consents}


def test_tcfcav1_express_consent_grants_and_implied_needs_the_policy_when_mapped(
    purposes: PurposesPolicy,
) -> None:
    # Shipped mapping: analytics = TCF purposes 1, 8, 9; personalization = 1, 5, 6.
    s = gpp(core(express={1, 8, 9}, implied={5, 6}).encode())
    strict = _granted(ConsentSignalTranslator(purposes), s)
    assert strict["analytics"] is True
    assert strict["personalization"] is False  # implied consent ignored by default
    accepting = purposes.model_copy(
        update={
            "tcf": purposes.tcf.model_copy(update={"ca_implied_consent": CaImpliedConsent.ACCEPT})
        }
    )
    relaxed = _granted(ConsentSignalTranslator(accepting), s)
    assert relaxed["analytics"] is True
    assert relaxed["personalization"] is True
    assert relaxed["ad_targeting"] is False  # purposes 2-4 neither express nor implied
