"""Per-person audit references stored in the vault key file (version 2, stop 33).

Since stop 33 a person's audit reference is random and stored in the key file (``stored_refs``)
instead of derived, on every cold read, from a per-person data key (lookup, unwrap, HKDF, HMAC).
What must hold, each proven here on the real key file, vault and audit log:

* a new person's reference needs no data key, and is durable before it is handed out;
* a person whose reference was derived before (version 1) keeps it, so an access request still
  finds the entries written before the change, and the reference is then stored;
* an erasure deletes the stored reference with the keys: no file (key file, its WAL, the audit
  log) holds anything from which the reference could be recomputed for the erased id;
* a stored row altered or moved to another owner is refused, not used;
* a page of new owners is not looked up one by one for version-1 data keys when none can exist
  (one probe of the owner range: stop 35).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pytest

from privacy.audit_refs import KEY_INFO, VaultPersonRefKeys
from privacy.auditing.log import PERSON_REF_INFO, AuditDraft, SqliteAuditLog, person_ref
from privacy.keys.keyprovider import LocalFileKeyProvider, WrappedKey
from privacy.keys.vault import InvalidVaultItemError, TamperedDataKeyError, Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from tests.support.legacy_refs import legacy_subkeys

PERSONS = [f"p_{i:04d}f00d{i:04d}" for i in range(25)]


def _log(path: Path, vault: Vault) -> SqliteAuditLog:
    return SqliteAuditLog(
        path,
        person_ref_key=vault.reference_key(PERSON_REF_INFO),
        person_keys=VaultPersonRefKeys(vault),
    )


@pytest.fixture
def key_file(tmp_path: Path, vault: Vault) -> Iterator[SqliteVaultKeyStore]:
    """A second connection to the test vault's key file (to look at it, as an auditor would)."""
    vault.reference_key(PERSON_REF_INFO)  # the key file's reference root exists
    keys = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    yield keys
    keys.close()


def _fresh_vault(tmp_path: Path) -> tuple[SqliteVaultKeyStore, Vault]:
    """Another process's vault on the same key file and KEK (empty caches)."""
    keys = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    return keys, Vault(keys, LocalFileKeyProvider(tmp_path / "kek.json"))


