"""The SQLite adapter of :class:`privacy.keys.vault.VaultKeyStore`: wrapped data keys in their own
file (``vault-keys.sqlite3``), never in the graph database that holds the ciphertexts.

Opened by the one SQLite opener (:func:`storage.sqlite.connect_private`): mode 0600 (key
material), WAL, ``synchronous=FULL`` (a created key is on disk before any ciphertext under it is
handed out: losing a key after its ciphertext is stored would be an accidental shred) and
``secure_delete=ON`` (a deleted wrapped key is zeroed, not left in free pages; see
:mod:`privacy.keys.vault` for why the shred also truncates the WAL). ``secure_delete`` is a
per-connection setting, so every connection that deletes from the key file must be made here.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from privacy.keys.keyprovider import WrappedKey
from privacy.keys.process import ProcessIdentity
from privacy.keys.vault import (
    RESERVED_OWNER_PREFIX,
    DataKeyDestroyedError,
    KekRetiredError,
    VaultUnavailableError,
)
from storage.sqlite import (
    connect_private,
    insert_rows,
    open_migrated,
    statements,
    transaction,
)

_SHRED_REF_PREFIX = b"idgraph-vault-shredded/1\x00"
_CHUNK = 500  # bound parameters per statement; far below SQLite's limit
# 1: data_keys, shredded (owner ids). 2: shredded_refs (digests of owner ids) replaces shredded.
# 3: retired_keks (KEK rotation that cannot lose keys), an index of data keys by KEK.
# 4: data_keys.holder and pool_holders (keys made ahead, swept when their process is gone).
# 5: data_keys is a rowid table in the order keys were stored, the owner a UNIQUE index (see
#    _SCHEMA for why); a version-4 file is rebuilt on open (_store_in_time_order).
# 6: stored_refs (keyed references kept per owner, privacy.keys.vault.Vault.owner_refs); a
#    version-5 file gets the empty table (references are stored when first used).
SCHEMA_VERSION = 6

# data_keys' columns: the table of _SCHEMA, and the one schema 4's is rebuilt into.
_DATA_KEYS_COLUMNS = """
    seq        INTEGER PRIMARY KEY,
    owner      TEXT NOT NULL UNIQUE,
    kek_id     TEXT NOT NULL,
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    holder     INTEGER
"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One wrapped data key per owner (identifier anchor, person audit reference). Deleting the row
-- is crypto-shredding. Rows are kept in the order they were stored (seq), and owners are found
-- through the UNIQUE index: owner ids are random (n_..., aref:<HMAC>), so with the rows keyed by
-- owner (schema 4, WITHOUT ROWID) every commit of many new keys rewrote nearly every leaf page
-- of the table and of data_keys_by_kek (the first audience over 25,000 persons wrote 105 MiB
-- for 25,000 keys, 4.3 KB a key); now the rows and data_keys_by_kek (kek_id, seq) append, and
-- only the owner index (about a third of the bytes of a row) takes random inserts (27 MiB).
-- The order reveals no more than created_at already does.
CREATE TABLE IF NOT EXISTS data_keys ("""
    + _DATA_KEYS_COLUMNS
    + """);

-- Start-up lists the KEKs in use and rotation counts keys per KEK: both read this index only.
CREATE INDEX IF NOT EXISTS data_keys_by_kek ON data_keys (kek_id);

