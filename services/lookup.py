"""Person lookup for privacy operators: one identifier in, the person's cluster, consent history
and "why would a read for this purpose be allowed or denied" out.

Identifiers appear as their type, key id and the first hex digits of their keyed hash; facts as
name, category and age. The one exception is :meth:`PersonLookup.kept_values`: a raw identifier
kept for activation is shown only when one of the operator's own purposes may activate it for
this person, decided by the policy engine and audited. The
decision comes from the same :class:`~privacy.access.policy_engine.PolicyEngine` every read uses,
for a
reader whose scope lists the purpose, so the reasons shown are exactly the ones a real read
would get. Every lookup and every decision shown is audited with the operator as actor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from identity.identifiers import NormalizedIdentifier
from identity.intake import normalize_all
from identity.model import ConsentRecord, Fact, FactKind, FactStatus, IdentifierNode, Link
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore, GraphTransaction
from privacy.access.policy_engine import (
    IDENTIFIER_CATEGORY,
    Caller,
    FieldRef,
    PersonContext,
    PolicyDecision,
    PolicyEngine,
    ReadDenied,
)
from privacy.access.reads import UnknownPurposeError
from privacy.auditing.log import AuditDraft, AuditLog
from privacy.consent.state import consent_state
from privacy.keys.vault import Vault

HASH_PREFIX_HEX = 12  # enough to tell nodes apart on screen, far too little to brute-force


@dataclass(frozen=True, slots=True)
class NodeView:
    """One identifier of the cluster, without its value."""

    node_id: str
    identifier_type: str
    key_id: str
    hash_prefix: str
    first_seen: datetime
    last_seen: datetime
    looked_up: bool  # the identifier the operator searched for


@dataclass(frozen=True, slots=True)
class KeptValue:
    """A kept raw identifier (normalized) that one of the operator's purposes may see."""

    node_id: str
    identifier_type: str
    value: str
    purpose: str  # the purpose whose policy decision allowed it


@dataclass(frozen=True, slots=True)
class PurposeState:
    """The current consent state of one purpose and the record that decided it."""

    purpose: str
    lawful_basis: str
    allowed: bool
    reason: str
    record_id: str | None


@dataclass(frozen=True, slots=True)
class PersonPicture:
    """What an operator sees of a person: cluster, consent history and current states."""

    person_id: str
    nodes: tuple[NodeView, ...]
    links: tuple[Link, ...]
    consents: tuple[ConsentRecord, ...]  # oldest first, every purpose and restriction
    states: tuple[PurposeState, ...]


@dataclass(frozen=True, slots=True)
class ReadExplanation:
    """The policy decision for a read of the person for one purpose, field by field."""

    decision: PolicyDecision
    consent: ConsentRecord | None  # the record that decided, if any


