"""Consent signals to consent inputs (privacy/consent/signals.py), against the shipped policy.

TC and GPP strings are the IAB reference vectors of tests/privacy/consent/test_tcf.py and
tests/privacy/consent/test_gpp.py, or
built with their test encoders for exact edge cases.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from identity.errors import BatchValidationError, InvalidFieldError
from identity.model import ConsentSignal
from privacy.access.purposes import (
    PreV22Handling,
    PurposesPolicy,
    TcfSettings,
    UsRefusalEffect,
    load_purposes_policy,
)
from privacy.consent.gpp import NotAppliedReason
from privacy.consent.signals import ConsentSignals, ConsentSignalTranslator, signal_digest
from privacy.consent.tcf import PublisherRestriction, RestrictionType, VendorVector
from tests.conftest import POLICY_DIR
from tests.privacy.consent.test_gpp import REAL_TC_CORE, gpc, header, usnat_writer
from tests.privacy.consent.test_tcf import BASE, BitWriter, encode_tc_string

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TCF_PURPOSES = ("ad_measurement", "ad_targeting", "analytics", "model_training", "personalization")
GPC_PURPOSES = ("ad_measurement", "ad_targeting", "model_training")


@pytest.fixture(scope="module")
def purposes() -> PurposesPolicy:
    return load_purposes_policy(POLICY_DIR / "purposes.yaml")


@pytest.fixture
def translator(purposes: PurposesPolicy) -> ConsentSignalTranslator:
    return ConsentSignalTranslator(purposes)


def _granted(inputs: tuple[object, ...]) -> dict[str, bool]:
    return {i.purpose: i.granted for i in inputs}  # type: ignore[attr-defined]


def _tc(**changes: object) -> str:
    """A TC string built from the test encoder's BASE model with ``changes``."""
    fields: dict[str, object] = {
        "publisher_restrictions": (),
        "special_feature_optins": frozenset(),
        "purpose_legitimate_interests": frozenset(),
        **changes,
    }
    model = dataclasses.replace(BASE, **fields)  # type: ignore[arg-type]
    return encode_tc_string(model)


def test_direct_decisions_record_one_input_per_purpose_with_the_body_digest(
    translator: ConsentSignalTranslator,
) -> None:
    inputs = translator.decisions({"marketing_email": True, "analytics": False}, NOW, "d" * 64)
    assert _granted(inputs) == {"marketing_email": True, "analytics": False}
    assert {(i.signal, i.proof, i.at, i.lawful_basis) for i in inputs} == {
        (ConsentSignal.DIRECT, "d" * 64, NOW, "consent")
    }


def test_unknown_purpose_is_refused_naming_it_and_listing_valid_ones(
    translator: ConsentSignalTranslator,
) -> None:
    with pytest.raises(BatchValidationError) as info:
        translator.decisions({"newsletter": True}, NOW, "d" * 64)
    (error,) = info.value.errors
    assert error.reason == "unknown_purpose"
    assert error.field == "#/decisions/newsletter"
    assert "'newsletter'" in error.message
    assert "marketing_email" in error.message
    assert "analytics" in error.message


def test_unknown_purpose_that_looks_like_a_value_is_not_echoed(
    translator: ConsentSignalTranslator,
) -> None:
    with pytest.raises(BatchValidationError) as info:
        translator.decisions({"ann@shop.example.de": True}, NOW, "d" * 64)
    (error,) = info.value.errors
    assert "ann@" not in error.message
    assert "ann@" not in error.field


def test_decision_for_a_purpose_without_consent_basis_is_refused(
    translator: ConsentSignalTranslator,
) -> None:
    with pytest.raises(BatchValidationError) as info:
        translator.decisions({"legal_claims": False}, NOW, "d" * 64)
    assert info.value.errors[0].reason == "consent_not_applicable"


def test_reference_tc_string_with_purposes_1_to_3_grants_nothing_that_needs_more(
    translator: ConsentSignalTranslator,
) -> None:
    # REAL_CORE (iabgpp-rs tcfeuv2 vectors): purpose consents {1, 2, 3}, no special features.
    inputs = translator.tc_string(REAL_TC_CORE, NOW)
    assert _granted(inputs) == dict.fromkeys(TCF_PURPOSES, False)
    # Decided when the string says the person decided, with the string's digest as proof.
    assert {int(i.at.timestamp()) for i in inputs} == {1582243059}
    assert {i.proof for i in inputs} == {hashlib.sha256(REAL_TC_CORE.encode()).hexdigest()}
    assert {i.signal for i in inputs} == {ConsentSignal.TCF}


