"""The SQLite graph store's schema versions: older files are migrated forward when opened."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from identity.errors import StoreIntegrityError
from identity.model import (
    ChangeSet,
    ConsentRecord,
    ConsentSignal,
    EventCountRule,
    MemberScan,
)
from identity.store import sqlite as sqlite_store
from identity.store.sqlite import SqliteGraphStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
# Version 1 is the DDL before the first "Since version 2" marker of the schema.
V1_SCHEMA = sqlite_store._SCHEMA.split("-- Since version 2.")[0]


def _objects(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        )
    finally:
        conn.close()


@pytest.fixture
def v1_file(tmp_path: Path) -> Path:
    """A graph file as idgraph with schema version 1 left it: one person, a node, an event."""
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO persons VALUES ('p1', ?, ?)", (T0_MS, T0_MS))
    conn.execute(
        "INSERT INTO identifiers VALUES ('n1', 'email', 'k1', x'01', 'p1', ?, ?)", (T0_MS, T0_MS)
    )
    conn.execute(
        "INSERT INTO facts VALUES ('f1', 'n1', 'event', 'purchase', 'commerce', ?, 'web', "
        "'active', x'00', '')",
        (T0_MS,),
    )
    conn.commit()
    conn.close()
    path.chmod(0o600)  # as idgraph left it: owner-only (a looser file is refused on open)
    return path


def test_v1_schema_has_no_consents_so_the_fixture_is_really_old(v1_file: Path) -> None:
    assert "consents" not in _objects(v1_file)
    assert "facts_events" not in _objects(v1_file)


def test_a_version_1_file_gets_the_consents_table_and_the_new_version_when_opened(
    v1_file: Path,
) -> None:
    store = SqliteGraphStore(v1_file)
    try:
        record = ConsentRecord(
            "c1", "n1", "marketing", True, T0, T0, "api", ConsentSignal.DIRECT, "consent", "ab"
        )
        store.write(lambda tx: tx.apply(ChangeSet(consents=(record,))))
        assert store.read(lambda tx: tx.person_consents("p1", ["marketing"])) == [record]
        # The old data is intact and the event index built over it.
        scan = MemberScan(event_rules=(EventCountRule("purchase", T0, 1),))
        (row,) = store.read(lambda tx: tx.member_page(scan, "", 10))
        assert row.person_id == "p1"
        assert store.stats().consents == 1
        assert store.stats().facts == 1
    finally:
        store.close()
    objects = _objects(v1_file)
    assert {"consents", "consents_by_id", "consents_by_purpose", "facts_events"} <= objects
    assert _version(v1_file) == sqlite_store.SCHEMA_VERSION
    # Reopening a migrated file changes nothing.
    SqliteGraphStore(v1_file).close()
    assert _version(v1_file) == sqlite_store.SCHEMA_VERSION


def test_a_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.sqlite3"
    SqliteGraphStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'",
        (str(sqlite_store.SCHEMA_VERSION + 1),),
    )
    conn.commit()
    conn.close()
    with pytest.raises(StoreIntegrityError, match="newer"):
        SqliteGraphStore(path)
