"""The SQLite store writes a bulk batch's rows as a few wide statements (multi-row ``VALUES``) and
looks its digests up in wide ``IN`` lists, so the bulk writer thread gives the GIL back a few
dozen times per batch, not twice per row (see ``storage.sqlite.WIDE_PARAMS``). What must
not change: the same rows, upserts applied row by row in order, lookups that find each node once,
and stored times that never mix up the two instants of a DST fold.

``test_a_batch_of_new_identifiers_is_written_in_few_statements_...`` fails on the old code (one
statement per row: 20,000 and more)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from identity.hashing import HashedIdentifier
from identity.model import (
    ChangeSet,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    Link,
    PersonRecord,
)
from identity.store.sqlite import SqliteGraphStore, _Millis, _ms

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _hashed(index: int) -> HashedIdentifier:
    return HashedIdentifier("email", "k1", index.to_bytes(4, "big") * 8)


def _batch(persons: int, start: int = 0) -> ChangeSet:
    """``persons`` new persons of two linked nodes each; the first node holds a raw value."""
    new_persons, nodes, links, facts = [], [], [], []
    for i in range(start, start + persons):
        person = f"p_{i:024x}"
        at = T0 + timedelta(seconds=i)
        new_persons.append(PersonRecord(person, at, at))
        a, b = f"n_{2 * i:030x}", f"n_{2 * i + 1:030x}"
        nodes += [
            IdentifierNode(a, _hashed(2 * i), person, at, at),
            IdentifierNode(b, _hashed(2 * i + 1), person, at, at),
        ]
        links.append(Link(a, b, "crm", at, at))
        facts.append(
            Fact(
                f"f_{i:028x}",
                a,
                FactKind.RAW_IDENTIFIER,
                "email",
                "identifier",
                at,
                "crm",
                FactStatus.ACTIVE,
                b"sealed",
                (),
            )
        )
    return ChangeSet(
        new_persons=tuple(new_persons),
        new_nodes=tuple(nodes),
        links=tuple(links),
        facts=tuple(facts),
        messages=tuple(i.to_bytes(16, "big") for i in range(start, start + persons)),
    )


def test_a_batch_of_new_identifiers_is_written_in_few_statements_when_it_is_large(
    tmp_path: Path,
) -> None:
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)  # every statement run, executemany rows too
    try:
        store.write(lambda tx: tx.apply(_batch(5_000)))
    finally:
        store._conn.set_trace_callback(None)
    stats = store.stats()
    store.close()
    # 5,000 persons, 10,000 nodes, 5,000 links, 5,000 facts, 5,000 message ids: one statement
    # per row was 30,000 statements.
    assert stats.persons == 5_000
    assert stats.identifiers == 10_000
    assert stats.links == 5_000
    # SQLite traces a multi-row upsert once per row with the same (expanded) text: counted once.
    runs = [s for i, s in enumerate(statements) if not i or s != statements[i - 1]]
    assert len(runs) < 100


def test_batch_rows_read_back_as_written_when_written_in_wide_statements(tmp_path: Path) -> None:
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    store.write(lambda tx: tx.apply(_batch(3_000)))
    store.write(lambda tx: tx.apply(_batch(1_000, start=3_000)))  # keys continue after the first
    wanted = [_hashed(2 * i) for i in (0, 2_999, 3_000, 3_999)]
    found = store.read(lambda tx: tx.find_identifiers(wanted))
    cluster = store.read(lambda tx: tx.cluster(f"p_{3_999:024x}"))
    raw = store.read(lambda tx: tx.node_facts([f"n_{2 * 3_999:030x}"], FactKind.RAW_IDENTIFIER))
    seen = store.read(lambda tx: tx.seen_messages([(5).to_bytes(16, "big"), b"\xff" * 16]))
    store.close()
    assert sorted(n.node_id for n in found) == sorted(
        f"n_{2 * i:030x}" for i in (0, 2_999, 3_000, 3_999)
    )
    assert {n.person_id for n in found if n.node_id == f"n_{2 * 3_999:030x}"} == {f"p_{3_999:024x}"}
    assert [(x.a, x.b, x.first_at) for x in cluster.links] == [
        (f"n_{2 * 3_999:030x}", f"n_{2 * 3_999 + 1:030x}", T0 + timedelta(seconds=3_999))
    ]
    assert [(f.fact_id, f.sealed) for f in raw] == [(f"f_{3_999:028x}", b"sealed")]
    assert seen == {(5).to_bytes(16, "big")}


def test_a_lookup_finds_each_node_once_when_its_list_is_padded(tmp_path: Path) -> None:
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    store.write(lambda tx: tx.apply(_batch(10)))
    # Three digests are looked up as four (the last one repeated): still one node each.
    wanted = [_hashed(0), _hashed(99_999), _hashed(2)]
    found = store.read(lambda tx: tx.find_identifiers(wanted))
    suppressed = store.read(lambda tx: tx.suppressed(wanted))
    store.close()
    assert sorted(n.node_id for n in found) == [f"n_{0:030x}", f"n_{2:030x}"]
    assert suppressed == set()


def test_upserts_in_one_wide_statement_apply_row_by_row_when_a_batch_repeats_a_key(
    tmp_path: Path,
) -> None:
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    store.write(lambda tx: tx.apply(_batch(1)))
    a, b = f"n_{0:030x}", f"n_{1:030x}"
    late, early = T0 + timedelta(hours=2), T0 - timedelta(hours=1)

    def attribute(fact_id: str, at: datetime, sealed: bytes) -> Fact:
        return Fact(
            fact_id,
            a,
            FactKind.ATTRIBUTE,
            "city",
            "location",
            at,
            "crm",
            FactStatus.ACTIVE,
            sealed,
            (),
        )

    # The newer value first, then an older one in the same statement: the newer one stays.
    store.write(
        lambda tx: tx.apply(
            ChangeSet(
                facts=(attribute("f_new", late, b"newer"), attribute("f_old", early, b"older")),
                links=(Link(a, b, "crm", early, late),),
            )
        )
    )
    facts = store.read(lambda tx: tx.node_facts([a], FactKind.ATTRIBUTE))
    cluster = store.read(lambda tx: tx.cluster(f"p_{0:024x}"))
    store.close()
    assert [(f.fact_id, f.sealed, f.at) for f in facts] == [("f_new", b"newer", late)]
    assert [(x.first_at, x.last_at) for x in cluster.links] == [(early, late)]


def test_stored_times_keep_the_two_instants_of_a_dst_fold_apart_when_one_write_has_both() -> None:
    zone = ZoneInfo("America/New_York")  # 2026-11-01 01:30 happens twice (EDT, then EST)
    first = datetime(2026, 11, 1, 1, 30, tzinfo=zone)
    second = first.replace(fold=1)
    for order in ((first, second), (second, first)):
        millis = _Millis().of
        assert [millis(m) for m in order] == [_ms(m) for m in order]
    assert _Millis().of(second) == _ms(first) + 3_600_000


def test_rows_per_statement_are_powers_of_two_when_batches_differ_in_size(tmp_path: Path) -> None:
    """So that a few statement texts serve every batch (each length is a text of its own in the
    statement cache, and a wide one holds megabytes)."""
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)  # expanded: the bound values inlined
    try:
        store.write(lambda tx: tx.apply(_batch(1_237)))
        store.write(lambda tx: tx.find_identifiers([_hashed(i) for i in range(1_237)]))
        store.write(lambda tx: tx.apply(_batch(977, start=1_237)))
        store.write(lambda tx: tx.find_identifiers([_hashed(i) for i in range(977)]))
    finally:
        store._conn.set_trace_callback(None)
    store.close()
    inserts = [s for s in statements if s.startswith("INSERT INTO identifiers")]
    lookups = [s for s in statements if "WHERE i.digest IN (" in s]
    rows = [s.count("),(") + 1 for s in inserts]
    listed = [s.split("WHERE i.digest IN (", 1)[1].count(",") + 1 for s in lookups]
    assert sum(rows) == 2 * (1_237 + 977)
    assert all(n & (n - 1) == 0 for n in rows + listed)


def test_a_batch_of_merges_and_touches_is_applied_set_based_with_the_rows_executemany_wrote(
    tmp_path: Path,
) -> None:
    """Known rows are updated by a few ``UPDATE ... FROM (VALUES ...)`` statements, not one
    statement per row (each gave the bulk writer's GIL away); the rows end as before: absorbed
    persons' nodes moved to their survivor and the absorbed persons deleted, seen windows only
    widened, persons' last_seen only raised."""
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    store.write(lambda tx: tx.apply(_batch(2_000)))
    early, late = T0 - timedelta(days=1), T0 + timedelta(days=30)
    merged = {f"p_{2 * i + 1:024x}": f"p_{2 * i:024x}" for i in range(1_000)}
    # The first node of every even person seen earlier and later; of every odd person at the
    # very time it was seen (its window stays).
    touched = {
        f"n_{2 * i:030x}": (early, late) if i % 2 == 0 else (T0 + timedelta(seconds=i),) * 2
        for i in range(2_000)
    }
    seen = {f"p_{2 * i:024x}": late if i % 2 == 0 else early for i in range(1_000)}
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        store.write(
            lambda tx: tx.apply(ChangeSet(touched=touched, merged=merged, persons_seen=seen))
        )
    finally:
        store._conn.set_trace_callback(None)
    stats = store.stats()
    survivor = store.read(lambda tx: tx.cluster(f"p_{0:024x}"))
    other = store.read(lambda tx: tx.cluster(f"p_{2:024x}"))
    absorbed = store.read(lambda tx: tx.person(f"p_{1:024x}"))
    kept = store.read(lambda tx: tx.person(f"p_{2:024x}"))
    raised = store.read(lambda tx: tx.person(f"p_{0:024x}"))
    store.close()
    # One statement per row was 1,000 + 2,000 + 1,000 + 1,000 statements (and GIL releases).
    runs = [s for i, s in enumerate(statements) if not i or s != statements[i - 1]]
    assert len(runs) < 40
    assert stats.persons == 1_000
    assert stats.identifiers == 4_000
    assert absorbed is None
    assert sorted(n.node_id for n in survivor.nodes) == [f"n_{k:030x}" for k in range(4)]
    windows = {n.node_id: (n.first_seen, n.last_seen) for n in survivor.nodes + other.nodes}
    assert windows[f"n_{0:030x}"] == (early, late)  # person 0's first node: widened both ways
    assert windows[f"n_{2:030x}"] == (T0 + timedelta(seconds=1),) * 2  # inside: unchanged
    assert windows[f"n_{1:030x}"] == (T0, T0)  # not touched
    assert raised is not None
    assert raised.last_seen == late
    assert kept is not None
    assert kept.last_seen == T0 + timedelta(seconds=2)  # an earlier time does not lower it


def test_set_based_updates_seek_each_row_by_its_unique_key_when_many_rows_are_updated(
    tmp_path: Path,
) -> None:
    """The plan of each wide ``UPDATE ... FROM (VALUES ...)`` the store runs: the values
    scanned, each target row found through an index (a scan of the table per statement would
    read a million rows at scale)."""
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    store.write(lambda tx: tx.apply(_batch(4_000)))
    later = T0 + timedelta(days=1)
    changes = ChangeSet(
        touched={f"n_{2 * i:030x}": (later, later) for i in range(2_048)},
        merged={f"p_{2 * i + 1:024x}": f"p_{2 * i:024x}" for i in range(1_024)},
        persons_seen={f"p_{2 * i:024x}": later for i in range(1_024)},
    )
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)  # expanded: the bound values inlined
    try:
        store.write(lambda tx: tx.apply(changes))
    finally:
        store._conn.set_trace_callback(None)
    updates = list(dict.fromkeys(s for s in statements if s.startswith("UPDATE ")))
    plans = [
        [row[3] for row in store._conn.execute(f"EXPLAIN QUERY PLAN {sql}")] for sql in updates
    ]
    store.close()
    assert len(updates) == 3  # touched, merged, persons seen: one statement each
    for details in plans:
        assert "SCAN v" in details
        assert any(d.startswith("SEARCH ") for d in details)
        assert not any(d.startswith(("SCAN identifiers", "SCAN persons")) for d in details)


