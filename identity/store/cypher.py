"""Every Cypher statement of the Neo4j adapter, as named constants, and the graph schema.

Rules (STYLE.md, "Neo4j"), checked by ``tests/identity/store/test_cypher.py`` and ``make
cypher-lint``:

- Every statement is an ``UPPER_SNAKE`` module-level string constant. Nothing builds Cypher at
  run time: values are always ``$params``, and labels and relationship types are written
  literally from the closed vocabularies :class:`Label` and :class:`Rel`, never taken from
  request data (Cypher cannot parameterize labels, so formatting one in would be an injection).
- Every ``$param`` is documented in :data:`PARAMETERS`; every property key in
  :data:`NODE_PROPERTIES`, :data:`RELATIONSHIP_PROPERTIES` or :data:`ROW_KEYS`.
- Writes take ``UNWIND $rows AS row`` with at most ``batch_size`` rows per statement.

The graph model::

    (:Person {person_id, created_at, last_seen})
      -[:HAS_IDENTIFIER]->
    (:Identifier {node_id, type, key_id, digest, first_seen, last_seen})
      -[:LINKED {source, first_at, last_at}]->      one per source, from a to b with a < b
    (:Identifier)

    (:Identifier)
      -[:HAS_FACT]->
    (:Fact {fact_id, kind, name, category, at, source, status, sealed, pii})

    (:Identifier)
      -[:HAS_CONSENT]->
    (:Consent {record_id, purpose, granted, at, recorded_at, source, signal, lawful_basis, proof})

    (:Identifier)
      -[:DO_NOT_LINK {rule_id, created_at}]->       an operator's unlink: never one person again
    (:Identifier)

    (:Refusal {at, source, type, key_id, digest, reason, detail, anchor_node})
    (:Meta {key, value})                            schema version, copy cursors

    (:WriterLock {name, held_at, seq, commits})     one node: every write transaction locks it first
                                                    (seq: write transactions committed; commits:
                                                    the tokens of the latest ones, newest first)

    (:Suppression {type, key_id, digest})           keyed hashes of erased identifiers
    (:ErasureOutbox {erasure_id, request_id, actor, created_at, node_ids, counts, done_at})

Timestamps are integer epoch milliseconds, exactly like the SQLite store, so both stores
compare and round-trip times the same way. Identifiers are only keyed hashes (privacy
invariant 1): ``digest`` is the HMAC-SHA256 digest as a lowercase hex string. Why hex and not
a byte array: Neo4j stores ``byte[]`` as an array property, and array properties are not
supported by RANGE indexes or by property-uniqueness constraints' equality seeks the way
strings are; a string keeps the uniqueness constraint on ``(type, key_id, digest)`` and the
index on ``digest`` usable for the equality lookups every ingest does.

Facts hang off the identifier node they are anchored to (the SQLite ``facts.node_id``), so they
follow that node through merges and splits with no statement of their own. ``sealed`` is vault
ciphertext, stored as a byte array (``byte[]``): it is never looked up or compared by value, so
the index argument for hex strings does not apply, and raw bytes are what the vault produced
(no encoding step, a quarter smaller than base64, and nothing that reads like text in Browser).
``pii`` is a list of strings (the entity types the scanner found). The partial unique indexes
SQLite has (one active attribute per node and name, one raw identifier per node) cannot be
expressed as Neo4j constraints (Community has no conditional or relationship-scoped
uniqueness), so the upserts ``MERGE`` on the anchored pattern instead, and releasing a
quarantined attribute is checked by :data:`ATTRIBUTE_CLASHES`.

Consent records hang off their identifier node the same way (``HAS_CONSENT``), for the same
reason: they follow it through merges and splits. They are append-only (``CREATE``, never
``MERGE`` or ``SET``): consent history is never rewritten. ``granted`` is a boolean, ``at`` and
``recorded_at`` epoch milliseconds, ``proof`` the SHA-256 (hex) of the original signal;
``purpose`` is ``'*'`` for a restriction of processing.

Schema version 2 added ``(:Consent)`` and its constraint and index; a version 1 database gets
them on the next start (every schema statement is ``IF NOT EXISTS``) and is marked version 2.

Schema version 3 added erasure (see :mod:`privacy.dsr.erasure`). ``(:Suppression)`` holds the keyed
hash (hex digest, like ``Identifier``) of an erased identifier and nothing else, for one purpose:
refusing to re-create the person at ingest. ``(:ErasureOutbox)`` is written in the erasure's
transaction and lists the erased identifier node ids (``node_ids``, a list of strings) whose
vault data keys are still to be shredded; completing it empties that list and sets ``done_at``.
``counts`` is a JSON object (string) of what the erasure deleted. Erasing a person deletes its
``Person``, ``Identifier``, ``Fact`` and ``Consent`` nodes, its ``LINKED`` relationships and the
``Refusal`` nodes holding its hashes. Neo4j keeps deleted records in its store files until the
space is reused and in its transaction logs until they rotate out; the README's "How erasure
works" says what that means for retention settings.

Schema version 6 (issue 20) gave ``(:Refusal)`` an ``anchor_node`` property: the node id the rest
of the refused identifier's event was anchored to, so an erasure of the refused identifier's
person can follow it (:data:`REFUSED_ANCHORS`). Refusals from before have none (a null
property): nothing to migrate, they cannot be followed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

SCHEMA_VERSION: Final = 6


class Label(StrEnum):
    """The closed set of node labels. A label not listed here cannot appear in a statement."""

    PERSON = "Person"
    IDENTIFIER = "Identifier"
    REFUSAL = "Refusal"
    META = "Meta"
    FACT = "Fact"
    CONSENT = "Consent"
    SUPPRESSION = "Suppression"
    ERASURE_OUTBOX = "ErasureOutbox"
    SEEN_MESSAGE = "SeenMessage"
    OUTBOUND_EVENT = "OutboundEvent"
    WRITER_LOCK = "WriterLock"


class Rel(StrEnum):
    """The closed set of relationship types."""

    HAS_IDENTIFIER = "HAS_IDENTIFIER"
    LINKED = "LINKED"
    HAS_FACT = "HAS_FACT"
    HAS_CONSENT = "HAS_CONSENT"
    DO_NOT_LINK = "DO_NOT_LINK"


NODE_PROPERTIES: Final[Mapping[Label, tuple[str, ...]]] = MappingProxyType(
    {
        Label.PERSON: ("person_id", "created_at", "last_seen"),
        Label.IDENTIFIER: ("node_id", "type", "key_id", "digest", "first_seen", "last_seen"),
        Label.REFUSAL: (
            "at",
            "source",
            "type",
            "key_id",
            "digest",
            "reason",
            "detail",
            "anchor_node",
        ),
        Label.META: ("key", "value"),
        Label.FACT: (
            "fact_id",
            "kind",
            "name",
            "category",
            "at",
            "source",
            "status",
            "sealed",
            "pii",
        ),
        Label.CONSENT: (
            "record_id",
            "purpose",
            "granted",
            "at",
            "recorded_at",
            "source",
            "signal",
            "lawful_basis",
            "proof",
        ),
        Label.SUPPRESSION: ("type", "key_id", "digest"),
        Label.ERASURE_OUTBOX: (
            "erasure_id",
            "request_id",
            "actor",
            "created_at",
            "node_ids",
            "counts",
            "done_at",
        ),
        Label.SEEN_MESSAGE: ("digest", "seen_at"),
        Label.OUTBOUND_EVENT: (
            "event_id",
            "kind",
            "person_id",
            "payload",
            "created_at",
            "erasure_id",
        ),
        Label.WRITER_LOCK: ("name", "held_at", "seq", "commits"),
    }
)
RELATIONSHIP_PROPERTIES: Final[Mapping[Rel, tuple[str, ...]]] = MappingProxyType(
    {
        Rel.HAS_IDENTIFIER: (),
        Rel.LINKED: ("source", "first_at", "last_at"),
        Rel.HAS_FACT: (),
        Rel.HAS_CONSENT: (),
        Rel.DO_NOT_LINK: ("rule_id", "created_at"),
    }
)
# Keys of the maps inside ``$rows``/``$candidates`` that are not also stored property names.
# (Fact and consent rows carry ``node_id``, the anchor; it is the Identifier property of that
# name. Event rules of a member scan are ``{name, since, min_count}`` maps.)
ROW_KEYS: Final[tuple[str, ...]] = ("a", "b", "absorbed", "survivor", "since", "min_count")

# Every parameter any statement takes, with what it holds. The lint's DbSchema is built from
# this, so a statement using an undocumented parameter fails ``make cypher-lint``.
PARAMETERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "rows": "list of maps, one per row to write (at most batch_size); keys per statement",
        "candidates": "list of {type, key_id, digest} maps: keyed hashes to look up",
        "person_ids": "list of opaque person ids",
        "person_id": "one opaque person id",
        "digests": "list of keyed message-id digests (hex)",
        "before": "epoch milliseconds: entries recorded earlier are dropped",
        "event_ids": "list of outbound event ids",
        "a": "node id of the lower link endpoint",
        "b": "node id of the higher link endpoint",
        "key": "a Meta key (schema_version, copy_cursor:<source>)",
        "value": "a Meta value (string)",
        "batch_size": "rows per inner transaction of a CALL ... IN TRANSACTIONS delete",
        "node_ids": "list of opaque identifier node ids",
        "fact_ids": "list of opaque fact ids",
        "kind": "one fact kind (attribute, event, raw_identifier)",
        "kinds": "list of fact kinds",
        "status": "one fact status (active, quarantined)",
        "after_fact_id": "page cursor: only facts whose id sorts after it ('' for the first page)",
        "after_node_id": "page cursor: only nodes whose id sorts after it ('' for the first page)",
        "exclude_key_id": "a hash key id: nodes hashed under it are left out",
        "limit": "the most rows a page returns",
        "after_person_id": "page cursor: only persons whose id sorts after it ('' for the first)",
        "purposes": "list of consent purposes to read, the restriction purpose '*' included",
        "names": "list of attribute names to read",
        "rules": "list of distinct {name, since, min_count} event rules a person must all meet",
        "erasure_id": "one opaque erasure id (e_...)",
        "request_id": "the data-subject request id an erasure belongs to",
        "actor": "who asked for an erasure (an API key id, cli)",
        "created_at": "epoch milliseconds an erasure or a do-not-link rule was recorded",
        "done_at": "epoch milliseconds an erasure's key shred completed",
        "counts": "JSON object (string) of what an erasure deleted",
        "rule_id": "one opaque do-not-link rule id (dnl_...)",
        "after_rule_id": "page cursor: only rules whose id sorts after it ('' for the first page)",
        "lock": "the name of the writer lock node every write transaction takes first ('graph')",
        "token": "a random token naming one write() call, kept on the lock node once committed",
        "keep": "how many of the latest commit tokens the writer lock node keeps",
        "after_at": "page cursor of refusals: time (epoch ms) of the last refusal copied",
        "after_element_id": "page cursor of refusals: element id of the last refusal copied",
        "after_digest": "page cursor of the suppression list: digest (hex) of the last entry",
        "after_type": "page cursor of the suppression list: type of the last entry",
        "after_key_id": "page cursor of the suppression list: key id of the last entry",
    }
)

# -- schema (idempotent: every statement may run on every start) ----------------------------------

CREATE_PERSON_ID_CONSTRAINT: Final = """
CREATE CONSTRAINT person_id_unique IF NOT EXISTS
FOR (p:Person) REQUIRE p.person_id IS UNIQUE
"""

CREATE_IDENTIFIER_NODE_ID_CONSTRAINT: Final = """
CREATE CONSTRAINT identifier_node_id_unique IF NOT EXISTS
FOR (i:Identifier) REQUIRE i.node_id IS UNIQUE
"""

# One node per keyed hash: the same guarantee as SQLite's unique (digest, type, key_id) index.
# A composite uniqueness constraint (not a NODE KEY, which needs Enterprise Edition).
CREATE_IDENTIFIER_HASH_CONSTRAINT: Final = """
CREATE CONSTRAINT identifier_hash_unique IF NOT EXISTS
FOR (i:Identifier) REQUIRE (i.type, i.key_id, i.digest) IS UNIQUE
"""

# Lookups seek by digest first (it is the selective part), like SQLite's identifiers_by_digest.
CREATE_IDENTIFIER_DIGEST_INDEX: Final = """
CREATE INDEX identifier_digest IF NOT EXISTS
FOR (i:Identifier) ON (i.digest)
"""

CREATE_REFUSAL_DIGEST_INDEX: Final = """
CREATE INDEX refusal_digest IF NOT EXISTS
FOR (r:Refusal) ON (r.digest)
"""

CREATE_META_KEY_CONSTRAINT: Final = """
CREATE CONSTRAINT meta_key_unique IF NOT EXISTS
FOR (m:Meta) REQUIRE m.key IS UNIQUE
"""

CREATE_FACT_ID_CONSTRAINT: Final = """
CREATE CONSTRAINT fact_id_unique IF NOT EXISTS
FOR (f:Fact) REQUIRE f.fact_id IS UNIQUE
"""

# The quarantine listing filters by status (SQLite's facts_by_status); reads of one person's or
# node's facts start from the anchor node instead and need no index.
CREATE_FACT_STATUS_INDEX: Final = """
CREATE INDEX fact_status IF NOT EXISTS
FOR (f:Fact) ON (f.status)
"""

CREATE_CONSENT_ID_CONSTRAINT: Final = """
CREATE CONSTRAINT consent_record_id_unique IF NOT EXISTS
FOR (c:Consent) REQUIRE c.record_id IS UNIQUE
"""

# Reads of a person's consents start from its nodes and need no index; this one serves the
# reads that start from a purpose (who gave or refused it), like SQLite's consents_by_purpose.
CREATE_CONSENT_PURPOSE_INDEX: Final = """
CREATE INDEX consent_purpose IF NOT EXISTS
FOR (c:Consent) ON (c.purpose)
"""

# One suppression entry per keyed hash; ingest looks candidates up by digest (the constraint's
# index serves the equality seek on all three properties).
CREATE_SUPPRESSION_CONSTRAINT: Final = """
CREATE CONSTRAINT suppression_hash_unique IF NOT EXISTS
FOR (s:Suppression) REQUIRE (s.type, s.key_id, s.digest) IS UNIQUE
"""

CREATE_SUPPRESSION_DIGEST_INDEX: Final = """
CREATE INDEX suppression_digest IF NOT EXISTS
FOR (s:Suppression) ON (s.digest)
"""

CREATE_ERASURE_OUTBOX_CONSTRAINT: Final = """
CREATE CONSTRAINT erasure_outbox_id_unique IF NOT EXISTS
FOR (o:ErasureOutbox) REQUIRE o.erasure_id IS UNIQUE
"""

# Since schema 4: message ids applied by stream ingest (keyed digests, hex), looked up by digest
# in every ingest and forgotten by age; outbound events, fetched in event-id order (ids are
# time-ordered) and dropped by person on erasure.
CREATE_SEEN_MESSAGE_CONSTRAINT: Final = """
CREATE CONSTRAINT seen_message_digest_unique IF NOT EXISTS
FOR (m:SeenMessage) REQUIRE m.digest IS UNIQUE
"""

CREATE_SEEN_MESSAGE_AGE_INDEX: Final = """
CREATE INDEX seen_message_at IF NOT EXISTS
FOR (m:SeenMessage) ON (m.seen_at)
"""

CREATE_OUTBOUND_EVENT_CONSTRAINT: Final = """
CREATE CONSTRAINT outbound_event_id_unique IF NOT EXISTS
FOR (o:OutboundEvent) REQUIRE o.event_id IS UNIQUE
"""

CREATE_OUTBOUND_EVENT_PERSON_INDEX: Final = """
CREATE INDEX outbound_event_person IF NOT EXISTS
FOR (o:OutboundEvent) ON (o.person_id)
"""

# One lock node per name; MERGE under this constraint cannot create a second one in a race.
CREATE_WRITER_LOCK_CONSTRAINT: Final = """
CREATE CONSTRAINT writer_lock_name_unique IF NOT EXISTS
FOR (w:WriterLock) REQUIRE w.name IS UNIQUE
"""

# Since schema 5 (issue 13): do-not-link rules, removed by id from the admin CLI.
CREATE_DO_NOT_LINK_RULE_INDEX: Final = """
CREATE INDEX do_not_link_rule_id IF NOT EXISTS
FOR ()-[r:DO_NOT_LINK]-() ON (r.rule_id)
"""

SCHEMA_STATEMENTS: Final[tuple[str, ...]] = (
    CREATE_PERSON_ID_CONSTRAINT,
    CREATE_IDENTIFIER_NODE_ID_CONSTRAINT,
    CREATE_IDENTIFIER_HASH_CONSTRAINT,
    CREATE_IDENTIFIER_DIGEST_INDEX,
    CREATE_REFUSAL_DIGEST_INDEX,
    CREATE_META_KEY_CONSTRAINT,
    CREATE_FACT_ID_CONSTRAINT,
    CREATE_FACT_STATUS_INDEX,
    CREATE_CONSENT_ID_CONSTRAINT,
    CREATE_CONSENT_PURPOSE_INDEX,
    CREATE_SUPPRESSION_CONSTRAINT,
    CREATE_SUPPRESSION_DIGEST_INDEX,
    CREATE_ERASURE_OUTBOX_CONSTRAINT,
    CREATE_SEEN_MESSAGE_CONSTRAINT,
    CREATE_SEEN_MESSAGE_AGE_INDEX,
    CREATE_OUTBOUND_EVENT_CONSTRAINT,
    CREATE_OUTBOUND_EVENT_PERSON_INDEX,
    CREATE_WRITER_LOCK_CONSTRAINT,
    CREATE_DO_NOT_LINK_RULE_INDEX,
)

# -- meta -----------------------------------------------------------------------------------------

# Sets the value only when the key is new and returns what is stored, so a newer schema
# written by a newer idgraph is detected instead of overwritten.
ENSURE_META: Final = """
MERGE (m:Meta {key: $key})
ON CREATE SET m.value = $value
RETURN m.value AS value
"""

GET_META: Final = """
MATCH (m:Meta {key: $key})
RETURN m.value AS value
"""

SET_META: Final = """
MERGE (m:Meta {key: $key})
SET m.value = $value
"""

# -- the writer lock (docs/neo4j.md, "Concurrent writes") ----------------------------------------

# The first statement of every write transaction: SET takes the node's exclusive lock, which
# Neo4j holds until the transaction commits or rolls back. Writers therefore run one at a time,
# each reading the graph as the previous one committed it (what SQLite's BEGIN IMMEDIATE gives);
# reads take no locks and are never blocked by it.
#
# It also leaves the transaction's own mark, committed with it or not at all: the lock node counts
# committed write transactions (``seq``) and keeps the tokens of the latest ``$keep`` of them,
# newest first. A connection lost during COMMIT leaves the driver unable to say whether the
# transaction committed; WRITER_COMMITS, which waits for this same lock, then can (see
# Neo4jGraphStore.write). A few hundred bytes per write transaction, no extra round trip.
LOCK_WRITERS: Final = """
MERGE (w:WriterLock {name: $lock})
SET w.held_at = timestamp(),
    w.seq = coalesce(w.seq, 0) + 1,
    w.commits = ([$token] + coalesce(w.commits, []))[0..$keep]