-- KEKs being retired: no transaction may store a key wrapped under one of them from the moment
-- it is listed here, so the re-wrap that follows sees every key still under it, and the KEK can
-- be removed afterwards without losing a key another process wrapped meanwhile.
CREATE TABLE IF NOT EXISTS retired_keks (
    kek_id     TEXT PRIMARY KEY,
    retired_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Owners whose key was shredded: no new key is ever made for them, so an erased anchor cannot
-- quietly get fresh data. Holds a digest of each owner id (see _shred_ref), not the id itself:
-- after an erasure no file may contain the erased anchors' ids (the hidden-state check greps
-- every file for them), yet the vault must still recognise them. No key material.
CREATE TABLE IF NOT EXISTS shredded_refs (
    ref         TEXT PRIMARY KEY,
    shredded_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Keyed references stored per owner (privacy.keys.vault.Vault.owner_refs: the audit log's
-- per-person references), one per owner (owners name their use: aref:...), each with a tag
-- (HMAC under a vault reference subkey over owner, use and reference) so a row altered or moved
-- to another owner is refused. Deleted with the
-- owner's key by a shred (secure_delete zeroes them): an erased person's reference is then
-- gone, like its key. The owner is keyed (aref:<HMAC>), never a person id. Rows in the order
-- they were stored, owners in a UNIQUE index, as data_keys and for the same reason: keyed by
-- the random owner (WITHOUT ROWID), the 25 commits of a first-ever 1M audience rewrote nearly
-- every leaf each (38.6 MiB for 25k references; 24.1 MiB so, at no more CPU, measured).
CREATE TABLE IF NOT EXISTS stored_refs (
    seq   INTEGER PRIMARY KEY,
    owner TEXT NOT NULL UNIQUE,
    ref   TEXT NOT NULL,
    tag   BLOB NOT NULL
);

-- Processes holding keys made ahead (privacy.keys.vault.Vault.reserve_owners): data_keys.holder
-- names the process whose pool made a key, until the key is known to be used or gone. What
-- identifies a process on this machine: boot id, pid namespace, pid, start time (no personal
-- data). A key file in WAL mode is shared by processes of one machine only.
CREATE TABLE IF NOT EXISTS pool_holders (
    holder     INTEGER PRIMARY KEY,
    boot_id    TEXT NOT NULL,
    pid_ns     TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""
)


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _stored_refs(conn: sqlite3.Connection, owners: Sequence[str]) -> dict[str, tuple[str, bytes]]:
    """The stored ``(reference, tag)`` of those ``owners`` that have one."""
    found: dict[str, tuple[str, bytes]] = {}
    for chunk in _chunks(owners):
        rows = conn.execute(
            "SELECT owner, ref, tag FROM stored_refs "  # noqa: S608 - placeholders only
            f"WHERE owner IN ({_marks(len(chunk))})",
            chunk,
        ).fetchall()
        found.update({owner: (ref, bytes(tag)) for owner, ref, tag in rows})
    return found


def _delete_owners(
    conn: sqlite3.Connection, owners: Sequence[str], holder: int | None = None
) -> int:
    """Delete the keys of ``owners`` (only those ``holder`` made ahead, if given), in chunks
    of bound parameters; how many were deleted."""
    where = "" if holder is None else "holder = ? AND "
    first = () if holder is None else (holder,)
    deleted = 0
    for chunk in _chunks(owners):
        deleted += conn.execute(
            f"DELETE FROM data_keys WHERE {where}owner IN ({_marks(len(chunk))})",  # noqa: S608 - placeholders only
            (*first, *chunk),
        ).rowcount
    return deleted


def _delete_returning(
    conn: sqlite3.Connection, table: Literal["data_keys", "stored_refs"], owners: Sequence[str]
) -> set[str]:
    """Delete the rows of ``owners`` from ``table`` (keys or stored references); the owners
    that had one."""
    gone: set[str] = set()
    for chunk in _chunks(owners):
        gone.update(
            str(owner)
            for (owner,) in conn.execute(
                f"DELETE FROM {table} WHERE owner IN ({_marks(len(chunk))}) RETURNING owner",  # noqa: S608 - a fixed table name, placeholders only
                chunk,
            ).fetchall()
        )
    return gone


def _register(conn: sqlite3.Connection, process: ProcessIdentity) -> int:
    """Insert a pool holder row for ``process`` (write transaction held); its id."""
    (holder,) = conn.execute(
        "INSERT INTO pool_holders (boot_id, pid_ns, pid, started, created_at) "
        "VALUES (?, ?, ?, ?, ?) RETURNING holder",
        (process.boot_id, process.pid_ns, process.pid, process.started, int(time.time())),
    ).fetchone()
    return int(holder)


def _release(
    conn: sqlite3.Connection, holder: int, unused: Collection[str], *, settled: bool
) -> int:
    """:meth:`SqliteVaultKeyStore.release_holder` inside a write transaction already held."""
    deleted = _delete_owners(conn, sorted(set(unused)), holder)
    if settled:
        conn.execute("UPDATE data_keys SET holder = NULL WHERE holder = ?", (holder,))
    conn.execute("DELETE FROM pool_holders WHERE holder = ?", (holder,))
    return deleted


def _legacy_shred_ref(owner: str) -> str:
    """Schema 2's unkeyed reference (SHA-256 over the owner id). Still checked, never written:
    the owners behind refs already in a file are unknown, so they cannot be re-keyed."""
    return hashlib.sha256(_SHRED_REF_PREFIX + owner.encode()).hexdigest()


class SqliteVaultKeyStore:
    """The wrapped data keys, one row per owner, in their own SQLite file (mode 0600, WAL).

    Like the graph store: one connection serialized by a lock, ``isolation_level=None`` with
    explicit ``BEGIN IMMEDIATE`` for writes, ``synchronous=FULL`` (a created key is on disk before
    any ciphertext under it is handed out: losing a key after its ciphertext is stored would be an
    accidental shred). Adds ``secure_delete=ON`` (see the module docstring). The shred generation
    alone is read on a second, read-only connection under its own lock (see ``__init__``).
    """

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        # Owner-only (key material must not be readable or writable by other users; a looser
        # mode is refused), WAL (what the shred's checkpoint(TRUNCATE) reasoning is about),
        # synchronous=FULL, secure_delete=ON: the one opener of storage/sqlite.py.
        self._conn = open_migrated(
            path,
            busy_timeout_ms,
            VaultUnavailableError,
            "vault key file",
            _SCHEMA,
            SCHEMA_VERSION,
            after=_migrate_data,
            secure_delete=True,
        )
        # A multi-row insert (see insert_new) keeps a statement journal, to undo its own rows
        # if one of them fails, and SQLite spills it to a temporary file once it outgrows its
        # memory share: kept in memory, as the graph store's writer keeps it (a bulk batch's
        # ~17,000 keys made ahead spilled ~4,300 extra page writes per 100k identifiers).
        self._conn.execute("PRAGMA temp_store=MEMORY")
        self._lock = threading.RLock()
        self._closed = False
        # The shred generation is read on a connection of its own, under a lock of its own.
        # Why: every seal and every cache check reads it (Vault._ciphers), and under the one
        # lock each such read waited for whatever transaction the key file had open, a commit
        # of thousands of keys made ahead with its fsync included: the accepting threads of an
        # asynchronous ingest sealed their journal rows behind the applier's key commits (5 %
        # of their samples, stop 45). Under WAL a read on another connection sees every commit
        # that completed before it began, so a shred committed before the read (by any
        # connection of any process) is seen exactly as before; a shred still in progress is not
        # waited for, as one in another process never was. Read only (query_only): nothing is
        # ever written or deleted through it.
        self._generation_lock = threading.Lock()
        try:
            self._generation_conn = connect_private(
                path, busy_timeout_ms, VaultUnavailableError, "vault key file", secure_delete=True
            )
            self._generation_conn.execute("PRAGMA query_only=ON")
        except BaseException:
            self._conn.close()
            raise

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise VaultUnavailableError("the vault key store is closed")
            with transaction(self._conn, begin, VaultUnavailableError, "vault key file") as conn:
                yield conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._transaction("BEGIN IMMEDIATE") as conn:
                yield conn
        except sqlite3.Error as exc:
            raise VaultUnavailableError(f"vault key file error: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # A deferred transaction: one consistent snapshot under WAL for a multi-chunk read.
        try:
            with self._transaction("BEGIN") as conn:
                yield conn
        except sqlite3.Error as exc:
            raise VaultUnavailableError(f"vault key file error: {exc}") from exc

    @staticmethod
    def _select(conn: sqlite3.Connection, owners: Sequence[str]) -> dict[str, WrappedKey]:
        found: dict[str, WrappedKey] = {}
        for chunk in _chunks(owners):
            rows = conn.execute(
                "SELECT owner, kek_id, wrapped FROM data_keys "  # noqa: S608 - placeholders only
                f"WHERE owner IN ({_marks(len(chunk))})",
                chunk,
            )
            found.update((owner, WrappedKey(kek_id, bytes(blob))) for owner, kek_id, blob in rows)
        return found

    def get_many(self, owners: Collection[str]) -> dict[str, WrappedKey]:
        """The wrapped keys of those ``owners`` that have one."""
        wanted = sorted(set(owners))
        with self._read() as conn:
            return self._select(conn, wanted)

    def insert_new(
        self,
        rows: Sequence[tuple[str, WrappedKey]],
        shred_refs: Mapping[str, str],
        holder: int | None = None,
    ) -> dict[str, WrappedKey]:
        """Store new wrapped keys in one transaction; returns the key now stored for each owner.

        An owner that got a key meanwhile (another process) keeps it, and that key is returned.
        Raises :class:`DataKeyDestroyedError`, writing nothing, if any owner was shredded
        (``shred_refs`` maps each owner to its keyed shred reference, see :meth:`Vault.shred`).
        ``holder``: keys made ahead by that pool holder (:meth:`register_holder`).
        """
        with self._write() as conn:
            return self._insert(conn, rows, shred_refs, holder)

    def insert_ahead(
        self,
        rows: Sequence[tuple[str, WrappedKey]],
        shred_refs: Mapping[str, str],
        process: ProcessIdentity,
        settled: Collection[int] = (),
    ) -> tuple[int, dict[str, WrappedKey]]:
        """Keys made ahead for one batch, in **one** transaction: the holders of ``settled``
        release their marks (their keys are all used: :meth:`release_holder` with nothing
        unused), a new holder for ``process`` is registered, and ``rows`` are stored under it
        (as :meth:`insert_new`). Returns the new holder's id and the keys now stored.

        Why one: a bulk batch made these three key-file commits (``synchronous=FULL``, an fsync
        each) one after another; together they are one durable state change, and each is safe
        to land later or never (a mark left behind is cleared by the next batch or swept), so
        nothing orders them apart. A crash leaves all of it or none of it."""
        with self._write() as conn:
            for old in sorted(set(settled)):
                _release(conn, old, (), settled=True)
            holder = _register(conn, process)
            return holder, self._insert(conn, rows, shred_refs, holder)

    def _insert(
        self,
        conn: sqlite3.Connection,
        rows: Sequence[tuple[str, WrappedKey]],
        shred_refs: Mapping[str, str],
        holder: int | None,
    ) -> dict[str, WrappedKey]:
        owners = sorted(owner for owner, _ in rows)
        now = int(time.time())
        # A key file that never shredded anything (every store until its first erasure)
        # needs no per-owner probe: one row read, in this write transaction, so no shred
        # can commit between this check and the insert.
        if conn.execute("SELECT 1 FROM shredded_refs LIMIT 1").fetchone() is not None:
            self._refuse_shredded(conn, owners, shred_refs)
        # Checked in the same write transaction as the insert: a retirement committed before
        # it refuses the key; one committed after it sees the key in its re-wrap.
        self._refuse_retired(conn, {key.kek_id for _, key in rows})
        before = conn.total_changes
        # Multi-row statements, not executemany: a bulk batch stores ~17,000 keys made
        # ahead here, on the thread that reads the file while the batch before commits, and
        # executemany's step per row gave the GIL to the committing thread ~17,000 times
        # (storage.sqlite.WIDE_PARAMS says why each of those is costly).
        insert_rows(
            conn,
            "INSERT INTO data_keys (owner, kek_id, wrapped, created_at, holder)",
            [(owner, key.kek_id, key.blob, now, holder) for owner, key in rows],
            "ON CONFLICT (owner) DO NOTHING",
        )
        if conn.total_changes - before == len(rows):
            # Every row was inserted (the usual case): the stored keys are ours, no re-read.
            return dict(rows)
        return self._select(conn, owners)

    def shredded(self, owners: Collection[str], shred_refs: Mapping[str, str]) -> set[str]:
        """Those of ``owners`` that were shredded, in one read transaction: one row read when
        the file never shredded anything (``shred_refs`` is then not read), else one indexed
        probe per owner."""
        with self._read() as conn:
            if conn.execute("SELECT 1 FROM shredded_refs LIMIT 1").fetchone() is None:
                return set()
            return set(self._shredded_among(conn, sorted(set(owners)), shred_refs))

    @classmethod
    def _refuse_shredded(
        cls, conn: sqlite3.Connection, owners: Sequence[str], shred_refs: Mapping[str, str]
    ) -> None:
        """Raise :class:`DataKeyDestroyedError` naming every owner of ``owners`` that was
        shredded (under its keyed ref, or schema 2's legacy ref)."""
        gone = cls._shredded_among(conn, owners, shred_refs)
        if gone:
            raise DataKeyDestroyedError(gone)

    @staticmethod
    def _shredded_among(
        conn: sqlite3.Connection, owners: Sequence[str], shred_refs: Mapping[str, str]
    ) -> list[str]:
        """The owners of ``owners`` that were shredded (keyed ref, or schema 2's legacy ref)."""
        refs = {shred_refs[owner]: owner for owner in owners}
        refs.update({_legacy_shred_ref(owner): owner for owner in owners})
        gone: list[str] = []
        for chunk in _chunks(sorted(refs)):
            gone.extend(
                refs[ref]
                for (ref,) in conn.execute(
                    f"SELECT ref FROM shredded_refs WHERE ref IN ({_marks(len(chunk))})",  # noqa: S608 - placeholders only
                    chunk,
                )
            )
        return gone

    def delete_many(
        self, owners: Collection[str], shred_refs: Mapping[str, str]
    ) -> tuple[int, int]:
        """Delete the keys of ``owners``, remember them as shredded and bump the shred
        generation, in one transaction.

        Returns ``(owners whose key or stored reference was deleted, new shred generation)``.
        """
        wanted = sorted(set(owners))
        now = int(time.time())
        with self._write() as conn:
            # An owner of a stored reference made without a data key (Vault.owner_refs) counts
            # like a key: it is what the shred destroys for it.
            deleted = len(
                _delete_returning(conn, "data_keys", wanted)
                | _delete_returning(conn, "stored_refs", wanted)
            )
            conn.executemany(
                "INSERT INTO shredded_refs (ref, shredded_at) VALUES (?, ?) "
                "ON CONFLICT (ref) DO NOTHING",
                [(shred_refs[owner], now) for owner in wanted],
            )
            (generation,) = conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                "WHERE key = 'shred_generation' RETURNING CAST(value AS INTEGER)"
            ).fetchone()
        return deleted, int(generation)

    def get_refs(self, owners: Collection[str]) -> dict[str, tuple[str, bytes]]:
        """The stored ``(reference, tag)`` of those ``owners`` that have one."""
        with self._read() as conn:
            return _stored_refs(conn, sorted(set(owners)))

    def refs_and_keys(
        self, owners: Collection[str]
    ) -> tuple[dict[str, tuple[str, bytes]], dict[str, WrappedKey]]:
        """The stored ``(reference, tag)`` of those ``owners`` that have one, and the wrapped
        data keys of those of the others that have one, in one read transaction (one snapshot):
        the keys are looked up only if one probe of the owner index finds any key in the
        others' range (a first-ever audience page's owners have none)."""
        wanted = sorted(set(owners))
        with self._read() as conn:
            refs = _stored_refs(conn, wanted)
            rest = [owner for owner in wanted if owner not in refs]
            if not rest:
                return refs, {}
            probe = conn.execute(
                "SELECT 1 FROM data_keys WHERE owner BETWEEN ? AND ? LIMIT 1", (rest[0], rest[-1])
            ).fetchone()
            return refs, self._select(conn, rest) if probe is not None else {}

    def insert_refs(
        self, rows: Sequence[tuple[str, str, bytes]], shred_refs: Mapping[str, str]
    ) -> dict[str, tuple[str, bytes]]:
        """Store ``(owner, reference, tag)`` rows in one transaction; an owner that got one
        meanwhile (another process's) keeps it: returns what is stored for those owners, empty
        when every row was stored. Raises :class:`DataKeyDestroyedError`, writing nothing, if
        any owner was shredded."""
        owners = sorted(owner for owner, _, _ in rows)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM shredded_refs LIMIT 1").fetchone() is not None:
                self._refuse_shredded(conn, owners, shred_refs)
            before = conn.total_changes
            # Multi-row statements, not executemany (as data_keys' insert): a first-ever
            # audience page stores ~1,000 references, and a step per row was an own statement
            # execution each (bind, step, reset) for one B-tree insert.
            insert_rows(
                conn,
                "INSERT INTO stored_refs (owner, ref, tag)",
                rows,
                "ON CONFLICT (owner) DO NOTHING",
            )
            if conn.total_changes - before == len(rows):
                return {}  # every row stored (the usual case: no pair per row built for it)
            ours = {owner: (ref, tag) for owner, ref, tag in rows}
            return {o: row for o, row in _stored_refs(conn, owners).items() if row != ours[o]}

    def register_holder(self, process: ProcessIdentity) -> int:
        """A new pool holder for ``process``; its id."""
        with self._write() as conn:
            return _register(conn, process)

    def pool_holders(self) -> dict[int, ProcessIdentity | None]:
        """Every pool holder with the process it stands for (``None``: the process removed its
        row at a clean stop, keeping the marks of ids it had handed out)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT holder, boot_id, pid_ns, pid, started FROM pool_holders"
            ).fetchall()
            orphaned = conn.execute(
                "SELECT DISTINCT holder FROM data_keys WHERE holder IS NOT NULL "
                "AND holder NOT IN (SELECT holder FROM pool_holders)"
            ).fetchall()
        found: dict[int, ProcessIdentity | None] = {
            int(h): ProcessIdentity(str(b), str(n), int(p), str(s)) for h, b, n, p, s in rows
        }
        found.update({int(h): None for (h,) in orphaned})
        return found

    def held_by(self, holder: int) -> list[str]:
        """The owners of the keys ``holder`` made ahead and still holds."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT owner FROM data_keys WHERE holder = ? ORDER BY owner", (holder,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def release_holder(self, holder: int, unused: Collection[str], *, settled: bool) -> int:
        """In one transaction: delete the keys of ``unused`` that ``holder`` still holds (no value
        was ever sealed under them) and the holder's row; with ``settled`` its other keys are
        known to be used and become ordinary keys, else they keep their mark (a later sweep
        decides them). Returns how many keys were deleted."""
        with self._write() as conn:
            return _release(conn, holder, unused, settled=settled)

    def delete_unused(self, owners: Collection[str]) -> int:
        """Delete keys no value was ever sealed under (a pool's keys made ahead, never handed
        out): secure_delete zeroes them, but they are not shreds (no ref kept, no generation
        bump: no cache anywhere can hold a key whose owner id never left its process)."""
        wanted = sorted(set(owners))
        with self._write() as conn:
            return _delete_owners(conn, wanted)

    def shred_generation(self) -> int:
        """A counter every shred increments (by any connection): caches of unwrapped keys
        compare it to notice shreds made elsewhere with one single-row read."""
        with self._generation_lock:  # not the key file's lock: see __init__
            if self._closed:
                raise VaultUnavailableError("the vault key store is closed")
            try:
                row = self._generation_conn.execute(
                    "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'shred_generation'"
                ).fetchone()
            except sqlite3.Error as exc:
                raise VaultUnavailableError(f"vault key file error: {exc}") from exc
        return int(row[0])

    def not_under(self, kek_id: str, after: str, limit: int) -> list[tuple[str, WrappedKey]]:
        """Up to ``limit`` keys not wrapped under ``kek_id``, with owner > ``after``, by owner."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT owner, kek_id, wrapped FROM data_keys WHERE kek_id != ? AND owner > ? "
                "ORDER BY owner LIMIT ?",
                (kek_id, after, limit),
            ).fetchall()
        return [(owner, WrappedKey(kid, bytes(blob))) for owner, kid, blob in rows]

    def owners_starting(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` owners with a data key whose id starts with ``prefix``, in order: one
        range of the owner index (``prefix`` <= owner < ``prefix`` with its last character
        incremented), not a LIKE (which the index would not serve under NOCASE rules)."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        with self._read() as conn:
            return [
                str(row[0])
                for row in conn.execute(
                    "SELECT owner FROM data_keys WHERE owner >= ? AND owner < ? "
                    "ORDER BY owner LIMIT ?",
                    (prefix, upper, limit),
                )
            ]

    @staticmethod
    def _refuse_retired(conn: sqlite3.Connection, kek_ids: Collection[str]) -> None:
        wanted = sorted(kek_ids)
        if not wanted:
            return
        retired = [
            kek_id
            for (kek_id,) in conn.execute(
                f"SELECT kek_id FROM retired_keks WHERE kek_id IN ({_marks(len(wanted))})",  # noqa: S608 - placeholders only
                wanted,
            )
        ]
        if retired:
            raise KekRetiredError(retired)

    def replace_wrapped(self, updates: Sequence[tuple[str, WrappedKey, WrappedKey]]) -> int:
        """Swap ``old`` for ``new`` per owner in one transaction, only where the row is still
        ``old`` (compare-and-set: a key shredded meanwhile is never brought back). Returns rows
        changed. Refuses (:class:`KekRetiredError`) a ``new`` under a retired KEK."""
        with self._write() as conn:
            self._refuse_retired(conn, {new.kek_id for _, _, new in updates})
            before = conn.total_changes
            conn.executemany(
                "UPDATE data_keys SET kek_id = ?, wrapped = ? "
                "WHERE owner = ? AND kek_id = ? AND wrapped = ?",
                [
                    (new.kek_id, new.blob, owner, old.kek_id, old.blob)
                    for owner, old, new in updates
                ],
            )
            return conn.total_changes - before

    def retire(self, kek_ids: Collection[str]) -> None:
        """List ``kek_ids`` as retired: from this commit on no key under them can be stored."""
        now = int(time.time())
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO retired_keks (kek_id, retired_at) VALUES (?, ?) "
                "ON CONFLICT (kek_id) DO NOTHING",
                [(kek_id, now) for kek_id in sorted(kek_ids)],
            )

    def retired(self) -> set[str]:
        """The KEK ids listed as retired."""
        with self._read() as conn:
            return {str(k) for (k,) in conn.execute("SELECT kek_id FROM retired_keks")}

    def kek_ids_in_use(self) -> set[str]:
        """The KEK ids that wrap at least one data key (an index scan, not a table scan)."""
        with self._read() as conn:
            return {str(k) for (k,) in conn.execute("SELECT DISTINCT kek_id FROM data_keys")}

    def count_by_kek(self, *, include_reserved: bool = True) -> dict[str, int]:
        """Number of keys wrapped under each KEK (``include_reserved``: the reference root
        key too, which rotation must move like any data key)."""
        where = "" if include_reserved else f"WHERE owner NOT LIKE '{RESERVED_OWNER_PREFIX}%' "
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT kek_id, count(*) FROM data_keys {where}GROUP BY kek_id"  # noqa: S608 - constant
            )
            return {str(kek_id): int(count) for kek_id, count in rows.fetchall()}

    def checkpoint(self) -> bool:
        """Fold the WAL into the main file and truncate it; ``False`` if a reader blocked that."""
        with self._lock:
            if self._closed:
                raise VaultUnavailableError("the vault key store is closed")
            try:
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise VaultUnavailableError(f"vault key file checkpoint failed: {exc}") from exc
            return bool(busy == 0)

    def close(self) -> None:
        """Close both connections."""
        with self._lock, self._generation_lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
                self._generation_conn.close()


def _migrate_data(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('shred_generation', '0') "
        "ON CONFLICT (key) DO NOTHING"
    )
    _migrate_shredded_owners(conn)
    _add_holder(conn)
    _store_in_time_order(conn)


def _add_holder(conn: sqlite3.Connection) -> None:
    """Schema 3 → 4: the pool holder of a key made ahead (``NULL`` for every other key, and for
    every key of an older file: those pools are not known any more). Idempotent."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(data_keys)")}
    if "holder" not in columns:
        conn.execute("ALTER TABLE data_keys ADD COLUMN holder INTEGER")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS data_keys_by_holder ON data_keys (holder) "
        "WHERE holder IS NOT NULL"
    )


