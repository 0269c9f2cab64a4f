"""A command's container builds the PII scanner on its first scan (``scanner_on_demand``), and
checks the categories' PII entity names then; a server's builds and checks it at start-up.

Why it matters: ``idgraph ingest`` of a large file scans in its reader process, and a second,
unused scanner in the ingesting process cost ~105 MiB of its peak (stop 54). A misspelt entity
name must still be refused, by a command at its first scan, wherever that scan runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bootstrap.container import build_container
from bootstrap.settings import Settings
from cli.main import app
from identity.errors import PolicyFileError
from identity.model import IdentityEvent
from privacy.scanning.lazy import LazyScanner
from services.inputs import IdentifyInput, IdentifyRequest
from tests.conftest import POLICY_DIR

RAW = "on.demand.person@gmail.com"
AT = "2026-11-30T10:00:00Z"
runner = CliRunner()


def _row(email: str, **extra: Any) -> dict[str, Any]:
    return {
        "identifiers": [{"type": "email", "value": email}],
        "source": "crm",
        "timestamp": AT,
        **extra,
    }


def _input(row: dict[str, Any]) -> IdentifyInput:
    return IdentifyInput.of(IdentifyRequest.model_validate(row))


def _misspelt_policies(tmp_path: Path) -> Path:
    """The shipped policies, with an entity no scanner reports allowed in ``contact``."""
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for policy in POLICY_DIR.glob("*.yaml"):
        (policy_dir / policy.name).write_text(policy.read_text())
    doc = yaml.safe_load((POLICY_DIR / "categories.yaml").read_text())
    doc["categories"]["contact"]["allowed_pii"] = ["SHOE_SIZE"]
    (policy_dir / "categories.yaml").write_text(yaml.safe_dump(doc))
    return policy_dir


def test_a_command_builds_the_scanner_at_its_first_scan_and_scans_as_a_server(
    tmp_path: Path,
) -> None:
    settings = Settings(env="test", data_dir=tmp_path / "data", pii_scan=True)
    plain = _input(_row("Plain.Row@GMail.com"))
    traits = _input(_row("traits.row@gmail.com", traits={"favourite_category": f"mail {RAW}"}))

    command = build_container(settings, scanner_on_demand=True)
    try:
        scanner = command.facts._scanner  # what the container holds
        assert isinstance(scanner, LazyScanner)
        command.ingest.events([plain])
        assert not scanner.built  # identifiers only: nothing scanned, nothing built
        mine = command.ingest.events([plain, traits])
        assert scanner.built
    finally:
        command.close()
    server = build_container(settings)
    try:
        assert not isinstance(server.facts._scanner, LazyScanner)
        theirs = server.ingest.events([plain, traits])
    finally:
        server.close()
    assert mine == theirs  # the trait with an address in it is redacted the same way
    redacted = mine[1]
    assert isinstance(redacted, IdentityEvent)
    assert redacted.facts
    assert RAW.encode() not in b"".join(f.payload for f in redacted.facts)


def test_a_misspelt_entity_stops_a_server_at_start_up_and_a_command_at_its_first_scan(
    tmp_path: Path,
) -> None:
    settings = Settings(
        env="test", data_dir=tmp_path / "data", policy_dir=_misspelt_policies(tmp_path)
    )
    with pytest.raises(PolicyFileError, match=r"categories.contact.allowed_pii.0"):
        build_container(settings)

    command = build_container(settings, scanner_on_demand=True)
    try:
        (event,) = command.ingest.events([_input(_row("no.traits@gmail.com"))])
        assert isinstance(event, IdentityEvent)  # nothing to scan: the command works
        traits = _input(_row("traits@gmail.com", traits={"favourite_category": "books"}))
        with pytest.raises(PolicyFileError, match=r"unknown entity type 'SHOE_SIZE'"):
            command.ingest.events([traits])
    finally:
        command.close()


@pytest.mark.parametrize("reader", ["process", "inline"])
def test_idgraph_ingest_names_the_misspelt_entity_wherever_the_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(_misspelt_policies(tmp_path)))
    monkeypatch.setenv("IDGRAPH_ENV", "development")
    rows = [_row(f"row.{i}@gmail.com") for i in range(3)]
    rows.append(_row("traits@gmail.com", traits={"favourite_category": f"mail {RAW}"}))
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    result = runner.invoke(app, ["ingest", str(path), "--reader", reader])

    assert result.exit_code == 2, result.output
    assert "cannot start" not in result.output  # started: refused at the first row to scan
    assert "categories.contact.allowed_pii.0" in result.output
    assert "SHOE_SIZE" in result.output
    assert RAW not in result.output