RETURN w.seq AS seq
"""

# After a connection was lost during COMMIT: takes the writer lock (so it waits until the
# transaction in doubt has committed or rolled back on the server, whichever it does) and reads
# the lock node's count and latest tokens as they are then.
WRITER_COMMITS: Final = """
MERGE (w:WriterLock {name: $lock})
SET w.held_at = timestamp()
RETURN coalesce(w.seq, 0) AS seq, coalesce(w.commits, []) AS commits
"""

# -- reads ----------------------------------------------------------------------------------------

PING: Final = """
RETURN 1 AS ok
"""

FIND_IDENTIFIERS: Final = """
UNWIND $candidates AS c
MATCH (p:Person)-[:HAS_IDENTIFIER]->(i:Identifier {digest: c.digest})
WHERE i.type = c.type AND i.key_id = c.key_id
RETURN i.node_id AS node_id, i.type AS type, i.key_id AS key_id, i.digest AS digest,
       p.person_id AS person_id, i.first_seen AS first_seen, i.last_seen AS last_seen
"""

TYPE_COUNTS: Final = """
UNWIND $person_ids AS pid
MATCH (p:Person {person_id: pid})-[:HAS_IDENTIFIER]->(i:Identifier)
RETURN p.person_id AS person_id, i.type AS type, count(i) AS identifiers
"""

CLUSTER_NODES: Final = """
MATCH (p:Person {person_id: $person_id})-[:HAS_IDENTIFIER]->(i:Identifier)
RETURN i.node_id AS node_id, i.type AS type, i.key_id AS key_id, i.digest AS digest,
       p.person_id AS person_id, i.first_seen AS first_seen, i.last_seen AS last_seen
