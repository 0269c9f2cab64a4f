"""Deterministic identity resolution.

An event names identifiers seen together. Each one is normalized (by the caller), hashed with the
keyring, and looked up under every known key. The event's identifiers are then taken in priority
order (``policies/identity.yaml``), highest first; each one joins the growing set unless joining
would give the resulting person more identifiers of some type than ``max_per_person`` allows. An
identifier that would break a limit is *not linked* and the refusal is recorded: because the
order is by priority, it is always the lowest-priority conflicting identifier that is dropped.
Blocked values (test emails, all-zero ad ids) are refused before that. Exactly ``max_per_person``
is allowed; a person already over a limit (the limit was lowered after it was linked) may still
link identifiers that do not add to that type. Every identifier of an event is either linked or
refused with a reason: none is dropped silently.

When an event joins several persons, **the survivor** is the person with the most identifiers
(the fewest rows move); between persons of equal size, the one reached first in priority order
(the person of the event's highest-priority identifier). Person ids never decide, so the
survivor is the same on every run and every backend.

A batch of events is resolved in one store transaction: one lookup for every digest of the batch,
one query for the type counts of every person touched, resolution in memory (events later in the
batch see what earlier ones did), and one set-based write. That is what makes bulk ingest fast
while keeping "one ingest = one transaction".

Events may carry a ``message_id`` (API, bulk files, stream): its keyed digest is looked up and
recorded in the same transaction, so an event resent or redelivered after a crash is answered
``duplicate`` and changes nothing (exactly-once effect per message within the message window).
With ``outbound_events`` on, every stored consent record also puts a ``consent.changed`` event in
the graph's outbox, in the same transaction.

An operator's unlink that splits a person records a do-not-link rule between the two
identifiers; an event that would put both ends of a rule into one person has the identifier
that would join them refused (``do_not_link``), like a limit refusal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from identity import clusters, outbound
from identity.errors import (
    AnchorKeyDestroyedError,
    ConfigurationError,
    IdentifierNotFoundError,
    NotLinkedError,
    RuleNotFoundError,
)
from identity.hashing import HashedIdentifier, HmacSha256, Keyring
from identity.identifiers import NormalizedIdentifier
from identity.model import (
    RESTRICTION_PURPOSE,
    ChangeSet,
    ConsentRecord,
    ConsentSignal,
    DoNotLinkEntry,
    DoNotLinkRule,
    EventOutcome,
    Explanation,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    IdentityEvent,
    Link,
    OutboundEvent,
    Outcome,
    PersonRecord,
    Records,
    Refusal,
    RefusalReason,
    UnlinkResult,
    new_consent_id,
    new_fact_id,
    new_node_id,
    new_person_id,
    new_rule_id,
)
from identity.policy import IdentityPolicy
from identity.store.port import GraphStore, GraphTransaction

_Key = tuple[str, bytes]  # (type, digest under the primary key): one identifier within a batch
MESSAGE_ID_INFO = b"idgraph-message-id/1"
_MESSAGE_DIGEST_BYTES = 16  # 128 bits: collisions out of reach for any message volume


class FactSealer(Protocol):
    """Encrypts fact payloads bound to their anchor and field (the vault implements this)."""

    def encrypt_many(
        self, items: Sequence[tuple[str, str, bytes]], *, new_owners: Collection[str] = ()
    ) -> list[bytes]:
        """Seal each ``(owner, field, plaintext)``; the owner is the anchor node id.
        ``new_owners``: anchors made in this batch (no key of theirs can exist yet)."""
        ...

    def decrypt_many(self, items: Sequence[tuple[str, str, bytes]]) -> list[bytes]:
        """Open each ``(owner, field, blob)`` sealed by :meth:`encrypt_many`."""
        ...

    def decrypt_readable(self, items: Sequence[tuple[str, str, bytes]]) -> list[bytes | None]:
        """:meth:`decrypt_many`, ``None`` for an item whose owner's data key is gone."""
        ...

    def shredded_owners(self, owners: Collection[str]) -> set[str]:
        """Those of ``owners`` whose data key was shredded (they can never take a new value)."""
        ...


class OwnerReservations(Protocol):
    """Node ids whose data keys already exist durably (the vault's key pool, see
    :meth:`privacy.keys.vault.Vault.reserve_owners`): a batch that creates anchors with sealed
    values then writes no key-file commit of its own, only the graph's."""

    def reserve_owners(self, count: int, make_owner: Callable[[], str]) -> list[str]:
        """``count`` owner ids with stored keys, or ``[]`` (keys are then made at seal time)."""
        ...

    def release_owners(self, owners: Sequence[str], *, used: Sequence[str] = ()) -> None:
        """Give back reserved ids a committed batch did not use; ``used``: those it used."""
        ...


@dataclass(slots=True)
class _KeyedIds:
    """The reserved node ids of one ingest call, handed out in order; restarted with each
    attempt of the transaction (a retried attempt committed nothing before it)."""

    reserved: list[str]
    fallback: Callable[[], str]
    used: int = 0

    def restart(self) -> None:
        self.used = 0

    def take(self) -> str:
        if self.used < len(self.reserved):
            self.used += 1
            return self.reserved[self.used - 1]
        return self.fallback()  # more than reserved (cannot happen): key made at seal time

    def unused(self) -> list[str]:
        return self.reserved[self.used :]

    def used_ids(self) -> list[str]:
        return self.reserved[: self.used]


@dataclass(frozen=True, slots=True)
class RehashPage:
    """One page of a bulk re-hash: how many nodes moved to the primary key, and the cursor."""

    rehashed: int
    without_raw_value: int  # no kept value, or one that is unreadable (counted in both)
    last_node_id: str | None  # None when there is nothing after this page
    unreadable_raw_value: int = 0  # a kept value whose data key was shredded


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Prepared:
    """One identifier of one event after hashing."""

    position: int
    identifier_type: str
    priority: int
    primary: HashedIdentifier
    candidates: tuple[HashedIdentifier, ...]
    blocked: str | None
    key: _Key  # (type, primary digest): the identifier within the batch
    raw: str | None = field(default=None, repr=False)  # normalized value, only if kept
    # Later positions of the same identifier in the event: it counts once, and shares the fate
    # of this first occurrence (a refusal is reported at every position it was sent at).
    repeats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PreparedEvents:
    """Events made ready to write (:meth:`ResolutionEngine.prepare`): identifiers and message
    ids hashed, node ids with stored data keys reserved. Opaque outside the engine."""

    events: tuple[IdentityEvent, ...]
    prepared: list[list[_Prepared]] = field(repr=False)
    digests: list[tuple[bytes, ...] | None] = field(repr=False)
    keyed: _KeyedIds | None = field(default=None, repr=False)


_PendingFact = tuple[str, FactKind, str, str, datetime, bytes, FactStatus, tuple[str, ...], str]