class PersonLookup:
    """Find a person by one identifier and explain policy decisions about them."""

    def __init__(
        self,
        store: GraphStore,
        engine: ResolutionEngine,
        identity_policy: IdentityPolicy,
        policy: PolicyEngine,
        audit: AuditLog,
        vault: Vault,
        default_region: str | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._engine = engine
        self._identity_policy = identity_policy
        self._policy = policy
        self._audit = audit
        self._vault = vault
        self._region = default_region
        self._clock = clock

    @property
    def identifier_types(self) -> tuple[str, ...]:
        """The identifier types an operator can search by."""
        return self._identity_policy.type_names

    def normalize(self, identifier_type: str, value: str) -> NormalizedIdentifier:
        """Normalize the searched identifier (:class:`BatchValidationError` naming the field)."""
        return normalize_all(
            [(identifier_type, value)], self._identity_policy, self._region, "#/identifier"
        )[0]

    def find(self, actor: str, identifier: NormalizedIdentifier) -> PersonPicture | None:
        """The person ``identifier`` resolves to, or ``None``; audited either way."""
        person_id = self._engine.resolve(identifier)
        if person_id is None:
            self._audit.append(
                [
                    AuditDraft(
                        actor,
                        "console.lookup",
                        reason="not_found",
                        details={"identifier_type": identifier.type},
                    )
                ]
            )
            return None
        picture = self._store.read(lambda tx: self._picture(tx, person_id, identifier))
        self._audit.append(
            [
                AuditDraft(
                    actor,
                    "console.lookup",
                    person_id=self._audit.person_ref(person_id),
                    reason="found",
                    details={
                        "identifier_type": identifier.type,
                        "identifiers": len(picture.nodes) if picture else 0,
                    },
                )
            ]
        )
        return picture

    def picture(self, actor: str, person_id: str) -> PersonPicture | None:
        """The picture of a person by id (the page after a lookup); audited."""
        picture = self._store.read(lambda tx: self._picture(tx, person_id, None))
        if picture is not None:
            self._audit.append(
                [
                    AuditDraft(
                        actor,
                        "console.lookup",
                        person_id=self._audit.person_ref(person_id),
                        reason="viewed",
                    )
                ]
            )
        return picture

    def _picture(
        self, tx: GraphTransaction, person_id: str, looked_up: NormalizedIdentifier | None
    ) -> PersonPicture | None:
        if tx.person(person_id) is None:
            return None
        cluster = tx.cluster(person_id)
        match: set[str] = set()
        if looked_up is not None:
            hashes = [self._engine.keyring.hash(looked_up, k) for k in self._engine.keyring.key_ids]
            match = {n.node_id for n in tx.find_identifiers(hashes)}
        nodes = tuple(_node_view(n, n.node_id in match) for n in cluster.nodes)
        purposes = self._policy.purposes
        consents = tuple(tx.person_consents(person_id, purposes.ids))
        states = []
        for purpose_id in purposes.ids:
            purpose = purposes.get(purpose_id)
            if purpose is None:  # pragma: no cover - ids come from the same policy
                continue
            state = consent_state(purpose_id, purpose, consents)
            states.append(
                PurposeState(
                    purpose_id,
                    purpose.lawful_basis.value,
                    state.allowed,
                    state.reason.value,
                    state.record_id,
                )
            )
        return PersonPicture(person_id, nodes, cluster.links, consents, tuple(states))

    def kept_values(self, operator: Caller, person_id: str) -> tuple[KeptValue, ...]:
        """Kept raw identifiers of the person that the operator's own purposes may see.

        For each of the operator's purposes (in id order) the policy engine decides the kept
        identifiers as activation fields (consent, restriction, the purpose's ``activation``
        list); a value is decrypted only when a purpose allows it, and every purpose that
        released something is audited (``console.kept_values``, allow, with the count) before
        anything is returned. A person whose data keys were shredded while the graph still
        names them shows no kept value, audited as ``deny`` / ``data_keys_destroyed``.
        Nothing is decrypted for an operator without purposes.
        """
        purposes = [p for p in self._policy.purposes.ids if operator.may_read_for(p)]
        if not purposes:
            return ()
        now = self._clock()

        def load(tx: GraphTransaction) -> tuple[list[Fact], tuple[ConsentRecord, ...]]:
            if tx.person(person_id) is None:
                return [], ()
            raws = tx.person_facts(person_id, (FactKind.RAW_IDENTIFIER,), FactStatus.ACTIVE)
            if not raws:
                return [], ()
            return raws, tuple(tx.person_consents(person_id, purposes))

        raws, consents = self._store.read(load)
        if not raws:
            return ()
        context = PersonContext(person_id, consents)
        chosen: dict[str, tuple[Fact, str]] = {}
        released_by: list[tuple[str, str, int]] = []  # (purpose, reason, values it released)
        for purpose in purposes:
            refs = [
                FieldRef(f.fact_id, IDENTIFIER_CATEGORY, f.at, identifier_type=f.name) for f in raws
            ]
            decision = self._policy.decide(operator, context, purpose, refs, now)
            allowed = {ref.name for ref in decision.allowed_fields}
            released = [f for f in raws if f.fact_id in allowed and f.fact_id not in chosen]
            for fact in released:
                chosen[fact.fact_id] = (fact, purpose)
            if released:
                released_by.append((purpose, decision.reason, len(released)))
        if not chosen:
            return ()
        facts = [fact for fact, _ in chosen.values()]
        # Per value: a person whose data keys were shredded while the graph still names them is
        # shown no kept value at all (withheld whole, as the reads do) and the attempt is
        # audited as the denial it is, never a 500 and never an "allow" for values not shown.
        plain = self._vault.decrypt_readable([(f.node_id, f.seal_field, f.sealed) for f in facts])
        destroyed = None in plain
        ref = self._audit.person_ref(person_id)
        self._audit.append(
            [
                AuditDraft(
                    operator.actor or operator.key_id,
                    "console.kept_values",
                    purpose,
                    ref,
                    "deny" if destroyed else "allow",
                    ReadDenied.DATA_KEYS_DESTROYED.value if destroyed else reason,
                    {"identifiers": count},
                )
                for purpose, reason, count in released_by
            ]
        )
        if destroyed:
            return ()
        return tuple(
            KeptValue(fact.node_id, fact.name, text.decode(), purpose)
            for (fact, purpose), text in zip(chosen.values(), plain, strict=True)
            if text is not None
        )

    def explain_read(self, operator: Caller, person_id: str, purpose: str) -> ReadExplanation:
        """The decision a read of ``person_id`` for ``purpose`` gets, with every field's verdict.

        Decided for a reader whose scope lists ``purpose`` (what the operator asks is "would a
        read for this purpose be allowed for this person, and why"), so the reasons are about
        the person's consent, restrictions, categories and retention. Fact values are never
        loaded into the answer. Audited as ``console.explain_read`` with the decision.
        """
        if self._policy.purposes.get(purpose) is None:
            raise UnknownPurposeError(self._policy.purposes.ids, "#/purpose")
        now = self._clock()
        reader = Caller(operator.key_id, frozenset({purpose}), operator.consumer, operator.actor)

        def load(tx: GraphTransaction) -> tuple[PolicyDecision, tuple[ConsentRecord, ...]]:
            if tx.person(person_id) is None:
                return self._policy.decide(reader, None, purpose, (), now), ()
            consents = tuple(tx.person_consents(person_id, [purpose]))
            facts = tx.person_facts(
                person_id, (FactKind.ATTRIBUTE, FactKind.EVENT), FactStatus.ACTIVE
            )
            refs = [FieldRef(f"{f.kind.value}:{f.name}", f.category, f.at) for f in facts]
            context = PersonContext(person_id, consents)
            return self._policy.decide(reader, context, purpose, refs, now), consents

        decision, consents = self._store.read(load)
        self._audit.append(
            [
                AuditDraft(
                    operator.actor or operator.key_id,
                    "console.explain_read",
                    purpose,
                    self._audit.person_ref(person_id),
                    "allow" if decision.allowed else "deny",
                    decision.reason,
                    {"fields": len(decision.fields), **decision.withheld},
                )
            ]
        )
        record = next((c for c in consents if c.record_id == decision.consent_record_id), None)
        return ReadExplanation(decision, record)


def _node_view(node: IdentifierNode, looked_up: bool) -> NodeView:
    return NodeView(
        node.node_id,
        node.hashed.type,
        node.hashed.key_id,
        node.hashed.digest.hex()[:HASH_PREFIX_HEX],
        node.first_seen,
        node.last_seen,
        looked_up,
    )


__all__ = [
    "HASH_PREFIX_HEX",
    "KeptValue",
    "NodeView",
    "PersonLookup",
    "PersonPicture",
    "PurposeState",
    "ReadExplanation",
]