ORDER BY node_id
"""

# Both ends of a link belong to the same person, so following links from the person's nodes in
# the stored direction (a -> b) finds each link exactly once, as SQLite's join on ``a`` does.
CLUSTER_LINKS: Final = """
MATCH (:Person {person_id: $person_id})-[:HAS_IDENTIFIER]->(x:Identifier)
      -[l:LINKED]->(y:Identifier)
RETURN x.node_id AS a, y.node_id AS b, l.source AS source,
       l.first_at AS first_at, l.last_at AS last_at
ORDER BY a, b, source
"""

# Which of ``$person_ids`` do not exist: the checks SQLite's foreign keys make on every write.
MISSING_PERSONS: Final = """
UNWIND $person_ids AS pid
OPTIONAL MATCH (p:Person {person_id: pid})
WITH pid, p
WHERE p IS NULL
RETURN pid AS person_id
"""

# COUNT subqueries of a single label or relationship type are answered from the count store.
COUNT_ALL: Final = """
RETURN COUNT { MATCH (:Person) } AS persons,
       COUNT { MATCH (:Identifier) } AS identifiers,
       COUNT { MATCH ()-[:LINKED]->() } AS links,
       COUNT { MATCH (:Refusal) } AS refusals,
       COUNT { MATCH (:Fact) } AS facts,
       COUNT { MATCH (:Consent) } AS consents
