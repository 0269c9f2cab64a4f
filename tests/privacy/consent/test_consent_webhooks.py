"""POST /v1/webhooks/consent/{source}: Standard Webhooks signatures, replays, payload mappers.

Signature vectors are those of tests/privacy/transport/test_webhooks.py (from the Standard Webhooks
reference
libraries); TC/GPP strings those of tests/privacy/consent/test_tcf.py and
tests/privacy/consent/test_gpp.py.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from bootstrap.container import Container, build_container, build_webhook_sources
from bootstrap.settings import Settings
from identity.errors import ConfigurationError
from identity.model import ConsentSignal
from privacy.auditing.log import AuditLogUnavailableError
from privacy.consent.mappers import WebhookSourceConfig
from privacy.consent.webhook_intake import ConsentWebhooks
from privacy.transport.webhooks import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    new_webhook_id,
    sign_headers,
)
from tests.conftest import POLICY_DIR
from tests.privacy.consent.test_gpp import REAL_TC_CORE
from tests.privacy.transport.test_webhooks import (
    OTHER_SIGNATURE,
    VECTOR_BODY,
    VECTOR_ID,
    VECTOR_SECRET,
    VECTOR_SIGNATURE,
    VECTOR_TS,
)

SHOP_SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
SHOP_OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
DIDOMI_SECRET = "whsec_" + base64.b64encode(b"d" * 32).decode()
EMAIL = {"type": "email", "value": "Webhook.Canary@Shop.example.de"}
CUSTOMER = "WEBHOOK-CANARY-77"
RAW_VALUES = (b"webhook.canary", b"Webhook.Canary", b"WEBHOOK-CANARY", b"didomi-canary-uid")
SOURCES = {
    "shop": WebhookSourceConfig(),
    "didomi": WebhookSourceConfig(
        format="didomi",
        purposes={"marketing": "marketing_email", "analytics-xyz": "analytics"},
        organization_user_id_type="customer_id",
        user_id_type="cookie_id",
    ),
    "vector": WebhookSourceConfig(),
    "unsigned": WebhookSourceConfig(),
}
SECRETS = {
    "shop": [SHOP_OLD_SECRET, SHOP_SECRET],
    "didomi": [DIDOMI_SECRET],
    "vector": [VECTOR_SECRET],
}


@dataclasses.dataclass
class Hooks:
    client: TestClient
    container: Container

    def post(self, source: str, body: bytes, *, secret: str | None = None, **headers: str) -> Any:
        signed = sign_headers([secret], new_webhook_id(), int(time.time()), body) if secret else {}
        return self.client.post(
            f"/v1/webhooks/consent/{source}",
            content=body,
            headers={**signed, **headers, "Content-Type": "application/json"},
        )

    def send(self, source: str, body: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(
            f"/v1/webhooks/consent/{source}",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )

    @property
    def consents(self) -> int:
        return self.container.store.stats().consents


@pytest.fixture
def webhook_settings(tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        data_dir=tmp_path / "data",
        policy_dir=POLICY_DIR,
        default_region="GB",
        webhook_sources=SOURCES,
        webhook_secrets=SecretStr(json.dumps(SECRETS)),
    )


@pytest.fixture
def hooks(webhook_settings: Settings, log_stream: io.StringIO) -> Iterator[Hooks]:
    container = build_container(webhook_settings)
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        yield Hooks(client, container)
    container.close()


def _generic(**fields: Any) -> bytes:
    payload = {"identifiers": [EMAIL], "timestamp": "2026-03-01T09:00:00Z", **fields}
    return json.dumps(payload).encode()


def _didomi(event_type: str = "event.created", **entity: Any) -> bytes:
    event = {
        "id": "evt-1",
        "organization_id": "shop-org",
        "created_at": "2026-03-01T09:00:00.000Z",
        "user": {"id": "didomi-canary-uid", "organization_user_id": CUSTOMER},
        "consents": {
            "purposes": [
                {"id": "marketing", "enabled": True},
                {"id": "analytics-xyz", "enabled": False},
                {"id": "geolocation_data", "enabled": True},
                {"id": "cookies", "enabled": None},
            ],
        },
        **entity,
    }
    key = "new_entity" if event_type == "event.updated" else "entity"
    return json.dumps({"type": event_type, "parameters": {key: event}}).encode()


def _assert_refused(response: Any, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["reason"] == reason
    assert "Bearer" not in response.headers["www-authenticate"]


# -- signatures ----------------------------------------------------------------------------------


def test_spec_vector_signature_is_accepted_and_a_non_consent_body_is_422_without_using_the_id(
    hooks: Hooks,
) -> None:
    container = hooks.container
    sources = build_webhook_sources(
        container.settings, container.purposes, container.identity_policy
    )
    webhooks = ConsentWebhooks(sources, container.replay_guard, clock=lambda: VECTOR_TS)
    container = dataclasses.replace(container, webhooks=webhooks)
    client = TestClient(create_app(container=container), raise_server_exceptions=False)
    headers = {
        HEADER_ID: VECTOR_ID,
        HEADER_TIMESTAMP: str(VECTOR_TS),
        HEADER_SIGNATURE: f"v1,{OTHER_SIGNATURE} v2,ignored {VECTOR_SIGNATURE}",
        "Content-Type": "application/json",
    }
    for _ in range(2):  # the id is not used up by a payload that cannot be applied
        response = client.post("/v1/webhooks/consent/vector", content=VECTOR_BODY, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["pointer"] == "#/identifiers"
    wrong = client.post(
        "/v1/webhooks/consent/vector",
        content=VECTOR_BODY,
        headers={**headers, HEADER_SIGNATURE: VECTOR_SIGNATURE[:-2] + "A="},
    )
    _assert_refused(wrong, "no_valid_signature")
    # The real clock is years past the vector's timestamp.
    _assert_refused(hooks.send("vector", VECTOR_BODY, headers), "stale_timestamp")
    assert hooks.consents == 0


def test_signed_generic_delivery_is_recorded_and_audited(hooks: Hooks) -> None:
    body = _generic(decisions={"marketing_email": True, "analytics": False})
    response = hooks.post("shop", body, secret=SHOP_SECRET)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["outcome"] == "created"
    assert "person_id" not in result
    assert {(r["purpose"], r["granted"], r["signal"]) for r in result["recorded"]} == {
        ("marketing_email", True, "webhook"),
        ("analytics", False, "webhook"),
    }
    assert hooks.consents == 2
    entries = hooks.container.audit.entries()
    assert [e.actor for e in entries] == ["webhook:shop", "webhook:shop"]
    assert {e.details["source"] for e in entries} == {"cmp:shop"}
    assert hooks.container.audit.verify().ok


def test_any_one_valid_signature_and_a_rotated_old_secret_are_accepted(hooks: Hooks) -> None:
    body = _generic(decisions={"analytics": True})
    ts = int(time.time())
    good = sign_headers([SHOP_SECRET], "msg_multi", ts, body)[HEADER_SIGNATURE]
    headers = {
        HEADER_ID: "msg_multi",
        HEADER_TIMESTAMP: str(ts),
        HEADER_SIGNATURE: f"v1,{OTHER_SIGNATURE} v1a,not-ours {good}",
    }
    assert hooks.send("shop", body, headers).status_code == 200
    assert hooks.post("shop", body, secret=SHOP_OLD_SECRET).status_code == 200


def test_replayed_webhook_id_is_refused_with_401_and_writes_nothing(hooks: Hooks) -> None:
    body = _generic(decisions={"analytics": True})
    headers = sign_headers([SHOP_SECRET], "msg_once", int(time.time()), body)
    assert hooks.send("shop", body, headers).status_code == 200
    before = hooks.consents
    _assert_refused(hooks.send("shop", body, headers), "replayed")
    # A fresh timestamp and signature do not help: the id was used.
    again = sign_headers([SHOP_SECRET], "msg_once", int(time.time()) + 1, body)
    _assert_refused(hooks.send("shop", body, again), "replayed")
    assert hooks.consents == before
    assert len(hooks.container.audit.entries()) == 1


# The exact ±300 s edges are pinned with an injected clock in
# tests/privacy/transport/test_webhooks.py; here the
# wall clock runs while the request is handled, so a future stamp of now+301 can fall inside the
# window on a loaded machine: a minute past the edge keeps the test about refusal, not timing.
@pytest.mark.parametrize(
    ("offset", "reason"), [(-301, "stale_timestamp"), (360, "future_timestamp")]
)
def test_stale_and_future_signatures_are_refused_and_write_nothing(
    hooks: Hooks, offset: int, reason: str
) -> None:
    body = _generic(decisions={"analytics": True})
    headers = sign_headers([SHOP_SECRET], new_webhook_id(), int(time.time()) + offset, body)
    _assert_refused(hooks.send("shop", body, headers), reason)
    assert hooks.consents == 0


def test_bad_signatures_are_refused_and_write_nothing(hooks: Hooks) -> None:
    body = _generic(decisions={"analytics": True})
    _assert_refused(hooks.post("shop", body, secret=DIDOMI_SECRET), "no_valid_signature")
    headers = sign_headers([SHOP_SECRET], new_webhook_id(), int(time.time()), body)
    tampered = body.replace(b"true", b"false")
    _assert_refused(hooks.send("shop", tampered, headers), "no_valid_signature")
    assert hooks.consents == 0
    assert hooks.container.audit.entries() == []


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_header"),
        ({HEADER_ID: "msg.with.dots"}, "malformed_id"),
        ({HEADER_TIMESTAMP: "1.5"}, "malformed_timestamp"),
        ({HEADER_TIMESTAMP: "9" * 40}, "malformed_timestamp"),
        ({HEADER_SIGNATURE: "v1,!!!notbase64!!!"}, "malformed_signature"),
        ({HEADER_SIGNATURE: "v1"}, "malformed_signature"),
        ({HEADER_SIGNATURE: "v1," + "A" * 9000}, "malformed_signature"),
    ],
)
def test_malformed_headers_are_4xx_problems_never_500(
    hooks: Hooks, headers: dict[str, str], reason: str
) -> None:
    body = _generic(decisions={"analytics": True})
    signed = sign_headers([SHOP_SECRET], "msg_ok", int(time.time()), body)
    sent = {**signed, **headers} if headers else {}
    _assert_refused(hooks.send("shop", body, sent), reason)
    assert hooks.consents == 0


def test_unknown_and_unsigned_sources_look_exactly_like_a_wrong_signature(hooks: Hooks) -> None:
    body = _generic(decisions={"analytics": True})
    answers = [
        hooks.post(source, body, secret=SHOP_SECRET).json()
        for source in ("nosuchsource", "unsigned", "ann@shop.example.de")
    ]
    wrong_secret = hooks.post("shop", body, secret=DIDOMI_SECRET).json()
    for answer in answers:
        assert {k: v for k, v in answer.items() if k != "instance"} == {
            k: v for k, v in wrong_secret.items() if k != "instance"
        }
    assert hooks.consents == 0


# -- payload mappers -----------------------------------------------------------------------------


def test_generic_payload_with_tcf_gpp_and_gpc(hooks: Hooks) -> None:
    body = _generic(tcf=REAL_TC_CORE, gpp="DBABLA~BVVVVVVVVWA.YA", gpc=True)
    response = hooks.post("shop", body, secret=SHOP_SECRET)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["gpp"] == {"applied": ["usnat"], "not_applied": []}
    assert {r["signal"] for r in result["recorded"]} == {"webhook"}
    # tcf, the GPP string (usnat opt-outs and its GPC bit: one record per purpose), gpc
    assert len(result["recorded"]) == 5 + 3 + 3


def test_invalid_generic_payload_is_422_and_the_id_is_not_used_up(hooks: Hooks) -> None:
    body = json.dumps({"identifiers": [EMAIL], "decisions": {"analytics": True}}).encode()
    headers = sign_headers([SHOP_SECRET], "msg_bad", int(time.time()), body)
    first = hooks.send("shop", body, headers)
    assert first.status_code == 422
    assert first.json()["errors"][0]["pointer"] == "#/timestamp"
    assert hooks.send("shop", body, headers).status_code == 422  # not 401 "replayed"
    unknown = _generic(decisions={"newsletter": True})
    response = hooks.post("shop", unknown, secret=SHOP_SECRET)
    assert response.status_code == 422
    assert response.json()["errors"][0]["reason"] == "unknown_purpose"
    bad_tc = hooks.post("shop", _generic(tcf=REAL_TC_CORE[:30]), secret=SHOP_SECRET)
    assert bad_tc.status_code == 422
    assert bad_tc.json()["errors"][0]["pointer"] == "#/tcf"
    value_as_key = hooks.post(
        "shop", _generic(decisions={"ann@shop.example.de": True}), secret=SHOP_SECRET
    )
    assert value_as_key.status_code == 422
    assert b"ann@" not in value_as_key.content
    not_json = hooks.post("shop", b"\xff{", secret=SHOP_SECRET)
    assert not_json.status_code == 422
    assert hooks.consents == 0


def test_didomi_event_created_maps_purposes_and_links_both_user_ids(hooks: Hooks) -> None:
    response = hooks.post("didomi", _didomi(), secret=DIDOMI_SECRET)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["outcome"] == "created"
    assert result["ignored_purposes"] == 2  # geolocation_data and cookies are not mapped
    assert {(r["purpose"], r["granted"]) for r in result["recorded"]} == {
        ("marketing_email", True),
        ("analytics", False),
    }
    assert {r["decided_at"][:19] for r in result["recorded"]} == {"2026-03-01T09:00:00"}
    by_customer = hooks.client.post(
        "/v1/resolve",
        json={"identifier": {"type": "customer_id", "value": CUSTOMER}},
        headers=_admin(hooks),
    )
    by_cookie = hooks.client.post(
        "/v1/resolve",
        json={"identifier": {"type": "cookie_id", "value": "didomi-canary-uid"}},
        headers=_admin(hooks),
    )
    assert by_customer.json()["person_id"] == by_cookie.json()["person_id"]
    records = hooks.container.store.read(
        lambda tx: tx.person_consents(by_customer.json()["person_id"], ["marketing_email"])
    )
    assert [(r.signal, r.source) for r in records] == [(ConsentSignal.WEBHOOK, "cmp:didomi")]


def test_didomi_event_updated_uses_the_new_entity_and_its_tc_string(hooks: Hooks) -> None:
    body = _didomi(
        "event.updated",
        updated_at="2026-03-02T09:00:00Z",
        consents={"purposes": [], "tcfcs": REAL_TC_CORE},
    )
    response = hooks.post("didomi", body, secret=DIDOMI_SECRET)
    assert response.status_code == 200, response.text
    assert len(response.json()["recorded"]) == 5  # the TCF-mapped purposes, all denied


def test_didomi_notifications_without_consent_are_acknowledged_and_ignored(hooks: Hooks) -> None:
    body = json.dumps(
        {"type": "user.updated", "parameters": {"old_entity": {}, "new_entity": {}}}
    ).encode()
    headers = sign_headers([DIDOMI_SECRET], "msg_user", int(time.time()), body)
    response = hooks.send("didomi", body, headers)
    assert response.status_code == 200, response.text
    assert response.json()["ignored"]
    _assert_refused(hooks.send("didomi", body, headers), "replayed")
    no_identifier = _didomi(user={"id": None, "organization_user_id": None})
    missing = hooks.post("didomi", no_identifier, secret=DIDOMI_SECRET)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["pointer"] == "#/parameters/entity/user"
    assert hooks.consents == 0


def test_audit_failure_releases_the_webhook_id_so_the_retry_is_applied(
    hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: object) -> None:
        raise AuditLogUnavailableError("audit log error: disk I/O error")

    body = _generic(decisions={"analytics": True})
    monkeypatch.setattr(hooks.container.audit, "append", broken)
    first = hooks.send("shop", body, sign_headers([SHOP_SECRET], "msg_r", int(time.time()), body))
    assert first.status_code == 503
    monkeypatch.undo()
    retry = hooks.send("shop", body, sign_headers([SHOP_SECRET], "msg_r", int(time.time()), body))
    assert retry.status_code == 200, retry.text
    assert len(hooks.container.audit.entries()) == 1
    assert hooks.consents == 2  # the same decision at the same time, recorded twice: no change


def test_no_raw_identifier_reaches_the_audit_log_or_the_logs(
    hooks: Hooks, log_stream: io.StringIO
) -> None:
    assert (
        hooks.post("shop", _generic(decisions={"analytics": True}), secret=SHOP_SECRET).status_code
        == 200
    )
    assert hooks.post("didomi", _didomi(), secret=DIDOMI_SECRET).status_code == 200
    hooks.post("ann@shop.example.de", _generic(decisions={"analytics": True}), secret=SHOP_SECRET)
    data_dir = hooks.container.settings.data_dir
    blobs = b"".join(p.read_bytes() for p in data_dir.glob("audit.sqlite3*") if p.is_file())
    blobs += b"".join(p.read_bytes() for p in data_dir.glob("webhook-replay*") if p.is_file())
    logs = log_stream.getvalue().encode()
    for raw in (*RAW_VALUES, b"ann@shop"):
        assert raw not in blobs
        assert raw not in logs


def _admin(hooks: Hooks) -> dict[str, str]:
    from privacy.access.api_keys import Scope

    _, token = hooks.container.api_keys.create("admin", frozenset({Scope.ADMIN}))
    return {"Authorization": f"Bearer {token}"}


# -- configuration -------------------------------------------------------------------------------


def _sources(tmp_path: Path, **settings: Any) -> None:
    from identity.policy import load_identity_policy
    from privacy.access.purposes import load_purposes_policy

    build_webhook_sources(
        Settings(data_dir=tmp_path, policy_dir=POLICY_DIR, **settings),
        load_purposes_policy(POLICY_DIR / "purposes.yaml"),
        load_identity_policy(POLICY_DIR / "identity.yaml"),
    )


def test_production_refuses_a_configured_source_without_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'shop' has no secret"):
        _sources(tmp_path, env="production", webhook_sources={"shop": WebhookSourceConfig()})
    _sources(tmp_path, env="development", webhook_sources={"shop": WebhookSourceConfig()})


def test_secret_configuration_errors_name_the_source_not_the_secret(tmp_path: Path) -> None:
    bad = "whsec_c2hvcnQ="
    with pytest.raises(ConfigurationError) as info:
        _sources(
            tmp_path,
            webhook_sources={"shop": WebhookSourceConfig()},
            webhook_secrets=SecretStr(json.dumps({"shop": [bad]})),
        )
    assert "'shop'" in str(info.value)
    assert bad not in str(info.value)
    with pytest.raises(ConfigurationError, match="does not configure: 'shpo'"):
        _sources(
            tmp_path,
            webhook_sources={"shop": WebhookSourceConfig()},
            webhook_secrets=SecretStr(json.dumps({"shpo": [SHOP_SECRET]})),
        )
    with pytest.raises(ConfigurationError, match="unknown purpose"):
        _sources(
            tmp_path,
            webhook_sources={"d": WebhookSourceConfig(format="didomi", purposes={"x": "nope"})},
        )


def test_secrets_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "webhook-secrets.json"
    path.write_text(json.dumps({"shop": [SHOP_SECRET]}))
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        _sources(
            tmp_path, webhook_sources={"shop": WebhookSourceConfig()}, webhook_secrets_file=path
        )
    path.chmod(0o600)
    _sources(tmp_path, webhook_sources={"shop": WebhookSourceConfig()}, webhook_secrets_file=path)
