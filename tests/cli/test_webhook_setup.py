"""Consent-webhook set-up is visible (issue 19): a start-up line names the sources, a delivery to
a source that cannot verify says why in the log, and ``idgraph webhooks check`` verifies a
signature locally. Also: presidio's per-recognizer INFO lines stay out of the start-up log."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from privacy.scanning import ScannerConfig
from privacy.scanning.presidio_scanner import PresidioPiiScanner
from privacy.transport.webhooks import new_webhook_id, sign_headers
from tests.conftest import POLICY_DIR
from tests.privacy.consent.test_consent_webhooks import SHOP_SECRET, _generic

runner = CliRunner()
OTHER_SECRET = "whsec_" + "b" * 43 + "="


def _events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_presidio_logs_no_recognizer_lines_when_the_scanner_is_built(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    PresidioPiiScanner(ScannerConfig())
    assert not [r for r in caplog.records if "Loaded recognizer" in r.getMessage()]


@pytest.fixture
def webhook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(POLICY_DIR))
    monkeypatch.setenv("IDGRAPH_ENV", "development")
    monkeypatch.setenv("IDGRAPH_WEBHOOK_SOURCES", '{"shop": {}, "cmp": {}}')
    monkeypatch.setenv("IDGRAPH_WEBHOOK_SECRETS", json.dumps({"shop": [SHOP_SECRET]}))
    body = tmp_path / "body.json"
    body.write_bytes(_generic())
    return body


def _check(body: Path, headers: dict[str, str], *extra: str) -> tuple[int, dict[str, object]]:
    args = ["webhooks", "check", *extra, "--json", "--body", str(body)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    result = runner.invoke(app, args)
    return result.exit_code, json.loads(result.stdout)


def test_webhooks_check_accepts_a_delivery_signed_with_the_configured_secret(
    webhook_env: Path,
) -> None:
    headers = sign_headers(
        [SHOP_SECRET], new_webhook_id(), int(time.time()), webhook_env.read_bytes()
    )
    code, answer = _check(webhook_env, headers, "shop")
    assert (code, answer["valid"], answer["secret_index"]) == (0, True, 0)


def test_webhooks_check_names_the_servers_reason_when_the_signature_is_wrong(
    webhook_env: Path,
) -> None:
    body = webhook_env.read_bytes()
    wrong = sign_headers([OTHER_SECRET], new_webhook_id(), int(time.time()), body)
    assert _check(webhook_env, wrong, "shop") == (
        1,
        {"source": "shop", "valid": False, "reason": "no_valid_signature"},
    )
    old = sign_headers([SHOP_SECRET], new_webhook_id(), int(time.time()) - 3600, body)
    assert _check(webhook_env, old, "shop")[1]["reason"] == "stale_timestamp"
    assert _check(webhook_env, old, "shop", "--ignore-time")[1]["valid"] is True


def test_webhooks_check_exits_2_when_the_source_is_unknown_or_has_no_secret(
    webhook_env: Path,
) -> None:
    headers = sign_headers([SHOP_SECRET], new_webhook_id(), int(time.time()), b"{}")
    assert _check(webhook_env, headers, "shopp") == (
        2,
        {"source": "shopp", "valid": False, "reason": "source_not_configured"},
    )
    assert _check(webhook_env, headers, "cmp")[1]["reason"] == "source_has_no_secret"
    result = runner.invoke(app, ["webhooks", "check", "shopp", "--body", str(webhook_env)])
    assert "restart" in result.stdout