def _priority_order(p: _Prepared) -> tuple[int, int]:
    return (-p.priority, p.position)


@dataclass(slots=True)
class _BatchState:
    """In-memory view of the part of the graph a batch touches."""

    nodes: dict[_Key, IdentifierNode] = field(default_factory=dict)
    new_nodes: dict[_Key, str] = field(default_factory=dict)  # key -> node id, created here
    node_person: dict[str, str] = field(default_factory=dict)  # node id -> person (maybe merged)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    parent: dict[str, str] = field(default_factory=dict)  # union-find over person ids
    existing_persons: set[str] = field(default_factory=set)
    created_persons: dict[str, datetime] = field(default_factory=dict)
    persons_seen: dict[str, datetime] = field(default_factory=dict)
    touched: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    rehashed: dict[str, HashedIdentifier] = field(default_factory=dict)
    # (a, b, source) -> the link's fields (a, b, source, first_at, last_at), a < b: a Link's
    # fields, built into Links only if read (see Records).
    links: dict[tuple[str, str, str], tuple[str, str, str, datetime, datetime]] = field(
        default_factory=dict
    )
    new_node_rows: dict[str, tuple[HashedIdentifier, datetime, datetime]] = field(
        default_factory=dict
    )
    # Facts to seal and store at the end of the batch, flat (one tuple, no object per value):
    # (anchor node id, kind, name, category, at, payload, status, pii, source)
    facts: list[_PendingFact] = field(default_factory=list)
    consents: list[ConsentRecord] = field(default_factory=list)
    suppressed: set[_Key] = field(default_factory=set)  # erased identifiers: refused
    # Nodes whose data key was shredded (learnt from the sealer, see _resolve_batch): refused.
    shredded: frozenset[str] = frozenset()
    restricted: dict[str, bool] = field(default_factory=dict)  # person -> restricted (lazy)
    # Do-not-link rules touching the persons of the batch: (node a, node b), and the person
    # each rule end was in when loaded (``find`` follows it through merges of the batch).
    rules: list[tuple[str, str]] = field(default_factory=list)
    rule_ends: dict[str, str] = field(default_factory=dict)
    lookup_restricted: Callable[[str], bool] = lambda _: False  # reads it in the batch's tx
    keyed_ids: _KeyedIds | None = None  # ids with stored keys, for new anchors of sealed values

    def find(self, person: str) -> str:
        """The person ``person`` is now part of (union-find root), compressing the path.

        Every node on the path is pointed at the root, so the next ``find`` of any of them is
        one step. (A tuple assignment ``person, parent[person] = parent[person], root`` would
        bind ``person`` first and so repoint the *ancestor*, leaving the node's own pointer.)
        """
        root = person
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while person != root:
            ancestor = self.parent[person]
            self.parent[person] = root
            person = ancestor
        return root


@dataclass(slots=True)
class _Selection:
    """What one event may link: accepted identifiers in priority order, and refusals."""

    # (batch key, existing node id or None for a new identifier, item)
    accepted: list[tuple[_Key, str | None, _Prepared]] = field(default_factory=list)
    union: list[str] = field(default_factory=list)  # root persons joined, in acceptance order
    counts: Counter[str] = field(default_factory=Counter)  # identifiers per type once joined
    refusals: list[Refusal] = field(default_factory=list)

    def refuse(
        self, p: _Prepared, reason: RefusalReason, detail: str, event: IdentityEvent
    ) -> None:
        # One refusal per position the identifier was sent at: a caller reads "not refused" as
        # "linked", so a repeat must not look linked when its first occurrence was refused.
        # The store keeps one row per identifier and event (see _changes).
        self.refusals.extend(
            Refusal(p.primary, reason, detail, event.source, event.occurred_at, position)
            for position in (p.position, *p.repeats)
        )


def _restricted(tx: GraphTransaction, person_id: str) -> bool:
    """Whether the latest restriction record of the person restricts (a tie restricts); the
    rule of :func:`privacy.consent.state.is_restricted`, which the domain cannot import."""
    return _restricts(tx.person_consents(person_id, (RESTRICTION_PURPOSE,)))


def _restricts(person_records: Sequence[ConsentRecord]) -> bool:
    """:func:`_restricted` of a person's records (those :meth:`person_consents` returns)."""
    records = [
        r
        for r in person_records
        if r.purpose == RESTRICTION_PURPOSE and r.signal is ConsentSignal.RESTRICTION
    ]
    if not records:
        return False
    top = max(r.at for r in records)
    return not all(r.granted for r in records if r.at == top)


