"""The embedded graph store: SQLite (stdlib ``sqlite3``) in WAL mode.

Durable and transactional with zero set-up; what ``make run`` uses. Every write runs in a
``BEGIN IMMEDIATE`` transaction, so the read-decide-write of a resolution batch cannot interleave
with another writer (in this process or another one: the CLI may ingest while the API serves).
``synchronous=FULL`` by default: a commit is on disk before it is acknowledged, so an
acknowledged write survives a power cut, not only a process crash.

Writes are set-based (``executemany`` and ``IN`` lists in bounded chunks), never one statement per
identifier in Python loops that the batch size does not bound.
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from identity.errors import StoreIntegrityError, StoreUnavailableError
from identity.hashing import HashedIdentifier
from identity.model import (
    RESTRICTION_PURPOSE,
    ChangeSet,
    Cluster,
    ConsentExclusion,
    ConsentGrant,
    ConsentRecord,
    ConsentSignal,
    DoNotLinkEntry,
    DoNotLinkRule,
    ErasureCounts,
    ErasureOutboxEntry,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    Link,
    MemberRow,
    MemberScan,
    MemberScanPage,
    OutboundEvent,
    PersonReadRows,
    PersonRecord,
    RefusedAnchor,
    StoreStats,
    record_fields,
)
from identity.store import sqlite_audience
from storage.sqlite import (
    GRAPH_CACHE_MIB,
    GRAPH_WAL_AUTOCHECKPOINT_PAGES,
    WIDE_PARAMS,
    connect_private,
    insert_rows,
    map_graph_reads,
    open_migrated,
    run_with_rows,
    transaction,
)

T = TypeVar("T")
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

# 1: persons, identifiers, links, refusals, facts. 2: consents, and the index member scans use
# for event rules. 3: the suppression list and the erasure outbox. 4: processed message ids and
# the outbound event outbox (stream ingest and publishing). 5: do-not-link rules (sticky
# unlink). 6: refusals.anchor_node (where the rest of the event went: an erasure follows it; a
# guarded column add, see _add_refusal_anchor). 7: integer internal keys for persons, nodes,
# facts and links, time-ordered fact ids (the tables are rebuilt on open: _set_old_tables_aside,
# _copy_old_tables). Files of older versions are migrated forward when opened (see _SCHEMA).
SCHEMA_VERSION = 7
_CHUNK = 500  # bound on bound parameters per statement; far below SQLite's limit
# suppressed(): from this many distinct digests, a suppression list of at most 1/share of them
# is read whole instead of looked up (see _SqliteTransaction._whole_suppression_list).
_SUPPRESSED_SCAN_FROM = 256
_SUPPRESSED_SCAN_SHARE = 8

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Since version 7 every graph table is keyed by integers: `pk` is the internal key (a rowid,
-- allocated in insertion order, so new rows and every index that leads with a reference append
-- at the end of their B-trees instead of touching random pages, and a reference costs 8 bytes
-- instead of a 26-42 byte id in every index that holds it). The public ids (`p_…` random,
-- `n_…` time-ordered plus 64 random bits, `f_…` time-ordered) stay as UNIQUE columns and are
-- all that ever leaves the store: an integer key says how many rows came before it, so it is
-- never exposed (not in a port type, an error, a log line or an export).
CREATE TABLE IF NOT EXISTS persons (
    pk         INTEGER PRIMARY KEY,
    person_id  TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);

-- Identifiers are stored only as keyed hashes: (type, key id, HMAC digest). No raw value.
CREATE TABLE IF NOT EXISTS identifiers (
    pk         INTEGER PRIMARY KEY,
    node_id    TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    digest     BLOB NOT NULL,
    person     INTEGER NOT NULL REFERENCES persons(pk),
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS identifiers_by_digest ON identifiers(digest, type, key_id);
CREATE INDEX IF NOT EXISTS identifiers_by_person ON identifiers(person);

-- a and b are the internal keys of the two nodes, in the order of their node ids (the domain's
-- Link has a < b by node id; key order may differ, so that is the writer's rule, not a CHECK).
-- No rowid of its own: nothing refers to a link, and a rowid would add a B-tree per link.
CREATE TABLE IF NOT EXISTS links (
    a        INTEGER NOT NULL REFERENCES identifiers(pk),
    b        INTEGER NOT NULL REFERENCES identifiers(pk),
    source   TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    last_at  INTEGER NOT NULL,
    PRIMARY KEY (a, b, source)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS links_by_b ON links(b);

-- Identifiers an event named but that were not linked, and why (keyed hash only).
CREATE TABLE IF NOT EXISTS refusals (
    refusal_id INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    source     TEXT NOT NULL,
    type       TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    digest     BLOB NOT NULL,
    reason     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    anchor_node TEXT
);
CREATE INDEX IF NOT EXISTS refusals_by_digest ON refusals(digest);

-- Facts about persons (attributes, events, kept raw identifiers), anchored to one identifier
-- node (`node`, its internal key). `sealed` is vault ciphertext bound to (node id, kind:name);
-- names and categories are schema words, never personal values.
CREATE TABLE IF NOT EXISTS facts (
    pk       INTEGER PRIMARY KEY,
    fact_id  TEXT NOT NULL UNIQUE,
    node     INTEGER NOT NULL REFERENCES identifiers(pk),
    kind     TEXT NOT NULL,
    name     TEXT NOT NULL,
    category TEXT NOT NULL,
    at       INTEGER NOT NULL,
    source   TEXT NOT NULL,
    status   TEXT NOT NULL,
    sealed   BLOB NOT NULL,
    pii      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS facts_by_node ON facts(node, kind);
CREATE INDEX IF NOT EXISTS facts_by_status ON facts(status, fact_id);
-- One current value per attribute name and node; one kept raw value per node.
CREATE UNIQUE INDEX IF NOT EXISTS facts_one_attribute ON facts(node, name)
    WHERE kind = 'attribute' AND status = 'active';
CREATE UNIQUE INDEX IF NOT EXISTS facts_one_raw ON facts(node)
    WHERE kind = 'raw_identifier';

-- Since version 2. Everything below is created on open, also in a file of version 1.

-- Member scans count a person's active events of one name since a time (audience rules). A
-- covering partial index: one seek per node of the person, and the count comes from the index
-- alone. Queries must repeat the WHERE literally for SQLite to use it.
CREATE INDEX IF NOT EXISTS facts_events ON facts(node, name, at)
    WHERE kind = 'event' AND status = 'active';
-- Member scans with event rules start from the events instead of walking every person: the
-- active events of one name since a time are one range of this index, and their nodes join to
-- persons. kind and status are repeated as columns although the WHERE fixes them: SQLite (3.40)
-- treats a partial index as covering only if it holds every column the query names, and
-- without them each event costs a random seek into facts. Added without a version bump: an
-- older idgraph maintains an index it does not know and reads the file correctly. Creating it
-- on an existing file of a million persons (750,000 events) takes about 6 s, once.
CREATE INDEX IF NOT EXISTS facts_events_by_name ON facts(name, at, node, kind, status)
    WHERE kind = 'event' AND status = 'active';
-- Member scans read the current attributes of every node of a page of persons: a covering
-- partial index, so each node is one seek with the values in the index, not one seek plus one
-- random seek into facts per attribute. kind, status and fact_id are columns for the reason
-- given above. The price: the current attributes are stored twice.
CREATE INDEX IF NOT EXISTS facts_attributes ON facts(node, name, kind, status, at, category,
    source, sealed, pii, fact_id) WHERE kind = 'attribute' AND status = 'active';

-- Consent decisions (privacy invariant 5): append-only, never updated, anchored like facts to
-- one identifier node, so they follow it through merges and splits with no write of their own.
-- `proof` is the SHA-256 (hex) of the original signal, never the signal itself; `purpose` is a
-- purpose name or '*' for a restriction of processing (applies to every purpose).
-- Clustered by (node_id, purpose, at): every read starts from a person's nodes, and a member
-- scan reads thousands of persons per page, so one seek per node finds all its records with
-- their columns (keyed by record_id, each record would cost a second random seek). record_id
-- stays unique through its own index.
CREATE TABLE IF NOT EXISTS consents (
    record_id    TEXT NOT NULL,
    node_id      TEXT NOT NULL REFERENCES identifiers(node_id),
    purpose      TEXT NOT NULL,
    granted      INTEGER NOT NULL CHECK (granted IN (0, 1)),
    at           INTEGER NOT NULL,
    recorded_at  INTEGER NOT NULL,
    source       TEXT NOT NULL,
    signal       TEXT NOT NULL,
    lawful_basis TEXT NOT NULL,
    proof        TEXT NOT NULL,
    PRIMARY KEY (node_id, purpose, at, record_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS consents_by_id ON consents(record_id);
-- The nodes with a record for one purpose (reads that start from the purpose).
CREATE INDEX IF NOT EXISTS consents_by_purpose ON consents(purpose, node_id);

-- Since version 3.

-- The suppression list (privacy invariant 4): keyed hashes of erased identifiers, kept for one
-- purpose only, refusing to re-create an erased person at ingest. Keyed HMAC digests, as in
-- `identifiers`: without the hash key nobody can tell which identifier an entry stands for (nor
-- test a guessed email against it). Deliberately nothing else: no time, no request id, no
-- person, so an entry cannot be tied back to the erasure request it came from.
CREATE TABLE IF NOT EXISTS suppressed (
    digest BLOB NOT NULL,
    type   TEXT NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (digest, type, key_id)
) WITHOUT ROWID;

-- Erasures whose graph part is committed and whose vault data keys (in another file) are still
-- to be shredded: written in the erasure's transaction, so a crash before the shred leaves a
-- pending row that start-up recovery completes. `node_ids` (a JSON array of the erased anchors,
-- the vault's key owners) is emptied when the shred is done; `counts` is a JSON object of what
-- the erasure deleted, for its audit entry. No identifier, hash or person id.
CREATE TABLE IF NOT EXISTS erasure_outbox (
    erasure_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    actor      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    node_ids   TEXT NOT NULL,
    counts     TEXT NOT NULL,
    done_at    INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS erasure_outbox_pending ON erasure_outbox(created_at)
    WHERE done_at IS NULL;

-- Since version 4.

-- Message ids already applied (exactly-once per stream record): keyed digests, because a
-- sender may put anything in a message id, an email included. Written in the ingest's own
-- transaction, so "applied" and "recorded as applied" cannot part. Forgotten after the dedup
-- window (`seen_at`).
CREATE TABLE IF NOT EXISTS seen_messages (
    digest  BLOB PRIMARY KEY,
    seen_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_messages_at ON seen_messages(seen_at);

-- Events for downstream tools, written in the transaction that made the change and deleted once
-- published (the transactional outbox). `payload` is a versioned JSON document with person ids
-- only (never an identifier or a hash); an event naming `erasure_id` waits for that erasure.
CREATE TABLE IF NOT EXISTS event_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    person_id  TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    erasure_id TEXT
);
CREATE INDEX IF NOT EXISTS event_outbox_person ON event_outbox(person_id);

-- Since version 5 (issue 13). Do-not-link rules: two identifier nodes an operator unlinked,
-- which resolution keeps in different persons from then on. Node ids only (the nodes hold the
-- keyed hashes); deleted with either node on erasure.
CREATE TABLE IF NOT EXISTS do_not_link (
    rule_id    TEXT PRIMARY KEY,
    a          TEXT NOT NULL REFERENCES identifiers(node_id),
    b          TEXT NOT NULL REFERENCES identifiers(node_id),
    created_at INTEGER NOT NULL,
    CHECK (a < b)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS do_not_link_pair ON do_not_link(a, b);
CREATE INDEX IF NOT EXISTS do_not_link_by_b ON do_not_link(b);
"""

