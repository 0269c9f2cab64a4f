"""Issue 20: data-subject rights that hold up in front of a regulator.

Durable restriction and objection (Art. 18, 21), objections a consent signal cannot undo, and
deadlines counted the way Art. 12(3) and the CCPA regulations count them. Each test failed on the
code before the issue.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from identity.model import (
    ConsentInput,
    ConsentSignal,
    FactInput,
    FactKind,
    FactStatus,
    IdentityEvent,
)
from privacy.access.api_keys import Scope
from tests.api.test_dsr_api import CUSTOMER, EMAIL, NOW, PHONE, Dsr, dsr_settings, open_dsr


@pytest.fixture
def app(tmp_path: object, log_stream: io.StringIO) -> Iterator[Dsr]:
    settings = dsr_settings(tmp_path, dsr_callback_secret="whsec_" + "QUJD" * 8)  # type: ignore[arg-type]
    with open_dsr(settings) as opened:
        yield opened


def _norm(app: Dsr, type_: str, value: str) -> object:
    return app.container.identity_policy.normalize(type_, value, "GB")


def _person(app: Dsr, *, fact_age: timedelta = timedelta(hours=1)) -> str:
    """Customer id, email and phone seen together, with one behavioural event."""
    ids = tuple(
        _norm(app, t, v) for t, v in (("customer_id", CUSTOMER), ("email", EMAIL), ("phone", PHONE))
    )
    fact = FactInput(
        FactKind.EVENT, "purchase", "behavioural", NOW - fact_age, json.dumps({"n": 1}).encode()
    )
    (outcome,) = app.container.engine.ingest(
        [IdentityEvent(ids, "shop", NOW - fact_age, (fact,))]  # type: ignore[arg-type]
    )
    assert outcome.person_id is not None
    return outcome.person_id


def _resolve(app: Dsr, type_: str, value: str) -> str:
    person = app.container.engine.resolve(_norm(app, type_, value))  # type: ignore[arg-type]
    assert person is not None
    return person


def _split_off(app: Dsr, type_: str, value: str) -> str:
    """Unlink ``(type_, value)`` from every identifier it is directly linked to; its new person."""
    for other in (("customer_id", CUSTOMER), ("email", EMAIL), ("phone", PHONE)):
        if other == (type_, value):
            continue
        response = app.client.post(
            "/v1/links/unlink",
            json={"a": {"type": type_, "value": value}, "b": {"type": other[0], "value": other[1]}},
            headers=app.admin,
        )
        assert response.status_code in (200, 409), response.text
    return _resolve(app, type_, value)


# -- gap 2: restriction is durable -------------------------------------------------------------


def test_restriction_still_applies_to_both_parts_when_the_person_is_split(app: Dsr) -> None:
    person = _person(app)
    app.submit(
        request_id="res-split",
        type="restriction",
        subject_identities=[{"type": "customer_id", "value": CUSTOMER}],
        submitted_time=(NOW - timedelta(days=1)).isoformat(),
    )
    app.process()
    assert app.profile(person, "fraud_prevention") == 404

    split = _split_off(app, "email", EMAIL)

    assert split != _resolve(app, "customer_id", CUSTOMER)
    assert app.profile(split, "fraud_prevention") == 404
    assert app.profile(_resolve(app, "customer_id", CUSTOMER), "fraud_prevention") == 404
    # A lift naming one identifier of each part (now two persons: confirmed) reaches both.
    app.submit(
        confirm_multiple_persons=True,
        request_id="res-split-lift",
        type="restriction",
        action="lift",
        subject_identities=[
            {"type": "customer_id", "value": CUSTOMER},
            {"type": "email", "value": EMAIL},
        ],
        submitted_time=(NOW + timedelta(seconds=1)).isoformat(),
    )
    app.process()
    assert app.profile(split, "fraud_prevention") == 200


def test_objection_follows_the_split_off_part(app: Dsr) -> None:
    _person(app)
    app.submit(
        request_id="obj-split",
        type="objection",
        purposes=["fraud_prevention"],
        subject_identities=[{"type": "phone", "value": PHONE}],
    )
    app.process()
    split = _split_off(app, "email", EMAIL)
    assert app.profile(split, "fraud_prevention") == 404


def test_retention_keeps_the_facts_of_a_restricted_person_until_the_restriction_is_lifted(
    app: Dsr,
) -> None:
    person = _person(app, fact_age=timedelta(days=3000))  # past every purpose's retention
    app.submit(
        request_id="res-keep",
        type="restriction",
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time=NOW.isoformat(),
    )
    app.process()

    def events() -> int:
        return len(
            app.container.store.read(
                lambda tx: tx.person_facts(person, [FactKind.EVENT], FactStatus.ACTIVE)
            )
        )

    kept = app.container.retention.run()
    assert events() == 1
    assert (kept.facts_deleted, kept.facts_restricted_kept) == (0, 1)

    app.submit(
        request_id="res-keep-lift",
        type="restriction",
        action="lift",
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time=(NOW + timedelta(seconds=1)).isoformat(),
    )
    app.process()
    swept = app.container.retention.run()
    assert (swept.facts_deleted, events()) == (1, 0)


# -- gap 4: objection to a legitimate-interest purpose -------------------------------------------


def _consent_signal(app: Dsr, purpose: str, at: datetime) -> None:
    grant = ConsentInput(purpose, True, at, ConsentSignal.DIRECT, "consent", "2" * 64)
    email = _norm(app, "email", EMAIL)
    app.container.engine.ingest([IdentityEvent((email,), "cmp", at, consents=(grant,))])  # type: ignore[arg-type]


def test_a_consent_signal_does_not_undo_an_objection_to_a_legitimate_interest_purpose(
    app: Dsr,
) -> None:
    person = _person(app)
    app.submit(
        request_id="obj-li",
        type="objection",
        purposes=["fraud_prevention"],
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time=(NOW - timedelta(minutes=5)).isoformat(),
    )
    app.process()
    assert app.profile(person, "fraud_prevention") == 404

    consent = app.client.post(
        "/v1/consent",
        json={
            "identifiers": [{"type": "email", "value": EMAIL}],
            "decisions": {"fraud_prevention": True},
        },
        headers=app.admin,
    )
    assert consent.status_code < 300, consent.text  # the old code let this restore reads
    _consent_signal(app, "fraud_prevention", NOW)

    assert app.profile(person, "fraud_prevention") == 404


def test_only_a_recorded_compelling_grounds_decision_with_its_own_scope_overrides_it(
    app: Dsr,
) -> None:
    person = _person(app)
    app.submit(
        request_id="obj-cg",
        type="objection",
        purposes=["fraud_prevention"],
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time=(NOW - timedelta(minutes=5)).isoformat(),
    )
    app.process()
    body = {
        "subject_identities": [{"type": "phone", "value": PHONE}],
        "purposes": ["fraud_prevention"],
        "reason": "chargeback investigation 2026-118 needs the payment history",
    }

    with_dsr_scope = app.client.post("/v1/dsr/compelling-grounds", json=body, headers=app.dsr)
    assert with_dsr_scope.status_code == 403
    _, token = app.container.api_keys.create("dpo", frozenset({Scope.DSR_OVERRIDE}))
    override = {"Authorization": f"Bearer {token}"}
    no_reason = app.client.post(
        "/v1/dsr/compelling-grounds", json={**body, "reason": "because"}, headers=override
    )
    marketing = app.client.post(
        "/v1/dsr/compelling-grounds",
        json={**body, "purposes": ["ad_targeting"]},
        headers=override,
    )
    assert (no_reason.status_code, marketing.status_code) == (422, 422)
    assert app.profile(person, "fraud_prevention") == 404

    decided = app.client.post("/v1/dsr/compelling-grounds", json=body, headers=override)

    assert decided.status_code == 200, decided.text
    assert decided.json()["persons"] == 1
    assert app.profile(person, "fraud_prevention") == 200
    entries = [
        e for e in app.container.audit.entries() if e.action == "dsr.objection.compelling_grounds"
    ]
    assert [(e.purpose, e.reason) for e in entries] == [("fraud_prevention", body["reason"])]


def test_an_objection_to_a_legal_obligation_purpose_is_refused_not_completed(app: Dsr) -> None:
    response = app.submit(
        request_id="obj-legal",
        type="objection",
        purposes=["legal_claims"],
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["reason"] == "objection_not_applicable"


# -- gap 5: deadlines ---------------------------------------------------------------------------


def test_one_instant_written_with_two_offsets_has_one_due_date(app: Dsr) -> None:
    app.container.dsr.clock = lambda: datetime(2026, 2, 1, tzinfo=UTC)
    local = app.submit(
        request_id="off-local",
        type="access",
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time="2026-01-30T23:00:00-05:00",
    )
    utc = app.submit(
        request_id="off-utc",
        type="access",
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time="2026-01-31T04:00:00Z",
    )
    assert local.json()["due_at"] == utc.json()["due_at"]
    assert utc.json()["due_at"].startswith("2026-02-28T04:00:00")


def test_a_future_submitted_time_does_not_start_the_clock_late(app: Dsr) -> None:
    received = datetime(2026, 3, 10, 12, tzinfo=UTC)
    app.container.dsr.clock = lambda: received
    response = app.submit(
        request_id="future",
        type="access",
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time="2026-03-11T06:00:00Z",
    )
    assert response.json()["due_at"].startswith("2026-04-10T12:00:00")


def test_a_stale_intake_is_flagged_overdue(app: Dsr) -> None:
    response = app.submit(
        request_id="stale",
        type="erasure",
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time="2023-05-02T09:00:00Z",
    )
    assert response.status_code == 202
    assert response.json()["overdue"] is True
    received = next(e for e in app.container.audit.entries() if e.action == "dsr.received")
    assert received.details["overdue_at_intake"] is True
    seen: list[tuple[int, float, int]] = []
    app.container.dsr.on_queue = lambda depth, age, late: seen.append((depth, age, late))
    app.container.dsr.publish_queue()
    assert seen[-1][2] == 1  # idgraph_dsr_overdue_requests


def test_extension_needs_a_reason_before_the_due_date_and_is_sent_to_the_subject(app: Dsr) -> None:
    app.container.dsr.clock = lambda: datetime(2026, 2, 1, tzinfo=UTC)
    app.submit(
        request_id="ext",
        type="access",
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time="2026-01-31T12:00:00Z",
        callback_urls=["https://dsr-tool.example/subject"],
    )
    app.submit(
        request_id="ext-late",
        type="access",
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time="2026-01-31T12:00:00Z",
    )

    no_reason = app.client.post("/v1/dsr/ext/extend", headers=app.dsr)
    reason = {"reason": "the subject's data spans six brands"}
    extended = app.client.post("/v1/dsr/ext/extend", json=reason, headers=app.dsr)
    app.container.dsr.clock = lambda: datetime(2026, 3, 1, tzinfo=UTC)
    late = app.client.post("/v1/dsr/ext-late/extend", json=reason, headers=app.dsr)

    assert no_reason.status_code == 422
    assert extended.status_code == 200, extended.text
    assert extended.json()["due_at"].startswith("2026-04-28T12:00:00")
    assert [d["event"] for d in extended.json()["deliveries"]] == ["dsr.access.extended"]
    assert late.status_code == 409
    stored = app.container.dsr.store.due_deliveries(datetime(2027, 1, 1, tzinfo=UTC), 10)
    payload = json.loads(next(d.payload for d in stored if d.request_id == "ext"))
    assert payload["data"]["reason"] == reason["reason"]
    assert payload["data"]["due_at"].startswith("2026-04-28T12:00:00")


def test_a_ccpa_opt_out_is_due_in_15_business_days_and_cannot_be_extended(app: Dsr) -> None:
    app.container.dsr.clock = lambda: datetime(2026, 3, 2, 9, tzinfo=UTC)  # a Monday
    response = app.submit(
        request_id="ccpa-opt-out",
        type="objection",
        regulation="ccpa",
        purposes=["ad_targeting"],
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time="2026-03-02T09:00:00Z",
    )
    assert response.json()["due_at"].startswith("2026-03-23T09:00:00")
    extended = app.client.post(
        "/v1/dsr/ccpa-opt-out/extend",
        json={"reason": "volume of requests this week"},
        headers=app.dsr,
    )
    assert extended.status_code == 409


# -- gap 1: a complete access export ----------------------------------------------------------


def _rich_person(app: Dsr) -> str:
    """A Lisbon buyer (two purchases) who consented to ad targeting and model training."""
    ids = tuple(_norm(app, t, v) for t, v in (("email", EMAIL), ("phone", PHONE)))
    grants = tuple(
        ConsentInput(p, True, NOW - timedelta(days=3), ConsentSignal.DIRECT, "consent", "3" * 64)
        for p in ("ad_targeting", "model_training")
    )
    facts = (
        FactInput(FactKind.ATTRIBUTE, "city", "location", NOW, json.dumps("Lisbon").encode()),
        *(
            FactInput(FactKind.EVENT, "purchase", "behavioural", NOW - timedelta(days=d), b"{}")
            for d in (1, 2)
        ),
    )
    (outcome,) = app.container.engine.ingest(
        [IdentityEvent(ids, "shop", NOW - timedelta(hours=1), facts, grants)]  # type: ignore[arg-type]
    )
    assert outcome.person_id is not None
    return outcome.person_id


def _export(app: Dsr, request_id: str, type_: str) -> tuple[dict[str, Any], str]:
    app.submit(
        request_id=request_id, type=type_, subject_identities=[{"type": "email", "value": EMAIL}]
    )
    app.process()
    downloads = app.status(request_id)["export"]["downloads"]
    document = app.client.get(downloads["json"], headers=app.dsr)
    csv_text = app.client.get(downloads["csv"], headers=app.dsr)
    assert document.status_code == 200, document.text
    return document.json(), csv_text.text


def test_access_export_lists_audience_export_and_feature_reads_with_basis_and_profiling(
    app: Dsr,
) -> None:
    person = _rich_person(app)
    ads = app.reader("ad_targeting", consumer="adtech-partner")
    models = app.reader("model_training", consumer="ml-team")
    body = {
        "name": "lisbon buyers",
        "purpose": "ad_targeting",
        "rules": {
            "attributes": [{"attribute": "city", "op": "eq", "value": "Lisbon"}],
            "events": [{"event": "purchase", "within_days": 30, "min_count": 2}],
        },
    }
    audience = app.client.post("/v1/audiences", json=body, headers=ads).json()["id"]
    members = app.client.get(f"/v1/audiences/{audience}/members", headers=ads)
    exported = app.client.get(f"/v1/audiences/{audience}/export", headers=ads)
    features = app.client.get("/v1/features", params={"purpose": "model_training"}, headers=models)
    assert (members.status_code, exported.status_code, features.status_code) == (200, 200, 200)

    document, csv_text = _export(app, "acc-full", "access")

    (subject,) = document["persons"]
    assert subject["person_id"] == person
    processing = subject["processing"]
    assert {(u["action"], u["recipient"], u["lawful_basis"]) for u in processing["uses"]} == {
        ("read.audience", "adtech-partner", "consent"),
        ("read.export", "adtech-partner", "consent"),
        ("read.features", "ml-team", "consent"),
    }
    purposes = {p["purpose"]: p for p in processing["purposes"]}
    assert set(purposes) == {"ad_targeting", "model_training"}
    assert purposes["ad_targeting"]["description"].startswith("Select advertising")
    assert subject["profiling"]["segments"] == [audience]
    assert subject["profiling"]["feature_sets"][0]["purpose"] == "model_training"
    categories = {c["category"]: c for c in subject["categories"]}
    assert categories["behavioural"]["items"] == 2
    longest = max(
        p.categories["behavioural"].retention_days
        for p in app.container.purposes.purposes.values()
        if "behavioural" in p.categories
    )
    assert categories["behavioural"]["retention_days"] == longest
    assert {i["type"]: i["sources"] for i in subject["identifiers"]}["email"] == ["shop"]
    assert document["identities"] == [{"index": 0, "type": "email", "person_id": person}]
    # The CSV carries the same content: every use, segment, purpose and category has its row.
    rows = csv_text.splitlines()
    assert sum(",use," in r for r in rows) == len(processing["uses"])
    assert any(f",segment,{audience}," in r for r in rows)
    assert any(",purpose,ad_targeting,consent," in r for r in rows)
    assert any(",category,behavioural,2,behavioural," in r for r in rows)


def shred_out_of_band(app: Dsr, person: str, identifier_type: str) -> list[str]:
    """Destroy the data keys of ``person``'s ``identifier_type`` nodes, graph left as it is (an
    operator's shred, a partly recovered erasure): their kept values are unreadable."""
    nodes = app.container.store.read(lambda tx: tx.cluster(person).nodes)
    owners = [n.node_id for n in nodes if n.hashed.type == identifier_type]
    assert owners
    assert app.container.vault.shred(owners) == len(owners)
    return owners


