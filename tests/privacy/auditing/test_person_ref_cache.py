"""The per-person reference source remembers the references it read or stored
(``VaultPersonRefKeys``), and the audit log the shared-key ones it made: a warm audience asks for
the same ~25k references page after page. The cache must never change an answer: the
references are those made without it, and after an erasure (in this process or another one on
the same key file) an erased person gets the shared-key reference, never its old one.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pytest

import privacy.auditing.log as audit_log
from privacy.audit_refs import VaultPersonRefKeys
from privacy.auditing.log import PERSON_REF_INFO, SqliteAuditLog, person_ref
from privacy.keys.keyprovider import LocalFileKeyProvider
from privacy.keys.vault import Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore

PERSONS = [f"p_{i:04d}cafe{i:04d}" for i in range(40)]


def _log(path: Path, vault: Vault, cache: int) -> SqliteAuditLog:
    return SqliteAuditLog(
        path,
        person_ref_key=vault.reference_key(PERSON_REF_INFO),
        person_keys=VaultPersonRefKeys(vault, owner_cache_size=cache),
        ref_cache_size=cache,
    )


@pytest.fixture
def log(tmp_path: Path, vault: Vault) -> Iterator[SqliteAuditLog]:
    opened = _log(tmp_path / "audit.sqlite3", vault, 1_000)
    yield opened
    opened.close()


@pytest.fixture
def other_vault(tmp_path: Path, vault: Vault) -> Iterator[Vault]:
    """A second vault on the same key file and KEK: what another process sees."""
    vault.reference_key(PERSON_REF_INFO)  # the key file's reference root exists
    keys = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    yield Vault(keys, LocalFileKeyProvider(tmp_path / "kek.json"))
    keys.close()


def test_person_refs_are_those_made_without_a_cache_when_asked_again(
    tmp_path: Path, vault: Vault, log: SqliteAuditLog
) -> None:
    uncached = _log(tmp_path / "plain.sqlite3", vault, 0)
    first = log.person_refs(PERSONS)
    again = log.person_refs(list(reversed(PERSONS)))
    unknown = log.person_refs(["p_nobody0000"], create=False)

    assert first == again == uncached.person_refs(PERSONS)
    assert len(set(first.values())) == len(PERSONS)
    shared = vault.reference_key(PERSON_REF_INFO)
    assert unknown == {"p_nobody0000": person_ref("p_nobody0000", shared)}
    uncached.close()


def test_person_refs_ask_the_key_file_once_a_person_when_the_persons_were_asked_before(
    vault: Vault, log: SqliteAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = vault.owner_refs

    def counted(
        owners: Collection[str], info: bytes, make: Callable[[str, bytes | None], str], **kw: bool
    ) -> dict[str, str]:
        asked.extend(owners)
        return real(owners, info, make, **kw)  # the real key file, counted

    monkeypatch.setattr(vault, "owner_refs", counted)
    log.person_refs(PERSONS[:30])
    log.person_refs(PERSONS)

    assert len(asked) == len(set(asked)) == len(PERSONS)  # each once: 30, then the 10 new ones


def test_an_erased_person_gets_the_shared_reference_when_it_was_remembered_before(
    vault: Vault, log: SqliteAuditLog
) -> None:
    before = log.person_refs(PERSONS)
    vault.shred(log.person_ref_owners(PERSONS[:1]))

    after = log.person_refs(PERSONS)

    shared = person_ref(PERSONS[0], vault.reference_key(PERSON_REF_INFO))
    assert after[PERSONS[0]] == shared != before[PERSONS[0]]
    assert {p: after[p] for p in PERSONS[1:]} == {p: before[p] for p in PERSONS[1:]}


def test_an_erased_person_gets_the_shared_reference_when_another_process_shredded_it(
    vault: Vault, other_vault: Vault, log: SqliteAuditLog, tmp_path: Path
) -> None:
    before = log.person_refs(PERSONS)
    # The erasure runs elsewhere: this log's caches never heard of it.
    elsewhere = _log(tmp_path / "elsewhere.sqlite3", other_vault, 0)
    other_vault.shred(elsewhere.person_ref_owners(PERSONS[:2]))
    elsewhere.close()

    after = log.person_refs(PERSONS)

    shared_key = vault.reference_key(PERSON_REF_INFO)
    assert [after[p] for p in PERSONS[:2]] == [person_ref(p, shared_key) for p in PERSONS[:2]]
    assert after[PERSONS[0]] != before[PERSONS[0]]
    assert {p: after[p] for p in PERSONS[2:]} == {p: before[p] for p in PERSONS[2:]}


def test_person_refs_stay_right_when_the_cache_is_smaller_than_the_persons(
    tmp_path: Path, vault: Vault
) -> None:
    small = _log(tmp_path / "small.sqlite3", vault, 7)
    uncached = _log(tmp_path / "plain.sqlite3", vault, 0)

    for _ in range(2):
        assert small.person_refs(PERSONS) == uncached.person_refs(PERSONS)
    assert len(small._person_keys._refs) == 7  # type: ignore[union-attr]  # bounded
    small.close()
    uncached.close()


def test_remembered_references_leave_the_garbage_collector_alone_when_kept(
    log: SqliteAuditLog,
) -> None:
    # A cold 1M audience remembers ~25k references: as AuditRef instances (a Python class, so
    # tracked by the cyclic collector) they were ~25k long-lived objects every full collection
    # walked. Kept as plain str, and handed out as plain str too (since stop 45: a list of them
    # goes into details as one AuditRefs, typed once).
    made = log.person_refs(PERSONS)
    again = log.person_refs(PERSONS)
    gc.collect()

    assert all(type(ref) is str for ref in (*made.values(), *again.values()))
    assert all(audit_log.AuditRef(ref) == ref for ref in made.values())
    assert made == again
    remembered = list(log._person_keys._refs.get_many(PERSONS).values())  # type: ignore[union-attr]
    assert len(remembered) == len(PERSONS)
    assert all(type(entry) is str for entry in remembered)
    assert not any(gc.is_tracked(entry) for entry in remembered)
