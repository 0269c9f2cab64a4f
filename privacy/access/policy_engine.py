"""The policy engine: one decision function used by every downstream read.

``PolicyEngine.decide(caller, person, purpose, fields, now)`` returns a frozen
:class:`PolicyDecision`: whether the read may happen at all, and for each requested field
whether it may be returned, each with a reason. Reads (profiles, audiences, features, exports)
call it and return only ``decision.allowed_fields``; they never look at consent or purposes
themselves, so there is one place to get right and one place to test exhaustively.

Order of checks (the first failing one decides, and the read is denied as a whole):

1. the purpose exists (``unknown_purpose``);
2. the caller's API key may read for that purpose (``purpose_not_in_scope``);
3. the person exists (``no_such_person``: callers answer it exactly like a denial, so a denied
   read does not reveal whether the person exists);
4. the person's consent state for the purpose (:mod:`privacy.consent.state`: restriction,
   objection, latest decision, default).

Then, per field: its category must be one the purpose reads (``category_not_allowed``) and the
fact must be younger than that category's retention for the purpose (``past_retention``). A
denied read allows no field.

Kept raw identifiers (category :data:`IDENTIFIER_CATEGORY`, what audience exports activate) are
no data category of ``purposes.yaml``: such a field is allowed only when its
``identifier_type`` is listed in the purpose's ``activation`` (``not_activatable`` otherwise).
They have no per-purpose retention: an identifier is kept exactly as long as its person.

The engine is pure: no I/O, no clock of its own (``now`` is passed in), so decisions are
reproducible in tests and in the audit log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from identity.frozen import quick_init
from identity.model import RESTRICTION_PURPOSE, ConsentGrant, ConsentRecord, ConsentSignal
from privacy.access.purposes import Default, Purpose, PurposesPolicy
from privacy.consent.state import ConsentReason, consent_state, grant_state, plain_timeline

ALL_PURPOSES = "*"  # in an API key's purposes: every purpose of the policy
# The category the resolution engine gives kept raw identifiers (FactKind.RAW_IDENTIFIER).
IDENTIFIER_CATEGORY = "identifier"


class ReadDenied(StrEnum):
    """Why a whole read is denied other than by the person's consent (before it is looked at,
    or, ``data_keys_destroyed``, after it allowed the read)."""

    UNKNOWN_PURPOSE = "unknown_purpose"
    PURPOSE_NOT_IN_SCOPE = "purpose_not_in_scope"
    NO_SUCH_PERSON = "no_such_person"
    # The graph names the person but the vault holds no data key for some of the values the
    # read may return (crypto-shredded): nothing of theirs is readable, so the read is denied
    # as for an unknown person. Not a state an erasure leaves (it deletes the graph first).
    DATA_KEYS_DESTROYED = "data_keys_destroyed"


class FieldReason(StrEnum):
    """Why one field is (not) returned."""

    ALLOWED = "allowed"
    CATEGORY_NOT_ALLOWED = "category_not_allowed"
    PAST_RETENTION = "past_retention"
    READ_DENIED = "read_denied"
    NOT_ACTIVATABLE = "not_activatable"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is reading: an API key, the purposes it may read for, and its consumer name.

    ``consumer`` names the downstream system (it keys the per-consumer pseudonyms of feature
    exports); it defaults to the key id. ``actor`` is the audit actor when the reader is not an
    API key (a console operator, ``op_<username>``); empty means ``key_<key id>``.
    """

    key_id: str
    purposes: frozenset[str]
    consumer: str
    actor: str = ""
    # Operators (the admin scope) see every consumer's objects (audiences); others their own.
    sees_all: bool = False

    def owns(self, owner: str) -> bool:
        """Whether an object of ``owner`` (a consumer) is visible to this caller."""
        return self.sees_all or owner == self.consumer

    def may_read_for(self, purpose: str) -> bool:
        """Whether the key's purposes include ``purpose``."""
        return ALL_PURPOSES in self.purposes or purpose in self.purposes


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field a read wants to return: a name for the audit, its category and its age.

    ``identifier_type`` is set for kept raw identifiers (category :data:`IDENTIFIER_CATEGORY`)
    only: the type the purpose's ``activation`` must list.
    """

    name: str
    category: str
    recorded_at: datetime
    identifier_type: str | None = None


@dataclass(frozen=True, slots=True)
class PersonContext:
    """What the engine needs to know about a person: its id and its consent records."""

    person_id: str
    consents: tuple[ConsentRecord, ...]


@dataclass(frozen=True, slots=True)
class FieldVerdict:
    """The decision for one requested field."""

    field: FieldRef
    allowed: bool
    reason: FieldReason


@quick_init
@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The engine's answer for one read of one person for one purpose."""

    allowed: bool
    purpose: str
    person_id: str | None
    reason: str  # a ReadDenied or ConsentReason value
    fields: tuple[FieldVerdict, ...]
    consent_record_id: str | None = None

    @property
    def allowed_fields(self) -> tuple[FieldRef, ...]:
        """The fields the read may return (none when the read is denied)."""
        return tuple(v.field for v in self.fields if v.allowed)

    @property
    def withheld(self) -> dict[str, int]:
        """How many requested fields were withheld, by reason (for the audit and responses)."""
        counts: dict[str, int] = {}
        for verdict in self.fields:
            if not verdict.allowed:
                counts[verdict.reason.value] = counts.get(verdict.reason.value, 0) + 1
        return counts


