"""``idgraph dsr submit --type rectification --rectified NAME``: rectification (Art. 16) from the
CLI, through the same DSR service as the API (the old CLI had no way to name what was corrected,
so every rectification was refused)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import POLICY_DIR

EMAIL = "rect.subject@privacy-shop.de"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO) -> CliRunner:
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(POLICY_DIR))
    monkeypatch.setenv("IDGRAPH_DEFAULT_REGION", "GB")
    monkeypatch.setenv("IDGRAPH_ENV", "development")
    return CliRunner()


def test_cli_submits_a_rectification_naming_the_corrected_data(runner: CliRunner) -> None:
    submitted = runner.invoke(
        app,
        [
            *("dsr", "submit", "--id", "rect-1", "--type", "rectification"),
            *("--subject", "email=-", "--rectified", "city", "--rectified", "last_name"),
        ],
        input=EMAIL + "\n",
    )
    processed = runner.invoke(app, ["dsr", "process"])
    status = runner.invoke(app, ["dsr", "status", "rect-1"])

    assert submitted.exit_code == 0, submitted.output
    stored = json.loads(submitted.stdout)
    assert (stored["type"], stored["rectified"]) == ("rectification", ["city", "last_name"])
    assert processed.exit_code == 0, processed.output
    done = json.loads(status.stdout)
    assert done["status"] == "completed"
    assert done["result"]["recipients_notified"] == 0  # nobody received this subject's data
    assert EMAIL not in submitted.output + processed.output + status.output


def test_cli_rectification_without_names_or_with_a_value_is_refused(runner: CliRunner) -> None:
    bare = runner.invoke(
        app,
        ["dsr", "submit", "--id", "rect-2", "--type", "rectification", "--subject", "email=-"],
        input=EMAIL + "\n",
    )
    valued = runner.invoke(
        app,
        [
            *("dsr", "submit", "--id", "rect-3", "--type", "rectification"),
            *("--subject", "email=-", "--rectified", "Lisbon Street 7"),
        ],
        input=EMAIL + "\n",
    )

    assert bare.exit_code == 2
    assert "#/rectified" in bare.output
    assert valued.exit_code == 2
    assert "#/rectified/0" in valued.output
    assert "Lisbon Street 7" not in valued.output
    assert EMAIL not in bare.output + valued.output
