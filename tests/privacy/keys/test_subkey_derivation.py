"""The vault's subkeys (``Vault.reference_key``, and the per-owner ones of audit references made
before stop 33) are HKDF-SHA256 without a salt, 32 bytes (RFC 5869). Since stop 32 they are computed
with two HMACs instead of cryptography's ``HKDF`` object (less than half the CPU, for the ~25k
per-person audit reference keys of a cold 1M audience): the bytes must be exactly what
cryptography's HKDF derives, or every audit reference made before would change and an access request
would no longer find the person's old entries.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privacy.audit_refs import KEY_INFO, VaultPersonRefKeys
from privacy.auditing.log import PERSON_REF_INFO, SqliteAuditLog, person_ref
from privacy.keys.keyprovider import LocalFileKeyProvider
from privacy.keys.vault import Vault, _dek_aad, _hkdf
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from tests.support.legacy_refs import legacy_subkeys


def _reference_hkdf(root: bytes, info: bytes) -> bytes:
    """The derivation every subkey was made with until stop 32 (cryptography's HKDF)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root)


def test_subkey_is_the_rfc_5869_okm_when_derived_from_the_test_vector_without_salt() -> None:
    # RFC 5869 appendix A.3 (SHA-256, no salt, no info): the first 32 bytes of its OKM.
    okm = bytes.fromhex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d")

    assert _hkdf(b"\x0b" * 22, b"") == okm


@pytest.mark.parametrize(
    "info", [b"x", KEY_INFO, PERSON_REF_INFO, b"i" * 64, b"i" * 200, bytes(range(256))]
)
@pytest.mark.parametrize("root_size", [16, 32, 64, 65, 100])
def test_subkey_equals_cryptographys_hkdf_when_derived_from_any_root_and_info(
    info: bytes, root_size: int
) -> None:
    for _ in range(20):
        root = os.urandom(root_size)
        assert _hkdf(root, info) == _reference_hkdf(root, info)


def test_old_audit_references_are_still_made_when_the_persons_keys_exist(
    tmp_path: Path, vault: Vault
) -> None:
    # Before stop 33 a person's reference was HMAC(HKDF(its data key, KEY_INFO), id), the data
    # key made on first use (tests.support.legacy_refs). Recomputed here from the key file with
    # cryptography's HKDF (as the code before stop 32 made it), it must equal the reference a
    # freshly opened log and vault hand out now (and store, see tests/privacy/auditing/
    # test_stored_refs.py).
    persons = [f"p_{i:04d}beef{i:04d}" for i in range(30)]
    refs = VaultPersonRefKeys(vault)
    owners = {p: refs.owners([p])[0] for p in persons}
    legacy_subkeys(vault, tmp_path, owners.values(), KEY_INFO)  # the keys the old code made
    keys = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    provider = LocalFileKeyProvider(tmp_path / "kek.json")
    fresh = Vault(keys, provider)
    wrapped = keys.get_many(owners.values())
    again = SqliteAuditLog(
        tmp_path / "audit.sqlite3",
        person_ref_key=fresh.reference_key(PERSON_REF_INFO),
        person_keys=VaultPersonRefKeys(fresh),
    )
    try:
        for person in persons:
            owner = owners[person]
            data_key = provider.unwrap(wrapped[owner], _dek_aad(owner))
            expected = person_ref(person, _reference_hkdf(data_key, KEY_INFO))
            assert again.person_ref(person, create=False) == expected
    finally:
        again.close()
        keys.close()
