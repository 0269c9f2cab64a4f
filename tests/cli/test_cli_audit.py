"""``idgraph audit verify|head`` and ``idgraph keys create-api-key --purpose --consumer``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bootstrap.settings import Settings
from cli.main import app
from privacy.access.api_keys import ApiKeyStore, Scope
from privacy.auditing.log import AuditDraft, SqliteAuditLog
from tests.conftest import POLICY_DIR

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A development environment in a temp data dir."""
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(POLICY_DIR))
    monkeypatch.setenv("IDGRAPH_ENV", "development")
    return tmp_path / "data"


def _audit_with(entries: int) -> Path:
    path = Settings().audit_db_path
    log = SqliteAuditLog(path)
    log.append(
        [AuditDraft("cli", "read.profile", "analytics", f"r_{i:024x}") for i in range(entries)]
    )
    log.close()
    return path


def test_audit_verify_is_ok_and_head_prints_an_anchor_it_accepts(data_dir: Path) -> None:
    _audit_with(3)

    head = runner.invoke(app, ["audit", "head"])
    verified = runner.invoke(app, ["audit", "verify", "--anchor", head.output.strip()])

    assert head.exit_code == 0
    assert head.output.startswith("3:")
    assert verified.exit_code == 0, verified.output
    assert "ok: 3 entries verified, anchor 3 matches" in verified.output


def test_audit_verify_exits_1_naming_the_entry_when_one_was_edited(data_dir: Path) -> None:
    path = _audit_with(3)
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET purpose = 'ad_targeting' WHERE seq = 2")
    conn.commit()
    conn.close()

    result = runner.invoke(app, ["audit", "verify"])

    assert result.exit_code == 1
    assert "BROKEN: edited entry at seq 2" in result.output


def test_audit_verify_with_an_anchor_detects_a_truncated_tail(data_dir: Path) -> None:
    path = _audit_with(3)
    anchor = runner.invoke(app, ["audit", "head"]).output.strip()
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_log_no_delete")
    conn.execute("DELETE FROM audit_log WHERE seq = 3")
    conn.commit()
    conn.close()

    plain = runner.invoke(app, ["audit", "verify"])
    anchored = runner.invoke(app, ["audit", "verify", "--anchor", anchor])

    assert plain.exit_code == 0  # a shorter chain is self-consistent...
    assert anchored.exit_code == 1  # ...but no longer reaches the anchor
    assert "deleted entry at seq 3" in anchored.output


def test_audit_verify_refuses_a_malformed_anchor_and_a_missing_log(data_dir: Path) -> None:
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 2  # no log yet
    _audit_with(1)
    assert runner.invoke(app, ["audit", "verify", "--anchor", "3:abc"]).exit_code == 2


def test_create_api_key_with_purposes_and_consumer(data_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "keys",
            "create-api-key",
            "--scope",
            "read",
            "--purpose",
            "ad_targeting",
            "--purpose",
            "analytics",
            "--consumer",
            "dsp-export",
        ],
    )

    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    store = ApiKeyStore(Settings().control_db_path)
    try:
        key = store.authenticate(token)
    finally:
        store.close()
    assert key.scopes == frozenset({Scope.READ})
    assert key.purposes == frozenset({"ad_targeting", "analytics"})
    assert key.consumer == "dsp-export"


def test_create_api_key_refuses_an_unknown_purpose(data_dir: Path) -> None:
    result = runner.invoke(
        app, ["keys", "create-api-key", "--scope", "read", "--purpose", "spying"]
    )

    assert result.exit_code == 2
    assert "unknown purpose" in result.output
    store = ApiKeyStore(Settings().control_db_path)
    try:
        assert store.list() == []
    finally:
        store.close()
