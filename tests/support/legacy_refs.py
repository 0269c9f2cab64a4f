"""Audit references as the code before stop 33 derived them, for tests of what it left behind."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from privacy.keys.keyprovider import LocalFileKeyProvider
from privacy.keys.vault import Vault, _dek_aad, _hkdf
from privacy.keys.vault_sqlite import SqliteVaultKeyStore


def legacy_subkeys(
    vault: Vault, folder: Path, owners: Collection[str], info: bytes
) -> dict[str, bytes]:
    """What ``Vault.owner_subkeys`` (gone since stop 38: nothing but these tests used it) made
    for an audit reference before stop 33: a data key per owner, made on first use, and
    HKDF-SHA256 of it named ``info``. The vault in ``folder`` (``vault-keys.sqlite3``,
    ``kek.json``) makes the keys; they are read back and unwrapped as an auditor would."""
    wanted = sorted(set(owners))
    vault.encrypt_many([(owner, "legacy", b"") for owner in wanted])  # makes the missing keys
    keys = SqliteVaultKeyStore(folder / "vault-keys.sqlite3")
    try:
        wrapped = keys.get_many(wanted)
    finally:
        keys.close()
    provider = LocalFileKeyProvider(folder / "kek.json")
    return {o: _hkdf(provider.unwrap(wrapped[o], _dek_aad(o)), info) for o in wanted}