def test_tc_string_grants_a_purpose_only_when_every_mapped_tcf_purpose_is_consented(
    translator: ConsentSignalTranslator,
) -> None:
    # analytics maps to TCF 1, 8, 9; ad_targeting to 1-4; personalization to 1, 5, 6.
    inputs = translator.tc_string(_tc(purpose_consents=frozenset({1, 2, 3, 4, 8, 9})), NOW)
    assert _granted(inputs) == {
        "ad_measurement": False,  # needs 7
        "ad_targeting": True,
        "analytics": True,
        "model_training": False,  # needs 10
        "personalization": False,  # needs 5, 6
    }


def test_legitimate_interest_does_not_grant_a_consent_purpose(
    translator: ConsentSignalTranslator,
) -> None:
    tc = _tc(
        purpose_consents=frozenset({1}), purpose_legitimate_interests=frozenset({2, 3, 4, 7, 9})
    )
    assert not any(_granted(translator.tc_string(tc, NOW)).values())


def test_special_features_and_vendor_consent_are_required_when_configured(
    purposes: PurposesPolicy,
) -> None:
    policy = purposes.model_copy(
        update={
            "tcf": TcfSettings(vendor_id=755),
            "purposes": {
                **purposes.purposes,
                "ad_targeting": purposes.purposes["ad_targeting"].model_copy(
                    update={
                        "tcf": purposes.purposes["ad_targeting"].tcf.model_copy(
                            update={"special_features": (1,)}
                        )
                    }
                ),
            },
        }
    )
    translator = ConsentSignalTranslator(policy)
    everything = frozenset(range(1, 11))
    vendors = VendorVector(755, frozenset({1, 755}))
    granted = _tc(
        purpose_consents=everything,
        special_feature_optins=frozenset({1}),
        vendor_consents=vendors,
    )
    assert _granted(translator.tc_string(granted, NOW))["ad_targeting"] is True
    no_feature = _tc(purpose_consents=everything, vendor_consents=vendors)
    assert _granted(translator.tc_string(no_feature, NOW))["ad_targeting"] is False
    no_vendor = _tc(
        purpose_consents=everything,
        special_feature_optins=frozenset({1}),
        vendor_consents=VendorVector(755, frozenset({1})),
    )
    assert not any(_granted(translator.tc_string(no_vendor, NOW)).values())
    restricted = _tc(
        purpose_consents=everything,
        special_feature_optins=frozenset({1}),
        vendor_consents=vendors,
        publisher_restrictions=(
            PublisherRestriction(9, RestrictionType.NOT_ALLOWED, ((755, 755),)),
        ),
    )
    result = _granted(translator.tc_string(restricted, NOW))
    assert result["analytics"] is False  # TCF 9 not allowed for our vendor
    assert result["ad_targeting"] is True  # does not use TCF 9


def test_undecodable_tc_string_is_a_located_422_with_the_decoder_message(
    translator: ConsentSignalTranslator,
) -> None:
    with pytest.raises(InvalidFieldError) as info:
        translator.tc_string(REAL_TC_CORE[:20], NOW)
    assert info.value.field == "#/tcf"
    assert "truncated" in info.value.message


def test_future_dated_tc_string_is_refused(translator: ConsentSignalTranslator) -> None:
    future = _tc(last_updated=NOW + timedelta(days=3), purpose_consents=frozenset({1}))
    with pytest.raises(InvalidFieldError) as info:
        translator.tc_string(future, NOW)
    assert info.value.reason == "future_timestamp"


def test_gpc_denies_every_purpose_mapped_to_gpc(translator: ConsentSignalTranslator) -> None:
    inputs = translator.gpc(NOW, "b" * 64)
    assert _granted(inputs) == dict.fromkeys(GPC_PURPOSES, False)
    assert {i.signal for i in inputs} == {ConsentSignal.GPC}


def test_gpp_usnat_opt_out_denies_and_gpc_subsection_acts_as_gpc(
    translator: ConsentSignalTranslator,
) -> None:
    # iabgpp-rs usnat_v1_with_gpc: sale, sharing and targeted advertising all OPTED_OUT, GPC on.
    gpp = "DBABLA~BVVVVVVVVWA.YA"
    result = translator.gpp_string(gpp, NOW, NOW)
    assert {(i.purpose, i.granted) for i in result.consents} == {(p, False) for p in GPC_PURPOSES}
    assert {i.proof for i in result.consents} == {signal_digest(gpp)}
    assert result.gpp is not None
    assert result.gpp.applied == ("usnat",)


