"""``Vault.shredded_owners``: ingest asks it about every found node of a batch (shredded anchors
are refused, README "Shredded anchors"). Owners found not shredded are remembered, valid for the
key file's shred generation: a shred by any process, committed before, during or after a check,
is always seen by the next call."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path

import pytest

from identity.model import new_node_id
from privacy.keys.keyprovider import LocalFileKeyProvider
from privacy.keys.vault import Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore


class ProbedKeyStore(SqliteVaultKeyStore):
    """The real key store; records which owners each ``shredded`` call probes and can run a
    hook right after the shred generation is read or right after a probe."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.probed: list[list[str]] = []
        self.after_generation: Callable[[], None] | None = None
        self.after_probe: Callable[[], None] | None = None

    def shred_generation(self) -> int:
        generation = super().shred_generation()
        hook, self.after_generation = self.after_generation, None
        if hook is not None:
            hook()
        return generation

    def shredded(self, owners: Collection[str], shred_refs: Mapping[str, str]) -> set[str]:
        self.probed.append(sorted(owners))
        found = super().shredded(owners, shred_refs)
        hook, self.after_probe = self.after_probe, None
        if hook is not None:
            hook()
        return found


@pytest.fixture
def key_store(tmp_path: Path) -> Iterator[ProbedKeyStore]:
    store = ProbedKeyStore(tmp_path / "vault-keys.sqlite3")
    yield store
    store.close()


@pytest.fixture
def owners(key_store: ProbedKeyStore, kek_path: Path) -> list[str]:
    """Three owners with keys, in a key file that has shredded someone else (so each check
    probes per owner: a key file that never shredded anything answers from one row)."""
    vault = Vault(key_store, LocalFileKeyProvider(kek_path))
    made = [new_node_id() for _ in range(4)]
    vault.encrypt_many([(owner, "email", b"v") for owner in made])
    vault.shred(made[3:])
    return made[:3]


def _other_process_shreds(key_store: ProbedKeyStore, kek_path: Path, owner: str) -> None:
    # Another Vault on its own connection to the same file: another process's shred.
    other = SqliteVaultKeyStore(key_store.path)
    try:
        assert Vault(other, LocalFileKeyProvider(kek_path)).shred([owner]) == 1
    finally:
        other.close()


def test_owners_seen_not_shredded_are_not_probed_again(
    key_store: ProbedKeyStore, kek_path: Path, owners: list[str]
) -> None:
    ann, bob, carl = owners
    vault = Vault(key_store, LocalFileKeyProvider(kek_path))

    assert vault.shredded_owners([ann, bob]) == set()
    assert vault.shredded_owners([bob, ann]) == set()
    assert vault.shredded_owners([ann, carl]) == set()

    assert key_store.probed == [sorted([ann, bob]), [carl]]


def test_a_shred_by_another_process_is_seen_by_the_next_call(
    key_store: ProbedKeyStore, kek_path: Path, owners: list[str]
) -> None:
    ann, bob, _ = owners
    vault = Vault(key_store, LocalFileKeyProvider(kek_path))
    assert vault.shredded_owners([ann, bob]) == set()  # both remembered as not shredded

    _other_process_shreds(key_store, kek_path, ann)

    assert vault.shredded_owners([ann, bob]) == {ann}
    assert vault.shredded_owners([ann]) == {ann}  # a shredded owner is never remembered


def test_a_shred_committed_between_the_generation_read_and_the_probe_is_found(
    key_store: ProbedKeyStore, kek_path: Path, owners: list[str]
) -> None:
    ann, bob, _ = owners
    vault = Vault(key_store, LocalFileKeyProvider(kek_path))
    key_store.after_generation = lambda: _other_process_shreds(key_store, kek_path, ann)

    assert vault.shredded_owners([ann, bob]) == {ann}
    assert vault.shredded_owners([ann, bob]) == {ann}


def test_a_shred_committed_after_the_probe_is_found_by_the_next_call(
    key_store: ProbedKeyStore, kek_path: Path, owners: list[str]
) -> None:
    # The probe said "not shredded" and the answer is remembered under the generation read
    # before it; the shred right after bumps the generation, so the next call probes again.
    ann, bob, _ = owners
    vault = Vault(key_store, LocalFileKeyProvider(kek_path))
    key_store.after_probe = lambda: _other_process_shreds(key_store, kek_path, ann)

    assert vault.shredded_owners([ann, bob]) == set()
    assert vault.shredded_owners([ann, bob]) == {ann}
    assert key_store.probed[-1] == sorted([ann, bob])


def test_a_shred_by_this_vault_is_seen_by_the_next_call(
    key_store: ProbedKeyStore, kek_path: Path, owners: list[str]
) -> None:
    ann, bob, _ = owners
    vault = Vault(key_store, LocalFileKeyProvider(kek_path))
    assert vault.shredded_owners([ann, bob]) == set()

    vault.shred([bob])

    assert vault.shredded_owners([ann, bob]) == {bob}