_DO_NOT_LINK_SELECT = (
    "SELECT r.rule_id, r.a, r.b, r.created_at, ia.type, ib.type, pa.person_id, pb.person_id "
    "FROM do_not_link r JOIN identifiers ia ON ia.node_id = r.a "
    "JOIN identifiers ib ON ib.node_id = r.b "
    "JOIN persons pa ON pa.pk = ia.person JOIN persons pb ON pb.pk = ib.person "
)
# A node with its public ids (the integer keys are resolved here, never returned).
_NODE_SELECT = (
    "SELECT i.node_id, i.type, i.key_id, i.digest, p.person_id, i.first_seen, i.last_seen "
    "FROM identifiers i JOIN persons p ON p.pk = i.person "
)


def _add_refusal_anchor(conn: sqlite3.Connection) -> None:
    """Schema 5 → 6: refusals name the node the rest of their event was anchored to (``NULL``
    for refusals recorded before: their data cannot be followed, as before). Idempotent."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(refusals)")}
    if columns and "anchor_node" not in columns:
        conn.execute("ALTER TABLE refusals ADD COLUMN anchor_node TEXT")


# The tables version 7 rebuilds (integer keys), children after parents: copied in this order,
# the old ones dropped in the reverse order. Consents and do-not-link rules keep their columns,
# but they are rebuilt too, because their foreign keys name the rebuilt identifiers table.
_REKEYED = ("persons", "identifiers", "links", "facts", "consents", "do_not_link")
_OLD = "{}_v6"
# Old rows into the new tables. Keys are numbered in creation order (persons by creation time,
# nodes by node id, which is time-ordered since issue 22; facts by time). A LEFT JOIN, so a row
# whose parent is missing fails the NOT NULL instead of vanishing: the migration then rolls
# back whole, and the file stays as it was.
_COPY_V6 = {
    "persons": (
        "INSERT INTO persons (pk, person_id, created_at, last_seen) "
        "SELECT row_number() OVER (ORDER BY created_at, person_id), person_id, created_at, "
        "last_seen FROM persons_v6"
    ),
    "identifiers": (
        "INSERT INTO identifiers (pk, node_id, type, key_id, digest, person, first_seen, "
        "last_seen) SELECT row_number() OVER (ORDER BY o.node_id), o.node_id, o.type, o.key_id, "
        "o.digest, p.pk, o.first_seen, o.last_seen "
        "FROM identifiers_v6 o LEFT JOIN persons p ON p.person_id = o.person_id"
    ),
    "links": (
        "INSERT INTO links (a, b, source, first_at, last_at) "
        "SELECT ia.pk, ib.pk, o.source, o.first_at, o.last_at FROM links_v6 o "
        "LEFT JOIN identifiers ia ON ia.node_id = o.a LEFT JOIN identifiers ib ON ib.node_id = o.b"
    ),
    "facts": (
        "INSERT INTO facts (pk, fact_id, node, kind, name, category, at, source, status, sealed, "
        "pii) SELECT row_number() OVER (ORDER BY o.at, o.fact_id), o.fact_id, i.pk, o.kind, "
        "o.name, o.category, o.at, o.source, o.status, o.sealed, o.pii "
        "FROM facts_v6 o LEFT JOIN identifiers i ON i.node_id = o.node_id"
    ),
    "consents": (
        "INSERT INTO consents (record_id, node_id, purpose, granted, at, recorded_at, source, "
        "signal, lawful_basis, proof) SELECT record_id, node_id, purpose, granted, at, "
        "recorded_at, source, signal, lawful_basis, proof FROM consents_v6"
    ),
    "do_not_link": (
        "INSERT INTO do_not_link (rule_id, a, b, created_at) "
        "SELECT rule_id, a, b, created_at FROM do_not_link_v6"
    ),
}


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _set_old_tables_aside(conn: sqlite3.Connection) -> None:
    """Schema ≤ 6 → 7, first half (before the schema's DDL runs): rename the tables that get
    integer keys to ``<name>_v6`` and drop their indexes, so the DDL creates the new tables and
    indexes under the usual names. Nothing to do in a new file or one already of version 7.

    Inside the opening's one write transaction: a crash or an error anywhere in the migration
    rolls all of it back (the file stays a valid file of its old version)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(persons)")}
    if not columns or "pk" in columns:
        return
    existing = _tables(conn)
    for table in _REKEYED:
        if table not in existing:  # a file older than the table: it comes new
            continue
        for (index,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (table,),
        ).fetchall():
            conn.execute(f'DROP INDEX "{index}"')
        # RENAME also points the other old tables' foreign keys at the renamed table; they are
        # all dropped in _copy_old_tables, children first, so no foreign key is left dangling.
        conn.execute(f'ALTER TABLE "{table}" RENAME TO "{_OLD.format(table)}"')


def _copy_old_tables(conn: sqlite3.Connection) -> None:
    """Schema ≤ 6 → 7, second half (after the DDL): copy the old rows into the new tables,
    translating public ids to internal keys, then drop the old tables, children first.

    Every row is kept with every public value (ids, hashes, times, sealed bytes); what changes
    is how rows refer to each other. Checked after the copy: the row counts match."""
    existing = _tables(conn)
    moved = [t for t in _REKEYED if _OLD.format(t) in existing]
    for table in moved:
        old = _OLD.format(table)
        before = conn.execute(f'SELECT count(*) FROM "{old}"').fetchone()[0]  # noqa: S608 - fixed names
        try:
            conn.execute(_COPY_V6[table])
        except sqlite3.IntegrityError as exc:  # a row whose parent is missing: not migrated
            raise StoreIntegrityError(
                f"migration to schema {SCHEMA_VERSION} refused: {table} of the old file has a "
                f"row that refers to a missing row ({exc}); the file is left as it was"
            ) from exc
        after = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]  # noqa: S608 - fixed names
        if before != after:
            raise StoreIntegrityError(
                f"migration to schema {SCHEMA_VERSION}: {table} has {after} rows, was {before}"
            )
    for table in reversed(moved):
        conn.execute(f'DROP TABLE "{_OLD.format(table)}"')


def _before_schema(conn: sqlite3.Connection) -> None:
    _add_refusal_anchor(conn)
    _set_old_tables_aside(conn)


def _after_schema(conn: sqlite3.Connection) -> None:
    # A file of schema ≤ 6 had its graph tables rebuilt: audience state it may hold (triggers
    # of the old tables are gone with them) is filled again over the new tables.
    rebuilt = _OLD.format("persons") in _tables(conn)
    _copy_old_tables(conn)
    if rebuilt:
        sqlite_audience.forget(conn)
    sqlite_audience.install(conn)


