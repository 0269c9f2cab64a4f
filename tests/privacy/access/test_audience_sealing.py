"""Audience definitions (issue 13, finding 4): rule values are PII-scanned under the categories
policy and stored sealed. Before: a rule ``last_name eq "..."`` was readable in
``control.sqlite3-wal`` and a rule constant holding an email address was stored as sent.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

from privacy.access.api_keys import Scope
from privacy.access.audiences import AttributeOp, AttributeRule, AudienceRules, SqliteAudienceStore
from privacy.access.policy_engine import ALL_PURPOSES, Caller
from tests.conftest import Api
from tests.support.response_checks import forms_of

SECRET_NAME = "Featherstonehaugh-Quixote"
SECRET_CITY = "Zzyzx-Springs-Hamlet"


def _reader(api: Api, *purposes: str) -> dict[str, str]:
    _, token = api.container.api_keys.create(
        "reader", frozenset({Scope.READ}), purposes=frozenset(purposes)
    )
    return {"Authorization": f"Bearer {token}"}


def _body(attribute: str, value: Any, purpose: str) -> dict[str, Any]:
    return {
        "name": "segment",
        "purpose": purpose,
        "rules": {"attributes": [{"attribute": attribute, "op": "eq", "value": value}]},
    }


def _data_files(api: Api) -> list[Path]:
    return [p for p in api.container.settings.data_dir.rglob("*") if p.is_file()]


def test_no_rule_value_appears_in_any_data_file_and_reads_still_return_the_rules(
    api: Api, log_stream: io.StringIO
) -> None:
    headers = _reader(api, "marketing_email")
    created = api.client.post(
        "/v1/audiences", json=_body("last_name", SECRET_NAME, "marketing_email"), headers=headers
    )
    assert created.status_code == 201, created.text
    in_list = api.client.post(
        "/v1/audiences",
        json={
            "name": "cities",
            "purpose": "marketing_email",
            "rules": {"any_of": [{"attribute": "city", "op": "in", "value": [SECRET_CITY, "x"]}]},
        },
        headers=headers,
    )
    assert in_list.status_code == 201, in_list.text
    audience = created.json()["id"]
    read = api.client.get(f"/v1/audiences/{audience}", headers=headers)
    assert read.status_code == 200
    assert read.json()["rules"]["attributes"][0]["value"] == SECRET_NAME
    files = _data_files(api)
    assert any(p.name == "control.sqlite3-wal" for p in files)
    for path in files:
        blob = path.read_bytes()
        for secret in (SECRET_NAME, SECRET_CITY):
            for form in forms_of(secret):
                assert form not in blob, f"rule value in {path.name}"
    for secret in (SECRET_NAME, SECRET_CITY):
        assert secret not in log_stream.getvalue()


def test_a_rule_value_with_pii_its_category_does_not_allow_is_refused_and_not_stored(
    api: Api,
) -> None:
    headers = _reader(api, "marketing_email")
    before = api.container.reads.audiences(_operator())
    response = api.client.post(
        "/v1/audiences",
        json=_body("city", "write to ann.rules@shop.de", "marketing_email"),
        headers=headers,
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"] == [
        {
            "pointer": "#/rules/attributes/0/value",
            "reason": "pii_not_allowed",
            "detail": "found EMAIL_ADDRESS in a rule value of a location attribute, which does "
            "not accept it",
        }
    ]
    assert "ann.rules" not in response.text
    assert api.container.reads.audiences(_operator()) == before
    # PII the category allows (a person's name for a contact attribute) is accepted.
    allowed = api.client.post(
        "/v1/audiences", json=_body("last_name", "Ann Smith", "marketing_email"), headers=headers
    )
    assert allowed.status_code == 201, allowed.text


def _operator() -> Caller:
    return Caller("ops", frozenset({ALL_PURPOSES}), "ops", sees_all=True)


def test_definitions_stored_in_plaintext_before_are_sealed_when_the_store_opens(
    api: Api, tmp_path: Path
) -> None:
    path = tmp_path / "old-control.sqlite3"
    with sqlite3.connect(path) as conn:  # the table as an older idgraph wrote it
        conn.execute(
            "CREATE TABLE audiences (audience_id TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "purpose TEXT NOT NULL, rules TEXT NOT NULL, created_at TEXT NOT NULL, "
            "created_by TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '')"
        )
        rules = AudienceRules(attributes=(AttributeRule("last_name", AttributeOp.EQ, SECRET_NAME),))
        conn.execute(
            "INSERT INTO audiences VALUES ('aud_old', 'old', 'marketing_email', ?, "
            "'2026-01-01T00:00:00+00:00', 'k1', 'c1')",
            (json.dumps(rules.to_json()),),
        )
    path.chmod(0o600)
    store = SqliteAudienceStore(path, api.container.vault)
    try:
        loaded = store.get("aud_old")
        assert loaded is not None
        assert loaded.rules == rules
    finally:
        store.close()
    for file in tmp_path.glob("old-control.sqlite3*"):
        assert SECRET_NAME.encode() not in file.read_bytes(), file.name
