"""Keyed hashing and the hash-key file."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from bootstrap.container import load_keyring
from bootstrap.settings import Settings
from identity.errors import ConfigurationError
from identity.hashing import HashKey, Keyring
from identity.identifiers import NormalizedIdentifier
from privacy.keys.hash_keys import create_key_file, read_key_file, rotate_key_file

EMAIL = NormalizedIdentifier("email", "ann@shop.de")


def test_hash_is_stable_for_the_same_key_id() -> None:
    secret = secrets.token_bytes(32)
    first = Keyring([HashKey("k1", secret)], "k1").hash(EMAIL)
    second = Keyring([HashKey("k1", secret)], "k1").hash(EMAIL)
    assert first == second
    assert first.key_id == "k1"
    assert len(first.digest) == 32


def test_hash_differs_across_keys_and_types() -> None:
    ring = Keyring(
        [HashKey("k1", secrets.token_bytes(32)), HashKey("k2", secrets.token_bytes(32))], "k1"
    )
    assert ring.hash(EMAIL, "k1").digest != ring.hash(EMAIL, "k2").digest
    same_value_other_type = NormalizedIdentifier("customer_id", "ann@shop.de")
    assert ring.hash(EMAIL).digest != ring.hash(same_value_other_type).digest


def test_candidates_cover_every_key_primary_first() -> None:
    ring = Keyring(
        [HashKey("old", secrets.token_bytes(32)), HashKey("new", secrets.token_bytes(32))], "new"
    )
    assert [c.key_id for c in ring.candidates(EMAIL)] == ["new", "old"]


@pytest.mark.parametrize("secret", [b"short", b"a" * 32, bytes(32)])
def test_weak_or_placeholder_keys_are_refused(secret: bytes) -> None:
    with pytest.raises(ConfigurationError):
        HashKey("k1", secret)


def test_key_repr_never_shows_the_secret() -> None:
    secret = secrets.token_bytes(32)
    assert secret.hex() not in repr(HashKey("k1", secret))
    assert str(secret) not in repr(HashKey("k1", secret))


def test_key_file_is_created_with_mode_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys = create_key_file(path, origin="operator")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_key_file(path).primary == keys.primary
    with pytest.raises(ConfigurationError, match="already exists"):
        create_key_file(path, origin="operator")


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    create_key_file(path, origin="operator")
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        read_key_file(path)


def test_rotation_adds_a_primary_and_keeps_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = create_key_file(path, origin="generated")
    rotated = rotate_key_file(path)
    assert rotated.primary != first.primary
    assert {e.key_id for e in rotated.entries} == {first.primary, rotated.primary}
    assert rotated.primary_origin == "operator"


def test_development_generates_a_key_when_missing(tmp_path: Path) -> None:
    settings = Settings(env="development", data_dir=tmp_path)
    ring = load_keyring(settings)
    assert (tmp_path / "hash-keys.json").exists()
    assert load_keyring(settings).primary_key_id == ring.primary_key_id


def test_production_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no hash key"):
        load_keyring(Settings(env="production", data_dir=tmp_path))
    assert not (tmp_path / "hash-keys.json").exists()


def test_production_refuses_a_generated_key(tmp_path: Path) -> None:
    create_key_file(tmp_path / "hash-keys.json", origin="generated")
    with pytest.raises(ConfigurationError, match="generated"):
        load_keyring(Settings(env="production", data_dir=tmp_path))


def test_production_accepts_an_operator_key_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.json"
    keys = create_key_file(path, origin="operator")
    ring = load_keyring(Settings(env="production", data_dir=tmp_path, hash_keys=path.read_text()))
    assert ring.primary_key_id == keys.primary


def test_malformed_key_document_names_the_problem(tmp_path: Path) -> None:
    document = json.dumps({"format": "idgraph-hash-keys/1", "primary": "x", "keys": []})
    with pytest.raises(ConfigurationError, match="non-empty list"):
        load_keyring(Settings(env="test", data_dir=tmp_path, hash_keys=document))


def test_production_refuses_placeholder_neo4j_password() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(env="production", neo4j_password="changeme")