"""

# Facts of some kinds and one status on any node of the person, oldest first (ties by id).
PERSON_FACTS: Final = """
MATCH (:Person {person_id: $person_id})-[:HAS_IDENTIFIER]->(i:Identifier)
      -[:HAS_FACT]->(f:Fact)
WHERE f.status = $status AND f.kind IN $kinds
RETURN f.fact_id AS fact_id, i.node_id AS node_id, f.kind AS kind, f.name AS name,
       f.category AS category, f.at AS at, f.source AS source, f.status AS status,
       f.sealed AS sealed, coalesce(f.pii, []) AS pii
ORDER BY at, fact_id
"""

# Facts of one kind and one status (the adapter passes active) on some nodes, by id.
EXISTING_NODES: Final = """
UNWIND $node_ids AS nid
MATCH (i:Identifier {node_id: nid})
RETURN i.node_id AS node_id
"""

NODE_FACTS: Final = """
UNWIND $node_ids AS nid
MATCH (i:Identifier {node_id: nid})-[:HAS_FACT]->(f:Fact)
WHERE f.kind = $kind AND f.status = $status
RETURN f.fact_id AS fact_id, i.node_id AS node_id, f.kind AS kind, f.name AS name,
       f.category AS category, f.at AS at, f.source AS source, f.status AS status,
       f.sealed AS sealed, coalesce(f.pii, []) AS pii
ORDER BY fact_id
"""

# One page of the facts with a status, by id after a cursor (the quarantine listing).
FACTS_PAGE: Final = """
MATCH (i:Identifier)-[:HAS_FACT]->(f:Fact)
WHERE f.status = $status AND f.fact_id > $after_fact_id
RETURN f.fact_id AS fact_id, i.node_id AS node_id, f.kind AS kind, f.name AS name,
       f.category AS category, f.at AS at, f.source AS source, f.status AS status,
       f.sealed AS sealed, coalesce(f.pii, []) AS pii
ORDER BY fact_id
LIMIT $limit
"""

# One page of the nodes not hashed under a key (the re-hash sweep after a key rotation).
IDENTIFIERS_PAGE: Final = """
MATCH (p:Person)-[:HAS_IDENTIFIER]->(i:Identifier)
WHERE i.key_id <> $exclude_key_id AND i.node_id > $after_node_id
RETURN i.node_id AS node_id, i.type AS type, i.key_id AS key_id, i.digest AS digest,
       p.person_id AS person_id, i.first_seen AS first_seen, i.last_seen AS last_seen
