"""The key file's layout (schema 5): keys stored in the order they were made, so a commit of many
new keys for random owner ids appends instead of rewriting the file, and the migration of a
schema-4 file (rows keyed by owner) keeps every key, shred and pool mark. Real SQLite files, real
vault crypto, no mocks."""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

import pytest

from identity.model import new_node_id
from privacy.keys.keyprovider import LocalFileKeyProvider, WrappedKey
from privacy.keys.process import ProcessIdentity
from privacy.keys.vault import DataKeyDestroyedError, Vault
from privacy.keys.vault_sqlite import SCHEMA_VERSION, SqliteVaultKeyStore

# Schema 4's data_keys, exactly as that version made it (the table keyed by owner).
_SCHEMA_4_KEYS = """
CREATE TABLE keys_v4 (
    owner      TEXT PRIMARY KEY,
    kek_id     TEXT NOT NULL,
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    holder     INTEGER
) WITHOUT ROWID;
INSERT INTO keys_v4 SELECT owner, kek_id, wrapped, created_at, holder FROM data_keys;
DROP TABLE data_keys;
ALTER TABLE keys_v4 RENAME TO data_keys;
CREATE INDEX data_keys_by_kek ON data_keys (kek_id);
CREATE INDEX data_keys_by_holder ON data_keys (holder) WHERE holder IS NOT NULL;
UPDATE meta SET value = '4' WHERE key = 'schema_version';
"""


def _random_owners(count: int) -> list[tuple[str, WrappedKey]]:
    # Owner ids as the audit references' (aref: + 32 hex of an HMAC): random, like node ids.
    return [
        ("aref:" + secrets.token_hex(16), WrappedKey("kek-test", os.urandom(61)))
        for _ in range(count)
    ]


def _wal_frames(path: Path) -> int:
    """Pages in the key file's WAL (each a page image the commits wrote), without checkpointing."""
    with sqlite3.connect(path) as conn:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    conn.close()
    return int(frames)


def test_new_keys_append_when_many_random_owners_get_keys_at_once(tmp_path: Path) -> None:
    path = tmp_path / "vault-keys.sqlite3"
    store = SqliteVaultKeyStore(path)
    try:
        for _ in range(20):
            store.insert_new(_random_owners(1_000), {})
        assert store.checkpoint() is True  # the WAL is empty now
        with sqlite3.connect(path) as conn:
            pages_before = int(conn.execute("PRAGMA page_count").fetchone()[0])
        conn.close()

        store.insert_new(_random_owners(1_000), {})  # one commit: 1,000 more keys

        written = _wal_frames(path)
    finally:
        store.close()
    # Keyed by owner (schema 4), such a commit rewrote nearly every page of the file (about 0.8
    # of it here: the rows and the KEK index both in owner order); in the order they were made,
    # the rows and the KEK index append and only the owner index takes the random inserts.
    assert written < pages_before / 2, (written, pages_before)


def test_a_schema_4_key_file_is_rebuilt_in_time_order_and_keeps_every_key_when_opened(
    tmp_path: Path, kek_path: Path
) -> None:
    path = tmp_path / "vault-keys.sqlite3"
    store = SqliteVaultKeyStore(path)
    vault = Vault(store, LocalFileKeyProvider(kek_path))
    owners = [new_node_id() for _ in range(40)]
    sealed = vault.encrypt_many([(o, "email", o.encode()) for o in owners])
    erased = owners[:5]
    vault.shred(erased)
    holder = store.register_holder(ProcessIdentity("boot", "ns", 1, "1"))
    held = [o for o, _ in _random_owners(3)]
    store.insert_new(
        [(o, WrappedKey("kek-test", os.urandom(61))) for o in held],
        {o: vault.shred_ref(o) for o in held},
        holder=holder,
    )
    counts = store.count_by_kek()
    store.close()
    with sqlite3.connect(path) as conn:  # the same file as schema 4 laid it out
        conn.executescript(_SCHEMA_4_KEYS)
    conn.close()

    reopened = SqliteVaultKeyStore(path)
    try:
        again = Vault(reopened, LocalFileKeyProvider(kek_path))
        kept = [(o, "email", blob) for o, blob in zip(owners, sealed, strict=True)][5:]
        assert again.decrypt_many(kept) == [o.encode() for o in owners[5:]]
        with pytest.raises(DataKeyDestroyedError):  # an erased owner stays refused
            again.encrypt(erased[0], "email", b"x")
        assert reopened.held_by(holder) == sorted(held)
        assert reopened.count_by_kek() == counts
        assert reopened.checkpoint() is True
    finally:
        reopened.close()
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'data_keys'").fetchone()
        indexes = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        stored = conn.execute("SELECT created_at FROM data_keys ORDER BY seq").fetchall()
    conn.close()
    assert version == (str(SCHEMA_VERSION),)
    assert "WITHOUT ROWID" not in sql.upper()
    assert {"data_keys_by_kek", "data_keys_by_holder"} <= indexes
    assert stored == sorted(stored)  # rows in the order their keys were made
    # secure_delete: the dropped schema-4 table and index left no copy of an owner id behind
    # (each is in the new table's row and its UNIQUE index, nowhere else).
    on_disk = path.read_bytes()
    assert {on_disk.count(o.encode()) for o in owners[5:]} == {2}
    assert [o for o in erased if o.encode() in on_disk] == []