def test_access_export_says_no_longer_readable_for_a_value_whose_data_key_was_shredded(
    app: Dsr,
) -> None:
    person = _rich_person(app)
    shred_out_of_band(app, person, "phone")

    document, _ = _export(app, "acc-shred", "access")

    (subject,) = document["persons"]
    identifiers = {i["type"]: i for i in subject["identifiers"]}
    assert identifiers["phone"]["value"] is None
    assert identifiers["phone"]["held_as"] == "encrypted value (no longer readable)"
    assert identifiers["email"]["value"] == _norm(app, "email", EMAIL).value  # type: ignore[attr-defined]
    assert identifiers["email"]["held_as"] == "encrypted value"
    # Unreadable is not tampered: nothing is reported as altered, the rest is all there.
    assert subject["integrity"] == {"tampered_values": 0}
    city = next(a for a in subject["attributes"] if a["name"] == "city")
    assert city["value"] == "Lisbon"
    assert not [e for e in app.container.audit.entries() if "tampering" in e.action]


def test_portability_export_holds_provided_and_observed_data_only(app: Dsr) -> None:
    _rich_person(app)
    document, _ = _export(app, "port-1", "portability")
    (subject,) = document["persons"]
    assert {"identifiers", "attributes", "events", "consents"} <= set(subject)
    assert not {"processing", "profiling", "categories"} & set(subject)
    assert str(document["scope"]).startswith("portability")