ORDER BY node_id
LIMIT $limit
"""

# How many of the node's active attributes of one name there are beyond one: releasing a
# quarantined attribute next to a current one would break "one current value per attribute",
# which SQLite's partial unique index refuses (the adapter raises StoreIntegrityError).
ATTRIBUTE_CLASHES: Final = """
UNWIND $fact_ids AS fid
MATCH (i:Identifier)-[:HAS_FACT]->(f:Fact {fact_id: fid})
WHERE f.kind = $kind AND f.status = $status
MATCH (i)-[:HAS_FACT]->(g:Fact {kind: $kind, status: $status, name: f.name})
WHERE g.fact_id <> f.fact_id
RETURN count(g) AS clashes
"""

GET_PERSON: Final = """
MATCH (p:Person {person_id: $person_id})
RETURN p.person_id AS person_id, p.created_at AS created_at, p.last_seen AS last_seen
"""

# The consent records of some persons for some purposes (the caller adds '*', restrictions), on
# any node of each person, per person in decision order (at, then recorded_at, then id).
# person_consents passes one person; a member scan page passes all of its persons.
PERSONS_CONSENTS: Final = """
UNWIND $person_ids AS pid
MATCH (p:Person {person_id: pid})-[:HAS_IDENTIFIER]->(i:Identifier)-[:HAS_CONSENT]->(c:Consent)
WHERE c.purpose IN $purposes
RETURN p.person_id AS person_id, c.record_id AS record_id, i.node_id AS node_id,
       c.purpose AS purpose, c.granted AS granted, c.at AS at, c.recorded_at AS recorded_at,
       c.source AS source, c.signal AS signal, c.lawful_basis AS lawful_basis, c.proof AS proof
ORDER BY person_id, at, recorded_at, record_id
"""

# One page of a member scan: persons after a cursor, in id order (the person_id uniqueness
# constraint's range index serves both the range and the order, so the LIMIT can stop the scan
# early), that meet every event rule: at least rule.min_count facts of $kind (event) and
# $status (active) named rule.name with at >= rule.since, on any node of the person. The
# subquery returns one row per person: how many rules it meets (0 of 0 without rules). The
# adapter passes distinct rules, since rules equal as maps would be grouped into one.
MEMBER_PAGE: Final = """
MATCH (p:Person)
WHERE p.person_id > $after_person_id
CALL (p) {
  UNWIND $rules AS rule
  OPTIONAL MATCH (p)-[:HAS_IDENTIFIER]->(:Identifier)-[:HAS_FACT]->(f:Fact)
  WHERE f.kind = $kind AND f.status = $status AND f.name = rule.name AND f.at >= rule.since
  WITH rule, count(f) AS events
  WHERE events >= rule.min_count
  RETURN count(*) AS satisfied
}
WITH p, satisfied
WHERE satisfied = size($rules)
RETURN p.person_id AS person_id, p.created_at AS created_at, p.last_seen AS last_seen
ORDER BY person_id
LIMIT $limit
"""

# The facts of $kind (attribute) and $status (active) with some names, of a page's persons.
MEMBER_ATTRIBUTES: Final = """
UNWIND $person_ids AS pid
MATCH (p:Person {person_id: pid})-[:HAS_IDENTIFIER]->(i:Identifier)-[:HAS_FACT]->(f:Fact)
WHERE f.kind = $kind AND f.status = $status AND f.name IN $names
RETURN p.person_id AS person_id, f.fact_id AS fact_id, i.node_id AS node_id, f.kind AS kind,
       f.name AS name, f.category AS category, f.at AS at, f.source AS source,
       f.status AS status, f.sealed AS sealed, coalesce(f.pii, []) AS pii
ORDER BY person_id, name, at, fact_id
"""

# -- writes (each applied in batches of at most batch_size rows) ---------------------------------

REMOVE_LINKS: Final = """
MATCH (:Identifier {node_id: $a})-[l:LINKED]->(:Identifier {node_id: $b})
DELETE l
"""

# One rule per pair of nodes (the writer lock serializes writers, so the check cannot race).
ADD_DO_NOT_LINK: Final = """
MATCH (a:Identifier {node_id: $a})
MATCH (b:Identifier {node_id: $b})
WHERE NOT (a)-[:DO_NOT_LINK]-(b)
CREATE (a)-[r:DO_NOT_LINK {rule_id: $rule_id, created_at: $created_at}]->(b)
RETURN count(r) AS created
"""

# Rules with an end in one of the persons, each with both ends' types and persons.
DO_NOT_LINK_OF_PERSONS: Final = """
UNWIND $person_ids AS person_id
MATCH (:Person {person_id: person_id})-[:HAS_IDENTIFIER]->(:Identifier)-[r:DO_NOT_LINK]-()
WITH DISTINCT r
MATCH (pa:Person)-[:HAS_IDENTIFIER]->(a:Identifier)-[r]->(b:Identifier)
      <-[:HAS_IDENTIFIER]-(pb:Person)
RETURN r.rule_id AS rule_id, a.node_id AS a, b.node_id AS b, r.created_at AS created_at,
       a.type AS type_a, b.type AS type_b, pa.person_id AS person_a, pb.person_id AS person_b
ORDER BY rule_id
"""

DO_NOT_LINK_PAGE: Final = """
MATCH (pa:Person)-[:HAS_IDENTIFIER]->(a:Identifier)-[r:DO_NOT_LINK]->(b:Identifier)
      <-[:HAS_IDENTIFIER]-(pb:Person)
WHERE r.rule_id > $after_rule_id
RETURN r.rule_id AS rule_id, a.node_id AS a, b.node_id AS b, r.created_at AS created_at,
       a.type AS type_a, b.type AS type_b, pa.person_id AS person_a, pb.person_id AS person_b
ORDER BY rule_id
LIMIT $limit
"""

REMOVE_DO_NOT_LINK: Final = """
MATCH (pa:Person)-[:HAS_IDENTIFIER]->(a:Identifier)-[r:DO_NOT_LINK {rule_id: $rule_id}]
      ->(b:Identifier)<-[:HAS_IDENTIFIER]-(pb:Person)
WITH r, r.rule_id AS rule_id, r.created_at AS created_at, a, b, pa, pb
DELETE r
RETURN rule_id, a.node_id AS a, b.node_id AS b, created_at,
       a.type AS type_a, b.type AS type_b, pa.person_id AS person_a, pb.person_id AS person_b
"""

# CREATE, not MERGE: a second person with the same id is an error, as SQLite's INSERT is.
CREATE_PERSONS: Final = """
UNWIND $rows AS row
CREATE (:Person {person_id: row.person_id, created_at: row.created_at,
                 last_seen: row.last_seen})