def _denied_fields(fields: Sequence[FieldRef]) -> tuple[FieldVerdict, ...]:
    return tuple(FieldVerdict(f, False, FieldReason.READ_DENIED) for f in fields)


# A consent reason as the plain string a decision carries, by a dict lookup: a StrEnum's
# ``.value`` is a descriptor call, which a page of thousands of decisions paid per person.
_REASON_TEXT: Mapping[ConsentReason, str] = {reason: reason.value for reason in ConsentReason}


class PolicyEngine:
    """Decides reads from ``purposes.yaml`` (see the module docstring for the order of checks)."""

    def __init__(self, purposes: PurposesPolicy) -> None:
        self._purposes = purposes
        # The policy is frozen: its TCF age is worked out once, not per decision (an audience
        # page decides for thousands of persons).
        self._tcf_max_age = purposes.tcf.consent_max_age

    @property
    def purposes(self) -> PurposesPolicy:
        """The purposes policy the engine decides with."""
        return self._purposes

    def consent_filter(self, purpose: str) -> str | None:
        """``purpose`` if a member scan for it may leave out, in the store, persons whose
        current consent cannot allow it (``MemberScan.consent_filter``), else ``None``.

        Only for a purpose consent signals apply to (consent, legitimate interest) whose
        default is deny: there, a person
        with no record, or whose latest plain decision denies (and who holds no restriction,
        objection or compelling-grounds record, which the engine weighs itself), is denied by
        :meth:`decide` whatever else holds, with the reason the store reports
        (:class:`identity.model.ConsentExclusion`). So the filter changes no decision; it only
        spares loading the persons it would deny. Any other purpose (default grant, a basis
        without consent) is decided here for every person.
        """
        policy = self._purposes.get(purpose)
        if policy is None or not policy.consent_applies or policy.default is not Default.DENY:
            return None
        return purpose

    def _gate(self, caller: Caller, purpose: str) -> Purpose | ReadDenied:
        """The purpose's policy if ``caller`` may read for it at all, else why not (the checks
        that come before any person's consents, the same for :meth:`decide` and
        :meth:`decide_many`)."""
        policy = self._purposes.get(purpose)
        if policy is None:
            return ReadDenied.UNKNOWN_PURPOSE
        if not caller.may_read_for(purpose):
            return ReadDenied.PURPOSE_NOT_IN_SCOPE
        return policy

    def decide(
        self,
        caller: Caller,
        person: PersonContext | None,
        purpose: str,
        fields: Sequence[FieldRef],
        now: datetime,
    ) -> PolicyDecision:
        """Whether ``caller`` may read ``fields`` of ``person`` for ``purpose`` at ``now``."""
        person_id = person.person_id if person is not None else None
        policy = self._gate(caller, purpose)
        if isinstance(policy, ReadDenied) or person is None:
            denied = policy if isinstance(policy, ReadDenied) else ReadDenied.NO_SUCH_PERSON
            return PolicyDecision(False, purpose, person_id, denied.value, _denied_fields(fields))
        state = consent_state(
            purpose,
            policy,
            person.consents,
            now=now,
            tcf_max_age=self._tcf_max_age,
        )
        if not state.allowed:
            return PolicyDecision(
                False,
                purpose,
                person_id,
                state.reason.value,
                _denied_fields(fields),
                state.record_id,
            )
        return PolicyDecision(
            True,
            purpose,
            person_id,
            state.reason.value,
            _verdicts(policy, fields, now),
            state.record_id,
        )

    def decide_many(
        self,
        caller: Caller,
        persons: Sequence[tuple[str, Sequence[ConsentRecord] | ConsentGrant, Sequence[FieldRef]]],
        purpose: str,
        now: datetime,
    ) -> list[PolicyDecision]:
        """:meth:`decide` for each ``(person id, consent records, fields)`` of a page of
        persons, in order: the same decisions, property-tested against it.

        In place of its records a person may come with the :class:`ConsentGrant` a member scan
        reduced them to (for ``purpose``; :class:`ValueError` for another purpose or for a
        purpose consent does not apply to): the decision is the one its records would give
        (:func:`privacy.consent.state.grant_state`).

        Why a batch: an audience page decides for up to thousands of persons, and per person
        :meth:`decide` repeated what is the same for all of them (the purpose's lookup, the
        caller's scope, the TCF age) and built a :class:`PersonContext` only to unpack it. The
        consent rules and the field verdicts are the same functions as :meth:`decide` uses.
        """
        policy = self._gate(caller, purpose)
        if isinstance(policy, ReadDenied):
            return [
                PolicyDecision(False, purpose, person_id, policy.value, _denied_fields(fields))
                for person_id, _, fields in persons
            ]
        reason_text = _REASON_TEXT
        decisions: list[PolicyDecision] = []
        append = decisions.append
        outcomes = self._outcomes(policy, purpose, [consents for _, consents, _ in persons], now)
        for (person_id, _, fields), (allowed, reason_enum, record_id) in zip(
            persons, outcomes, strict=True
        ):
            reason = reason_text[reason_enum]
            if not fields:
                verdicts: tuple[FieldVerdict, ...] = ()
            elif allowed:
                verdicts = _verdicts(policy, fields, now)
            else:
                verdicts = _denied_fields(fields)
            append(PolicyDecision(allowed, purpose, person_id, reason, verdicts, record_id))
        return decisions

    def refusals(
        self,
        caller: Caller,
        consents: Sequence[Sequence[ConsentRecord] | ConsentGrant],
        purpose: str,
        now: datetime,
    ) -> list[str | None]:
        """Per person of a page, given its consent records (or the :class:`ConsentGrant` they
        reduce to, as for :meth:`decide_many`): ``None`` if :meth:`decide_many` would allow
        it with no fields asked, else the reason of that decision's denial (the same plain
        string). Property-tested against :meth:`decide_many`.

        Why: an audience whose rules are event rules only (pushed down to the store) needs
        nothing of a decision but whether it allows and, for a denial, why: the members are
        the allowed persons, the others are counted by reason. A :class:`PolicyDecision` per
        person (~25k a warm 1M audience) was a tenth of the policy side's CPU, with the page's
        tuples per person and the collections they caused.
        """
        policy = self._gate(caller, purpose)
        if isinstance(policy, ReadDenied):
            return [policy.value] * len(consents)
        reason_text = _REASON_TEXT
        if not policy.consent_applies or purpose == RESTRICTION_PURPOSE:  # no grant decides it
            return [
                None if allowed else reason_text[reason]
                for allowed, reason, _ in self._outcomes(policy, purpose, consents, now)
            ]
        # A grant (most kept persons of a filtered page) is decided here: grant_state's rule 6
        # (privacy.consent.state._expired: older than the purpose's expiry, or a TC string older
        # than the TCF age) as two instants worked out once for the page. An age over a limit
        # is a time before now less the limit, exactly (datetime arithmetic is in whole
        # microseconds); the property tests hold it to decide_many at the limits.
        expiry, tcf_age = policy.consent_expiry, self._tcf_max_age
        expiry_line = None if expiry is None else now - expiry
        tcf_line = None if tcf_age is None else now - tcf_age
        expired, tcf = reason_text[ConsentReason.EXPIRED], ConsentSignal.TCF
        refused: list[str | None] = []
        append = refused.append
        for person in consents:
            if isinstance(person, ConsentGrant):
                if person.purpose != purpose:
                    raise ValueError(
                        f"a consent grant for {person.purpose!r} cannot decide {purpose!r}"
                    )
                at = person.at
                if (expiry_line is not None and at < expiry_line) or (
                    tcf_line is not None and person.signal is tcf and at < tcf_line
                ):
                    append(expired)
                else:
                    append(None)
            else:
                ((allowed, reason, _),) = self._outcomes(policy, purpose, (person,), now)
                append(None if allowed else reason_text[reason])
        return refused

    def _outcomes(
        self,
        policy: Purpose,
        purpose: str,
        consents: Sequence[Sequence[ConsentRecord] | ConsentGrant],
        now: datetime,
    ) -> Iterator[tuple[bool, ConsentReason, str | None]]:
        """``(allowed, reason, deciding record id)`` of each person's consent (records or a
        grant) for ``policy`` (a purpose the caller passed :meth:`_gate` for): the consent
        rules of :meth:`decide`, with the purpose's settings looked up once for the page."""
        tcf_max_age = self._tcf_max_age
        # The plain consent timeline (rules 5-7) with the purpose's settings looked up once.
        plain = policy.consent_applies and purpose != RESTRICTION_PURPOSE
        exempt, default_grant = policy.restriction_exempt, policy.default is Default.GRANT
        expiry = policy.consent_expiry
        for person in consents:
            decided: tuple[bool, ConsentReason, str | None] | None
            if isinstance(person, ConsentGrant):
                if not plain:
                    raise ValueError(f"a consent grant cannot decide purpose {purpose!r}")
                decided = grant_state(person, purpose, now, expiry, tcf_max_age)
            else:
                decided = (
                    plain_timeline(person, purpose, exempt, default_grant, now, expiry, tcf_max_age)
                    if plain
                    else None
                )
                if decided is None:  # a history the general rules weigh (or no consent applies)
                    state = consent_state(purpose, policy, person, now=now, tcf_max_age=tcf_max_age)
                    decided = (state.allowed, state.reason, state.record_id)
            yield decided

    def with_fields(
        self, gate: PolicyDecision, fields: Sequence[FieldRef], now: datetime
    ) -> PolicyDecision:
        """``gate`` (a decision made before the fields were loaded) for ``fields``: the same
        answer :meth:`decide` gives with them, without evaluating consent a second time.

        For reads that decide before loading anything (a denied person's data is not even
        read) and then need the per-field verdicts of what they loaded.
        """
        policy = self._purposes.get(gate.purpose)
        if not gate.allowed or policy is None:
            return replace(gate, fields=_denied_fields(fields))
        return replace(gate, fields=_verdicts(policy, fields, now))

    def field_mask(
        self, gate: PolicyDecision, fields: Sequence[tuple[str, datetime]], now: datetime
    ) -> FieldMask:
        """:meth:`with_fields` in compact form, for reads of many fields (a profile): each
        field given as ``(category, recorded_at)``, the answer as one allowed flag per field and
        the withheld counts by reason, without a :class:`FieldRef` and a :class:`FieldVerdict`
        per field. The same verdicts as ``with_fields(gate, [FieldRef(name, category,
        recorded_at)...], now)`` (a field of :data:`IDENTIFIER_CATEGORY` has no identifier type
        here, so it is never activatable), property-tested against it.
        """
        policy = self._purposes.get(gate.purpose)
        if not gate.allowed or policy is None:
            count = len(fields)
            return FieldMask(
                (False,) * count, {FieldReason.READ_DENIED.value: count} if count else {}
            )
        allowed: list[bool] = []
        withheld: dict[str, int] = {}
        # The oldest readable recording time per category (None: not readable at all).
        cutoffs: dict[str, datetime | None] = {}
        for category, recorded_at in fields:
            if category in cutoffs:
                cutoff = cutoffs[category]
            else:
                access = (
                    None if category == IDENTIFIER_CATEGORY else policy.categories.get(category)
                )
                cutoff = cutoffs[category] = None if access is None else now - access.retention
            if cutoff is None:
                reason = (
                    FieldReason.NOT_ACTIVATABLE
                    if category == IDENTIFIER_CATEGORY
                    else FieldReason.CATEGORY_NOT_ALLOWED
                ).value
            elif recorded_at <= cutoff:
                reason = FieldReason.PAST_RETENTION.value
            else:
                allowed.append(True)
                continue
            allowed.append(False)
            withheld[reason] = withheld.get(reason, 0) + 1
        return FieldMask(tuple(allowed), withheld)


