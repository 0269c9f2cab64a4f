"""Keyed hashing and the hash-key file."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrap.container import load_keyring
from bootstrap.settings import Settings
from identity.errors import ConfigurationError
from identity.hashing import HashKey, HmacSha256, Keyring
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


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=0, max_size=200), message=st.binary(max_size=300))
def test_precomputed_pads_give_the_stdlib_hmac_when_any_key_and_message(
    key: bytes, message: bytes
) -> None:
    # Keys shorter than, equal to and longer than SHA-256's 64-byte block (hashed first).
    assert HmacSha256(key).digest(message) == hmac.digest(key, message, hashlib.sha256)


def test_precomputed_mac_is_reusable_when_digesting_many_messages() -> None:
    mac = HmacSha256(b"k" * 32)
    first = mac.digest(b"a")
    mac.digest(b"b" * 1000)
    assert mac.digest(b"a") == first == hmac.digest(b"k" * 32, b"a", hashlib.sha256)


@settings(max_examples=200, deadline=None)
@given(
    secrets_=st.lists(
        st.binary(min_size=32, max_size=80).filter(lambda b: len(set(b)) >= 8),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    kind=st.sampled_from(["email", "phone", "customer_id", "cookie_id"]),
    # No lone surrogates: normalization refuses them before anything is hashed.
    value=st.text(st.characters(codec="utf-8"), max_size=120),
    primary=st.integers(min_value=0, max_value=3),
)
def test_keyring_digests_are_the_plain_hmac_when_any_key_of_a_rotated_ring(
    secrets_: list[bytes], kind: str, value: str, primary: int
) -> None:
    keys = [HashKey(f"k{i}", secret) for i, secret in enumerate(secrets_)]
    primary_id = keys[primary % len(keys)].key_id
    ring = Keyring(keys, primary_id)
    identifier = NormalizedIdentifier(kind, value)
    message = f"{kind}:{value}".encode()

    def plain(key: HashKey) -> bytes:
        return hmac.new(key.secret, message, hashlib.sha256).digest()

    candidates = ring.candidates(identifier)
    assert [c.key_id for c in candidates] == list(ring.key_ids)
    assert candidates[0].key_id == primary_id
    by_id = {key.key_id: key for key in keys}
    for candidate in candidates:
        assert candidate.digest == plain(by_id[candidate.key_id])
        assert ring.hash(identifier, candidate.key_id) == candidate
    assert ring.hash(identifier) == candidates[0]
    # Rotation: a new primary added, the old digests still among the candidates.
    rotated = ring.with_keys({"k-new": secrets.token_bytes(32)}, "k-new")
    assert rotated.candidates(identifier)[1:] == tuple(
        sorted(candidates, key=lambda c: rotated.key_ids.index(c.key_id))
    )