"""

CREATE_IDENTIFIERS: Final = """
UNWIND $rows AS row
MATCH (p:Person {person_id: row.person_id})
CREATE (p)-[:HAS_IDENTIFIER]->(:Identifier {node_id: row.node_id, type: row.type,
        key_id: row.key_id, digest: row.digest, first_seen: row.first_seen,
        last_seen: row.last_seen})
RETURN count(*) AS created
"""

REHASH_IDENTIFIERS: Final = """
UNWIND $rows AS row
MATCH (i:Identifier {node_id: row.node_id})
SET i.key_id = row.key_id, i.digest = row.digest
"""

TOUCH_IDENTIFIERS: Final = """
UNWIND $rows AS row
MATCH (i:Identifier {node_id: row.node_id})
SET i.first_seen = CASE WHEN row.first_seen < i.first_seen THEN row.first_seen
                        ELSE i.first_seen END,
    i.last_seen = CASE WHEN row.last_seen > i.last_seen THEN row.last_seen
                       ELSE i.last_seen END
"""

# Merge: every identifier of an absorbed person moves to its survivor ...
MOVE_IDENTIFIERS_OF_PERSONS: Final = """
UNWIND $rows AS row
MATCH (absorbed:Person {person_id: row.absorbed})-[h:HAS_IDENTIFIER]->(i:Identifier)
MATCH (survivor:Person {person_id: row.survivor})
DELETE h
CREATE (survivor)-[:HAS_IDENTIFIER]->(i)
"""

# ... then the absorbed person goes. DELETE, not DETACH DELETE: a person still holding an
# identifier fails the statement instead of orphaning the identifier (SQLite's foreign key).
DELETE_PERSONS: Final = """
UNWIND $person_ids AS pid
MATCH (p:Person {person_id: pid})
DELETE p
"""

REASSIGN_IDENTIFIERS: Final = """
UNWIND $rows AS row
MATCH (:Person)-[h:HAS_IDENTIFIER]->(i:Identifier {node_id: row.node_id})
MATCH (p:Person {person_id: row.person_id})
DELETE h
CREATE (p)-[:HAS_IDENTIFIER]->(i)
"""

SEE_PERSONS: Final = """
UNWIND $rows AS row
MATCH (p:Person {person_id: row.person_id})
SET p.last_seen = CASE WHEN row.last_seen > p.last_seen THEN row.last_seen
                       ELSE p.last_seen END
"""

# One LINKED relationship per (a, b, source); a repeat widens its time window.
UPSERT_LINKS: Final = """
UNWIND $rows AS row
MATCH (a:Identifier {node_id: row.a})
MATCH (b:Identifier {node_id: row.b})
MERGE (a)-[l:LINKED {source: row.source}]->(b)
ON CREATE SET l.first_at = row.first_at, l.last_at = row.last_at
ON MATCH SET l.first_at = CASE WHEN row.first_at < l.first_at THEN row.first_at
                               ELSE l.first_at END,
             l.last_at = CASE WHEN row.last_at > l.last_at THEN row.last_at
                              ELSE l.last_at END
RETURN count(*) AS linked
"""

# Facts are written after new nodes, merges and reassignments (apply order). They need no move
# on a merge or split: they hang off their Identifier node, which is what moves. Every row must
# find its anchor node; ``written`` counts the rows that did (the adapter compares).
#
# The current value of an attribute: one active ATTRIBUTE per (node, name). A newer or equally
# recent row replaces its value (the fact keeps its id); an older one is ignored. The condition
# ``row.at >= f.at`` holds before and after the SET, so the order of the SET items is immaterial.
# MERGE matches or creates per row, seeing earlier rows of the same statement.
UPSERT_ATTRIBUTE_FACTS: Final = """
UNWIND $rows AS row
MATCH (i:Identifier {node_id: row.node_id})
MERGE (i)-[:HAS_FACT]->(f:Fact {kind: row.kind, status: row.status, name: row.name})
ON CREATE SET f.fact_id = row.fact_id, f.category = row.category, f.at = row.at,
              f.source = row.source, f.sealed = row.sealed, f.pii = row.pii
ON MATCH SET f.category = CASE WHEN row.at >= f.at THEN row.category ELSE f.category END,
             f.source = CASE WHEN row.at >= f.at THEN row.source ELSE f.source END,
             f.sealed = CASE WHEN row.at >= f.at THEN row.sealed ELSE f.sealed END,
             f.pii = CASE WHEN row.at >= f.at THEN row.pii ELSE f.pii END,
             f.at = CASE WHEN row.at >= f.at THEN row.at ELSE f.at END
RETURN count(*) AS written
"""

# The kept raw identifier: one RAW_IDENTIFIER per node, whatever its status; a new one replaces
# its time, source and ciphertext (as SQLite's ON CONFLICT (node_id) upsert does).
UPSERT_RAW_IDENTIFIER_FACTS: Final = """
UNWIND $rows AS row
MATCH (i:Identifier {node_id: row.node_id})
MERGE (i)-[:HAS_FACT]->(f:Fact {kind: row.kind})
ON CREATE SET f.fact_id = row.fact_id, f.name = row.name, f.category = row.category,
              f.status = row.status, f.pii = row.pii, f.at = row.at, f.source = row.source,
              f.sealed = row.sealed
ON MATCH SET f.at = row.at, f.source = row.source, f.sealed = row.sealed
RETURN count(*) AS written
"""

# Events and quarantined facts are appended. CREATE: a repeated fact_id fails the constraint.
CREATE_FACTS: Final = """
UNWIND $rows AS row
MATCH (i:Identifier {node_id: row.node_id})
CREATE (i)-[:HAS_FACT]->(:Fact {fact_id: row.fact_id, kind: row.kind, name: row.name,
        category: row.category, at: row.at, source: row.source, status: row.status,
        sealed: row.sealed, pii: row.pii})
RETURN count(*) AS written
"""

# Consent records are appended after new nodes, merges and reassignments (apply order), anchored
# like facts. CREATE: a repeated record_id fails the constraint; history is never rewritten.
CREATE_CONSENTS: Final = """
UNWIND $rows AS row
MATCH (i:Identifier {node_id: row.node_id})
CREATE (i)-[:HAS_CONSENT]->(:Consent {record_id: row.record_id, purpose: row.purpose,
        granted: row.granted, at: row.at, recorded_at: row.recorded_at, source: row.source,
        signal: row.signal, lawful_basis: row.lawful_basis, proof: row.proof})
