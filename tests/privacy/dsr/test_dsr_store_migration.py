"""The DSR store migrates a schema-3 file (before held recipient notices) forward on open."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from privacy.dsr.store import SCHEMA_VERSION, SqliteDsrStore

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_a_schema_3_file_gets_the_erasure_id_column_and_holds_and_releases_notices(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dsr.sqlite3"
    SqliteDsrStore(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:  # make it a schema-3 file
        conn.execute("DROP INDEX deliveries_erasure")
        conn.execute("ALTER TABLE deliveries DROP COLUMN erasure_id")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
        conn.commit()

    store = SqliteDsrStore(path)
    try:
        store.hold("req-1", "e_1", NOW, [("recipient:ml", "https://x", "msg_1", "ev", b"sealed")])
        assert store.due_deliveries(NOW) == []  # held until the erasure completes
        assert store.held_erasures(NOW.replace(year=2027)) == ["e_1"]
        assert store.release("e_1", NOW) == 1
        assert [d.webhook_id for d in store.due_deliveries(NOW)] == ["msg_1"]
        assert store.release("e_1", NOW) == 0  # idempotent
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert int(version[0]) == SCHEMA_VERSION == 4