@quick_init
@dataclass(frozen=True, slots=True)
class FieldMask:
    """Per-field verdicts in compact form (:meth:`PolicyEngine.field_mask`): whether each field
    may be returned, and how many were withheld by reason (as :attr:`PolicyDecision.withheld`)."""

    allowed: tuple[bool, ...]
    withheld: Mapping[str, int]


def _verdicts(
    policy: Purpose, fields: Sequence[FieldRef], now: datetime
) -> tuple[FieldVerdict, ...]:
    """Each field's verdict for a read the purpose's consent already allows."""
    verdicts: list[FieldVerdict] = []
    # The oldest readable recording time per category, worked out once per read rather than
    # once per field (a profile has a dozen fields or more in a handful of categories):
    # ``recorded_at + retention <= now`` is ``recorded_at <= now - retention`` (exactly, for
    # the UTC times the store and the clocks give; no overflow near datetime.max either).
    cutoffs: dict[str, datetime] = {}
    for ref in fields:
        if ref.category == IDENTIFIER_CATEGORY:
            # Activation is its own grant: a raw identifier is never "data in a category".
            activatable = ref.identifier_type is not None and (
                ref.identifier_type in policy.activation
            )
            reason = FieldReason.ALLOWED if activatable else FieldReason.NOT_ACTIVATABLE
            verdicts.append(FieldVerdict(ref, activatable, reason))
            continue
        cutoff = cutoffs.get(ref.category)
        if cutoff is None:
            access = policy.categories.get(ref.category)
            if access is None:
                verdicts.append(FieldVerdict(ref, False, FieldReason.CATEGORY_NOT_ALLOWED))
                continue
            cutoff = cutoffs[ref.category] = now - access.retention
        if ref.recorded_at <= cutoff:
            verdicts.append(FieldVerdict(ref, False, FieldReason.PAST_RETENTION))
        else:
            verdicts.append(FieldVerdict(ref, True, FieldReason.ALLOWED))
    return tuple(verdicts)


__all__ = [
    "ALL_PURPOSES",
    "IDENTIFIER_CATEGORY",
    "Caller",
    "ConsentReason",
    "FieldMask",
    "FieldReason",
    "FieldRef",
    "FieldVerdict",
    "PersonContext",
    "PolicyDecision",
    "PolicyEngine",
    "ReadDenied",
]
