"""Purpose-bound reads through the real app: profiles, audiences, exports, features, audit."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from api.app import create_app
from api.read_schemas import ProfileOut
from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from identity.errors import ConfigurationError
from identity.model import (
    ConsentInput,
    ConsentSignal,
    Fact,
    FactInput,
    FactKind,
    FactStatus,
    IdentityEvent,
)
from identity.store.sqlite import SqliteGraphStore
from privacy.access.api_keys import Scope
from privacy.access.policy_engine import Caller
from privacy.access.reads import NotReadableError, PurposeNotInScopeError
from privacy.auditing.log import AuditEntry, SqliteAuditLog
from privacy.keys.hash_keys import HASH_KEY_FILE
from privacy.keys.keyfile import KeyEntry, KeyFile
from privacy.keys.keyprovider import LocalFileKeyProvider
from privacy.keys.vault import Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from tests.conftest import POLICY_DIR, Api
from tests.support.waits import lingering, wait_until

NOW = datetime.now(UTC)
EMAIL_A = "ann.reads@shop.example.de"
PHONE_A = "+442079460958"


@dataclass
class World:
    """Three persons: A consents to ad_targeting and model_training, B never consented, C
    consented and later withdrew."""

    api: Api
    a: str
    b: str
    c: str

    def key(self, *purposes: str, consumer: str | None = None) -> dict[str, str]:
        _, token = self.api.container.api_keys.create(
            "reader", frozenset({Scope.READ}), purposes=frozenset(purposes), consumer=consumer
        )
        return {"Authorization": f"Bearer {token}"}

    def profile(
        self,
        person: str | None = None,
        purpose: str = "ad_targeting",
        headers: dict[str, str] | None = None,
    ) -> Any:
        """``GET /v1/profiles/{person}`` (A by default) for ``purpose``, with ``headers`` or a
        fresh key for that purpose alone."""
        return self.api.client.get(
            f"/v1/profiles/{self.a if person is None else person}",
            params={"purpose": purpose},
            headers=self.key(purpose) if headers is None else headers,
        )


def _attr(name: str, category: str, value: Any, at: datetime = NOW) -> FactInput:
    return FactInput(FactKind.ATTRIBUTE, name, category, at, json.dumps(value).encode())


def _event(name: str, at: datetime, **properties: Any) -> FactInput:
    body = json.dumps({"properties": properties}).encode()
    return FactInput(FactKind.EVENT, name, "behavioural", at, body)


def _consent(purpose: str, granted: bool, at: datetime) -> ConsentInput:
    return ConsentInput(purpose, granted, at, ConsentSignal.DIRECT, "consent", "0" * 64)


def _person(
    api: Api, pairs: list[tuple[str, str]], facts: list[FactInput], consents: list[ConsentInput]
) -> str:
    policy = api.container.identity_policy
    ids = tuple(policy.normalize(t, v, "GB") for t, v in pairs)
    event = IdentityEvent(ids, "test", NOW - timedelta(hours=1), tuple(facts), tuple(consents))
    (outcome,) = api.container.engine.ingest([event])
    assert outcome.person_id is not None
    return outcome.person_id


@pytest.fixture
def world(api: Api) -> World:
    day = timedelta(days=1)
    a = _person(
        api,
        [("customer_id", "C-1"), ("email", EMAIL_A), ("phone", PHONE_A)],
        [
            _attr("city", "location", "Lisbon"),
            _attr("age_band", "demographic", "25-34"),
            _attr("lifetime_value", "financial", 812.5),
            _attr("visit_count", "behavioural", 14),
            _event("purchase", NOW - 2 * day, order_id="o-1", amount=10.0),
            _event("purchase", NOW - 5 * day, order_id="o-2", amount=20.0),
            _event("purchase", NOW - 400 * day, order_id="o-old", amount=30.0),
        ],
        [
            _consent("ad_targeting", True, NOW - 10 * day),
            _consent("model_training", True, NOW - 10 * day),
        ],
    )
    b = _person(
        api,
        [("customer_id", "C-2"), ("email", "bob.reads@shop.example.de")],
        [
            _attr("city", "location", "Lisbon"),
            _event("purchase", NOW - 2 * day, order_id="o-3"),
            _event("purchase", NOW - 3 * day, order_id="o-4"),
        ],
        [],
    )
    c = _person(
        api,
        [("customer_id", "C-3"), ("email", "cy.reads@shop.example.de")],
        [
            _attr("city", "location", "Porto"),
            _event("purchase", NOW - 2 * day, order_id="o-5"),
            _event("purchase", NOW - 3 * day, order_id="o-6"),
        ],
        [
            _consent("ad_targeting", True, NOW - 10 * day),
            _consent("ad_targeting", False, NOW - 1 * day),
        ],
    )
    return World(api, a, b, c)


def _problem_shape(response: Any) -> dict[str, Any]:
    body = dict(response.json())
    body.pop("instance", None)
    return body


# -- profiles -------------------------------------------------------------------------------


def test_profile_returns_only_categories_and_retention_of_the_purpose_when_consented(
    world: World,
) -> None:
    response = world.profile()

    assert response.status_code == 200, response.text
    body = response.json()
    # location and behavioural are readable for ad_targeting; demographic and financial are not.
    assert set(body["attributes"]) == {"city", "visit_count"}
    assert body["attributes"]["city"]["value"] == "Lisbon"
    # The 400-day-old purchase is past ad_targeting's 180-day retention.
    assert sorted(e["properties"]["order_id"] for e in body["events"]) == ["o-1", "o-2"]
    assert body["consent"]["reason"] == "consent_granted"
    assert body["consent"]["lawful_basis"] == "consent"
    assert EMAIL_A not in response.text
    assert PHONE_A not in response.text


def test_profile_for_another_purpose_returns_that_purposes_categories(world: World) -> None:
    response = world.profile(purpose="model_training")

    assert response.status_code == 200, response.text
    assert set(response.json()["attributes"]) == {
        "city",
        "age_band",
        "lifetime_value",
        "visit_count",
    }


def test_denied_profile_is_indistinguishable_from_an_unknown_person_when_not_consented(
    world: World,
) -> None:
    headers = world.key("ad_targeting")
    denied = world.profile(world.b, headers=headers)
    withdrawn = world.profile(world.c, headers=headers)
    unknown = world.api.client.get(
        "/v1/profiles/p_000000000000000000000000",
        params={"purpose": "ad_targeting"},
        headers=headers,
    )

    assert denied.status_code == withdrawn.status_code == unknown.status_code == 404
    assert _problem_shape(denied) == _problem_shape(withdrawn) == _problem_shape(unknown)
    reasons = [e.reason for e in world.api.container.audit.entries() if e.action == "read.profile"]
    assert reasons == ["no_consent", "consent_denied", "no_such_person"]


def test_profile_is_403_before_any_lookup_when_the_key_lacks_the_purpose(world: World) -> None:
    response = world.profile(headers=world.key("analytics"))

    assert response.status_code == 403
    assert response.json()["type"].endswith("purpose-forbidden")
    (entry,) = [e for e in world.api.container.audit.entries() if e.action == "read.profile"]
    assert (entry.decision, entry.reason) == ("deny", "purpose_not_in_scope")
    assert entry.person_id == world.api.container.audit.person_ref(world.a)


def test_profile_is_403_when_the_key_lacks_the_read_scope(world: World) -> None:
    response = world.profile(headers=world.api.ingest)

    assert response.status_code == 403


def test_unknown_purpose_is_422_listing_the_valid_purposes(world: World) -> None:
    response = world.profile(purpose="spying", headers=world.key("*"))

    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["pointer"] == "#/query/purpose"
    assert "ad_targeting" in error["detail"]
    assert "model_training" in error["detail"]


def test_wildcard_key_reads_for_any_purpose(world: World) -> None:
    response = world.profile(headers=world.key("*"))

    assert response.status_code == 200


# -- audiences ------------------------------------------------------------------------------

BUYERS = {
    "name": "lisbon repeat buyers",
    "purpose": "ad_targeting",
    "rules": {
        "attributes": [{"attribute": "city", "op": "eq", "value": "Lisbon"}],
        "events": [{"event": "purchase", "within_days": 30, "min_count": 2}],
    },
}


def _define(world: World, body: dict[str, Any], headers: dict[str, str]) -> str:
    response = world.api.client.post("/v1/audiences", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_audience_members_are_the_consenting_persons_matching_every_rule(world: World) -> None:
    headers = world.key("ad_targeting")
    audience = _define(world, BUYERS, headers)

    definition = world.api.client.get(f"/v1/audiences/{audience}", headers=headers)
    members = world.api.client.get(f"/v1/audiences/{audience}/members", headers=headers)

    assert definition.status_code == 200
    assert definition.json()["rules"]["events"][0]["within_days"] == 30
    assert members.status_code == 200, members.text
    # B matches the rules but never consented; C withdrew; Porto is not Lisbon anyway.
    assert members.json()["members"] == [world.a]
    assert members.json()["next_cursor"] is None


def test_audience_rules_with_neq_in_and_numbers_and_any_of(world: World) -> None:
    headers = world.key("ad_targeting")
    body = {
        "name": "numbers",
        "purpose": "ad_targeting",
        "rules": {
            "attributes": [
                {"attribute": "visit_count", "op": "gte", "value": 10},
                {"attribute": "city", "op": "neq", "value": "Porto"},
            ],
            "any_of": [
                {"attribute": "city", "op": "in", "value": ["Lisbon", "Faro"]},
                {"attribute": "interests", "op": "eq", "value": "running"},
            ],
        },
    }
    hit = _define(world, body, headers)
    body["rules"]["attributes"][0] = {"attribute": "visit_count", "op": "gt", "value": 14}  # type: ignore[index]
    miss = _define(world, body, headers)

    hits = world.api.client.get(f"/v1/audiences/{hit}/members", headers=headers).json()
    misses = world.api.client.get(f"/v1/audiences/{miss}/members", headers=headers).json()

    assert hits["members"] == [world.a]
    assert misses["members"] == []


@pytest.mark.parametrize(
    ("rules", "reason"),
    [
        (
            {"attributes": [{"attribute": "shoe_size", "op": "eq", "value": "9"}]},
            "unknown_attribute",
        ),
        (
            {"attributes": [{"attribute": "age_band", "op": "eq", "value": "x"}]},
            "category_not_allowed",
        ),
        ({"events": [{"event": "purchase", "within_days": 365}]}, "past_retention"),
        ({"events": [{"event": "teleport", "within_days": 3}]}, "unknown_event"),
        ({"attributes": [{"attribute": "city", "op": "gt", "value": 3}]}, "invalid_operator"),
        ({"attributes": [{"attribute": "visit_count", "op": "eq", "value": "x"}]}, "invalid_value"),
        ({"attributes": [{"attribute": "city", "op": "exists", "value": "x"}]}, "invalid_value"),
        ({}, "empty_rules"),
    ],
)
def test_audience_definition_is_422_when_a_rule_is_invalid_for_the_purpose(
    world: World, rules: dict[str, Any], reason: str
) -> None:
    response = world.api.client.post(
        "/v1/audiences",
        json={"name": "bad", "purpose": "ad_targeting", "rules": rules},
        headers=world.key("ad_targeting"),
    )

    assert response.status_code == 422, response.text
    assert [e["reason"] for e in response.json()["errors"]] == [reason]


def test_audience_definition_is_403_for_a_purpose_the_key_lacks(world: World) -> None:
    response = world.api.client.post("/v1/audiences", json=BUYERS, headers=world.key("analytics"))

    assert response.status_code == 403


def test_audience_of_another_purpose_is_403_and_unknown_audience_404(world: World) -> None:
    audience = _define(world, BUYERS, world.key("ad_targeting", consumer="shop"))
    other = world.key("analytics", consumer="shop")

    assert world.api.client.get(f"/v1/audiences/{audience}", headers=other).status_code == 403
    assert (
        world.api.client.get(f"/v1/audiences/{audience}/members", headers=other).status_code == 403
    )
    missing = world.api.client.get("/v1/audiences/aud_nope/members", headers=other)
    assert missing.status_code == 404


def test_members_page_through_every_member_with_the_cursor(world: World) -> None:
    headers = world.key("fraud_prevention")  # legitimate interest, default grant: all persons
    body = {
        "name": "everyone who bought",
        "purpose": "fraud_prevention",
        "rules": {"events": [{"event": "purchase", "within_days": 30}]},
    }
    audience = _define(world, body, headers)

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = world.api.client.get(
            f"/v1/audiences/{audience}/members", params=params, headers=headers
        ).json()
        assert len(page["members"]) <= 1
        seen += page["members"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == sorted([world.a, world.b, world.c])


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}])
def test_members_is_422_when_limit_is_invalid(world: World, params: dict[str, Any]) -> None:
    headers = world.key("ad_targeting")
    audience = _define(world, BUYERS, headers)

    response = world.api.client.get(
        f"/v1/audiences/{audience}/members", params=params, headers=headers
    )

    assert response.status_code == 422


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def test_export_streams_sha256_of_activation_identifiers_never_raw_values(world: World) -> None:
    headers = world.key("ad_targeting")
    audience = _define(world, BUYERS, headers)

    csv_response = world.api.client.get(f"/v1/audiences/{audience}/export", headers=headers)
    jsonl_response = world.api.client.get(
        f"/v1/audiences/{audience}/export", params={"format": "jsonl"}, headers=headers
    )

    assert csv_response.status_code == 200, csv_response.text
    assert csv_response.headers["content-type"].startswith("text/csv")
    lines = csv_response.text.strip().splitlines()
    assert lines[0] == "identifier_type,sha256"
    # ad_targeting activates email and phone; the customer id is never exported.
    assert sorted(lines[1:]) == sorted([f"email,{_sha(EMAIL_A)}", f"phone,{_sha(PHONE_A)}"])
    rows = [json.loads(line) for line in jsonl_response.text.splitlines()]
    assert {(r["identifier_type"], r["sha256"]) for r in rows} == {
        ("email", _sha(EMAIL_A)),
        ("phone", _sha(PHONE_A)),
    }
    for text in (csv_response.text, jsonl_response.text):
        assert EMAIL_A not in text
        assert PHONE_A not in text
        assert world.a not in text


def test_export_activates_only_the_types_the_purpose_lists(world: World) -> None:
    headers = world.key("marketing_email")
    body = {
        "name": "newsletter",
        "purpose": "marketing_email",
        "rules": {"attributes": [{"attribute": "city", "op": "exists"}]},
    }
    world.api.container.engine.ingest(
        [
            IdentityEvent(
                (world.api.container.identity_policy.normalize("email", EMAIL_A, "GB"),),
                "test",
                NOW,
                consents=(_consent("marketing_email", True, NOW - timedelta(days=1)),),
            )
        ]
    )
    audience = _define(world, body, headers)

    response = world.api.client.get(f"/v1/audiences/{audience}/export", headers=headers)

    assert response.text.strip().splitlines()[1:] == [f"email,{_sha(EMAIL_A)}"]


def test_export_is_422_when_the_purpose_activates_nothing(world: World) -> None:
    headers = world.key("fraud_prevention")
    body = {
        "name": "x",
        "purpose": "fraud_prevention",
        "rules": {"events": [{"event": "purchase", "within_days": 30}]},
    }
    audience = _define(world, body, headers)

    response = world.api.client.get(f"/v1/audiences/{audience}/export", headers=headers)

    assert response.status_code == 422


# -- features -------------------------------------------------------------------------------


def test_features_are_keyed_by_pseudonyms_stable_per_consumer_and_distinct_across(
    world: World,
) -> None:
    first = world.key("model_training", consumer="ds-team")
    again = world.key("model_training", consumer="ds-team")
    other = world.key("model_training", consumer="partner-lab")

    pages = [
        world.api.client.get("/v1/features", params={"purpose": "model_training"}, headers=h)
        for h in (first, again, other)
    ]

    for page in pages:
        assert page.status_code == 200, page.text
    bodies = [p.json() for p in pages]
    # Only A consented to model_training.
    assert [len(b["rows"]) for b in bodies] == [1, 1, 1]
    row = bodies[0]["rows"][0]
    assert row["features"]["city"] == "Lisbon"
    assert row["features"]["lifetime_value"] == 812.5
    assert row["features"]["favourite_category"] is None
    assert bodies[0]["columns"][0] == "age_band"
    assert bodies[1]["rows"][0]["pseudonym"] == row["pseudonym"]
    assert bodies[2]["rows"][0]["pseudonym"] != row["pseudonym"]
    assert world.a not in pages[0].text
    assert row["pseudonym"].startswith("ps_")
    assert bodies[0]["pseudonym_key_id"] == world.api.container.keyring.primary_key_id


def test_features_is_422_for_a_purpose_without_features(world: World) -> None:
    response = world.api.client.get(
        "/v1/features", params={"purpose": "ad_targeting"}, headers=world.key("ad_targeting")
    )

    assert response.status_code == 422


# -- audit ----------------------------------------------------------------------------------


def test_every_read_is_audited_and_the_audit_holds_no_person_id_or_identifier(
    world: World,
) -> None:
    headers = world.key("ad_targeting", "model_training")
    client = world.api.client
    client.get(f"/v1/profiles/{world.a}", params={"purpose": "ad_targeting"}, headers=headers)
    client.get(f"/v1/profiles/{world.b}", params={"purpose": "ad_targeting"}, headers=headers)
    audience = _define(world, BUYERS, headers)
    client.get(f"/v1/audiences/{audience}/members", headers=headers)
    client.get(f"/v1/audiences/{audience}/export", headers=headers)
    client.get("/v1/features", params={"purpose": "model_training"}, headers=headers)

    audit = world.api.container.audit
    entries = audit.entries()
    actions = [(e.action, e.decision, e.reason) for e in entries]
    assert ("read.profile", "allow", "consent_granted") in actions
    assert ("read.profile", "deny", "no_consent") in actions
    assert ("audience.define", "allow", "defined") in actions
    page = next(e for e in entries if e.action == "read.audience" and e.reason == "page")
    assert page.details["members"] == 1
    assert page.details["denied_no_consent"] == 1  # B passed the event rule, not the policy
    members = next(e for e in entries if e.action == "read.audience" and e.reason == "members")
    assert list(members.details["refs"]) == [world.api.container.audit.person_ref(world.a)]  # type: ignore[arg-type]
    export = next(e for e in entries if e.action == "read.export" and e.reason == "page")
    assert (export.details["identifiers_email"], export.details["identifiers_phone"]) == (1, 1)
    assert any(e.action == "read.features" for e in entries)
    assert audit.verify().ok

    raw = b"".join(
        path.read_bytes()
        for path in world.api.container.settings.audit_db_path.parent.glob("audit*")
    )
    for secret in (world.a, world.b, world.c, EMAIL_A, PHONE_A, "Lisbon"):
        assert secret.encode() not in raw


# -- a hash key id with an all-digit suffix (issue 21) ------------------------------------------


# Its own container on a fresh data dir: on Neo4j (one shared database in Community) the
# features scan would also meet other tests' persons, whose data keys live in other vaults.
@pytest.mark.sqlite_only
def test_features_read_is_200_when_the_primary_hash_key_id_ends_in_digits(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    # 1 generated key id in 17 had an all-digit suffix; the audit entry of every features read
    # carries the key id, the phone heuristic took it for a phone number, and the read was 500.
    key_id = "hk-20261202-355274"
    keys = KeyFile(key_id, (KeyEntry(key_id, secrets.token_bytes(32), "", "operator"),))
    settings = Settings(
        env="test",
        data_dir=tmp_path / "data",
        policy_dir=POLICY_DIR,
        default_region="GB",
        hash_keys=HASH_KEY_FILE.dump(keys),
    )
    container = build_container(settings)
    try:
        _, token = container.api_keys.create(
            "reader", frozenset({Scope.READ}), purposes=frozenset({"model_training"})
        )
        with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
            api = Api(client, container, {}, {}, {})
            _person(
                api,
                [("email", EMAIL_A)],
                [_attr("city", "location", "Lisbon")],
                [_consent("model_training", True, NOW - timedelta(days=1))],
            )
            response = client.get(
                "/v1/features",
                params={"purpose": "model_training"},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 200, response.text
        assert response.json()["pseudonym_key_id"] == key_id
        assert [row["features"]["city"] for row in response.json()["rows"]] == ["Lisbon"]
        (entry,) = [e for e in container.audit.entries() if e.action == "read.features"][:1]
        assert entry.details["pseudonym_key"] == key_id
    finally:
        container.close()


def test_a_hash_key_id_without_a_letter_stops_startup_naming_the_field(tmp_path: Path) -> None:
    key_id = "20261202355274"  # an operator's all-digit id: it could never be audited
    keys = KeyFile(key_id, (KeyEntry(key_id, secrets.token_bytes(32), "", "operator"),))
    settings = Settings(env="test", data_dir=tmp_path, hash_keys=HASH_KEY_FILE.dump(keys))
    with pytest.raises(ConfigurationError, match=r"keys\[0\]\.id"):
        build_container(settings)


def _data_keys(world: World) -> int:
    return sum(world.api.container.vault.count_by_kek().values())


def test_reads_of_unknown_person_ids_make_no_vault_key_when_repeated(world: World) -> None:
    in_scope, out_of_scope = world.key("ad_targeting"), world.key("model_training")
    # A known person's first audited read makes its reference key (once).
    world.profile(headers=in_scope)
    before = _data_keys(world)
    for n in range(5):
        for headers in (in_scope, out_of_scope):
            unknown = world.api.client.get(
                f"/v1/profiles/p_{n:024d}", params={"purpose": "ad_targeting"}, headers=headers
            )
            assert unknown.status_code in (403, 404)
    again = world.profile(headers=in_scope)

    assert again.status_code == 200
    assert _data_keys(world) == before  # no key for any unknown id, none again for A
    refs = {e.person_id for e in world.api.container.audit.entries() if e.action == "read.profile"}
    assert len(refs) == 1 + 5  # A's reference, and one per unknown id (shared key)


@pytest.mark.sqlite_only
def test_a_consented_profile_read_takes_one_graph_statement_when_served(world: World) -> None:
    headers = world.key("ad_targeting")
    statements: list[str] = []
    written: list[str] = []
    store = world.api.container.store
    assert isinstance(store, SqliteGraphStore)
    store._reader.set_trace_callback(statements.append)
    store._conn.set_trace_callback(written.append)
    try:
        read = world.profile(headers=headers)
    finally:
        store._reader.set_trace_callback(None)
        store._conn.set_trace_callback(None)

    assert read.status_code == 200
    # On the read connection (stop 45: under its own lock, not waiting for writes).
    assert written == []
    queries = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    # The person, its consent records and its facts in one statement (GraphStore.person_read),
    # which is its own snapshot: no BEGIN and COMMIT around it either.
    assert len(queries) == 1, statements
    assert not [s for s in statements if s.lstrip().upper().startswith(("BEGIN", "COMMIT"))]


def _shred_generation_reads(world: World, read: Any) -> tuple[Any, int]:
    """``read()``'s answer and how many times the vault key file was asked for its shred
    generation meanwhile (the vault's cache check and the audit reference lookup's)."""
    statements: list[str] = []
    keys = world.api.container.vault_keys
    # The generation is read on the key store's own connection for it (its other connection
    # is traced too: a read moved back there is counted as well).
    connections = (keys._conn, keys._generation_conn)
    for conn in connections:
        conn.set_trace_callback(statements.append)
    try:
        answer = read()
    finally:
        for conn in connections:
            conn.set_trace_callback(None)
    return answer, sum("shred_generation" in s for s in statements)


def test_a_consented_profile_read_asks_the_key_file_for_its_shred_generation_once_when_served(
    world: World,
) -> None:
    # The vault's decrypt checks its key cache against the key file's shred generation, and the
    # audit log's reference lookup for the person checks its cache against it too: the read
    # hands the first reading to the second (stop 36 found two queries per read).
    headers = world.key("ad_targeting")
    assert world.profile(headers=headers).status_code == 200  # the person's reference is made

    read, generation_reads = _shred_generation_reads(world, lambda: world.profile(headers=headers))

    assert read.status_code == 200
    assert generation_reads == 1
    (entry,) = [e for e in world.api.container.audit.entries()[-1:] if e.action == "read.profile"]
    assert entry.person_id == world.api.container.audit.person_ref(world.a)
    assert world.api.container.audit.verify().ok


@pytest.mark.sqlite_only
def test_a_tampered_value_names_no_owner_or_field_in_the_log_or_body_when_read(
    world: World, log_stream: io.StringIO
) -> None:
    # A value altered in the graph file fails authentication (a 500: tampering is not bad
    # input). The log line keeps what an operator needs (the class, the value's position, the
    # field's kind), never the anchor's node id (a pseudonymous id of one person) nor the field.
    headers = world.key("ad_targeting")
    assert world.profile(headers=headers).status_code == 200
    rows = world.api.container.store.person_read(
        world.a, (), (FactKind.ATTRIBUTE,), FactStatus.ACTIVE
    )
    assert rows is not None
    city = next(f for f in rows.facts if f.name == "city")
    store = world.api.container.store
    assert isinstance(store, SqliteGraphStore)
    with store._lock:
        store._conn.execute(
            "UPDATE facts SET sealed = ? WHERE fact_id = ?",
            (city.sealed[:-1] + bytes([city.sealed[-1] ^ 1]), city.fact_id),
        )
        store._conn.commit()

    read = world.profile(headers=headers)

    assert read.status_code == 500
    logged = log_stream.getvalue()
    assert "ciphertext-tampered" in read.text
    assert "TamperedCiphertextError" in logged
    assert "attribute field" in logged  # the kind, for the operator
    for secret in (city.node_id, city.seal_field):
        assert secret not in logged
        assert secret not in read.text


def test_a_profile_read_answers_404_and_is_audited_when_another_process_shredded_the_keys(
    world: World, settings: Settings
) -> None:
    # The read asks the key file once (above): that one reading must still be the one the
    # vault's key cache is checked against before any value is decrypted. Keys cached by an
    # earlier read, shredded by another process (its own vault on the same files), are not
    # used: the read fails closed, returns no value, and is audited like any other denial.
    headers = world.key("ad_targeting")
    first = world.profile(headers=headers)
    assert first.status_code == 200
    assert first.json()["attributes"]["city"]["value"] == "Lisbon"
    rows = world.api.container.store.person_read(
        world.a, (), (FactKind.ATTRIBUTE, FactKind.EVENT), FactStatus.ACTIVE
    )
    assert rows is not None
    owners = {f.node_id for f in rows.facts}
    keys = SqliteVaultKeyStore(settings.vault_keys_path)
    try:
        other = Vault(keys, LocalFileKeyProvider(settings.resolved_kek_file))
        assert other.shred(owners) == len(owners)
    finally:
        keys.close()

    audit = world.api.container.audit
    before = len(audit.entries())

    again, generation_reads = _shred_generation_reads(world, lambda: world.profile(headers=headers))

    # Keys gone while the graph still names the person (not a state an erasure leaves: it
    # deletes the graph first): the person's data is gone, so the answer is exactly an unknown
    # person's (a 404 problem+json, no value), never a 500.
    unknown = world.profile("p_" + "0" * 26, headers=headers)
    assert again.status_code == 404
    assert again.headers["content-type"].startswith("application/problem+json")
    same = {k: v for k, v in again.json().items() if k != "instance"}  # instance: request id
    assert same == {k: v for k, v in unknown.json().items() if k != "instance"}
    assert "Lisbon" not in again.text
    assert generation_reads >= 1  # the decrypt checked its keys against the key file
    # The attempt is audited as a denial about the person, with its own reason.
    (entry,) = [e for e in audit.entries()[before:] if e.person_id == audit.person_ref(world.a)]
    assert (entry.action, entry.decision, entry.reason) == (
        "read.profile",
        "deny",
        "data_keys_destroyed",
    )
    assert entry.details["fields_requested"] == 4 + 3  # the facts loaded and withheld whole
    assert audit.verify().ok


# -- pages over a person whose data keys were shredded ------------------------------------------

EMAIL_D = "dee.reads@shop.example.de"


def _lisbon_buyer(world: World) -> str:
    """D: like A a consenting Lisbon buyer (ad_targeting and model_training), email only."""
    day = timedelta(days=1)
    return _person(
        world.api,
        [("customer_id", "C-4"), ("email", EMAIL_D)],
        [
            _attr("city", "location", "Lisbon"),
            _attr("lifetime_value", "financial", 99.0),
            _event("purchase", NOW - 2 * day, order_id="o-7"),
            _event("purchase", NOW - 4 * day, order_id="o-8"),
        ],
        [
            _consent("ad_targeting", True, NOW - 10 * day),
            _consent("model_training", True, NOW - 10 * day),
        ],
    )


def _shred_nodes_of(
    world: World, settings: Settings, person: str, kind: FactKind, name: str | None = None
) -> None:
    """Shred, from another process's vault on the same files, the data keys of the nodes that
    anchor ``person``'s facts of ``kind`` (named ``name``, if given), while the graph still names
    the person (not a state an erasure leaves: it deletes the graph first)."""
    facts = world.api.container.store.read(
        lambda tx: tx.person_facts(person, (kind,), FactStatus.ACTIVE)
    )
    owners = {f.node_id for f in facts if name is None or f.name == name}
    assert owners
    keys = SqliteVaultKeyStore(settings.vault_keys_path)
    try:
        other = Vault(keys, LocalFileKeyProvider(settings.resolved_kek_file))
        assert other.shred(owners) == len(owners)
    finally:
        keys.close()


def _page_entries(world: World, action: str, since: int) -> tuple[AuditEntry, list[str]]:
    """The page summary entry of ``action`` written after entry ``since`` and its member refs."""
    entries = [e for e in world.api.container.audit.entries()[since:] if e.action == action]
    (summary,) = [e for e in entries if e.reason == "page"]
    refs: list[str] = []
    for entry in entries:
        if entry.reason == "members":
            listed = entry.details["refs"]
            assert isinstance(listed, Sequence)
            refs += [str(r) for r in listed]
    return summary, refs


def test_audience_members_withhold_only_the_person_whose_data_keys_were_shredded(
    world: World, settings: Settings
) -> None:
    # The page decrypts the attributes its rules match on: one person's shredded keys used to
    # fail the whole batch (an unaudited 500). Now that person is withheld and audited by
    # reason, and the rest of the page is served.
    d = _lisbon_buyer(world)
    headers = world.key("ad_targeting")
    audience = _define(world, BUYERS, headers)
    url = f"/v1/audiences/{audience}/members"
    assert world.api.client.get(url, headers=headers).json()["members"] == sorted([world.a, d])
    _shred_nodes_of(world, settings, world.a, FactKind.ATTRIBUTE)
    audit = world.api.container.audit
    since = len(audit.entries())

    response = world.api.client.get(url, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["members"] == [d]
    assert response.json()["next_cursor"] is None
    summary, refs = _page_entries(world, "read.audience", since)
    assert (summary.decision, summary.details["members"]) == ("allow", 1)
    assert summary.details["denied_data_keys_destroyed"] == 1
    assert refs == [audit.person_ref(d)]
    assert audit.verify().ok


def test_audience_export_leaves_out_the_whole_person_whose_identifier_keys_were_shredded(
    world: World, settings: Settings
) -> None:
    # An event-only audience decrypts nothing to admit its members; the export then decrypts
    # their activation identifiers. A's phone key is shredded, its email key is not: A is
    # withheld whole (no partial person leaves), D is exported, and the chunk is audited.
    d = _lisbon_buyer(world)
    headers = world.key("ad_targeting")
    body = {
        "name": "repeat buyers",
        "purpose": "ad_targeting",
        "rules": {"events": [{"event": "purchase", "within_days": 30, "min_count": 2}]},
    }
    audience = _define(world, body, headers)
    _shred_nodes_of(world, settings, world.a, FactKind.RAW_IDENTIFIER, "phone")
    audit = world.api.container.audit
    since = len(audit.entries())

    response = world.api.client.get(f"/v1/audiences/{audience}/export", headers=headers)

    assert response.status_code == 200, response.text
    assert response.text.strip().splitlines() == [
        "identifier_type,sha256",
        f"email,{_sha(EMAIL_D)}",
    ]
    assert _sha(EMAIL_A) not in response.text
    summary, refs = _page_entries(world, "read.export", since)
    assert (summary.details["members"], summary.details["identifiers_email"]) == (1, 1)
    assert summary.details["denied_data_keys_destroyed"] == 1
    assert "identifiers_phone" not in summary.details
    assert refs == [audit.person_ref(d)]
    assert audit.verify().ok


def test_features_page_withholds_only_the_person_whose_data_keys_were_shredded(
    world: World, settings: Settings
) -> None:
    d = _lisbon_buyer(world)
    headers = world.key("model_training", consumer="ds-team")
    params = {"purpose": "model_training"}
    assert (
        len(world.api.client.get("/v1/features", params=params, headers=headers).json()["rows"])
        == 2
    )
    _shred_nodes_of(world, settings, world.a, FactKind.ATTRIBUTE)
    audit = world.api.container.audit
    since = len(audit.entries())

    response = world.api.client.get("/v1/features", params=params, headers=headers)

    assert response.status_code == 200, response.text
    (row,) = response.json()["rows"]
    assert row["pseudonym"] == world.api.container.pseudonyms.pseudonym("ds-team", d)
    assert row["features"]["lifetime_value"] == 99.0
    summary, refs = _page_entries(world, "read.features", since)
    assert (summary.details["members"], summary.details["denied_data_keys_destroyed"]) == (1, 1)
    assert refs == [audit.person_ref(d)]
    assert audit.verify().ok


def test_a_profile_read_answers_no_value_when_its_audit_entry_cannot_be_written(
    world: World,
) -> None:
    # The answer is built before the read's audit entry is appended (the append waits for its
    # group's commit; the work after that wait ran on cold caches): it must still be returned
    # only once the entry is durable, and not at all when the append fails.
    headers = world.key("ad_targeting")
    assert world.profile(headers=headers).json()["attributes"]["city"]["value"] == "Lisbon"
    world.api.container.audit.close()  # every append fails from now on

    response = world.profile(headers=headers)

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "Lisbon" not in response.text


def test_concurrent_profile_reads_share_one_audit_commit_and_answer_only_once_it_is_durable(
    world: World,
) -> None:
    # While a commit is in progress, the reads behind it queue their audit entries; none of
    # them is answered before the group holding its entry committed, and they share one commit.
    audit: Any = world.api.container.audit
    committer = audit._group
    headers = world.key("ad_targeting")
    entries_before, groups_before = audit.head().seq, committer.groups
    readers = 6
    with ThreadPoolExecutor(readers) as pool:
        with audit._lock:  # the first read's writer blocks inside its commit
            first = pool.submit(world.profile, headers=headers)
            wait_until(lambda: committer.groups == groups_before + 1)
            rest = [pool.submit(world.profile, headers=headers) for _ in range(readers - 1)]
            wait_until(lambda: len(committer._queue) == readers - 1)
            assert not any(f.done() for f in [first, *rest])  # nobody answered before durable
        responses = [first.result(), *(f.result() for f in rest)]

    assert [r.status_code for r in responses] == [200] * readers
    assert all(r.json()["attributes"]["city"]["value"] == "Lisbon" for r in responses)
    assert audit.head().seq == entries_before + readers
    assert committer.groups == groups_before + 2  # the five queued reads shared one commit
    assert audit.verify().ok


def test_a_profile_is_rendered_as_fastapi_renders_its_response_model_when_served(
    world: World,
) -> None:
    # The route renders ProfileOut itself (one model_dump) instead of FastAPI's dump, second
    # validation and serialization on a worker thread: the answer must stay what FastAPI made
    # of the returned model, byte for byte, and the OpenAPI schema must still name the model.
    response = world.profile()

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    model = ProfileOut.model_validate_json(response.content)
    rendered = JSONResponse(model.model_dump(mode="json")).body  # what FastAPI returned before
    assert response.content == rendered
    schema = world.api.client.get("/openapi.json").json()
    ok = schema["paths"]["/v1/profiles/{person_id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProfileOut"
    }


# -- profile reads announced on arrival (issue 14, stop 43) ---------------------------------


def _lingering_reader(world: World, key: str) -> tuple[Container, Caller, SqliteAuditLog]:
    """The container, a caller with ``key`` for ad targeting whose reference to ``world.a`` is
    already made (one read), and the audit log, whose writer now waits up to 30 s for announced
    reads (only a hung test waits that long)."""
    container = world.api.container
    caller = Caller(key, frozenset({"ad_targeting"}), key)
    audit = container.audit
    assert isinstance(audit, SqliteAuditLog)
    container.reads.profile(caller, world.a, "ad_targeting")  # the reference is made
    audit._group._linger_s = 30.0
    return container, caller, audit


def test_an_audit_writer_waits_for_a_profile_read_announced_on_arrival_and_commits_both_at_once(
    world: World,
) -> None:
    # The profile route announces a read on the event loop (announce_profile) before it hands
    # it to a worker thread: an audit writer that takes its group meanwhile waits for it (until
    # stop 43 the read announced itself on the worker thread, after the hand-over).
    container, caller, audit = _lingering_reader(world, "k_arrive")
    arrival = container.reads.announce_profile()  # this (test) thread announces; a worker reads
    # Another read announced and still busy: a writer waits only while more reads are coming
    # than are queued (stop 44), so with the arrival alone it would commit the first at once.
    busy = container.reads.announce_profile()
    go = threading.Event()
    before = audit.head().seq

    def announced() -> Any:
        go.wait(30)
        return container.reads.profile(caller, world.a, "ad_targeting", arrival)

    groups = audit._group.groups
    with ThreadPoolExecutor(2) as pool:
        second = pool.submit(announced)
        first = pool.submit(container.reads.profile, caller, world.a, "ad_targeting")
        wait_until(lambda: lingering(audit._group))  # the first read's writer waits for the arrival
        go.set()
        answers = [first.result(30), second.result(30)]

    assert answers[0] == answers[1]
    assert audit._group.groups - groups == 1  # both entries in one commit
    assert [e.decision for e in audit.entries(after_seq=before)] == ["allow", "allow"]
    busy.withdraw()
    with audit._group._cond:
        assert audit._group._coming == 0
    # A refused read ends its arrival (before its denial is audited: no writer waits for it).
    refused = container.reads.announce_profile()
    with pytest.raises(PurposeNotInScopeError):
        container.reads.profile(caller, world.a, "model_training", refused)
    with pytest.raises(NotReadableError):
        container.reads.profile(caller, world.b, "ad_targeting", container.reads.announce_profile())
    with audit._group._cond:
        assert audit._group._coming == 0
    assert audit.verify().ok


def test_profile_reads_announced_on_arrival_share_one_audit_commit_when_the_writer_lingers(
    world: World,
) -> None:
    container, caller, audit = _lingering_reader(world, "k_arrive")
    arrivals = [container.reads.announce_profile() for _ in range(4)]
    # Four more reads announced and still busy: a writer waits while more reads are coming
    # than are queued (stop 44), so it waits until the four are queued (four still coming).
    busy = [container.reads.announce_profile() for _ in range(4)]
    groups = audit._group.groups
    with ThreadPoolExecutor(4) as pool:
        reads = [
            pool.submit(container.reads.profile, caller, world.a, "ad_targeting", arrival)
            for arrival in arrivals
        ]
        answers = [read.result(30) for read in reads]

    assert {answer.person_id for answer in answers} == {world.a}
    # The first read to finish writes, and waits for the three still announced: one commit.
    assert audit._group.groups - groups == 1
    for arrival in busy:
        arrival.withdraw()
    with audit._group._cond:
        assert audit._group._coming == 0


def test_a_profile_read_waiting_for_its_audit_commit_holds_none_of_the_facts_it_loaded(
    world: World,
) -> None:
    # Stop 44: while a read waits for its audit commit, only its answer stays alive; the rows,
    # facts and plaintexts the decision needed are freed before the wait (ReadService.
    # _decided_profile). Held through the wait by 16 concurrent reads they outlived the
    # collector's young generation and set it off every ~30 reads.
    container, caller, audit = _lingering_reader(world, "k_wait")
    busy = [container.reads.announce_profile() for _ in range(2)]  # the writer waits for them
    reader: list[int] = []

    def read() -> Any:
        reader.append(threading.get_ident())
        return container.reads.profile(caller, world.a, "ad_targeting")

    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(read)
        wait_until(lambda: lingering(audit._group))  # the read is queued, its writer waiting
        frame: FrameType | None = sys._current_frames()[reader[0]]
        held: list[object] = []
        while frame is not None:
            for value in frame.f_locals.values():
                items = value if isinstance(value, (list, tuple)) else (value,)
                held.extend(item for item in items if isinstance(item, Fact))
            frame = frame.f_back
        for arrival in busy:
            arrival.withdraw()
        assert answer.result(30).attributes
    assert held == []


def test_the_profile_route_announces_its_read_before_the_hand_over_to_a_worker_thread(
    world: World,
) -> None:
    # Observable: while the route's read runs on its worker thread, the audit counts it as
    # announced (an arrival taken on the event loop), and the answer is the read's.
    container = world.api.container
    audit = container.audit
    assert isinstance(audit, SqliteAuditLog)
    headers = world.key("ad_targeting")
    seen: list[int] = []
    profile = container.reads.profile

    def watched(*args: Any) -> Any:
        with audit._group._cond:
            seen.append(audit._group._coming)
        return profile(*args)

    container.reads.profile = watched  # type: ignore[method-assign,assignment]
    try:
        read = world.profile(headers=headers)
    finally:
        del container.reads.profile
    assert read.status_code == 200
    assert seen == [1]
    with audit._group._cond:
        assert audit._group._coming == 0
