"""Consent state derived from history, and purposes.yaml validation (issue 5)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.container import build_container
from bootstrap.settings import Settings
from identity.errors import PolicyFileError
from identity.model import RESTRICTION_PURPOSE, ConsentRecord, ConsentSignal
from privacy.access.purposes import PurposesPolicy, load_purposes_policy
from privacy.consent.state import (
    ConsentReason,
    ConsentState,
    _any_state,
    consent_state,
    is_restricted,
)
from tests.conftest import POLICY_DIR

T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
_seq = iter(range(1_000_000))


def rec(
    purpose: str,
    granted: bool,
    at: datetime,
    signal: ConsentSignal = ConsentSignal.DIRECT,
    node: str = "n1",
) -> ConsentRecord:
    n = next(_seq)
    return ConsentRecord(
        f"c_{n:06d}", node, purpose, granted, at, at, "api", signal, "consent", "0" * 64
    )


@pytest.fixture(scope="module")
def purposes() -> PurposesPolicy:
    return load_purposes_policy(POLICY_DIR / "purposes.yaml")


def state(purposes: PurposesPolicy, purpose: str, *records: ConsentRecord) -> Any:
    policy = purposes.get(purpose)
    assert policy is not None
    return consent_state(purpose, policy, records)


def test_no_record_uses_the_default(purposes: PurposesPolicy) -> None:
    assert state(purposes, "analytics").reason is ConsentReason.DEFAULT_DENY
    assert not state(purposes, "analytics").allowed
    fraud = state(purposes, "fraud_prevention")
    assert fraud.allowed
    assert fraud.reason is ConsentReason.DEFAULT_GRANT


def test_latest_decision_wins_across_identifiers(purposes: PurposesPolicy) -> None:
    grant = rec("analytics", True, T, node="n1")
    deny = rec("analytics", False, T + timedelta(seconds=1), node="n2")
    later_grant = rec("analytics", True, T + timedelta(seconds=2), node="n1")
    assert state(purposes, "analytics", grant).allowed
    assert not state(purposes, "analytics", grant, deny).allowed
    assert state(purposes, "analytics", deny, grant).reason is ConsentReason.DENIED
    result = state(purposes, "analytics", grant, deny, later_grant)
    assert result.allowed
    assert result.record_id == later_grant.record_id


def test_a_tie_denies(purposes: PurposesPolicy) -> None:
    result = state(
        purposes, "analytics", rec("analytics", True, T, node="a"), rec("analytics", False, T)
    )
    assert not result.allowed
    assert result.reason is ConsentReason.TIE_DENIED


def test_records_of_other_purposes_do_not_count(purposes: PurposesPolicy) -> None:
    assert not state(purposes, "analytics", rec("personalization", True, T)).allowed


def test_legitimate_interest_is_lost_by_an_opt_out(purposes: PurposesPolicy) -> None:
    assert state(purposes, "fraud_prevention").allowed
    objection = rec("fraud_prevention", False, T, ConsentSignal.OBJECTION)
    assert not state(purposes, "fraud_prevention", objection).allowed
    withdrawn = rec("fraud_prevention", True, T + timedelta(days=1), ConsentSignal.OBJECTION)
    assert state(purposes, "fraud_prevention", objection, withdrawn).allowed


def test_direct_marketing_objection_is_absolute(purposes: PurposesPolicy) -> None:
    objection = rec("marketing_email", False, T, ConsentSignal.OBJECTION)
    later_consent = rec("marketing_email", True, T + timedelta(days=1), ConsentSignal.WEBHOOK)
    result = state(purposes, "marketing_email", objection, later_consent)
    assert not result.allowed
    assert result.reason is ConsentReason.OBJECTED
    withdrawn = rec("marketing_email", True, T + timedelta(days=2), ConsentSignal.OBJECTION)
    # Withdrawing the objection is not a consent: the later consent decides.
    assert state(purposes, "marketing_email", objection, later_consent, withdrawn).allowed
    assert not state(purposes, "marketing_email", objection, withdrawn).allowed


def test_objection_to_a_non_marketing_purpose_can_be_outweighed_by_later_consent(
    purposes: PurposesPolicy,
) -> None:
    objection = rec("analytics", False, T, ConsentSignal.OBJECTION)
    consent = rec("analytics", True, T + timedelta(days=1))
    assert not state(purposes, "analytics", objection).allowed
    assert state(purposes, "analytics", objection, consent).allowed


def test_restriction_denies_everything_but_exempt_purposes(purposes: PurposesPolicy) -> None:
    restrict = rec(RESTRICTION_PURPOSE, False, T, ConsentSignal.RESTRICTION)
    grant = rec("analytics", True, T + timedelta(days=1))
    assert state(purposes, "analytics", grant, restrict).reason is ConsentReason.RESTRICTED
    assert state(purposes, "fraud_prevention", restrict).reason is ConsentReason.RESTRICTED
    assert state(purposes, "legal_claims", restrict).allowed
    lift = rec(RESTRICTION_PURPOSE, True, T + timedelta(days=2), ConsentSignal.RESTRICTION)
    assert state(purposes, "analytics", grant, restrict, lift).allowed
    assert is_restricted([restrict]) == (True, restrict.record_id)
    assert is_restricted([restrict, lift])[0] is False
    tie = rec(RESTRICTION_PURPOSE, True, T, ConsentSignal.RESTRICTION)
    assert is_restricted([restrict, tie])[0] is True


def test_contract_and_legal_bases_ignore_consent_signals(purposes: PurposesPolicy) -> None:
    deny = rec("legal_claims", False, T, ConsentSignal.GPC)
    result = state(purposes, "legal_claims", deny)
    assert result.allowed
    assert result.reason is ConsentReason.BASIS_WITHOUT_CONSENT


# -- purposes.yaml validation -------------------------------------------------------------------


def _policy_dir(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    doc = yaml.safe_load((target / "purposes.yaml").read_text())
    mutate(doc)
    (target / "purposes.yaml").write_text(yaml.safe_dump(doc))
    return target


BAD = [
    (
        "consent purpose defaulting to grant",
        lambda d: d["purposes"]["analytics"].update(default="grant"),
        "purposes.analytics",
    ),
    (
        "unknown category",
        lambda d: d["purposes"]["analytics"]["categories"].update(health={"retention_days": 1}),
        "purposes.analytics.categories.health",
    ),
    (
        "activation of a type that is not kept",
        lambda d: d["purposes"]["ad_targeting"].update(activation=["cookie_id"]),
        "purposes.ad_targeting.activation.0",
    ),
    (
        "feature outside the purpose's categories",
        lambda d: d["purposes"]["analytics"].update(features=["lifetime_value"]),
        "purposes.analytics.features.0",
    ),
    (
        "TCF purpose out of range",
        lambda d: d["purposes"]["analytics"]["tcf"].update(purposes=[12]),
        "purposes.analytics.tcf.purposes.0",
    ),
    (
        "typo in a key",
        lambda d: d["purposes"]["analytics"].update(lawful_bassis="consent"),
        "purposes.analytics.lawful_bassis",
    ),
    (
        "zero retention",
        lambda d: d["purposes"]["analytics"]["categories"]["behavioural"].update(retention_days=0),
        "purposes.analytics.categories.behavioural.retention_days",
    ),
]


@pytest.mark.parametrize(("what", "mutate", "field"), BAD, ids=[c[0] for c in BAD])
def test_bad_purposes_file_stops_startup_naming_the_field(
    tmp_path: Path, what: str, mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    settings = Settings(
        env="test", data_dir=tmp_path / "data", policy_dir=_policy_dir(tmp_path, mutate)
    )
    with pytest.raises(PolicyFileError) as raised:
        build_container(settings)
    assert "purposes.yaml" in str(raised.value)
    assert field in str(raised.value), what


def test_tcf_grant_older_than_the_max_age_expires_when_now_is_given(
    purposes: PurposesPolicy,
) -> None:
    policy = purposes.get("analytics")
    assert policy is not None
    old = rec("analytics", True, T - timedelta(days=400), ConsentSignal.TCF)
    max_age = timedelta(days=395)
    expired = consent_state("analytics", policy, [old], now=T, tcf_max_age=max_age)
    assert expired.reason is ConsentReason.EXPIRED
    assert not expired.allowed
    assert expired.record_id == old.record_id
    fresh = rec("analytics", True, T - timedelta(days=30), ConsentSignal.TCF)
    assert consent_state("analytics", policy, [fresh], now=T, tcf_max_age=max_age).allowed
    # Only TC-string grants age by the TCF rule; a direct grant does not.
    direct = rec("analytics", True, T - timedelta(days=400))
    assert consent_state("analytics", policy, [direct], now=T, tcf_max_age=max_age).allowed


def test_purpose_consent_expiry_applies_to_every_signal(purposes: PurposesPolicy) -> None:
    policy = purposes.get("analytics")
    assert policy is not None
    expiring = policy.model_copy(update={"consent_expiry_days": 30})
    direct = rec("analytics", True, T - timedelta(days=31))
    result = consent_state("analytics", expiring, [direct], now=T)
    assert result.reason is ConsentReason.EXPIRED
    assert consent_state("analytics", expiring, [direct]).allowed  # no now: no expiry


def test_shipped_policy_sets_the_tcf_thirteen_month_max_age(purposes: PurposesPolicy) -> None:
    assert purposes.tcf.consent_max_age == timedelta(days=395)


def test_invalid_tcf_pre_v22_setting_names_file_and_field(tmp_path: Path) -> None:
    shutil.copytree(POLICY_DIR, tmp_path / "p")
    path = tmp_path / "p" / "purposes.yaml"
    document = yaml.safe_load(path.read_text())
    document["tcf"]["pre_v22"] = "sometimes"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(PolicyFileError, match=r"purposes.yaml.*tcf.pre_v22"):
        load_purposes_policy(path)


# -- every state pinned whole: allowed, reason and the deciding record (issue 21) ------------


def test_a_tie_names_the_denial_as_the_deciding_record_whatever_the_order(
    purposes: PurposesPolicy,
) -> None:
    grant = rec("analytics", True, T, node="a")
    deny = rec("analytics", False, T, node="b")
    expected = ConsentState(False, ConsentReason.TIE_DENIED, deny.record_id)
    assert state(purposes, "analytics", grant, deny) == expected
    assert state(purposes, "analytics", deny, grant) == expected


def test_a_restricted_person_is_not_allowed_and_the_restriction_is_named(
    purposes: PurposesPolicy,
) -> None:
    grant = rec("analytics", True, T)
    restrict = rec(RESTRICTION_PURPOSE, False, T + timedelta(days=1), ConsentSignal.RESTRICTION)
    legal = state(purposes, "legal_claims", restrict)
    assert state(purposes, "analytics", grant, restrict) == ConsentState(
        False, ConsentReason.RESTRICTED, restrict.record_id
    )
    assert state(purposes, "fraud_prevention", restrict) == ConsentState(
        False, ConsentReason.RESTRICTED, restrict.record_id
    )
    assert legal == ConsentState(True, ConsentReason.BASIS_WITHOUT_CONSENT)


def test_a_lifted_restriction_gives_the_consent_state_back(purposes: PurposesPolicy) -> None:
    grant = rec("analytics", True, T)
    restrict = rec(RESTRICTION_PURPOSE, False, T + timedelta(days=1), ConsentSignal.RESTRICTION)
    lift = rec(RESTRICTION_PURPOSE, True, T + timedelta(days=2), ConsentSignal.RESTRICTION)
    assert state(purposes, "analytics", grant, restrict, lift) == ConsentState(
        True, ConsentReason.GRANTED, grant.record_id
    )
    assert is_restricted([restrict, lift]) == (False, lift.record_id)
    assert is_restricted([]) == (False, None)


def test_a_restriction_tie_restricts_and_names_the_restricting_record() -> None:
    restrict = rec(RESTRICTION_PURPOSE, False, T, ConsentSignal.RESTRICTION)
    lift = rec(RESTRICTION_PURPOSE, True, T, ConsentSignal.RESTRICTION)
    assert is_restricted([lift, restrict]) == (True, restrict.record_id)


def test_only_restriction_records_restrict(purposes: PurposesPolicy) -> None:
    # A "*" record that is not a restriction signal, or a restriction signal for a purpose,
    # restricts nothing.
    grant = rec("analytics", True, T)
    star_consent = rec(RESTRICTION_PURPOSE, False, T + timedelta(days=1))
    odd = rec("analytics", False, T + timedelta(days=1), ConsentSignal.RESTRICTION)
    assert state(purposes, "analytics", grant, star_consent, odd) == ConsentState(
        True, ConsentReason.GRANTED, grant.record_id
    )
    assert is_restricted([star_consent]) == (False, None)


def test_each_rule_reports_its_state_whole(purposes: PurposesPolicy) -> None:
    grant = rec("analytics", True, T)
    deny = rec("analytics", False, T + timedelta(days=1))
    objection = rec("marketing_email", False, T, ConsentSignal.OBJECTION)
    consent = rec("marketing_email", True, T + timedelta(days=1))
    assert state(purposes, "analytics") == ConsentState(False, ConsentReason.DEFAULT_DENY)
    assert state(purposes, "fraud_prevention") == ConsentState(True, ConsentReason.DEFAULT_GRANT)
    assert state(purposes, "analytics", grant) == ConsentState(
        True, ConsentReason.GRANTED, grant.record_id
    )
    assert state(purposes, "analytics", grant, deny) == ConsentState(
        False, ConsentReason.DENIED, deny.record_id
    )
    assert state(purposes, "marketing_email", objection, consent) == ConsentState(
        False, ConsentReason.OBJECTED, objection.record_id
    )


def test_a_withdrawn_objection_leaves_the_purpose_at_its_default(purposes: PurposesPolicy) -> None:
    objection = rec("fraud_prevention", False, T, ConsentSignal.OBJECTION)
    withdrawn = rec("fraud_prevention", True, T + timedelta(days=1), ConsentSignal.OBJECTION)
    assert state(purposes, "fraud_prevention", objection, withdrawn) == ConsentState(
        True, ConsentReason.DEFAULT_GRANT
    )
    # A standing objection to a legitimate-interest purpose denies it whatever consent says later
    # (Art. 21(1)); only compelling grounds recorded at or after it allow the purpose again.
    later_consent = rec("fraud_prevention", True, T + timedelta(days=2))
    assert state(purposes, "fraud_prevention", objection, later_consent) == ConsentState(
        False, ConsentReason.OBJECTED, objection.record_id
    )
    grounds = rec("fraud_prevention", True, T + timedelta(days=3), ConsentSignal.COMPELLING_GROUNDS)
    assert state(purposes, "fraud_prevention", objection, grounds) == ConsentState(
        True, ConsentReason.COMPELLING_GROUNDS, grounds.record_id
    )
    stale = rec("fraud_prevention", True, T - timedelta(days=1), ConsentSignal.COMPELLING_GROUNDS)
    assert state(purposes, "fraud_prevention", objection, stale).reason is ConsentReason.OBJECTED


def test_a_withdrawn_objection_keeps_the_consents_around_it(purposes: PurposesPolicy) -> None:
    consent = rec("marketing_email", True, T + timedelta(days=1))
    objection = rec("marketing_email", False, T, ConsentSignal.OBJECTION)
    withdrawn = rec("marketing_email", True, T + timedelta(days=2), ConsentSignal.OBJECTION)
    result = state(purposes, "marketing_email", objection, consent, withdrawn)
    assert result == ConsentState(True, ConsentReason.GRANTED, consent.record_id)


def test_consent_reasons_keep_their_wire_values() -> None:
    # In API responses and audit entries: renaming one is a breaking change.
    assert {r.name: r.value for r in ConsentReason} == {
        "GRANTED": "consent_granted",
        "DENIED": "consent_denied",
        "TIE_DENIED": "consent_tie_denied",
        "DEFAULT_GRANT": "default_grant",
        "DEFAULT_DENY": "no_consent",
        "BASIS_WITHOUT_CONSENT": "basis_without_consent",
        "OBJECTED": "objected",
        "COMPELLING_GROUNDS": "compelling_grounds",
        "RESTRICTED": "restricted",
        "EXPIRED": "consent_expired",
    }


# -- the one-pass path for plain histories, against every rule ---------------------------------

_PROPERTY_TIMES = [T + timedelta(days=d) for d in (0, 0, 1, 30, 400)]


@st.composite
def _histories(draw: st.DrawFn, purpose: str) -> list[ConsentRecord]:
    count = draw(st.integers(0, 5))
    records = []
    for index in range(count):
        at = draw(st.sampled_from(_PROPERTY_TIMES))
        records.append(
            ConsentRecord(
                f"c_p{index}",
                draw(st.sampled_from(["n1", "n2"])),
                draw(st.sampled_from([purpose, purpose, purpose, "other", RESTRICTION_PURPOSE])),
                draw(st.booleans()),
                at,
                at,
                "api",
                draw(st.sampled_from(list(ConsentSignal))),
                "consent",
                "0" * 64,
            )
        )
    return records


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_consent_state_gives_every_rule_its_answer_when_the_history_is_plain_or_not(
    purposes: PurposesPolicy, data: st.DataObject
) -> None:
    purpose_id = data.draw(st.sampled_from([*purposes.ids, RESTRICTION_PURPOSE]))
    policy = purposes.get(purpose_id) or purposes.get(purposes.ids[0])
    assert policy is not None
    if data.draw(st.booleans()):
        policy = policy.model_copy(update={"consent_expiry_days": data.draw(st.integers(1, 60))})
    records = data.draw(_histories(purpose_id))
    now = data.draw(st.sampled_from([None, T + timedelta(days=35), T + timedelta(days=500)]))
    tcf_max_age = data.draw(st.sampled_from([None, timedelta(days=20)]))

    fast = consent_state(purpose_id, policy, records, now=now, tcf_max_age=tcf_max_age)

    assert fast == _any_state(purpose_id, policy, records, now=now, tcf_max_age=tcf_max_age)
    if fast.reason is ConsentReason.EXPIRED:  # the age rule as it was first written
        deciding = next(r for r in records if r.record_id == fast.record_id)
        assert now is not None
        limits = [policy.consent_expiry]
        if deciding.signal is ConsentSignal.TCF:
            limits.append(tcf_max_age)
        assert any(limit is not None and now - deciding.at > limit for limit in limits)