def test_gpp_usnat_did_not_opt_out_grants_and_not_applicable_records_nothing(
    translator: ConsentSignalTranslator,
) -> None:
    # usnat_writer opt-outs are (sale, sharing, targeted advertising); 2 = did not opt out.
    # Known-child consents given (2) neither grant nor deny (see the sensitive-data test).
    none_out = "~".join(
        [header([7]).encode(), usnat_writer(opt_outs=(2, 2, 2), child=(2, 2, 2)).encode()]
    )
    assert _granted(translator.gpp_string(none_out, NOW, NOW).consents) == dict.fromkeys(
        GPC_PURPOSES, True
    )
    # Sale not applicable: model_training (sale only) gets nothing; ad_measurement (sale,
    # sharing) neither; ad_targeting sees targeted advertising opted out.
    mixed = "~".join(
        [header([7]).encode(), usnat_writer(opt_outs=(0, 2, 1), child=(0, 0, 0)).encode()]
    )
    assert _granted(translator.gpp_string(mixed, NOW, NOW).consents) == {"ad_targeting": False}
    # The spec vector: every opt-out not applicable, but its third known-child entry is 1 (no
    # consent), which denies the purposes bound to it (us_known_child: deny) and nothing else.
    assert _granted(translator.gpp_string("DBABLA~CAAAAAAAAAWA.Q", NOW, NOW).consents) == {
        "ad_targeting": False,
        "model_training": False,
    }


def test_gpp_sensitive_data_or_known_child_refusal_denies_bound_purposes_when_present(
    translator: ConsentSignalTranslator,
) -> None:
    # Shipped policy: ad_targeting and model_training have us_sensitive_data and us_known_child
    # deny; ad_measurement has neither. Nobody opted out of sale, sharing or targeting.
    def decisions(*, sensitive: tuple[int, ...], child: tuple[int, ...]) -> dict[str, bool]:
        usnat = usnat_writer(opt_outs=(2, 2, 2), sensitive=sensitive, child=child).encode()
        gpp = "~".join([header([7]).encode(), usnat])
        return _granted(translator.gpp_string(gpp, NOW, NOW).consents)

    assert decisions(sensitive=(2,) * 16, child=(0, 0, 0)) == dict.fromkeys(GPC_PURPOSES, True)
    # One sensitive-data category refused (opted out) denies the bound purposes only, and the
    # denial replaces their opt-out grant: one decision per purpose.
    refused_one = (2,) * 7 + (1,) + (2,) * 8
    assert decisions(sensitive=refused_one, child=(0, 0, 0)) == {
        "ad_measurement": True,
        "ad_targeting": False,
        "model_training": False,
    }
    # A parent refused consent for a known child (second age band).
    assert decisions(sensitive=(0,) * 16, child=(2, 1, 0)) == {
        "ad_measurement": True,
        "ad_targeting": False,
        "model_training": False,
    }
    # Not applicable everywhere says nothing.
    assert decisions(sensitive=(0,) * 16, child=(0, 0, 0)) == dict.fromkeys(GPC_PURPOSES, True)


def test_gpp_state_sensitive_subsection_refusal_denies_bound_purposes_when_present(
    translator: ConsentSignalTranslator,
    purposes: PurposesPolicy,
) -> None:
    # usin (25): MspaVersion, MspaCoveredTransaction, MspaMode, 3 notices, sale and targeted
    # opt-outs (did not opt out), known child (consent), additional processing; then the
    # sensitive-data sub-section (8 entries) with one "no consent".
    core = BitWriter().uint(1, 6)
    for value in (1, 2, 1, 1, 1, 2, 2, 2, 2):
        core.uint(value, 2)
    sub = BitWriter()
    for value in (2, 2, 2, 1, 2, 2, 2, 2):
        sub.uint(value, 2)
    gpp = "~".join([header([25]).encode(), core.encode() + "." + sub.encode()])
    assert _granted(translator.gpp_string(gpp, NOW, NOW).consents)["model_training"] is False
    # The same string under a policy that ignores sensitive data grants (sale not opted out).
    ignoring = purposes.model_copy(
        update={
            "purposes": {
                pid: p.model_copy(update={"us_sensitive_data": UsRefusalEffect.IGNORE})
                for pid, p in purposes.purposes.items()
            }
        }
    )
    relaxed = ConsentSignalTranslator(ignoring).gpp_string(gpp, NOW, NOW)
    assert _granted(relaxed.consents)["model_training"] is True


def test_gpp_reports_unknown_and_undecoded_sections_without_failing(
    translator: ConsentSignalTranslator,
) -> None:
    usnat = usnat_writer(opt_outs=(2, 2, 2)).encode() + "." + gpc(False)
    gpp = "~".join([header([1, 2, 7, 30]).encode(), "BAAA", REAL_TC_CORE, usnat, "BAAA"])
    result = translator.gpp_string(gpp, NOW, NOW)
    assert result.gpp is not None
    assert result.gpp.applied == ("tcfeuv2", "usnat")
    assert result.gpp.not_applied == (1, 30)
    assert result.gpp.unknown == (30,)
    assert result.gpp.section_name(1) == "tcfeuv1"
    assert result.gpp.reason(1) is NotAppliedReason.DEPRECATED_SECTION
    assert result.gpp.reason(30) is NotAppliedReason.UNKNOWN_SECTION
    tcf_records = [i for i in result.consents if i.at != NOW]
    assert {i.purpose for i in tcf_records} == set(TCF_PURPOSES)


