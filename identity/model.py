"""Domain types of the identity graph. Frozen dataclasses; ports speak only these."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar, overload

from identity.csprng import random_bytes
from identity.frozen import quick_init
from identity.hashing import HashedIdentifier
from identity.identifiers import NormalizedIdentifier


def new_person_id() -> str:
    """A random, opaque person id (96 bits from the OS CSPRNG).

    Never derived from identifiers: a person id travels to downstream tools, and one computed
    from an email would be a pseudonym anyone holding the email could recompute. (The bytes
    come a block at a time, :mod:`identity.csprng` says why that is as good as a call each.)
    """
    return "p_" + random_bytes(12).hex()


_NODE_RANDOM_BYTES = 8  # 64 bits per id
_node_clock = itertools.count()


def new_node_id() -> str:
    """An opaque id for one identifier node; stable across key rotation.

    ``n_`` + 48 bits of milliseconds + a 24-bit per-process counter + **64 bits from the OS
    CSPRNG, fresh for every id**. Time and counter first, so ids increase and inserts append to
    the end of every B-tree keyed by node id instead of touching random pages (at a million
    identifiers that is a third of the bulk-ingest time). The random part is drawn per id, not a
    per-process salt: the ids of neighbouring nodes (in a graph backup, a log) then say nothing
    about the 64 bits of an erased node's id, so no reference to it can be confirmed by guessing
    (issue 22: with a shared salt one was found in 11 guesses). The 64 bits are a slice of a
    block drawn from the CSPRNG for many ids (:func:`identity.csprng.random_bytes`: each slice
    handed out once, per thread, dropped at a fork; as independent as a ``getrandom`` call per
    id, without releasing the GIL per id). Person ids, which travel downstream, stay fully
    random.
    """
    millis = time.time_ns() // 1_000_000
    counter = next(_node_clock) & 0xFFFFFF
    # One hex conversion of 6 bytes of time, 3 of counter and the random bytes: the same
    # string as f"n_{millis:012x}{counter:06x}{random.hex()}" (tests/identity/test_ids.py) at
    # half its cost (an f-string parses its format specs on every call; a million per 1M-id
    # bulk ingest).
    return (
        "n_"
        + (
            millis.to_bytes(6, "big")
            + counter.to_bytes(3, "big")
            + random_bytes(_NODE_RANDOM_BYTES)
        ).hex()
    )


def new_consent_id() -> str:
    """A random, opaque id for one consent record."""
    return "c_" + random_bytes(12).hex()


_fact_clock = itertools.count()


def new_fact_id() -> str:
    """An opaque id for one stored fact: ``f_`` + 12 hex of milliseconds + 4 hex of a
    per-process counter + **8 hex (32 bits) from the OS CSPRNG, fresh for every id**.

    Time-ordered for the same reason as node ids: the stores' indexes keyed by fact id (the
    SQLite ``facts`` UNIQUE column and ``facts_by_status``) then grow at their end instead of
    being rewritten at random pages (random fact ids were a large part of the bytes bulk ingest
    wrote). Same shape as before (24 hex), so older random ids and newer ones mix in one
    keyspace. The random tail keeps ids of processes that share a millisecond and a counter
    value apart.

    **Where a fact id goes, and why its milliseconds may go with it** (checked in stop 35). It
    leaves the store in one place only: the operators' quarantine review (``idgraph quarantine``
    and the console page list, reveal, release and drop facts by id) and that review's audit
    entries (``quarantine.revealed``/``released``/``dropped`` name the ids). Never in an API
    answer (ingest outcomes count facts, reads and audience pages name fields), a DSR export
    (facts by name, category and time), an outbound event, a read's audit entry or a log line;
    ``tests/api/test_dsr_api.py`` pins that. What the milliseconds tell there: when a quarantined
    value was stored, to an operator who is shown the fact's own time and source beside the id,
    and may reveal the value itself. An audit entry that outlives the fact (dropped, or its
    person erased) keeps that instant, with the field and entity types the entry names anyway
    and no person: the instant links the entry to no person, since the records that could be
    joined on it (the fact, its node, whose ids are time-ordered too) are deleted with the
    person, and a backup still holding them holds the fact id itself, so hiding its time would
    not cut that link either. Coarsening (seconds) would still tell the time, and fully random
    ids would cost the write locality issue 14 measured. So the ids stay as they are; a change
    that sends fact ids anywhere else must decide this again (the test above fails first).
    """
    millis = time.time_ns() // 1_000_000
    counter = next(_fact_clock) & 0xFFFF
    # f"f_{millis:012x}{counter:04x}{random.hex()}", built as new_node_id builds its id.
    return "f_" + (millis.to_bytes(6, "big") + counter.to_bytes(2, "big") + random_bytes(4)).hex()


def new_rule_id() -> str:
    """A random, opaque id for one do-not-link rule (what the admin CLI names it by)."""
    return "dnl_" + secrets.token_hex(12)


def new_erasure_id() -> str:
    """A random, opaque id for one erasure (its outbox entry and audit entry)."""
    return "e_" + secrets.token_hex(12)


class FactKind(StrEnum):
    """What a fact is."""

    ATTRIBUTE = "attribute"  # a trait of the person (city, age band): latest value wins
    EVENT = "event"  # something the person did (purchase): append-only
    RAW_IDENTIFIER = "raw_identifier"  # a normalized identifier kept for activation (vault only)


class FactStatus(StrEnum):
    """Whether reads may see a fact."""

    ACTIVE = "active"
    QUARANTINED = "quarantined"  # PII where the policy did not expect it; invisible to reads


@quick_init
@dataclass(frozen=True, slots=True)
class FactInput:
    """A fact about to be stored: its plaintext payload is sealed before it reaches a store."""

    kind: FactKind
    name: str
    category: str
    at: datetime
    payload: bytes = field(repr=False)
    status: FactStatus = FactStatus.ACTIVE
    pii: tuple[str, ...] = ()  # entity types the scanner found (redacted or quarantined)

    @property
    def seal_field(self) -> str:
        """The field a ciphertext is bound to (with its anchor) so blobs cannot be swapped."""
        return f"{self.kind.value}:{self.name}"


@quick_init
@dataclass(frozen=True, slots=True)
class Fact:
    """A stored fact: anchored to one identifier node, its value sealed by the vault."""

    fact_id: str
    node_id: str
    kind: FactKind
    name: str
    category: str
    at: datetime
    source: str
    status: FactStatus
    sealed: bytes = field(repr=False)
    pii: tuple[str, ...] = ()

    @property
    def seal_field(self) -> str:
        """The field the ciphertext is bound to."""
        return f"{self.kind.value}:{self.name}"


class ConsentSignal(StrEnum):
    """Where a consent record came from (how to read its ``proof``)."""

    DIRECT = "direct"  # POST /v1/consent from a CMP or the site's backend
    WEBHOOK = "webhook"  # a signed CMP webhook
    TCF = "tcf"  # an IAB TCF v2.2 TC string
    GPP = "gpp"  # an IAB GPP string (tcfeuv2 / usnat sections)
    GPC = "gpc"  # the Global Privacy Control header, Sec-GPC: 1
    OBJECTION = "objection"  # Art. 21 objection (absolute for direct marketing)
    RESTRICTION = "restriction"  # Art. 18 restriction of processing; purpose is "*"
    # Art. 21(1): an operator's recorded decision that compelling legitimate grounds override an
    # objection to a legitimate-interest purpose (granted=True; proof: digest of the reasons).
    COMPELLING_GROUNDS = "compelling_grounds"


RESTRICTION_PURPOSE = "*"  # the purpose of restriction records: they apply to every purpose


@dataclass(frozen=True, slots=True)
class ConsentInput:
    """A consent decision arriving with an event; anchored like facts to the event's hub."""

    purpose: str
    granted: bool
    at: datetime
    signal: ConsentSignal
    lawful_basis: str
    proof: str


