"""``consent_state`` against a plain reference: the rules written as list passes.

``consent_state`` runs once per person per read (every profile read, every member of an
audience page), so it is written as a single pass over the records. This reference is the
multi-pass form it had before (each rule one filter over the records, the latest decision by
``max``), kept here as the specification: over generated histories, purposes and clocks, both
give the same state, the same reason and the same deciding record.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from identity.model import RESTRICTION_PURPOSE, ConsentRecord, ConsentSignal
from privacy.access.purposes import Default, LawfulBasis, Purpose, PurposesPolicy
from privacy.consent.state import ConsentReason, ConsentState, consent_state
from tests.privacy.access.test_policy_engine import (
    NOW,
    PURPOSE_IDS,
    consent_records,
    purposes_policies,
)


def _ref_latest(records: list[ConsentRecord]) -> tuple[bool, str | None, bool]:
    top = max(r.at for r in records)
    at_top = [r for r in records if r.at == top]
    granted = all(r.granted for r in at_top)
    tie = len({r.granted for r in at_top}) > 1
    deciding = next((r for r in at_top if r.granted == granted), at_top[0])
    return granted, deciding.record_id, tie


def _ref_expired(
    record: ConsentRecord, purpose: Purpose, now: datetime, tcf_max_age: timedelta | None
) -> bool:
    limits = [purpose.consent_expiry]
    if record.signal is ConsentSignal.TCF:
        limits.append(tcf_max_age)
    return any(limit is not None and now - record.at > limit for limit in limits)


def _ref_state(  # noqa: PLR0911 - one return per rule
    purpose_id: str,
    purpose: Purpose,
    records: list[ConsentRecord],
    now: datetime | None,
    tcf_max_age: timedelta | None,
) -> ConsentState:
    relevant = [
        r for r in records if r.purpose == purpose_id and r.signal is not ConsentSignal.RESTRICTION
    ]
    restrictions = [
        r
        for r in records
        if not (r.purpose == purpose_id and r.signal is not ConsentSignal.RESTRICTION)
        and r.purpose == RESTRICTION_PURPOSE
        and r.signal is ConsentSignal.RESTRICTION
    ]
    if restrictions and not purpose.restriction_exempt:
        lifted, record_id, _ = _ref_latest(restrictions)
        if not lifted:
            return ConsentState(False, ConsentReason.RESTRICTED, record_id)
    if not purpose.consent_applies:
        return ConsentState(True, ConsentReason.BASIS_WITHOUT_CONSENT)
    objections = [r for r in relevant if r.signal is ConsentSignal.OBJECTION]
    overrides = [r for r in relevant if r.signal is ConsentSignal.COMPELLING_GROUNDS]
    relevant = [r for r in relevant if r.signal is not ConsentSignal.COMPELLING_GROUNDS]
    if objections:
        withdrawn, record_id, _ = _ref_latest(objections)
        if not withdrawn:
            if purpose.direct_marketing:
                return ConsentState(False, ConsentReason.OBJECTED, record_id)
            if purpose.lawful_basis is LawfulBasis.LEGITIMATE_INTEREST:
                latest = max(r.at for r in objections)
                later = [r for r in overrides if r.at >= latest]
                if not later:
                    return ConsentState(False, ConsentReason.OBJECTED, record_id)
                decision = max(later, key=lambda r: r.at)
                return ConsentState(True, ConsentReason.COMPELLING_GROUNDS, decision.record_id)
        relevant = [r for r in relevant if r.signal is not ConsentSignal.OBJECTION or not withdrawn]
        relevant = [r for r in relevant if r.signal is not ConsentSignal.OBJECTION or not r.granted]
    if not relevant:
        if purpose.default is Default.GRANT:
            return ConsentState(True, ConsentReason.DEFAULT_GRANT)
        return ConsentState(False, ConsentReason.DEFAULT_DENY)
    granted, record_id, tie = _ref_latest(relevant)
    if granted:
        deciding = next(r for r in relevant if r.record_id == record_id)
        if now is not None and _ref_expired(deciding, purpose, now, tcf_max_age):
            return ConsentState(False, ConsentReason.EXPIRED, record_id)
        return ConsentState(True, ConsentReason.GRANTED, record_id)
    return ConsentState(False, ConsentReason.TIE_DENIED if tie else ConsentReason.DENIED, record_id)


@settings(max_examples=400, deadline=None)
@given(
    policy=purposes_policies(),
    purpose_id=st.sampled_from(PURPOSE_IDS),
    records=st.lists(consent_records(), max_size=10),
    expiry_days=st.none() | st.integers(1, 6),
    tcf_days=st.none() | st.integers(1, 6),
    now_days=st.none() | st.integers(-1, 8),
)
def test_consent_state_equals_the_reference_rules_when_histories_are_generated(
    policy: PurposesPolicy,
    purpose_id: str,
    records: list[ConsentRecord],
    expiry_days: int | None,
    tcf_days: int | None,
    now_days: int | None,
) -> None:
    spec = policy.get(purpose_id)
    assert spec is not None
    purpose = spec.model_copy(update={"consent_expiry_days": expiry_days})
    now = None if now_days is None else NOW + timedelta(days=now_days)
    tcf_max_age = None if tcf_days is None else timedelta(days=tcf_days)

    got = consent_state(purpose_id, purpose, iter(records), now=now, tcf_max_age=tcf_max_age)

    assert got == _ref_state(purpose_id, purpose, records, now, tcf_max_age)


def test_the_first_denial_at_the_latest_time_decides_a_tie_when_a_grant_comes_first() -> None:
    at = NOW - timedelta(days=1)

    def rec(n: int, granted: bool) -> ConsentRecord:
        return ConsentRecord(
            f"c_{n}", "n_1", "p_one", granted, at, at, "api", ConsentSignal.DIRECT, "consent", "0"
        )

    spec = Purpose(description="d", lawful_basis=LawfulBasis.CONSENT, default=Default.DENY)
    records = [rec(1, True), rec(2, True), rec(3, False), rec(4, False)]

    state = consent_state("p_one", spec, records, now=NOW)

    assert state == ConsentState(False, ConsentReason.TIE_DENIED, "c_3")
