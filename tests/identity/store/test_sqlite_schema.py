"""The SQLite graph store's schema versions: older files are migrated forward when opened."""

from __future__ import annotations

import gc
import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from identity.errors import StoreIntegrityError
from identity.hashing import Keyring
from identity.model import (
    ChangeSet,
    ConsentRecord,
    ConsentSignal,
    EventCountRule,
    MemberScan,
    Outcome,
)
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store import sqlite as sqlite_store
from identity.store.sqlite import SqliteGraphStore
from privacy.keys.vault import Vault
from storage.sqlite import (
    GRAPH_READ_MMAP_BYTES,
    GRAPH_WAL_AUTOCHECKPOINT_PAGES,
    configure_graph_connection,
    map_graph_reads,
)
from tests.conftest import Ids
from tests.identity.store import graph_fixture

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# The DDL of version 6 as it was (version 7 rebuilt the graph tables); version 1 is the part of
# it before the first "Since version 2" marker.
V6_SCHEMA = (FIXTURES / "graph-schema-v6.sql").read_text()
V1_SCHEMA = V6_SCHEMA.split("-- Since version 2.")[0]


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
        (row,) = store.read(lambda tx: tx.member_page(scan, "", 10)).rows
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


def _copy_v6_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "v6.sqlite3"
    shutil.copyfile(FIXTURES / "graph-v6.sqlite3", path)
    path.chmod(0o600)
    return path


def test_the_v6_fixture_is_a_version_6_file_with_text_keys(tmp_path: Path) -> None:
    path = _copy_v6_fixture(tmp_path)
    assert _version(path) == 6
    conn = sqlite3.connect(path)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(identifiers)")}
    finally:
        conn.close()
    assert "person_id" in columns
    assert "pk" not in columns


def test_a_version_6_file_reads_back_the_same_graph_after_migrating_to_integer_keys(
    tmp_path: Path,
) -> None:
    """The fixture was written and dumped by the idgraph of schema 6 (graph_fixture.py): every
    person, node, link, fact, consent, rule, refusal, suppression and outbox row reads back the
    same through the store after the migration, and the file has integer keys."""
    path = _copy_v6_fixture(tmp_path)
    expected = json.loads((FIXTURES / "graph-v6.dump.json").read_text())
    store = SqliteGraphStore(path)
    try:
        assert graph_fixture.dump(store) == expected
    finally:
        store.close()
    assert _version(path) == sqlite_store.SCHEMA_VERSION
    conn = sqlite3.connect(path)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(identifiers)")}
        assert {"pk", "person"} <= columns
        assert "person_id" not in columns
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert not {t for t in tables if t.endswith("_v6")}
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # Links refer to nodes by internal key, in the node-id order of the domain's Link.
        (misordered,) = conn.execute(
            "SELECT count(*) FROM links l JOIN identifiers a ON a.pk = l.a "
            "JOIN identifiers b ON b.pk = l.b WHERE a.node_id >= b.node_id"
        ).fetchone()
        assert misordered == 0
    finally:
        conn.close()
    # Reopened: nothing to migrate, same graph.
    store = SqliteGraphStore(path)
    try:
        assert graph_fixture.dump(store) == expected
    finally:
        store.close()


def test_a_migrated_version_6_file_takes_new_writes_and_erasures(
    tmp_path: Path, keyring: Keyring, policy: IdentityPolicy, ids: Ids, vault: Vault
) -> None:
    path = _copy_v6_fixture(tmp_path)
    store = SqliteGraphStore(path)
    try:
        before = store.stats()
        engine = ResolutionEngine(store, keyring, policy, sealer=vault)
        (created,) = engine.ingest([ids.event(("email", "new@shop.de"), ("cookie_id", "c-new"))])
        assert created.outcome is Outcome.CREATED
        # An old person gains a node: links and the node refer to the old person's keys.
        # A fixture person: the new person's random id sorts first now and then (it was
        # picked as "old" and merged into itself, a flaky FOREIGN KEY failure).
        page = store.read(lambda tx: tx.member_page(MemberScan(), "", 2)).rows
        old = next(row.person_id for row in page if row.person_id != created.person_id)
        old_node = store.read(lambda tx: tx.cluster(old)).nodes[0]
        merged = ChangeSet(merged={created.person_id or "": old})
        store.write(lambda tx: tx.apply(merged))
        cluster = store.read(lambda tx: tx.cluster(old))
        assert {n.person_id for n in cluster.nodes} == {old}
        assert len(cluster.nodes) >= 3
        assert old_node in cluster.nodes
        assert engine.resolve(ids("cookie_id", "c-new")) == old
        counts = store.write(lambda tx: tx.erase_person(old))
        assert counts.persons == 1
        assert store.read(lambda tx: tx.person(old)) is None
        assert store.stats().persons == before.persons - 1  # one created, merged, erased
    finally:
        store.close()