@quick_init
@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """One consent decision, append-only, anchored to the identifier node it came with.

    Current state is derived from the history (see :mod:`privacy.consent.state`): records are
    never updated. ``proof`` is the SHA-256 (hex) of the original signal (the TC string, the
    webhook body, the request body), so the signal can be matched to the record later without
    the record holding it. No raw identifier is part of a record.
    """

    record_id: str
    node_id: str
    purpose: str
    granted: bool
    at: datetime  # when the subject decided (the signal's time)
    recorded_at: datetime  # when idgraph stored it
    source: str  # who sent it: "api", "cmp:<name>", "gpc", "dsr"
    signal: ConsentSignal
    lawful_basis: str
    proof: str


@quick_init
@dataclass(frozen=True, slots=True)
class IdentityEvent:
    """Identifiers seen together, from one source at one time, with facts about the person.

    The facts are anchored to the event's highest-priority linked identifier.
    """

    identifiers: tuple[NormalizedIdentifier, ...]
    source: str
    occurred_at: datetime
    facts: tuple[FactInput, ...] = ()
    consents: tuple[ConsentInput, ...] = ()
    # The sender's id for this event (``message_id`` of an API body, a bulk row or a stream
    # record): an event whose id was already applied is skipped in the same transaction, so a
    # resend or redelivery changes nothing.
    message_id: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class IdentifierNode:
    """An identifier in the graph: its keyed hash, the person it resolves to, and when seen."""

    node_id: str
    hashed: HashedIdentifier
    person_id: str
    first_seen: datetime
    last_seen: datetime


