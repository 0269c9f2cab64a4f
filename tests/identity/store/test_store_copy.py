"""copy_graph: an SQLite graph copied through the port arrives whole, once, and resumably."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import shutil
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from identity.errors import StoreIntegrityError, StoreUnavailableError
from identity.hashing import HashedIdentifier
from identity.model import (
    RESTRICTION_PURPOSE,
    ChangeSet,
    ConsentRecord,
    ConsentSignal,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    Link,
    PersonRecord,
    Refusal,
    RefusalReason,
    StoreStats,
)
from identity.resolution import ResolutionEngine
from identity.store.copy import (
    CopyProgress,
    CopyTargetNotEmptyError,
    CursorTransaction,
    copy_graph,
    cursor_key,
)
from identity.store.port import GraphTransaction
from identity.store.sqlite import SqliteGraphStore, _SqliteTransaction
from tests.conftest import Ids

T = TypeVar("T")
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PERSONS = 23
REFUSALS = 9
# Facts the source ends with: 23 current city attributes (p_000's replaced by a newer value),
# 8 x 2 purchase events and a note, 5 raw identifiers, 6 quarantined attributes.
FACTS = 23 + 17 + 5 + 6
# Consent records: a marketing decision per person, an analytics one for every third person (on
# its last node) and a restriction for p_005.
CONSENTS = 23 + 8 + 1


def _hash(type_: str, n: int, key_id: str = "k1") -> HashedIdentifier:
    return HashedIdentifier(type_, key_id, n.to_bytes(32, "big"))


def _facts(p: int, at: datetime) -> list[Fact]:
    """Facts of person ``p``: every kind and status, with and without PII entity types."""
    node = f"n_{p:03d}_0"
    last = f"n_{p:03d}_{p % 3}"

    def fact(n: int, anchor: str, kind: FactKind, name: str, **kw: Any) -> Fact:
        return Fact(
            f"f_{p:03d}_{n}",
            anchor,
            kind,
            name,
            kw.get("category", "location"),
            kw.get("at", at),
            "crm",
            kw.get("status", FactStatus.ACTIVE),
            bytes([p, n]) + b"\x00sealed",
            kw.get("pii", ()),
        )

    facts = [fact(0, node, FactKind.ATTRIBUTE, "city")]
    if p % 3 == 0:
        facts += [
            fact(n, last, FactKind.EVENT, "purchase", category="commerce", at=at + timedelta(n))
            for n in (1, 2)
        ]
    if p % 5 == 0:
        facts.append(fact(3, node, FactKind.RAW_IDENTIFIER, "email", category="contact"))
    if p % 4 == 0:
        quarantined = FactStatus.QUARANTINED
        facts.append(fact(4, last, FactKind.ATTRIBUTE, "city", status=quarantined, pii=("PERSON",)))
    if p == 7:
        facts.append(fact(5, node, FactKind.EVENT, "note", pii=("EMAIL_ADDRESS", "PHONE_NUMBER")))
    return facts


def _consents(p: int, at: datetime) -> list[ConsentRecord]:
    """Consent records of person ``p``, with odd times and every field varied."""

    def record(
        n: int, anchor: str, purpose: str, granted: bool, signal: ConsentSignal
    ) -> ConsentRecord:
        return ConsentRecord(
            f"c_{p:03d}_{n}",
            anchor,
            purpose,
            granted,
            at + timedelta(seconds=n, milliseconds=3),
            at + timedelta(hours=1, milliseconds=n),
            "cmp:test" if n else "api",
            signal,
            "consent" if granted else "objection",
            f"{p:02x}{n:02x}" * 16,
        )

    records = [record(0, f"n_{p:03d}_0", "marketing", p % 2 == 0, ConsentSignal.TCF)]
    if p % 3 == 0:
        records.append(record(1, f"n_{p:03d}_{p % 3}", "analytics", True, ConsentSignal.DIRECT))
    if p == 5:
        records.append(record(2, "n_005_0", RESTRICTION_PURPOSE, False, ConsentSignal.RESTRICTION))
    return records


def _build_source(path: Path) -> None:
    """23 persons of 1-3 identifiers with links and facts, one merge, 9 refusals, odd times."""
    store = SqliteGraphStore(path)
    try:
        persons, nodes, links, facts, consents = [], [], [], [], []
        for p in range(PERSONS):
            at = T0 + timedelta(minutes=p, milliseconds=p * 7)
            person = f"p_{p:03d}"
            persons.append(PersonRecord(person, at, at + timedelta(days=1)))
            ids = [f"n_{p:03d}_{k}" for k in range(1 + p % 3)]
            types = ["email", "phone", "cookie_id"]
            nodes += [
                IdentifierNode(i, _hash(types[k], p * 10 + k), person, at, at + timedelta(hours=k))
                for k, i in enumerate(ids)
            ]
            source = "web" if p % 2 else "crm"
            links += [Link(a, b, source, at, at) for a, b in itertools.pairwise(ids)]
            facts += _facts(p, at)
            consents += _consents(p, at)
        refusals = tuple(
            Refusal(_hash("email", 1000 + r), RefusalReason.LIMIT_EXCEEDED, "limit", "web", T0)
            for r in range(REFUSALS)
        )
        store.write(
            lambda tx: tx.apply(
                ChangeSet(
                    new_persons=tuple(persons),
                    new_nodes=tuple(nodes),
                    links=tuple(links),
                    refusals=refusals,
                    facts=tuple(facts),
                    consents=tuple(consents),
                )
            )
        )
        # A newer city for p_000 replaces the current value (the fact keeps its id).
        newer = dataclasses.replace(
            facts[0], fact_id="f_000_9", at=T0 + timedelta(days=2), source="web", sealed=b"newer"
        )
        store.write(lambda tx: tx.apply(ChangeSet(facts=(newer,))))
        # p_022 absorbs p_021, so the source has a gap in person ids and a cross-source link.
        store.write(
            lambda tx: tx.apply(
                ChangeSet(
                    merged={"p_021": "p_022"},
                    links=(Link("n_021_0", "n_022_0", "app", T0, T0),),
                )
            )
        )
    finally:
        store.close()


def _tables(
    path: Path, *, facts: bool = True, consents: bool = True
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the graph tables (refusal ids excepted: they are local row numbers), with
    public ids only: schema 7's integer keys are local row numbers too, so rows are read back
    in the shape of schema 6 (node and person ids where keys are stored) on either layout."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    keyed = "pk" in {row[1] for row in conn.execute("PRAGMA table_info(persons)")}
    if keyed:
        persons = "SELECT person_id, created_at, last_seen FROM persons ORDER BY 1"
        identifiers = (
            "SELECT i.node_id, i.type, i.key_id, i.digest, p.person_id, i.first_seen, "
            "i.last_seen FROM identifiers i JOIN persons p ON p.pk = i.person ORDER BY 1"
        )
        links = (
            "SELECT a.node_id, b.node_id, l.source, l.first_at, l.last_at FROM links l "
            "JOIN identifiers a ON a.pk = l.a JOIN identifiers b ON b.pk = l.b ORDER BY 1, 2, 3"
        )
        all_facts = (
            "SELECT f.fact_id, i.node_id, f.kind, f.name, f.category, f.at, f.source, f.status, "
            "f.sealed, f.pii FROM facts f JOIN identifiers i ON i.pk = f.node ORDER BY 1"
        )
    else:
        persons = "SELECT * FROM persons ORDER BY 1"
        identifiers = "SELECT * FROM identifiers ORDER BY 1"
        links = "SELECT * FROM links ORDER BY 1, 2, 3"
        all_facts = "SELECT * FROM facts ORDER BY 1"
    facts_query = all_facts if facts else "SELECT 1 WHERE 0"
    consents_query = "SELECT * FROM consents ORDER BY record_id" if consents else "SELECT 1 WHERE 0"
    try:
        return {
            "persons": conn.execute(persons).fetchall(),
            "identifiers": conn.execute(identifiers).fetchall(),
            "links": conn.execute(links).fetchall(),
            "refusals": conn.execute(
                "SELECT at, source, type, key_id, digest, reason, detail FROM refusals "
                "ORDER BY refusal_id"
            ).fetchall(),
            "facts": conn.execute(facts_query).fetchall(),
            "consents": conn.execute(consents_query).fetchall(),
        }
    finally:
        conn.close()


class _MetaTransaction(_SqliteTransaction):
    """The SQLite transaction, which keeps the copy cursor in the store's own ``meta`` table
    (get_meta/set_meta, as the Neo4j store does): the resume path runs without a Neo4j server."""


class _ResumableSqliteStore(SqliteGraphStore):
    """SQLite store whose transactions keep a cursor; can fail the n-th write on purpose."""

    fail_on_write: int | None = None
    writes = 0

    def write(self, fn: Callable[[_MetaTransaction], T]) -> T:
        self.writes += 1
        number = self.writes

        def run(tx: _SqliteTransaction) -> T:
            result = fn(_MetaTransaction(tx._conn))
            if number == self.fail_on_write:
                raise ConnectionError("injected: connection lost before commit")
            return result

        return super().write(run)

    def read(self, fn: Callable[[_MetaTransaction], T]) -> T:
        return super().read(lambda tx: fn(_MetaTransaction(tx._conn)))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.sqlite3"
    _build_source(path)
    return path


def test_copy_reproduces_every_row_when_the_target_is_an_empty_sqlite_store(
    source: Path, tmp_path: Path
) -> None:
    target = SqliteGraphStore(tmp_path / "target.sqlite3")
    seen: list[CopyProgress] = []
    try:
        report = copy_graph(source, target, batch_size=4, progress=seen.append)
        assert target.stats() == StoreStats(
            persons=22, identifiers=45, links=23, refusals=9, facts=FACTS, consents=CONSENTS
        )
        # p_021's consent records came along with its nodes into p_022, like its facts; the
        # records arrive whole (ids, both times, signal, proof).
        moved = target.read(lambda tx: tx.person_consents("p_022", ["marketing", "analytics"]))
        assert [r.record_id for r in moved] == ["c_021_0", "c_021_1", "c_022_0"]
        assert moved == [
            c for p in (21, 22) for c in _consents(p, T0 + timedelta(minutes=p, milliseconds=p * 7))
        ]
        restricted = target.read(lambda tx: tx.person_consents("p_005", []))
        assert [(r.purpose, r.signal) for r in restricted] == [
            (RESTRICTION_PURPOSE, ConsentSignal.RESTRICTION)
        ]
        (node,) = target.read(lambda tx: tx.find_identifiers([_hash("phone", 221)]))
        assert node.person_id == "p_022"
        assert node.last_seen == T0 + timedelta(minutes=22, milliseconds=154, hours=1)
        # p_021's facts came along with its nodes into p_022, the person that absorbed it.
        merged = target.read(
            lambda tx: tx.person_facts("p_022", (FactKind.ATTRIBUTE,), FactStatus.ACTIVE)
        )
        assert sorted(f.fact_id for f in merged) == ["f_021_0", "f_022_0"]
        (current,) = target.read(
            lambda tx: tx.person_facts("p_000", (FactKind.ATTRIBUTE,), FactStatus.ACTIVE)
        )
        assert (current.fact_id, current.sealed, current.source) == ("f_000_0", b"newer", "web")
        quarantined = target.read(lambda tx: tx.facts_page(FactStatus.QUARANTINED, "", 100))
        assert [f.fact_id for f in quarantined] == [f"f_{p:03d}_4" for p in range(0, 21, 4)]
        assert quarantined[0].pii == ("PERSON",)
    finally:
        target.close()
    assert _tables(tmp_path / "target.sqlite3") == _tables(source)
    assert (report.persons, report.identifiers, report.links, report.refusals) == (22, 45, 23, 9)
    assert report.facts == FACTS
    assert report.consents == CONSENTS
    assert not report.resumed
    assert report.batches == 6 + 3  # ceil(22 / 4) person batches, ceil(9 / 4) refusal batches
    assert seen[0] == CopyProgress(0, 22, 0, 9)
    assert seen[-1] == CopyProgress(22, 22, 9, 9)


def test_copy_reads_a_source_from_before_facts_as_one_without_facts(
    source: Path, tmp_path: Path
) -> None:
    # A file last opened by an idgraph without facts has no facts table; the copy opens the
    # source read-only, so it cannot (and must not) create it.
    conn = sqlite3.connect(source)
    conn.execute("DROP TABLE facts")
    conn.close()
    target = SqliteGraphStore(tmp_path / "target.sqlite3")
    try:
        report = copy_graph(source, target, batch_size=7)
        assert target.stats() == StoreStats(
            persons=22, identifiers=45, links=23, refusals=9, facts=0, consents=CONSENTS
        )
    finally:
        target.close()
    assert report.facts == 0
    assert _tables(tmp_path / "target.sqlite3") == _tables(source, facts=False)


def test_copy_reads_a_source_from_before_consents_as_one_without_consents(
    source: Path, tmp_path: Path
) -> None:
    # A file of schema version 1 has no consents table; the read-only copy must not need one.
    conn = sqlite3.connect(source)
    conn.execute("DROP TABLE consents")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    target = SqliteGraphStore(tmp_path / "target.sqlite3")
    try:
        report = copy_graph(source, target, batch_size=7)
        assert target.stats().consents == 0
        assert target.stats().facts == FACTS
    finally:
        target.close()
    assert report.consents == 0
    assert _tables(tmp_path / "target.sqlite3") == _tables(source, consents=False)


def test_copy_reads_a_version_6_source_with_text_keys(tmp_path: Path) -> None:
    # A file of schema 6 (rows refer to each other by public ids), written by that idgraph.
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "graph-v6.sqlite3"
    old = tmp_path / "v6.sqlite3"
    shutil.copyfile(fixture, old)
    old.chmod(0o600)
    target = SqliteGraphStore(tmp_path / "target.sqlite3")
    try:
        copy_graph(old, target, batch_size=17)
    finally:
        target.close()
    assert _tables(tmp_path / "target.sqlite3") == _tables(old)


def test_copy_never_writes_to_the_source(source: Path, tmp_path: Path) -> None:
    before = source.read_bytes()
    target = SqliteGraphStore(tmp_path / "target.sqlite3")
    try:
        copy_graph(source, target)
    finally:
        target.close()
    assert source.read_bytes() == before


def test_copy_is_refused_and_writes_nothing_when_the_target_holds_another_graph(
    source: Path, tmp_path: Path
) -> None:
    target = SqliteGraphStore(tmp_path / "target.sqlite3")
    try:
        target.write(lambda tx: tx.apply(ChangeSet(new_persons=(PersonRecord("p_x", T0, T0),))))
        with pytest.raises(CopyTargetNotEmptyError):
            copy_graph(source, target)
        assert target.stats() == StoreStats(persons=1, identifiers=0, links=0, refusals=0, facts=0)
    finally:
        target.close()


def test_copy_resumes_after_the_last_committed_batch_when_a_write_failed(
    source: Path, tmp_path: Path
) -> None:
    target = _ResumableSqliteStore(tmp_path / "target.sqlite3")
    try:
        assert target.read(lambda tx: isinstance(tx, CursorTransaction))
        target.fail_on_write = 4  # batches 1-3 commit, the 4th rolls back
        with pytest.raises(ConnectionError, match="injected"):
            copy_graph(source, target, batch_size=4)
        stats = target.stats()
        # Batches 1-3 (p_000-p_011): 12 marketing, 4 analytics records and p_005's restriction.
        assert (stats.persons, stats.facts, stats.consents) == (12, 27, 12 + 4 + 1)
        target.fail_on_write = None

        second = copy_graph(source, target, batch_size=4)
        third = copy_graph(source, target, batch_size=4)
        cursor = target.read(lambda tx: tx.get_meta(cursor_key(source)))
    finally:
        target.close()
    assert second.resumed
    assert (second.persons, second.refusals) == (22 - 12, 9)
    # Batches 1-3 (p_000-p_011) held 27 facts; the resumed run copies exactly the rest.
    assert second.facts == FACTS - 27
    assert second.consents == CONSENTS - 17
    assert third.resumed
    assert (
        third.persons,
        third.identifiers,
        third.links,
        third.facts,
        third.consents,
        third.refusals,
        third.batches,
    ) == (0, 0, 0, 0, 0, 0, 0)
    assert cursor is not None
    assert '"done": true' in cursor
    target_tables = _tables(tmp_path / "target.sqlite3")
    assert target_tables == _tables(source)


def test_copy_rolls_back_the_batch_when_the_target_refuses_a_row(
    source: Path, tmp_path: Path
) -> None:
    target = _ResumableSqliteStore(tmp_path / "target.sqlite3")

    def clash(tx: GraphTransaction) -> None:
        # Another writer stores p_004's email hash between the copy's first and second batch.
        tx.apply(
            ChangeSet(
                new_persons=(PersonRecord("p_zzz", T0, T0),),
                new_nodes=(IdentifierNode("n_zzz", _hash("email", 40), "p_zzz", T0, T0),),
            )
        )

    def interfere(progress: CopyProgress) -> None:
        if progress.persons_done == 4:
            target.write(clash)

    try:
        with pytest.raises(StoreIntegrityError):
            copy_graph(source, target, batch_size=4, progress=interfere)
        assert target.stats() == StoreStats(
            persons=5, identifiers=8, links=3, refusals=0, facts=10, consents=4 + 2
        )
        assert target.read(lambda tx: tx.cluster("p_004")).nodes == ()
        cursor = target.read(lambda tx: tx.get_meta(cursor_key(source)))
    finally:
        target.close()
    assert cursor is not None
    assert '"after_person": "p_003"' in cursor


def test_copy_refuses_a_source_link_between_two_persons_even_inside_one_batch(
    source: Path, tmp_path: Path
) -> None:
    # A link from p_010's node to p_011's (the stores never write one); both persons fall in the
    # same batch of 5, so "the other end is outside the batch" alone would not see it.
    with contextlib.closing(sqlite3.connect(source)) as conn, conn:
        conn.execute(
            "INSERT INTO links (a, b, source, first_at, last_at) "
            "VALUES ((SELECT pk FROM identifiers WHERE node_id = 'n_010_0'), "
            "(SELECT pk FROM identifiers WHERE node_id = 'n_011_0'), 'bad', 0, 0)"
        )
    target = SqliteGraphStore(tmp_path / "target.sqlite3")
    try:
        with pytest.raises(StoreIntegrityError, match="link between two persons"):
            copy_graph(source, target, batch_size=5)
        assert target.stats().persons == 10  # two whole batches; the third rolled back
    finally:
        target.close()


def test_copy_rejects_a_missing_source_without_creating_it(tmp_path: Path) -> None:
    target = SqliteGraphStore(tmp_path / "target.sqlite3")
    try:
        with pytest.raises(StoreUnavailableError):
            copy_graph(tmp_path / "nope.sqlite3", target)
    finally:
        target.close()
    assert not (tmp_path / "nope.sqlite3").exists()


def test_store_copy_command_copies_and_a_rerun_into_the_sqlite_target_copies_nothing_twice(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.store import store_app

    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    target = tmp_path / "copied.sqlite3"
    args = ["copy", "--from", f"sqlite:{source}", "--to", f"sqlite:{target}", "--batch-size", "5"]
    runner = CliRunner()

    first = runner.invoke(store_app, args)
    assert first.exit_code == 0, first.output
    assert "copied 22 persons, 45 identifiers, 23 links, 9 refusals, 51 facts in 7" in " ".join(
        first.output.split()
    )
    assert _tables(target) == _tables(source)

    # The SQLite target keeps the copy's cursor (done): a re-run resumes and finds nothing left.
    second = runner.invoke(store_app, args)
    assert second.exit_code == 0, second.output
    assert "resumed and copied 0 persons, 0 identifiers, 0 links, 0 refusals, 0 facts" in " ".join(
        second.output.split()
    )
    assert _tables(target) == _tables(source)
    # Another source into the same target is still refused.
    other = tmp_path / "other.sqlite3"
    _build_source(other)
    third = runner.invoke(
        store_app, ["copy", "--from", f"sqlite:{other}", "--to", f"sqlite:{target}"]
    )
    assert third.exit_code == 1
    assert "copy-target-not-empty" in third.output


def test_store_copy_command_refuses_an_unknown_source_or_the_same_file(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.store import store_app

    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    same = runner.invoke(
        store_app, ["copy", "--from", f"sqlite:{source}", "--to", f"sqlite:{source}"]
    )
    assert same.exit_code == 1
    assert "same SQLite file" in same.output
    # Neo4j is a source too (tests/identity/store/test_neo4j_live.py); other URLs are refused before
    # any I/O.
    other = runner.invoke(store_app, ["copy", "--from", "mysql://localhost/x", "--to", "sqlite:x"])
    assert other.exit_code == 1
    assert "configuration-invalid" in other.output
    assert "SQLite (sqlite:PATH) or Neo4j" in " ".join(other.output.split())
    assert not (tmp_path / "x").exists()


def test_store_migrate_command_creates_the_configured_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.store import store_app

    monkeypatch.setenv("IDGRAPH_STORE_URL", f"sqlite:{tmp_path / 'fresh.sqlite3'}")
    result = CliRunner().invoke(store_app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "schema ready: 0 persons" in result.output
    assert _tables(tmp_path / "fresh.sqlite3")["persons"] == []


@pytest.mark.sqlite_only
def test_copy_brings_the_do_not_link_rules_along(
    engine: ResolutionEngine, ids: Ids, tmp_path: Path
) -> None:
    ann, phone = ("email", "ann@copy.example"), ("phone", "+442079460958")
    engine.ingest([ids.event(ann, ("cookie_id", "c1")), ids.event(phone, ("cookie_id", "c2"))])
    engine.ingest([ids.event(ann, phone)])
    rule_id = engine.unlink(ids(*ann), ids(*phone)).rule_id
    target = SqliteGraphStore(tmp_path / "copy-target.sqlite3")
    try:
        report = copy_graph(tmp_path / "graph.sqlite3", target)
        assert report.do_not_link == 1
        assert [e.rule.rule_id for e in target.read(lambda tx: tx.do_not_link_page("", 10))] == [
            rule_id
        ]
    finally:
        target.close()


class _StopCopyError(Exception):
    """Ctrl-C in the middle of a copy (raised from the progress callback)."""


def test_an_interrupted_copy_into_a_plain_sqlite_store_resumes_where_it_stopped(
    source: Path, tmp_path: Path
) -> None:
    # The old SQLite store kept no cursor: an interrupted copy into it could only be refused
    # (the target was no longer empty) and had to be started again from an empty file.
    path = tmp_path / "target.sqlite3"

    def stop_after_three_batches(progress: CopyProgress) -> None:
        if progress.persons_done >= 12:
            raise _StopCopyError

    target = SqliteGraphStore(path)
    try:
        with pytest.raises(_StopCopyError):
            copy_graph(source, target, batch_size=4, progress=stop_after_three_batches)
        assert target.stats().persons == 12
        resumed = copy_graph(source, target, batch_size=4)
        cursor = target.read(lambda tx: tx.get_meta(cursor_key(source)))
    finally:
        target.close()

    assert resumed.resumed
    assert (resumed.persons, resumed.refusals) == (22 - 12, 9)
    assert _tables(path) == _tables(source)
    # The finished cursor names no person: an id erased later must not stay behind in it.
    assert cursor is not None
    state = json.loads(cursor)
    assert (state["after_person"], state["done"]) == ("", True)
