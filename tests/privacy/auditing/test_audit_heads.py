"""Signed audit heads catch tail truncation without a hand-kept anchor (issue 22, finding 6)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bootstrap.container import build_container
from bootstrap.settings import Settings
from cli.main import app
from privacy.auditing.log import AuditDraft
from tests.conftest import POLICY_DIR

runner = CliRunner()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(POLICY_DIR))
    monkeypatch.setenv("IDGRAPH_ENV", "development")
    return Settings()


def _entries(settings: Settings, count: int, publish: bool) -> None:
    container = build_container(settings)
    try:
        for n in range(count):
            container.audit.append(
                [AuditDraft("ops", "test.action", None, None, "allow", f"step-{n}", {})]
            )
        if publish:
            container.audit_heads.publish()
    finally:
        container.close()


def test_truncated_tail_is_reported_from_the_published_heads(settings: Settings) -> None:
    _entries(settings, 5, publish=True)
    heads = settings.resolved_audit_heads_file
    assert runner.invoke(app, ["audit", "verify", "--heads", str(heads)]).exit_code == 0

    conn = sqlite3.connect(settings.audit_db_path)
    # Whoever truncates the file can drop the append-only triggers first.
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f'DROP TRIGGER "{name}"')
    conn.execute("DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)")
    conn.commit()
    conn.close()
    # Without the heads the shorter chain is self-consistent: that was the finding.
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0

    result = runner.invoke(app, ["audit", "verify", "--heads", str(heads)])

    assert result.exit_code == 1
    assert "BROKEN: deleted" in result.output


def test_a_forged_head_line_is_reported(settings: Settings) -> None:
    _entries(settings, 2, publish=True)
    heads = settings.resolved_audit_heads_file
    line = json.loads(heads.read_text().splitlines()[-1])
    line["seq"] = 1
    with heads.open("a") as handle:
        handle.write(json.dumps(line) + "\n")

    result = runner.invoke(app, ["audit", "verify", "--heads", str(heads)])

    assert result.exit_code == 1
    assert "signature does not verify" in result.output


def test_heads_are_appended_and_logged(settings: Settings) -> None:
    _entries(settings, 1, publish=True)
    _entries(settings, 1, publish=True)

    lines = settings.resolved_audit_heads_file.read_text().splitlines()

    assert [json.loads(x)["seq"] for x in lines] == [1, 2]
    assert settings.resolved_audit_heads_file.stat().st_mode & 0o777 == 0o600