# Schema 4 → 5, after data_keys_v5 was made with _DATA_KEYS_COLUMNS (_store_in_time_order).
_INTO_TIME_ORDER = """
INSERT INTO data_keys_v5 (owner, kek_id, wrapped, created_at, holder)
    SELECT owner, kek_id, wrapped, created_at, holder FROM data_keys ORDER BY created_at, owner;
DROP TABLE data_keys;
ALTER TABLE data_keys_v5 RENAME TO data_keys;
CREATE INDEX data_keys_by_kek ON data_keys (kek_id);
CREATE INDEX data_keys_by_holder ON data_keys (holder) WHERE holder IS NOT NULL;
"""


def _store_in_time_order(conn: sqlite3.Connection) -> None:
    """Schema 4 → 5: rebuild a ``data_keys`` keyed by owner (WITHOUT ROWID) as the rowid table
    of :data:`_SCHEMA` (rows in the order they were stored, owners in a UNIQUE index), inside
    the schema migration's transaction (a crash leaves the old table; the next open redoes it).
    Same rows, same columns; secure_delete is on, so dropping the old table zeroes its pages.
    Runs once per file (a rewrite of every key: 4 s CPU for 500,000 keys, measured)."""
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'data_keys'"
    ).fetchone()
    if "WITHOUT ROWID" not in str(sql).upper():
        return
    conn.execute(f"CREATE TABLE data_keys_v5 ({_DATA_KEYS_COLUMNS})")
    for statement in statements(_INTO_TIME_ORDER):
        conn.execute(statement)


def _migrate_shredded_owners(conn: sqlite3.Connection) -> None:
    """Version 1 kept shredded owner ids in clear (table ``shredded``): replace them by their
    digests, inside the schema migration's transaction (idempotent: re-run after a crash until
    the table is gone). secure_delete is on, so dropping the table zeroes the pages that held
    the ids."""
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'shredded'"
    ).fetchone():
        return
    rows = conn.execute("SELECT owner, shredded_at FROM shredded").fetchall()
    conn.executemany(
        "INSERT INTO shredded_refs (ref, shredded_at) VALUES (?, ?) ON CONFLICT (ref) DO NOTHING",
        [(_legacy_shred_ref(owner), at) for owner, at in rows],
    )
    conn.execute("DROP TABLE shredded")