# -- gap 7: identities of several persons -------------------------------------------------------


def test_identities_of_two_persons_are_409_with_the_count_unless_confirmed(app: Dsr) -> None:
    first = _person(app)
    other = ("email", "someone.else@privacy-shop.de")
    (outcome,) = app.container.engine.ingest(
        [IdentityEvent((_norm(app, *other),), "shop", NOW)]  # type: ignore[arg-type]
    )
    subjects = [{"type": "phone", "value": PHONE}, {"type": other[0], "value": other[1]}]

    refused = app.submit(request_id="two", type="access", subject_identities=subjects)
    assert refused.status_code == 409
    assert refused.json()["persons"] == 2
    assert app.client.get("/v1/dsr/two", headers=app.dsr).status_code == 404

    accepted = app.submit(
        request_id="two", type="access", subject_identities=subjects, confirm_multiple_persons=True
    )
    assert accepted.status_code == 202
    app.process()
    document = app.client.get(app.status("two")["export"]["downloads"]["json"], headers=app.dsr)
    assert document.json()["identities"] == [
        {"index": 0, "type": "phone", "person_id": first},
        {"index": 1, "type": "email", "person_id": outcome.person_id},
    ]


def test_ingest_during_restriction_stores_but_never_merges_into_another_person(app: Dsr) -> None:
    person = _person(app)
    other = _norm(app, "email", "someone.else@privacy-shop.de")
    cookie = _norm(app, "cookie_id", "ck-restricted-1")
    (stranger,) = app.container.engine.ingest([IdentityEvent((other,), "shop", NOW)])  # type: ignore[arg-type]
    app.submit(
        request_id="res-ingest",
        type="restriction",
        subject_identities=[{"type": "email", "value": EMAIL}],
        submitted_time=(NOW - timedelta(days=1)).isoformat(),
    )
    app.process()

    fact = FactInput(FactKind.EVENT, "purchase", "behavioural", NOW, b"{}")
    (outcome,) = app.container.engine.ingest(
        [IdentityEvent((_norm(app, "email", EMAIL), other, cookie), "shop", NOW, (fact,))]  # type: ignore[arg-type]
    )

    assert outcome.person_id == person  # stored on the restricted person ...
    assert [r.reason.value for r in outcome.refusals] == ["restricted"]  # ... merged with no one
    assert _resolve(app, "email", "someone.else@privacy-shop.de") == stranger.person_id
    assert _resolve(app, "cookie_id", "ck-restricted-1") == person
    assert app.profile(person, "fraud_prevention") == 404  # ... and not used


def test_ingest_during_restriction_merges_when_configured_to(tmp_path: Any) -> None:
    settings = dsr_settings(tmp_path, restricted_ingest="merge")
    with open_dsr(settings) as app:
        _person(app)
        other = _norm(app, "cookie_id", "ck-other-1")
        app.container.engine.ingest([IdentityEvent((other,), "shop", NOW)])  # type: ignore[arg-type]
        app.submit(
            request_id="res-merge",
            type="restriction",
            subject_identities=[{"type": "email", "value": EMAIL}],
            submitted_time=(NOW - timedelta(days=1)).isoformat(),
        )
        app.process()
        (outcome,) = app.container.engine.ingest(
            [IdentityEvent((_norm(app, "email", EMAIL), other), "shop", NOW)]  # type: ignore[arg-type]
        )
        assert outcome.refusals == ()
        assert _resolve(app, "cookie_id", "ck-other-1") == _resolve(app, "email", EMAIL)
        assert app.profile(_resolve(app, "email", EMAIL), "fraud_prevention") == 404
