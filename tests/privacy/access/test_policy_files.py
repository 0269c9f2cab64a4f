"""Policy files are validated at startup; an invalid file names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from api.app import create_app
from bootstrap.settings import Settings
from identity.errors import PolicyFileError
from identity.policy import load_identity_policy
from privacy.access.purposes import load_purposes_policy
from privacy.scanning.facts import load_facts_policy
from tests.conftest import POLICY_DIR


def _write(tmp_path: Path, mutate: object) -> Path:
    doc = yaml.safe_load((POLICY_DIR / "identity.yaml").read_text())
    assert callable(mutate)
    mutate(doc)
    path = tmp_path / "identity.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


CASES = [
    (
        "unknown normalizer",
        lambda d: d["types"]["email"].update(normalizer="magic"),
        "types.email.normalizer",
    ),
    (
        "negative limit",
        lambda d: d["types"]["phone"].update(max_per_person=0),
        "types.phone.max_per_person",
    ),
    (
        "typo in a key",
        lambda d: d["types"]["idfa"].update(max_per_persn=3),
        "types.idfa.max_per_persn",
    ),
    ("missing priority", lambda d: d["types"]["gaid"].pop("priority"), "types.gaid.priority"),
    (
        "bad type name",
        lambda d: d["types"].update({"Bad Name": d["types"]["email"]}),
        "types.Bad Name",
    ),
    (
        "bad regex",
        lambda d: d["types"]["email"].update(blocked_patterns=["(unclosed"]),
        "types.email.blocked_patterns",
    ),
    (
        "unnormalizable blocked value",
        lambda d: d["types"]["idfa"].update(blocked_values=["zero"]),
        "types.idfa.blocked_values.0",
    ),
    ("wrong version", lambda d: d.update(version=7), "version"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), CASES, ids=[c[0] for c in CASES])
def test_invalid_identity_policy_names_file_and_field(
    tmp_path: Path, case: str, mutate: object, field: str
) -> None:
    path = _write(tmp_path, mutate)
    with pytest.raises(PolicyFileError) as caught:
        load_identity_policy(path)
    assert caught.value.file == str(path), case
    assert caught.value.field.startswith(field), caught.value.field
    assert str(path) in str(caught.value)


def test_unparseable_yaml_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "identity.yaml"
    path.write_text("types: [unclosed")
    with pytest.raises(PolicyFileError, match="not valid YAML"):
        load_identity_policy(path)


def test_the_app_refuses_to_start_with_an_invalid_policy(tmp_path: Path) -> None:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    _write(policy_dir, lambda d: d["types"]["email"].update(priority="high"))
    settings = Settings(env="test", data_dir=tmp_path / "data", policy_dir=policy_dir)
    with pytest.raises(PolicyFileError, match=r"identity.yaml: types.email.priority"):
        create_app(settings)


def test_the_shipped_policy_is_valid() -> None:
    policy = load_identity_policy(POLICY_DIR / "identity.yaml")
    assert policy.types["customer_id"].max_per_person == 1
    assert policy.type_names[0] == "customer_id"


def _write_categories(tmp_path: Path, mutate: object) -> Path:
    doc = yaml.safe_load((POLICY_DIR / "categories.yaml").read_text())
    assert callable(mutate)
    mutate(doc)
    path = tmp_path / "categories.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


CATEGORY_CASES = [
    (
        "unknown action",
        lambda d: d["categories"]["location"].update(on_pii="shrug"),
        "categories.location.on_pii",
    ),
    (
        "unknown category of an attribute",
        lambda d: d["attributes"]["city"].update(category="geo"),
        "attributes.city.category",
    ),
    (
        "unknown category of an event",
        lambda d: d["events"]["purchase"].update(category="sales"),
        "events.purchase.category",
    ),
    (
        "unknown value type",
        lambda d: d["attributes"]["city"].update(type="text"),
        "attributes.city.type",
    ),
    (
        "typo in a key",
        lambda d: d["categories"]["contact"].update(alowed_pii=[]),
        "categories.contact.alowed_pii",
    ),
    (
        "unknown-attribute action",
        lambda d: d.update(unknown_attributes="ignore"),
        "unknown_attributes",
    ),
    (
        "bad scanner threshold",
        lambda d: d["scanner"].update(default_threshold=3),
        "scanner.default_threshold",
    ),
]


@pytest.mark.parametrize(
    ("case", "mutate", "field"), CATEGORY_CASES, ids=[c[0] for c in CATEGORY_CASES]
)
def test_invalid_categories_policy_names_file_and_field(
    tmp_path: Path, case: str, mutate: object, field: str
) -> None:
    path = _write_categories(tmp_path, mutate)
    with pytest.raises(PolicyFileError) as caught:
        load_facts_policy(path)
    assert caught.value.file == str(path), case
    assert caught.value.field.startswith(field), caught.value.field


def test_the_app_refuses_an_allowed_pii_entity_the_scanner_cannot_report(tmp_path: Path) -> None:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for name in ("identity.yaml", "purposes.yaml"):
        (policy_dir / name).write_text((POLICY_DIR / name).read_text())
    _write_categories(
        policy_dir, lambda d: d["categories"]["contact"].update(allowed_pii=["SHOE_SIZE"])
    )
    settings = Settings(env="test", data_dir=tmp_path / "data", policy_dir=policy_dir)
    with pytest.raises(PolicyFileError, match=r"categories.yaml: categories.contact.allowed_pii.0"):
        create_app(settings)


def _write_purposes(tmp_path: Path, mutate: object) -> Path:
    doc = yaml.safe_load((POLICY_DIR / "purposes.yaml").read_text())
    assert callable(mutate)
    mutate(doc)
    path = tmp_path / "purposes.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


PURPOSE_CASES = [
    (
        "unknown sensitive-data effect",
        lambda d: d["purposes"]["ad_targeting"].update(us_sensitive_data="grant"),
        "purposes.ad_targeting.us_sensitive_data",
    ),
    (
        "unknown known-child effect",
        lambda d: d["purposes"]["model_training"].update(us_known_child=True),
        "purposes.model_training.us_known_child",
    ),
    (
        "known-child refusal on a legal-obligation purpose",
        lambda d: d["purposes"]["legal_claims"].update(us_known_child="deny"),
        "purposes.legal_claims",
    ),
]


@pytest.mark.parametrize(
    ("case", "mutate", "field"), PURPOSE_CASES, ids=[c[0] for c in PURPOSE_CASES]
)
def test_invalid_us_refusal_mapping_names_file_and_field_when_loading_purposes(
    tmp_path: Path, case: str, mutate: object, field: str
) -> None:
    path = _write_purposes(tmp_path, mutate)
    with pytest.raises(PolicyFileError) as caught:
        load_purposes_policy(path)
    assert caught.value.file == str(path), case
    assert caught.value.field.startswith(field), caught.value.field
    if "legal" in case:
        assert "us_known_child" in str(caught.value)
