"""Start-up checks between the categories policy and the PII scanner it configures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bootstrap.container import build_container
from bootstrap.settings import Settings
from identity.errors import PolicyFileError
from tests.conftest import POLICY_DIR


def _policies(tmp_path: Path, *, ner: bool, extra_allowed: str | None = None) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    path = target / "categories.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["scanner"]["ner"] = ner
    if extra_allowed is not None:
        doc["categories"]["contact"]["allowed_pii"].append(extra_allowed)
    path.write_text(yaml.safe_dump(doc))
    return target


def _settings(tmp_path: Path, policy_dir: Path) -> Settings:
    return Settings(env="test", data_dir=tmp_path / "data", policy_dir=policy_dir)


def test_the_model_off_starts_with_the_shipped_allowed_pii(tmp_path: Path) -> None:
    # The shipped policy allows LOCATION and ORGANIZATION, which only the model reports;
    # switching the model off must not stop start-up over them.
    policies = _policies(tmp_path, ner=False)
    assert any(
        "LOCATION" in c.get("allowed_pii", [])
        for c in yaml.safe_load((policies / "categories.yaml").read_text())["categories"].values()
    )
    container = build_container(_settings(tmp_path, policies))
    container.close()


def test_a_typo_in_allowed_pii_still_stops_start_up(tmp_path: Path) -> None:
    policies = _policies(tmp_path, ner=False, extra_allowed="EMAIL_ADRESS")
    with pytest.raises(PolicyFileError, match="EMAIL_ADRESS"):
        build_container(_settings(tmp_path, policies))
