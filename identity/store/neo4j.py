"""The Neo4j graph store: the same contract as the SQLite store, on the official ``neo4j`` driver.

The only module that imports ``neo4j`` (a banned import everywhere else, see pyproject). Every
statement it runs is a constant of :mod:`identity.store.cypher`; values travel only as
parameters. Writes are set-based: ``UNWIND $rows`` statements of at most ``batch_size`` rows.

``write(fn)`` runs ``fn`` through ``session.execute_write``, which retries the whole function on
transient failures (leader switch, deadlock, lost connection) and rolls back when it raises.
That is why the port requires ``fn`` to be idempotent: the resolution engine reads what it needs
through the transaction and recomputes its :class:`~identity.model.ChangeSet` on every attempt.

Concurrent writers are serialised by a lock node (:data:`~identity.store.cypher.LOCK_WRITERS`),
taken before ``fn`` reads anything. Neo4j runs transactions at read-committed isolation: without
the lock, two events carrying the same new identifier both see "no such node", both create one,
and the second fails the uniqueness constraint; two merges of one cluster can each move half of
it. With the lock, each write transaction reads the graph as the previous one committed it, like
SQLite's ``BEGIN IMMEDIATE``, so the resolution engine's read-decide-write is correct unchanged.
docs/neo4j.md says why this and not per-cluster locks. A constraint violation can then only come
from a writer that bypasses the lock (an older idgraph, a hand-run statement): the transaction is
retried a bounded number of times from a fresh read, then reported as
:class:`~identity.errors.StoreIntegrityError`.

Driver exceptions never leave this module: connection, session, transient and authentication
failures become :class:`~identity.errors.StoreUnavailableError`, constraint violations
:class:`~identity.errors.StoreIntegrityError`. A connection lost during COMMIT (the driver's
``IncompleteCommit``: the server may have committed) is settled before ``write`` returns: every
write transaction leaves a random token on the writer lock node, committed with it or not at all,
and a transaction that takes the same lock afterwards (so it waits until the one in doubt has
committed or rolled back on the server) reads whether the token is there. Committed: ``write``
returns what ``fn`` returned, as if the answer had arrived, so the caller goes on (writes its
audit entries) exactly as after any commit. Rolled back: nothing was written, and the write is
tried again like any transient failure. Only when that cannot be told (the check fails too, or
more than :data:`COMMIT_TOKENS_KEPT` transactions committed in between) is it
:class:`~identity.errors.CommitOutcomeUnknownError`, which nothing in idgraph retries on its own
(``tests/identity/store/test_neo4j_ambiguous_commit.py`` cuts a real connection there).
Messages carry the Neo4j status code but never the server's message text, which can echo stored
property values.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from neo4j import Driver, GraphDatabase, ManagedTransaction, Session
from neo4j.exceptions import (
    AuthError,
    ConstraintError,
    DriverError,
    Forbidden,
    IncompleteCommit,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)
from neo4j.exceptions import ConfigurationError as DriverConfigurationError

from identity.errors import (
    CommitOutcomeUnknownError,
    ConfigurationError,
    StoreIntegrityError,
    StoreUnavailableError,
)
from identity.hashing import HashedIdentifier
from identity.model import (
    RESTRICTION_PURPOSE,
    ChangeSet,
    Cluster,
    ConsentExclusion,
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
    Refusal,
    RefusalReason,
    RefusedAnchor,
    StoreStats,
    consent_exclusion,
    consent_grant,
)
from identity.store import cypher
from identity.store.copy import RefusalKey
from identity.store.port import person_read_in

T = TypeVar("T")
_log = logging.getLogger("idgraph.store.neo4j")

DEFAULT_BATCH_SIZE = 1000
WRITER_LOCK = "graph"
# Attempts of a write transaction that failed a uniqueness constraint, or whose COMMIT lost its
# connection and is known to have rolled back (see the module docstring).
CONSTRAINT_RETRIES = 3
# Commit tokens the writer lock node keeps (cypher.LOCK_WRITERS): a COMMIT in doubt is settled
# while fewer than this many other write transactions committed after it (the check runs at
# once, so a handful at most), else it stays unknown. 64 tokens of 16 hex digits: ~1.2 KiB
# rewritten per write transaction.
COMMIT_TOKENS_KEPT = 64
# Bolt and routing (cluster/Aura) schemes. The driver's HTTP schemes are a preview feature with
# other dependencies and semantics, so they are refused rather than half-supported.
URI_SCHEMES = frozenset({"bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"})
_SCHEMA_VERSION_KEY = "schema_version"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _kept_rows(
    scan: MemberScan,
    persons: Sequence[Mapping[str, Any]],
    excluded: Mapping[str, ConsentExclusion],
    consents: Mapping[str, list[ConsentRecord]],
    attributes: Mapping[str, list[Fact]],
) -> tuple[MemberRow, ...]:
    """The rows of a member page's kept persons: the records of the purposes asked (and
    restriction records), or, for a scan filtered on the one purpose it asks for, the grant
    they reduce to where they do (the port's ``MemberRow.grant``; :func:`consent_grant`)."""
    asked = {*scan.consent_purposes, RESTRICTION_PURPOSE}
    granting = scan.consent_filter
    if granting is not None and asked != {granting, RESTRICTION_PURPOSE}:
        granting = None
    rows: list[MemberRow] = []
    for r in persons:
        person_id = r["person_id"]
        if person_id in excluded:
            continue
        records = tuple(c for c in consents.get(person_id, ()) if c.purpose in asked)
        grant = None if granting is None else consent_grant(records, granting)
        rows.append(
            MemberRow(
                person_id,
                _dt(r["created_at"]) if scan.person_times else None,
                _dt(r["last_seen"]) if scan.person_times else None,
                () if grant is not None else records,
                tuple(attributes.get(person_id, ())),
                grant,
            )
        )
    return tuple(rows)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _person_row(p: PersonRecord) -> dict[str, Any]:
    return {
        "person_id": p.person_id,
        "created_at": _ms(p.created_at),
        "last_seen": _ms(p.last_seen),
    }


def _node_row(n: IdentifierNode) -> dict[str, Any]:
    return {
        "node_id": n.node_id,
        "type": n.hashed.type,
        "key_id": n.hashed.key_id,
        "digest": n.hashed.digest.hex(),
        "person_id": n.person_id,
        "first_seen": _ms(n.first_seen),
        "last_seen": _ms(n.last_seen),
    }


def _link_rows(links: Sequence[Link]) -> list[dict[str, Any]]:
    # Repeats of one (a, b, source) are folded first, with the same min/max the upsert applies:
    # the result is what sequential upserts give (as in SQLite), and it keeps the "every row
    # matched both nodes" check exact.
    windows: dict[tuple[str, str, str], tuple[int, int]] = {}
    for x in links:
        key, first, last = (x.a, x.b, x.source), _ms(x.first_at), _ms(x.last_at)
        if key in windows:
            first, last = min(first, windows[key][0]), max(last, windows[key][1])
        windows[key] = (first, last)
    return [
        {"a": a, "b": b, "source": source, "first_at": first, "last_at": last}
        for (a, b, source), (first, last) in windows.items()
    ]


def _fact_row(f: Fact) -> dict[str, Any]:
    return {
        "fact_id": f.fact_id,
        "node_id": f.node_id,
        "kind": f.kind.value,
        "name": f.name,
        "category": f.category,
        "at": _ms(f.at),
        "source": f.source,
        "status": f.status.value,
        "sealed": bytes(f.sealed),  # a byte array property: ciphertext, never compared
        "pii": list(f.pii),
    }


def _fact_rows(
    facts: Sequence[Fact],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows for the attribute upsert, the raw-identifier upsert and the append, in that order.

    Repeats of one upsert key in ``facts`` are folded first into what SQLite's sequential
    ``ON CONFLICT`` upserts leave: the first row's id (and, for a raw identifier, its name,
    category, status and pii) with the values of the row that won. An attribute row wins when it
    is at least as recent as the current one; a raw identifier row always wins. Each key then
    occurs once per statement, so the result does not depend on what a ``MERGE`` sees of
    earlier rows of the same statement.
    """
    current: dict[tuple[str, str], dict[str, Any]] = {}
    raw: dict[str, dict[str, Any]] = {}
    other: list[dict[str, Any]] = []
    for fact in facts:
        row = _fact_row(fact)
        if fact.kind is FactKind.RAW_IDENTIFIER:
            kept = raw.setdefault(fact.node_id, row)
            kept.update(at=row["at"], source=row["source"], sealed=row["sealed"])
        elif fact.kind is FactKind.ATTRIBUTE and fact.status is FactStatus.ACTIVE:
            kept = current.setdefault((fact.node_id, fact.name), row)
            if row["at"] >= kept["at"]:
                kept.update({k: row[k] for k in ("category", "at", "source", "sealed", "pii")})
        else:
            other.append(row)
    return list(current.values()), list(raw.values()), other


def _fact(record: dict[str, Any]) -> Fact:
    return Fact(
        record["fact_id"],
        record["node_id"],
        FactKind(record["kind"]),
        record["name"],
        record["category"],
        _dt(record["at"]),
        record["source"],
        FactStatus(record["status"]),
        bytes(record["sealed"]),
        tuple(record["pii"]),
    )


def _consent_row(c: ConsentRecord) -> dict[str, Any]:
    return {
        "record_id": c.record_id,
        "node_id": c.node_id,
        "purpose": c.purpose,
        "granted": c.granted,  # a boolean property
        "at": _ms(c.at),
        "recorded_at": _ms(c.recorded_at),
        "source": c.source,
        "signal": c.signal.value,
        "lawful_basis": c.lawful_basis,
        "proof": c.proof,
    }


def _consent(record: dict[str, Any]) -> ConsentRecord:
    return ConsentRecord(
        record["record_id"],
        record["node_id"],
        record["purpose"],
        bool(record["granted"]),
        _dt(record["at"]),
        _dt(record["recorded_at"]),
        record["source"],
        ConsentSignal(record["signal"]),
        record["lawful_basis"],
        record["proof"],
    )


def _consent_purposes(purposes: Collection[str]) -> list[str]:
    """The purposes to read: the asked ones and the restriction purpose ``'*'``."""
    return sorted({*purposes, RESTRICTION_PURPOSE})


def _refusal_row(r: Refusal) -> dict[str, Any]:
    return {
        "at": _ms(r.at),
        "source": r.source,
        "type": r.hashed.type,
        "key_id": r.hashed.key_id,
        "digest": r.hashed.digest.hex(),
        "reason": r.reason.value,
        "detail": r.detail,
        "anchor_node": r.anchor_node,
    }


def commit_landed(token: str, seq: int, current: int, commits: Sequence[str]) -> bool | None:
    """Whether a write transaction committed, from the writer lock node as it is now.

    ``token`` and ``seq``: what the transaction wrote on the lock node and the sequence number it
    took; ``current`` and ``commits``: the lock node's sequence now and its latest tokens, newest
    first (cypher.WRITER_COMMITS, read once the transaction in doubt has ended). Had it
    committed, its token would be at index ``current - seq``: there, it committed; that index
    still inside the kept tokens and the token absent, it rolled back (also when ``current <
    seq``: nobody, it included, committed since); beyond them, it cannot be told (``None``)."""
    if token in commits:
        return True
    if current - seq < len(commits):
        return False
    return None


def _status(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}, {code}" if code else type(exc).__name__


@contextmanager
def _driver_errors(action: str) -> Iterator[None]:
    """Re-raise driver exceptions as idgraph's own, naming ``action``."""
    try:
        yield
    except ConstraintError as exc:
        raise StoreIntegrityError(
            f"Neo4j refused to {action}: a constraint ({_status(exc)})"
        ) from exc
    except IncompleteCommit as exc:
        # The connection broke after COMMIT was sent and before its answer came: the server may
        # have committed. Not "unavailable, nothing written": a caller that writes the same
        # changes again (group commit's one-by-one fallback did) could apply them twice.
        raise CommitOutcomeUnknownError(
            f"Neo4j connection lost while committing, could not {action} for sure: the changes "
            "may have been written or not; send them again (events with a message id are then "
            "recognised as duplicates)"
        ) from exc
    except (ServiceUnavailable, SessionExpired, TransientError) as exc:
        # Driver-side messages name the server address, which helps the operator; they never
        # hold stored values.
        detail = str(exc) if isinstance(exc, DriverError) else _status(exc)
        raise StoreUnavailableError(f"Neo4j unavailable, could not {action}: {detail}") from exc
    except (AuthError, Forbidden) as exc:
        raise StoreUnavailableError(
            f"Neo4j refused the credentials or permissions to {action} ({_status(exc)})"
        ) from exc
    except (Neo4jError, DriverError) as exc:
        raise StoreUnavailableError(f"Neo4j failed to {action} ({_status(exc)})") from exc


class Neo4jTransaction:
    """The :class:`~identity.store.port.GraphTransaction` of the Neo4j store.

    Also reads and writes ``(:Meta)`` entries (``get_meta``/``set_meta``), which
    :func:`identity.store.copy.copy_graph` uses to keep its resume cursor in the same
    transaction as the rows it copies.
    """

    def __init__(self, tx: ManagedTransaction, batch_size: int) -> None:
        self._tx = tx
        self._batch = batch_size

    def _data(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return self._tx.run(query, params).data()

    def _each_batch(
        self, query: str, rows: Sequence[dict[str, Any]], counted: str | None = None
    ) -> int:
        """Run ``query`` with ``$rows`` in batches; the sum of its ``counted`` column, if named."""
        total = 0
        for chunk in _chunks(rows, self._batch):
            records = self._data(query, rows=list(chunk))
            if counted is not None:
                total += sum(int(record[counted]) for record in records)
        return total

    def _missing_persons(self, person_ids: Collection[str]) -> list[str]:
        missing: list[str] = []
        for chunk in _chunks(sorted(set(person_ids)), self._batch):
            missing.extend(
                r["person_id"] for r in self._data(cypher.MISSING_PERSONS, person_ids=list(chunk))
            )
        return missing

    def _require_persons(self, person_ids: Collection[str], what: str) -> None:
        # SQLite enforces these with foreign keys; in Neo4j a MATCH on a missing person would
        # silently drop the row, so the adapter checks and aborts the transaction instead.
        missing = self._missing_persons(person_ids)
        if missing:
            raise StoreIntegrityError(f"{what} names {len(missing)} person(s) that do not exist")

    @staticmethod
    def _node(record: dict[str, Any]) -> IdentifierNode:
        return IdentifierNode(
            record["node_id"],
            HashedIdentifier(record["type"], record["key_id"], bytes.fromhex(record["digest"])),
            record["person_id"],
            _dt(record["first_seen"]),
            _dt(record["last_seen"]),
        )

    def find_identifiers(self, candidates: Sequence[HashedIdentifier]) -> list[IdentifierNode]:
        """The nodes whose (type, key id, digest) equals one of ``candidates``."""
        wanted = sorted(set(candidates), key=lambda h: (h.digest, h.type, h.key_id))
        found: list[IdentifierNode] = []
        for chunk in _chunks(wanted, self._batch):
            rows = [{"type": h.type, "key_id": h.key_id, "digest": h.digest.hex()} for h in chunk]
            found.extend(map(self._node, self._data(cypher.FIND_IDENTIFIERS, candidates=rows)))
        return found

    def type_counts(self, person_ids: Collection[str]) -> dict[str, dict[str, int]]:
        """For each person: how many identifiers of each type it holds."""
        counts: dict[str, dict[str, int]] = {}
        for chunk in _chunks(sorted(set(person_ids)), self._batch):
            for r in self._data(cypher.TYPE_COUNTS, person_ids=list(chunk)):
                counts.setdefault(r["person_id"], {})[r["type"]] = r["identifiers"]
        return counts

    def cluster(self, person_id: str) -> Cluster:
        """The person's identifier nodes and the links among them."""
        nodes = tuple(map(self._node, self._data(cypher.CLUSTER_NODES, person_id=person_id)))
        links = tuple(
            Link(r["a"], r["b"], r["source"], _dt(r["first_at"]), _dt(r["last_at"]))
            for r in self._data(cypher.CLUSTER_LINKS, person_id=person_id)
        )
        return Cluster(person_id, nodes, links)

    def remove_links(self, a: str, b: str) -> int:
        """Remove every link (any source) between ``a`` and ``b``; returns how many."""
        low, high = (a, b) if a < b else (b, a)
        summary = self._tx.run(cypher.REMOVE_LINKS, {"a": low, "b": high}).consume()
        return int(summary.counters.relationships_deleted)

    # -- do-not-link rules ----------------------------------------------------------------------

    @staticmethod
    def _rule(r: Mapping[str, Any]) -> DoNotLinkEntry:
        rule = DoNotLinkRule(r["rule_id"], r["a"], r["b"], _dt(r["created_at"]))
        return DoNotLinkEntry(rule, r["type_a"], r["type_b"], r["person_a"], r["person_b"])

    def add_do_not_link(self, rule: DoNotLinkRule) -> bool:
        """Record ``rule`` unless its two nodes have one already."""
        records = self._data(
            cypher.ADD_DO_NOT_LINK,
            a=rule.a,
            b=rule.b,
            rule_id=rule.rule_id,
            created_at=_ms(rule.created_at),
        )
        return bool(records and int(records[0]["created"]))

    def do_not_link_rules(self, person_ids: Collection[str]) -> list[DoNotLinkEntry]:
        """Rules with an end held by one of ``person_ids``."""
        found: dict[str, DoNotLinkEntry] = {}
        for chunk in _chunks(sorted(set(person_ids)), self._batch):
            for r in self._data(cypher.DO_NOT_LINK_OF_PERSONS, person_ids=list(chunk)):
                found[r["rule_id"]] = self._rule(r)
        return [found[k] for k in sorted(found)]

    def do_not_link_page(self, after_rule_id: str, limit: int) -> list[DoNotLinkEntry]:
        """Rules after ``after_rule_id``, by id."""
        rows = self._data(cypher.DO_NOT_LINK_PAGE, after_rule_id=after_rule_id, limit=limit)
        return [self._rule(r) for r in rows]

    def remove_do_not_link(self, rule_id: str) -> DoNotLinkEntry | None:
        """Delete the rule and return what it was; ``None`` if there was none."""
        records = self._data(cypher.REMOVE_DO_NOT_LINK, rule_id=rule_id)
        return self._rule(records[0]) if records else None

    def apply(self, changes: ChangeSet) -> None:
        """Write ``changes`` in the same order as the SQLite store, in batches."""
        if changes.new_persons:
            self._each_batch(cypher.CREATE_PERSONS, [_person_row(p) for p in changes.new_persons])
        if changes.new_nodes:
            rows = [_node_row(n) for n in changes.new_nodes]
            if self._each_batch(cypher.CREATE_IDENTIFIERS, rows, "created") != len(rows):
                raise StoreIntegrityError("new identifiers name a person that does not exist")
        if changes.rehashed:
            self._each_batch(
                cypher.REHASH_IDENTIFIERS,
                [
                    {"node_id": node_id, "key_id": h.key_id, "digest": h.digest.hex()}
                    for node_id, h in changes.rehashed.items()
                ],
            )
        if changes.touched:
            self._each_batch(
                cypher.TOUCH_IDENTIFIERS,
                [
                    {"node_id": node_id, "first_seen": _ms(first), "last_seen": _ms(last)}
                    for node_id, (first, last) in changes.touched.items()
                ],
            )
        if changes.merged:
            self._require_persons(set(changes.merged.values()), "a merge")
            self._each_batch(
                cypher.MOVE_IDENTIFIERS_OF_PERSONS,
                [{"absorbed": a, "survivor": s} for a, s in changes.merged.items()],
            )
            for chunk in _chunks(list(changes.merged), self._batch):
                self._tx.run(cypher.DELETE_PERSONS, {"person_ids": list(chunk)}).consume()
        if changes.reassigned:
            self._require_persons(set(changes.reassigned.values()), "a reassignment")
            self._each_batch(
                cypher.REASSIGN_IDENTIFIERS,
                [{"node_id": n, "person_id": p} for n, p in changes.reassigned.items()],
            )
        if changes.persons_seen:
            self._each_batch(
                cypher.SEE_PERSONS,
                [{"person_id": p, "last_seen": _ms(t)} for p, t in changes.persons_seen.items()],
            )
        if changes.links:
            rows = _link_rows(changes.links)
            if self._each_batch(cypher.UPSERT_LINKS, rows, "linked") != len(rows):
                raise StoreIntegrityError("links name an identifier node that does not exist")
        self._write_facts(changes.facts)  # a no-op without facts
        self._write_consents(changes.consents)  # a no-op without consents
        if changes.refusals:
            self._each_batch(cypher.CREATE_REFUSALS, [_refusal_row(r) for r in changes.refusals])
        self._write_stream(changes)  # a no-op without message ids and outbound events

    def _write_stream(self, changes: ChangeSet) -> None:
        if changes.messages:
            now = _ms(datetime.now(UTC))
            self._each_batch(
                cypher.RECORD_MESSAGES,
                [{"digest": digest.hex(), "seen_at": now} for digest in changes.messages],
            )
        if changes.outbound:
            self.add_outbound(changes.outbound)

    def _write_facts(self, facts: Sequence[Fact]) -> None:
        # After new nodes, merges and reassignments: a fact hangs off its Identifier node, so it
        # is already with the node's (new) person and needs no move of its own.
        current, raw, other = _fact_rows(facts)
        for query, rows in (
            (cypher.UPSERT_ATTRIBUTE_FACTS, current),
            (cypher.UPSERT_RAW_IDENTIFIER_FACTS, raw),
            (cypher.CREATE_FACTS, other),
        ):
            # A MATCH on a missing anchor would silently drop the row; SQLite's foreign key
            # refuses it, so the adapter does too (and the transaction rolls back).
            if rows and self._each_batch(query, rows, "written") != len(rows):
                raise StoreIntegrityError("facts name an identifier node that does not exist")

    def _write_consents(self, consents: Sequence[ConsentRecord]) -> None:
        # After nodes, merges and reassignments, like facts; a missing anchor would be dropped
        # silently by the MATCH, so the count is checked (SQLite's foreign key refuses it).
        rows = [_consent_row(c) for c in consents]
        if rows and self._each_batch(cypher.CREATE_CONSENTS, rows, "written") != len(rows):
            raise StoreIntegrityError("consents name an identifier node that does not exist")

    def person_facts(
        self, person_id: str, kinds: Collection[FactKind], status: FactStatus
    ) -> list[Fact]:
        """Facts of ``kinds`` with ``status`` on the person's nodes, oldest first."""
        records = self._data(
            cypher.PERSON_FACTS,
            person_id=person_id,
            kinds=sorted({k.value for k in kinds}),
            status=status.value,
        )
        return [_fact(r) for r in records]

    def existing_nodes(self, node_ids: Collection[str]) -> set[str]:
        """Those of ``node_ids`` that are identifier nodes."""
        found: set[str] = set()
        for chunk in _chunks(sorted(set(node_ids)), self._batch):
            records = self._data(cypher.EXISTING_NODES, node_ids=list(chunk))
            found.update(str(r["node_id"]) for r in records)
        return found

    def node_facts(self, node_ids: Collection[str], kind: FactKind) -> list[Fact]:
        """Active facts of ``kind`` anchored to ``node_ids``."""
        found: list[Fact] = []
        for chunk in _chunks(sorted(set(node_ids)), self._batch):
            records = self._data(
                cypher.NODE_FACTS,
                node_ids=list(chunk),
                kind=kind.value,
                status=FactStatus.ACTIVE.value,
            )
            found.extend(map(_fact, records))
        return found

    def facts_page(self, status: FactStatus, after_fact_id: str, limit: int) -> list[Fact]:
        """Facts with ``status`` whose id sorts after ``after_fact_id``, at most ``limit``."""
        records = self._data(
            cypher.FACTS_PAGE, status=status.value, after_fact_id=after_fact_id, limit=limit
        )
        return [_fact(r) for r in records]

    def set_fact_status(self, fact_ids: Collection[str], status: FactStatus) -> int:
        """Change the status of facts; returns how many exist (and so were set)."""
        ids = sorted(set(fact_ids))
        changed = 0
        for chunk in _chunks(ids, self._batch):
            records = self._data(cypher.SET_FACT_STATUS, fact_ids=list(chunk), status=status.value)
            changed += sum(int(r["changed"]) for r in records)
        if status is FactStatus.ACTIVE:
            # SQLite's partial unique index refuses a second active attribute of one name on
            # one node; Neo4j has no such constraint, so the adapter checks after the update.
            for chunk in _chunks(ids, self._batch):
                records = self._data(
                    cypher.ATTRIBUTE_CLASHES,
                    fact_ids=list(chunk),
                    kind=FactKind.ATTRIBUTE.value,
                    status=FactStatus.ACTIVE.value,
                )
                if any(int(r["clashes"]) for r in records):
                    raise StoreIntegrityError(
                        "activating the facts would give a node two current values of one attribute"
                    )
        return changed

    def delete_facts(self, fact_ids: Collection[str]) -> int:
        """Delete facts; returns how many were deleted."""
        deleted = 0
        for chunk in _chunks(sorted(set(fact_ids)), self._batch):
            summary = self._tx.run(cypher.DELETE_FACTS, {"fact_ids": list(chunk)}).consume()
            deleted += int(summary.counters.nodes_deleted)
        return deleted

    def identifiers_page(
        self, exclude_key_id: str, after_node_id: str, limit: int
    ) -> list[IdentifierNode]:
        """Nodes hashed under any key but ``exclude_key_id``, by node id after a cursor."""
        records = self._data(
            cypher.IDENTIFIERS_PAGE,
            exclude_key_id=exclude_key_id,
            after_node_id=after_node_id,
            limit=limit,
        )
        return [self._node(r) for r in records]

    def person(self, person_id: str) -> PersonRecord | None:
        """The person, or ``None``."""
        records = self._data(cypher.GET_PERSON, person_id=person_id)
        if not records:
            return None
        r = records[0]
        return PersonRecord(r["person_id"], _dt(r["created_at"]), _dt(r["last_seen"]))

    def person_consents(self, person_id: str, purposes: Collection[str]) -> list[ConsentRecord]:
        """Records for ``purposes`` and restrictions on the person's nodes, in decision order."""
        records = self._data(
            cypher.PERSONS_CONSENTS,
            person_ids=[person_id],
            purposes=_consent_purposes(purposes),
        )
        return [_consent(r) for r in records]

    def persons_consents(
        self, person_ids: Collection[str], purposes: Collection[str]
    ) -> dict[str, list[ConsentRecord]]:
        """:meth:`person_consents` of several persons: one statement per batch of persons."""
        found: dict[str, list[ConsentRecord]] = {}
        for chunk in _chunks(sorted(set(person_ids)), self._batch):
            for record in self._data(
                cypher.PERSONS_CONSENTS,
                person_ids=list(chunk),
                purposes=_consent_purposes(purposes),
            ):
                found.setdefault(record["person_id"], []).append(_consent(record))
        return found

    def member_page(self, scan: MemberScan, after_person_id: str, limit: int) -> MemberScanPage:
        """One page of persons matching ``scan.event_rules``, with consents and attributes.

        Three statements per page whatever its size: the persons (rules evaluated in Cypher),
        then the consents and the attributes of all of them (``UNWIND $person_ids``).
        """
        if limit < 1:
            return MemberScanPage((), 0, "", {})
        # Distinct rules: MEMBER_PAGE groups per rule map, so two equal rules would count once.
        rules = [
            {"name": name, "since": since, "min_count": min_count}
            for name, since, min_count in sorted(
                {(r.name, _ms(r.since), r.min_count) for r in scan.event_rules}
            )
        ]
        persons = self._data(
            cypher.MEMBER_PAGE,
            after_person_id=after_person_id,
            rules=rules,
            kind=FactKind.EVENT.value,
            status=FactStatus.ACTIVE.value,
            limit=limit,
        )
        if not persons:
            return MemberScanPage((), 0, "", {})
        ids = [r["person_id"] for r in persons]
        consents: dict[str, list[ConsentRecord]] = {}
        attributes: dict[str, list[Fact]] = {}
        excluded: dict[str, ConsentExclusion] = {}
        wanted = set(scan.consent_purposes)
        if scan.consent_filter is not None:
            wanted.add(scan.consent_filter)
        for chunk in _chunks(ids, self._batch):
            for r in self._data(
                cypher.PERSONS_CONSENTS,
                person_ids=list(chunk),
                purposes=_consent_purposes(wanted),
            ):
                consents.setdefault(r["person_id"], []).append(_consent(r))
            kept = list(chunk)
            if scan.consent_filter is not None:
                # Not materialized here (see docs/neo4j.md): the records are read for every
                # person of the page and the filter's definition applied to them.
                for person_id in chunk:
                    reason = consent_exclusion(consents.get(person_id, ()), scan.consent_filter)
                    if reason is not None:
                        excluded[person_id] = reason
                kept = [person_id for person_id in chunk if person_id not in excluded]
            if scan.attribute_names and kept:
                for r in self._data(
                    cypher.MEMBER_ATTRIBUTES,
                    person_ids=kept,
                    kind=FactKind.ATTRIBUTE.value,
                    status=FactStatus.ACTIVE.value,
                    names=sorted(set(scan.attribute_names)),
                ):
                    attributes.setdefault(r["person_id"], []).append(_fact(r))
        rows = _kept_rows(scan, persons, excluded, consents, attributes)
        return MemberScanPage(rows, len(persons), ids[-1], dict(Counter(excluded.values())))

    # -- erasure and suppression --------------------------------------------------------

    def _deleted(self, query: str, **params: Any) -> tuple[int, int]:
        """Run a delete; ``(nodes deleted, relationships deleted)``."""
        counters = self._tx.run(query, params).consume().counters
        return int(counters.nodes_deleted), int(counters.relationships_deleted)

    def erase_person(self, person_id: str) -> ErasureCounts:
        """Delete the person, its nodes, their links, facts, consents and refusals."""
        nodes = [
            (r["node_id"], HashedIdentifier(r["type"], r["key_id"], bytes.fromhex(r["digest"])))
            for r in self._data(cypher.ERASURE_NODES, person_id=person_id)
        ]
        _, links = self._deleted(cypher.ERASE_PERSON_LINKS, person_id=person_id)
        _, rules = self._deleted(cypher.ERASE_PERSON_DO_NOT_LINK, person_id=person_id)
        facts, _ = self._deleted(cypher.ERASE_PERSON_FACTS, person_id=person_id)
        consents, _ = self._deleted(cypher.ERASE_PERSON_CONSENTS, person_id=person_id)
        refusals = self.delete_refusals([hashed for _, hashed in nodes])
        # Events about the person not yet published go too: erasure reaches the downstream queue.
        self._deleted(cypher.ERASE_PERSON_OUTBOUND, person_id=person_id)
        self._deleted(cypher.ERASE_PERSON_IDENTIFIERS, person_id=person_id)
        persons, _ = self._deleted(cypher.ERASE_PERSON, person_id=person_id)
        return ErasureCounts(
            persons=persons,
            node_ids=tuple(node_id for node_id, _ in nodes),
            hashes=tuple(hashed for _, hashed in nodes),
            links=links,
            facts=facts,
            consents=consents,
            refusals=refusals,
            do_not_link=rules,
        )

    def _hash_batches(self, hashes: Collection[HashedIdentifier]) -> Iterator[list[dict[str, str]]]:
        wanted = sorted(set(hashes), key=lambda h: (h.digest, h.type, h.key_id))
        for chunk in _chunks(wanted, self._batch):
            yield [{"type": h.type, "key_id": h.key_id, "digest": h.digest.hex()} for h in chunk]

    def delete_refusals_before(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` refusals of events before ``before``."""
        return self._deleted(cypher.DELETE_REFUSALS_BEFORE, before=_ms(before), limit=limit)[0]

    def delete_superseded_consents(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` superseded consent records decided before ``before``."""
        return self._deleted(cypher.DELETE_SUPERSEDED_CONSENTS, before=_ms(before), limit=limit)[0]

    def refused_anchors(self, hashes: Collection[HashedIdentifier]) -> list[RefusedAnchor]:
        """Where events that had any of ``hashes`` refused put the rest of their data."""
        found = {
            RefusedAnchor(str(r["person_id"]), _dt(int(r["at"])))
            for rows in self._hash_batches(hashes)
            for r in self._data(cypher.REFUSED_ANCHORS, candidates=rows)
        }
        return sorted(found, key=lambda a: (a.person_id, a.at))

    def delete_refusals(self, hashes: Collection[HashedIdentifier]) -> int:
        """Delete refusals recorded for any of ``hashes``."""
        return sum(
            self._deleted(cypher.DELETE_REFUSALS_OF_HASHES, candidates=rows)[0]
            for rows in self._hash_batches(hashes)
        )

    def suppress(self, hashes: Collection[HashedIdentifier]) -> int:
        """Add keyed hashes to the suppression list; returns how many were new."""
        created = 0
        for rows in self._hash_batches(hashes):
            counters = self._tx.run(cypher.SUPPRESS_HASHES, {"candidates": rows}).consume()
            created += int(counters.counters.nodes_created)
        return created

    def suppressed(self, candidates: Sequence[HashedIdentifier]) -> set[HashedIdentifier]:
        """Those of ``candidates`` on the suppression list."""
        found: set[HashedIdentifier] = set()
        for rows in self._hash_batches(candidates):
            found.update(
                HashedIdentifier(r["type"], r["key_id"], bytes.fromhex(r["digest"]))
                for r in self._data(cypher.FIND_SUPPRESSED, candidates=rows)
            )
        return found

    def lift_suppression(self, hashes: Collection[HashedIdentifier]) -> int:
        """Remove ``hashes`` from the suppression list; returns how many were there."""
        return sum(
            self._deleted(cypher.LIFT_SUPPRESSION, candidates=rows)[0]
            for rows in self._hash_batches(hashes)
        )

    def add_erasure_outbox(self, entry: ErasureOutboxEntry) -> None:
        """Record an erasure whose vault keys are still to be shredded."""
        self._tx.run(
            cypher.CREATE_ERASURE_OUTBOX,
            {
                "erasure_id": entry.erasure_id,
                "request_id": entry.request_id,
                "actor": entry.actor,
                "created_at": _ms(entry.created_at),
                "node_ids": list(entry.node_ids),
                "counts": json.dumps(dict(entry.counts), sort_keys=True),
            },
        ).consume()

    def pending_erasures(self) -> list[ErasureOutboxEntry]:
        """Outbox entries not completed yet, oldest first."""
        return [
            ErasureOutboxEntry(
                r["erasure_id"],
                r["request_id"],
                r["actor"],
                _dt(r["created_at"]),
                tuple(r["node_ids"]),
                json.loads(r["counts"]),
            )
            for r in self._data(cypher.PENDING_ERASURES)
        ]

    def complete_erasure(self, erasure_id: str) -> bool:
        """Mark an outbox entry done and forget its node ids."""
        records = self._data(
            cypher.COMPLETE_ERASURE, erasure_id=erasure_id, done_at=_ms(datetime.now(UTC))
        )
        return bool(records and int(records[0]["completed"]))

    def seen_messages(self, digests: Collection[bytes]) -> set[bytes]:
        """Those of ``digests`` applied before and not forgotten."""
        found: set[bytes] = set()
        for chunk in _chunks(sorted(set(digests)), self._batch):
            found.update(
                bytes.fromhex(r["digest"])
                for r in self._data(cypher.FIND_SEEN_MESSAGES, digests=[d.hex() for d in chunk])
            )
        return found

    def forget_messages(self, before: datetime) -> int:
        """Drop message digests recorded before ``before``; how many."""
        return self._deleted(cypher.FORGET_MESSAGES, before=_ms(before))[0]

    def add_outbound(self, events: Sequence[OutboundEvent]) -> None:
        """Put ``events`` in the outbox."""
        self._each_batch(
            cypher.CREATE_OUTBOUND_EVENTS,
            [
                {
                    "event_id": e.event_id,
                    "kind": e.kind,
                    "person_id": e.person_id,
                    "payload": e.payload,
                    "created_at": _ms(e.created_at),
                    "erasure_id": e.erasure_id,
                }
                for e in events
            ],
        )

    def outbound_page(self, limit: int) -> list[OutboundEvent]:
        """Up to ``limit`` events ready to publish, oldest first."""
        return [
            OutboundEvent(
                r["event_id"],
                r["kind"],
                r["person_id"],
                r["payload"],
                _dt(r["created_at"]),
                r["erasure_id"],
            )
            for r in self._data(cypher.OUTBOUND_PAGE, limit=limit)
        ]

    def delete_outbound(self, event_ids: Collection[str]) -> int:
        """Remove published events; returns how many were there."""
        return sum(
            self._deleted(cypher.DELETE_OUTBOUND, event_ids=list(chunk))[0]
            for chunk in _chunks(sorted(set(event_ids)), self._batch)
        )

    def ping(self) -> None:
        """Run a trivial statement (a database-level liveness check)."""
        self._tx.run(cypher.PING).consume()

    def get_meta(self, key: str) -> str | None:
        """The value of the ``(:Meta {key})`` entry, or ``None``."""
        records = self._data(cypher.GET_META, key=key)
        return str(records[0]["value"]) if records else None

    def set_meta(self, key: str, value: str) -> None:
        """Create or replace the ``(:Meta {key})`` entry."""
        self._tx.run(cypher.SET_META, {"key": key, "value": value}).consume()


def _refusal_key(position: str) -> dict[str, Any]:
    """The parameters of a refusal page cursor ``"<at ms>|<digest hex>|<element id>"`` (of
    :meth:`Neo4jCopySource.refusals_after`); ``""`` is before every refusal."""
    if not position:
        return {"after_at": -(2**62), "after_digest": "", "after_element_id": ""}
    at, digest, element_id = position.split("|", 2)
    return {"after_at": int(at), "after_digest": digest, "after_element_id": element_id}


def is_refused_connection(exc: BaseException) -> bool:
    """Whether a connection error is a refusal (wrong credentials, no access): retrying it
    would not help, unlike an unreachable server."""
    return isinstance(exc.__cause__, (AuthError, Forbidden))


class Neo4jGraphStore:
    """:class:`~identity.store.port.GraphStore` on a Neo4j database (5.26 LTS or newer).

    The constructor checks connectivity and runs :meth:`migrate`, so an open store has its
    constraints and indexes. A server that cannot be reached is retried with exponential backoff
    (0.5 s doubling to 8 s) for ``startup_timeout_s`` (0: one attempt), because a database that
    starts after the service (a restart, a failover, compose ordering) is normal in production;
    then :class:`~identity.errors.StoreUnavailableError` is raised. Pool size, connection
    lifetime, acquisition timeout (default: ``connect_timeout_s``) and fetch size go to the driver.
    """

    def __init__(
        self,
        uri: str,
        user: str,
        password: str,
        database: str = "neo4j",
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        connect_timeout_s: float = 10.0,
        max_retry_time_s: float = 30.0,
        max_pool_size: int = 100,
        max_connection_lifetime_s: float = 3600.0,
        acquisition_timeout_s: float | None = None,
        fetch_size: int = 1000,
        startup_timeout_s: float = 0.0,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError("Neo4j batch size must be at least 1")
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in URI_SCHEMES:
            raise ConfigurationError(
                f"Neo4j URI must start with one of {', '.join(sorted(URI_SCHEMES))}://"
            )
        if max_pool_size < 1 or fetch_size < 1:
            raise ConfigurationError("Neo4j pool size and fetch size must be at least 1")
        self.database = database
        self.uri = uri
        self._batch = batch_size
        self._fetch_size = fetch_size
        self._closed = False
        try:
            self._driver: Driver = GraphDatabase.driver(
                uri,
                auth=(user, password),
                connection_timeout=connect_timeout_s,
                connection_acquisition_timeout=acquisition_timeout_s or connect_timeout_s,
                max_transaction_retry_time=max_retry_time_s,
                max_connection_pool_size=max_pool_size,
                max_connection_lifetime=max_connection_lifetime_s,
            )
        except (DriverConfigurationError, ValueError) as exc:
            # The URI scheme or options are wrong: a configuration problem, not an outage.
            raise ConfigurationError(f"invalid Neo4j URI or driver option: {exc}") from exc
        try:
            self._connect(startup_timeout_s)
        except BaseException:
            self._driver.close()
            raise

    def _connect(self, startup_timeout_s: float) -> None:
        """Verify connectivity and migrate, retrying an unreachable server until the deadline."""
        deadline = time.monotonic() + startup_timeout_s
        delay = 0.5
        while True:
            try:
                with _driver_errors("connect"):
                    self._driver.verify_connectivity()
                self.migrate()
            except StoreUnavailableError as exc:
                refused = is_refused_connection(exc)
                if refused or time.monotonic() + delay > deadline:
                    raise  # a wrong password or out of time: waiting longer will not help
                _log.warning("Neo4j not reachable yet, retrying in %.1f s: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
            else:
                return

    @contextmanager
    def _session(self) -> Iterator[Session]:
        if self._closed:
            raise StoreUnavailableError("the store is closed")
        # The driver's shared bookmark manager makes every session causally chained: a read
        # after a write sees it, even when a cluster routes the read to another member.
        with self._driver.session(
            database=self.database,
            bookmark_manager=self._driver.execute_query_bookmark_manager,
            fetch_size=self._fetch_size,
        ) as session:
            yield session

    def migrate(self) -> None:
        """Create the constraints and indexes (idempotent) and record the schema version.

        Raises :class:`~identity.errors.StoreIntegrityError` if the database was written by a
        newer idgraph schema.
        """
        with _driver_errors("migrate the schema"), self._session() as session:
            # Schema statements cannot share a transaction with data writes; each runs in its
            # own auto-commit transaction, and IF NOT EXISTS makes a re-run a no-op.
            for statement in cypher.SCHEMA_STATEMENTS:
                session.run(statement).consume()

            def ensure_version(tx: ManagedTransaction) -> str:
                params = {"key": _SCHEMA_VERSION_KEY, "value": str(cypher.SCHEMA_VERSION)}
                return str(tx.run(cypher.ENSURE_META, params).single(strict=True)["value"])

            stored = session.execute_write(ensure_version)
            if int(stored) < cypher.SCHEMA_VERSION:
                # An older database got what the newer schema adds from the statements above
                # (all IF NOT EXISTS); marking it makes an older idgraph refuse it from now on
                # rather than serve or copy it without what it does not know (consents).
                def mark_version(tx: ManagedTransaction) -> None:
                    params = {"key": _SCHEMA_VERSION_KEY, "value": str(cypher.SCHEMA_VERSION)}
                    tx.run(cypher.SET_META, params).consume()

                session.execute_write(mark_version)
        if int(stored) > cypher.SCHEMA_VERSION:
            raise StoreIntegrityError(
                f"store schema version {stored} is newer than this idgraph "
                f"({cypher.SCHEMA_VERSION})"
            )

    def write(self, fn: Callable[[Neo4jTransaction], T]) -> T:
        """Run ``fn`` in one managed write transaction, holding the writer lock.

        Retried on transient failures by the driver, and from a fresh read after a uniqueness
        constraint violation (at most :data:`CONSTRAINT_RETRIES` attempts).
        """

        # Names this call's transaction on the writer lock node (cypher.LOCK_WRITERS): random, so
        # no other writer's commit can be mistaken for it; it carries nothing about the data.
        token = secrets.token_hex(8)
        done: list[tuple[int, T]] = []  # (lock sequence, fn's result) of the latest attempt

        def work(tx: ManagedTransaction) -> T:
            lock = {"lock": WRITER_LOCK, "token": token, "keep": COMMIT_TOKENS_KEPT}
            seq = int(tx.run(cypher.LOCK_WRITERS, lock).single(strict=True)["seq"])
            result = fn(Neo4jTransaction(tx, self._batch))
            done[:] = [(seq, result)]  # the attempt that goes on to COMMIT is the last to get here
            return result

        with _driver_errors("write"):
            for attempt in range(1, CONSTRAINT_RETRIES + 1):
                try:
                    with self._session() as session:
                        return session.execute_write(work)
                except ConstraintError:
                    if attempt == CONSTRAINT_RETRIES:
                        raise
                    # A racing writer outside the lock: re-read and decide again.
                except IncompleteCommit as exc:
                    if not done:  # pragma: no cover - COMMIT is only sent once fn returned
                        raise
                    seq, result = done[0]
                    landed = self._commit_landed(token, seq)
                    if landed is None:
                        raise  # CommitOutcomeUnknownError (_driver_errors)
                    if landed:
                        return result
                    if attempt == CONSTRAINT_RETRIES:
                        raise StoreUnavailableError(
                            "Neo4j connection lost while committing; the write was rolled back "
                            "(nothing written)"
                        ) from exc
                    # Rolled back on the server: nothing was written, so write it again.
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _commit_landed(self, token: str, seq: int) -> bool | None:
        """Whether the write transaction that took lock sequence ``seq`` with ``token`` and then
        lost its connection during COMMIT committed (``None``: cannot be told).

        Run in a write transaction of its own that takes the writer lock, so it waits until the
        transaction in doubt has committed or rolled back on the server (a read could see it
        still in flight, answer "not committed", and the write would then be applied twice)."""

        def check(tx: ManagedTransaction) -> tuple[int, list[str]]:
            record = tx.run(cypher.WRITER_COMMITS, {"lock": WRITER_LOCK}).single(strict=True)
            return int(record["seq"]), [str(t) for t in record["commits"]]

        try:
            with self._session() as session:
                current, commits = session.execute_write(check)
        except (Neo4jError, DriverError) as exc:
            _log.warning("neo4j commit in doubt not settled (%s)", _status(exc))
            return None
        landed = commit_landed(token, seq, current, commits)
        _log.warning(
            "neo4j commit in doubt settled: %s",
            {True: "committed", False: "rolled back", None: "unknown"}[landed],
        )
        return landed

    def read(self, fn: Callable[[Neo4jTransaction], T]) -> T:
        """Run ``fn`` in one managed read transaction."""

        def work(tx: ManagedTransaction) -> T:
            return fn(Neo4jTransaction(tx, self._batch))

        with _driver_errors("read"), self._session() as session:
            return session.execute_read(work)

    def person_read(
        self,
        person_id: str,
        purposes: Collection[str],
        kinds: Collection[FactKind],
        status: FactStatus,
    ) -> PersonReadRows | None:
        """The person, consent and fact reads of the transaction in one read transaction."""
        return self.read(lambda tx: person_read_in(tx, person_id, purposes, kinds, status))

    def stats(self) -> StoreStats:
        """Node and relationship counts (served from Neo4j's count store)."""

        def count(tx: ManagedTransaction) -> StoreStats:
            r = tx.run(cypher.COUNT_ALL).single(strict=True)
            return StoreStats(
                r["persons"],
                r["identifiers"],
                r["links"],
                r["refusals"],
                r["facts"],
                r["consents"],
            )

        with _driver_errors("count"), self._session() as session:
            return session.execute_read(count)

    def ping(self) -> None:
        """Raise :class:`~identity.errors.StoreUnavailableError` if the database cannot serve."""
        if self._closed:
            raise StoreUnavailableError("the store is closed")
        with _driver_errors("ping"):
            self._driver.verify_connectivity()
        # verify_connectivity reaches the server; this also proves the configured database
        # exists and serves reads.
        self.read(lambda tx: tx.ping())

    def wipe_for_tests(self) -> None:
        """Delete every idgraph node (facts and consents too) and relationship. Tests only.

        The schema (constraints, indexes) stays.
        """
        # CALL ... IN TRANSACTIONS commits in batches and so must run in an auto-commit
        # transaction (session.run); execute_write would reject it.
        with _driver_errors("wipe"), self._session() as session:
            session.run(cypher.WIPE_ALL, {"batch_size": self._batch}).consume()

    def close(self) -> None:
        """Close the driver and its connection pool; the store is unusable afterwards."""
        if not self._closed:
            self._closed = True
            self._driver.close()


class Neo4jCopySource:
    """A Neo4j database as the source of :func:`identity.store.copy.copy_graph` (a
    :class:`~identity.store.copy.CopySource`): ``idgraph store copy --from neo4j://...``.

    Each page is read in its own read transaction of ``store`` (Neo4j has no snapshot across
    transactions): copy from a database nobody writes meanwhile. Refusals are paged by key
    (time, digest, element id: :data:`cypher.COPY_REFUSALS_AFTER`); the cursor keeps the last.
    """

    def __init__(self, store: Neo4jGraphStore) -> None:
        self._store = store
        self.cursor_key = f"copy_cursor:{store.uri}/{store.database}"

    def _rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return self._store.read(lambda tx: tx._data(query, **params))

    def persons_total(self) -> int:
        return self._store.stats().persons

    def persons_upto(self, person_id: str) -> int:
        return int(self._rows(cypher.COPY_PERSONS_UPTO, person_id=person_id)[0]["n"])

    def refusals_total(self) -> int:
        return self._store.stats().refusals

    def refusals_upto(self, position: RefusalKey) -> int:
        if not isinstance(position, str) or not position:
            return 0
        return int(self._rows(cypher.COPY_REFUSALS_UPTO, **_refusal_key(position))[0]["n"])

    def persons_after(self, person_id: str, limit: int) -> list[PersonRecord]:
        rows = self._rows(cypher.COPY_PERSONS_AFTER, after_person_id=person_id, limit=limit)
        return [
            PersonRecord(r["person_id"], _dt(r["created_at"]), _dt(r["last_seen"])) for r in rows
        ]

    def nodes_of(self, person_ids: Sequence[str]) -> list[IdentifierNode]:
        rows = self._rows(cypher.COPY_NODES_OF, person_ids=list(person_ids))
        return [Neo4jTransaction._node(r) for r in rows]

    def links_from(self, node_ids: Sequence[str]) -> list[Link]:
        rows = self._rows(cypher.COPY_LINKS_FROM, node_ids=list(node_ids))
        return [
            Link(r["a"], r["b"], r["source"], _dt(r["first_at"]), _dt(r["last_at"])) for r in rows
        ]

    def facts_of(self, node_ids: Sequence[str]) -> list[Fact]:
        return [_fact(r) for r in self._rows(cypher.COPY_FACTS_OF, node_ids=list(node_ids))]

    def consents_of(self, node_ids: Sequence[str]) -> list[ConsentRecord]:
        rows = self._rows(cypher.COPY_CONSENTS_OF, node_ids=list(node_ids))
        return [_consent(r) for r in rows]

    def suppressed_after(self, after: tuple[bytes, str, str], limit: int) -> list[HashedIdentifier]:
        digest, type_, key_id = after
        rows = self._rows(
            cypher.COPY_SUPPRESSED_AFTER,
            after_digest=digest.hex(),
            after_type=type_,
            after_key_id=key_id,
            limit=limit,
        )
        return [HashedIdentifier(r["type"], r["key_id"], bytes.fromhex(r["digest"])) for r in rows]

    def do_not_link_after(self, rule_id: str, limit: int) -> list[DoNotLinkRule]:
        """Do-not-link rules after ``rule_id``, in id order."""
        rows = self._rows(cypher.DO_NOT_LINK_PAGE, after_rule_id=rule_id, limit=limit)
        return [DoNotLinkRule(r["rule_id"], r["a"], r["b"], _dt(r["created_at"])) for r in rows]

    def refusals_after(self, position: RefusalKey, limit: int) -> list[tuple[RefusalKey, Refusal]]:
        after = position if isinstance(position, str) else ""
        rows = self._rows(cypher.COPY_REFUSALS_AFTER, **_refusal_key(after), limit=limit)
        return [
            (
                f"{r['at']}|{r['digest']}|{r['element_id']}",
                Refusal(
                    HashedIdentifier(r["type"], r["key_id"], bytes.fromhex(r["digest"])),
                    RefusalReason(r["reason"]),
                    r["detail"],
                    r["source"],
                    _dt(r["at"]),
                    # Where the rest of the refused event went: erasure follows it (issue 20).
                    anchor_node=r["anchor_node"],
                ),
            )
            for r in rows
        ]

    def close(self) -> None:
        """Close the store it reads."""
        self._store.close()
