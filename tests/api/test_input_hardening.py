"""Issue 13, findings 3, 6 and 8: inputs that used to get a 500 or be silently misread.

* a DSR ``submitted_time`` before year 1000 was stored unpadded and failed to read back (500);
* a validly signed consent webhook nested 100k levels deep raised RecursionError (500);
* duplicate JSON keys were accepted, the last one winning;
* a signed webhook with a ``text/plain`` body was accepted (the README promises 415);
* resending a DSR body without ``submitted_time`` was a 409 (the default "now" was fingerprinted).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app as cli_app
from privacy.transport.webhooks import new_webhook_id, sign_headers
from tests.api.test_dsr_api import EMAIL, Dsr
from tests.api.test_dsr_api import dsr as _dsr_fixture
from tests.conftest import POLICY_DIR, Api
from tests.privacy.consent.test_consent_webhooks import SHOP_SECRET, Hooks
from tests.privacy.consent.test_consent_webhooks import hooks as _hooks_fixture
from tests.privacy.consent.test_consent_webhooks import (
    webhook_settings as _webhook_settings_fixture,
)

# The fixtures of the modules this one extends, under their own names.
hooks = _hooks_fixture
webhook_settings = _webhook_settings_fixture
dsr = _dsr_fixture


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A development environment for the CLI in a temp data dir."""
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(POLICY_DIR))
    monkeypatch.setenv("IDGRAPH_ENV", "development")
    return tmp_path


def _dsr_body(request_id: str, **extra: object) -> dict[str, object]:
    return {
        "request_id": request_id,
        "type": "access",
        "subject_identities": [{"type": "email", "value": EMAIL}],
        **extra,
    }


# -- 3: out-of-range timestamps --------------------------------------------------------------


@pytest.mark.parametrize("submitted", ["0999-12-31T23:00:00Z", "0001-01-01T00:00:00Z"])
def test_dsr_submitted_before_year_1000_is_422_and_stores_nothing(dsr: Dsr, submitted: str) -> None:
    response = dsr.submit(**_dsr_body("old-1", submitted_time=submitted))
    listing = dsr.client.get("/v1/dsr", headers=dsr.dsr)

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["pointer"] == "#/submitted_time"
    assert listing.status_code == 200, listing.text
    assert listing.json()["requests"] == []


def test_dsr_submitted_in_year_1000_reads_back(dsr: Dsr) -> None:
    response = dsr.submit(**_dsr_body("old-2", submitted_time="1000-01-02T00:00:00Z"))

    assert response.status_code == 202, response.text
    assert dsr.status("old-2")["submitted_time"].startswith("1000-01-02")


@pytest.mark.parametrize("path", ["/v1/identify", "/v1/consent"])
def test_ingest_and_consent_timestamps_before_year_1000_are_422(api: Api, path: str) -> None:
    body = {
        "identifiers": [{"type": "customer_id", "value": "C-OLD"}],
        "source": "web",
        "timestamp": "0999-06-01T00:00:00+00:00",
        **({"decisions": {"analytics": True}} if path == "/v1/consent" else {}),
    }

    response = api.client.post(path, json=body, headers=api.admin)

    assert response.status_code == 422, response.text
    assert api.container.store.stats().identifiers == 0


# -- 3 and 6: depth, duplicate keys and media type on every route, webhooks included ----------


def _signed(body: bytes) -> dict[str, str]:
    return sign_headers([SHOP_SECRET], new_webhook_id(), int(time.time()), body)


def test_signed_webhook_nested_100k_deep_is_400_not_500(hooks: Hooks) -> None:
    body = b"[" * 100_000 + b"]" * 100_000

    response = hooks.send("shop", body, _signed(body))

    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:idgraph:problem:malformed-json"
    assert hooks.consents == 0


def test_signed_webhook_with_a_text_body_is_415(hooks: Hooks) -> None:
    body = json.dumps(
        {"identifiers": [{"type": "customer_id", "value": "C-T"}], "decisions": {"analytics": True}}
    ).encode()

    response = hooks.client.post(
        "/v1/webhooks/consent/shop",
        content=body,
        headers={**_signed(body), "Content-Type": "text/plain"},
    )

    assert response.status_code == 415, response.text
    assert hooks.consents == 0


