"""PolicyEngine.decide: a property test over every kind of input, and focused cases.

The property: whatever the purposes policy, the consent history, the caller's purposes, the
fields' categories and ages, ``decide`` never allows a field the policy forbids. The oracle below
is written from the rules in words (purposes.yaml's comments and the engine's docstring), not
from the engine's code, so a bug in the engine does not hide in the oracle.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from identity.model import RESTRICTION_PURPOSE, ConsentRecord, ConsentSignal, consent_grant
from privacy.access.policy_engine import (
    ALL_PURPOSES,
    IDENTIFIER_CATEGORY,
    Caller,
    FieldReason,
    FieldRef,
    FieldVerdict,
    PersonContext,
    PolicyDecision,
    PolicyEngine,
    ReadDenied,
)
from privacy.access.purposes import (
    CategoryAccess,
    Default,
    LawfulBasis,
    Purpose,
    PurposesPolicy,
    load_purposes_policy,
)
from privacy.consent.state import ConsentReason, consent_state
from tests.conftest import POLICY_DIR

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CATEGORIES = ("behavioural", "location", "demographic", "financial", "contact")
PURPOSE_IDS = ("p_one", "p_two", "p_three")
TYPES = ("email", "phone", "customer_id")


@st.composite
def purposes_policies(draw: st.DrawFn) -> PurposesPolicy:
    purposes: dict[str, Purpose] = {}
    for pid in PURPOSE_IDS:
        basis = draw(st.sampled_from(LawfulBasis))
        default = Default.DENY if basis is LawfulBasis.CONSENT else draw(st.sampled_from(Default))
        categories = draw(
            st.dictionaries(
                st.sampled_from(CATEGORIES),
                st.integers(1, 400).map(lambda d: CategoryAccess(retention_days=d)),
                max_size=len(CATEGORIES),
            )
        )
        purposes[pid] = Purpose(
            description="generated",
            lawful_basis=basis,
            default=default,
            direct_marketing=draw(st.booleans()),
            restriction_exempt=draw(st.booleans()),
            categories=categories,
            activation=tuple(draw(st.sets(st.sampled_from(TYPES)))),
        )
    return PurposesPolicy(version=1, purposes=purposes)


@st.composite
def consent_records(draw: st.DrawFn) -> ConsentRecord:
    signal = draw(st.sampled_from(ConsentSignal))
    purpose = (
        RESTRICTION_PURPOSE
        if signal is ConsentSignal.RESTRICTION
        else draw(st.sampled_from(PURPOSE_IDS))
    )
    # Few distinct times, so ties (which must deny) are common.
    at = NOW - timedelta(days=draw(st.integers(0, 5)))
    n = draw(st.integers(0, 10**9))
    return ConsentRecord(
        f"c_{n:012d}", "n_1", purpose, draw(st.booleans()), at, at, "api", signal, "consent", "0"
    )


fields_strategy = st.lists(
    st.builds(
        FieldRef,
        name=st.sampled_from(("attribute:city", "event:purchase", "raw_identifier:email")),
        category=st.sampled_from((*CATEGORIES, IDENTIFIER_CATEGORY, "special_category")),
        recorded_at=st.integers(0, 500).map(lambda d: NOW - timedelta(days=d)),
        identifier_type=st.none() | st.sampled_from(TYPES),
    ),
    max_size=8,
)


def _restricted(records: list[ConsentRecord]) -> bool:
    restrictions = [r for r in records if r.signal is ConsentSignal.RESTRICTION]
    if not restrictions:
        return False
    latest = max(r.at for r in restrictions)
    # Lifted only if every restriction record at the latest time lifts it (a tie restricts).
    return not all(r.granted for r in restrictions if r.at == latest)


@settings(max_examples=250, deadline=None)
@given(
    policy=purposes_policies(),
    purpose=st.sampled_from((*PURPOSE_IDS, "unknown_purpose")),
    caller_purposes=st.sets(st.sampled_from((*PURPOSE_IDS, ALL_PURPOSES))),
    records=st.lists(consent_records(), max_size=8),
    person_known=st.booleans(),
    fields=fields_strategy,
)
def test_decide_never_returns_a_field_the_policy_forbids(
    policy: PurposesPolicy,
    purpose: str,
    caller_purposes: set[str],
    records: list[ConsentRecord],
    person_known: bool,
    fields: list[FieldRef],
) -> None:
    caller = Caller("key1", frozenset(caller_purposes), "key1")
    person = PersonContext("p_1", tuple(records)) if person_known else None

    decision = PolicyEngine(policy).decide(caller, person, purpose, fields, NOW)

    assert [v.field for v in decision.fields] == fields  # one verdict per field, in order
    allowed = decision.allowed_fields
    if not decision.allowed:
        assert allowed == ()
        assert all(v.reason is FieldReason.READ_DENIED for v in decision.fields)
    if not allowed:
        return
    spec = policy.get(purpose)
    assert spec is not None, "a field of an unknown purpose"
    assert ALL_PURPOSES in caller_purposes or purpose in caller_purposes, "caller lacks purpose"
    assert person is not None, "a field of an unknown person"
    if not spec.restriction_exempt:
        assert not _restricted(records), "a field of a restricted person"
    own = [
        r
        for r in records
        if r.purpose == purpose
        and r.signal not in (ConsentSignal.OBJECTION, ConsentSignal.RESTRICTION)
    ]
    if spec.lawful_basis is LawfulBasis.CONSENT:
        assert any(r.granted for r in own), "consent presumed without any grant"
    if spec.consent_applies and own and not any(r.granted for r in own):
        raise AssertionError("a field although every decision for the purpose is a denial")
    if spec.consent_applies and spec.direct_marketing:
        objections = [r for r in records if r.purpose == purpose]
        objections = [r for r in objections if r.signal is ConsentSignal.OBJECTION]
        if objections:
            latest = max(r.at for r in objections)
            assert all(r.granted for r in objections if r.at == latest), "objection ignored"
    for ref in allowed:
        if ref.category == IDENTIFIER_CATEGORY:
            assert ref.identifier_type in spec.activation, "identifier the purpose cannot activate"
            continue
        access = spec.categories.get(ref.category)
        assert access is not None, "category the purpose may not read"
        assert NOW - ref.recorded_at < access.retention, "field past retention"


@settings(max_examples=200, deadline=None)
@given(
    policy=purposes_policies(),
    purpose=st.sampled_from((*PURPOSE_IDS, "unknown_purpose")),
    caller_purposes=st.sets(st.sampled_from((*PURPOSE_IDS, ALL_PURPOSES))),
    records=st.lists(consent_records(), max_size=8),
    person_known=st.booleans(),
    fields=fields_strategy,
)
def test_with_fields_and_field_mask_on_a_gate_decision_equal_deciding_with_the_fields(
    policy: PurposesPolicy,
    purpose: str,
    caller_purposes: set[str],
    records: list[ConsentRecord],
    person_known: bool,
    fields: list[FieldRef],
) -> None:
    engine = PolicyEngine(policy)
    caller = Caller("key1", frozenset(caller_purposes), "key1")
    person = PersonContext("p_1", tuple(records)) if person_known else None

    gate = engine.decide(caller, person, purpose, (), NOW)

    assert engine.with_fields(gate, fields, NOW) == engine.decide(
        caller, person, purpose, fields, NOW
    )
    # The compact form (field_mask, what a profile read uses) gives the same verdicts for the
    # fields as (category, recorded_at): fields without an identifier type.
    plain = [FieldRef(f.name, f.category, f.recorded_at) for f in fields]
    full = engine.with_fields(gate, plain, NOW)
    mask = engine.field_mask(gate, [(f.category, f.recorded_at) for f in plain], NOW)
    assert mask.allowed == tuple(v.allowed for v in full.fields)
    assert dict(mask.withheld) == full.withheld


@settings(max_examples=200, deadline=None)
@given(
    policy=purposes_policies(),
    purpose=st.sampled_from((*PURPOSE_IDS, "unknown_purpose")),
    caller_purposes=st.sets(st.sampled_from((*PURPOSE_IDS, ALL_PURPOSES))),
    persons=st.lists(
        st.tuples(st.lists(consent_records(), max_size=6), fields_strategy | st.just([])),
        max_size=6,
    ),
)
def test_decide_many_equals_deciding_each_person_when_a_page_is_decided_at_once(
    policy: PurposesPolicy,
    purpose: str,
    caller_purposes: set[str],
    persons: list[tuple[list[ConsentRecord], list[FieldRef]]],
) -> None:
    engine = PolicyEngine(policy)
    caller = Caller("key1", frozenset(caller_purposes), "key1")
    page = [(f"p_{i}", tuple(records), fields) for i, (records, fields) in enumerate(persons)]

    decisions = engine.decide_many(caller, page, purpose, NOW)

    expected = [
        engine.decide(caller, PersonContext(pid, records), purpose, fields, NOW)
        for pid, records, fields in page
    ]
    assert decisions == expected
    # The reasons are the same plain strings (what the audit and the metrics are given).
    assert [type(d.reason) for d in decisions] == [type(d.reason) for d in expected]
    # refusals: the same decisions without fields, as allowed (None) or the denial's reason.
    refused = engine.refusals(caller, [records for _, records, _ in page], purpose, NOW)
    assert refused == [
        None if d.allowed else d.reason
        for d in engine.decide_many(caller, [(p, r, ()) for p, r, _ in page], purpose, NOW)
    ]
    assert all(type(r) is str for r in refused if r is not None)


@st.composite
def expiring_records(draw: st.DrawFn) -> ConsentRecord:
    """A record whose age is at, just under or just over 1-3 days (the expiry limits below)."""
    signal = draw(st.sampled_from(ConsentSignal))
    purpose = (
        RESTRICTION_PURPOSE
        if signal is ConsentSignal.RESTRICTION
        else draw(st.sampled_from(PURPOSE_IDS))
    )
    at = NOW - timedelta(
        days=draw(st.integers(0, 3)), microseconds=draw(st.sampled_from((-1, 0, 1)))
    )
    n = draw(st.integers(0, 10**9))
    return ConsentRecord(
        f"c_{n:012d}", "n_1", purpose, draw(st.booleans()), at, at, "api", signal, "consent", "0"
    )


@settings(max_examples=300, deadline=None)
@given(
    policy=purposes_policies(),
    expiry_days=st.dictionaries(st.sampled_from(PURPOSE_IDS), st.integers(1, 3)),
    tcf_days=st.none() | st.integers(1, 3),
    purpose=st.sampled_from(PURPOSE_IDS),
    persons=st.lists(st.lists(expiring_records(), max_size=4), max_size=8),
)
def test_decide_many_expires_grants_as_decide_does_when_grants_are_at_the_expiry_limits(
    policy: PurposesPolicy,
    expiry_days: dict[str, int],
    tcf_days: int | None,
    purpose: str,
    persons: list[list[ConsentRecord]],
) -> None:
    # Grants exactly at, a microsecond under and a microsecond over the purpose's expiry and
    # the TCF age: the page-wide path must draw the line where decide does.
    purposes = {
        pid: p.model_copy(update={"consent_expiry_days": expiry_days.get(pid)})
        for pid, p in policy.purposes.items()
    }
    tcf = policy.tcf.model_copy(update={"consent_max_age_days": tcf_days})
    engine = PolicyEngine(policy.model_copy(update={"purposes": purposes, "tcf": tcf}))
    caller = Caller("key1", frozenset({ALL_PURPOSES}), "key1")
    page = [(f"p_{i}", tuple(records), ()) for i, records in enumerate(persons)]

    decisions = engine.decide_many(caller, page, purpose, NOW)

    assert decisions == [
        engine.decide(caller, PersonContext(pid, records), purpose, (), NOW)
        for pid, records, _ in page
    ]


# -- focused cases on the shipped policy ----------------------------------------------------

SHIPPED = load_purposes_policy(POLICY_DIR / "purposes.yaml")
ENGINE = PolicyEngine(SHIPPED)


def _grant(purpose: str, at: datetime = NOW - timedelta(days=1)) -> ConsentRecord:
    return ConsentRecord("c_1", "n_1", purpose, True, at, at, "api", ConsentSignal.DIRECT, "", "")


def test_allowed_read_withholds_categories_and_old_facts_with_reasons() -> None:
    person = PersonContext("p_1", (_grant("ad_targeting"),))
    fields = [
        FieldRef("attribute:city", "location", NOW - timedelta(days=3)),
        FieldRef("attribute:age_band", "demographic", NOW - timedelta(days=3)),
        FieldRef("event:purchase", "behavioural", NOW - timedelta(days=181)),
        FieldRef("raw_identifier:phone", IDENTIFIER_CATEGORY, NOW, identifier_type="phone"),
        FieldRef("raw_identifier:customer_id", IDENTIFIER_CATEGORY, NOW, "customer_id"),
    ]

    decision = ENGINE.decide(
        Caller("k", frozenset({"*"}), "k"), person, "ad_targeting", fields, NOW
    )

    assert decision.allowed
    assert decision.reason == "consent_granted"
    assert decision.consent_record_id == "c_1"
    assert [f.name for f in decision.allowed_fields] == ["attribute:city", "raw_identifier:phone"]
    assert decision.withheld == {
        "category_not_allowed": 1,
        "past_retention": 1,
        "not_activatable": 1,
    }


def test_read_is_denied_in_order_purpose_scope_person_consent() -> None:
    field = [FieldRef("attribute:city", "location", NOW)]
    person = PersonContext("p_1", ())
    scoped = Caller("k", frozenset({"ad_targeting"}), "k")

    assert ENGINE.decide(scoped, person, "nope", field, NOW).reason == "unknown_purpose"
    assert ENGINE.decide(scoped, person, "analytics", field, NOW).reason == "purpose_not_in_scope"
    assert ENGINE.decide(scoped, None, "ad_targeting", field, NOW).reason == "no_such_person"
    assert ENGINE.decide(scoped, person, "ad_targeting", field, NOW).reason == "no_consent"


def test_legitimate_interest_purpose_reads_by_default_until_an_opt_out() -> None:
    caller = Caller("k", frozenset({"fraud_prevention"}), "k")
    field = [FieldRef("attribute:city", "location", NOW)]
    opt_out = ConsentRecord(
        "c_2", "n_1", "fraud_prevention", False, NOW, NOW, "api", ConsentSignal.DIRECT, "", ""
    )

    assert ENGINE.decide(caller, PersonContext("p", ()), "fraud_prevention", field, NOW).allowed
    denied = ENGINE.decide(caller, PersonContext("p", (opt_out,)), "fraud_prevention", field, NOW)
    assert not denied.allowed
    assert denied.allowed_fields == ()


def test_tc_string_grant_past_the_thirteen_month_max_age_is_denied_as_expired() -> None:
    at = NOW - timedelta(days=400)
    old = ConsentRecord("c_9", "n_1", "analytics", True, at, at, "api", ConsentSignal.TCF, "", "")
    caller = Caller("k", frozenset({"*"}), "k")
    decision = ENGINE.decide(caller, PersonContext("p_1", (old,)), "analytics", [], NOW)
    assert not decision.allowed
    assert decision.reason == "consent_expired"
    assert decision.consent_record_id == "c_9"
    recent = dataclasses.replace(old, at=NOW - timedelta(days=10))
    assert ENGINE.decide(caller, PersonContext("p_1", (recent,)), "analytics", [], NOW).allowed


# -- every decision pinned whole: .allowed, reason, deciding record, fields (issue 21) -------

FIELD = FieldRef("attribute:city", "location", NOW - timedelta(days=3))
EVERYTHING = Caller("k", frozenset({ALL_PURPOSES}), "k")


def _record(
    record_id: str,
    purpose: str,
    granted: bool,
    at: datetime = NOW - timedelta(days=1),
    signal: ConsentSignal = ConsentSignal.DIRECT,
) -> ConsentRecord:
    return ConsentRecord(record_id, "n_1", purpose, granted, at, at, "api", signal, "", "")


def _denied(
    purpose: str, person_id: str | None, reason: str, record: str | None = None
) -> PolicyDecision:
    verdict = FieldVerdict(FIELD, False, FieldReason.READ_DENIED)
    return PolicyDecision(False, purpose, person_id, reason, (verdict,), record)


def test_every_early_denial_is_not_allowed_names_no_record_and_withholds_every_field() -> None:
    person = PersonContext("p_1", (_grant("ad_targeting"),))
    scoped = Caller("k", frozenset({"ad_targeting"}), "k")

    unknown = ENGINE.decide(scoped, person, "nope", [FIELD], NOW)
    out_of_scope = ENGINE.decide(scoped, person, "analytics", [FIELD], NOW)
    no_person = ENGINE.decide(scoped, None, "ad_targeting", [FIELD], NOW)

    assert unknown == _denied("nope", "p_1", "unknown_purpose")
    assert out_of_scope == _denied("analytics", "p_1", "purpose_not_in_scope")
    assert no_person == _denied("ad_targeting", None, "no_such_person")
    for decision in (unknown, out_of_scope, no_person):
        assert decision.allowed is False
        assert decision.allowed_fields == ()
        assert decision.withheld == {"read_denied": 1}


def test_unknown_purpose_is_decided_before_scope_and_person() -> None:
    nobody = Caller("k", frozenset(), "k")
    assert ENGINE.decide(nobody, None, "nope", [FIELD], NOW) == _denied(
        "nope", None, "unknown_purpose"
    )
    assert ENGINE.decide(nobody, None, "analytics", [FIELD], NOW) == _denied(
        "analytics", None, "purpose_not_in_scope"
    )


def test_a_consent_denial_names_the_deciding_record() -> None:
    grant = _record("c_grant", "ad_targeting", True, NOW - timedelta(days=5))
    withdrawal = _record("c_withdrawal", "ad_targeting", False, NOW - timedelta(days=2))
    restriction = _record(
        "c_restrict", RESTRICTION_PURPOSE, False, NOW - timedelta(days=1), ConsentSignal.RESTRICTION
    )

    denied = ENGINE.decide(
        EVERYTHING, PersonContext("p_1", (grant, withdrawal)), "ad_targeting", [FIELD], NOW
    )
    restricted = ENGINE.decide(
        EVERYTHING, PersonContext("p_1", (grant, restriction)), "ad_targeting", [FIELD], NOW
    )
    no_record = ENGINE.decide(EVERYTHING, PersonContext("p_1", ()), "ad_targeting", [FIELD], NOW)

    assert denied == _denied("ad_targeting", "p_1", "consent_denied", "c_withdrawal")
    assert restricted == _denied("ad_targeting", "p_1", "restricted", "c_restrict")
    assert no_record == _denied("ad_targeting", "p_1", "no_consent")


def test_an_allowed_read_names_the_deciding_grant_and_the_person() -> None:
    old = _record("c_old", "ad_targeting", False, NOW - timedelta(days=9))
    grant = _record("c_new", "ad_targeting", True, NOW - timedelta(days=1))

    decision = ENGINE.decide(
        EVERYTHING, PersonContext("p_7", (old, grant)), "ad_targeting", [FIELD], NOW
    )

    assert decision == PolicyDecision(
        True,
        "ad_targeting",
        "p_7",
        "consent_granted",
        (FieldVerdict(FIELD, True, FieldReason.ALLOWED),),
        "c_new",
    )


def test_a_fact_exactly_at_its_retention_age_is_past_retention() -> None:
    # ad_targeting reads location for 180 days (purposes.yaml).
    retention = SHIPPED.purposes["ad_targeting"].categories["location"].retention
    person = PersonContext("p_1", (_grant("ad_targeting"),))
    at_limit = FieldRef("attribute:city", "location", NOW - retention)
    just_inside = FieldRef("attribute:zip", "location", NOW - retention + timedelta(microseconds=1))

    decision = ENGINE.decide(EVERYTHING, person, "ad_targeting", [at_limit, just_inside], NOW)

    assert decision.fields == (
        FieldVerdict(at_limit, False, FieldReason.PAST_RETENTION),
        FieldVerdict(just_inside, True, FieldReason.ALLOWED),
    )


def test_withheld_counts_each_reason_once_per_field() -> None:
    person = PersonContext("p_1", (_grant("ad_targeting"),))
    old = NOW - timedelta(days=4000)
    fields = [
        FieldRef("a", "location", old),
        FieldRef("b", "location", old),
        FieldRef("c", "special_category", NOW),
        FieldRef("d", "location", NOW),
    ]

    decision = ENGINE.decide(EVERYTHING, person, "ad_targeting", fields, NOW)

    assert decision.withheld == {"past_retention": 2, "category_not_allowed": 1}
    assert [f.name for f in decision.allowed_fields] == ["d"]
    # Whole verdicts: a forbidden category is withheld with allowed=False, not a falsy stand-in.
    assert decision.fields == (
        FieldVerdict(fields[0], False, FieldReason.PAST_RETENTION),
        FieldVerdict(fields[1], False, FieldReason.PAST_RETENTION),
        FieldVerdict(fields[2], False, FieldReason.CATEGORY_NOT_ALLOWED),
        FieldVerdict(fields[3], True, FieldReason.ALLOWED),
    )


def test_kept_raw_identifiers_are_allowed_only_for_types_the_purpose_activates() -> None:
    # "identifier" is the category the resolution engine gives kept raw identifiers
    # (FactKind.RAW_IDENTIFIER): written out here, not taken from the engine's constant.
    person = PersonContext("p_1", (_grant("ad_targeting"),))
    email = FieldRef("raw_identifier:email", "identifier", NOW, "email")
    untyped = FieldRef("raw_identifier:?", "identifier", NOW, None)
    cookie = FieldRef("raw_identifier:cookie_id", "identifier", NOW, "cookie_id")

    decision = ENGINE.decide(EVERYTHING, person, "ad_targeting", [email, untyped, cookie], NOW)

    assert decision.fields == (
        FieldVerdict(email, True, FieldReason.ALLOWED),
        FieldVerdict(untyped, False, FieldReason.NOT_ACTIVATABLE),
        FieldVerdict(cookie, False, FieldReason.NOT_ACTIVATABLE),
    )


def test_a_key_for_every_purpose_or_for_the_purpose_may_read_and_no_other() -> None:
    assert Caller("k", frozenset({"*"}), "k").may_read_for("analytics")
    assert Caller("k", frozenset({"analytics"}), "k").may_read_for("analytics")
    assert not Caller("k", frozenset({"ad_targeting"}), "k").may_read_for("analytics")
    assert not Caller("k", frozenset(), "k").may_read_for("analytics")


def test_decision_and_field_reasons_keep_their_wire_values() -> None:
    # These strings are in API responses, audit entries and dashboards: renaming one is a
    # breaking change, so they are pinned here.
    assert [r.value for r in FieldReason] == [
        "allowed",
        "category_not_allowed",
        "past_retention",
        "read_denied",
        "not_activatable",
    ]
    assert [r.value for r in ReadDenied] == [
        "unknown_purpose",
        "purpose_not_in_scope",
        "no_such_person",
        "data_keys_destroyed",
    ]
    assert ALL_PURPOSES == "*"
    assert ENGINE.purposes is SHIPPED


def test_decide_many_draws_the_expiry_line_where_decide_does_when_a_grant_is_exactly_that_old() -> (
    None
):
    # A grant exactly as old as the limit still allows (expired means older than the limit);
    # a microsecond older is expired. For the purpose's own expiry and for the TCF age.
    purpose = SHIPPED.purposes["ad_targeting"].model_copy(update={"consent_expiry_days": 30})
    policy = SHIPPED.model_copy(
        update={
            "purposes": {**SHIPPED.purposes, "ad_targeting": purpose},
            "tcf": SHIPPED.tcf.model_copy(update={"consent_max_age_days": 10}),
        }
    )
    engine = PolicyEngine(policy)
    caller = Caller("k", frozenset({ALL_PURPOSES}), "k")
    page = []
    for signal, days in ((ConsentSignal.DIRECT, 30), (ConsentSignal.TCF, 10)):
        for extra_us in (-1, 0, 1):
            at = NOW - timedelta(days=days, microseconds=extra_us)
            record = ConsentRecord(
                f"c_{days}_{extra_us + 1}",
                "n_1",
                "ad_targeting",
                True,
                at,
                at,
                "api",
                signal,
                "",
                "",
            )
            page.append((f"p_{days}_{extra_us + 1}", (record,), ()))

    decisions = engine.decide_many(caller, page, "ad_targeting", NOW)

    assert [(d.allowed, d.reason) for d in decisions] == [
        (True, "consent_granted"),
        (True, "consent_granted"),
        (False, "consent_expired"),
    ] * 2
    assert decisions == [
        engine.decide(caller, PersonContext(pid, records), "ad_targeting", (), NOW)
        for pid, records, _ in page
    ]


@st.composite
def stored_records(draw: st.DrawFn) -> ConsentRecord:
    """A record as a store holds it (millisecond times): decided at, just under or just over
    1-3 days ago (the expiry limits below) or 400 days ago (past TCF's 13 months), recorded at
    one of a few times (the order of records decided at one time), any signal."""
    signal = draw(st.sampled_from(ConsentSignal))
    purpose = (
        RESTRICTION_PURPOSE
        if signal is ConsentSignal.RESTRICTION
        else draw(st.sampled_from(PURPOSE_IDS))
    )
    at = NOW - timedelta(
        days=draw(st.sampled_from((0, 1, 2, 3, 400))),
        milliseconds=draw(st.sampled_from((-1, 0, 1))),
    )
    recorded_at = at + timedelta(milliseconds=draw(st.sampled_from((0, 0, 5))))
    n = draw(st.integers(0, 10**9))
    return ConsentRecord(
        f"c_{n:012d}", "n_1", purpose, draw(st.booleans()), at, recorded_at, "api", signal, "c", "0"
    )


@settings(max_examples=400, deadline=None)
@given(
    policy=purposes_policies(),
    expiry_days=st.dictionaries(st.sampled_from(PURPOSE_IDS), st.integers(1, 3)),
    tcf_days=st.none() | st.sampled_from((1, 2, 395)),
    purpose=st.sampled_from(PURPOSE_IDS),
    persons=st.lists(st.lists(stored_records(), max_size=5), max_size=8),
)
def test_a_consent_grant_decides_as_the_records_it_reduces_when_a_page_carries_grants(
    policy: PurposesPolicy,
    expiry_days: dict[str, int],
    tcf_days: int | None,
    purpose: str,
    persons: list[list[ConsentRecord]],
) -> None:
    # A member scan hands the engine a ConsentGrant instead of the records of a person whose
    # records reduce to one (identity.model.consent_grant): withdrawals, ties, expiry by the
    # purpose's age or TCF's, GPC / GPP / webhook signals, objections and restrictions (which
    # never reduce). The decision must be the one the records give, deciding record included.
    purposes = {
        pid: p.model_copy(update={"consent_expiry_days": expiry_days.get(pid)})
        for pid, p in policy.purposes.items()
    }
    tcf = policy.tcf.model_copy(update={"consent_max_age_days": tcf_days})
    engine = PolicyEngine(policy.model_copy(update={"purposes": purposes, "tcf": tcf}))
    caller = Caller("key1", frozenset({ALL_PURPOSES}), "key1")
    # The records in the order a store returns them (at, recorded_at, record id).
    histories = [
        tuple(sorted(records, key=lambda r: (r.at, r.recorded_at, r.record_id)))
        for records in persons
    ]
    consent_based = purposes[purpose].consent_applies
    grants = [consent_grant(records, purpose) if consent_based else None for records in histories]
    page = [
        (f"p_{i}", records if grant is None else grant, ())
        for i, (records, grant) in enumerate(zip(histories, grants, strict=True))
    ]

    decisions = engine.decide_many(caller, page, purpose, NOW)

    assert decisions == [
        engine.decide(caller, PersonContext(f"p_{i}", records), purpose, (), NOW)
        for i, records in enumerate(histories)
    ]
    # refusals decides the same page (grants and records) as decide_many does.
    assert engine.refusals(caller, [consents for _, consents, _ in page], purpose, NOW) == [
        None if d.allowed else d.reason for d in decisions
    ]
    for records, grant in zip(histories, grants, strict=True):
        if grant is not None:  # a grant is only ever what the records say: granted or expired
            state = consent_state(purpose, purposes[purpose], records, now=NOW)
            assert state.record_id == grant.record_id
            assert state.reason in (ConsentReason.GRANTED, ConsentReason.EXPIRED)


def test_a_consent_grant_for_another_purpose_or_a_purpose_without_consent_is_refused() -> None:
    grant = consent_grant((_grant("ad_targeting"),), "ad_targeting")
    assert grant is not None
    caller = Caller("k", frozenset({ALL_PURPOSES}), "k")
    for purpose in ("analytics", "fraud_prevention"):
        try:
            ENGINE.decide_many(caller, [("p_1", grant, ())], purpose, NOW)
        except ValueError:
            continue
        raise AssertionError(f"a grant for ad_targeting decided {purpose}")


def test_a_tcf_grant_past_thirteen_months_expires_from_the_grant_alone() -> None:
    at = NOW - timedelta(days=400)
    tcf = ConsentRecord(
        "c_1", "n_1", "ad_targeting", True, at, at, "cmp:x", ConsentSignal.TCF, "", ""
    )
    direct = dataclasses.replace(tcf, record_id="c_2", signal=ConsentSignal.DIRECT)
    caller = Caller("k", frozenset({ALL_PURPOSES}), "k")

    # Both grants at one time: the first by (recorded_at, record id) decides, so its signal does.
    for records, expected in (((tcf, direct), "consent_expired"), ((direct,), "consent_granted")):
        grant = consent_grant(records, "ad_targeting")
        assert grant is not None
        [decision] = ENGINE.decide_many(caller, [("p_1", grant, ())], "ad_targeting", NOW)
        assert decision.reason == expected
        assert decision == ENGINE.decide(
            caller, PersonContext("p_1", records), "ad_targeting", (), NOW
        )
        # The page-wide refusals expire the TC string's grant alone, as decide does.
        refused = None if decision.allowed else expected
        assert ENGINE.refusals(caller, [grant, records], "ad_targeting", NOW) == [refused] * 2