@quick_init
@dataclass(frozen=True, slots=True)
class Link:
    """An undirected link between two identifier nodes, per source. ``a < b`` always."""

    a: str
    b: str
    source: str
    first_at: datetime
    last_at: datetime

    def __post_init__(self) -> None:
        if not self.a < self.b:
            raise ValueError("link endpoints must be ordered a < b")


@quick_init
@dataclass(frozen=True, slots=True)
class PersonRecord:
    """A resolved person: an opaque id and activity times."""

    person_id: str
    created_at: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class PersonReadRows:
    """What a profile read needs of one existing person, read at once
    (:meth:`identity.store.port.GraphStore.person_read`): the consent records asked for, in
    decision order (as ``person_consents``), and the facts asked for, still sealed, oldest
    first (as ``person_facts``)."""

    consents: tuple[ConsentRecord, ...]
    facts: tuple[Fact, ...]


class RefusalReason(StrEnum):
    """Why an identifier of an event was not linked."""

    BLOCKED_VALUE = "blocked_value"
    BLOCKED_PATTERN = "blocked_pattern"
    LIMIT_EXCEEDED = "limit_exceeded"
    SUPPRESSED = "suppressed"  # erased at the subject's request (GDPR Art. 17): never re-created
    # Linking would merge a person whose processing is restricted (Art. 18) with another person:
    # a merge is processing the restriction forbids (see ResolutionEngine, keep_restricted_apart).
    RESTRICTED = "restricted"
    # An operator unlinked two identifiers of the persons being joined, and a do-not-link rule
    # keeps those two apart (issue 13: an unlink must survive the next event naming both).
    DO_NOT_LINK = "do_not_link"
    # The identifier's node is still in the graph but its data key was crypto-shredded (an
    # operator's shred, an interrupted erasure, a graph backup restored after an erasure): a
    # shred is irreversible, so the node takes no new value, link or consent (never a new key).
    SHREDDED = "shredded"


@dataclass(frozen=True, slots=True)
class Refusal:
    """An identifier that was not linked, and why. Holds only the keyed hash."""

    hashed: HashedIdentifier
    reason: RefusalReason
    detail: str
    source: str
    at: datetime
    position: int = field(default=-1, compare=False)
    # The identifier node the rest of the event was anchored to (its facts' hub), when the event
    # linked anything: an erasure of the refused identifier's person follows it to that data
    # (privacy/dsr/erasure.py). A node id, not a person id: it follows merges and splits.
    anchor_node: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class RefusedAnchor:
    """Where data that arrived with a refused identifier went: the person now holding the
    event's anchor node, and when the event happened."""

    person_id: str
    at: datetime


class Outcome(StrEnum):
    """What one ingested event did to the graph."""

    CREATED = "created"  # a new person
    LINKED = "linked"  # new identifiers joined an existing person
    MERGED = "merged"  # two or more persons became one
    UNCHANGED = "unchanged"  # everything was already known and linked
    REFUSED = "refused"  # no identifier could be linked
    DUPLICATE = "duplicate"  # its message_id was applied before: nothing was done again