def test_a_failed_migration_leaves_the_version_6_file_as_it_was(tmp_path: Path) -> None:
    path = _copy_v6_fixture(tmp_path)
    conn = sqlite3.connect(path)
    # A node whose person is gone (impossible with the store's foreign keys, forced here):
    # the copy cannot give it a person key, so the whole migration rolls back.
    conn.execute(
        "INSERT INTO identifiers VALUES ('n_orphan', 'email', 'k1', x'02', 'p_gone', 0, 0)"
    )
    conn.commit()
    conn.close()
    with pytest.raises(StoreIntegrityError):
        SqliteGraphStore(path)
    assert _version(path) == 6
    conn = sqlite3.connect(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "identifiers_v6" not in tables
        assert conn.execute("SELECT count(*) FROM identifiers").fetchone()[0] == 297
    finally:
        conn.close()


def test_the_store_and_the_bench_floors_checkpoint_per_64_mib_of_wal(tmp_path: Path) -> None:
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    try:
        (pages,) = store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()
    finally:
        store.close()
    assert pages == GRAPH_WAL_AUTOCHECKPOINT_PAGES > 1000  # SQLite's default is 1,000
    conn = sqlite3.connect(tmp_path / "floor.sqlite3", isolation_level=None)
    try:
        configure_graph_connection(conn, "FULL", 1000, 8, StoreIntegrityError)
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == pages
    finally:
        conn.close()


def test_reads_go_through_a_memory_map_and_writes_do_not_when_the_store_is_open(
    tmp_path: Path,
) -> None:
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    try:
        store.write(lambda tx: tx.set_meta("probe", "written"))
        # A read on the mapped connection sees what the write connection committed.
        assert store.read(lambda tx: tx.get_meta("probe")) == "written"
        mapped = store.read(lambda tx: tx._conn.execute("PRAGMA mmap_size").fetchone()[0])
        unmapped = store.write(lambda tx: tx._conn.execute("PRAGMA mmap_size").fetchone()[0])
    finally:
        store.close()
    # SQLite clamps the request to its compile-time limit; any map at all is the point.
    assert 0 < mapped <= GRAPH_READ_MMAP_BYTES
    assert unmapped == 0  # a bulk ingest's resident set does not grow by mapped pages
    floor = sqlite3.connect(tmp_path / "graph.sqlite3", isolation_level=None)
    try:
        map_graph_reads(floor)  # what the audience bench floor does: the same map
        assert floor.execute("PRAGMA mmap_size").fetchone()[0] == mapped
    finally:
        floor.close()


def _live_connections() -> list[sqlite3.Connection]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, sqlite3.Connection)]


def test_a_closed_store_leaves_no_connection_behind(tmp_path: Path) -> None:
    # The schema 5 → 6 column step was decorated with an lru_cache by mistake (meant for the
    # timestamp conversion below it): the cache kept every connection ever opened alive.
    # Only connections made here count: earlier tests' leftovers may be freed meanwhile (a plain
    # count then fell below its start), and holding them keeps their ids from being reused.
    before = _live_connections()
    known = {id(c) for c in before}
    for n in range(5):
        store = SqliteGraphStore(tmp_path / f"graph-{n}.sqlite3")
        store.close()
        del store
    assert [c for c in _live_connections() if id(c) not in known] == []
    del before


def test_the_write_connection_keeps_statement_journals_in_memory_when_the_store_opens(
    tmp_path: Path,
) -> None:
    # Without it a multi-row write that outgrows its statement journal's memory share spills
    # to a temporary file: one per bulk batch, and hundreds per thousands of one-event writes
    # (the comment at the pragma in identity/store/sqlite.py has the measurement). Reads run on
    # the other connection and keep SQLite's default.
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    try:
        (writer,) = store._conn.execute("PRAGMA temp_store").fetchone()
        (reader,) = store._reader.execute("PRAGMA temp_store").fetchone()
    finally:
        store.close()
    assert writer == 2  # MEMORY
    assert reader == 0  # DEFAULT
