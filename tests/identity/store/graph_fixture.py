"""A deterministic graph with every kind of row, and a dump of it read through the store port.

Used to test schema migrations from a real file: ``tests/fixtures/graph-v6.sqlite3`` was written
by this module's :func:`build` with the idgraph of schema version 6 (commit 0d8b405, the last
one before integer internal keys), and ``graph-v6.dump.json`` is :func:`dump` of it read by that
same idgraph. A migrated file must read back the same dump. To regenerate (only ever with the
code of the version the file stands for)::

    python -m tests.identity.store.graph_fixture OUT.sqlite3 OUT.dump.json

Only the :class:`~identity.store.port.GraphStore` port is used, so the dump means the same on
every schema version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sys
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from identity.hashing import HashedIdentifier
from identity.model import (
    ChangeSet,
    ConsentRecord,
    ConsentSignal,
    DoNotLinkRule,
    ErasureOutboxEntry,
    EventCountRule,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    Link,
    MemberScan,
    OutboundEvent,
    PersonRecord,
    Refusal,
    RefusalReason,
)
from identity.store.port import GraphStore, GraphTransaction
from identity.store.sqlite import SqliteGraphStore

T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
PERSONS = 120
TYPES = ("email", "phone", "cookie_id", "customer_id")
PURPOSES = ("marketing", "analytics")
ATTRIBUTES = ("city", "age_band")
EVENTS = ("purchase", "visit")


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _hashed(person: int, slot: int) -> HashedIdentifier:
    return HashedIdentifier(TYPES[slot % len(TYPES)], "k1", _digest("id", person, slot))


def _person_id(person: int) -> str:
    # Random-looking, as real person ids are (hex of a hash): their order is not creation order.
    return "p_" + _digest("person", person).hex()[:24]


def _node_id(person: int, slot: int) -> str:
    return f"n_{person:012x}{slot:06x}{_digest('node', person, slot).hex()[:16]}"


def _fact_id(*parts: object) -> str:
    return "f_" + _digest("fact", *parts).hex()[:24]


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _batch(person: int) -> ChangeSet:
    """Person ``person``: 1-4 nodes in a chain of links, facts of every kind and status,
    consents, a refusal anchored to its first node."""
    at = T0 + timedelta(minutes=person)
    pid = _person_id(person)
    slots = range(1 + person % 4)
    nodes = tuple(
        IdentifierNode(_node_id(person, s), _hashed(person, s), pid, at, at + timedelta(seconds=s))
        for s in slots
    )
    ordered = sorted(n.node_id for n in nodes)
    links = tuple(
        Link(a, b, "web" if i % 2 else "crm", at, at + timedelta(hours=i))
        for i, (a, b) in enumerate(itertools.pairwise(ordered))
    )
    anchor = nodes[0].node_id
    facts: list[Fact] = []
    for index, name in enumerate(ATTRIBUTES[: 1 + person % 2]):
        facts.append(
            Fact(
                _fact_id(person, name),
                anchor,
                FactKind.ATTRIBUTE,
                name,
                "location" if name == "city" else "demographic",
                at + timedelta(seconds=index),
                "web",
                FactStatus.ACTIVE,
                _digest("sealed", person, name),
                ("PHONE_NUMBER",) if person % 11 == 0 else (),
            )
        )
    for count in range(person % 3):
        facts.append(
            Fact(
                _fact_id(person, "event", count),
                nodes[-1].node_id,
                FactKind.EVENT,
                EVENTS[count % 2],
                "behavioural",
                at - timedelta(days=count),
                "app",
                FactStatus.ACTIVE,
                _digest("event", person, count),
            )
        )
    if person % 5 == 0:
        facts.append(
            Fact(
                _fact_id(person, "raw"),
                anchor,
                FactKind.RAW_IDENTIFIER,
                "email",
                "identifier",
                at,
                "crm",
                FactStatus.ACTIVE,
                _digest("raw", person),
            )
        )
    if person % 7 == 0:
        facts.append(
            Fact(
                _fact_id(person, "quarantined"),
                anchor,
                FactKind.ATTRIBUTE,
                "favourite_category",
                "behavioural",
                at,
                "web",
                FactStatus.QUARANTINED,
                _digest("quarantined", person),
                ("PERSON",),
            )
        )
    consents = tuple(
        ConsentRecord(
            f"c_{person:06x}{index:02x}" + "0" * 16,
            nodes[index % len(nodes)].node_id,
            purpose,
            (person + index) % 3 != 0,
            at + timedelta(seconds=index),
            at + timedelta(seconds=index + 1),
            "api",
            ConsentSignal.DIRECT,
            "consent",
            _digest("proof", person, index).hex(),
        )
        for index, purpose in enumerate(PURPOSES[: person % 3])
    )
    refusals = (
        (
            Refusal(
                _hashed(person, 9),
                RefusalReason.LIMIT_EXCEEDED,
                "type limit",
                "web",
                at,
                anchor_node=anchor,
            ),
        )
        if person % 6 == 0
        else ()
    )
    return ChangeSet(
        new_persons=(PersonRecord(pid, at, at + timedelta(seconds=3)),),
        new_nodes=nodes,
        links=links,
        facts=tuple(facts),
        consents=consents,
        refusals=refusals,
    )


def build(path: Path) -> None:
    """Write the fixture graph to a new file at ``path`` with the store of this idgraph."""
    store = SqliteGraphStore(path)
    try:
        for start in range(0, PERSONS, 40):
            batches = [_batch(p) for p in range(start, min(start + 40, PERSONS))]

            def write(tx: GraphTransaction, batches: list[ChangeSet] = batches) -> None:
                for changes in batches:
                    tx.apply(changes)

            store.write(write)
        # Merges: person 3k+1 is absorbed by 3k (every third pair), with a bridging link.
        merged = {_person_id(p + 1): _person_id(p) for p in range(0, PERSONS - 1, 9)}
        bridges = tuple(
            Link(*_pair(_node_id(p, 0), _node_id(p + 1, 0)), "bridge", T0, T0)
            for p in range(0, PERSONS - 1, 9)
        )
        store.write(lambda tx: tx.apply(ChangeSet(merged=merged, links=bridges)))
        # A split: the last node of person 2 moves to a new person.
        moved = PersonRecord(_person_id(10_000), T0, T0)
        store.write(
            lambda tx: tx.apply(
                ChangeSet(new_persons=(moved,), reassigned={_node_id(2, 2): moved.person_id})
            )
        )
        store.write(lambda tx: tx.remove_links(_node_id(2, 1), _node_id(2, 2)))
        rules = [
            DoNotLinkRule(
                f"dnl_{p:024x}", *_pair(_node_id(p, 0), _node_id(p + 2, 0)), T0 + timedelta(p)
            )
            for p in range(4, 60, 8)
        ]
        store.write(lambda tx: [tx.add_do_not_link(rule) for rule in rules])
        store.write(lambda tx: tx.suppress([_hashed(p, 20) for p in range(5)]))
        store.write(lambda tx: tx.erase_person(_person_id(PERSONS - 1)))
        store.write(
            lambda tx: tx.add_erasure_outbox(
                ErasureOutboxEntry(
                    "e_" + "1" * 24, "req-1", "cli", T0, (_node_id(PERSONS - 1, 0),), {"facts": 2}
                )
            )
        )
        store.write(
            lambda tx: tx.apply(
                ChangeSet(
                    messages=(_digest("message", 1), _digest("message", 2)),
                    outbound=(
                        OutboundEvent(
                            "ev_" + "0" * 29 + "1", "person.merged", _person_id(0), "{}", T0
                        ),
                    ),
                )
            )
        )
        store.checkpoint()
    finally:
        store.close()


def _plain(value: Any) -> Any:  # noqa: PLR0911 - one return per kind of value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    return value


def dump(store: GraphStore) -> dict[str, Any]:
    """Everything the fixture graph holds, read through the port, as plain JSON values."""

    def read(tx: GraphTransaction) -> dict[str, Any]:
        scan = MemberScan(attribute_names=ATTRIBUTES, consent_purposes=PURPOSES, person_times=True)
        members = tx.member_page(scan, "", 100_000).rows
        # The fixture's dump predates MemberRow.grant, which a scan without a consent filter
        # never sets: left out of the dump.
        assert all(m.grant is None for m in members)
        persons = [m.person_id for m in members]
        hashes = [_hashed(p, s) for p in range(PERSONS) for s in (*range(4), 9, 20)]
        kinds = tuple(FactKind)
        ruled = MemberScan(event_rules=(EventCountRule("purchase", T0 - timedelta(days=5), 1),))
        return {
            "members": [{k: v for k, v in _plain(m).items() if k != "grant"} for m in members],
            "ruled": [m.person_id for m in tx.member_page(ruled, "", 100_000).rows],
            "persons": [tx.person(p) for p in persons],
            "clusters": [tx.cluster(p) for p in persons],
            "facts": {
                status.value: [tx.person_facts(p, kinds, status) for p in persons]
                for status in FactStatus
            },
            "facts_pages": {
                status.value: tx.facts_page(status, "", 100_000) for status in FactStatus
            },
            "consents": [tx.person_consents(p, PURPOSES) for p in persons],
            "type_counts": tx.type_counts(persons),
            "found": sorted(tx.find_identifiers(hashes), key=lambda n: n.node_id),
            "node_facts": tx.node_facts([_node_id(p, 0) for p in range(PERSONS)], FactKind.EVENT),
            "identifiers_page": tx.identifiers_page("none", "", 100_000),
            "do_not_link": tx.do_not_link_page("", 1000),
            "do_not_link_of": tx.do_not_link_rules(persons),
            "refused_anchors": tx.refused_anchors(hashes),
            "suppressed": tx.suppressed(hashes),
            "pending_erasures": tx.pending_erasures(),
            "outbound": tx.outbound_page(100),
            "seen": tx.seen_messages([_digest("message", i) for i in range(4)]),
        }

    result: dict[str, Any] = _plain(store.read(read))
    result["stats"] = _plain(store.stats())
    return result


def main(argv: list[str]) -> int:
    """Write the fixture file and its dump (see the module docstring)."""
    path, dump_path = Path(argv[0]), Path(argv[1])
    build(path)
    store = SqliteGraphStore(path)
    try:
        dump_path.write_text(json.dumps(dump(store), sort_keys=True) + "\n")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
