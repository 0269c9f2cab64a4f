"""POST /v1/consent and Sec-GPC on identify/ingest, through the real app and store."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from identity.model import ConsentRecord
from privacy.access.api_keys import Scope
from privacy.auditing.log import AuditLogUnavailableError
from privacy.consent.signals import signal_digest
from privacy.consent.state import ConsentReason, consent_state
from tests.conftest import Api
from tests.privacy.consent.test_gpp import REAL_TC_CORE, header, usnat_writer

T1 = datetime(2026, 2, 1, 10, 0, tzinfo=UTC)
T2 = T1 + timedelta(hours=1)
T3 = T2 + timedelta(hours=1)
EMAIL = {"type": "email", "value": "Consent.Canary@Shop.example.de"}
PHONE = {"type": "phone", "value": "+44 20 7946 0111"}
RAW_VALUES = (b"consent.canary", b"Consent.Canary", b"7946 0111", b"79460111")
GPC_PURPOSES = {"ad_measurement", "ad_targeting", "model_training"}


@pytest.fixture
def consent_key(api: Api) -> dict[str, str]:
    """A key that may record consent (and nothing else)."""
    _, token = api.container.api_keys.create("cmp", frozenset({Scope.CONSENT}))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def consent_resolve_key(api: Api) -> dict[str, str]:
    """A key that may record consent and resolve (so it sees person ids)."""
    _, token = api.container.api_keys.create("cmp2", frozenset({Scope.CONSENT, Scope.RESOLVE}))
    return {"Authorization": f"Bearer {token}"}


def _consent(api: Api, headers: dict[str, str], *identifiers: dict[str, str], **fields: Any) -> Any:
    body = {"identifiers": list(identifiers), **fields}
    return api.client.post("/v1/consent", json=body, headers=headers)


def _person(api: Api, identifier: dict[str, str]) -> str:
    response = api.client.post("/v1/resolve", json={"identifier": identifier}, headers=api.resolve)
    assert response.status_code == 200, response.text
    return str(response.json()["person_id"])


def _records(api: Api, person_id: str, purpose: str) -> list[ConsentRecord]:
    return api.container.store.read(lambda tx: tx.person_consents(person_id, [purpose]))


def _state(api: Api, person_id: str, purpose: str) -> ConsentReason:
    records = _records(api, person_id, purpose)
    policy = api.container.purposes.purposes[purpose]
    return consent_state(purpose, policy, records).reason


def _consents_stored(api: Api) -> int:
    return api.container.store.stats().consents


def test_direct_grant_and_denial_are_stored_for_the_resolved_person(
    api: Api, consent_key: dict[str, str]
) -> None:
    response = _consent(
        api,
        consent_key,
        EMAIL,
        decisions={"marketing_email": True, "analytics": False},
        timestamp=T1.isoformat(),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outcome"] == "created"
    assert "person_id" not in body  # the key may not resolve
    assert sorted((r["purpose"], r["granted"], r["signal"]) for r in body["recorded"]) == [
        ("analytics", False, "direct"),
        ("marketing_email", True, "direct"),
    ]
    assert _consents_stored(api) == 2
    person = _person(api, EMAIL)
    assert _state(api, person, "marketing_email") is ConsentReason.GRANTED
    assert _state(api, person, "analytics") is ConsentReason.DENIED
    # The proof of a direct decision is the digest of the request body.
    (record,) = _records(api, person, "marketing_email")
    assert len(record.proof) == 64
    assert record.source == "api"


def test_person_id_is_returned_to_keys_that_may_resolve(
    api: Api, consent_resolve_key: dict[str, str]
) -> None:
    response = _consent(api, consent_resolve_key, EMAIL, decisions={"analytics": True})
    assert response.status_code == 200, response.text
    assert response.json()["person_id"] == _person(api, EMAIL)


def test_latest_decision_wins_across_two_identifiers_after_a_merge(
    api: Api, consent_key: dict[str, str]
) -> None:
    assert (
        _consent(
            api, consent_key, EMAIL, decisions={"analytics": True}, timestamp=T1.isoformat()
        ).status_code
        == 200
    )
    assert (
        _consent(
            api, consent_key, PHONE, decisions={"analytics": False}, timestamp=T2.isoformat()
        ).status_code
        == 200
    )
    assert _person(api, EMAIL) != _person(api, PHONE)
    assert _state(api, _person(api, EMAIL), "analytics") is ConsentReason.GRANTED
    merged = api.client.post(
        "/v1/identify", json={"identifiers": [EMAIL, PHONE], "source": "web"}, headers=api.ingest
    )
    assert merged.json()["outcome"] == "merged"
    person = _person(api, EMAIL)
    assert _person(api, PHONE) == person
    assert _state(api, person, "analytics") is ConsentReason.DENIED  # T2 beats T1
    # A later grant through either identifier wins again.
    assert (
        _consent(
            api, consent_key, EMAIL, decisions={"analytics": True}, timestamp=T3.isoformat()
        ).status_code
        == 200
    )
    assert _state(api, person, "analytics") is ConsentReason.GRANTED


def test_grant_and_denial_at_the_same_time_deny(api: Api, consent_key: dict[str, str]) -> None:
    _consent(api, consent_key, EMAIL, decisions={"ad_targeting": True}, timestamp=T1.isoformat())
    _consent(api, consent_key, PHONE, decisions={"ad_targeting": False}, timestamp=T1.isoformat())
    api.client.post(
        "/v1/identify", json={"identifiers": [EMAIL, PHONE], "source": "web"}, headers=api.ingest
    )
    assert _state(api, _person(api, EMAIL), "ad_targeting") is ConsentReason.TIE_DENIED


def test_tc_string_is_mapped_to_purposes_at_its_last_updated_time(
    api: Api, consent_key: dict[str, str]
) -> None:
    response = _consent(api, consent_key, EMAIL, tcf=REAL_TC_CORE)
    assert response.status_code == 200, response.text
    recorded = response.json()["recorded"]
    assert {r["purpose"] for r in recorded} == {
        "ad_measurement",
        "ad_targeting",
        "analytics",
        "model_training",
        "personalization",
    }
    assert {(r["granted"], r["signal"]) for r in recorded} == {(False, "tcf")}
    assert {r["decided_at"][:19] for r in recorded} == {"2020-02-20T23:57:39"}
    records = _records(api, _person(api, EMAIL), "analytics")
    assert records[0].proof == signal_digest(REAL_TC_CORE)


def test_gpp_usnat_opt_outs_and_gpc_are_recorded_and_sections_reported(
    api: Api, consent_key: dict[str, str]
) -> None:
    usnat = usnat_writer(opt_outs=(1, 2, 2)).encode()  # sale opted out
    gpp = "~".join([header([1, 7]).encode(), "BAAA", usnat])
    response = _consent(api, consent_key, EMAIL, gpp=gpp, timestamp=T1.isoformat())
    assert response.status_code == 200, response.text
    body = response.json()
    assert {(r["purpose"], r["granted"]) for r in body["recorded"]} == {
        ("ad_measurement", False),
        ("ad_targeting", False),
        ("model_training", False),
    }
    assert body["gpp"] == {
        "applied": ["usnat"],
        "not_applied": [{"id": 1, "name": "tcfeuv1", "reason": "deprecated_section"}],
    }
    # The IAB vector with the usnat GPC sub-section set: denials, signal gpp.
    response = _consent(api, consent_key, PHONE, gpp="DBABLA~BVVVVVVVVWA.YA")
    assert {(r["purpose"], r["granted"], r["signal"]) for r in response.json()["recorded"]} == {
        (p, False, "gpp") for p in GPC_PURPOSES
    }


def test_sec_gpc_header_on_consent_adds_opt_outs(api: Api, consent_key: dict[str, str]) -> None:
    response = api.client.post(
        "/v1/consent",
        json={"identifiers": [EMAIL], "decisions": {"analytics": True}},
        headers={**consent_key, "Sec-GPC": "1"},
    )
    assert response.status_code == 200, response.text
    assert {(r["purpose"], r["granted"], r["signal"]) for r in response.json()["recorded"]} == {
        ("analytics", True, "direct"),
        *((p, False, "gpc") for p in GPC_PURPOSES),
    }
    # The header alone is a signal.
    alone = api.client.post(
        "/v1/consent", json={"identifiers": [PHONE]}, headers={**consent_key, "Sec-GPC": "1"}
    )
    assert alone.status_code == 200, alone.text
    assert len(alone.json()["recorded"]) == len(GPC_PURPOSES)


def test_sec_gpc_on_identify_and_ingest_records_opt_outs_in_the_same_transaction(
    api: Api,
) -> None:
    plain = api.client.post(
        "/v1/identify", json={"identifiers": [EMAIL], "source": "web"}, headers=api.ingest
    )
    assert "consents" not in plain.json()
    assert _consents_stored(api) == 0
    ignored = api.client.post(
        "/v1/identify",
        json={"identifiers": [EMAIL], "source": "web"},
        headers={**api.ingest, "Sec-GPC": "0"},
    )
    assert "consents" not in ignored.json()
    response = api.client.post(
        "/v1/identify",
        json={"identifiers": [PHONE], "source": "web"},
        headers={**api.ingest, "Sec-GPC": "1"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["consents"] == {"recorded": 3, "dropped": 0}
    person = _person(api, PHONE)
    for purpose in GPC_PURPOSES:
        assert _state(api, person, purpose) is ConsentReason.DENIED
    batch = api.client.post(
        "/v1/ingest",
        json={
            "events": [
                {"identifiers": [EMAIL], "source": "web"},
                {"identifiers": [{"type": "customer_id", "value": "C-GPC-1"}], "source": "web"},
            ]
        },
        headers={**api.ingest, "Sec-GPC": "1"},
    )
    assert batch.status_code == 200, batch.text
    assert [r["consents"] for r in batch.json()["results"]] == [
        {"recorded": 3, "dropped": 0},
        {"recorded": 3, "dropped": 0},
    ]
    assert _consents_stored(api) == 9
    audited = [e for e in api.container.audit.entries() if e.action == "consent.recorded"]
    assert len(audited) == 9
    assert {e.details["signal"] for e in audited} == {"gpc"}


@pytest.mark.parametrize(
    ("fields", "pointer", "reason"),
    [
        ({"decisions": {"newsletter": True}}, "#/decisions/newsletter", "unknown_purpose"),
        (
            {"decisions": {"legal_claims": True}},
            "#/decisions/legal_claims",
            "consent_not_applicable",
        ),
        ({"tcf": REAL_TC_CORE[:25]}, "#/tcf", "truncated"),
        ({"tcf": REAL_TC_CORE + "+"}, "#/tcf", "bad_character"),
        ({"gpp": "DBABLA~BVVVVVVVVWA.YA.YA"}, "#/gpp", None),
        ({}, "#", "no_signal"),
    ],
)
def test_invalid_signals_are_422_with_located_errors_and_nothing_is_written(
    api: Api, consent_key: dict[str, str], fields: dict[str, Any], pointer: str, reason: str | None
) -> None:
    before = api.container.store.stats()
    response = _consent(api, consent_key, EMAIL, **fields)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert errors[0]["pointer"] == pointer
    if reason is not None:
        assert errors[0]["reason"] == reason
    assert api.container.store.stats() == before


def test_unknown_purpose_error_lists_the_valid_purposes(
    api: Api, consent_key: dict[str, str]
) -> None:
    response = _consent(api, consent_key, EMAIL, decisions={"newsletter": True})
    detail = response.json()["errors"][0]["detail"]
    assert "'newsletter'" in detail
    for purpose in api.container.purposes.ids:
        assert purpose in detail


def test_invalid_identifier_and_invalid_signal_are_reported_together(
    api: Api, consent_key: dict[str, str]
) -> None:
    response = _consent(
        api, consent_key, {"type": "email", "value": "not-an-email"}, decisions={"nope": True}
    )
    assert response.status_code == 422
    pointers = [e["pointer"] for e in response.json()["errors"]]
    assert pointers == ["#/identifiers/0/value", "#/decisions/nope"]


def test_a_value_sent_as_a_purpose_name_is_not_echoed(
    api: Api, consent_key: dict[str, str]
) -> None:
    response = _consent(api, consent_key, EMAIL, decisions={"ann@shop.example.de": True})
    assert response.status_code == 422
    assert b"ann@" not in response.content


def test_consent_needs_the_consent_scope(api: Api) -> None:
    response = _consent(api, api.ingest, EMAIL, decisions={"analytics": True})
    assert response.status_code == 403
    assert _consents_stored(api) == 0


def test_every_recorded_consent_is_audited_without_raw_identifiers(
    api: Api, consent_key: dict[str, str], log_stream: io.StringIO
) -> None:
    _consent(api, consent_key, EMAIL, PHONE, decisions={"analytics": True, "ad_targeting": False})
    _consent(api, consent_key, EMAIL, tcf=REAL_TC_CORE)
    person = _person(api, EMAIL)
    entries = api.container.audit.entries(person_id=api.container.audit.person_ref(person))
    assert len(entries) == 2 + 5
    assert {e.action for e in entries} == {"consent.recorded"}
    by_purpose = {(e.purpose, e.details["signal"]): e.decision for e in entries}
    assert by_purpose[("analytics", "direct")] == "allow"
    assert by_purpose[("ad_targeting", "direct")] == "deny"
    assert by_purpose[("analytics", "tcf")] == "deny"
    assert all(e.actor.startswith("key_") for e in entries)
    assert api.container.audit.verify().ok
    audit_bytes = b"".join(
        p.read_bytes()
        for p in api.container.settings.data_dir.glob("audit.sqlite3*")
        if p.is_file()
    )
    assert person.encode() not in audit_bytes  # referenced by person_ref only
    logs = log_stream.getvalue().encode()
    for raw in RAW_VALUES:
        assert raw not in audit_bytes
        assert raw not in logs


def test_audit_failure_after_the_commit_answers_503_saying_the_consent_was_stored(
    api: Api, consent_key: dict[str, str], monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    def broken(_: object) -> None:
        raise AuditLogUnavailableError("audit log error: disk I/O error")

    monkeypatch.setattr(api.container.audit, "append", broken)
    response = _consent(
        api, consent_key, EMAIL, decisions={"analytics": True}, timestamp=T1.isoformat()
    )
    assert response.status_code == 503
    body = response.json()
    assert body["type"] == "urn:idgraph:problem:consent-audit-failed"
    assert "were stored" in body["detail"]
    assert _consents_stored(api) == 1
    missing = [
        json.loads(line)
        for line in log_stream.getvalue().splitlines()
        if '"consent_audit_missing"' in line
    ]
    assert missing
    assert missing[0]["entries"][0]["purpose"] == "analytics"
    # Resending with the same timestamp writes the entries and changes no consent state.
    monkeypatch.undo()
    again = _consent(
        api, consent_key, EMAIL, decisions={"analytics": True}, timestamp=T1.isoformat()
    )
    assert again.status_code == 200
    assert _state(api, _person(api, EMAIL), "analytics") is ConsentReason.GRANTED
    assert len(api.container.audit.entries()) == 1