RETURN count(*) AS written
"""

SET_FACT_STATUS: Final = """
UNWIND $fact_ids AS fid
MATCH (f:Fact {fact_id: fid})
SET f.status = $status
RETURN count(f) AS changed
"""

DELETE_FACTS: Final = """
UNWIND $fact_ids AS fid
MATCH (f:Fact {fact_id: fid})
DETACH DELETE f
"""

CREATE_REFUSALS: Final = """
UNWIND $rows AS row
CREATE (:Refusal {at: row.at, source: row.source, type: row.type, key_id: row.key_id,
                  digest: row.digest, reason: row.reason, detail: row.detail,
                  anchor_node: row.anchor_node})
"""

# Retention (privacy/dsr/retention.py): old refusals, and consent records superseded by a later
# record of the same purpose and signal on the same identifier (the state never changes).
DELETE_REFUSALS_BEFORE: Final = """
MATCH (r:Refusal)
WHERE r.at < $before
WITH r LIMIT $limit
DELETE r
"""

DELETE_SUPERSEDED_CONSENTS: Final = """
MATCH (i:Identifier)-[:HAS_CONSENT]->(c:Consent)
WHERE c.at < $before
  AND EXISTS {
    MATCH (i)-[:HAS_CONSENT]->(n:Consent)
    WHERE n.purpose = c.purpose AND n.signal = c.signal AND n.at > c.at
  }
WITH c LIMIT $limit
DETACH DELETE c
"""

# Schema version 6: where the rest of a refused identifier's event went (its anchor node's
# current person), for erasure to follow (privacy/dsr/erasure.py). A refusal without an anchor
# (nothing linked, or recorded before version 6) has a null property and matches nothing.
REFUSED_ANCHORS: Final = """
UNWIND $candidates AS c
MATCH (r:Refusal {digest: c.digest})
WHERE r.type = c.type AND r.key_id = c.key_id AND r.anchor_node IS NOT NULL
MATCH (p:Person)-[:HAS_IDENTIFIER]->(:Identifier {node_id: r.anchor_node})
RETURN DISTINCT p.person_id AS person_id, r.at AS at
"""

# -- erasure and suppression (privacy/dsr/erasure.py) ----------------------------------------------

# The erased person's nodes with their hashes, read before anything is deleted.
ERASURE_NODES: Final = """
MATCH (:Person {person_id: $person_id})-[:HAS_IDENTIFIER]->(i:Identifier)
RETURN i.node_id AS node_id, i.type AS type, i.key_id AS key_id, i.digest AS digest
ORDER BY node_id
"""

# Dependants first, each statement starting from the person (the person_id constraint's index),
# so the cost follows the size of the person, not of the graph. Links: every LINKED relationship
# touching one of its nodes, either direction, once each.
ERASE_PERSON_LINKS: Final = """
MATCH (:Person {person_id: $person_id})-[:HAS_IDENTIFIER]->(i:Identifier)-[l:LINKED]-()
WITH DISTINCT l
DELETE l
"""

ERASE_PERSON_DO_NOT_LINK: Final = """
MATCH (:Person {person_id: $person_id})-[:HAS_IDENTIFIER]->(i:Identifier)-[r:DO_NOT_LINK]-()
WITH DISTINCT r
DELETE r
"""

ERASE_PERSON_FACTS: Final = """
MATCH (:Person {person_id: $person_id})-[:HAS_IDENTIFIER]->(:Identifier)-[:HAS_FACT]->(f:Fact)
DETACH DELETE f
"""

ERASE_PERSON_CONSENTS: Final = """
MATCH (:Person {person_id: $person_id})-[:HAS_IDENTIFIER]->(:Identifier)
      -[:HAS_CONSENT]->(c:Consent)
DETACH DELETE c
"""

ERASE_PERSON_IDENTIFIERS: Final = """
MATCH (:Person {person_id: $person_id})-[:HAS_IDENTIFIER]->(i:Identifier)
DETACH DELETE i
"""

# DELETE, not DETACH DELETE: anything still attached (which the statements above should have
# removed) fails the transaction instead of being orphaned.
ERASE_PERSON: Final = """
MATCH (p:Person {person_id: $person_id})
DELETE p
"""

DELETE_REFUSALS_OF_HASHES: Final = """
UNWIND $candidates AS c
MATCH (r:Refusal {digest: c.digest})
WHERE r.type = c.type AND r.key_id = c.key_id
DELETE r
"""

# MERGE: suppressing a hash twice keeps one entry (the constraint makes it exact).
SUPPRESS_HASHES: Final = """
UNWIND $candidates AS c
MERGE (:Suppression {type: c.type, key_id: c.key_id, digest: c.digest})
"""

FIND_SUPPRESSED: Final = """
UNWIND $candidates AS c
MATCH (s:Suppression {digest: c.digest})
WHERE s.type = c.type AND s.key_id = c.key_id
RETURN s.type AS type, s.key_id AS key_id, s.digest AS digest
"""

LIFT_SUPPRESSION: Final = """
UNWIND $candidates AS c
MATCH (s:Suppression {digest: c.digest})
WHERE s.type = c.type AND s.key_id = c.key_id
DELETE s
"""

CREATE_ERASURE_OUTBOX: Final = """
CREATE (:ErasureOutbox {erasure_id: $erasure_id, request_id: $request_id, actor: $actor,
        created_at: $created_at, node_ids: $node_ids, counts: $counts})
"""

PENDING_ERASURES: Final = """
MATCH (o:ErasureOutbox)
WHERE o.done_at IS NULL
RETURN o.erasure_id AS erasure_id, o.request_id AS request_id, o.actor AS actor,
       o.created_at AS created_at, o.node_ids AS node_ids, o.counts AS counts
ORDER BY created_at, erasure_id
"""

COMPLETE_ERASURE: Final = """
MATCH (o:ErasureOutbox {erasure_id: $erasure_id})
WHERE o.done_at IS NULL
SET o.node_ids = [], o.done_at = $done_at
RETURN count(o) AS completed
"""

# -- stream ingest and the outbound outbox ------------------------------------------------------

FIND_SEEN_MESSAGES: Final = """
UNWIND $digests AS digest
MATCH (m:SeenMessage {digest: digest})
RETURN m.digest AS digest
"""

RECORD_MESSAGES: Final = """
UNWIND $rows AS row
CREATE (:SeenMessage {digest: row.digest, seen_at: row.seen_at})
"""

FORGET_MESSAGES: Final = """
MATCH (m:SeenMessage)
WHERE m.seen_at < $before
DELETE m
"""

CREATE_OUTBOUND_EVENTS: Final = """
UNWIND $rows AS row
CREATE (:OutboundEvent {event_id: row.event_id, kind: row.kind, person_id: row.person_id,
        payload: row.payload, created_at: row.created_at, erasure_id: row.erasure_id})
