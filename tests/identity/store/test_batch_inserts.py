"""A batch's rows go into the SQLite store as one statement per table (issue 14): the same rows,
values and types as one step per row, without handing the GIL back and forth per row."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from identity.hashing import Keyring
from identity.model import FactInput, FactKind, FactStatus, IdentityEvent
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.sqlite import SqliteGraphStore, _insert_rows
from privacy.keys.keyprovider import LocalFileKeyProvider, create_kek_file
from privacy.keys.vault import Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from tests.conftest import T0, Ids


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute(
        "CREATE TABLE t (pk INTEGER PRIMARY KEY, name TEXT NOT NULL, digest BLOB, n INTEGER, "
        "note TEXT, UNIQUE (name))"
    )
    yield connection
    connection.close()


ROWS = [
    (1, "ann", b"\x00\x01\xff", 1_700_000_000_000, None),
    (2, "bob ü 東京", b"", -3, "x"),
    (3, "cy", b"z" * 40, 2**62, "a,b"),
    (4, "d'\"q\\", bytes(range(256)), 0, ""),
]


def _stored(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT pk, name, digest, typeof(digest), n, typeof(n), note, typeof(note) FROM t "
        "ORDER BY pk"
    ).fetchall()


def test_rows_inserted_as_one_statement_equal_rows_inserted_one_by_one(
    conn: sqlite3.Connection,
) -> None:
    conn.executemany("INSERT INTO t (pk, name, digest, n, note) VALUES (?, ?, ?, ?, ?)", ROWS)
    expected = _stored(conn)
    conn.execute("DELETE FROM t")

    _insert_rows(conn, "INSERT INTO t (pk, name, digest, n, note)", ROWS, blob=2)

    assert _stored(conn) == expected
    assert [row[3] for row in expected] == ["blob"] * 4
    assert [row[5] for row in expected] == ["integer"] * 4
    assert [row[7] for row in expected] == ["null", "text", "text", "text"]


def test_an_upsert_tail_applies_to_rows_inserted_as_one_statement(
    conn: sqlite3.Connection,
) -> None:
    _insert_rows(conn, "INSERT INTO t (pk, name, digest, n, note)", ROWS, blob=2)
    _insert_rows(
        conn,
        "INSERT INTO t (pk, name, digest, n, note)",
        [(9, "ann", b"\x07", 5, "new")],
        blob=2,
        tail="ON CONFLICT (name) DO UPDATE SET n = excluded.n + t.n, digest = excluded.digest",
    )
    row = conn.execute("SELECT pk, digest, n, note FROM t WHERE name = 'ann'").fetchone()
    assert row == (1, b"\x07", 1_700_000_000_005, None)


def test_a_constraint_or_an_unencodable_string_fails_the_whole_statement(
    conn: sqlite3.Connection,
) -> None:
    head = "INSERT INTO t (pk, name, digest, n, note)"
    with pytest.raises(UnicodeEncodeError):  # as sqlite3 refuses to bind it
        _insert_rows(conn, head, [(1, "a", b"", 1, None), (2, "b", b"", 2, "\udc80")], 2)
    with pytest.raises(sqlite3.IntegrityError):
        _insert_rows(conn, head, [(1, "a", b"", 1, None), (2, None, b"", 2, None)], 2)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_an_ingest_batch_writes_each_table_in_one_statement(
    tmp_path: Path, keyring: Keyring, policy: IdentityPolicy, ids: Ids
) -> None:
    create_kek_file(tmp_path / "kek.json", origin="generated")
    keys = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    vault = Vault(keys, LocalFileKeyProvider(tmp_path / "kek.json"))
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    statements: list[str] = []
    conn: sqlite3.Connection = store._conn
    conn.set_trace_callback(statements.append)
    city = FactInput(FactKind.ATTRIBUTE, "city", "location", T0, b'"Lyon"')
    events = [
        IdentityEvent(
            (ids("customer_id", f"C-{n}"), ids("email", f"p{n}@shop.de")),
            "web",
            T0,
            (city,),
            message_id=f"m-{n}",
        )
        for n in range(30)
    ]
    try:
        engine = ResolutionEngine(store, keyring, policy, sealer=vault, owner_reservations=vault)
        outcomes = engine.ingest(events)
        conn.set_trace_callback(None)

        def runs(table: str) -> int:
            return sum(1 for s in statements if s.startswith(f"INSERT INTO {table} "))

        # One statement per table, where one step per row ran 30, 60, 30 and 30 times. (Not
        # counted for facts: the trace reports a statement again at each trigger it fires.)
        assert [runs(t) for t in ("persons", "identifiers", "links", "seen_messages")] == [1] * 4
        assert store.stats().identifiers == 60
        person = outcomes[11].person_id or ""
        facts = store.read(
            lambda tx: tx.person_facts(
                person, (FactKind.RAW_IDENTIFIER, FactKind.ATTRIBUTE), FactStatus.ACTIVE
            )
        )
        plain = vault.decrypt_many([(f.node_id, f.seal_field, f.sealed) for f in facts])
        assert sorted(plain) == [b'"Lyon"', b"p11@shop.de"]
        assert engine.resolve(ids("email", "p11@shop.de")) == person
    finally:
        store.close()
        keys.close()


def test_rows_beyond_one_statement_go_in_several_in_order(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("identity.store.sqlite._ROWS_PER_STATEMENT", 3)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    rows = [(n, f"r{n}", bytes([n]) * n, n * 10, None) for n in range(1, 11)]

    _insert_rows(conn, "INSERT INTO t (pk, name, digest, n, note)", rows, blob=2)

    conn.set_trace_callback(None)
    assert sum(1 for s in statements if s.startswith("INSERT INTO t ")) == 4  # 3 + 3 + 3 + 1
    assert conn.execute("SELECT pk, name, digest, n FROM t ORDER BY pk").fetchall() == [
        (n, f"r{n}", bytes([n]) * n, n * 10) for n in range(1, 11)
    ]


def test_the_write_connection_keeps_statement_journals_in_memory(tmp_path: Path) -> None:
    # Spilled to temp files, the journals of a bulk batch's statements added ~16 % to the
    # bytes a bulk ingest wrote.
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    try:
        conn: sqlite3.Connection = store._conn
        assert conn.execute("PRAGMA temp_store").fetchone() == (2,)  # MEMORY
    finally:
        store.close()