def _ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (the stored time format)."""
    if moment.fold:
        # Not cached: in one zone, the two datetimes of a DST fold (same wall time, ``fold`` 0
        # and 1, different instants) compare and hash equal, so a cache could answer the other.
        return int(moment.timestamp() * 1000)
    return _unfolded_ms(moment)


@functools.lru_cache(maxsize=65_536)
def _unfolded_ms(moment: datetime) -> int:
    # Cached: a batch repeats the same few event times on every row it writes (a bulk batch
    # converts ~17 times per event: 0.1 us a hit instead of 0.5 us). With ``fold`` 0 on every
    # key, equal keys are equal instants and convert alike.
    return int(moment.timestamp() * 1000)


class _Millis(dict[datetime, int]):
    """:func:`_ms` of many moments, for the rows of one write: ``millis[moment]`` is one dict
    lookup where a call of :func:`_ms` cost a Python call and a cache probe (a bulk batch
    converts ~17 times per event, mostly the same few event times).

    Only moments with ``fold`` 0 are remembered, and only they may be looked up here (use
    :meth:`of`): a moment with ``fold`` 1 compares and hashes equal to its ``fold`` 0 twin,
    which can be another instant (see :func:`_ms`)."""

    __slots__ = ()

    def __missing__(self, moment: datetime) -> int:
        value = _unfolded_ms(moment)
        self[moment] = value
        return value

    def of(self, moment: datetime) -> int:
        """The stored time of ``moment`` (any ``fold``)."""
        return _ms(moment) if moment.fold else self[moment]


@functools.lru_cache(maxsize=65_536)
def _dt(ms: int) -> datetime:
    # Cached too: a member scan page converts tens of thousands of times, and a batch's rows
    # share the same few (its event times, its recorded_at). Datetimes are immutable.
    return datetime.fromtimestamp(ms / 1000, UTC)


# Stored enum values to members by dict lookup: ``Enum(value)`` costs several times more, and a
# member scan decodes every row of every page.
_FACT_KINDS = {k.value: k for k in FactKind}
_FACT_KIND_TEXT = {k: k.value for k in FactKind}
_FACT_STATUS_TEXT = {s: s.value for s in FactStatus}
_FACT_STATUSES = {s.value: s for s in FactStatus}
_CONSENT_SIGNALS = {s.value: s for s in ConsentSignal}
_EXCLUSIONS = {e.value: e for e in ConsentExclusion}


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _wide_chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """``items`` in chunks of at most :data:`WIDE_PARAMS` for ``IN (...)`` lookups, each padded
    to a power of two by repeating its last item (harmless in an ``IN`` list), so that a few
    statement texts serve every lookup: a text per chunk length filled the statement cache with
    wide statements (megabytes each) that were never used again."""
    for chunk in _chunks(items, WIDE_PARAMS):
        padded = 1 << (len(chunk) - 1).bit_length()
        yield chunk if padded == len(chunk) else [*chunk, *[chunk[-1]] * (padded - len(chunk))]


def _node_fields(n: IdentifierNode) -> tuple[Any, ...]:
    return (n.node_id, n.hashed, n.person_id, n.first_seen, n.last_seen)


def _link_fields(x: Link) -> tuple[Any, ...]:
    return (x.a, x.b, x.source, x.first_at, x.last_at)


def _fact_fields(f: Fact) -> tuple[Any, ...]:
    return (
        f.fact_id,
        f.node_id,
        f.kind,
        f.name,
        f.category,
        f.at,
        f.source,
        f.status,
        f.sealed,
        f.pii,
    )


# Facts are read joined to their node as ``i`` (the public node id).
_FACT_COLUMNS = (
    "f.fact_id, i.node_id, f.kind, f.name, f.category, f.at, f.source, f.status, f.sealed, f.pii"
)


_CONSENT_COLUMNS = (
    "c.record_id, c.node_id, c.purpose, c.granted, c.at, c.recorded_at, c.source, c.signal, "
    "c.lawful_basis, c.proof"
)

# Which persons' attributes a page reads: without rules the page is every person of an id range
# (one range scan of identifiers_by_person); with rules, the listed ids (a JSON array: one seek
# each). Their consent records come with the page statement itself (sqlite_audience).
_PAGE_RANGE = "p.person_id > ? AND p.person_id <= ?"
_PAGE_LIST = "p.person_id IN (SELECT value FROM json_each(?))"
# The attributes of one page's persons: one seek per node (facts_one_attribute), the wanted
# names filtered there. The unary ``+`` keeps SQLite from seeking once per (node, name)
# instead: more seeks, same rows.
# Kind and status are fixed by the WHERE, so they are not read back (two columns fewer to
# convert per row: a page returns tens of thousands).
_MEMBER_ATTRIBUTES = (
    "SELECT p.person_id, f.fact_id, i.node_id, f.name, f.category, f.at, f.source, f.sealed, "
    "f.pii FROM persons p JOIN identifiers i ON i.person = p.pk "
    "JOIN facts f INDEXED BY facts_attributes ON f.node = i.pk "
    "WHERE {persons} AND f.kind = 'attribute' AND f.status = 'active' "
    "AND +f.name IN (SELECT value FROM json_each(?)) "
    "ORDER BY p.person_id, f.name, f.at, f.fact_id"
)


# How many active events of one name since a time exist: a count over one range of the covering
# index facts_events_by_name (milliseconds even at a million persons), to pick the rule that
# selects fewest events to drive a member scan from.
_EVENT_COUNT = (
    "SELECT count(*) FROM facts INDEXED BY facts_events_by_name "
    "WHERE kind = 'event' AND status = 'active' AND name = ? AND at >= ?"
)


def _consent_purposes(purposes: Collection[str]) -> tuple[str, ...]:
    """The purposes to read: the asked ones and the restriction purpose, sorted."""
    return tuple(sorted({*purposes, RESTRICTION_PURPOSE}))


def _consent(row: Sequence[Any]) -> ConsentRecord:
    record_id, node_id, purpose, granted, at, recorded_at, source, signal, basis, proof = row
    return ConsentRecord(
        record_id,
        node_id,
        purpose,
        bool(granted),
        _dt(at),
        _dt(recorded_at),
        source,
        _CONSENT_SIGNALS[signal],
        basis,
        proof,
    )


# A person's consent records come from the page statement as JSON arrays in
# ``sqlite_audience.CONSENT_FIELDS`` order; sorted like ``person_consents`` (at, recorded_at,
# record id) when there are several (SQLite 3.40 has no ORDER BY inside an aggregate).
_RECORD_ORDER = operator.itemgetter(4, 5, 0)
# The json module's C scanner: ``scan(text, 0)`` is ``(value, end)``.
_SCAN_JSON: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # typeshed omits it


def _member_rows(
    persons: Sequence[sqlite_audience.PageRow],
    attributes: Mapping[str, list[Fact]],
    purpose: str | None = None,
) -> MemberScanPage:
    """A page's rows as a :class:`MemberScanPage`: the kept persons as :class:`MemberRow`
    objects (the consent records decoded from the page statement's JSON, the attributes of
    :meth:`_SqliteTransaction._member_attributes`), the persons the consent filter left out
    counted by reason (no object each: most persons of a filtered audience scan). A kept
    person whose statement row names a grant's deciding record gets a :class:`ConsentGrant` for
    ``purpose`` (the scan's consent filter) and no records.

    The hot loop of a member scan (tens of thousands of objects per scan of a million persons),
    so it is written for CPython: rows are unpacked in the ``for``, JSON is parsed by the C
    scanner once per kept person (called directly: ``json.loads`` adds two Python calls and a
    whitespace match per text, a fifth of the parse; the text is SQLite's own ``json_array``
    output), enum members come from dicts, and datetimes straight from
    ``fromtimestamp`` (as :func:`_dt` makes them): persons' and records' times rarely repeat
    within a scan, and a cache miss costs twice the conversion (0.9 against 0.4 us; 60,000
    persons a scan at a million). Same objects as :func:`_consent` builds.
    """
    scan, signals = _SCAN_JSON, _CONSENT_SIGNALS
    stamp, utc = datetime.fromtimestamp, UTC
    no_consents: tuple[ConsentRecord, ...] = ()
    no_attributes: tuple[Fact, ...] = ()
    rows: list[MemberRow] = []
    # Exclusion reasons as the page statement spells them, counted, named once at the end.
    excluded: dict[str, int] = {}
    for person_id, created_at, seen, reason, records, grant_id, grant_at, grant_signal in persons:
        if reason is not None:
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        consents = no_consents
        grant = None
        if grant_at is not None and grant_id and grant_signal and purpose:
            grant = ConsentGrant(
                purpose, grant_id, stamp(grant_at / 1000, utc), signals[grant_signal]
            )
        if records is not None and records != "[]":
            parsed = scan(records, 0)[0]
            if len(parsed) > 1:
                parsed.sort(key=_RECORD_ORDER)
            consents = tuple(
                [
                    ConsentRecord(
                        record_id,
                        node_id,
                        purpose,
                        granted == 1,
                        stamp(at / 1000, utc),
                        stamp(recorded_at / 1000, utc),
                        source,
                        signals[signal],
                        basis,
                        proof,
                    )
                    for (
                        record_id,
                        node_id,
                        purpose,
                        granted,
                        at,
                        recorded_at,
                        source,
                        signal,
                        basis,
                        proof,
                    ) in parsed
                ]
            )
        facts = attributes.get(person_id)
        rows.append(
            MemberRow(
                person_id,
                None if created_at is None else stamp(created_at / 1000, utc),
                None if seen is None else stamp(seen / 1000, utc),
                consents,
                tuple(facts) if facts else no_attributes,
                grant,
            )
        )
    return MemberScanPage(
        tuple(rows),
        len(persons),
        persons[-1][0] if persons else "",
        {_EXCLUSIONS[reason]: count for reason, count in excluded.items()},
    )


def _fact(row: Sequence[Any]) -> Fact:
    fact_id, node_id, kind, name, category, at, source, status, sealed, pii = row
    return Fact(
        fact_id,
        node_id,
        _FACT_KINDS[kind],
        name,
        category,
        _dt(at),
        source,
        _FACT_STATUSES[status],
        bytes(sealed),
        tuple(p for p in pii.split(",") if p),
    )


# A profile read's load in one statement (GraphStore.person_read): a row that says the person
# exists, then its consent records for the purposes (and restriction records) and its facts,
# each part with the columns of person_consents / person_facts after four sort columns (part,
# at, recorded_at or NULL, record or fact id), so the order is exactly theirs. SQLite runs one
# statement on one snapshot, so it needs no explicit transaction: a profile read ran BEGIN, two
# queries and COMMIT under the store lock before (and its consent query looked the person up
# again). The + on purpose and status: as in person_consents and person_facts.
@functools.lru_cache(maxsize=64)
def _person_read_sql(purposes: int, kinds: int) -> str:
    # CROSS JOIN keeps SQLite's join order (person, its nodes, their rows): left to itself it
    # may drive the consent part from consents_by_purpose, a scan of every record of the purpose.
    return (
        f"SELECT 0, {', '.join(['NULL'] * 13)} FROM persons WHERE person_id = ? "  # noqa: S608 - fixed columns, placeholders
        "UNION ALL "
        f"SELECT 1, c.at, c.recorded_at, c.record_id, {_CONSENT_COLUMNS} FROM persons p "
        "CROSS JOIN identifiers i ON i.person = p.pk "
        "CROSS JOIN consents c ON c.node_id = i.node_id "
        f"WHERE p.person_id = ? AND +c.purpose IN ({_marks(purposes)}) "
        "UNION ALL "
        f"SELECT 2, f.at, NULL, f.fact_id, {_FACT_COLUMNS} FROM persons p "
        "CROSS JOIN identifiers i ON i.person = p.pk CROSS JOIN facts f ON f.node = i.pk "
        f"WHERE p.person_id = ? AND +f.status = ? AND f.kind IN ({_marks(kinds)}) "
        "ORDER BY 1, 2, 3, 4"
    )


def _person_read_rows(rows: Sequence[Sequence[Any]]) -> PersonReadRows | None:
    if not rows or rows[0][0] != 0:
        return None  # no such person
    consents = [_consent(row[4:]) for row in rows if row[0] == 1]
    facts = [_fact(row[4:]) for row in rows if row[0] == 2]
    return PersonReadRows(tuple(consents), tuple(facts))


class _SqliteTransaction:
    """The :class:`~identity.store.port.GraphTransaction` of the SQLite store."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # The internal keys of the nodes this transaction inserted (facts and links of the same
        # batch name them): no lookup for a node written moments before. An erasure drops its
        # nodes from here: after it, the maximum key may be handed out again.
        self._new_nodes: dict[str, int] = {}

    @property
    def connection(self) -> sqlite3.Connection:
        """This transaction's connection, for a write that must commit or roll back with it
        (the ingest journal removing the batches this transaction applied, storage.journal)."""
        return self._conn

    def get_meta(self, key: str) -> str | None:
        """The value of the ``meta`` entry ``key``, or ``None`` (the resume cursor of an
        ``idgraph store copy`` into this file, :mod:`identity.store.copy`)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Create or replace the ``meta`` entry ``key`` (in this transaction)."""
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @staticmethod
    def _node(row: sqlite3.Row | tuple[Any, ...]) -> IdentifierNode:
        node_id, type_, key_id, digest, person_id, first_seen, last_seen = row
        return IdentifierNode(
            node_id,
            HashedIdentifier(type_, key_id, bytes(digest)),
            person_id,
            _dt(first_seen),
            _dt(last_seen),
        )

    def find_identifiers(self, candidates: Sequence[HashedIdentifier]) -> list[IdentifierNode]:
        # Distinct and sorted (no caller relies on the order of the nodes found: the engine and
        # every reader key them by hash). SQLite puts an IN list into an ordered index of its
        # own, and filling it in order is cheaper than from random digests: for a bulk batch's
        # ~37,600 new digests on a graph of 1M identifiers (stop 50, CPU per batch) the lookup
        # took ~95-130 ms sorted against ~140-160 ms unsorted, and the sort ~10 ms.
        digests = sorted({c.digest for c in candidates})
        found: list[IdentifierNode] = []
        for chunk in _wide_chunks(digests):
            rows = self._conn.execute(
                f"{_NODE_SELECT}WHERE i.digest IN ({_marks(len(chunk))})",
                chunk,
            )
            found.extend(map(self._node, rows))
        if not found:
            return found
        wanted = set(candidates)  # hashed only when something came back (bulk: mostly not)
        return [node for node in found if node.hashed in wanted]

    def type_counts(self, person_ids: Collection[str]) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        ids = sorted(person_ids)
        for chunk in _chunks(ids):
            rows = self._conn.execute(
                "SELECT p.person_id, i.type, count(*) FROM persons p "  # noqa: S608 - placeholders only
                "JOIN identifiers i ON i.person = p.pk "
                f"WHERE p.person_id IN ({_marks(len(chunk))}) GROUP BY p.person_id, i.type",
                chunk,
            )
            for person_id, type_, count in rows:
                counts.setdefault(person_id, {})[type_] = count
        return counts

    def cluster(self, person_id: str) -> Cluster:
        nodes = tuple(
            map(
                self._node,
                self._conn.execute(
                    f"{_NODE_SELECT}WHERE p.person_id = ? ORDER BY i.node_id", (person_id,)
                ),
            )
        )
        # Both ends of a link are in the same person, so joining on one end is enough.
        links = tuple(
            Link(a, b, source, _dt(first_at), _dt(last_at))
            for a, b, source, first_at, last_at in self._conn.execute(
                "SELECT na.node_id, nb.node_id, l.source, l.first_at, l.last_at FROM persons p "
                "JOIN identifiers na ON na.person = p.pk JOIN links l ON l.a = na.pk "
                "JOIN identifiers nb ON nb.pk = l.b WHERE p.person_id = ? "
                "ORDER BY na.node_id, nb.node_id, l.source",
                (person_id,),
            )
        )
        return Cluster(person_id, nodes, links)

    def remove_links(self, a: str, b: str) -> int:
        low, high = (a, b) if a < b else (b, a)
        cursor = self._conn.execute(
            "DELETE FROM links WHERE a = (SELECT pk FROM identifiers WHERE node_id = ?) "
            "AND b = (SELECT pk FROM identifiers WHERE node_id = ?)",
            (low, high),
        )
        return cursor.rowcount

    # -- do-not-link rules ----------------------------------------------------------------------

    @staticmethod
    def _rule(row: tuple[Any, ...]) -> DoNotLinkEntry:
        rule_id, a, b, created_at, type_a, type_b, person_a, person_b = row
        return DoNotLinkEntry(
            DoNotLinkRule(rule_id, a, b, _dt(created_at)), type_a, type_b, person_a, person_b
        )

    def add_do_not_link(self, rule: DoNotLinkRule) -> bool:
        cursor = self._conn.execute(
            "INSERT INTO do_not_link (rule_id, a, b, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (a, b) DO NOTHING",
            (rule.rule_id, rule.a, rule.b, _ms(rule.created_at)),
        )
        return cursor.rowcount == 1

    def do_not_link_rules(self, person_ids: Collection[str]) -> list[DoNotLinkEntry]:
        found: dict[str, DoNotLinkEntry] = {}
        for chunk in _chunks(sorted(set(person_ids))):
            marks = _marks(len(chunk))
            for row in self._conn.execute(
                f"{_DO_NOT_LINK_SELECT}WHERE r.rule_id IN ("  # noqa: S608 - placeholders only
                "SELECT r2.rule_id FROM persons p JOIN identifiers i ON i.person = p.pk "
                f"JOIN do_not_link r2 ON r2.a = i.node_id WHERE p.person_id IN ({marks}) UNION "
                "SELECT r3.rule_id FROM persons p JOIN identifiers i ON i.person = p.pk "
                f"JOIN do_not_link r3 ON r3.b = i.node_id WHERE p.person_id IN ({marks}))",
                (*chunk, *chunk),
            ):
                entry = self._rule(row)
                found[entry.rule.rule_id] = entry
        return [found[k] for k in sorted(found)]

    def do_not_link_page(self, after_rule_id: str, limit: int) -> list[DoNotLinkEntry]:
        rows = self._conn.execute(
            f"{_DO_NOT_LINK_SELECT}WHERE r.rule_id > ? ORDER BY r.rule_id LIMIT ?",
            (after_rule_id, limit),
        )
        return [self._rule(row) for row in rows]

    def remove_do_not_link(self, rule_id: str) -> DoNotLinkEntry | None:
        row = self._conn.execute(f"{_DO_NOT_LINK_SELECT}WHERE r.rule_id = ?", (rule_id,)).fetchone()
        if row is None:
            return None
        self._conn.execute("DELETE FROM do_not_link WHERE rule_id = ?", (rule_id,))
        return self._rule(row)

    def _keys(
        self, table: Literal["persons", "identifiers"], ids: Collection[str]
    ) -> dict[str, int]:
        """The internal keys of the persons or nodes with these public ids (absent ones left out:
        an insert naming one then fails its NOT NULL or foreign key, as it should)."""
        column = "person_id" if table == "persons" else "node_id"
        found: dict[str, int] = {}
        for chunk in _chunks(sorted(ids)):
            found.update(
                self._conn.execute(
                    f"SELECT {column}, pk FROM {table} "  # noqa: S608 - fixed names, placeholders
                    f"WHERE {column} IN ({_marks(len(chunk))})",
                    chunk,
                ).fetchall()
            )
        return found

    def _next_key(self, table: Literal["persons", "identifiers", "facts"]) -> int:
        # Keys are allocated here, in the write transaction (BEGIN IMMEDIATE: no other writer),
        # so a batch's rows get consecutive keys without reading each one back after its insert.
        row = self._conn.execute(f"SELECT max(pk) FROM {table}").fetchone()  # noqa: S608 - fixed names
        return 1 if row[0] is None else int(row[0]) + 1

    def _node_keys(self, missing: Collection[str]) -> dict[str, int]:
        """Internal keys of the nodes this transaction inserted (from memory) and of
        ``missing``, the other nodes a write names (read). Callers collect only the names not
        among the new nodes: a bulk batch names mostly nodes it has just inserted, and a set of
        every name first cost more than the lookups."""
        keys = self._new_nodes
        if not missing:
            return keys
        return {**keys, **self._keys("identifiers", missing)}

    def apply(self, changes: ChangeSet) -> None:
        conn = self._conn
        ms = _Millis().of
        persons: dict[str, int] = {}
        if changes.new_persons:
            first = self._next_key("persons")
            rows = [
                (first + i, p.person_id, ms(p.created_at), ms(p.last_seen))
                for i, p in enumerate(changes.new_persons)
            ]
            insert_rows(conn, "INSERT INTO persons (pk, person_id, created_at, last_seen)", rows)
            persons = {person_id: pk for pk, person_id, _, _ in rows}
        if changes.new_nodes:
            # (node_id, hashed, person_id, first_seen, last_seen) per node.
            nodes = record_fields(changes.new_nodes, _node_fields)
            # Only the persons not inserted just now (a bulk batch's nodes are nearly all in
            # new persons: no set of every node's person first).
            owners = {person for _, _, person, _, _ in nodes if person not in persons}
            if owners:
                persons.update(self._keys("persons", owners))
            first = self._next_key("identifiers")
            node_rows = [
                (
                    pk,
                    node_id,
                    hashed.type,
                    hashed.key_id,
                    hashed.digest,
                    persons.get(person),  # None (unknown person): NOT NULL refuses it
                    ms(first_seen),
                    ms(last_seen),
                )
                for pk, (node_id, hashed, person, first_seen, last_seen) in enumerate(nodes, first)
            ]
            insert_rows(
                conn,
                "INSERT INTO identifiers (pk, node_id, type, key_id, digest, person, first_seen, "
                "last_seen)",
                node_rows,
            )
            self._new_nodes.update(
                zip([f[0] for f in nodes], range(first, first + len(nodes)), strict=True)
            )
        self._update_known(changes, ms)
        if changes.links:
            known = self._new_nodes
            # (a, b, source, first_at, last_at) per link.
            links = record_fields(changes.links, _link_fields)
            keys = self._node_keys(
                {x[0] for x in links if x[0] not in known}
                | {x[1] for x in links if x[1] not in known}
            )
            insert_rows(
                conn,
                "INSERT INTO links (a, b, source, first_at, last_at)",
                [
                    (keys.get(a), keys.get(b), source, ms(first_at), ms(last_at))
                    for a, b, source, first_at, last_at in links
                ],
                "ON CONFLICT (a, b, source) DO UPDATE SET "
                "first_at = min(first_at, excluded.first_at), "
                "last_at = max(last_at, excluded.last_at)",
            )
        if changes.facts:
            self._write_facts(changes.facts, ms)
        if changes.consents:
            # Appended, never upserted: consent history is not rewritten (a repeated record id
            # is an integrity error). After nodes and merges, like facts: the foreign key needs
            # the anchor, and the record moves with it from then on.
            insert_rows(
                conn,
                "INSERT INTO consents (record_id, node_id, purpose, granted, at, recorded_at, "
                "source, signal, lawful_basis, proof)",
                [
                    (
                        c.record_id,
                        c.node_id,
                        c.purpose,
                        int(c.granted),
                        ms(c.at),
                        ms(c.recorded_at),
                        c.source,
                        c.signal.value,
                        c.lawful_basis,
                        c.proof,
                    )
                    for c in changes.consents
                ],
            )
        self._write_stream(changes)  # a no-op without message ids and outbound events
        if changes.refusals:
            insert_rows(
                conn,
                "INSERT INTO refusals (at, source, type, key_id, digest, reason, detail, "
                "anchor_node)",
                [
                    (
                        ms(r.at),
                        r.source,
                        r.hashed.type,
                        r.hashed.key_id,
                        r.hashed.digest,
                        r.reason.value,
                        r.detail,
                        r.anchor_node,
                    )
                    for r in changes.refusals
                ],
            )

    def _update_known(self, changes: ChangeSet, ms: Callable[[datetime], int]) -> None:
        """The updates of rows that existed before the write (re-hashed, touched, merged and
        reassigned nodes, persons seen), after the new persons and nodes are inserted."""
        conn = self._conn
        if changes.rehashed:
            conn.executemany(
                "UPDATE identifiers SET key_id = ?, digest = ? WHERE node_id = ?",
                [(h.key_id, h.digest, node_id) for node_id, h in changes.rehashed.items()],
            )
        # The updates of a batch are set-based: one statement per chunk of rows
        # (``UPDATE ... FROM (VALUES ...)``, each row a seek of the unique index), not one per
        # row: on the bulk writer thread every statement's step gave the GIL away (see
        # storage.sqlite.WIDE_PARAMS). Each target row is matched by one VALUES row (their keys
        # are a dict's), so the result is the executemany's.
        if changes.touched:
            run_with_rows(
                conn,
                "UPDATE identifiers SET first_seen = min(first_seen, v.column2), "
                "last_seen = max(last_seen, v.column3) FROM (VALUES {rows}) AS v "
                "WHERE identifiers.node_id = v.column1",
                [(node, ms(f), ms(last)) for node, (f, last) in changes.touched.items()],
            )
        if changes.merged:
            # Every survivor is a root (merged maps each absorbed person to its final
            # survivor), so the moves do not depend on their order.
            merged = list(changes.merged.items())
            run_with_rows(
                conn,
                "UPDATE identifiers SET person = s.pk FROM (VALUES {rows}) AS v "
                "JOIN persons a ON a.person_id = v.column1 "
                "JOIN persons s ON s.person_id = v.column2 WHERE identifiers.person = a.pk",
                merged,
            )
            for chunk in _chunks([absorbed for absorbed, _ in merged]):
                conn.execute(
                    f"DELETE FROM persons WHERE person_id IN ({_marks(len(chunk))})",  # noqa: S608 - placeholders only
                    chunk,
                )
        if changes.reassigned:
            conn.executemany(
                "UPDATE identifiers SET person = (SELECT pk FROM persons WHERE person_id = ?) "
                "WHERE node_id = ?",
                [(person, node) for node, person in changes.reassigned.items()],
            )
        if changes.persons_seen:
            run_with_rows(
                conn,
                "UPDATE persons SET last_seen = max(last_seen, v.column2) FROM (VALUES {rows}) "
                "AS v WHERE persons.person_id = v.column1",
                [(person, ms(seen)) for person, seen in changes.persons_seen.items()],
            )

    def _write_facts(self, facts: Sequence[Fact], ms: Callable[[datetime], int] = _ms) -> None:
        known = self._new_nodes
        # (fact_id, node_id, kind, name, category, at, source, status, sealed, pii) per fact.
        fields = record_fields(facts, _fact_fields)
        nodes = self._node_keys({f[1] for f in fields if f[1] not in known})
        first = self._next_key("facts")
        insert = (
            "INSERT INTO facts (pk, fact_id, node, kind, name, category, at, source, status, "
            "sealed, pii)"
        )
        current: list[tuple[Any, ...]] = []
        raw: list[tuple[Any, ...]] = []
        other: list[tuple[Any, ...]] = []
        # Kinds and statuses are str enums: their stored text is their value, read once per
        # member here (the enum's ``value`` is a Python-level property, twice per fact).
        raw_kind, attribute, active = (
            FactKind.RAW_IDENTIFIER,
            FactKind.ATTRIBUTE,
            FactStatus.ACTIVE,
        )
        for pk, fact in enumerate(fields, first):
            fact_id, node_id, kind, name, category, at, source, status, sealed, pii = fact
            row = (
                pk,
                fact_id,
                nodes.get(node_id),
                _FACT_KIND_TEXT[kind],
                name,
                category,
                ms(at),
                source,
                _FACT_STATUS_TEXT[status],
                sealed,
                ",".join(pii),
            )
            if kind is raw_kind:
                raw.append(row)
            elif kind is attribute and status is active:
                current.append(row)
            else:
                other.append(row)
        # The latest value of an attribute wins; an older one arriving late is ignored.
        insert_rows(
            self._conn,
            insert,
            current,
            "ON CONFLICT (node, name) WHERE kind = 'attribute' AND status = 'active' "
            "DO UPDATE SET category = excluded.category, at = excluded.at, "
            "source = excluded.source, sealed = excluded.sealed, pii = excluded.pii "
            "WHERE excluded.at >= facts.at",
        )
        insert_rows(
            self._conn,
            insert,
            raw,
            "ON CONFLICT (node) WHERE kind = 'raw_identifier' DO UPDATE SET "
            "at = excluded.at, source = excluded.source, sealed = excluded.sealed",
        )
        insert_rows(self._conn, insert, other)

    def person_facts(
        self, person_id: str, kinds: Collection[FactKind], status: FactStatus
    ) -> list[Fact]:
        wanted = [k.value for k in kinds]
        rows = self._conn.execute(
            f"SELECT {_FACT_COLUMNS} FROM persons p JOIN identifiers i ON i.person = p.pk "  # noqa: S608 - fixed columns and placeholders only
            "JOIN facts f ON f.node = i.pk "
            # + on status: without it SQLite picks facts_by_status and reads every fact of that
            # status in the graph; the person's nodes first, then facts_by_node per node.
            f"WHERE p.person_id = ? AND +f.status = ? AND f.kind IN ({_marks(len(wanted))}) "
            "ORDER BY f.at, f.fact_id",
            (person_id, status.value, *wanted),
        )
        return [_fact(row) for row in rows]

    def existing_nodes(self, node_ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(sorted(set(node_ids))):
            rows = self._conn.execute(
                f"SELECT node_id FROM identifiers WHERE node_id IN ({_marks(len(chunk))})",  # noqa: S608 - placeholders only
                chunk,
            )
            found.update(str(row[0]) for row in rows)
        return found

    def node_facts(self, node_ids: Collection[str], kind: FactKind) -> list[Fact]:
        found: list[Fact] = []
        for chunk in _chunks(sorted(node_ids)):
            # The unary + keeps SQLite (no ANALYZE statistics) from picking facts_by_status for
            # the literal status, which reads every active fact of the graph; facts_by_node
            # seeks each node instead, so erasure and rehash pages cost the same at any size.
            rows = self._conn.execute(
                f"SELECT {_FACT_COLUMNS} FROM identifiers i JOIN facts f ON f.node = i.pk "  # noqa: S608 - placeholders only
                f"WHERE f.kind = ? AND +f.status = 'active' "
                f"AND i.node_id IN ({_marks(len(chunk))}) ORDER BY f.fact_id",
                (kind.value, *chunk),
            )
            found.extend(_fact(row) for row in rows)
        return found

    def facts_page(self, status: FactStatus, after_fact_id: str, limit: int) -> list[Fact]:
        rows = self._conn.execute(
            f"SELECT {_FACT_COLUMNS} FROM facts f JOIN identifiers i ON i.pk = f.node "  # noqa: S608 - fixed columns
            "WHERE f.status = ? AND f.fact_id > ? ORDER BY f.fact_id LIMIT ?",
            (status.value, after_fact_id, limit),
        )
        return [_fact(row) for row in rows]

    def set_fact_status(self, fact_ids: Collection[str], status: FactStatus) -> int:
        changed = 0
        for chunk in _chunks(sorted(fact_ids)):
            changed += self._conn.execute(
                f"UPDATE facts SET status = ? WHERE fact_id IN ({_marks(len(chunk))})",  # noqa: S608
                (status.value, *chunk),
            ).rowcount
        return changed

    def delete_facts(self, fact_ids: Collection[str]) -> int:
        deleted = 0
        for chunk in _chunks(sorted(fact_ids)):
            deleted += self._conn.execute(
                f"DELETE FROM facts WHERE fact_id IN ({_marks(len(chunk))})",  # noqa: S608
                chunk,
            ).rowcount
        return deleted

    def identifiers_page(
        self, exclude_key_id: str, after_node_id: str, limit: int
    ) -> list[IdentifierNode]:
        rows = self._conn.execute(
            f"{_NODE_SELECT}WHERE i.key_id != ? AND i.node_id > ? ORDER BY i.node_id LIMIT ?",
            (exclude_key_id, after_node_id, limit),
        )
        return [self._node(row) for row in rows]

    def person(self, person_id: str) -> PersonRecord | None:
        row = self._conn.execute(
            "SELECT person_id, created_at, last_seen FROM persons WHERE person_id = ?",
            (person_id,),
        ).fetchone()
        return None if row is None else PersonRecord(row[0], _dt(row[1]), _dt(row[2]))

    def person_consents(self, person_id: str, purposes: Collection[str]) -> list[ConsentRecord]:
        # The purposes as placeholders, not a json_each() array: a profile read asks for one
        # purpose (and the restriction purpose), and the JSON array cost a third of the
        # statement (~11 µs of ~33) plus its encoding; the few distinct texts stay cached.
        wanted = sorted({*purposes, RESTRICTION_PURPOSE})
        rows = self._conn.execute(
            f"SELECT {_CONSENT_COLUMNS} FROM persons p "  # noqa: S608 - fixed columns and placeholders only
            "JOIN identifiers i ON i.person = p.pk JOIN consents c ON c.node_id = i.node_id "
            f"WHERE p.person_id = ? AND +c.purpose IN ({_marks(len(wanted))}) "
            "ORDER BY c.at, c.recorded_at, c.record_id",
            (person_id, *wanted),
        )
        return [_consent(row) for row in rows]

    def persons_consents(
        self, person_ids: Collection[str], purposes: Collection[str]
    ) -> dict[str, list[ConsentRecord]]:
        wanted = sorted({*purposes, RESTRICTION_PURPOSE})
        found: dict[str, list[ConsentRecord]] = {}
        for chunk in _wide_chunks(sorted(set(person_ids))):
            rows = self._conn.execute(
                f"SELECT p.person_id, {_CONSENT_COLUMNS} FROM persons p "  # noqa: S608 - fixed columns and placeholders only
                "JOIN identifiers i ON i.person = p.pk JOIN consents c ON c.node_id = i.node_id "
                f"WHERE p.person_id IN ({_marks(len(chunk))}) "
                f"AND +c.purpose IN ({_marks(len(wanted))}) "
                "ORDER BY p.person_id, c.at, c.recorded_at, c.record_id",
                (*chunk, *wanted),
            )
            for row in rows:
                found.setdefault(row[0], []).append(_consent(row[1:]))
        return found

    def member_page(self, scan: MemberScan, after_person_id: str, limit: int) -> MemberScanPage:
        """One page of persons matching ``scan.event_rules``, with consents and attributes.

        The persons of the page, with the event rules and the consent filter evaluated
        set-based over the state materialized at write time (:mod:`identity.store.sqlite_audience`:
        per-person event counters, current consent) and the consent records of the persons
        kept, in one statement; then, if the scan asks for attributes, the attributes of the
        persons kept in a second one (rows grouped by person id, split off in one pass).
        """
        if limit < 1:
            return _member_rows((), {})
        # A rule of at least 0 events holds for everyone; a repeated rule adds nothing.
        rules = tuple(dict.fromkeys(r for r in scan.event_rules if r.min_count > 0))
        lead = 0
        if len(rules) > 1:  # the rule selecting fewest events drives (ms per rule)
            counts = [
                self._conn.execute(_EVENT_COUNT, (rule.name, _ms(rule.since))).fetchone()[0]
                for rule in rules
            ]
            lead = counts.index(min(counts))
        persons = sqlite_audience.page_persons(
            self._conn,
            rules,
            lead,
            scan.consent_filter,
            _consent_purposes(scan.consent_purposes),
            after_person_id,
            limit,
            times=scan.person_times,
        )
        attributes: dict[str, list[Fact]] = {}
        if persons and scan.attribute_names:
            kept = [row[0] for row in persons if row[3] is None]
            if not rules and len(kept) == len(persons):  # every person of the range is kept
                attributes = self._member_attributes(
                    scan, _PAGE_RANGE, (after_person_id, persons[-1][0])
                )
            elif kept:
                attributes = self._member_attributes(scan, _PAGE_LIST, (json.dumps(kept),))
        return _member_rows(persons, attributes, scan.consent_filter)

    def _member_attributes(
        self, scan: MemberScan, where: str, page: tuple[str, ...]
    ) -> dict[str, list[Fact]]:
        """The active attributes named in the scan of a page's kept persons, by person id."""
        names = json.dumps(sorted(set(scan.attribute_names)))
        attribute, active = FactKind.ATTRIBUTE, FactStatus.ACTIVE
        pii_tuples: dict[str, tuple[str, ...]] = {"": ()}
        attributes: dict[str, list[Fact]] = {}
        last: str | None = None
        facts: list[Fact] = []
        rows = self._conn.execute(_MEMBER_ATTRIBUTES.format(persons=where), (*page, names))
        for person_id, fact_id, node_id, name, category, at, source, sealed, pii in rows:
            if (types := pii_tuples.get(pii)) is None:
                types = pii_tuples[pii] = tuple(p for p in pii.split(",") if p)
            fact = Fact(
                fact_id,
                node_id,
                attribute,
                name,
                category,
                _dt(at),
                source,
                active,
                sealed,  # sqlite3 returns a BLOB as bytes
                types,
            )
            if person_id == last:
                facts.append(fact)
            else:
                last, facts = person_id, [fact]
                attributes[person_id] = facts
        return attributes

    # -- erasure and suppression ----------------------------------------------------------

    def erase_person(self, person_id: str) -> ErasureCounts:
        """Delete the person and everything keyed by it or its nodes, dependants first.

        Every statement seeks an index (identifiers_by_person, facts_by_node, the consents' and
        links' primary keys, links_by_b, refusals_by_digest), so the cost depends on the size of
        the person, not of the graph. The store runs with ``secure_delete``: the deleted cells
        are zeroed in the pages, not left in free space.
        """
        conn = self._conn
        row = conn.execute("SELECT pk FROM persons WHERE person_id = ?", (person_id,)).fetchone()
        person = None if row is None else int(row[0])
        nodes = [
            (pk, node_id, HashedIdentifier(type_, key_id, bytes(digest)))
            for pk, node_id, type_, key_id, digest in conn.execute(
                "SELECT pk, node_id, type, key_id, digest FROM identifiers WHERE person = ? "
                "ORDER BY node_id",
                (person,),
            )
        ]
        node_ids = [node_id for _, node_id, _ in nodes]
        for node_id in node_ids:
            self._new_nodes.pop(node_id, None)
        links = facts = consents = rules = 0
        for chunk in _chunks(nodes):
            marks = _marks(len(chunk))
            ids = [node_id for _, node_id, _ in chunk]
            keys = [pk for pk, _, _ in chunk]
            rules += conn.execute(
                f"DELETE FROM do_not_link WHERE a IN ({marks}) OR b IN ({marks})",  # noqa: S608 - placeholders only
                (*ids, *ids),
            ).rowcount
            # Both ends of a link belong to one person; both ends are matched all the same, so
            # a link can never be left pointing at a deleted node.
            links += conn.execute(
                f"DELETE FROM links WHERE a IN ({marks}) OR b IN ({marks})",  # noqa: S608 - placeholders only
                (*keys, *keys),
            ).rowcount
            facts += conn.execute(
                f"DELETE FROM facts WHERE node IN ({marks})",  # noqa: S608 - placeholders only
                keys,
            ).rowcount
            consents += conn.execute(
                f"DELETE FROM consents WHERE node_id IN ({marks})",  # noqa: S608 - placeholders only
                ids,
            ).rowcount
        refusals = self.delete_refusals([hashed for _, _, hashed in nodes])
        # Events about the person not yet published go too: erasure reaches the downstream queue.
        conn.execute("DELETE FROM event_outbox WHERE person_id = ?", (person_id,))
        conn.execute("DELETE FROM identifiers WHERE person = ?", (person,))
        persons = conn.execute("DELETE FROM persons WHERE pk = ?", (person,)).rowcount
        return ErasureCounts(
            persons=persons,
            node_ids=tuple(node_ids),
            hashes=tuple(hashed for _, _, hashed in nodes),
            links=links,
            facts=facts,
            consents=consents,
            refusals=refusals,
            do_not_link=rules,
        )

    def delete_refusals_before(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` refusals of events before ``before``."""
        return self._conn.execute(
            "DELETE FROM refusals WHERE refusal_id IN "
            "(SELECT refusal_id FROM refusals WHERE at < ? LIMIT ?)",
            (_ms(before), limit),
        ).rowcount

    def delete_superseded_consents(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` superseded consent records decided before ``before``."""
        return self._conn.execute(
            "DELETE FROM consents WHERE record_id IN (SELECT c.record_id FROM consents c "
            "WHERE c.at < ? AND EXISTS (SELECT 1 FROM consents n WHERE n.node_id = c.node_id "
            "AND n.purpose = c.purpose AND n.signal = c.signal AND n.at > c.at) LIMIT ?)",
            (_ms(before), limit),
        ).rowcount

    def refused_anchors(self, hashes: Collection[HashedIdentifier]) -> list[RefusedAnchor]:
        """Where events that had any of ``hashes`` refused put the rest of their data."""
        found: set[RefusedAnchor] = set()
        for h in set(hashes):
            found.update(
                RefusedAnchor(str(person_id), _dt(int(at)))
                for person_id, at in self._conn.execute(
                    "SELECT p.person_id, r.at FROM refusals r "
                    "JOIN identifiers i ON i.node_id = r.anchor_node "
                    "JOIN persons p ON p.pk = i.person "
                    "WHERE r.digest = ? AND r.type = ? AND r.key_id = ?",
                    (h.digest, h.type, h.key_id),
                )
            )
        return sorted(found, key=lambda a: (a.person_id, a.at))

    def delete_refusals(self, hashes: Collection[HashedIdentifier]) -> int:
        if not hashes:
            return 0
        before = self._conn.total_changes
        self._conn.executemany(
            "DELETE FROM refusals WHERE digest = ? AND type = ? AND key_id = ?",
            [(h.digest, h.type, h.key_id) for h in set(hashes)],
        )
        return self._conn.total_changes - before

    def suppress(self, hashes: Collection[HashedIdentifier]) -> int:
        if not hashes:
            return 0
        before = self._conn.total_changes
        self._conn.executemany(
            "INSERT INTO suppressed (digest, type, key_id) VALUES (?, ?, ?) "
            "ON CONFLICT (digest, type, key_id) DO NOTHING",
            [(h.digest, h.type, h.key_id) for h in set(hashes)],
        )
        return self._conn.total_changes - before

    def suppressed(self, candidates: Sequence[HashedIdentifier]) -> set[HashedIdentifier]:
        digests = {c.digest for c in candidates}
        found: set[HashedIdentifier] | None = None
        if len(digests) >= _SUPPRESSED_SCAN_FROM:
            found = self._whole_suppression_list(len(digests) // _SUPPRESSED_SCAN_SHARE)
        if found is None:
            found = set()
            for chunk in _wide_chunks(sorted(digests)):  # sorted: see find_identifiers
                rows = self._conn.execute(
                    "SELECT type, key_id, digest FROM suppressed "  # noqa: S608 - placeholders
                    f"WHERE digest IN ({_marks(len(chunk))})",
                    chunk,
                )
                found.update(HashedIdentifier(t, k, bytes(d)) for t, k, d in rows)
        if not found:
            return found
        # Hashed only when something came back, and then only the candidates whose digest did.
        found_digests = {h.digest for h in found}
        return {c for c in candidates if c.digest in found_digests and c in found}

    def _whole_suppression_list(self, at_most: int) -> set[HashedIdentifier] | None:
        """Every suppressed hash, if there are at most ``at_most`` of them (else ``None``).

        Why: a bulk batch asks about tens of thousands of digests, and an ``IN`` list that wide
        costs ~50 ms per batch even against an empty list (SQLite builds an index of the list
        first): ~1.9 s of CPU in a 1M-identifier ingest. A list much shorter than the batch is
        read whole instead (in this transaction, so it is the list the writes see) and matched
        in memory, and reading at most ``at_most + 1`` rows bounds what a long list costs
        before the ``IN`` lookup takes over. Same answer either way."""
        rows = self._conn.execute(
            "SELECT type, key_id, digest FROM suppressed LIMIT ?", (at_most + 1,)
        ).fetchall()
        if len(rows) > at_most:
            return None
        return {HashedIdentifier(t, k, bytes(d)) for t, k, d in rows}

    def lift_suppression(self, hashes: Collection[HashedIdentifier]) -> int:
        if not hashes:
            return 0
        before = self._conn.total_changes
        self._conn.executemany(
            "DELETE FROM suppressed WHERE digest = ? AND type = ? AND key_id = ?",
            [(h.digest, h.type, h.key_id) for h in set(hashes)],
        )
        return self._conn.total_changes - before

    def add_erasure_outbox(self, entry: ErasureOutboxEntry) -> None:
        self._conn.execute(
            "INSERT INTO erasure_outbox (erasure_id, request_id, actor, created_at, node_ids, "
            "counts) VALUES (?, ?, ?, ?, ?, ?)",
            (
                entry.erasure_id,
                entry.request_id,
                entry.actor,
                _ms(entry.created_at),
                json.dumps(list(entry.node_ids)),
                json.dumps(dict(entry.counts), sort_keys=True),
            ),
        )

    def pending_erasures(self) -> list[ErasureOutboxEntry]:
        rows = self._conn.execute(
            "SELECT erasure_id, request_id, actor, created_at, node_ids, counts "
            "FROM erasure_outbox WHERE done_at IS NULL ORDER BY created_at, erasure_id"
        )
        return [
            ErasureOutboxEntry(
                erasure_id,
                request_id,
                actor,
                _dt(created_at),
                tuple(json.loads(nodes)),
                json.loads(counts),
            )
            for erasure_id, request_id, actor, created_at, nodes, counts in rows
        ]

    def complete_erasure(self, erasure_id: str) -> bool:
        # The node ids go: once their keys are shredded nothing needs them, and after an erasure
        # no file may hold the erased anchors' ids (secure_delete zeroes the old cell).
        cursor = self._conn.execute(
            "UPDATE erasure_outbox SET node_ids = '[]', done_at = ? "
            "WHERE erasure_id = ? AND done_at IS NULL",
            (_ms(datetime.now(UTC)), erasure_id),
        )
        return cursor.rowcount == 1

    # -- stream ingest and the outbound outbox ------------------------------------------------

    def _write_stream(self, changes: ChangeSet) -> None:
        if changes.messages:
            now = _ms(datetime.now(UTC))
            insert_rows(
                self._conn,
                "INSERT INTO seen_messages (digest, seen_at)",
                [(digest, now) for digest in changes.messages],
            )
        if changes.outbound:
            self.add_outbound(changes.outbound)

    def seen_messages(self, digests: Collection[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        for chunk in _wide_chunks(list(set(digests))):
            found.update(
                bytes(row[0])
                for row in self._conn.execute(
                    f"SELECT digest FROM seen_messages WHERE digest IN ({_marks(len(chunk))})",  # noqa: S608 - placeholders only
                    chunk,
                )
            )
        return found

    def forget_messages(self, before: datetime) -> int:
        return self._conn.execute(
            "DELETE FROM seen_messages WHERE seen_at < ?", (_ms(before),)
        ).rowcount

    def add_outbound(self, events: Sequence[OutboundEvent]) -> None:
        self._conn.executemany(
            "INSERT INTO event_outbox (event_id, kind, person_id, payload, created_at, "
            "erasure_id) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (e.event_id, e.kind, e.person_id, e.payload, _ms(e.created_at), e.erasure_id)
                for e in events
            ],
        )

    def outbound_page(self, limit: int) -> list[OutboundEvent]:
        rows = self._conn.execute(
            "SELECT o.event_id, o.kind, o.person_id, o.payload, o.created_at, o.erasure_id "
            "FROM event_outbox o WHERE o.erasure_id IS NULL OR NOT EXISTS ("
            "SELECT 1 FROM erasure_outbox e WHERE e.erasure_id = o.erasure_id "
            "AND e.done_at IS NULL) ORDER BY o.seq LIMIT ?",
            (limit,),
        )
        return [
            OutboundEvent(event_id, kind, person_id, payload, _dt(created_at), erasure_id)
            for event_id, kind, person_id, payload, created_at, erasure_id in rows
        ]

    def delete_outbound(self, event_ids: Collection[str]) -> int:
        deleted = 0
        for chunk in _chunks(list(set(event_ids))):
            deleted += self._conn.execute(
                f"DELETE FROM event_outbox WHERE event_id IN ({_marks(len(chunk))})",  # noqa: S608 - placeholders only
                chunk,
            ).rowcount
        return deleted


class SqliteGraphStore:
    """:class:`~identity.store.port.GraphStore` on one SQLite file."""

    def __init__(
        self,
        path: Path,
        synchronous: Synchronous = "FULL",
        busy_timeout_ms: int = 10_000,
        cache_mib: int = GRAPH_CACHE_MIB,
    ) -> None:
        self.path = path
        # Owner-only (a looser mode is refused): keyed hashes are pseudonymous personal data.
        # Deleted content is overwritten with zeros instead of lingering in free space and
        # freelist pages: an erasure (GDPR Art. 17) must not leave the person's hashes, ids or
        # ciphertexts readable in the file. It has to be on for every write, not only erasures:
        # an update or a merge moves cells and would otherwise leave stale copies that a later
        # erasure cannot find. Per connection, so every writer of the file must be this class.
        # Its cost on bulk ingest is measured in bench/README.md. 64 MiB page cache (default
        # 2 MiB): the indexes on random digests and person ids outgrow the default early, and
        # every miss is a read from disk inside the write lock. One connection for writes (and
        # a second, memory-mapped one for read transactions, below), serialized by one lock:
        # SQLite has one writer at a time anyway, and one transaction at a time keeps
        # transactions simple (FastAPI runs sync endpoints on a thread pool).
        self._conn = open_migrated(
            path,
            busy_timeout_ms,
            StoreUnavailableError,
            "SQLite store",
            _SCHEMA,
            SCHEMA_VERSION,
            newer=StoreIntegrityError,
            before=_before_schema,
            # Rebuilt tables first (schema 7), then the audience state (event counters, current
            # consent) over them: idempotent, filled once per file.
            after=_after_schema,
            secure_delete=True,
            synchronous=synchronous,
            foreign_keys=True,
            cache_mib=cache_mib,
            tighten_mode=True,  # as ever: a copied (0644) graph file is tightened, not refused
        )
        # Checkpoints every 64 MiB of WAL instead of 4 MiB: see GRAPH_WAL_AUTOCHECKPOINT_PAGES.
        self._conn.execute(f"PRAGMA wal_autocheckpoint={GRAPH_WAL_AUTOCHECKPOINT_PAGES}")
        # A multi-row write (see insert_rows) keeps a statement journal, to undo its own rows if
        # one of them fails, and SQLite spills it to a temporary file (created in /var/tmp,
        # unlinked at once) when it outgrows its memory share. Kept in memory instead: it lives
        # for one statement and holds pages the write connection changed. Set for every writer
        # of the graph, not only bulk ingest, because both kinds of write spill without it
        # (measured at stop 36 with strace, 20k-identifier bench file, the same rows either
        # way): a bulk batch of 10,000 events opened one temporary file per batch (at 1M, +1.6 %
        # bytes written, stop 35), and one-event transactions, the shape of a served identify
        # (`bench/ingest.py --batch-size 1`), opened 378 for 5,450 events (each one a multi-row
        # insert of the event's identifiers that split a page), with 0 under MEMORY. It touches
        # only this connection: reads run on self._reader, the audit log on its own file.
        self._conn.execute("PRAGMA temp_store=MEMORY")
        # Read transactions (read(), person_read()) run on a second connection, the same but for
        # a memory map of the file (storage.sqlite.GRAPH_READ_MMAP_BYTES says why).
        try:
            self._reader = connect_private(
                path,
                busy_timeout_ms,
                StoreUnavailableError,
                "SQLite store",
                secure_delete=True,
                synchronous=synchronous,
                foreign_keys=True,
                cache_mib=cache_mib,
            )
            map_graph_reads(self._reader)
        except BaseException:
            self._conn.close()
            raise
        # Two locks, one per connection: a read does not wait for a write transaction of this
        # store. Under one lock (until stop 45) every profile and audience read waited for the
        # whole of the asynchronous applier's (or a bulk batch's) 10,000-event transaction:
        # profile p95 ~2 s during an async ingest (h-async, stop 45). Under WAL a read sees the
        # snapshot of its start: every write that returned before it began, never a write still
        # in progress (that one is not acknowledged yet, so the read is ordered before it). Rules:
        # * the write lock is taken before the read lock (checkpoint, close) and never the other
        #   way round: a write inside a read() callback is refused (it would deadlock, and no
        #   use case does it);
        # * checkpoint() holds both, so no read of this store pins the WAL it truncates (an
        #   erasure's step 3 truncates the WAL that held the erased rows).
        self._lock = threading.RLock()
        self._read_lock = threading.RLock()
        self._reading = threading.local()
        self._closed = False

    @contextmanager
    def _transaction(self, begin: str, conn: sqlite3.Connection) -> Iterator[_SqliteTransaction]:
        reading = conn is self._reader
        open_reads: int = getattr(self._reading, "depth", 0)
        if not reading and open_reads:
            raise RuntimeError("a graph write inside a read() callback (it would deadlock)")
        lock = self._read_lock if reading else self._lock
        with lock, self._inside_read() if reading else nullcontext():
            if self._closed:
                raise StoreUnavailableError("the store is closed")
            with transaction(conn, begin, StoreUnavailableError, "SQLite store") as open_conn:
                yield _SqliteTransaction(open_conn)

    @contextmanager
    def _inside_read(self) -> Iterator[None]:
        """Count this thread's open reads (a write inside one is refused: see ``__init__``)."""
        self._reading.depth = getattr(self._reading, "depth", 0) + 1
        try:
            yield
        finally:
            self._reading.depth -= 1

    def _run(
        self, begin: str, fn: Callable[[_SqliteTransaction], T], conn: sqlite3.Connection
    ) -> T:
        try:
            with self._transaction(begin, conn) as tx:
                return fn(tx)
        except sqlite3.IntegrityError as exc:
            raise StoreIntegrityError(f"SQLite integrity error: {exc}") from exc
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"SQLite store unavailable: {exc}") from exc

    def write(self, fn: Callable[[_SqliteTransaction], T]) -> T:
        """Run ``fn`` in a ``BEGIN IMMEDIATE`` transaction (takes the write lock up front)."""
        return self._run("BEGIN IMMEDIATE", fn, self._conn)

    def read(self, fn: Callable[[_SqliteTransaction], T]) -> T:
        """Run ``fn`` in a deferred transaction on the read connection (memory-mapped): a
        consistent snapshot under WAL."""
        return self._run("BEGIN", fn, self._reader)

    def person_read(
        self,
        person_id: str,
        purposes: Collection[str],
        kinds: Collection[FactKind],
        status: FactStatus,
    ) -> PersonReadRows | None:
        """The person's consent records and facts in one statement (see ``_person_read_sql``):
        one statement is one snapshot, so no transaction is opened around it. The rows become
        records and facts after the store lock is released."""
        wanted = sorted({*purposes, RESTRICTION_PURPOSE})
        kind_values = [k.value for k in kinds]
        sql = _person_read_sql(len(wanted), len(kind_values))
        with self._read_lock:
            if self._closed:
                raise StoreUnavailableError("the store is closed")
            try:
                rows = self._reader.execute(
                    sql, (person_id, person_id, *wanted, person_id, status.value, *kind_values)
                ).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreUnavailableError(f"SQLite store unavailable: {exc}") from exc
        return _person_read_rows(rows)

    def stats(self) -> StoreStats:
        """Row counts of the graph tables."""

        def count(tx: _SqliteTransaction) -> StoreStats:
            conn = tx._conn
            values = [
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
                for table in ("persons", "identifiers", "links", "refusals", "facts", "consents")
            ]
            return StoreStats(*values)

        return self.read(count)

    def ping(self) -> None:
        """Check the database answers."""
        self.read(lambda tx: tx._conn.execute("SELECT 1").fetchone())

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (before file-level backups, and in tests).

        Raises :class:`StoreUnavailableError` when another connection's read kept the checkpoint
        from completing, so a backup is never taken of a half-checkpointed file unknowingly.
        """
        with self._lock, self._read_lock:  # no read of this store pins the WAL meanwhile
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise StoreUnavailableError("WAL checkpoint blocked by a reader; try again")

    def close(self) -> None:
        """Close the connection."""
        with self._lock, self._read_lock:
            if not self._closed:
                self._closed = True
                self._reader.close()
                self._conn.close()
