"""The vault: envelope encryption per identifier anchor, tamper detection, crypto-shredding, KEK
rotation. Real AES-GCM, real SQLite files in a temp directory, no mocks."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from identity.errors import ConfigurationError, IdGraphError
from identity.model import new_node_id
from privacy.keys.keyprovider import (
    KekNotFoundError,
    KeyProvider,
    LocalFileKeyProvider,
    WrappedKey,
    check_kek_origin,
    create_kek_file,
    read_kek_file,
    remove_kek,
    rotate_kek_file,
)
from privacy.keys.vault import (
    DataKeyDestroyedError,
    InvalidVaultItemError,
    ShredIncompleteError,
    TamperedCiphertextError,
    TamperedDataKeyError,
    Vault,
    VaultUnavailableError,
)
from privacy.keys.vault_sqlite import SqliteVaultKeyStore

SECRET = b"ann.p0000123@bench-mail.de"


@pytest.fixture
def key_store(tmp_path: Path) -> Iterator[SqliteVaultKeyStore]:
    store = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    yield store
    store.close()


@pytest.fixture
def vault(key_store: SqliteVaultKeyStore, kek_path: Path) -> Vault:
    return Vault(key_store, LocalFileKeyProvider(kek_path))


def _on_disk(db: Path) -> bytes:
    """Every byte SQLite keeps for ``db``: the main file and its WAL (if any)."""
    wal = db.with_name(db.name + "-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- round trips ---------------------------------------------------------------------------


def test_value_round_trips_when_encrypted_then_decrypted(vault: Vault) -> None:
    owner = new_node_id()

    blob = vault.encrypt(owner, "email", SECRET)

    assert SECRET not in blob
    assert blob[0] == 0x01
    assert len(blob) == 1 + 12 + len(SECRET) + 16
    assert vault.decrypt(owner, "email", blob) == SECRET


def test_many_owners_round_trip_in_one_call_when_their_keys_are_new(vault: Vault) -> None:
    owners = [new_node_id() for _ in range(60)]
    items = [(o, f, f"{f}-of-{o}".encode()) for o in owners for f in ("email", "phone")]

    blobs = vault.encrypt_many(items)

    assert vault.count_by_kek() == {next(iter(vault.count_by_kek())): 60}  # one key per owner
    plain = vault.decrypt_many([(o, f, b) for (o, f, _), b in zip(items, blobs, strict=True)])
    assert plain == [p for _, _, p in items]
    # A second call for the same owners reuses their keys.
    vault.encrypt_many(items[:10])
    assert sum(vault.count_by_kek().values()) == 60


def test_decrypt_names_the_shred_generation_it_checked_when_the_caller_asks_for_it(
    vault: Vault, key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    owners = [new_node_id() for _ in range(3)]
    blobs = vault.encrypt_many([(o, "email", o.encode()) for o in owners])
    items = [(o, "email", b) for o, b in zip(owners, blobs, strict=True)]
    before = vault.shred_generation()

    plain, generation = vault.decrypt_and_generation(items)
    nothing, unchanged = vault.decrypt_and_generation([])  # read even with nothing to decrypt
    other = Vault(key_store, LocalFileKeyProvider(kek_path))  # another process's view
    other.shred(owners[:1])

    assert plain == [o.encode() for o in owners]
    assert (nothing, generation, unchanged) == ([], before, before)
    # The shred is seen by the next call (its keys were cached by the first): fails closed.
    with pytest.raises(DataKeyDestroyedError):
        vault.decrypt_and_generation(items)
    assert vault.decrypt_and_generation(items[1:]) == (plain[1:], before + 1)


def test_keys_are_stored_before_values_return_when_owners_are_declared_new(
    vault: Vault, tmp_path: Path
) -> None:
    owners = [new_node_id() for _ in range(40)]
    items = [(o, "identifier:email", f"v-{o}".encode()) for o in owners]

    blobs = vault.encrypt_many(items, new_owners=owners)

    # Declared new, so not looked up first: still one stored key per owner, and a vault that
    # opens the key file afresh (nothing cached) reads every value back.
    assert sum(vault.count_by_kek().values()) == 40
    other = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    try:
        fresh = Vault(other, LocalFileKeyProvider(tmp_path / "secrets" / "kek.json"))
        opened = fresh.decrypt_many([(o, f, b) for (o, f, _), b in zip(items, blobs, strict=True)])
    finally:
        other.close()
    assert opened == [p for _, _, p in items]


def test_stored_key_is_used_when_an_owner_declared_new_already_has_one(
    key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    ann = new_node_id()
    first = Vault(key_store, LocalFileKeyProvider(kek_path), cache_size=0)
    blob = first.encrypt(ann, "email", b"ann@x.de")

    # A caller wrongly calling ann new (or a reserved key evicted from the cache): the key in the
    # file wins, so the earlier value stays readable and no second key is stored.
    later = first.encrypt_many([(ann, "email", b"ann@y.de")], new_owners=[ann])

    assert sum(first.count_by_kek().values()) == 1
    assert first.decrypt_many([(ann, "email", blob), (ann, "email", later[0])]) == [
        b"ann@x.de",
        b"ann@y.de",
    ]


def test_no_key_is_made_when_an_owner_declared_new_was_shredded(vault: Vault) -> None:
    ann, bob = new_node_id(), new_node_id()
    vault.encrypt(ann, "email", b"ann@x.de")
    vault.shred([ann])

    with pytest.raises(DataKeyDestroyedError):
        vault.encrypt_many(
            [(bob, "email", b"b@y.de"), (ann, "email", b"ann@x.de")], new_owners=[ann, bob]
        )

    assert vault.count_by_kek() == {}  # all or nothing: not even bob got a key


def test_ciphertexts_differ_when_the_same_plaintext_is_encrypted_twice(vault: Vault) -> None:
    owner = new_node_id()

    first, second = vault.encrypt_many([(owner, "email", SECRET), (owner, "email", SECRET)])

    assert first != second
    assert first[1:13] != second[1:13]  # a fresh random nonce each time
    assert vault.decrypt_many([(owner, "email", first), (owner, "email", second)]) == [SECRET] * 2


def test_values_round_trip_when_a_fresh_vault_reopens_the_files(
    tmp_path: Path, kek_path: Path
) -> None:
    owner = new_node_id()
    store = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    blob = Vault(store, LocalFileKeyProvider(kek_path)).encrypt(owner, "email", SECRET)
    store.close()

    reopened = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    try:
        assert Vault(reopened, LocalFileKeyProvider(kek_path)).decrypt(owner, "email", blob) == (
            SECRET
        )
    finally:
        reopened.close()


def test_no_key_is_duplicated_when_threads_encrypt_for_the_same_new_owners(vault: Vault) -> None:
    owners = [new_node_id() for _ in range(20)]
    start = threading.Barrier(8)

    def work(worker: int) -> list[tuple[str, str, bytes]]:
        items = [(o, "email", f"{worker}:{o}".encode()) for o in owners]
        start.wait()
        blobs = vault.encrypt_many(items)
        return [(o, f, b) for (o, f, _), b in zip(items, blobs, strict=True)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))

    assert sum(vault.count_by_kek().values()) == 20
    for worker, encrypted in enumerate(results):
        # Whichever thread lost the race to create a key encrypted under the winner's key.
        assert vault.decrypt_many(encrypted) == [f"{worker}:{o}".encode() for o in owners]


@pytest.mark.parametrize("cache_size", [0, 1, 3])
def test_values_round_trip_when_the_key_cache_is_smaller_than_the_owners(
    key_store: SqliteVaultKeyStore, kek_path: Path, cache_size: int
) -> None:
    vault = Vault(key_store, LocalFileKeyProvider(kek_path), cache_size=cache_size)
    owners = [new_node_id() for _ in range(10)]
    items = [(o, "email", o.encode()) for o in owners * 2]

    blobs = vault.encrypt_many(items)
    encrypted = [(o, f, b) for (o, f, _), b in zip(items, blobs, strict=True)]

    for _ in range(2):  # the second pass meets a cache that evicted most keys
        assert vault.decrypt_many(encrypted) == [o.encode() for o, _, _ in items]
    vault.shred(owners[:1])
    with pytest.raises(DataKeyDestroyedError):
        vault.decrypt_many(encrypted)


def test_invalid_item_is_refused_when_owner_or_field_is_empty_or_has_nul(vault: Vault) -> None:
    with pytest.raises(InvalidVaultItemError):
        vault.encrypt("n_a\x00b", "email", SECRET)
    with pytest.raises(InvalidVaultItemError):
        vault.encrypt(new_node_id(), "", SECRET)
    assert vault.count_by_kek() == {}


# -- tampering -----------------------------------------------------------------------------


def test_every_flipped_byte_is_detected_when_decrypting(vault: Vault) -> None:
    owner = new_node_id()
    blob = vault.encrypt(owner, "email", SECRET)

    # Position 0 is the version, 1..12 the nonce, then ciphertext, then the 16-byte tag.
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(TamperedCiphertextError) as caught:
            vault.decrypt(owner, "email", bytes(tampered))
        assert SECRET.decode() not in str(caught.value)
        assert caught.value.owner == owner
        # The owner (a node id, pseudonymous) stays on the attribute, out of the message,
        # which reaches log lines; the message keeps the value's position.
        assert owner not in str(caught.value)
        assert str(caught.value).startswith("vault value #0 (email field)")


def test_truncated_blob_is_detected_when_decrypting(vault: Vault) -> None:
    owner = new_node_id()
    blob = vault.encrypt(owner, "email", SECRET)

    for cut in (0, 1, 13, 28, len(blob) - 1):
        with pytest.raises(TamperedCiphertextError):
            vault.decrypt(owner, "email", blob[:cut])


def test_batch_returns_nothing_when_one_value_is_tampered(vault: Vault) -> None:
    owner = new_node_id()
    good, bad = vault.encrypt_many([(owner, "email", SECRET), (owner, "phone", b"+4915100")])
    broken = bad[:-1] + bytes([bad[-1] ^ 0x80])

    with pytest.raises(TamperedCiphertextError) as caught:
        vault.decrypt_many([(owner, "email", good), (owner, "phone", broken)])

    assert caught.value.index == 1
    assert caught.value.field == "phone"
    assert owner not in str(caught.value)


def test_blob_is_refused_when_swapped_between_two_owners(vault: Vault) -> None:
    ann, bob = new_node_id(), new_node_id()
    ann_blob, bob_blob = vault.encrypt_many(
        [(ann, "email", b"ann@x.de"), (bob, "email", b"b@y.de")]
    )

    with pytest.raises(TamperedCiphertextError):
        vault.decrypt(bob, "email", ann_blob)
    with pytest.raises(TamperedCiphertextError):
        vault.decrypt(ann, "email", bob_blob)


def test_blob_is_refused_when_swapped_between_two_fields_of_one_owner(vault: Vault) -> None:
    owner = new_node_id()
    email_blob, phone_blob = vault.encrypt_many(
        [(owner, "email", SECRET), (owner, "phone", b"+491511234567")]
    )

    with pytest.raises(TamperedCiphertextError):
        vault.decrypt(owner, "phone", email_blob)
    with pytest.raises(TamperedCiphertextError):
        vault.decrypt(owner, "email", phone_blob)


def test_wrapped_key_is_refused_when_copied_to_another_owners_row(
    vault: Vault, key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    ann, bob = new_node_id(), new_node_id()
    ann_blob, bob_blob = vault.encrypt_many(
        [(ann, "email", b"ann@x.de"), (bob, "email", b"b@y.de")]
    )

    # Someone with write access to the key file points bob's row at ann's wrapped key.
    with sqlite3.connect(key_store.path) as raw:
        raw.execute(
            "UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys WHERE owner = ?) "
            "WHERE owner = ?",
            (ann, bob),
        )
    raw.close()
    reader = Vault(key_store, LocalFileKeyProvider(kek_path))  # nothing cached yet

    with pytest.raises(TamperedDataKeyError) as caught:
        reader.decrypt(bob, "email", ann_blob)  # the owner is bound into the wrap (AAD)
    assert caught.value.owner == bob
    assert bob not in str(caught.value)
    assert ann not in str(caught.value)
    with pytest.raises(TamperedDataKeyError):
        reader.decrypt(bob, "email", bob_blob)
    assert reader.decrypt(ann, "email", ann_blob) == b"ann@x.de"


def test_wrapped_key_is_refused_when_a_byte_of_it_is_flipped_in_the_key_file(
    vault: Vault, key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    owner = new_node_id()
    blob = vault.encrypt(owner, "email", SECRET)
    wrapped = key_store.get_many([owner])[owner].blob
    with sqlite3.connect(key_store.path) as raw:
        raw.execute(
            "UPDATE data_keys SET wrapped = ? WHERE owner = ?",
            (wrapped[:-1] + bytes([wrapped[-1] ^ 0x01]), owner),
        )
    raw.close()

    with pytest.raises(TamperedDataKeyError):
        Vault(key_store, LocalFileKeyProvider(kek_path)).decrypt(owner, "email", blob)


# -- crypto-shredding ----------------------------------------------------------------------


def test_decrypt_raises_destroyed_when_the_owner_was_shredded(vault: Vault) -> None:
    ann, bob, never = new_node_id(), new_node_id(), new_node_id()
    ann_blob, bob_blob = vault.encrypt_many(
        [(ann, "email", b"ann@x.de"), (bob, "email", b"b@y.de")]
    )

    destroyed = vault.shred([ann, never])

    assert destroyed == 1
    with pytest.raises(DataKeyDestroyedError) as caught:
        vault.decrypt_many([(ann, "email", ann_blob), (bob, "email", bob_blob)])
    assert caught.value.owners == (ann,)
    assert vault.decrypt(bob, "email", bob_blob) == b"b@y.de"
    assert vault.shred([ann]) == 0  # nothing left to destroy


def test_destroyed_error_message_counts_owners_without_naming_them_when_logged(
    vault: Vault,
) -> None:
    # The message reaches log lines and error bodies: it counts the owners (node ids of
    # persons whose data was shredded); the ids stay on the exception's attribute.
    owners = [new_node_id() for _ in range(7)]
    blobs = vault.encrypt_many([(owner, "email", b"x@y.de") for owner in owners])
    vault.shred(owners)

    with pytest.raises(DataKeyDestroyedError) as caught:
        vault.decrypt_many(
            [(owner, "email", blob) for owner, blob in zip(owners, blobs, strict=True)]
        )

    assert caught.value.owners == tuple(sorted(owners))
    assert str(caught.value).startswith("7 owner(s) have no data key")
    assert not any(owner in str(caught.value) for owner in owners)
    assert "n_" not in str(caught.value)


def test_decrypt_readable_gives_none_only_for_shredded_owners_when_another_process_shreds(
    vault: Vault, key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    # A page of many persons: one person's shredded keys must not fail the others' values, and
    # keys this vault cached before another process's shred must not be used.
    ann, bob = new_node_id(), new_node_id()
    ann_email, ann_phone, bob_email = vault.encrypt_many(
        [(ann, "email", b"ann@x.de"), (ann, "phone", b"+4915100"), (bob, "email", b"b@y.de")]
    )
    items = [(ann, "email", ann_email), (bob, "email", bob_email), (ann, "phone", ann_phone)]
    assert vault.decrypt_readable(items) == [b"ann@x.de", b"b@y.de", b"+4915100"]  # cached
    assert Vault(key_store, LocalFileKeyProvider(kek_path)).shred([ann]) == 1

    assert vault.decrypt_readable(items) == [None, b"b@y.de", None]
    assert vault.decrypt_readable([]) == []
    with pytest.raises(DataKeyDestroyedError):  # decrypt_many stays all or nothing
        vault.decrypt_many(items)
    assert vault.count_by_kek() == {next(iter(vault.count_by_kek())): 1}  # no key made for ann


def test_decrypt_readable_raises_when_a_value_of_a_readable_owner_is_tampered(
    vault: Vault,
) -> None:
    # "No key" is an expected state; a value failing authentication is tampering and is never
    # folded into it.
    ann, bob = new_node_id(), new_node_id()
    ann_blob, bob_blob = vault.encrypt_many([(ann, "email", b"ann@x.de"), (bob, "email", b"b")])
    vault.shred([ann])
    broken = bob_blob[:-1] + bytes([bob_blob[-1] ^ 0x01])

    with pytest.raises(TamperedCiphertextError) as caught:
        vault.decrypt_readable([(ann, "email", ann_blob), (bob, "email", broken)])

    assert (caught.value.owner, caught.value.index) == (bob, 1)


def test_no_new_key_is_made_when_encrypting_for_a_shredded_owner(vault: Vault) -> None:
    ann, bob = new_node_id(), new_node_id()
    vault.encrypt(ann, "email", b"ann@x.de")
    vault.shred([ann])

    with pytest.raises(DataKeyDestroyedError):
        vault.encrypt_many([(bob, "email", b"b@y.de"), (ann, "email", b"ann@x.de")])

    assert vault.count_by_kek() == {}  # all or nothing: not even bob got a key


def test_cached_key_is_not_used_when_another_connection_shreds_the_owner(
    vault: Vault, key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    owner = new_node_id()
    blob = vault.encrypt(owner, "email", SECRET)
    assert vault.decrypt(owner, "email", blob) == SECRET  # key now in this vault's cache

    other_store = SqliteVaultKeyStore(key_store.path)  # e.g. the CLI, while the API serves
    try:
        assert Vault(other_store, LocalFileKeyProvider(kek_path)).shred([owner]) == 1
    finally:
        other_store.close()

    with pytest.raises(DataKeyDestroyedError):
        vault.decrypt(owner, "email", blob)


def test_pre_shred_graph_copy_is_unreadable_when_the_owner_is_shredded_after_the_copy(
    tmp_path: Path, vault: Vault, key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    ann, bob = new_node_id(), new_node_id()
    graph = tmp_path / "graph.sqlite3"  # stands in for the graph database holding ciphertexts
    with sqlite3.connect(graph) as conn:
        conn.execute("CREATE TABLE vault_values (owner TEXT, field TEXT, blob BLOB)")
        blobs = vault.encrypt_many([(ann, "email", b"ann@x.de"), (bob, "email", b"b@y.de")])
        conn.executemany(
            "INSERT INTO vault_values VALUES (?, ?, ?)",
            [(ann, "email", blobs[0]), (bob, "email", blobs[1])],
        )
    conn.close()
    backup = tmp_path / "backup"
    backup.mkdir()
    # Byte copies of the files as they are before the shred (main file and WAL of the key file).
    shutil.copyfile(graph, backup / graph.name)
    for source in (key_store.path, key_store.path.with_name(key_store.path.name + "-wal")):
        if source.exists():
            shutil.copyfile(source, backup / source.name)
    (backup / key_store.path.name).chmod(0o600)

    vault.shred([ann])

    with sqlite3.connect(backup / graph.name) as copy:
        rows = copy.execute("SELECT owner, field, blob FROM vault_values ORDER BY owner").fetchall()
    copy.close()
    items = {owner: (owner, field, bytes(blob)) for owner, field, blob in rows}
    fresh_store = SqliteVaultKeyStore(key_store.path)
    try:
        fresh = Vault(fresh_store, LocalFileKeyProvider(kek_path))
        with pytest.raises(DataKeyDestroyedError):
            fresh.decrypt(*items[ann])
        assert fresh.decrypt(*items[bob]) == b"b@y.de"
    finally:
        fresh_store.close()
    # Why key-file backups need short retention: the pre-shred copy of the key file, with the
    # live KEK, still opens the old graph copy. Crypto-shredding is only as good as that.
    stale_store = SqliteVaultKeyStore(backup / key_store.path.name)
    try:
        stale = Vault(stale_store, LocalFileKeyProvider(kek_path))
        assert stale.decrypt(*items[ann]) == b"ann@x.de"
    finally:
        stale_store.close()


def test_shredded_key_bytes_are_gone_from_the_key_file_and_its_wal_when_shredded(
    vault: Vault, key_store: SqliteVaultKeyStore
) -> None:
    owners = [new_node_id() for _ in range(300)]  # several pages of keys
    vault.encrypt_many([(o, "email", b"x") for o in owners])
    victims = owners[::3]
    wrapped = key_store.get_many(victims)
    before = _on_disk(key_store.path)
    assert all(w.blob in before for w in wrapped.values())  # the search does find them

    assert vault.shred(victims) == len(victims)

    after = _on_disk(key_store.path)
    assert [o for o, w in wrapped.items() if w.blob in after] == []
    survivors = key_store.get_many(owners[1::3])
    assert all(w.blob in after for w in survivors.values())


def test_shredded_owner_ids_are_gone_from_the_key_file_when_shredded(
    vault: Vault, key_store: SqliteVaultKeyStore
) -> None:
    owners = [new_node_id() for _ in range(50)]
    vault.encrypt_many([(o, "email", b"x") for o in owners])
    victims = owners[::2]

    vault.shred(victims)

    after = _on_disk(key_store.path)
    # Erasure must leave no trace of the erased anchors' ids, yet they stay refused.
    assert [o for o in victims if o.encode() in after] == []
    assert all(o.encode() in after for o in owners[1::2])
    with pytest.raises(DataKeyDestroyedError):
        vault.encrypt(victims[0], "email", b"again")


def test_version_1_shredded_owner_ids_become_digests_when_the_key_file_is_opened(
    tmp_path: Path, kek_path: Path
) -> None:
    path = tmp_path / "v1-keys.sqlite3"
    owner = new_node_id()
    with sqlite3.connect(path) as conn:  # a key file as version 1 wrote it
        conn.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
            "INSERT INTO meta VALUES ('schema_version', '1');"
            "CREATE TABLE shredded (owner TEXT PRIMARY KEY, shredded_at INTEGER NOT NULL);"
        )
        conn.execute("INSERT INTO shredded VALUES (?, 1)", (owner,))
    conn.close()
    path.chmod(0o600)

    store = SqliteVaultKeyStore(path)
    try:
        with pytest.raises(DataKeyDestroyedError):
            Vault(store, LocalFileKeyProvider(kek_path)).encrypt(owner, "email", b"x")
        assert store.checkpoint() is True
    finally:
        store.close()
    assert owner.encode() not in _on_disk(path)


def test_shred_reports_incomplete_when_a_reader_blocks_the_wal_truncation(
    tmp_path: Path, kek_path: Path
) -> None:
    store = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3", busy_timeout_ms=50)
    try:
        vault = Vault(store, LocalFileKeyProvider(kek_path))
        owner = new_node_id()
        blob = vault.encrypt(owner, "email", SECRET)
        wrapped = store.get_many([owner])[owner].blob
        reader = sqlite3.connect(store.path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM data_keys").fetchone()  # holds a snapshot

        with pytest.raises(ShredIncompleteError) as caught:
            vault.shred([owner])

        assert caught.value.destroyed == 1
        with pytest.raises(DataKeyDestroyedError):
            vault.decrypt(owner, "email", blob)  # destroyed all the same
        reader.execute("COMMIT")
        reader.close()
        assert store.checkpoint() is True
        assert wrapped not in _on_disk(store.path)
    finally:
        store.close()


# -- KEK rotation --------------------------------------------------------------------------


def test_all_keys_move_to_the_new_kek_when_rewrapped_after_rotation(
    key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    old_provider = LocalFileKeyProvider(kek_path)
    old_kek = old_provider.current_kek_id
    owners = [new_node_id() for _ in range(25)]
    items = [(o, "email", o.encode()) for o in owners]
    blobs = Vault(key_store, old_provider).encrypt_many(items)
    old_wrapped = key_store.get_many(owners)

    new_kek = rotate_kek_file(kek_path)
    vault = Vault(key_store, LocalFileKeyProvider(kek_path))
    report = vault.rewrap(batch_size=10)

    assert new_kek != old_kek
    assert (report.kek_id, report.rewrapped, report.already_current) == (new_kek, 25, 0)
    assert report.batches == 3
    assert vault.count_by_kek() == {new_kek: 25}
    assert all(key_store.get_many(owners)[o].blob != old_wrapped[o].blob for o in owners)
    encrypted = [(o, f, b) for (o, f, _), b in zip(items, blobs, strict=True)]
    assert vault.decrypt_many(encrypted) == [o.encode() for o in owners]  # data not re-encrypted
    assert vault.rewrap().rewrapped == 0  # nothing left under an old KEK

    remove_kek(kek_path, old_kek)

    assert read_kek_file(kek_path).key_ids == (new_kek,)
    after_removal = Vault(key_store, LocalFileKeyProvider(kek_path))
    assert after_removal.decrypt_many(encrypted) == [o.encode() for o in owners]


def test_keys_are_unreadable_when_the_old_kek_is_removed_before_rewrap(
    key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    owner = new_node_id()
    old_kek = LocalFileKeyProvider(kek_path).current_kek_id
    blob = Vault(key_store, LocalFileKeyProvider(kek_path)).encrypt(owner, "email", SECRET)
    rotate_kek_file(kek_path)
    remove_kek(kek_path, old_kek)

    with pytest.raises(KekNotFoundError):
        Vault(key_store, LocalFileKeyProvider(kek_path)).decrypt(owner, "email", blob)
    with pytest.raises(ConfigurationError):
        remove_kek(kek_path, read_kek_file(kek_path).primary)  # never the primary


def test_rewrap_resumes_and_counts_add_up_when_interrupted_after_the_first_batch(
    key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    owners = [new_node_id() for _ in range(7)]
    items = [(o, "phone", o.encode()) for o in owners]
    blobs = Vault(key_store, LocalFileKeyProvider(kek_path)).encrypt_many(items)
    old_kek = LocalFileKeyProvider(kek_path).current_kek_id
    new_kek = rotate_kek_file(kek_path)
    vault = Vault(key_store, LocalFileKeyProvider(kek_path))
    seen: list[int] = []

    def stop_after_first_batch(done: int) -> None:
        seen.append(done)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vault.rewrap(batch_size=2, progress=stop_after_first_batch)

    assert seen == [2]
    assert vault.count_by_kek() == {old_kek: 5, new_kek: 2}  # the first batch was committed
    encrypted = [(o, f, b) for (o, f, _), b in zip(items, blobs, strict=True)]
    assert vault.decrypt_many(encrypted) == [o.encode() for o in owners]  # mixed KEKs work

    report = vault.rewrap(batch_size=2)

    assert (report.rewrapped, report.already_current, report.batches) == (5, 2, 3)
    assert report.rewrapped + report.already_current == len(owners)
    assert vault.count_by_kek() == {new_kek: 7}
    assert vault.decrypt_many(encrypted) == [o.encode() for o in owners]


def test_shredded_key_stays_gone_when_rewrapped(
    key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    ann, bob = new_node_id(), new_node_id()
    Vault(key_store, LocalFileKeyProvider(kek_path)).encrypt_many(
        [(ann, "email", b"a"), (bob, "email", b"b")]
    )
    new_kek = rotate_kek_file(kek_path)
    vault = Vault(key_store, LocalFileKeyProvider(kek_path))
    vault.shred([ann])

    assert vault.rewrap().rewrapped == 1
    assert vault.count_by_kek() == {new_kek: 1}
    assert key_store.get_many([ann, bob]).keys() == {bob}


# -- key files -----------------------------------------------------------------------------


def test_files_are_owner_only_when_created(tmp_path: Path) -> None:
    kek = tmp_path / "kek.json"
    create_kek_file(kek, origin="operator")
    rotate_kek_file(kek)
    store = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    try:
        Vault(store, LocalFileKeyProvider(kek)).encrypt(new_node_id(), "email", SECRET)
        wal = store.path.with_name(store.path.name + "-wal")
        shm = store.path.with_name(store.path.name + "-shm")

        assert _mode(kek) == 0o600
        assert _mode(store.path) == 0o600
        assert wal.exists()
        assert _mode(wal) == 0o600
        assert _mode(shm) == 0o600
    finally:
        store.close()


def test_kek_file_is_refused_when_readable_by_others(kek_path: Path) -> None:
    kek_path.chmod(0o644)

    with pytest.raises(ConfigurationError, match="chmod 600"):
        LocalFileKeyProvider(kek_path)


def test_vault_key_file_is_refused_when_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "vault-keys.sqlite3"
    SqliteVaultKeyStore(path).close()
    path.chmod(0o640)

    with pytest.raises(ConfigurationError):
        SqliteVaultKeyStore(path)


def test_kek_file_is_not_overwritten_when_created_twice(kek_path: Path) -> None:
    before = kek_path.read_bytes()

    with pytest.raises(ConfigurationError):
        create_kek_file(kek_path, origin="operator")

    assert kek_path.read_bytes() == before


def test_production_check_refuses_the_kek_when_its_origin_is_generated(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    create_kek_file(path, origin="generated")
    provider = LocalFileKeyProvider(path)

    assert provider.kek_origin == "generated"
    with pytest.raises(ConfigurationError, match="production refuses"):
        check_kek_origin(provider.kek_origin, production=True)
    check_kek_origin(provider.kek_origin, production=False)  # fine for development

    rotate_kek_file(path)  # rotation makes an operator key primary

    rotated = LocalFileKeyProvider(path)
    assert rotated.kek_origin == "operator"
    check_kek_origin(rotated.kek_origin, production=True)


def test_kek_file_is_refused_when_a_secret_is_not_32_bytes(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    path.write_text(
        '{"format": "idgraph-kek/1", "primary": "k1", '
        '"keys": [{"id": "k1", "secret": "c2hvcnQ", "origin": "operator"}]}',
        encoding="utf-8",
    )
    path.chmod(0o600)

    with pytest.raises(ConfigurationError, match="32 bytes"):
        LocalFileKeyProvider(path)


def test_key_material_is_hidden_when_repr_is_logged(kek_path: Path) -> None:
    provider: KeyProvider = LocalFileKeyProvider(kek_path)
    wrapped = provider.wrap(b"\x07" * 32, b"owner")
    entry = read_kek_file(kek_path).entries[0]

    assert wrapped.blob.hex() not in repr(wrapped)
    assert str(wrapped.blob) not in repr(wrapped)
    assert repr(entry.secret) not in repr(entry)
    assert provider.unwrap(wrapped, b"owner") == b"\x07" * 32
    with pytest.raises(IdGraphError):
        provider.unwrap(WrappedKey(wrapped.kek_id, wrapped.blob), b"another owner")


def test_no_new_key_is_made_when_another_connection_shredded_the_first_owner_ever(
    vault: Vault, key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    # Until its first shred a key file skips the per-owner shredded check; the first shred,
    # made by another connection, must switch it back on for this vault's very next insert.
    owners = [new_node_id() for _ in range(1200)]  # more than one probe chunk
    vault.encrypt_many([(owner, "email", SECRET) for owner in owners[:-1]])
    other_store = SqliteVaultKeyStore(key_store.path)
    try:
        other = Vault(other_store, LocalFileKeyProvider(kek_path))
        other.encrypt(owners[-1], "email", SECRET)
        assert other.shred([owners[-1]]) == 1
    finally:
        other_store.close()

    with pytest.raises(DataKeyDestroyedError) as caught:
        vault.encrypt_many([(new_node_id(), "email", SECRET), (owners[-1], "email", SECRET)])
    assert caught.value.owners == (owners[-1],)


def test_many_new_keys_are_stored_in_few_statements_and_a_key_stored_before_wins(
    key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    """A bulk batch stores ~17,000 keys made ahead at once (the file's reader thread): in a few
    multi-row statements, not one per key (each one gave the GIL away, see
    storage.sqlite.WIDE_PARAMS); an owner that got a key meanwhile keeps it, as before."""
    provider = LocalFileKeyProvider(kek_path)
    owners = [new_node_id() for _ in range(3_000)]
    theirs = WrappedKey(provider.current_kek_id, b"\x01" * 60)
    key_store.insert_new([(owners[1_500], theirs)], {})  # another process, a moment before
    mine = [(owner, WrappedKey(provider.current_kek_id, owner.encode())) for owner in owners]
    statements: list[str] = []
    key_store._conn.set_trace_callback(statements.append)
    try:
        stored = key_store.insert_new(mine, {})
    finally:
        key_store._conn.set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT INTO data_keys")]
    # SQLite traces a multi-row statement once per row with the same text: counted once.
    runs = [s for i, s in enumerate(inserts) if not i or s != inserts[i - 1]]
    # 3,000 rows of 5 values: 2,048 + 512 + 256 + 128 + 32 + 16 + 8 (one statement per row: 3,000)
    assert 0 < len(runs) <= 12
    assert stored[owners[1_500]] == theirs
    assert all(stored[o] == WrappedKey(provider.current_kek_id, o.encode()) for o in owners[:1_500])
    assert key_store.get_many(owners) == stored


def _generation_reads(statements: list[str]) -> int:
    return sum("key = 'shred_generation'" in s and s.startswith("SELECT") for s in statements)


def test_reservations_read_the_shred_generation_once_not_per_call_when_no_shred_happens(
    tmp_path: Path, key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    vault = Vault(key_store, LocalFileKeyProvider(kek_path), pool_size=64)
    statements: list[str] = []
    key_store._conn.set_trace_callback(statements.append)
    key_store._generation_conn.set_trace_callback(statements.append)  # where it is read

    reserved = [vault.reserve_owners(2, new_node_id) for _ in range(10)]

    assert _generation_reads(statements) == 1  # was one per reservation
    owners = [owner for pair in reserved for owner in pair]
    assert len(set(owners)) == 20
    statements.clear()
    blobs = vault.encrypt_many([(o, "email", b"v@x.de") for o in owners], new_owners=owners)
    # Sealing found every reserved key in the cache: no key-file lookup or insert.
    assert not [s for s in statements if "data_keys" in s]
    assert (
        vault.decrypt_many([(o, "email", b) for o, b in zip(owners, blobs, strict=True)])
        == [b"v@x.de"] * 20
    )


def test_reserved_keys_still_seal_and_a_shredded_owner_stays_unreadable_after_a_shred_elsewhere(
    tmp_path: Path, key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    vault = Vault(key_store, LocalFileKeyProvider(kek_path), pool_size=64)
    (victim,) = vault.reserve_owners(1, new_node_id)
    (victim_blob,) = vault.encrypt_many([(victim, "email", b"a@x.de")], new_owners=[victim])
    other_store = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")  # another process
    try:
        Vault(other_store, LocalFileKeyProvider(kek_path)).shred([victim])
    finally:
        other_store.close()

    taken = vault.reserve_owners(3, new_node_id)  # under the generation read before the shred
    blobs = vault.encrypt_many([(o, "email", b"n@x.de") for o in taken], new_owners=taken)
    (local_victim,) = vault.reserve_owners(1, new_node_id)
    vault.encrypt_many([(local_victim, "email", b"l@x.de")], new_owners=[local_victim])
    vault.shred([local_victim])  # a shred here: the cache moves to a newer generation
    after = vault.reserve_owners(2, new_node_id)
    later = vault.encrypt_many([(o, "email", b"m@x.de") for o in after], new_owners=after)

    assert (
        vault.decrypt_many([(o, "email", b) for o, b in zip(taken, blobs, strict=True)])
        == [b"n@x.de"] * 3
    )
    assert (
        vault.decrypt_many([(o, "email", b) for o, b in zip(after, later, strict=True)])
        == [b"m@x.de"] * 2
    )
    with pytest.raises(DataKeyDestroyedError):
        vault.decrypt(victim, "email", victim_blob)
    assert vault.decrypt_readable([(local_victim, "email", b"")]) == [None]


# -- the shred generation, read on its own connection (stop 46) -----------------------------
# Every seal reads the key file's shred generation. Under the key store's one lock that read
# waited for any key-file transaction in progress (a commit of thousands of keys made ahead,
# its fsync included): an asynchronous ingest's journal seals waited for the applier's key
# commits. Held deterministically: the write is parked inside its transaction on an event,
# nothing is timed (each wait has a 30 s cap that only a hung test hits).


def test_a_seal_under_a_cached_key_does_not_wait_for_an_open_key_file_write_transaction(
    vault: Vault, key_store: SqliteVaultKeyStore
) -> None:
    owner = "ingestjournal-20260301"
    first = vault.encrypt(owner, "job_a", b"batch a")  # its key is cached now
    inside, release = threading.Event(), threading.Event()

    def parked_write() -> None:
        with key_store._write():  # holds the key store's lock and the file's write lock
            inside.set()
            assert release.wait(30)

    with ThreadPoolExecutor(2) as pool:
        writer = pool.submit(parked_write)
        assert inside.wait(30)
        # Under the one lock this waited until the write ended (here: the 30 s cap).
        sealed = pool.submit(vault.encrypt, owner, "job_b", b"batch b").result(30)
        generation = key_store.shred_generation()
        assert not writer.done()
        release.set()
        writer.result(30)

    assert generation == 0
    assert vault.decrypt_many([(owner, "job_a", first), (owner, "job_b", sealed)]) == [
        b"batch a",
        b"batch b",
    ]


def test_a_seal_reads_the_shred_generation_once_when_keys_made_ahead_are_held(
    key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    vault = Vault(key_store, LocalFileKeyProvider(kek_path), pool_size=16)
    owner = "ingestjournal-20260301"
    vault.encrypt(owner, "job_a", b"batch a")
    ahead = vault.reserve_owners(40, new_node_id)  # above the pool size: keys made ahead, held
    assert len(ahead) == 40
    statements: list[str] = []
    for conn in (key_store._conn, key_store._generation_conn):
        conn.set_trace_callback(statements.append)
    try:
        blob = vault.encrypt(owner, "job_b", b"batch b")  # not one of the keys made ahead
    finally:
        for conn in (key_store._conn, key_store._generation_conn):
            conn.set_trace_callback(None)

    # One read for the keys made ahead and the cache both (it was one each).
    assert _generation_reads(statements) == 1
    assert vault.decrypt(owner, "job_b", blob) == b"batch b"


def test_a_seal_refuses_a_cached_key_that_another_process_shredded_when_keys_ahead_are_held(
    key_store: SqliteVaultKeyStore, kek_path: Path
) -> None:
    # The guarantee the generation read gives a seal: a key shredded elsewhere (another
    # process, its own key store on the same file) is not sealed under any more, even though
    # this vault still had it cached and holds keys made ahead.
    vault = Vault(key_store, LocalFileKeyProvider(kek_path), pool_size=16)
    owner = "ingestjournal-20260301"
    vault.encrypt(owner, "job_a", b"batch a")  # cached
    ahead = vault.reserve_owners(40, new_node_id)
    other_store = SqliteVaultKeyStore(key_store.path)
    try:
        assert Vault(other_store, LocalFileKeyProvider(kek_path)).shred([owner]) == 1
    finally:
        other_store.close()

    with pytest.raises(DataKeyDestroyedError):
        vault.encrypt(owner, "job_b", b"batch b")
    # Keys made ahead are for fresh ids no shred named: they still seal (read from the key file
    # once the generation moved).
    blobs = vault.encrypt_many([(o, "email", b"n@x.de") for o in ahead[:2]], new_owners=ahead[:2])
    assert (
        vault.decrypt_many([(o, "email", b) for o, b in zip(ahead[:2], blobs, strict=True)])
        == [b"n@x.de"] * 2
    )


def test_the_shred_generation_connection_writes_nothing_and_closes_with_the_store(
    tmp_path: Path,
) -> None:
    store = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store._generation_conn.execute("DELETE FROM data_keys")
    store.close()

    with pytest.raises(VaultUnavailableError):
        store.shred_generation()
    with pytest.raises(sqlite3.ProgrammingError):
        store._generation_conn.execute("SELECT 1")
