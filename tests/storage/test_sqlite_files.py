"""Every SQLite file of the service is opened by the one opener (storage/sqlite.py): owner-only
mode, WAL, busy timeout, and a schema created in one write transaction, so processes that open a
brand-new file at the same moment all succeed."""

from __future__ import annotations

import ast
import multiprocessing
import sqlite3
import stat
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from identity.errors import ConfigurationError, StoreUnavailableError
from identity.store.sqlite import SqliteGraphStore
from storage.sqlite import connect_private, connect_read_only, migrate_schema, statements
from tests.conftest import REPO

ROUNDS = 3
PROCESSES = 4


def _open_vault_keys(path: Path) -> None:
    from privacy.keys.vault_sqlite import SqliteVaultKeyStore

    SqliteVaultKeyStore(path).close()


def _open_graph(path: Path) -> None:
    SqliteGraphStore(path).close()


def _open_audit(path: Path) -> None:
    from privacy.auditing.log import SqliteAuditLog

    SqliteAuditLog(path).close()


def _open_dsr(path: Path) -> None:
    from privacy.dsr.store import SqliteDsrStore

    SqliteDsrStore(path).close()


def _open_control(path: Path) -> None:
    from privacy.access.api_keys import ApiKeyStore
    from privacy.access.audiences import SqliteAudienceStore

    ApiKeyStore(path)
    SqliteAudienceStore(path, _AesSealer())