def test_gpp_refuses_tcfeuv1_with_a_typed_reason_and_still_applies_the_rest_when_present(
    translator: ConsentSignalTranslator,
) -> None:
    # tcfeuv1 (id 1) is deprecated and has no reference decoder: idgraph never interprets it
    # (not even a TC v1 string that would parse) but keeps the usnat opt-out next to it.
    usnat = usnat_writer(opt_outs=(1, 2, 2)).encode()
    gpp = "~".join([header([1, 7]).encode(), "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA", usnat])
    result = translator.gpp_string(gpp, NOW, NOW)
    assert result.gpp is not None
    assert result.gpp.applied == ("usnat",)
    assert result.gpp.not_applied == (1,)
    assert result.gpp.reason(1) is NotAppliedReason.DEPRECATED_SECTION
    assert _granted(result.consents)["ad_targeting"] is False


def test_translate_collects_every_error_and_tags_webhook_records(
    translator: ConsentSignalTranslator,
) -> None:
    bad = ConsentSignals(
        at=NOW, body_digest="e" * 64, decisions={"nope": True}, tc_string="!!", gpp_string="DBA"
    )
    with pytest.raises(BatchValidationError) as info:
        translator.translate(bad, NOW)
    assert [e.field for e in info.value.errors] == ["#/decisions/nope", "#/tcf", "#/gpp"]
    webhook = ConsentSignals(
        at=NOW, body_digest="e" * 64, decisions={"analytics": True}, gpc=True, via_webhook=True
    )
    inputs = translator.translate(webhook, NOW).consents
    assert {(i.signal, i.proof) for i in inputs} == {(ConsentSignal.WEBHOOK, "e" * 64)}
    with pytest.raises(InvalidFieldError) as empty:
        translator.translate(ConsentSignals(at=NOW, body_digest="e" * 64), NOW)
    assert empty.value.reason == "no_signal"


def test_usnat_opt_out_and_its_gpc_bit_give_one_record_per_purpose(
    translator: ConsentSignalTranslator,
) -> None:
    usnat = usnat_writer(opt_outs=(1, 1, 1)).encode() + "." + gpc(True)
    result = translator.gpp_string("~".join([header([7]).encode(), usnat]), NOW, NOW)
    purposes = [i.purpose for i in result.consents]
    assert len(purposes) == len(set(purposes))
    assert set(purposes) >= set(GPC_PURPOSES)
    assert not any(i.granted for i in result.consents)


def test_state_section_and_uspv1_opt_outs_deny_and_a_state_gpc_bit_acts_as_gpc(
    translator: ConsentSignalTranslator,
) -> None:
    # usca (8) at IAB defaults except SaleOptOut 1 and GPC true; uspv1 says not opted out.
    result = translator.gpp_string("DBACTMA~1YNN~BAQAAABA.YA", NOW, NOW)
    assert result.gpp is not None
    assert result.gpp.applied == ("uspv1", "usca")
    denied = {i.purpose for i in result.consents if not i.granted}
    assert denied >= set(GPC_PURPOSES)
    assert all(not i.granted for i in result.consents)


def test_uspv1_alone_grants_sale_purposes_only_when_not_opted_out(
    translator: ConsentSignalTranslator, purposes: PurposesPolicy
) -> None:
    sale_only = {
        p
        for p, purpose in purposes.purposes.items()
        if [k.value for k in purpose.us_opt_outs] == ["sale"]
    }
    assert sale_only
    granted = translator.gpp_string("DBABTA~1YNN", NOW, NOW).consents
    assert {i.purpose for i in granted if i.granted} == sale_only
    denied = translator.gpp_string("DBABTA~1YYN", NOW, NOW).consents
    assert {i.purpose for i in denied if not i.granted} >= sale_only
    assert translator.gpp_string("DBABTA~1---", NOW, NOW).consents == ()


def test_pre_v22_tc_string_is_refused_when_the_policy_says_refuse(
    purposes: PurposesPolicy,
) -> None:
    old = encode_tc_string(dataclasses.replace(BASE, tcf_policy_version=2))
    accepting = ConsentSignalTranslator(purposes)
    assert accepting.tc_string(old, NOW)
    refusing = ConsentSignalTranslator(
        purposes.model_copy(update={"tcf": TcfSettings(pre_v22=PreV22Handling.REFUSE)})
    )
    with pytest.raises(InvalidFieldError) as info:
        refusing.tc_string(old, NOW)
    assert info.value.reason == "tcf_policy_version"
    assert info.value.field == "#/tcf"
    current = encode_tc_string(dataclasses.replace(BASE, tcf_policy_version=4))
    assert refusing.tc_string(current, NOW)