def _raw(tmp_path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(tmp_path / "vault-keys.sqlite3", isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_a_new_persons_reference_is_stored_without_a_data_key_when_first_asked_for(
    tmp_path: Path, vault: Vault, key_file: SqliteVaultKeyStore
) -> None:
    log = _log(tmp_path / "audit.sqlite3", vault)
    made = log.person_refs(PERSONS)
    log.close()
    owners = {p: VaultPersonRefKeys(vault).owners([p])[0] for p in PERSONS}

    # No per-person data key was made (the cold path no longer unwraps or derives anything)...
    assert key_file.get_many(owners.values()) == {}
    # ...the references are in the key file (durable: read by another connection), random
    # (no two alike, none the shared-key one) and what another process hands out.
    stored = key_file.get_refs(owners.values())
    assert {p: stored[owners[p]][0] for p in PERSONS} == made
    assert len(set(made.values())) == len(PERSONS)
    shared = vault.reference_key(PERSON_REF_INFO)
    assert all(made[p] != person_ref(p, shared) for p in PERSONS)
    keys, other = _fresh_vault(tmp_path)
    elsewhere = _log(tmp_path / "elsewhere.sqlite3", other)
    try:
        assert elsewhere.person_refs(PERSONS, create=False) == made
    finally:
        elsewhere.close()
        keys.close()


def test_an_old_reference_is_kept_and_stored_so_old_entries_are_found_when_first_read_after(
    tmp_path: Path, vault: Vault, key_file: SqliteVaultKeyStore
) -> None:
    # Written by the code before stop 33: a data key per person (made on first use), the
    # reference derived from it, the entry recorded under that reference.
    source = VaultPersonRefKeys(vault)
    owners = {p: source.owners([p])[0] for p in PERSONS}
    subkeys = legacy_subkeys(vault, tmp_path, owners.values(), KEY_INFO)
    old = {p: person_ref(p, subkeys[owners[p]]) for p in PERSONS}
    before = SqliteAuditLog(tmp_path / "audit.sqlite3", person_ref_key=b"s" * 32)
    before.append(
        [
            AuditDraft("key_ops1", "read.profile", "ad_targeting", old[p], "allow", "ok")
            for p in PERSONS
        ]
    )
    before.close()

    keys, other = _fresh_vault(tmp_path)
    log = _log(tmp_path / "audit.sqlite3", other)
    try:
        now = log.person_refs(PERSONS, create=False)
        assert now == old
        # An access request finds the entry written before the change.
        assert [e.person_id for e in log.mentioning(now[PERSONS[3]])] == [old[PERSONS[3]]]
        # And the reference is stored now: the next cold read is one lookup.
        stored = key_file.get_refs(owners.values())
        assert {p: stored[owners[p]][0] for p in PERSONS} == old
    finally:
        log.close()
        keys.close()


@pytest.mark.parametrize("version", ["stored", "derived before"])
def test_an_erased_persons_reference_is_in_no_file_and_never_made_again_when_shredded(
    tmp_path: Path, vault: Vault, key_file: SqliteVaultKeyStore, version: str
) -> None:
    log = _log(tmp_path / "audit.sqlite3", vault)
    person = PERSONS[0]
    if version == "derived before":
        owner = VaultPersonRefKeys(vault).owners([person])[0]
        legacy_subkeys(vault, tmp_path, [owner], KEY_INFO)
    ref = log.person_ref(person)
    log.append_about(
        person, [AuditDraft("key_ops1", "read.profile", "ad_targeting", None, "allow", "ok")]
    )
    owners = log.person_ref_owners([person])

    assert vault.shred(owners) == 1

    # Nothing of the person is left in the key file or its WAL (secure_delete, WAL truncated):
    # neither the reference nor a key it could be derived from, nor the owner.
    assert key_file.get_refs(owners) == {}
    assert key_file.get_many(owners) == {}
    for path in tmp_path.glob("vault-keys.sqlite3*"):
        data = path.read_bytes()
        assert ref.encode() not in data, path.name
        assert owners[0].encode() not in data, path.name
    # The log keeps the entry (under the reference), and hands out the shared-key reference
    # for the id from now on, in this process and in a fresh one: never the old one again.
    assert [e.person_id for e in log.entries()] == [ref]
    shared = person_ref(person, vault.reference_key(PERSON_REF_INFO))
    assert log.person_ref(person) == shared
    keys, other = _fresh_vault(tmp_path)
    try:
        assert VaultPersonRefKeys(other).refs([person]) == {}
        assert key_file.get_refs(owners) == {}
    finally:
        keys.close()
        log.close()


def test_a_stored_reference_is_refused_when_altered_or_moved_to_another_owner(
    tmp_path: Path, vault: Vault, key_file: SqliteVaultKeyStore
) -> None:
    log = _log(tmp_path / "audit.sqlite3", vault)
    log.person_refs(PERSONS[:2])
    log.close()
    first, second = VaultPersonRefKeys(vault).owners(PERSONS[:2])
    # Moved: the first owner's row now carries the second owner's reference and tag.
    _raw(
        tmp_path,
        "UPDATE stored_refs SET (ref, tag) = (SELECT ref, tag FROM stored_refs WHERE owner = ?) "
        "WHERE owner = ?",
        (second, first),
    )
    keys, other = _fresh_vault(tmp_path)
    try:
        with pytest.raises(TamperedDataKeyError):
            VaultPersonRefKeys(other).refs(PERSONS[:2])
        # Altered: a reference of the attacker's choosing with the old tag.
        _raw(tmp_path, "UPDATE stored_refs SET ref = ? WHERE owner = ?", ("r_" + "0" * 24, second))
        with pytest.raises(TamperedDataKeyError):
            VaultPersonRefKeys(other).refs([PERSONS[1]])
    finally:
        keys.close()


class _InterleavedKeyStore(SqliteVaultKeyStore):
    """The real key file; right after this process looked its references up (and found none),
    another process acts on the same file (``between``), before this one stores its own."""

    between: Callable[[], None] | None = None

    def refs_and_keys(
        self, owners: Collection[str]
    ) -> tuple[dict[str, tuple[str, bytes]], dict[str, WrappedKey]]:
        found = super().refs_and_keys(owners)
        act, self.between = self.between, None
        if act is not None:
            act()
        return found


def _racers(
    tmp_path: Path, vault: Vault
) -> tuple[_InterleavedKeyStore, VaultPersonRefKeys, VaultPersonRefKeys]:
    """Two processes' references on one key file: ``racing`` on a key store that runs
    ``keys.between`` right after its lookup, ``other`` on the test's own vault."""
    keys = _InterleavedKeyStore(tmp_path / "vault-keys.sqlite3")
    racing = VaultPersonRefKeys(Vault(keys, LocalFileKeyProvider(tmp_path / "kek.json")))
    return keys, racing, VaultPersonRefKeys(vault)


@pytest.mark.parametrize("meanwhile", ["stored its own", "erased the person"])
def test_a_reference_made_by_two_processes_at_once_is_the_stored_one_when_they_race(
    tmp_path: Path, vault: Vault, key_file: SqliteVaultKeyStore, meanwhile: str
) -> None:
    person = PERSONS[0]
    keys, racing, other = _racers(tmp_path, vault)
    winner: dict[str, str] = {}

    def act() -> None:
        if meanwhile == "stored its own":
            winner.update(other.refs([person]))
        else:
            other.refs([person])
            vault.shred(other.owners([person]))

    keys.between = act
    try:
        got = racing.refs([person])
    finally:
        keys.close()

    stored = key_file.get_refs(other.owners([person]))
    if meanwhile == "stored its own":
        # The first stored reference wins, everywhere: one person, one reference.
        assert got == winner
        assert [ref for ref, _ in stored.values()] == [winner[person]]
    else:
        # Erased meanwhile: no reference is stored for it again, none is handed out.
        assert got == {}
        assert stored == {}


def test_a_reference_another_process_stored_meanwhile_is_checked_when_the_insert_keeps_it(
    tmp_path: Path, vault: Vault, key_file: SqliteVaultKeyStore
) -> None:
    # Since stop 34 the rows this process just stored are not checked again (their tags were
    # made here); a row another process stored first still is, and a bad one is refused.
    raced, mine = PERSONS[0], PERSONS[1]
    keys, racing, other = _racers(tmp_path, vault)
    (owner,) = other.owners([raced])

    def store_a_bad_one() -> None:
        other.refs([raced])
        _raw(tmp_path, "UPDATE stored_refs SET tag = zeroblob(16) WHERE owner = ?", (owner,))

    keys.between = store_a_bad_one
    try:
        with pytest.raises(TamperedDataKeyError):
            racing.refs([raced, mine])
    finally:
        keys.close()


def test_references_made_in_one_call_are_distinct_and_stored_when_a_race_kept_another_one(
    tmp_path: Path, vault: Vault, key_file: SqliteVaultKeyStore
) -> None:
    raced = PERSONS[0]
    keys, racing, other = _racers(tmp_path, vault)
    winner: dict[str, str] = {}
    keys.between = lambda: winner.update(other.refs([raced]))
    try:
        got = racing.refs(PERSONS)
    finally:
        keys.close()

    assert got[raced] == winner[raced]  # the other process's, checked and kept
    assert len(set(got.values())) == len(PERSONS)
    assert all(len(ref) == 26 and ref.startswith("r_") for ref in got.values())
    int("".join(ref[2:] for ref in got.values()), 16)  # 24 hex digits each
    stored = key_file.get_refs(other.owners(PERSONS))
    assert {ref for ref, _ in stored.values()} == set(got.values())


@pytest.mark.parametrize("bad", ["", "aref:a\x00b", "~refs"])
def test_an_owner_the_vault_forbids_is_refused_when_references_are_asked_for_it(
    vault: Vault, bad: str
) -> None:
    # Owners are checked in C-level passes over a page's owners since stop 34; a bad one among
    # good ones is still found and named.
    good = [f"aref:{i:032x}" for i in range(3)]
    with pytest.raises(InvalidVaultItemError):
        vault.owner_refs([*good, bad], KEY_INFO, lambda owner, _: "r_" + "1" * 24, create=True)


def test_an_owner_holding_the_pass_separator_is_accepted_when_it_is_otherwise_valid(
    vault: Vault,
) -> None:
    owner = "aref:x\x01~y"  # looks like the reserved prefix to the joined pass; it is not
    got = vault.owner_refs([owner], KEY_INFO, lambda o, _: "r_" + "2" * 24, create=True)
    assert got == {owner: "r_" + "2" * 24}


class _CountingLookups(SqliteVaultKeyStore):
    """The real key file, recording the statements its connection runs (SQLite's trace
    callback): data-key lookups and read transactions."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.statements: list[str] = []
        self._conn.set_trace_callback(self.statements.append)

    def key_lookups(self) -> int:
        """Data-key ``SELECT``s run so far."""
        return sum(
            s.startswith("SELECT owner, kek_id, wrapped FROM data_keys") for s in self.statements
        )

    def read_transactions(self) -> int:
        """Deferred (read) transactions begun so far."""
        return sum(s == "BEGIN" for s in self.statements)


@pytest.fixture
def counted(
    tmp_path: Path, vault: Vault, key_file: SqliteVaultKeyStore
) -> Iterator[tuple[_CountingLookups, VaultPersonRefKeys]]:
    """A second connection to the test vault's key file that records its statements, and the
    person-reference source that uses it."""
    counting = _CountingLookups(tmp_path / "vault-keys.sqlite3")
    try:
        yield (
            counting,
            VaultPersonRefKeys(Vault(counting, LocalFileKeyProvider(tmp_path / "kek.json"))),
        )
    finally:
        counting.close()


def test_data_keys_are_looked_up_only_when_one_lies_in_the_owners_range_when_refs_are_made(
    tmp_path: Path, vault: Vault, counted: tuple[_CountingLookups, VaultPersonRefKeys]
) -> None:
    # Since stop 35 a first-ever page (no version-1 data key among ~1,000 new owners) probes the
    # owner range once instead of looking up every owner's data key; since stop 40 the stored
    # references, the probe and the lookup share one read transaction.
    counting, source = counted
    counting.statements.clear()  # the reference root's lookup, at start
    source.refs(PERSONS[:10])
    assert counting.key_lookups() == 0
    assert counting.read_transactions() == 1

    # A version-1 data key among the next owners: they are looked up, its reference kept.
    (legacy,) = source.owners([PERSONS[12]])
    subkey = legacy_subkeys(vault, tmp_path, [legacy], KEY_INFO)[legacy]
    counting.statements.clear()
    got = source.refs(PERSONS[10:20])
    assert counting.key_lookups() == 1
    assert counting.read_transactions() == 1
    assert got[PERSONS[12]] == person_ref(PERSONS[12], subkey)


def test_a_pages_new_references_are_stored_by_a_few_statements_when_made_together(
    tmp_path: Path, counted: tuple[_CountingLookups, VaultPersonRefKeys]
) -> None:
    # A first-ever audience page stores ~1,000 references in one key-file transaction: as a few
    # multi-row INSERTs (storage.sqlite.insert_rows), not one statement execution per row
    # (executemany: the trace callback saw 1,000 here).
    counting, source = counted
    persons = [f"p_{i:06d}cafe{i:06d}" for i in range(1_000)]
    counting.statements.clear()
    made = source.refs(persons)
    inserts = [s for s in counting.statements if s.startswith("INSERT INTO stored_refs")]
    assert len(inserts) <= 10
    assert len(set(made.values())) == len(persons)
    # Every one stored, each as made: a fresh process reads the same references back.
    keys, fresh = _fresh_vault(tmp_path)
    try:
        assert VaultPersonRefKeys(fresh).refs(persons, create=False) == made
    finally:
        keys.close()