class _AesSealer:
    """A real AES-GCM sealer (no vault file needed: a new store has no rules to seal)."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def encrypt(self, owner: str, field: str, plaintext: bytes) -> bytes:
        import os

        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, f"{owner}|{field}".encode())

    def decrypt(self, owner: str, field: str, blob: bytes) -> bytes:
        return self._aead.decrypt(blob[:12], blob[12:], f"{owner}|{field}".encode())


def _open_replay_guard(path: Path) -> None:
    from privacy.transport.webhooks import SqliteReplayGuard

    SqliteReplayGuard(path).close()


def _open_operators(path: Path) -> None:
    from privacy.access.operators import SqliteOperatorStore

    SqliteOperatorStore(path).close()


OPENERS: dict[str, Callable[[Path], None]] = {
    "vault-keys.sqlite3": _open_vault_keys,
    "graph.sqlite3": _open_graph,
    "audit.sqlite3": _open_audit,
    "dsr.sqlite3": _open_dsr,
    "control.sqlite3": _open_control,
    "webhooks.sqlite3": _open_replay_guard,
    "operators.sqlite3": _open_operators,
}


def _racer(root: str, barrier: Any, results: Any) -> None:
    # One child: in every round, for every file, wait for the others, then open the same
    # brand-new file at the same moment.
    failures = []
    for round_no in range(ROUNDS):
        for name, opener in OPENERS.items():
            path = Path(root) / str(round_no) / name
            barrier.wait()
            try:
                opener(path)
            except Exception:  # noqa: BLE001 - reported to the parent, which fails the test
                failures.append(f"{name}: {traceback.format_exc(limit=1).strip()}")
    results.put(failures)


def test_new_files_are_created_by_racing_processes_when_opened_at_once(tmp_path: Path) -> None:
    # Two processes creating vault-keys.sqlite3 at once could fail on `meta` (schema created
    # outside a transaction): every idgraph file is raced here, several rounds each.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES, timeout=120)
    results = ctx.Queue()
    children = [
        ctx.Process(target=_racer, args=(str(tmp_path), barrier, results)) for _ in range(PROCESSES)
    ]
    for child in children:
        child.start()
    failures = [line for _ in children for line in results.get(timeout=300)]
    for child in children:
        child.join(timeout=60)
    assert failures == []
    assert all(child.exitcode == 0 for child in children)
    for name in OPENERS:
        path = tmp_path / "0" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_graph_store_tightens_a_copied_file_and_others_refuse_it_when_opened(
    tmp_path: Path,
) -> None:
    # The graph store has always set a copied (0644) file to 0600 on open; the other files
    # refuse it (an operator must hear that a key or audit file was readable by others).
    path = tmp_path / "graph.sqlite3"
    SqliteGraphStore(path).close()
    path.chmod(0o644)
    SqliteGraphStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    other = tmp_path / "other.sqlite3"
    connect_private(other, 1_000, StoreUnavailableError, "test file").close()
    other.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        connect_private(other, 1_000, StoreUnavailableError, "test file")


def test_read_only_opener_refuses_a_loose_mode_and_never_creates_when_reading(
    tmp_path: Path,
) -> None:
    path = tmp_path / "graph.sqlite3"
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        connect_read_only(path, 1_000, StoreUnavailableError, "copy source")
    assert not path.exists()
    SqliteGraphStore(path).close()
    conn = connect_read_only(path, 1_000, StoreUnavailableError, "copy source")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM meta")
    conn.close()
    path.chmod(0o640)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        connect_read_only(path, 1_000, StoreUnavailableError, "copy source")


def test_migration_is_rolled_back_whole_when_a_step_fails(tmp_path: Path) -> None:
    conn = connect_private(tmp_path / "x.sqlite3", 1_000, StoreUnavailableError, "test file")
    schema = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"

    def fail(_: sqlite3.Connection) -> None:
        raise RuntimeError("step failed")

    with pytest.raises(RuntimeError):
        migrate_schema(conn, schema, 1, StoreUnavailableError, "test file", after=fail)
    assert not conn.in_transaction
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone() is None
    migrate_schema(conn, schema, 1, StoreUnavailableError, "test file")
    assert conn.execute("SELECT value FROM meta").fetchone() == ("1",)
    conn.close()


def test_statements_split_on_statement_ends_only_when_a_script_has_triggers() -> None:
    script = """
    CREATE TABLE t (v TEXT DEFAULT 'a;b'); -- a comment; with a semicolon
    CREATE TRIGGER t_no_update BEFORE UPDATE ON t BEGIN SELECT RAISE(ABORT, 'no; never'); END;
    """
    parts = list(statements(script))
    assert len(parts) == 2
    assert "RAISE(ABORT, 'no; never'); END;" in parts[1]


def test_only_the_opener_connects_to_sqlite_when_production_code_opens_a_file() -> None:
    packages = ("storage", "identity", "privacy", "services", "bootstrap", "api", "cli")
    calls = []
    for package in (*packages, "console", "stream"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "connect"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "sqlite3"
                ):
                    calls.append(path.relative_to(REPO).as_posix())
    assert sorted(set(calls)) == ["storage/sqlite.py"]


def test_bytes_parameters_are_bound_unchanged_through_a_registered_adapter_when_written(
    tmp_path: Path,
) -> None:
    # CPython's sqlite3 sends every bytes parameter through its adaptation protocol; without a
    # registered adapter each one costs a formatted, discarded AttributeError (~3,000
    # instructions). storage.sqlite registers bytes itself: the table hits and the very same
    # object is bound.
    assert sqlite3.adapters.get((bytes, sqlite3.PrepareProtocol)) is bytes
    digest = bytes(range(256)) * 3
    conn = connect_private(tmp_path / "blobs.sqlite3", 1_000, StoreUnavailableError, "test file")
    try:
        conn.execute("CREATE TABLE blobs (value BLOB NOT NULL)")
        conn.execute("INSERT INTO blobs (value) VALUES (?)", (digest,))
        conn.executemany("INSERT INTO blobs (value) VALUES (?)", [(b"",), (b"\x00" * 32,)])
        rows = conn.execute("SELECT typeof(value), value FROM blobs ORDER BY rowid").fetchall()
    finally:
        conn.close()
    assert rows == [("blob", digest), ("blob", b""), ("blob", b"\x00" * 32)]
