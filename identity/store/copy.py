"""Copy an identity graph into any graph store, in batches, through the port.

Used by ``idgraph store copy`` to move a graph from the embedded store to Neo4j, or back from
Neo4j to an SQLite file. The source is a :class:`CopySource` (an SQLite file, read here; a Neo4j
database, read by :class:`identity.store.neo4j.Neo4jCopySource`). The target is written only
through :meth:`GraphTransaction.apply`, so the copy is backend-neutral and the target enforces
its own constraints on every row; the same checks run whichever way the copy goes (the target
must be empty or hold an unfinished copy of this source, both ends of every link in one person,
a source of a newer schema refused).

The source is read with a read-only ``sqlite3`` connection inside one read transaction: under
WAL that is a consistent snapshot even if the service keeps writing, and the copy never takes a
write lock on the live file.

Order and atomicity: persons are copied in ``person_id`` order, ``batch_size`` persons per target
transaction, each with all its identifier nodes, links, facts and consent records (both ends of a
link belong to one person, and facts and consents hang off one of the person's nodes, so a batch
is self-contained); then
refusals, in insertion order. A batch is written whole or not at all. Facts are copied with every
status, their ids and their sealed values as they are: ciphertext is bound to the fact's node id
and field, which the copy keeps, so the vault opens it in the target without re-sealing. Consent
records are copied as they are (ids, times, proofs): their history is evidence and is never
rewritten.

Resuming: the target's transaction keeps a meta entry (:class:`CursorTransaction`; both stores:
Neo4j a ``(:Meta)`` node, SQLite a row of its ``meta`` table), and the position reached is
written *in the same transaction* as the batch, so after a crash or Ctrl-C a re-run continues
after the last committed batch: nothing is copied twice and nothing is skipped. Every page is read
by key (persons after the last person id, refusals after the last refusal key), never by offset.
A finished copy's cursor says ``done`` and names no person. A target whose store could not keep a
cursor would have to be empty when the copy starts. A resumed copy assumes the source did not
change in between (stop writers, or copy from a backup): a person created since the first run
with an id below the cursor would be missed.

From Neo4j there is no snapshot to read from (Neo4j reads are read-committed, per transaction):
each batch is read in its own read transaction, so the copy is consistent only if nothing writes
the source meanwhile. Stop the writers (or copy a restored backup) before copying from Neo4j.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from identity.errors import IdGraphError, StoreIntegrityError, StoreUnavailableError
from identity.hashing import HashedIdentifier
from identity.model import (
    ChangeSet,
    ConsentRecord,
    ConsentSignal,
    DoNotLinkRule,
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
from identity.store.port import GraphStore, GraphTransaction
from identity.store.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from storage.sqlite import connect_read_only

DEFAULT_BATCH_SIZE = 1000
_SQLITE_PARAMS = 500  # bound parameters per IN list, as in the SQLite store


@runtime_checkable
class CursorTransaction(GraphTransaction, Protocol):
    """A transaction that can also keep small key/value entries (the copy's resume cursor)."""

    def get_meta(self, key: str) -> str | None:
        """The value stored under ``key``, or ``None``."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` in this transaction."""
        ...


# Where refusal pages continue: SQLite, the row id; Neo4j, the element id of the last refusal.
RefusalKey = int | str


@runtime_checkable
class CopySource(Protocol):
    """A graph to copy from, read in pages by key (persons by id, refusals by a key).

    Refusal keys are source-specific and increasing (SQLite: the row id; Neo4j: the element id):
    the cursor keeps the last one copied, so a page never depends on how many rows came before
    it (no ``SKIP``: rows deleted meanwhile cannot shift a page).
    """

    @property
    def cursor_key(self) -> str:
        """The key of this source's resume cursor in the target (names the source)."""
        ...

    def persons_total(self) -> int:
        """How many persons the source holds."""
        ...

    def persons_upto(self, person_id: str) -> int:
        """How many persons have an id ``<= person_id`` (for progress after a resume)."""
        ...

    def refusals_total(self) -> int:
        """How many refusals the source holds."""
        ...

    def refusals_upto(self, position: RefusalKey) -> int:
        """How many refusals are at or before ``position``."""
        ...

    def persons_after(self, person_id: str, limit: int) -> list[PersonRecord]:
        """The next ``limit`` persons by id after ``person_id``."""
        ...

    def nodes_of(self, person_ids: Sequence[str]) -> list[IdentifierNode]:
        """The identifier nodes of these persons."""
        ...

    def links_from(self, node_ids: Sequence[str]) -> list[Link]:
        """The links whose ``a`` end is one of these nodes."""
        ...

    def facts_of(self, node_ids: Sequence[str]) -> list[Fact]:
        """Every fact (every kind and status) anchored to these nodes."""
        ...

    def consents_of(self, node_ids: Sequence[str]) -> list[ConsentRecord]:
        """Every consent record anchored to these nodes."""
        ...

    def suppressed_after(self, after: tuple[bytes, str, str], limit: int) -> list[HashedIdentifier]:
        """Suppression entries after ``after`` (digest, type, key id), in that order."""
        ...

    def do_not_link_after(self, rule_id: str, limit: int) -> list[DoNotLinkRule]:
        """Do-not-link rules after ``rule_id``, in id order."""
        ...

    def refusals_after(self, position: RefusalKey, limit: int) -> list[tuple[RefusalKey, Refusal]]:
        """The next ``limit`` refusals after ``position``, with their keys."""
        ...

    def close(self) -> None:
        """Release the source."""
        ...


class CopyTargetNotEmptyError(IdGraphError):
    """The copy target already holds a graph that is not a partial copy of this source."""

    code = "copy-target-not-empty"


@dataclass(frozen=True, slots=True)
class CopyProgress:
    """How far a copy is; passed to the progress callback after every committed batch."""

    persons_done: int
    persons_total: int
    refusals_done: int
    refusals_total: int


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What one run of :func:`copy_graph` copied (a resumed run counts only its own rows)."""

    persons: int
    identifiers: int
    links: int
    refusals: int
    resumed: bool
    batches: int
    facts: int = 0
    consents: int = 0
    suppressed: int = 0  # suppression entries new in the target
    do_not_link: int = 0  # do-not-link rules new in the target


@dataclass(frozen=True, slots=True)
class _Cursor:
    after_person: str = ""
    after_refusal: RefusalKey = 0
    done: bool = False

    def dumps(self) -> str:
        return json.dumps(
            {
                "after_person": self.after_person,
                "after_refusal": self.after_refusal,
                "done": self.done,
            }
        )

    @staticmethod
    def loads(raw: str) -> _Cursor:
        data = json.loads(raw)
        after = data["after_refusal"]
        return _Cursor(
            str(data["after_person"]),
            after if isinstance(after, int) else str(after),
            bool(data["done"]),
        )


def _dt(ms: int) -> datetime:
    # The inverse of the stores' datetime -> epoch-ms conversion; exact for whole milliseconds.
    return datetime.fromtimestamp(ms / 1000, UTC)


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _chunks(items: Sequence[str], size: int = _SQLITE_PARAMS) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# The reads of the copy source that differ between schema ≤ 6 (rows refer to each other by
# public ids) and 7 (by integer keys); ``{marks}`` is a list of placeholders.
_TEXT_SQL = {
    "nodes": "SELECT node_id, type, key_id, digest, person_id, first_seen, last_seen "
    "FROM identifiers WHERE person_id IN ({marks}) ORDER BY node_id",
    "links": "SELECT a, b, source, first_at, last_at FROM links "
    "WHERE a IN ({marks}) ORDER BY a, b, source",
    "facts": "SELECT fact_id, node_id, kind, name, category, at, source, status, sealed, pii "
    "FROM facts WHERE node_id IN ({marks}) ORDER BY fact_id",
}
_KEYED_SQL = {
    "nodes": "SELECT i.node_id, i.type, i.key_id, i.digest, p.person_id, i.first_seen, "
    "i.last_seen FROM persons p JOIN identifiers i ON i.person = p.pk "
    "WHERE p.person_id IN ({marks}) ORDER BY i.node_id",
    "links": "SELECT na.node_id, nb.node_id, l.source, l.first_at, l.last_at FROM identifiers na "
    "JOIN links l ON l.a = na.pk JOIN identifiers nb ON nb.pk = l.b "
    "WHERE na.node_id IN ({marks}) ORDER BY na.node_id, nb.node_id, l.source",
    "facts": "SELECT f.fact_id, i.node_id, f.kind, f.name, f.category, f.at, f.source, f.status, "
    "f.sealed, f.pii FROM identifiers i JOIN facts f ON f.node = i.pk "
    "WHERE i.node_id IN ({marks}) ORDER BY f.fact_id",
}


def cursor_key(source: Path) -> str:
    """The ``(:Meta)`` key of the resume cursor of a copy from ``source``."""
    return f"copy_cursor:{source.resolve()}"


class _SqliteSource:
    """Read-only, snapshot reads of an SQLite graph file (a :class:`CopySource`)."""

    def __init__(self, path: Path) -> None:
        self.cursor_key = cursor_key(path)
        if not path.is_file():
            raise StoreUnavailableError(f"copy source {path} does not exist")
        # Read-only: the copy must never modify (or create) the source file.
        self._conn = connect_read_only(path, 10_000, StoreUnavailableError, "copy source")
        try:
            self._conn.execute("BEGIN")  # one snapshot for the whole copy
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot read SQLite store at {path}: {exc}") from exc
        if row is None or int(row[0]) > SQLITE_SCHEMA_VERSION:
            version = "none" if row is None else row[0]
            raise StoreIntegrityError(
                f"{path} has schema version {version}; this idgraph copies version "
                f"{SQLITE_SCHEMA_VERSION}"
            )
        # A file last opened by an idgraph from before facts has no facts table (the store
        # creates it on open, but the copy opens the source read-only): it has no facts.
        self.has_facts = self._has_table("facts")
        # Likewise consents, for a file last opened by an idgraph from before schema version 2.
        self.has_consents = self._has_table("consents")
        # And the suppression list (version 3).
        self.has_suppressed = self._has_table("suppressed")
        self.has_do_not_link = self._has_table("do_not_link")
        # And the refusals' anchor node (version 5): older refusals have none.
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(refusals)")}
        self._anchor = "anchor_node" if "anchor_node" in columns else "NULL"
        # Schema 7 keys rows by integers (persons.pk, identifiers.pk, facts.node, links.a/b);
        # older files refer by public ids. Either way the copy reads public ids only.
        keyed = "pk" in {row[1] for row in self._conn.execute("PRAGMA table_info(persons)")}
        self._sql = _KEYED_SQL if keyed else _TEXT_SQL

    def _has_table(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._conn.execute(query, (name,)).fetchone() is not None

    def close(self) -> None:
        self._conn.close()

    def _count(self, table: str, where: str = "", params: Sequence[Any] = ()) -> int:
        # Only fixed table names and conditions from this module are interpolated.
        query = f"SELECT count(*) FROM {table} {where}"  # noqa: S608
        return int(self._conn.execute(query, params).fetchone()[0])

    def persons_total(self) -> int:
        return self._count("persons")

    def persons_upto(self, person_id: str) -> int:
        return self._count("persons", "WHERE person_id <= ?", (person_id,))

    def refusals_total(self) -> int:
        return self._count("refusals")

    def refusals_upto(self, position: RefusalKey) -> int:
        return self._count("refusals", "WHERE refusal_id <= ?", (_row_id(position),))

    def persons_after(self, person_id: str, limit: int) -> list[PersonRecord]:
        rows = self._conn.execute(
            "SELECT person_id, created_at, last_seen FROM persons WHERE person_id > ? "
            "ORDER BY person_id LIMIT ?",
            (person_id, limit),
        )
        return [PersonRecord(p, _dt(created), _dt(seen)) for p, created, seen in rows]

    def nodes_of(self, person_ids: Sequence[str]) -> list[IdentifierNode]:
        nodes: list[IdentifierNode] = []
        for chunk in _chunks(person_ids):
            rows = self._conn.execute(
                self._sql["nodes"].format(marks=_marks(len(chunk))),
                chunk,
            )
            nodes.extend(
                IdentifierNode(
                    node_id,
                    HashedIdentifier(type_, key_id, bytes(digest)),
                    person,
                    _dt(first),
                    _dt(last),
                )
                for node_id, type_, key_id, digest, person, first, last in rows
            )
        return nodes

    def links_from(self, node_ids: Sequence[str]) -> list[Link]:
        links: list[Link] = []
        for chunk in _chunks(node_ids):
            rows = self._conn.execute(
                self._sql["links"].format(marks=_marks(len(chunk))),
                chunk,
            )
            links.extend(Link(a, b, src, _dt(first), _dt(last)) for a, b, src, first, last in rows)
        return links

    def facts_of(self, node_ids: Sequence[str]) -> list[Fact]:
        if not self.has_facts:
            return []
        facts: list[Fact] = []
        for chunk in _chunks(node_ids):
            rows = self._conn.execute(
                self._sql["facts"].format(marks=_marks(len(chunk))),
                chunk,
            )
            facts.extend(
                Fact(
                    fact_id,
                    node_id,
                    FactKind(kind),
                    name,
                    category,
                    _dt(at),
                    source,
                    FactStatus(status),
                    bytes(sealed),
                    tuple(p for p in pii.split(",") if p),
                )
                for fact_id, node_id, kind, name, category, at, source, status, sealed, pii in rows
            )
        return facts

    def consents_of(self, node_ids: Sequence[str]) -> list[ConsentRecord]:
        if not self.has_consents:
            return []
        records: list[ConsentRecord] = []
        for chunk in _chunks(node_ids):
            rows = self._conn.execute(
                "SELECT record_id, node_id, purpose, granted, at, recorded_at, source, signal, "  # noqa: S608 - placeholders only
                "lawful_basis, proof FROM consents "
                f"WHERE node_id IN ({_marks(len(chunk))}) ORDER BY record_id",
                chunk,
            )
            records.extend(
                ConsentRecord(
                    row[0],
                    row[1],
                    row[2],
                    bool(row[3]),
                    _dt(row[4]),
                    _dt(row[5]),
                    row[6],
                    ConsentSignal(row[7]),
                    row[8],
                    row[9],
                )
                for row in rows
            )
        return records

    def suppressed_after(self, after: tuple[bytes, str, str], limit: int) -> list[HashedIdentifier]:
        """Suppression entries after ``after`` (digest, type, key id), in key order."""
        if not self.has_suppressed:
            return []
        rows = self._conn.execute(
            "SELECT digest, type, key_id FROM suppressed WHERE (digest, type, key_id) > (?, ?, ?) "
            "ORDER BY digest, type, key_id LIMIT ?",
            (*after, limit),
        )
        return [HashedIdentifier(type_, key_id, bytes(digest)) for digest, type_, key_id in rows]

    def do_not_link_after(self, rule_id: str, limit: int) -> list[DoNotLinkRule]:
        """Do-not-link rules after ``rule_id``, in id order."""
        if not self.has_do_not_link:
            return []
        rows = self._conn.execute(
            "SELECT rule_id, a, b, created_at FROM do_not_link WHERE rule_id > ? "
            "ORDER BY rule_id LIMIT ?",
            (rule_id, limit),
        )
        return [DoNotLinkRule(rid, a, b, _dt(at)) for rid, a, b, at in rows]

    def refusals_after(self, position: RefusalKey, limit: int) -> list[tuple[RefusalKey, Refusal]]:
        refusal_id = _row_id(position)
        rows = self._conn.execute(
            "SELECT refusal_id, at, source, type, key_id, digest, reason, detail, "  # noqa: S608 - a fixed column name or NULL
            f"{self._anchor} FROM refusals WHERE refusal_id > ? ORDER BY refusal_id LIMIT ?",
            (refusal_id, limit),
        )
        return [
            (
                rid,
                Refusal(
                    HashedIdentifier(type_, key_id, bytes(digest)),
                    RefusalReason(reason),
                    detail,
                    source,
                    _dt(at),
                    anchor_node=anchor,
                ),
            )
            for rid, at, source, type_, key_id, digest, reason, detail, anchor in rows
        ]


def _row_id(position: RefusalKey) -> int:
    # A cursor of this source holds row ids; the start of a copy is 0.
    return position if isinstance(position, int) else 0


def _suppress(hashes: Sequence[HashedIdentifier], tx: GraphTransaction) -> int:
    return tx.suppress(hashes)


def _add_rules(rules: Sequence[DoNotLinkRule], tx: GraphTransaction) -> int:
    return sum(tx.add_do_not_link(rule) for rule in rules)


def _read_cursor(tx: GraphTransaction, key: str) -> tuple[bool, _Cursor | None]:
    if not isinstance(tx, CursorTransaction):
        return False, None
    raw = tx.get_meta(key)
    return True, None if raw is None else _Cursor.loads(raw)


class _Copy:
    """One run of :func:`copy_graph`: the reader, the target, the cursor and the counters."""

    def __init__(
        self,
        reader: CopySource,
        target: GraphStore,
        key: str,
        batch_size: int,
        progress: Callable[[CopyProgress], None] | None,
    ) -> None:
        self.reader, self.target, self.key = reader, target, key
        self.batch_size, self.progress = batch_size, progress
        self.can_resume, cursor = target.read(lambda tx: _read_cursor(tx, key))
        if cursor is None:
            if target.stats() != StoreStats(0, 0, 0, 0):
                raise CopyTargetNotEmptyError(
                    "the copy target already holds a graph (and no unfinished copy of this "
                    "source); copy into an empty store"
                )
            cursor = _Cursor()
        self.cursor = cursor
        self.resumed = cursor != _Cursor()
        self.persons_total = reader.persons_total()
        self.refusals_total = reader.refusals_total()
        self.persons_done = (
            self.persons_total if cursor.done else reader.persons_upto(cursor.after_person)
        )
        self.refusals_done = reader.refusals_upto(cursor.after_refusal)
        self.copied = {
            "persons": 0,
            "identifiers": 0,
            "links": 0,
            "facts": 0,
            "consents": 0,
            "refusals": 0,
            "batches": 0,
        }

    def run(self) -> CopyReport:
        self._report()
        while not self.cursor.done:
            if not self._copy_persons():
                self._copy_refusals()
            self._report()
        suppressed = self._copy_suppressed()
        rules = self._copy_do_not_link()
        c = self.copied
        return CopyReport(
            c["persons"],
            c["identifiers"],
            c["links"],
            c["refusals"],
            self.resumed,
            c["batches"],
            c["facts"],
            c["consents"],
            suppressed,
            rules,
        )

    def _copy_suppressed(self) -> int:
        """Copy the suppression list, in batches; returns the entries new in the target.

        Without it, a copied graph would let erased persons be re-created by the next ingest.
        Idempotent (an entry already there is kept), so a resumed copy simply repeats it.
        """
        created = 0
        after = (b"", "", "")
        while batch := self.reader.suppressed_after(after, self.batch_size):
            created += self.target.write(functools.partial(_suppress, batch))
            last = batch[-1]
            after = (last.digest, last.type, last.key_id)
        return created

    def _copy_do_not_link(self) -> int:
        """Copy the do-not-link rules (after every person, so both nodes exist); returns how
        many are new in the target. Idempotent, like the suppression list: without them a
        copied graph would merge what operators unlinked."""
        created = 0
        after = ""
        while batch := self.reader.do_not_link_after(after, self.batch_size):
            created += self.target.write(functools.partial(_add_rules, batch))
            after = batch[-1].rule_id
        return created

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(
                CopyProgress(
                    self.persons_done, self.persons_total, self.refusals_done, self.refusals_total
                )
            )

    def _commit(self, changes: ChangeSet, cursor: _Cursor) -> None:
        key, can_resume = self.key, self.can_resume

        def run(tx: GraphTransaction) -> None:
            tx.apply(changes)
            # Same transaction as the rows: the cursor can never run ahead of (or lag behind)
            # what the target holds.
            if can_resume and isinstance(tx, CursorTransaction):
                tx.set_meta(key, cursor.dumps())

        self.target.write(run)
        self.cursor = cursor
        self.copied["batches"] += 1

    def _copy_persons(self) -> bool:
        """Copy the next batch of persons; ``False`` when there are none left."""
        persons = self.reader.persons_after(self.cursor.after_person, self.batch_size)
        if not persons:
            return False
        nodes = self.reader.nodes_of([p.person_id for p in persons])
        links = self.reader.links_from([n.node_id for n in nodes])
        # Selected by node, so every fact of the batch has its anchor in the batch. The source
        # holds at most one active attribute per (node, name) and one raw identifier per node,
        # so the target's upserts insert each fact as it is (same id, value and status).
        facts = self.reader.facts_of([n.node_id for n in nodes])
        consents = self.reader.consents_of([n.node_id for n in nodes])  # appended as they are
        person_of = {n.node_id: n.person_id for n in nodes}
        if any(person_of.get(link.b) != person_of[link.a] for link in links):
            # The stores keep both ends of a link in one person; a batch relies on that, and a
            # target must not receive two persons joined by a link (in this batch or not).
            raise StoreIntegrityError("the source has a link between two persons")
        changes = ChangeSet(
            new_persons=tuple(persons),
            new_nodes=tuple(nodes),
            links=tuple(links),
            facts=tuple(facts),
            consents=tuple(consents),
        )
        self._commit(changes, _Cursor(persons[-1].person_id, self.cursor.after_refusal))
        self.persons_done += len(persons)
        self.copied["persons"] += len(persons)
        self.copied["identifiers"] += len(nodes)
        self.copied["links"] += len(links)
        self.copied["facts"] += len(facts)
        self.copied["consents"] += len(consents)
        return True

    def _copy_refusals(self) -> None:
        refusals = self.reader.refusals_after(self.cursor.after_refusal, self.batch_size)
        done = len(refusals) < self.batch_size
        cursor = _Cursor(
            # A finished copy's cursor keeps no person id: the person may be erased later, and
            # its id must not stay behind in the target's meta entry (privacy invariant 3).
            "" if done else self.cursor.after_person,
            refusals[-1][0] if refusals else self.cursor.after_refusal,
            done=done,
        )
        if refusals or self.can_resume:
            # The last batch also marks the cursor done, so a re-run is a no-op.
            self._commit(ChangeSet(refusals=tuple(r for _, r in refusals)), cursor)
        else:
            self.cursor = cursor
        self.refusals_done += len(refusals)
        self.copied["refusals"] += len(refusals)


def copy_graph(
    source: Path | CopySource,
    target: GraphStore,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[CopyProgress], None] | None = None,
) -> CopyReport:
    """Copy the graph at ``source`` (an SQLite file, or a :class:`CopySource` such as a Neo4j
    database) into ``target``; resume a copy cut short. A given source stays open: the caller
    closes it.

    ``batch_size`` persons (with their identifiers, links, facts and consents), or refusals, go
    in one target transaction; ``progress`` is called at the start and after every batch. Raises
    :class:`CopyTargetNotEmptyError` if ``target`` holds data that is not an unfinished copy of
    ``source``. Constraint violations in the target surface as the target's own errors
    (``StoreIntegrityError``) and roll the batch back.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if not isinstance(source, Path):
        return _Copy(source, target, source.cursor_key, batch_size, progress).run()
    with closing(_SqliteSource(source)) as reader:
        return _Copy(reader, target, reader.cursor_key, batch_size, progress).run()