def test_signed_webhook_with_a_duplicate_key_is_400_with_its_pointer(hooks: Hooks) -> None:
    body = (
        b'{"identifiers": [{"type": "customer_id", "value": "C-A", "value": "C-B"}], '
        b'"decisions": {"analytics": true}}'
    )

    response = hooks.send("shop", body, _signed(body))

    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [
        {"pointer": "#/identifiers/0/value", "reason": "duplicate_key"}
    ]
    assert hooks.consents == 0


DUPLICATES = {
    "/v1/identify": (
        (
            b'{"identifiers": [{"type": "customer_id", "value": "C-A", "value": "C-B"}],'
            b' "source": "web"}'
        ),
        "#/identifiers/0/value",
    ),
    "/v1/ingest": (
        (
            b'{"events": [{"identifiers": [{"type": "customer_id", "value": "C-A"}],'
            b' "source": "web", "source": "crm"}]}'
        ),
        "#/events/0/source",
    ),
    "/v1/consent": (
        (
            b'{"identifiers": [{"type": "customer_id", "value": "C-A"}],'
            b' "decisions": {"analytics": true, "analytics": false}}'
        ),
        "#/decisions/analytics",
    ),
    "/v1/dsr": (
        (
            b'{"request_id": "d-1", "request_id": "d-2", "type": "erasure",'
            b' "subject_identities": [{"type": "customer_id", "value": "C-A"}]}'
        ),
        "#/request_id",
    ),
    "/v1/audiences": (
        b'{"name": "a", "purpose": "analytics", "purpose": "ad_targeting", "rules": {}}',
        "#/purpose",
    ),
}


@pytest.mark.parametrize("path", sorted(DUPLICATES))
def test_duplicate_json_key_is_400_naming_the_key_on_every_json_route(api: Api, path: str) -> None:
    body, pointer = DUPLICATES[path]

    response = api.client.post(
        path, content=body, headers={**api.admin, "Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [{"pointer": pointer, "reason": "duplicate_key"}]
    assert api.container.store.stats().identifiers == 0


def test_duplicate_key_that_could_be_a_value_is_not_echoed(api: Api) -> None:
    body = (
        b'{"identifiers": [{"type": "customer_id", "value": "C-A"}], "source": "web",'
        b' "traits": {"ann@shop.example.de": 1, "ann@shop.example.de": 2}}'
    )

    response = api.client.post(
        "/v1/identify", content=body, headers={**api.admin, "Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert "ann@shop" not in response.text
    assert response.json()["errors"][0]["pointer"] == "#/traits/*"


def test_bulk_file_line_with_a_duplicate_key_is_rejected_and_the_rest_applied(env: Path) -> None:
    path = env / "events.jsonl"
    path.write_text(
        '{"identifiers": [{"type": "customer_id", "value": "C-1"}], "source": "f"}\n'
        '{"identifiers": [{"type": "customer_id", "value": "C-2", "value": "C-3"}],'
        ' "source": "f"}\n'
    )
    result = CliRunner().invoke(cli_app, ["ingest", str(path)])

    assert result.exit_code == 1, result.output
    assert "line 2: not valid JSON (duplicate_key at #/identifiers/0/value" in result.output
    assert "1 " in result.output or "applied" in result.output


# -- 8: DSR idempotency without submitted_time -----------------------------------------------


def test_dsr_resent_without_submitted_time_is_200_and_a_changed_body_409(dsr: Dsr) -> None:
    first = dsr.submit(**_dsr_body("idem-1"))
    again = dsr.submit(**_dsr_body("idem-1"))
    changed = dsr.submit(**_dsr_body("idem-1", regulation="ccpa"))
    dated = dsr.submit(**_dsr_body("idem-1", submitted_time="2026-01-01T00:00:00Z"))

    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert changed.status_code == 409, changed.text
    assert dated.status_code == 409, dated.text