class ResolutionEngine:
    """Links identifiers into persons and answers resolve / explain / unlink."""

    def __init__(
        self,
        store: GraphStore,
        keyring: Keyring,
        policy: IdentityPolicy,
        clock: Callable[[], datetime] = _utcnow,
        person_ids: Callable[[], str] = new_person_id,
        node_ids: Callable[[], str] = new_node_id,
        sealer: FactSealer | None = None,
        *,
        owner_reservations: OwnerReservations | None = None,
        person_decision_purposes: Sequence[str] = (),
        keep_restricted_apart: bool = True,
        outbound_events: bool = False,
        message_window: timedelta | None = None,
        rule_ids: Callable[[], str] = new_rule_id,
        fast_new_events: bool = True,
    ) -> None:
        self._store = store
        # Events whose identifiers are all new skip the general selection (see _all_new); off
        # only to prove both paths write the same graph.
        self._fast_new_events = fast_new_events
        # How long an applied message id is remembered; None: until forget_messages is called.
        self._message_window = message_window
        self._rule_ids = rule_ids
        # The purposes whose objection records are looked up to carry them across a split
        # (restriction records, purpose "*", are always carried): see :meth:`unlink`.
        # Ingest during a restriction (Art. 18): new data is stored on the restricted person (and
        # not used: every read is denied), but with this on, an event never merges a restricted
        # person with another person (the identifier that would is refused, reason
        # "restricted"). Off: merges happen as usual (the merged person is restricted as a
        # whole, since restriction records follow every identifier of the person).
        self._keep_restricted_apart = keep_restricted_apart
        self._decision_purposes = tuple(
            dict.fromkeys((RESTRICTION_PURPOSE, *person_decision_purposes))
        )
        self._keyring = keyring
        self._policy = policy
        # Per type, what preparing an identifier reads of the policy (priority, keep_raw, blocked
        # values and patterns), in one tuple: _prepare runs once per identifier of every event.
        self._screens = {
            name: (rules.priority, rules.keep_raw, *policy.blocklist(name))
            for name, rules in policy.types.items()
        }
        self._limits = {name: rules.max_per_person for name, rules in policy.types.items()}
        self._clock = clock
        self._person_ids = person_ids
        self._node_ids = node_ids
        self._sealer = sealer
        # New anchors of sealed values take ids whose keys are already stored (one durable
        # commit per batch instead of a key-file commit plus the graph commit).
        self._reservations = owner_reservations
        self._outbound = outbound_events
        # Message ids are keyed-hashed before they are stored: a sender may put anything in
        # one (an email, an order number), and a plain hash of a guessable value is no cover.
        # A subkey of its own (HKDF info), so a message digest never equals an identifier hash.
        # One MAC per known hash key, primary first: new ids are recorded under the primary
        # key's subkey, and looked up under every key, so a redelivery that straddles a hash-key
        # rotation (recorded under the old key, redelivered after the new one became primary)
        # is still a duplicate. Retire an old key only after the dedup window has passed.
        self._message_macs = tuple(
            HmacSha256(subkey) for _, subkey in keyring.derive_keys(MESSAGE_ID_INFO)
        )

    def message_digest(self, source: str, message_id: str) -> bytes:
        """The stored form of a message id: keyed (primary key), scoped to its source."""
        return self.message_digests(source, message_id)[0]

    def message_digests(self, source: str, message_id: str) -> tuple[bytes, ...]:
        """The message id's digest under every known hash key, primary first (lookups)."""
        encoded = source.encode()
        data = len(encoded).to_bytes(4, "big") + encoded + message_id.encode()
        return tuple(mac.digest(data)[:_MESSAGE_DIGEST_BYTES] for mac in self._message_macs)

    @property
    def policy(self) -> IdentityPolicy:
        """The identity policy (types, limits, blocked values)."""
        return self._policy

    @property
    def keyring(self) -> Keyring:
        """The keyring used for hashing (primary key first)."""
        return self._keyring

    # -- ingest -------------------------------------------------------------------------------

    def ingest(self, events: Sequence[IdentityEvent]) -> list[EventOutcome]:
        """Resolve ``events`` in order, in one transaction. Returns one outcome per event."""
        if not events:
            return []
        return self.ingest_prepared([self.prepare(events)])

    def prepare(self, events: Sequence[IdentityEvent]) -> PreparedEvents:
        """The work of :meth:`ingest` that needs no transaction: hash every identifier and
        message id, and reserve node ids whose data keys are already stored. Reads and writes
        no graph; :meth:`ingest_prepared` writes the result.

        Why apart: concurrent callers share one writer (``identity.group_commit``), and all
        they do is serialized behind it. Prepared by each caller before it queues, this work
        overlaps the writer's commit (its fsync holds no GIL) instead of lengthening the
        writer's turn; the transaction is the only part left to the writer.
        """
        if self._sealer is None and any(event.facts for event in events):
            raise ConfigurationError("facts need a sealer (the vault); none is configured")
        prepared = [self._prepare(event) for event in events]
        digests = [
            self.message_digests(e.source, e.message_id) if e.message_id is not None else None
            for e in events
        ]
        return PreparedEvents(
            tuple(events), prepared, digests, self._reserve_keyed_ids(events, prepared)
        )

    def ingest_prepared(
        self,
        parts: Sequence[PreparedEvents],
        then: Callable[[GraphTransaction, list[EventOutcome]], None] | None = None,
    ) -> list[EventOutcome]:
        """Resolve prepared events (:meth:`prepare`; several calls' in the order given, each
        seeing the ones before it, as if committed one after another) in one transaction.
        Returns one outcome per event. A part's reserved ids are used once: prepare again to
        write the same events after a committed write.

        ``then(tx, outcomes)`` runs last in the same transaction (the ingest journal removes
        the batches it applied: both commit or neither does); if it raises, nothing is written.
        """
        if len(parts) == 1:
            part = parts[0]
            events, prepared, digests, keyed = part.events, part.prepared, part.digests, part.keyed
        else:
            events = tuple(e for part in parts for e in part.events)
            prepared = [items for part in parts for items in part.prepared]
            digests = [d for part in parts for d in part.digests]
            reserved = [o for part in parts if part.keyed is not None for o in part.keyed.reserved]
            keyed = _KeyedIds(reserved, self._node_ids) if reserved else None
        if not events:
            return []

        def resolve(tx: GraphTransaction) -> list[EventOutcome]:
            if keyed is not None:
                keyed.restart()
            if not any(digests):
                done = self._resolve_batch(tx, events, prepared, keyed=keyed)
            else:
                done = self._resolve_deduplicated(tx, events, prepared, digests, keyed)
            if then is not None:
                then(tx, done)
            return done

        outcomes = self._store.write(resolve)
        # Ids of a write that failed are dropped, not given back: whether the commit happened
        # is not always knowable, and an unused key is harmless, a reused id is not. The ids a
        # committed write used are named too: their keys need no crash mark any more.
        if keyed is not None and self._reservations is not None:
            self._reservations.release_owners(keyed.unused(), used=keyed.used_ids())
        return outcomes

    def _reserve_keyed_ids(
        self, events: Sequence[IdentityEvent], prepared: list[list[_Prepared]]
    ) -> _KeyedIds | None:
        """Reserve enough ids with stored keys for every new anchor the batch may seal a value
        under: each kept raw identifier, and each event's hub when the event has facts (an
        upper bound: identifiers that exist already take none)."""
        if self._reservations is None or self._sealer is None:
            return None
        bound = sum(
            sum(1 for p in items if p.raw is not None and not p.blocked) + (1 if e.facts else 0)
            for e, items in zip(events, prepared, strict=True)
        )
        reserved = self._reservations.reserve_owners(bound, self._node_ids) if bound else []
        return _KeyedIds(reserved, self._node_ids) if reserved else None

    def _resolve_deduplicated(
        self,
        tx: GraphTransaction,
        events: Sequence[IdentityEvent],
        prepared: list[list[_Prepared]],
        digests: list[tuple[bytes, ...] | None],
        keyed: _KeyedIds | None = None,
    ) -> list[EventOutcome]:
        """Resolve the events whose message id is new; the others are ``duplicate`` (no-ops).

        Both the lookup and the record of the new ids are in this transaction: a retry of the
        transaction sees the same answer, and "applied" can never be stored without the change.
        An id is looked up under every known key and recorded under the primary one.
        With a message window, ids older than it are forgotten first, in this transaction: the
        window then holds exactly (no scheduler needed, and an id resent after the window is
        applied and recorded afresh). The delete is a range on the ``seen_at`` index, and each
        row is deleted once, so it costs nothing when there is nothing to forget.
        """
        if self._message_window is not None:
            tx.forget_messages(self._clock() - self._message_window)
        seen = tx.seen_messages([d for ds in digests if ds is not None for d in ds])
        fresh: list[int] = []
        recorded: list[bytes] = []
        for index, candidates in enumerate(digests):
            if candidates is not None:
                if not seen.isdisjoint(candidates):
                    continue  # applied before, or earlier in this same batch
                seen.add(candidates[0])
                recorded.append(candidates[0])
            fresh.append(index)
        if len(fresh) == len(events):  # nothing applied before (a bulk file's first run)
            return self._resolve_batch(tx, events, prepared, tuple(recorded), keyed=keyed)
        results = self._resolve_batch(
            tx,
            [events[i] for i in fresh],
            [prepared[i] for i in fresh],
            tuple(recorded),
            keyed=keyed,
        )
        duplicate = EventOutcome(Outcome.DUPLICATE, None, (), 0, ())  # frozen: one is enough
        outcomes = [duplicate] * len(events)
        for index, outcome in zip(fresh, results, strict=True):
            outcomes[index] = outcome
        return outcomes

    def _prepare(self, event: IdentityEvent) -> list[_Prepared]:
        out: list[_Prepared] = []
        seen: dict[_Key, _Prepared] = {}
        # The policy's rules and blocklist and the keyring's hashing, inlined: this runs once per
        # identifier of every event (a bulk file's million), and a method call each for the
        # rules, the candidates and the blocked check was a few % of the bulk reader's CPU. The
        # results are those of IdentityPolicy.rules / blocked_reason and Keyring.candidates
        # (tests/identity/test_prepare_inline.py compares them).
        screens = self._screens
        single = self._keyring.single_key
        for position, identifier in enumerate(event.identifiers):
            kind, value = identifier.type, identifier.value
            screen = screens.get(kind)
            if screen is None:
                self._policy.rules(kind)  # raises UnknownIdentifierTypeError
                raise AssertionError("unreachable")  # pragma: no cover - every type is screened
            priority, keep_raw, blocked_values, blocked_patterns = screen
            if single is not None:  # no key rotation under way: one candidate
                primary = HashedIdentifier(
                    kind, single[0], single[1].digest(f"{kind}:{value}".encode())
                )
                candidates: tuple[HashedIdentifier, ...] = (primary,)
            else:
                candidates = self._keyring.candidates(identifier)
                primary = candidates[0]
            key = (kind, primary.digest)
            first = seen.get(key)
            if first is not None:  # the same identifier twice in one event counts once
                first.repeats = (*first.repeats, position)
                continue
            blocked: str | None = None
            if blocked_values and value.casefold() in blocked_values:
                blocked = "blocked_value"
            else:
                for pattern in blocked_patterns:
                    if pattern.search(value):
                        blocked = "blocked_pattern"
                        break
            seen[key] = prepared = _Prepared(
                position,
                kind,
                priority,
                primary,
                candidates,
                blocked,
                key,
                value if keep_raw else None,
            )
            out.append(prepared)
        # Highest priority first; the order in the event breaks ties, so results are repeatable.
        if len(out) > 1:
            out.sort(key=_priority_order)
        return out

    def _resolve_batch(
        self,
        tx: GraphTransaction,
        events: Sequence[IdentityEvent],
        prepared: list[list[_Prepared]],
        messages: tuple[bytes, ...] = (),
        *,
        keyed: _KeyedIds | None = None,
    ) -> list[EventOutcome]:
        shredded: frozenset[str] | None = None
        while True:
            state = _BatchState(keyed_ids=keyed, shredded=shredded or frozenset())
            self._load(tx, prepared, state)
            if shredded is None:
                # Nodes of the batch whose data key was shredded (an operator's shred, a graph
                # backup restored after an erasure) are refused as anchors up front, fact-less
                # events too: such a node is an erased identifier, and linking it or recording
                # consents on it would bring part of an erased person back. One key-file read
                # per batch that finds existing nodes (one row when nothing was ever shredded).
                shredded = state.shredded = self._shredded_nodes(state)
            state.lookup_restricted = lambda person: _restricted(tx, person)
            outcomes = [
                self._resolve_event(event, items, state)
                for event, items in zip(events, prepared, strict=True)
            ]
            try:
                changes, final = self._changes(state, outcomes)
                break
            except AnchorKeyDestroyedError as exc:
                # An anchor of the batch was shredded after the check above (a shred committed
                # meanwhile; the sealer checks again in the key file's write transaction). The
                # vault never makes it a new key (a shred is irreversible), so the batch is
                # resolved again, in this transaction (nothing is written yet: sealing comes
                # before apply), with those identifiers refused like suppressed ones
                # ("shredded"): the event's facts go to its next accepted identifier or are
                # dropped. Each round refuses at least one more node.
                known = {node.node_id for node in state.nodes.values()}
                gone = known.intersection(exc.owners) - shredded
                if not gone:
                    raise
                shredded |= gone
                if keyed is not None:
                    keyed.restart()
        published = (*self._consent_events(state), *self._merge_events(changes.merged))
        tx.apply(replace(changes, messages=messages, outbound=published))
        # Only outcomes whose person was merged into another later in the batch change (rare):
        # a dataclass replace per outcome would cost more than the whole event's resolution.
        # A person that is no key of the union-find's parents is its own root (no call).
        parent, find = state.parent, state.find
        if not parent:
            return final
        return [
            o
            if o.person_id not in parent or o.person_id is None or find(o.person_id) == o.person_id
            else replace(o, person_id=find(o.person_id))
            for o in final
        ]

    def _shredded_nodes(self, state: _BatchState) -> frozenset[str]:
        """The found nodes of the batch whose data key was shredded (none without a vault)."""
        if self._sealer is None or not state.nodes:
            return frozenset()
        return frozenset(
            self._sealer.shredded_owners([node.node_id for node in state.nodes.values()])
        )

    def _load(
        self, tx: GraphTransaction, prepared: list[list[_Prepared]], state: _BatchState
    ) -> None:
        # Every candidate of the batch once. Primary digests are told apart by their batch key
        # (type, digest: one key id), a tuple that hashes in C; hashing the HashedIdentifiers
        # themselves (a generated __hash__ per identifier) was a few % of a bulk batch. Older
        # keys' candidates exist only during a key rotation.
        primaries = {p.key: p.primary for items in prepared for p in items if not p.blocked}
        wanted = list(primaries.values())
        if self._keyring.single_key is None:  # a rotation: older keys' candidates too
            wanted.extend(
                {c for items in prepared for p in items if not p.blocked for c in p.candidates[1:]}
            )
        # Erased identifiers stay erased (privacy invariant 4): one that is on the suppression
        # list under any key (rotation) is refused like a blocked value, before it can be found
        # or created. The event's other identifiers are resolved as usual.
        # (Kept in the batch state, not on the prepared items: a retried transaction reads the
        # list afresh.)
        suppressed = tx.suppressed(wanted) if wanted else set()
        if suppressed:
            state.suppressed.update(
                p.key
                for items in prepared
                for p in items
                if not suppressed.isdisjoint(p.candidates)
            )
            wanted = [c for c in wanted if c not in suppressed]
        found = tx.find_identifiers(wanted) if wanted else []
        by_hash = {node.hashed: node for node in found}
        # Bulk batches are mostly new identifiers: only those with a digest found are looked at.
        found_digests = {node.hashed.digest for node in found}
        primary_id = self._keyring.primary_key_id
        for items in prepared if found else ():
            for p in items:
                key = p.key
                if key[1] not in found_digests and (
                    len(p.candidates) == 1
                    or found_digests.isdisjoint(c.digest for c in p.candidates)
                ):
                    continue
                if p.blocked or key in state.nodes or key in state.suppressed:
                    continue
                node = next((by_hash[c] for c in p.candidates if c in by_hash), None)
                if node is None:
                    continue
                state.nodes[key] = node
                state.node_person[node.node_id] = node.person_id
                state.existing_persons.add(node.person_id)
                if node.hashed.key_id != primary_id:
                    # Lazy re-hash: found under an older key, stored under the primary from now on.
                    state.rehashed[node.node_id] = p.primary
        if self._keep_restricted_apart and found:
            self._load_restrictions(tx, prepared, state)
        persons = sorted(state.existing_persons)
        for person, counts in tx.type_counts(persons).items():
            state.counts[person] = Counter(counts)
        # Only rules with an end in a person of the batch can be broken by it: new nodes have
        # none, and every merge starts from existing persons.
        for entry in tx.do_not_link_rules(persons) if persons else ():
            state.rules.append((entry.rule.a, entry.rule.b))
            state.rule_ends[entry.rule.a] = entry.person_a
            state.rule_ends[entry.rule.b] = entry.person_b
        for person in persons:
            state.counts.setdefault(person, Counter())

    @staticmethod
    def _load_restrictions(
        tx: GraphTransaction, prepared: list[list[_Prepared]], state: _BatchState
    ) -> None:
        """Whether each existing person that an event names beside another existing person is
        restricted, in one read: the merges an event asks for outright. (A merge that only
        the batch's own events lead to is looked up when it happens, see
        :meth:`_restricted_merge`.) A bulk file merges a few per cent of its events; one
        read per person, each a statement, had been a fiftieth of the writer's CPU."""
        nodes = state.nodes
        joined: set[str] = set()
        for items in prepared:
            first: str | None = None
            for p in items:
                node = nodes.get(p.key)
                if node is None:
                    continue
                if first is None:
                    first = node.person_id
                elif node.person_id != first:
                    joined.update((first, node.person_id))
        if not joined:
            return
        records = tx.persons_consents(joined, (RESTRICTION_PURPOSE,))
        state.restricted.update((person, _restricts(records.get(person, ()))) for person in joined)

    def _limit_broken(self, before: Counter[str], after: Counter[str]) -> str | None:
        """The first type whose count grows beyond its limit, or ``None``."""
        for identifier_type, count in after.items():
            limit = self._policy.types[identifier_type].max_per_person
            if count > limit and count > before.get(identifier_type, 0):
                return identifier_type
        return None

    def _resolve_event(
        self, event: IdentityEvent, items: list[_Prepared], state: _BatchState
    ) -> EventOutcome:
        if self._fast_new_events:
            counts = self._all_new(items, state)
            if counts is not None:
                return self._create(event, items, counts, state)
        selection = self._select(event, items, state)
        if not selection.accepted:
            return EventOutcome(
                Outcome.REFUSED,
                None,
                (),
                0,
                tuple(selection.refusals),
                facts_dropped=len(event.facts),
                consents_dropped=len(event.consents),
            )
        return self._join(event, selection, state)

    def _all_new(self, items: list[_Prepared], state: _BatchState) -> Counter[str] | None:
        """The type counts of an event that :meth:`_select` would accept whole as a new person,
        or ``None`` when the event needs the general path.

        That is an event whose identifiers are none of them blocked, suppressed, in the graph,
        or created earlier in this batch, and that stays within every type's limit: with no
        existing person to join there is no merge, so no restriction, do-not-link or limit
        refusal can happen, and :meth:`_select` would accept every identifier in priority
        order. (Bulk files are mostly such events.) A later event of the batch naming one of
        these identifiers finds it in ``state.new_nodes`` and takes the general path.
        """
        if not items:
            return None
        known, created, suppressed = state.nodes, state.new_nodes, state.suppressed
        # Counted in the same pass, with the dict's own get: Counter(iterable) checks whether
        # its argument is a Mapping (an ABC check) on every event of a bulk file.
        counts: Counter[str] = Counter()
        count_of, limits = counts.get, self._limits
        for p in items:
            key = p.key
            if p.blocked or key in known or key in created or key in suppressed:
                return None
            kind = p.identifier_type
            count = count_of(kind, 0) + 1
            if count > limits[kind]:
                return None
            counts[kind] = count
        return counts

    def _create(
        self, event: IdentityEvent, items: list[_Prepared], counts: Counter[str], state: _BatchState
    ) -> EventOutcome:
        """:meth:`_join` for an event :meth:`_all_new` accepted whole: a new person with every
        identifier of the event. Ids are drawn in the same order as :meth:`_join` draws them,
        so both paths write the same graph (``tests/identity/test_fast_path.py``)."""
        at = event.occurred_at
        source = event.source
        survivor = self._person_ids()
        state.created_persons[survivor] = at
        state.counts[survivor] = counts
        state.persons_seen[survivor] = at
        # _new_node and _link_star inlined (most events of a bulk file come here: a method call
        # per identifier and a lookup of links that cannot exist yet were a tenth of the
        # writer's Python). Same ids in the same order, same rows, same facts.
        keyed, node_ids = state.keyed_ids, self._node_ids
        new_nodes, node_person, node_rows = state.new_nodes, state.node_person, state.new_node_rows
        facts, links = state.facts, state.links
        sealed_hub = bool(event.facts)
        hub = ""
        for p in items:
            raw = p.raw
            # The hub (first) anchors the event's facts; a kept raw value is anchored on its own
            # node: both are sealed, so take an id with a stored key.
            if keyed is not None and (raw is not None or (sealed_hub and not hub)):
                node_id = keyed.take()
            else:
                node_id = node_ids()
            new_nodes[p.key] = node_id
            node_person[node_id] = survivor
            node_rows[node_id] = (p.primary, at, at)
            if raw is not None:
                facts.append(
                    (
                        node_id,
                        FactKind.RAW_IDENTIFIER,
                        p.identifier_type,
                        "identifier",
                        at,
                        raw.encode(),
                        FactStatus.ACTIVE,
                        (),
                        source,
                    )
                )
            if not hub:
                hub = node_id
            elif node_id != hub:
                # Every node is new, so no link between them can exist yet (see _link_star).
                if hub < node_id:
                    links[(hub, node_id, source)] = (hub, node_id, source, at, at)
                else:
                    links[(node_id, hub, source)] = (node_id, hub, source, at, at)
        quarantined = self._attach(event, hub, state)
        return EventOutcome(
            Outcome.CREATED,
            survivor,
            (),
            len(items),
            (),
            len(event.facts) - quarantined,
            quarantined,
            0,
            len(event.consents),
        )

    def _new_node(
        self, event: IdentityEvent, p: _Prepared, person: str, hub: bool, state: _BatchState
    ) -> str:
        """Create the node of a new identifier of ``event`` in ``person``; its id."""
        at = event.occurred_at
        # The hub (first accepted) anchors the event's facts; a kept raw value is anchored on
        # its own node: both are sealed, so take an id with a stored key.
        sealed = p.raw is not None or (hub and bool(event.facts))
        keyed = state.keyed_ids if sealed else None
        node_id = keyed.take() if keyed is not None else self._node_ids()
        state.new_nodes[p.key] = node_id
        state.node_person[node_id] = person
        state.new_node_rows[node_id] = (p.primary, at, at)
        if p.raw is not None:
            state.facts.append(
                (
                    node_id,
                    FactKind.RAW_IDENTIFIER,
                    p.identifier_type,
                    "identifier",
                    at,
                    p.raw.encode(),
                    FactStatus.ACTIVE,
                    (),
                    event.source,
                )
            )
        return node_id

    def _attach(self, event: IdentityEvent, hub: str, state: _BatchState) -> int:
        """Anchor the event's facts and consents on ``hub``; how many facts are quarantined."""
        # Facts are anchored to the highest-priority linked identifier of the event, so a later
        # split keeps them with the part that holds that identifier.
        if not event.facts and not event.consents:
            return 0
        source = event.source
        state.facts.extend(
            (hub, f.kind, f.name, f.category, f.at, f.payload, f.status, f.pii, source)
            for f in event.facts
        )
        recorded_at = self._clock()
        state.consents.extend(
            ConsentRecord(
                new_consent_id(),
                hub,
                c.purpose,
                c.granted,
                c.at,
                recorded_at,
                event.source,
                c.signal,
                c.lawful_basis,
                c.proof,
            )
            for c in event.consents
        )
        return sum(1 for f in event.facts if f.status is FactStatus.QUARANTINED)

    def _select(
        self, event: IdentityEvent, items: list[_Prepared], state: _BatchState
    ) -> _Selection:
        """Decide, in priority order, which identifiers of the event may be linked together."""
        selection = _Selection()
        for p in items:
            if p.blocked:
                selection.refuse(p, RefusalReason(p.blocked), "value is blocked by policy", event)
                continue
            if p.key in state.suppressed:
                selection.refuse(
                    p,
                    RefusalReason.SUPPRESSED,
                    "identifier was erased at the subject's request and is suppressed",
                    event,
                )
                continue
            key = p.key
            node = state.nodes.get(key)
            if node is not None and node.node_id in state.shredded:
                selection.refuse(
                    p,
                    RefusalReason.SHREDDED,
                    "the identifier's data was crypto-shredded (erased); it takes no new data",
                    event,
                )
                continue
            node_id = node.node_id if node else state.new_nodes.get(key)
            if node_id is None:
                tentative = Counter(selection.counts)
                tentative[p.identifier_type] += 1
                limit = self._policy.types[p.identifier_type].max_per_person
                broken = p.identifier_type if tentative[p.identifier_type] > limit else None
                person = None
            else:
                person = state.find(state.node_person[node_id])
                if person in selection.union:
                    selection.accepted.append((key, node_id, p))
                    continue
                if selection.union and self._restricted_merge(state, [person, *selection.union]):
                    selection.refuse(
                        p,
                        RefusalReason.RESTRICTED,
                        "linking would merge a person whose processing is restricted "
                        "(Art. 18) with another person",
                        event,
                    )
                    continue
                if selection.union and self._rule_broken(state, person, selection.union):
                    selection.refuse(
                        p,
                        RefusalReason.DO_NOT_LINK,
                        "linking would join identifiers an operator unlinked "
                        "(a do-not-link rule keeps them apart)",
                        event,
                    )
                    continue
                tentative = selection.counts + state.counts[person]
                # The first identifier accepted joins nothing, so it cannot break a limit.
                broken = (
                    self._limit_broken(selection.counts, tentative) if selection.accepted else None
                )
            if broken is not None:
                limit = self._policy.types[broken].max_per_person
                selection.refuse(
                    p,
                    RefusalReason.LIMIT_EXCEEDED,
                    f"linking would give one person more than {limit} {broken} identifier(s)",
                    event,
                )
                continue
            selection.counts = tentative
            selection.accepted.append((key, node_id, p))
            if person is not None:
                selection.union.append(person)
        return selection

    @staticmethod
    def _rule_broken(state: _BatchState, person: str, union: Sequence[str]) -> bool:
        """Whether joining ``person`` to the persons in ``union`` would put the two ends of a
        do-not-link rule into one person."""
        if not state.rules:
            return False
        joined = {state.find(p) for p in union}
        for a, b in state.rules:
            end_a, end_b = state.find(state.rule_ends[a]), state.find(state.rule_ends[b])
            if (end_a == person and end_b in joined) or (end_b == person and end_a in joined):
                return True
        return False

    def _restricted_merge(self, state: _BatchState, persons: Sequence[str]) -> bool:
        """Whether merging ``persons`` is refused because one of them is restricted. Looked up
        only when a merge of existing persons is about to happen (rare), once per person."""
        if not self._keep_restricted_apart:
            return False
        for person in persons:
            if person not in state.restricted:
                # A person made in this batch is in no store yet: it holds no record.
                state.restricted[person] = (
                    person not in state.created_persons and state.lookup_restricted(person)
                )
            if state.restricted[person]:
                return True
        return False

    def _join(
        self, event: IdentityEvent, selection: _Selection, state: _BatchState
    ) -> EventOutcome:
        """Apply an event's accepted identifiers to the batch state: merge, create, link."""
        at = event.occurred_at
        union = selection.union
        new_count = sum(1 for _, node_id, _ in selection.accepted if node_id is None)
        if union:
            # The largest person survives (fewest rows move); acceptance order breaks ties.
            survivor = max(
                union,
                key=lambda person: (sum(state.counts[person].values()), -union.index(person)),
            )
            if len(union) > 1:
                outcome = Outcome.MERGED
            else:
                outcome = Outcome.LINKED if new_count else Outcome.UNCHANGED
        else:
            survivor = self._person_ids()
            state.created_persons[survivor] = at
            outcome = Outcome.CREATED
        absorbed = tuple(person for person in union if person != survivor)
        for person in absorbed:
            state.parent[person] = survivor
        state.counts[survivor] = selection.counts
        previous = state.persons_seen.get(survivor)
        state.persons_seen[survivor] = at if previous is None else max(previous, at)

        accepted_nodes: list[str] = []
        for _, existing, p in selection.accepted:
            if existing is None:
                node_id = self._new_node(event, p, survivor, not accepted_nodes, state)
            else:
                node_id = existing
                if node_id in state.new_node_rows:
                    hashed, first, last = state.new_node_rows[node_id]
                    state.new_node_rows[node_id] = (hashed, min(first, at), max(last, at))
                else:
                    first, last = state.touched.get(node_id, (at, at))
                    state.touched[node_id] = (min(first, at), max(last, at))
            accepted_nodes.append(node_id)

        self._link_star(accepted_nodes, event.source, at, state)
        hub = accepted_nodes[0]
        quarantined = self._attach(event, hub, state)
        return EventOutcome(
            outcome,
            survivor,
            absorbed,
            new_count,
            tuple(replace(r, anchor_node=hub) for r in selection.refusals),
            facts_stored=len(event.facts) - quarantined,
            facts_quarantined=quarantined,
            consents_recorded=len(event.consents),
        )

    @staticmethod
    def _link_star(nodes: list[str], source: str, at: datetime, state: _BatchState) -> None:
        """Link the first (highest-priority) node to every other: enough to connect them all."""
        if len(nodes) < 2:
            return
        hub = nodes[0]
        for other in nodes[1:]:
            if other == hub:
                continue
            a, b = (hub, other) if hub < other else (other, hub)
            key = (a, b, source)
            known = state.links.get(key)
            if known is None:
                state.links[key] = (a, b, source, at, at)
            else:
                state.links[key] = (a, b, source, min(known[3], at), max(known[4], at))

    def _changes(
        self, state: _BatchState, outcomes: list[EventOutcome]
    ) -> tuple[ChangeSet, list[EventOutcome]]:
        # A person that is no key of the union-find's parents is its own root: checked inline,
        # the call of find() is made only for the (few) persons merged in this batch.
        parent, find = state.parent, state.find
        persons_seen: dict[str, datetime] = {}
        for person, seen in state.persons_seen.items():
            root = find(person) if person in parent else person
            known = persons_seen.get(root)
            persons_seen[root] = known if known is not None and known > seen else seen
        # A person created in this batch is inserted with its final last_seen (that of every
        # person merged into it included), so it needs no UPDATE of its own afterwards.
        new_persons = tuple(
            PersonRecord(person, created, persons_seen.get(person, created))
            for person, created in state.created_persons.items()
            if person not in parent
        )
        merged = {
            person: state.find(person)
            for person in state.existing_persons
            if state.find(person) != person
        }
        node_person = state.node_person
        # Field tuples, not IdentifierNodes (see Records: the store writes rows of them).
        new_nodes = Records(
            IdentifierNode,
            [
                (
                    node_id,
                    hashed,
                    find(person) if (person := node_person[node_id]) in parent else person,
                    first,
                    last,
                )
                for node_id, (hashed, first, last) in state.new_node_rows.items()
            ],
        )
        # One row per refused identifier and event: the repeats of one identifier in an event
        # are equal refusals (position is not compared) and are stored once.
        refusals = tuple(r for o in outcomes if o.refusals for r in dict.fromkeys(o.refusals))
        changes = ChangeSet(
            facts=self._seal(state.facts, state.new_node_rows.keys()),
            new_persons=new_persons,
            new_nodes=new_nodes,
            rehashed=state.rehashed,
            touched=state.touched,
            merged=merged,
            persons_seen={p: s for p, s in persons_seen.items() if p in state.existing_persons},
            links=Records(Link, list(state.links.values())),
            refusals=refusals,
            consents=tuple(state.consents),
        )
        return changes, outcomes

    def _consent_events(self, state: _BatchState) -> tuple[OutboundEvent, ...]:
        """One ``consent.changed`` per stored record, for the person its anchor ends up in."""
        if not self._outbound:
            return ()
        return tuple(
            outbound.consent_changed(record, state.find(state.node_person[record.node_id]))
            for record in state.consents
        )

    def _merge_events(self, merged: Mapping[str, str]) -> tuple[OutboundEvent, ...]:
        """One ``person.merged`` per surviving person that absorbed persons which existed
        before this batch (downstream tools may hold events under their ids)."""
        if not self._outbound or not merged:
            return ()
        absorbed: dict[str, list[str]] = {}
        for person, survivor in merged.items():
            absorbed.setdefault(survivor, []).append(person)
        at = self._clock()
        return tuple(
            outbound.person_merged(survivor, persons, at)
            for survivor, persons in sorted(absorbed.items())
        )

    def _seal(self, pending: list[_PendingFact], new_owners: Collection[str]) -> Sequence[Fact]:
        if not pending:
            return ()
        if self._sealer is None:  # raw identifiers of keep_raw types need the vault too
            raise ConfigurationError("kept raw identifiers need a sealer (the vault)")
        fields: dict[tuple[FactKind, str], str] = {}  # Fact.seal_field, once per (kind, name)
        items = []
        for node_id, kind, name, _, _, payload, _, _, _ in pending:
            seal_field = fields.get((kind, name))
            if seal_field is None:
                seal_field = fields[(kind, name)] = f"{kind.value}:{name}"
            items.append((node_id, seal_field, payload))
        sealed = self._sealer.encrypt_many(items, new_owners=new_owners)
        # Field tuples, not Facts (see Records: the store writes rows of them).
        return Records(
            Fact,
            [
                (new_fact_id(), node_id, kind, name, category, at, source, status, blob, pii)
                for (node_id, kind, name, category, at, _, status, pii, source), blob in zip(
                    pending, sealed, strict=True
                )
            ],
        )

    # -- reads and admin operations -------------------------------------------------------------

    def _find(
        self, tx: GraphTransaction, identifier: NormalizedIdentifier
    ) -> IdentifierNode | None:
        candidates = self._keyring.candidates(identifier)
        found = {node.hashed: node for node in tx.find_identifiers(candidates)}
        return next((found[c] for c in candidates if c in found), None)

    def rehash_page(self, after_node_id: str, limit: int = 1000) -> RehashPage:
        """Re-hash up to ``limit`` identifiers still under an older key, in one transaction.

        Only identifiers whose normalized value is kept in the vault (``keep_raw``) can be
        re-hashed without seeing them again; the others stay findable under their old key and are
        re-hashed lazily when next seen. Safe to interrupt: each page commits on its own, and a
        re-run skips what is already under the primary key.
        """
        if self._sealer is None:
            raise ConfigurationError("re-hashing needs the vault to read kept raw identifiers")
        sealer = self._sealer
        primary = self._keyring.primary_key_id

        def run(tx: GraphTransaction) -> RehashPage:
            nodes = tx.identifiers_page(primary, after_node_id, limit)
            if not nodes:
                return RehashPage(0, 0, None)
            raws = tx.node_facts([n.node_id for n in nodes], FactKind.RAW_IDENTIFIER)
            # Per value: a node whose data key was shredded (the person's graph still there: an
            # operator's shred, an interrupted erasure) stays under its old key like one without
            # a kept value; all or nothing, it failed every run at this page, for good.
            opened = sealer.decrypt_readable([(f.node_id, f.seal_field, f.sealed) for f in raws])
            values = {
                f.node_id: v.decode() for f, v in zip(raws, opened, strict=True) if v is not None
            }
            rehashed = {
                n.node_id: self._keyring.hash(
                    NormalizedIdentifier(n.hashed.type, values[n.node_id])
                )
                for n in nodes
                if n.node_id in values
            }
            tx.apply(ChangeSet(rehashed=rehashed))
            return RehashPage(
                len(rehashed), len(nodes) - len(rehashed), nodes[-1].node_id, opened.count(None)
            )

        return self._store.write(run)

    def _carried_decisions(
        self,
        tx: GraphTransaction,
        person: str,
        parts: Sequence[Collection[str]],
        now: datetime,
    ) -> tuple[ConsentRecord, ...]:
        """Copies of the person's restriction and objection records for each split-off part,
        anchored to the part's first node (see :meth:`unlink`)."""
        if not parts:
            return ()
        decisions = [
            r
            for r in tx.person_consents(person, self._decision_purposes)
            if r.signal in (ConsentSignal.RESTRICTION, ConsentSignal.OBJECTION)
        ]
        return tuple(
            replace(record, record_id=new_consent_id(), node_id=min(part), recorded_at=now)
            for part in parts
            for record in decisions
        )

    def _find_pair(
        self, tx: GraphTransaction, a: NormalizedIdentifier, b: NormalizedIdentifier
    ) -> tuple[IdentifierNode, IdentifierNode]:
        node_a, node_b = self._find(tx, a), self._find(tx, b)
        if node_a is None:
            raise IdentifierNotFoundError("a")
        if node_b is None:
            raise IdentifierNotFoundError("b")
        return node_a, node_b

    def resolve(self, identifier: NormalizedIdentifier) -> str | None:
        """The person id ``identifier`` resolves to, or ``None`` if it is not in the graph."""
        node = self._store.read(lambda tx: self._find(tx, identifier))
        return node.person_id if node else None

    def explain(self, a: NormalizedIdentifier, b: NormalizedIdentifier) -> Explanation:
        """The chain of links (sources and times) that makes ``a`` and ``b`` one person."""

        def run(tx: GraphTransaction) -> Explanation:
            node_a, node_b = self._find_pair(tx, a, b)
            if node_a.person_id != node_b.person_id:
                # Apart: say whether a do-not-link rule is what keeps them apart (one end in
                # each person), so a refusal ``do_not_link`` can be traced to its rule.
                persons = {node_a.person_id, node_b.person_id}
                rules = tuple(
                    entry
                    for entry in tx.do_not_link_rules(sorted(persons))
                    if {entry.person_a, entry.person_b} == persons
                )
                return Explanation(False, None, (), rules)
            hops = clusters.path(tx.cluster(node_a.person_id), node_a.node_id, node_b.node_id)
            if hops is None:  # same person but no path: a store inconsistency, report honestly
                return Explanation(False, node_a.person_id, ())
            return Explanation(True, node_a.person_id, hops)

        return self._store.read(run)

    def do_not_link_page(self, after_rule_id: str, limit: int) -> list[DoNotLinkEntry]:
        """Do-not-link rules after ``after_rule_id`` in id order, at most ``limit``."""
        return self._store.read(lambda tx: tx.do_not_link_page(after_rule_id, limit))

    def remove_do_not_link(self, rule_id: str) -> DoNotLinkEntry:
        """Delete a do-not-link rule and return what it was; :class:`RuleNotFoundError` if none.

        Nothing is merged now: a later event naming identifiers of both sides links them."""

        def run(tx: GraphTransaction) -> DoNotLinkEntry:
            entry = tx.remove_do_not_link(rule_id)
            if entry is None:
                raise RuleNotFoundError(rule_id)
            return entry

        return self._store.write(run)

    def unlink(self, a: NormalizedIdentifier, b: NormalizedIdentifier) -> UnlinkResult:
        """Remove the direct link between ``a`` and ``b``; split the person if it falls apart.

        The part holding the most identifiers keeps the person id; every other part becomes a new
        person with a new random id. Facts are anchored to identifier nodes, so each part keeps
        the facts of its own identifiers without anything being copied.

        Restriction (Art. 18) and objection (Art. 21) records are the exception: they are the
        subject's decisions about *the person*, not about one identifier, so a split must not
        leave a part unrestricted because the request happened to arrive with an identifier of
        the other part. Every new part gets a copy of the person's whole restriction/objection
        history (same purpose, decision, time, basis and proof; a new record id), so the derived
        state (:mod:`privacy.consent.state`) is the same on both sides of the split, and a later
        lift reaches both through the identifiers the subject names.
        """

        def run(tx: GraphTransaction) -> UnlinkResult:
            node_a, node_b = self._find_pair(tx, a, b)
            if node_a.person_id != node_b.person_id:
                raise NotLinkedError("the two identifiers belong to different persons")
            removed = tx.remove_links(node_a.node_id, node_b.node_id)
            if removed == 0:
                raise NotLinkedError(
                    "the two identifiers are linked only through others; "
                    "use explain to see the path"
                )
            person = node_a.person_id
            parts = clusters.components(tx.cluster(person))
            now = self._clock()
            reassigned: dict[str, str] = {}
            new_persons = []
            for part in parts[1:]:
                new_person = self._person_ids()
                new_persons.append(PersonRecord(new_person, now, now))
                reassigned.update(dict.fromkeys(part, new_person))
            carried = self._carried_decisions(tx, person, parts[1:], now)
            events: tuple[OutboundEvent, ...] = ()
            if self._outbound and new_persons:
                # In the split's own transaction: downstream tools holding the person id hear
                # that part of it now has other ids (identity.outbound.person_split).
                split_ids = [p.person_id for p in new_persons]
                events = (outbound.person_split(person, split_ids, "unlink", now),)
            tx.apply(
                ChangeSet(
                    new_persons=tuple(new_persons),
                    reassigned=reassigned,
                    consents=carried,
                    outbound=events,
                )
            )
            person_a = reassigned.get(node_a.node_id, person)
            person_b = reassigned.get(node_b.node_id, person)
            rule_id = None
            if person_a != person_b:
                # Sticky: without a rule the next event naming both would merge them again.
                # Recorded only when the two ended up apart (still joined through other links,
                # there is nothing to keep apart yet).
                low, high = sorted((node_a.node_id, node_b.node_id))
                rule = DoNotLinkRule(self._rule_ids(), low, high, now)
                rule_id = rule.rule_id if tx.add_do_not_link(rule) else None
            return UnlinkResult(
                removed_links=removed,
                split=len(parts) > 1,
                person_id_a=person_a,
                person_id_b=person_b,
                rule_id=rule_id,
            )

        return self._store.write(run)