def test_a_wide_suppression_check_answers_alike_whether_the_list_is_read_whole_or_looked_up(
    tmp_path: Path,
) -> None:
    """A batch of >= 256 digests reads a suppression list of at most an eighth of them whole
    (one bounded read instead of a wide IN list); a longer list, or a narrow batch, is looked
    up. Each way, exactly the suppressed candidates come back: a suppressed digest under another
    type or key id suppresses nothing."""
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    batch = [_hashed(i) for i in range(400)]  # 400 distinct digests: an eighth is 50
    same_digest_other_type = HashedIdentifier("phone", "k1", _hashed(7).digest)
    short = [_hashed(3), _hashed(250), same_digest_other_type, _hashed(10_000)]  # 4 rows
    store.write(lambda tx: tx.suppress(short))
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    # In the writer's transaction, where ingest asks.
    wide_short = store.write(lambda tx: tx.suppressed(batch))
    narrow = store.write(lambda tx: tx.suppressed(batch[:5]))
    store._conn.set_trace_callback(None)
    assert wide_short == {_hashed(3), _hashed(250)}
    assert narrow == {_hashed(3)}
    reads = [s for s in statements if "FROM suppressed" in s]
    assert len(reads) == 2
    assert "LIMIT 51" in reads[0]  # the wide batch read the list whole
    assert "WHERE digest IN" in reads[1]  # the narrow one looked it up

    # A list longer than an eighth of the batch: looked up, same answer.
    store.write(lambda tx: tx.suppress([_hashed(i) for i in range(1_000, 1_060)]))  # 64 rows
    statements.clear()
    store._conn.set_trace_callback(statements.append)
    wide_long = store.write(lambda tx: tx.suppressed([*batch, _hashed(1_059)]))
    store._conn.set_trace_callback(None)
    store.close()
    assert wide_long == {_hashed(3), _hashed(250), _hashed(1_059)}
    reads = [s for s in statements if "FROM suppressed" in s]
    assert "LIMIT 51" in reads[0]  # tried first, 51 rows came back: too many
    assert all("WHERE digest IN" in s for s in reads[1:])
