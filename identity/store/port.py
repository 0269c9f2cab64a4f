"""The graph-store port: what the resolution engine needs from any backend.

A backend runs a caller's function inside one transaction (``write``/``read``). The function may
be retried (Neo4j retries transient failures), so it must be idempotent: it reads what it needs
through the transaction, decides, and writes one :class:`ChangeSet`. Every backend must pass the
contract suite in ``tests/contract``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from identity.hashing import HashedIdentifier
from identity.model import (
    ChangeSet,
    Cluster,
    ConsentRecord,
    DoNotLinkEntry,
    DoNotLinkRule,
    ErasureCounts,
    ErasureOutboxEntry,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    MemberScan,
    MemberScanPage,
    OutboundEvent,
    PersonReadRows,
    PersonRecord,
    RefusedAnchor,
    StoreStats,
)

T = TypeVar("T")


class GraphTransaction(Protocol):
    """Operations available inside one store transaction."""

    def find_identifiers(self, candidates: Sequence[HashedIdentifier]) -> list[IdentifierNode]:
        """The nodes whose (type, key id, digest) equals one of ``candidates``."""
        ...

    def type_counts(self, person_ids: Collection[str]) -> dict[str, dict[str, int]]:
        """For each person: how many identifiers of each type it holds."""
        ...

    def cluster(self, person_id: str) -> Cluster:
        """The person's identifier nodes and the links among them (the local subgraph)."""
        ...

    def remove_links(self, a: str, b: str) -> int:
        """Remove every link (any source) between nodes ``a`` and ``b``; returns how many."""
        ...

    def add_do_not_link(self, rule: DoNotLinkRule) -> bool:
        """Record ``rule``; ``False`` (and nothing written) if its two nodes already have one."""
        ...

    def do_not_link_rules(self, person_ids: Collection[str]) -> list[DoNotLinkEntry]:
        """Rules with at least one end held by one of ``person_ids``."""
        ...

    def do_not_link_page(self, after_rule_id: str, limit: int) -> list[DoNotLinkEntry]:
        """Rules with id after ``after_rule_id`` ('' for the first page), by id, at most
        ``limit``."""
        ...

    def remove_do_not_link(self, rule_id: str) -> DoNotLinkEntry | None:
        """Delete the rule and return what it was; ``None`` if there is no such rule."""
        ...

    def apply(self, changes: ChangeSet) -> None:
        """Write ``changes`` set-based; the caller's transaction makes it atomic."""
        ...

    def person_facts(
        self, person_id: str, kinds: Collection[FactKind], status: FactStatus
    ) -> list[Fact]:
        """Facts of ``kinds`` with ``status`` anchored to the person's nodes, oldest first."""
        ...

    def node_facts(self, node_ids: Collection[str], kind: FactKind) -> list[Fact]:
        """Active facts of ``kind`` anchored to ``node_ids``."""
        ...

    def existing_nodes(self, node_ids: Collection[str]) -> set[str]:
        """Those of ``node_ids`` that are identifier nodes of the graph (the vault's sweep of
        keys made ahead keeps the key of every owner id that became a node)."""
        ...

    def facts_page(self, status: FactStatus, after_fact_id: str, limit: int) -> list[Fact]:
        """Facts with ``status`` after ``after_fact_id`` in id order, at most ``limit``."""
        ...

    def set_fact_status(self, fact_ids: Collection[str], status: FactStatus) -> int:
        """Change the status of facts; returns how many changed."""
        ...

    def delete_facts(self, fact_ids: Collection[str]) -> int:
        """Delete facts; returns how many were deleted."""
        ...

    def identifiers_page(
        self, exclude_key_id: str, after_node_id: str, limit: int
    ) -> list[IdentifierNode]:
        """Nodes hashed under any key but ``exclude_key_id``, by node id after ``after_node_id``."""
        ...

    def person(self, person_id: str) -> PersonRecord | None:
        """The person, or ``None`` if there is no such person."""
        ...

    def person_consents(self, person_id: str, purposes: Collection[str]) -> list[ConsentRecord]:
        """Consent records for ``purposes`` (and every ``"*"`` restriction record) anchored to
        the person's nodes, ordered by (``at``, ``recorded_at``, ``record_id``)."""
        ...

    def persons_consents(
        self, person_ids: Collection[str], purposes: Collection[str]
    ) -> dict[str, list[ConsentRecord]]:
        """:meth:`person_consents` of several persons in one read: each person that has a
        record, with its records in the same order (persons without one are left out)."""
        ...

    def member_page(self, scan: MemberScan, after_person_id: str, limit: int) -> MemberScanPage:
        """Persons matching ``scan.event_rules`` with id greater than ``after_person_id``, in
        person id order, at most ``limit`` of them: those ``scan.consent_filter`` leaves out
        counted by reason, the others as rows with their consents and sealed attributes."""
        ...

    # -- erasure (GDPR Art. 17) and suppression; see privacy/dsr/erasure.py ------------------------

    def erase_person(self, person_id: str) -> ErasureCounts:
        """Delete the person and everything keyed by it or its identifier nodes: the nodes,
        links and do-not-link rules touching them, facts and consent records anchored to them,
        and refusals holding their keyed hashes. Returns what was deleted (``persons == 0``: no
        such person)."""
        ...

    def delete_refusals_before(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` refusals of events before ``before`` (retention)."""
        ...

    def delete_superseded_consents(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` consent records decided before ``before`` that a later record
        of the same purpose and signal on the same identifier node superseded (retention of
        consent proofs). The derived consent state is unchanged: it depends only on the latest
        record of each purpose and signal."""
        ...

    def refused_anchors(self, hashes: Collection[HashedIdentifier]) -> list[RefusedAnchor]:
        """Where the rest of each event that had one of ``hashes`` refused went: the person now
        holding the event's anchor node, with the event's time (refusals of events that linked
        nothing, or recorded before schema 5, have no anchor and are not listed)."""
        ...

    def delete_refusals(self, hashes: Collection[HashedIdentifier]) -> int:
        """Delete refusals recorded for any of ``hashes`` (exact type, key id and digest)."""
        ...

    def suppress(self, hashes: Collection[HashedIdentifier]) -> int:
        """Add keyed hashes of erased identifiers to the suppression list; returns how many
        were new. The list holds ``(type, key id, digest)`` only, for one purpose: refusing to
        re-create an erased person at ingest."""
        ...

    def suppressed(self, candidates: Sequence[HashedIdentifier]) -> set[HashedIdentifier]:
        """Those of ``candidates`` that are on the suppression list."""
        ...

    def lift_suppression(self, hashes: Collection[HashedIdentifier]) -> int:
        """Remove ``hashes`` from the suppression list (a fresh opt-in); returns how many."""
        ...

    def add_erasure_outbox(self, entry: ErasureOutboxEntry) -> None:
        """Record an erasure whose vault keys are still to be shredded."""
        ...

    def pending_erasures(self) -> list[ErasureOutboxEntry]:
        """Outbox entries not completed yet, oldest first."""
        ...

    def complete_erasure(self, erasure_id: str) -> bool:
        """Mark an outbox entry done and forget its node ids; ``False`` if already done."""
        ...

    def seen_messages(self, digests: Collection[bytes]) -> set[bytes]:
        """Those of ``digests`` (keyed message-id digests) applied before and not forgotten."""
        ...

    def forget_messages(self, before: datetime) -> int:
        """Drop message-id digests recorded before ``before`` (the dedup window); how many."""
        ...

    def add_outbound(self, events: Sequence[OutboundEvent]) -> None:
        """Put ``events`` in the outbox (``ChangeSet.outbound`` does the same for ingest)."""
        ...

    def outbound_page(self, limit: int) -> list[OutboundEvent]:
        """Up to ``limit`` outbox events ready to publish, oldest first (held ones skipped)."""
        ...

    def delete_outbound(self, event_ids: Collection[str]) -> int:
        """Remove published events from the outbox; returns how many were there."""
        ...


class GraphStore(Protocol):
    """A durable identity graph."""

    def write(self, fn: Callable[[GraphTransaction], T]) -> T:
        """Run ``fn`` in one write transaction; commit if it returns, roll back if it raises."""
        ...

    def read(self, fn: Callable[[GraphTransaction], T]) -> T:
        """Run ``fn`` in a read transaction (a consistent snapshot)."""
        ...

    def person_read(
        self,
        person_id: str,
        purposes: Collection[str],
        kinds: Collection[FactKind],
        status: FactStatus,
    ) -> PersonReadRows | None:
        """In one consistent read: ``None`` if there is no such person, else what
        ``person_consents(person_id, purposes)`` and ``person_facts(person_id, kinds, status)``
        return in one read transaction (a profile read loads both for every read; a backend
        may answer it with one statement)."""
        ...

    def stats(self) -> StoreStats:
        """Row counts."""
        ...

    def ping(self) -> None:
        """Raise :class:`~identity.errors.StoreUnavailableError` if the store cannot serve."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


def person_read_in(
    tx: GraphTransaction,
    person_id: str,
    purposes: Collection[str],
    kinds: Collection[FactKind],
    status: FactStatus,
) -> PersonReadRows | None:
    """:meth:`GraphStore.person_read` from the transaction's own reads (``person``,
    ``person_consents``, ``person_facts``), for a backend without one query for it."""
    if tx.person(person_id) is None:
        return None
    consents = tx.person_consents(person_id, purposes)
    return PersonReadRows(tuple(consents), tuple(tx.person_facts(person_id, kinds, status)))