@quick_init
@dataclass(frozen=True, slots=True)
class EventOutcome:
    """The result of one event. ``person_id`` is for callers allowed to see it."""

    outcome: Outcome
    person_id: str | None
    merged_person_ids: tuple[str, ...]
    new_identifiers: int
    refusals: tuple[Refusal, ...]
    facts_stored: int = 0
    facts_quarantined: int = 0
    facts_dropped: int = 0  # no identifier of the event could be linked, so nothing to anchor to
    consents_recorded: int = 0
    consents_dropped: int = 0  # likewise: nothing to anchor them to

    @property
    def refused_identifiers(self) -> tuple[Refusal, ...]:
        """One refusal per distinct refused identifier (its first position), for counts and
        metrics. ``refusals`` reports every position an identifier was sent at (a repeat of a
        refused identifier must not read as linked), so an identifier sent twice and refused
        is two refusals there but one refused identifier here."""
        seen: set[tuple[str, bytes, str]] = set()
        distinct: list[Refusal] = []
        for refusal in self.refusals:
            key = (refusal.hashed.type, refusal.hashed.digest, refusal.reason.value)
            if key not in seen:
                seen.add(key)
                distinct.append(refusal)
        return tuple(distinct)


@dataclass(frozen=True, slots=True)
class OutboundEvent:
    """A change downstream tools are told about, held in the graph's outbox until published.

    Written in the transaction that made the change, so a committed change always has its event
    and a rolled-back one never does (the transactional outbox); a relay publishes it and then
    deletes it (at least once: consumers deduplicate by ``event_id``). ``payload`` is the JSON
    document of a versioned schema (:mod:`identity.outbound`); it carries pseudonymous ids only
    (the person id, which is random and never derived from an identifier), never an identifier
    or a hash. ``person_id`` is the partition key, so one person's events stay in order; erasing
    the person drops their events still in the outbox. An event with ``erasure_id`` is held back
    until that erasure has completed (keys shredded, audited).
    """

    event_id: str
    kind: str
    person_id: str
    payload: str
    created_at: datetime
    erasure_id: str | None = None


R_co = TypeVar("R_co", covariant=True)


class Records(Sequence[R_co]):
    """Records of one type held as the plain tuples of their fields (in field order) until
    they are read: a read item (by index or iteration) is the record, built then.

    Why: a bulk batch hands the store tens of thousands of new nodes and facts in a
    :class:`ChangeSet`, and the SQLite store only turns each into a row tuple again. Building
    the frozen dataclass (a Python-level ``__init__`` setting every field) cost 1.3 µs a node
    and more a fact (stop 37; ~2 % of bulk CPU at 1M identifiers), for nothing. A store that
    writes rows reads :attr:`fields` instead; every other reader (the Neo4j adapter, tests)
    sees the records, equal to a tuple of the same records.
    """

    __slots__ = ("_type", "fields")

    def __init__(self, record_type: Callable[..., R_co], fields: Sequence[tuple[Any, ...]]) -> None:
        self._type = record_type
        self.fields = fields  # one tuple per record, in the record type's field order

    def __len__(self) -> int:
        return len(self.fields)

    @overload
    def __getitem__(self, index: int) -> R_co: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[R_co, ...]: ...

    def __getitem__(self, index: int | slice) -> R_co | tuple[R_co, ...]:
        if isinstance(index, slice):
            return tuple(self._type(*f) for f in self.fields[index])
        return self._type(*self.fields[index])

    def __iter__(self) -> Iterator[R_co]:
        make = self._type
        return (make(*f) for f in self.fields)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Records | tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