"""

# Events waiting for an erasure that is not complete yet are held back.
OUTBOUND_PAGE: Final = """
MATCH (o:OutboundEvent)
WHERE o.erasure_id IS NULL
   OR NOT EXISTS {
        MATCH (e:ErasureOutbox {erasure_id: o.erasure_id})
        WHERE e.done_at IS NULL
      }
RETURN o.event_id AS event_id, o.kind AS kind, o.person_id AS person_id,
       o.payload AS payload, o.created_at AS created_at, o.erasure_id AS erasure_id
ORDER BY event_id
LIMIT $limit
"""

DELETE_OUTBOUND: Final = """
UNWIND $event_ids AS event_id
MATCH (o:OutboundEvent {event_id: event_id})
DELETE o
"""

ERASE_PERSON_OUTBOUND: Final = """
MATCH (o:OutboundEvent {person_id: $person_id})
DELETE o
"""

# -- copying a graph out of Neo4j (identity.store.neo4j.Neo4jCopySource) ------------------------
# Persons by id after a cursor (the person_id uniqueness constraint's index serves the order),
# then everything of one page of persons, selected by person or node id like the SQLite source.

COPY_PERSONS_AFTER: Final = """
MATCH (p:Person)
WHERE p.person_id > $after_person_id
RETURN p.person_id AS person_id, p.created_at AS created_at, p.last_seen AS last_seen
ORDER BY person_id
LIMIT $limit
"""

COPY_PERSONS_UPTO: Final = """
MATCH (p:Person)
WHERE p.person_id <= $person_id
RETURN count(p) AS n
"""

COPY_NODES_OF: Final = """
UNWIND $person_ids AS pid
MATCH (p:Person {person_id: pid})-[:HAS_IDENTIFIER]->(i:Identifier)
RETURN i.node_id AS node_id, i.type AS type, i.key_id AS key_id, i.digest AS digest,
       p.person_id AS person_id, i.first_seen AS first_seen, i.last_seen AS last_seen
ORDER BY node_id
"""

COPY_LINKS_FROM: Final = """
UNWIND $node_ids AS nid
MATCH (x:Identifier {node_id: nid})-[l:LINKED]->(y:Identifier)
RETURN x.node_id AS a, y.node_id AS b, l.source AS source, l.first_at AS first_at,
       l.last_at AS last_at
ORDER BY a, b, source
"""

COPY_FACTS_OF: Final = """
UNWIND $node_ids AS nid
MATCH (i:Identifier {node_id: nid})-[:HAS_FACT]->(f:Fact)
RETURN f.fact_id AS fact_id, i.node_id AS node_id, f.kind AS kind, f.name AS name,
       f.category AS category, f.at AS at, f.source AS source, f.status AS status,
       f.sealed AS sealed, coalesce(f.pii, []) AS pii
ORDER BY fact_id
"""

COPY_CONSENTS_OF: Final = """
UNWIND $node_ids AS nid
MATCH (i:Identifier {node_id: nid})-[:HAS_CONSENT]->(c:Consent)
RETURN c.record_id AS record_id, i.node_id AS node_id, c.purpose AS purpose,
       c.granted AS granted, c.at AS at, c.recorded_at AS recorded_at, c.source AS source,
       c.signal AS signal, c.lawful_basis AS lawful_basis, c.proof AS proof
ORDER BY record_id
"""

# Refusals have no id property of their own: they are paged by key, (at, digest, element id)
# after the last one copied (time order, as they were recorded; the element id is stable while
# the node exists, and the copy needs a source nobody writes). Never by offset: a refusal
# deleted meanwhile (retention) would shift every later page.
COPY_REFUSALS_AFTER: Final = """
MATCH (r:Refusal)
WITH r, elementId(r) AS element_id
WHERE r.at > $after_at
   OR (r.at = $after_at AND (r.digest > $after_digest
       OR (r.digest = $after_digest AND element_id > $after_element_id)))
RETURN element_id, r.at AS at, r.source AS source, r.type AS type, r.key_id AS key_id,
       r.digest AS digest, r.reason AS reason, r.detail AS detail, r.anchor_node AS anchor_node
ORDER BY at, digest, element_id
LIMIT $limit
"""

COPY_REFUSALS_UPTO: Final = """
MATCH (r:Refusal)
WITH r, elementId(r) AS element_id
WHERE r.at < $after_at
   OR (r.at = $after_at AND (r.digest < $after_digest
       OR (r.digest = $after_digest AND element_id <= $after_element_id)))
RETURN count(r) AS n
"""

COPY_SUPPRESSED_AFTER: Final = """
MATCH (s:Suppression)
WHERE s.digest > $after_digest
   OR (s.digest = $after_digest AND (s.type > $after_type
       OR (s.type = $after_type AND s.key_id > $after_key_id)))
RETURN s.digest AS digest, s.type AS type, s.key_id AS key_id
ORDER BY digest, type, key_id
LIMIT $limit
"""

# Tests only. Deletes idgraph's nodes (and their relationships) in inner transactions of
# $batch_size rows so a large graph does not need one huge transaction's memory. CALL ... IN
# TRANSACTIONS runs only in an implicit (auto-commit) transaction: ``session.run``, never inside
# ``execute_write``. The schema (constraints, indexes) stays.
WIPE_ALL: Final = """
MATCH (n:Person|Identifier|Refusal|Meta|Fact|Consent|Suppression|ErasureOutbox|SeenMessage|
         OutboundEvent)
CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF $batch_size ROWS
"""


def statements() -> dict[str, str]:
    """Every Cypher statement of this module by constant name: what the lint and tests check.

    Collected from the module itself (every ``UPPER_SNAKE`` string constant is a statement), so
    a new statement cannot be added without being linted.
    """
    module = sys.modules[__name__]
    return {
        name: value
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str)
    }


def property_keys() -> list[str]:
    """Every property key and row-map key the statements may use, sorted."""
    keys = {key for props in NODE_PROPERTIES.values() for key in props}
    keys.update(key for props in RELATIONSHIP_PROPERTIES.values() for key in props)
    keys.update(ROW_KEYS)
    return sorted(keys)