def record_fields(
    records: Sequence[Any], fields: Callable[[Any], tuple[Any, ...]]
) -> Sequence[tuple[Any, ...]]:
    """The field tuples of ``records``: :attr:`Records.fields` as they are, else ``fields``
    of each record (a plain tuple of records, as most change sets carry)."""
    if isinstance(records, Records):
        return records.fields
    return [fields(r) for r in records]


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """Everything one resolution transaction writes, applied set-based by the store.

    ``new_nodes``, ``links`` and ``facts`` are tuples of records, or :class:`Records` (what
    the resolution engine writes)."""

    new_persons: tuple[PersonRecord, ...] = ()
    new_nodes: Sequence[IdentifierNode] = ()
    # node_id -> the same identifier hashed under the primary key (lazy re-hash after rotation)
    rehashed: Mapping[str, HashedIdentifier] = field(default_factory=dict)
    # node_id -> (first_seen, last_seen) to widen the node's seen window to
    touched: Mapping[str, tuple[datetime, datetime]] = field(default_factory=dict)
    # absorbed person_id -> surviving person_id (every node of the absorbed person moves)
    merged: Mapping[str, str] = field(default_factory=dict)
    # node_id -> person_id (a split moves some nodes to a new person)
    reassigned: Mapping[str, str] = field(default_factory=dict)
    # person_id -> last_seen to raise the person's activity time to
    persons_seen: Mapping[str, datetime] = field(default_factory=dict)
    links: Sequence[Link] = ()
    refusals: tuple[Refusal, ...] = ()
    # Attributes replace the active attribute of the same name on the same node when at least as
    # recent; raw identifiers replace the node's raw identifier; everything else is appended.
    facts: Sequence[Fact] = ()
    # Appended as they are; consent history is never rewritten.
    consents: tuple[ConsentRecord, ...] = ()
    # Keyed digests of the message ids this transaction applied (exactly-once per message).
    messages: tuple[bytes, ...] = ()
    # Events for downstream tools, committed with the change they describe (transactional outbox).
    outbound: tuple[OutboundEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class ErasureCounts:
    """What :meth:`~identity.store.port.GraphTransaction.erase_person` deleted.

    ``node_ids`` are the erased identifier nodes (the vault data keys to shred: they are the
    vault's owners); ``hashes`` their keyed hashes as they were stored (to suppress).
    """

    persons: int  # 1, or 0 when there was no such person
    node_ids: tuple[str, ...]
    hashes: tuple[HashedIdentifier, ...] = field(repr=False)
    links: int
    facts: int
    consents: int
    refusals: int
    do_not_link: int = 0  # do-not-link rules naming one of the person's nodes

    @property
    def identifiers(self) -> int:
        """How many identifier nodes were deleted."""
        return len(self.node_ids)


@dataclass(frozen=True, slots=True)
class ErasureOutboxEntry:
    """An erasure committed in the graph whose vault keys may not be shredded yet.

    Written in the erasure's graph transaction, completed (its ``node_ids`` cleared) once the
    vault has shredded those owners' data keys; a crash in between leaves it pending for
    recovery at start-up. ``counts`` are what the erasure deleted (for its audit entry).
    """

    erasure_id: str
    request_id: str
    actor: str  # who asked (an API key id, "cli"): for the audit entry written on completion
    created_at: datetime
    node_ids: tuple[str, ...]  # vault owners to shred: the nodes, and audit-ref key owners
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Cluster:
    """The local subgraph of one person: its identifier nodes and the links among them."""

    person_id: str
    nodes: tuple[IdentifierNode, ...]
    links: tuple[Link, ...]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Row counts, for health output, the CLI summary and tests."""

    persons: int
    identifiers: int
    links: int
    refusals: int
    facts: int = 0
    consents: int = 0


@dataclass(frozen=True, slots=True)
class ExplainHop:
    """One step on the path between two identifiers: which sources linked them and when."""

    from_node: str
    from_type: str
    to_node: str
    to_type: str
    sources: tuple[str, ...]
    first_linked_at: datetime
    last_linked_at: datetime


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why two identifiers resolve to the same person (or that they do not)."""

    linked: bool
    person_id: str | None
    hops: tuple[ExplainHop, ...]
    # Rules that keep the two identifiers' persons apart (one end in each): why they are not
    # linked although events named them together.
    do_not_link: tuple[DoNotLinkEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class UnlinkResult:
    """What an unlink did: links removed and, if the cluster fell apart, the resulting persons."""

    removed_links: int
    split: bool
    person_id_a: str
    person_id_b: str
    # The do-not-link rule recorded between the two identifiers (``None``: they are still one
    # person through other links, so there was nothing to keep apart).
    rule_id: str | None = None


@dataclass(frozen=True, slots=True)
class DoNotLinkRule:
    """Two identifier nodes an operator unlinked: resolution never puts them in one person again.

    The rule names the nodes, which hold nothing but keyed hashes: no raw value and no second
    copy of a hash is written, a hash-key rotation (nodes are re-hashed in place) cannot orphan
    it, and erasing either node deletes it. ``a < b``.
    """

    rule_id: str
    a: str
    b: str
    created_at: datetime

    def __post_init__(self) -> None:
        if not self.a < self.b:
            raise ValueError("do-not-link endpoints must be ordered a < b")


@dataclass(frozen=True, slots=True)
class DoNotLinkEntry:
    """A stored rule with what its ends are now: their types and the persons holding them."""

    rule: DoNotLinkRule
    type_a: str
    type_b: str
    person_a: str
    person_b: str


@dataclass(frozen=True, slots=True)
class EventCountRule:
    """At least ``min_count`` active events named ``name`` with ``at >= since``."""

    name: str
    since: datetime
    min_count: int


@dataclass(frozen=True, slots=True)
class MemberScan:
    """What one page of a member scan (audiences, feature tables) selects and returns.

    Persons must satisfy every rule in ``event_rules`` (AND; none = every person). For each
    selected person the page returns its consent records for ``consent_purposes`` (plus every
    restriction record, purpose ``"*"``) and its active attributes named in
    ``attribute_names``, still sealed: the store never decrypts and never decides. With a
    ``consent_filter`` and ``consent_purposes`` that purpose alone, a kept person whose records
    reduce to a grant (:func:`consent_grant`) comes with that grant instead of its records.
    """

    event_rules: tuple[EventCountRule, ...] = ()
    attribute_names: tuple[str, ...] = ()
    consent_purposes: tuple[str, ...] = ()
    # A purpose whose reads need a consent grant (its basis is consent and its default deny).
    # Persons whose current consent for it cannot allow (see :func:`consent_exclusion`) are
    # counted by reason in the page (``MemberScanPage.excluded``), nothing loaded: still scanned
    # in id order, so paging, ``scanned`` and the denial counts of the audit are what a full
    # load would give, without reading their records or attributes. ``None``: no such filter.
    consent_filter: str | None = None
    # Whether rows carry the person's ``created_at`` and ``last_seen`` (retention asks for
    # them). An audience or feature scan decides on consents and attributes alone, and with
    # event rules the times cost a lookup of every selected person in the persons table (two
    # random seeks each, ~0.5 s of a cold scan at a million persons): not read unless asked.
    person_times: bool = False


class ConsentExclusion(StrEnum):
    """Why a member scan left a person out without loading it (its consent cannot allow).

    The values are the policy engine's consent reasons for the same states
    (:class:`privacy.consent.state.ConsentReason`), so the audit counts them alike.
    """

    NO_CONSENT = "no_consent"  # no consent record for the purpose at all
    DENIED = "consent_denied"  # the latest consent decision for the purpose is a denial
    TIE_DENIED = "consent_tie_denied"  # a grant and a denial at the same latest time


# Signals that are not a plain consent decision for the purpose: an objection or its override
# change what a decision means (privacy.consent.state, rules 3-4), so a person holding one is
# never excluded by the store; restriction records ("*") are read on their own.
SPECIAL_CONSENT_SIGNALS = frozenset({"objection", "compelling_grounds"})


def consent_exclusion(records: Collection[ConsentRecord], purpose: str) -> ConsentExclusion | None:
    """Whether a person with consent ``records`` is left out of a scan filtered on ``purpose``.

    The reference definition of the store-side filter (the SQLite store materializes its inputs
    per person and purpose at write time; the Neo4j adapter applies this function). Never
    excludes a person the policy engine could allow for a consent-based, default-deny purpose:

    * a person with any restriction record is kept (restriction decides first in the engine,
      with a reason of its own);
    * a person with an objection or compelling-grounds record for the purpose is kept;
    * otherwise the latest plain decision for the purpose (by ``at``; a tie denies) must be a
      grant, else the person is excluded with the reason the engine would give; no record at
      all is ``no_consent``.
    """
    top = _latest_plain(records, purpose)
    if top is None:
        return None
    if not top:
        return ConsentExclusion.NO_CONSENT
    at_top = {record.granted for record in top}
    if at_top == {True}:
        return None
    return ConsentExclusion.TIE_DENIED if len(at_top) > 1 else ConsentExclusion.DENIED


def _latest_plain(records: Collection[ConsentRecord], purpose: str) -> list[ConsentRecord] | None:
    """The plain decisions for ``purpose`` at the latest time among ``records`` (``[]``: none),
    or ``None`` when a restriction record or an objection/compelling-grounds record for the
    purpose means the store does not judge the person (:func:`consent_exclusion`,
    :func:`consent_grant`)."""
    latest: int | None = None
    top: list[ConsentRecord] = []
    for record in records:
        if record.purpose == RESTRICTION_PURPOSE and record.signal is ConsentSignal.RESTRICTION:
            return None
        if record.purpose != purpose or record.signal is ConsentSignal.RESTRICTION:
            continue
        if record.signal.value in SPECIAL_CONSENT_SIGNALS:
            return None
        at = _epoch_ms(record.at)
        if latest is None or at > latest:
            latest, top = at, [record]
        elif at == latest:
            top.append(record)
    return top


@quick_init
@dataclass(frozen=True, slots=True)
class ConsentGrant:
    """A person's standing consent grant for ``purpose``, as a member scan hands it over
    instead of the person's consent records (:attr:`MemberRow.grant`).

    It says: the person holds no restriction record and no objection or compelling-grounds
    record for the purpose, and the latest plain decision for it (by ``at``) is a grant by every
    record at that time. ``record_id``, ``at`` and ``signal`` are the deciding record's: the
    first of those grants in the order :meth:`~identity.store.port.GraphTransaction.person_consents`
    returns records (``at``, ``recorded_at``, record id), the record the policy engine names and
    whose age and signal (TCF) decide expiry. So the engine decides exactly as from the records
    (:func:`privacy.consent.state.grant_state`, property-tested against ``consent_state``).

    Why (issue 14): a consent-filtered audience keeps ~24k persons of a million with ~37k
    records; reading those records (7.7 MB of JSON in SQLite) and building a record object each
    was about a third of a cold audience read, to find one fact per person the store already
    keeps current (``consent_current``).
    """

    purpose: str
    record_id: str
    at: datetime
    signal: ConsentSignal


def consent_grant(records: Collection[ConsentRecord], purpose: str) -> ConsentGrant | None:
    """The :class:`ConsentGrant` of a person with consent ``records`` for ``purpose``, or
    ``None`` when its records do not reduce to one (a restriction record, an objection or
    compelling-grounds record for the purpose, no plain record, or a latest plain decision that
    is not a grant by every record at that time): then the engine needs the records.

    The reference definition: the SQLite store keeps the deciding record in its current consent
    state at write time; the Neo4j adapter applies this function to the records it reads.
    """
    top = _latest_plain(records, purpose)
    if not top or not all(record.granted for record in top):
        return None
    deciding = min(top, key=_record_order)
    return ConsentGrant(purpose, deciding.record_id, deciding.at, deciding.signal)


def _record_order(record: ConsentRecord) -> tuple[int, str]:
    # The order of records at one time: recorded_at, then record id (person_consents' order).
    return _epoch_ms(record.recorded_at), record.record_id


def _epoch_ms(moment: datetime) -> int:
    # Both stores keep times in milliseconds: two records are "at the same time" there.
    return int(moment.timestamp() * 1000)


@quick_init
@dataclass(frozen=True, slots=True)
class MemberRow:
    """One person of a member scan page, kept by ``MemberScan.consent_filter`` (or selected
    by a scan without one), with its consent records and sealed attributes. ``created_at`` and
    ``last_seen`` are ``None`` unless the scan asked for them (``MemberScan.person_times``)."""

    person_id: str
    created_at: datetime | None
    last_seen: datetime | None
    consents: tuple[ConsentRecord, ...]
    attributes: tuple[Fact, ...]
    # A scan filtered on a purpose (``MemberScan.consent_filter``) whose ``consent_purposes``
    # are that purpose alone hands a kept person whose consent reduces to a grant as this, with
    # no ``consents`` (see :class:`ConsentGrant`); ``None``: the records are in ``consents``.
    grant: ConsentGrant | None = None


@dataclass(frozen=True, slots=True)
class MemberScanPage:
    """One page of a member scan (:meth:`identity.store.port.GraphTransaction.member_page`).

    ``scanned`` persons were selected after the page's start, in person id order, the last of
    them ``last_person_id`` (where the next page starts; ``""`` when none was: the scan is
    over). Of those, the persons ``MemberScan.consent_filter`` left out are only counted, by
    reason, in ``excluded`` (nothing of theirs is loaded); the others are ``rows``. Without a
    filter every selected person is a row.

    Why counts, not rows (issue 14): most persons of a consent-filtered audience scan are left
    out (~33k of ~57k at a million persons), and a row object each, only to be counted by the
    caller, was a tenth of the cold scan's Python work in the store.
    """

    rows: tuple[MemberRow, ...]
    scanned: int
    last_person_id: str
    excluded: Mapping[ConsentExclusion, int]
