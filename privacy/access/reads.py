"""Purpose-bound reads: profiles, audiences (members and exports) and feature tables.

Every downstream read goes through :class:`ReadService`, and the service goes through
:meth:`privacy.access.policy_engine.PolicyEngine.decide` for every person it returns anything about:

1. **Admission, before the store is touched.** The purpose must exist (422 listing the valid
   ones, :class:`UnknownPurposeError`) and be one of the caller's (:class:`PurposeNotInScopeError`,
   403, audited as a denial).
2. **Load** through the store port what the read needs: the person (or a page of persons from
   ``member_page``, with event rules pushed down), their consent records for the purpose, and
   the facts the read may return, still sealed.
3. **Decide** per person: the engine returns the fields the purpose may see.
4. **Decrypt only the allowed fields** (``Vault.decrypt_many``): a withheld field is never
   decrypted, so a bug further down cannot leak it.
5. **Audit** the decision before anything is returned, then return plain data.

A denied read and a read of an unknown person raise the same :class:`NotReadableError` (the
API answers both with the same 404 body), so a caller learns nothing about whether a person it
may not read exists; the audit records the true reason.

Audit entries (``privacy.auditing.log``): ``actor`` is the API key id, ``person_id`` is always the
keyed
:meth:`privacy.auditing.log.SqliteAuditLog.person_ref` of the person id (never the id itself: an
erasure
must leave no person id anywhere), ``details`` hold counts and opaque ids only, never values or
identifiers.

* ``read.profile``: one entry per read, allow or deny, with the reason (``consent_granted``,
  ``no_consent``, ``no_such_person``, ...) and the number of fields returned and withheld by
  reason. A person the graph names whose vault data keys were shredded is denied
  (``data_keys_destroyed``) and answered as unknown: a read never fails open, nor with a 500.
* ``read.audience`` / ``read.export`` / ``read.features``: pages cover many persons. Each page
  (each export chunk) writes one summary entry (persons scanned, members, persons denied by
  reason, a SHA-256 digest of the sorted member refs) and then the member refs themselves, 100
  per entry (the audit's list limit), decision ``allow``. So every released person is findable in
  the log (an access request searches for its ref), and the digest ties the chunked entries to
  their page. Denied persons are counted by reason, not listed: nothing of theirs was released.
  A person whose data keys were shredded while the graph still names them is one of those
  (``denied_data_keys_destroyed``): withheld whole, never a 500 for the page, and the rest of
  the page (export chunk) is served (``Vault.decrypt_readable``).

Paging: a page scans persons in person-id order from the cursor and returns up to ``limit``
members. The scan stops after :attr:`ReadService.max_scan` persons even if the page is not full,
so one request never walks the whole graph: **a page may be short or empty and still have a
next cursor; the end is a ``null`` cursor**. The cursor holds the last person id examined, sealed
with AES-GCM and bound to the API key, consumer, endpoint, purpose and audience, with an expiry
(:mod:`privacy.access.cursors`): it reveals no person id, and a forged, altered, expired or borrowed
cursor is refused (400).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from itertools import compress
from typing import Any

from identity.errors import IdGraphError, InvalidFieldError
from identity.frozen import quick_init
from identity.group_commit import Arrival
from identity.model import (
    ConsentGrant,
    ConsentRecord,
    EventCountRule,
    Fact,
    FactKind,
    FactStatus,
    MemberRow,
    MemberScan,
    MemberScanPage,
)
from identity.store.port import GraphStore, GraphTransaction
from privacy.access.audiences import Audience, AudienceRules, AudienceStore, validate_rules
from privacy.access.cursors import CursorCodec, CursorScope, InvalidCursorError
from privacy.access.policy_engine import (
    ALL_PURPOSES,
    IDENTIFIER_CATEGORY,
    Caller,
    FieldRef,
    PersonContext,
    PolicyDecision,
    PolicyEngine,
    ReadDenied,
)
from privacy.access.pseudonyms import FeaturePseudonymizer
from privacy.access.purposes import Purpose
from privacy.auditing.log import (
    MAX_DETAIL_LIST,
    AuditDraft,
    AuditLog,
    AuditRef,
    AuditRefs,
    Decision,
    api_key_actor,
    audit_ref_or_text,
)
from privacy.keys.vault import DataKeyDestroyedError, Vault
from privacy.scanning.facts import FactIntake

MAX_PAGE = 1_000
DEFAULT_MAX_SCAN = 20_000
_MIN_CHUNK = 250
_MIN_LATER_CHUNK = 32
_PERSON_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}")
# What a profile returns: attributes (latest value per name) and events.
_PROFILE_KINDS = (FactKind.ATTRIBUTE, FactKind.EVENT)


class ReadAction(StrEnum):
    """The audit actions of reads."""

    PROFILE = "read.profile"
    AUDIENCE = "read.audience"
    EXPORT = "read.export"
    FEATURES = "read.features"
    DEFINE_AUDIENCE = "audience.define"
    GET_AUDIENCE = "audience.get"


# -- errors -----------------------------------------------------------------------------------


class UnknownPurposeError(InvalidFieldError):
    """The read names a purpose ``purposes.yaml`` does not define (422, lists valid ones)."""

    code = "unknown-purpose"

    def __init__(self, valid: Sequence[str], pointer: str) -> None:
        self.valid = tuple(valid)
        super().__init__("unknown_purpose", "unknown purpose; valid: " + ", ".join(valid), pointer)


class PurposeNotInScopeError(IdGraphError):
    """The caller's API key may not read for the purpose (the API answers 403)."""

    code = "purpose-forbidden"

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose
        super().__init__(f"this API key may not read for the purpose {purpose!r}")


class NotReadableError(IdGraphError):
    """No person with this id is readable for this purpose: unknown *or* denied (404).

    One class and one message for both on purpose: the answer must not reveal whether a person
    the caller may not read exists.
    """

    code = "not-found"

    def __init__(self) -> None:
        super().__init__("no person with this id is readable for this purpose")


class AudienceNotFoundError(IdGraphError):
    """No audience with this id (404)."""

    code = "audience-not-found"

    def __init__(self) -> None:
        super().__init__("no audience with this id")


class NothingToReadError(InvalidFieldError):
    """The purpose exports nothing of the kind asked for (no features, no activation types)."""

    code = "nothing-to-read"


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileAttribute:
    """The latest readable value of one attribute."""

    name: str
    value: Any
    at: datetime


@dataclass(frozen=True, slots=True)
class ProfileEvent:
    """One readable event."""

    name: str
    at: datetime
    properties: Mapping[str, Any]


@quick_init
@dataclass(frozen=True, slots=True)
class ConsentSummary:
    """Why the read was allowed: the purpose's basis and the deciding consent record's time."""

    purpose: str
    lawful_basis: str
    reason: str
    decided_at: datetime | None


@quick_init
@dataclass(frozen=True, slots=True)
class Profile:
    """What a purpose may see of one person."""

    person_id: str
    purpose: str
    attributes: tuple[ProfileAttribute, ...]
    events: tuple[ProfileEvent, ...]
    consent: ConsentSummary


@dataclass(frozen=True, slots=True)
class MemberPage:
    """One page of an audience's members (person ids)."""

    audience_id: str
    purpose: str
    person_ids: tuple[str, ...]
    next_cursor: str | None
    scanned: int


@dataclass(frozen=True, slots=True)
class AudiencePreview:
    """A consent-filtered member count of an audience (no person ids)."""

    audience: Audience
    members: int
    scanned: int
    denied: Mapping[str, int]
    complete: bool


@dataclass(frozen=True, slots=True)
class MemberSet:
    """Every member of an audience found by one walk (``complete``: it reached the end)."""

    members: tuple[str, ...]
    scanned: int
    denied: Mapping[str, int]
    complete: bool


@dataclass(frozen=True, slots=True)
class ActivationRow:
    """One identifier of an exported member: its type and SHA-256 of its normalized value."""

    identifier_type: str
    sha256: str


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """One person of a feature table, keyed by its per-consumer pseudonym."""

    pseudonym: str
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FeaturePage:
    """One page of a feature table."""

    purpose: str
    columns: tuple[str, ...]
    rows: tuple[FeatureRow, ...]
    next_cursor: str | None
    pseudonym_key_id: str


@dataclass(slots=True)
class _Member:
    # No decision kept: a member is one the engine allowed (the denied are counted by reason),
    # and holding 1,000 decisions per page alive until the page is audited only gave the
    # cyclic collector more to walk.
    row: MemberRow
    values: dict[str, Any]


@dataclass(slots=True)
class _ScanResult:
    members: list[_Member]
    scanned: int
    last: str
    exhausted: bool
    denied: Counter[str] = field(default_factory=Counter)

    @property
    def next_position(self) -> str | None:
        """Where the next page starts (sealed into a cursor by the caller); ``None``: the end."""
        return None if self.exhausted else self.last


def latest_by_name(facts: Sequence[Fact]) -> list[Fact]:
    """The newest fact per name (a person's nodes may each hold a value of one attribute)."""
    latest: dict[str, Fact] = {}
    for fact in facts:
        seen = latest.get(fact.name)
        if seen is None or (fact.at, fact.fact_id) > (seen.at, seen.fact_id):
            latest[fact.name] = fact
    return [latest[name] for name in sorted(latest)]


def profile_values(
    facts: Sequence[Fact], plain: Sequence[bytes]
) -> tuple[tuple[ProfileAttribute, ...], tuple[ProfileEvent, ...]]:
    """The attributes and events of a profile from its facts and their decrypted values."""
    attributes: list[ProfileAttribute] = []
    events: list[ProfileEvent] = []
    for fact, text in zip(facts, plain, strict=True):
        value = json.loads(text)
        if fact.kind is FactKind.ATTRIBUTE:
            attributes.append(ProfileAttribute(fact.name, value, fact.at))
        else:
            properties = value.get("properties", {}) if isinstance(value, dict) else {}
            events.append(ProfileEvent(fact.name, fact.at, properties))
    return tuple(attributes), tuple(events)


def _refs(facts: Sequence[Fact]) -> list[FieldRef]:
    return [FieldRef(f.seal_field, f.category, f.at) for f in facts]


def _allowed(facts: Sequence[Fact], decision: PolicyDecision) -> list[Fact]:
    return [f for f, verdict in zip(facts, decision.fields, strict=True) if verdict.allowed]


def _withdraw(arrival: Arrival | None) -> None:
    """End ``arrival`` (if any) before a blocking audit append: a writer must not wait for it."""
    if arrival is not None:
        arrival.withdraw()


def _refs_digest(refs: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(refs)).encode()).hexdigest()


class ReadService:
    """Profiles, audiences and feature tables, each for one purpose, through the policy engine.

    See the module docstring for the steps every read takes and what is audited.
    """

    def __init__(
        self,
        store: GraphStore,
        vault: Vault,
        policy: PolicyEngine,
        facts: FactIntake,
        audit: AuditLog,
        audiences: AudienceStore,
        pseudonyms: FeaturePseudonymizer,
        cursors: CursorCodec,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_scan: int = DEFAULT_MAX_SCAN,
    ) -> None:
        self._store = store
        self._vault = vault
        self._policy = policy
        self._facts = facts
        self._audit = audit
        self._audiences = audiences
        # Called with (purpose, allowed, how many) for every audited decision (metrics).
        self.on_decision: Callable[[str, bool, int], None] | None = None
        self._pseudonyms = pseudonyms
        self._cursors = cursors
        self._clock = clock
        self.max_scan = max_scan

    @property
    def policy(self) -> PolicyEngine:
        """The policy engine every read goes through."""
        return self._policy

    def close(self) -> None:
        """Close the audience store (the other collaborators belong to the container)."""
        self._audiences.close()

    # -- admission ------------------------------------------------------------------------

    def admit(
        self,
        caller: Caller,
        purpose_id: str,
        action: ReadAction,
        person_id: str | None = None,
        pointer: str = "#/query/purpose",
    ) -> Purpose:
        """The purpose, if it exists and the caller may read for it; checked before any load."""
        purpose = self._policy.purposes.get(purpose_id)
        if purpose is None:
            # Not audited: a malformed request, not a decision about anyone's data (and the
            # unknown string cannot be trusted to be free of personal data).
            raise UnknownPurposeError(self._policy.purposes.ids, pointer)
        if not caller.may_read_for(purpose_id):
            self._record(
                caller,
                action,
                purpose_id,
                person_id,
                "deny",
                ReadDenied.PURPOSE_NOT_IN_SCOPE.value,
                known=self._exists(person_id),
            )
            raise PurposeNotInScopeError(purpose_id)
        return purpose

    def _admit_announced(
        self, caller: Caller, purpose_id: str, person_id: str, arrival: Arrival | None
    ) -> Purpose:
        """:meth:`admit` for a profile read; a refusal ends ``arrival`` before it is audited
        (a blocking append that a lingering writer must not wait for this read's entry in)."""
        if arrival is not None and not caller.may_read_for(purpose_id):
            arrival.withdraw()
        return self.admit(caller, purpose_id, ReadAction.PROFILE, person_id)

    def _exists(self, person_id: str | None) -> bool:
        """Whether ``person_id`` names a person now (one keyed lookup; no data is read): a
        refusal about a real person is audited under its own reference, one about an id that
        names nobody makes no reference key."""
        if person_id is None or not _PERSON_ID.fullmatch(person_id):
            return False
        return self._store.read(lambda tx: tx.person(person_id)) is not None

    def _record(
        self,
        caller: Caller,
        action: ReadAction,
        purpose: str,
        person_id: str | None,
        decision: Decision,
        reason: str,
        details: Mapping[str, Any] | None = None,
        *,
        known: bool = True,
        shred_generation: int | None = None,
        arrival: Arrival | None = None,
    ) -> None:
        """Audit one decision. ``known``: the person was found in the store; only then may a
        per-person reference key be made (a read of an unknown or unchecked id must not grow
        the vault key file: its reference uses an existing key, else the shared one).
        ``arrival``: the read's announcement, ended by the append (about a person only)."""
        if self.on_decision is not None:
            self.on_decision(purpose, decision == "allow", 1)
        draft = AuditDraft(
            _actor(caller), action.value, purpose, None, decision, reason, details or {}
        )
        if person_id is None:
            self._audit.append([draft])
        else:
            # The log makes the person's reference (person_ref, under the person's own key) in
            # the group commit's writer, for all the persons of a group at once; the entries
            # as recorded are not needed here, so the writer does not build them.
            self._audit.record_about(
                person_id,
                [draft],
                create=known,
                shred_generation=shred_generation,
                arrival=arrival,
            )

    # -- profiles -------------------------------------------------------------------------

    def profile(
        self, caller: Caller, person_id: str, purpose_id: str, arrival: Arrival | None = None
    ) -> Profile:
        """The person's attributes (latest value per name) and events the purpose may see.

        Raises :class:`NotReadableError` when the person is unknown or the read is denied.
        ``arrival``: the read's :meth:`announce_profile` handle, if the caller took one where
        the request arrived (it is ended here, whatever the outcome).
        """
        if arrival is None:
            # Announced from here: while this read decides and decrypts, a concurrent audit
            # writer waits for its entry (briefly) and commits it with the others', one
            # transaction for many reads.
            with self._audit.coming():
                return self._profile(caller, person_id, purpose_id, None)
        try:
            return self._profile(caller, person_id, purpose_id, arrival)
        finally:
            arrival.withdraw()  # a no-op once submitted; a denied read leaves the count

    def announce_profile(self) -> Arrival:
        """Announce a profile read that :meth:`profile` will be given (pass it as
        ``arrival``), from where the caller first knows of it: a server, as the request
        arrives on its event loop, before it hands the read to a worker thread. A lingering
        audit writer then waits for this read's entry too (at most ``group_linger_s``), where an
        announcement made on the worker thread came only after the hand-over: a server's
        concurrent reads were committed in groups of ~7.5 instead of ~9 (bench/README.md)."""
        return self._audit.announce()

    def _profile(
        self, caller: Caller, person_id: str, purpose_id: str, arrival: Arrival | None
    ) -> Profile:
        """:meth:`profile`, announced (``arrival``, or this thread's ``coming()``)."""
        purpose = self._admit_announced(caller, purpose_id, person_id, arrival)
        # The answer is built before the audit append, not after: the append waits for its
        # group's commit (a sleep and a wake-up), and the work left after a wake-up ran on
        # cold caches (its JSON decoding took about twice the CPU of the same work before
        # the wait, py-spy at 16 connections). It is returned only once the entry is durable;
        # if the append fails, the answer is dropped with the error. What only the decision
        # needed (the loaded rows, sealed and plain values, the verdicts) is released before
        # the wait, when _decided_profile returns (see there).
        profile, details, generation = self._decided_profile(
            caller, person_id, purpose_id, purpose, arrival
        )
        self._record(
            caller,
            ReadAction.PROFILE,
            purpose_id,
            person_id,
            "allow",
            profile.consent.reason,
            details,
            shred_generation=generation,
            arrival=arrival,
        )
        return profile

    def _decided_profile(
        self,
        caller: Caller,
        person_id: str,
        purpose_id: str,
        purpose: Purpose,
        arrival: Arrival | None,
    ) -> tuple[Profile, dict[str, Any], int]:
        """An allowed profile read up to its audit: the answer, the audit entry's details and
        the vault shred generation its keys were checked against; a denied one is audited and
        raised here (:class:`NotReadableError`).

        A function of its own so that everything else it loads and makes (the person's rows
        and facts, sealed and decrypted, the decision) is freed when it returns, before the
        caller waits for its audit commit: held through that wait by 16 concurrent reads,
        those objects outlived the cyclic collector's young generation and set it off about
        every 28 reads (an allocation count the frees after a collection no longer lower).
        """
        now = self._clock()
        # One consistent read of the person, its consent records and its facts (still
        # sealed): one statement on SQLite, where it was a transaction of two queries with
        # the decision between them. The decision is made outside the store (its lock is not
        # held for Python work); a denied person's facts were loaded sealed and are dropped
        # undecrypted, as every withheld field is (step 4 of the module docstring).
        rows = (
            self._store.person_read(person_id, (purpose_id,), _PROFILE_KINDS, FactStatus.ACTIVE)
            if _PERSON_ID.fullmatch(person_id)
            else None
        )
        context = None if rows is None else PersonContext(person_id, rows.consents)
        gate = self._policy.decide(caller, context, purpose_id, (), now)
        if not gate.allowed or rows is None or context is None:
            # The facts loaded for the person and withheld whole (0: no such person).
            raise self._profile_denied(
                caller,
                purpose_id,
                person_id,
                gate.reason,
                0 if rows is None else len(rows.facts),
                arrival,
                known=context is not None,
            )
        found = rows.facts
        attributes = latest_by_name([f for f in found if f.kind is FactKind.ATTRIBUTE])
        facts = [*attributes, *(f for f in found if f.kind is FactKind.EVENT)]
        # The same verdicts as deciding again with the fields (with_fields), in compact form.
        mask = self._policy.field_mask(gate, [(f.category, f.at) for f in facts], now)
        allowed = list(compress(facts, mask.allowed))
        # The shred generation the keys were checked against is the one the audit's
        # reference lookup uses: one key-file query per read (Vault.decrypt_and_generation).
        try:
            plain, generation = self._vault.decrypt_and_generation(
                [(f.node_id, f.seal_field, f.sealed) for f in allowed]
            )
        except DataKeyDestroyedError:
            # The graph still names the person, but the vault has shredded keys of values
            # this read would return (an inconsistency made outside the service: an erasure
            # deletes the graph first). The person's data is gone: fail closed exactly as
            # for an unknown person (the same 404, so the answer reveals nothing more), and
            # audit the attempt as the denial it is, like every other read decision.
            raise self._profile_denied(
                caller,
                purpose_id,
                person_id,
                ReadDenied.DATA_KEYS_DESTROYED.value,
                len(found),
                arrival,
            ) from None
        record = gate.consent_record_id
        attributes_out, events_out = profile_values(allowed, plain)
        decided_at = next((r.at for r in context.consents if r.record_id == record), None)
        details = {
            "fields_returned": len(allowed),
            **{f"withheld_{r}": n for r, n in sorted(mask.withheld.items())},
            # An opaque id: checked by its shape (one match), not as free text.
            "consent_record": None if record is None else audit_ref_or_text(record),
        }
        summary = ConsentSummary(purpose_id, purpose.lawful_basis.value, gate.reason, decided_at)
        profile = Profile(person_id, purpose_id, attributes_out, events_out, summary)
        return profile, details, generation

    def _profile_denied(
        self,
        caller: Caller,
        purpose_id: str,
        person_id: str,
        reason: str,
        requested: int,
        arrival: Arrival | None,
        *,
        known: bool = True,
    ) -> NotReadableError:
        """Audit a denied profile read (``requested``: the facts loaded and withheld whole) and
        return the error to raise. ``arrival`` is ended first: the deny is recorded by a
        blocking append, and no lingering writer may wait for this read's entry meanwhile."""
        _withdraw(arrival)
        self._record(
            caller,
            ReadAction.PROFILE,
            purpose_id,
            person_id,
            "deny",
            reason,
            {"fields_requested": requested},
            known=known,
        )
        return NotReadableError()

    # -- audiences: definitions -----------------------------------------------------------

    def define_audience(
        self, caller: Caller, name: str, purpose_id: str, rules: AudienceRules
    ) -> Audience:
        """Validate, PII-scan and store (sealed) an audience definition for ``purpose_id``.

        Rule constants are scanned under their attribute's category (PII it does not allow is
        refused, 422) and the store seals the rules, so no constant is readable at rest.
        """
        purpose = self.admit(caller, purpose_id, ReadAction.DEFINE_AUDIENCE, pointer="#/purpose")
        validate_rules(purpose_id, purpose, self._facts.policy, rules)
        self._facts.check_rule_values(rules.values())
        audience = self._audiences.create(name, purpose_id, rules, caller.key_id, caller.consumer)
        self._record(
            caller,
            ReadAction.DEFINE_AUDIENCE,
            purpose_id,
            None,
            "allow",
            "defined",
            {"audience": AuditRef(audience.audience_id)},
        )
        return audience

    def _owned_audience(self, caller: Caller, audience_id: str) -> Audience:
        """The definition if it exists and belongs to the caller's consumer (or the caller is an
        operator); otherwise 404, never 403, so that another consumer's ids are not confirmed."""
        audience = self._audiences.get(audience_id) if len(audience_id) <= 64 else None
        if audience is None or not caller.owns(audience.owner):
            raise AudienceNotFoundError
        return audience

    def audience(self, caller: Caller, audience_id: str) -> Audience:
        """A stored definition, if the caller may read for its purpose."""
        audience = self._owned_audience(caller, audience_id)
        self.admit(caller, audience.purpose, ReadAction.GET_AUDIENCE)
        return audience

    def audiences(self, caller: Caller) -> list[Audience]:
        """The definitions of the purposes the caller may read for (no personal data)."""
        purposes = None if ALL_PURPOSES in caller.purposes else caller.purposes
        return [a for a in self._audiences.list_audiences(purposes) if caller.owns(a.owner)]

    def preview_audience(
        self, caller: Caller, audience_id: str, max_pages: int = 20
    ) -> AudiencePreview:
        """How many persons are members now, after the policy (consent, restriction, ...).

        Walks member pages (each one audited like :meth:`audience_members`) for at most
        ``max_pages`` scans of :attr:`max_scan` persons; ``complete`` says whether it got to the
        end. Only the count leaves this method.
        """
        audience = self._audiences.get(audience_id) if len(audience_id) <= 64 else None
        if audience is None:
            raise AudienceNotFoundError
        walk = self._walk(caller, audience, {"audience": audience_id, "preview": True}, max_pages)
        return AudiencePreview(
            audience, len(walk.members), walk.scanned, dict(walk.denied), walk.complete
        )

    def current_members(self, caller: Caller, audience: Audience, max_pages: int = 50) -> MemberSet:
        """Every member of ``audience`` now, after the policy, for a caller acting for its
        owner (membership change events). Each page is checked and audited exactly like
        :meth:`audience_members` (details name the audience and ``"changes": true``)."""
        if not caller.owns(audience.owner or audience.created_by):
            raise AudienceNotFoundError
        return self._walk(
            caller,
            audience,
            {"audience": AuditRef(audience.audience_id), "changes": True},
            max_pages,
        )

    def _walk(
        self, caller: Caller, audience: Audience, extra: Mapping[str, Any], max_pages: int
    ) -> MemberSet:
        self.admit(caller, audience.purpose, ReadAction.AUDIENCE)
        members: list[str] = []
        scanned = 0
        denied: Counter[str] = Counter()
        after = ""
        for _ in range(max_pages):
            scan = self._audience_scan(audience, self._clock())
            result = self._scan(caller, audience.purpose, scan, audience.rules, after, MAX_PAGE)
            self._audit_page(caller, ReadAction.AUDIENCE, audience.purpose, result, extra)
            members += [m.row.person_id for m in result.members]
            scanned += result.scanned
            denied.update(result.denied)
            if result.exhausted:
                return MemberSet(tuple(members), scanned, dict(denied), complete=True)
            after = result.last
        return MemberSet(tuple(members), scanned, dict(denied), complete=False)

    # -- member scans ---------------------------------------------------------------------

    def _scan(
        self,
        caller: Caller,
        purpose_id: str,
        scan: MemberScan,
        rules: AudienceRules | None,
        after: str,
        limit: int,
    ) -> _ScanResult:
        """Up to ``limit`` persons after ``after`` that the engine allows and ``rules`` keep."""
        now = self._clock()
        result = _ScanResult([], 0, after, exhausted=False)
        while len(result.members) < limit and result.scanned < self.max_scan:
            chunk = _next_chunk(limit, len(result.members), result.scanned, self.max_scan)
            page = self._store.read(partial(_member_page, scan, result.last, chunk))
            result.scanned += page.scanned
            if page.scanned:
                result.last = page.last_person_id
                # Left out by the store's consent filter (PolicyEngine.consent_filter): persons
                # the engine would deny for these reasons; counted, nothing loaded.
                for exclusion, count in page.excluded.items():
                    result.denied[exclusion.value] += count
                result.members.extend(
                    self._admit_rows(caller, purpose_id, page.rows, rules, now, result)
                )
            if page.scanned < chunk:
                result.exhausted = True
                break
        if len(result.members) > limit:
            # Persons after the last member returned are examined again by the next page.
            del result.members[limit:]
            result.last = result.members[-1].row.person_id
            result.exhausted = False
        return result

    def _admit_rows(
        self,
        caller: Caller,
        purpose_id: str,
        rows: Sequence[MemberRow],
        rules: AudienceRules | None,
        now: datetime,
        result: _ScanResult,
    ) -> list[_Member]:
        denied = result.denied
        if rules is not None and not (rules.attributes or rules.any_of):
            rules = None  # event rules only: the store applied them, nothing is left to match
        if rules is None and not any(row.attributes for row in rows):
            # Nothing loaded and nothing left to match (an event-only audience): of each
            # person's decision only whether it allows, and a denial's reason, are used.
            refusals = self._policy.refusals(
                caller,
                [row.consents if row.grant is None else row.grant for row in rows],
                purpose_id,
                now,
            )
            return _allowed_members(rows, refusals, denied)
        candidates: list[tuple[MemberRow, Sequence[Fact]]] = []
        no_facts: tuple[Fact, ...] = ()
        no_refs: tuple[FieldRef, ...] = ()
        decided: list[tuple[MemberRow, Sequence[Fact]]] = []
        persons: list[tuple[str, Sequence[ConsentRecord] | ConsentGrant, Sequence[FieldRef]]] = []
        for row in rows:
            # A kept person's consent as the store reduced it (a grant), else its records.
            consents = row.consents if row.grant is None else row.grant
            if row.attributes:
                latest = latest_by_name(row.attributes)
                decided.append((row, latest))
                persons.append((row.person_id, consents, _refs(latest)))
            else:
                decided.append((row, no_facts))
                persons.append((row.person_id, consents, no_refs))
        # Every person of the page through the engine at once (the same decisions as decide).
        decisions = self._policy.decide_many(caller, persons, purpose_id, now)
        members: list[_Member] = []
        for (row, facts), decision in zip(decided, decisions, strict=True):
            if not decision.allowed:
                denied[decision.reason] += 1
                continue
            candidates.append((row, _allowed(facts, decision) if facts else no_facts))
        sealed = [(f.node_id, f.seal_field, f.sealed) for _, kept in candidates for f in kept]
        # Per value, not all or nothing: a person whose data keys were shredded while the graph
        # still names them (see profile) is withheld whole and counted, the rest of the page is
        # served (fail closed for that person only; never a 500 for the page).
        plain = self._vault.decrypt_readable(sealed)
        at = 0
        for row, kept in candidates:
            values: dict[str, Any] = {}
            if kept:
                texts = plain[at : at + len(kept)]
                at += len(kept)
                if None in texts:
                    denied[ReadDenied.DATA_KEYS_DESTROYED.value] += 1
                    continue
                values = {
                    f.name: json.loads(t) for f, t in zip(kept, texts, strict=True) if t is not None
                }
            if rules is not None and not rules.matches(values):
                result.denied["rules_not_met"] += 1
                continue
            members.append(_Member(row, values))
        return members

    def _audit_page(
        self,
        caller: Caller,
        action: ReadAction,
        purpose_id: str,
        result: _ScanResult,
        extra: Mapping[str, Any],
    ) -> None:
        by_person = self._audit.person_refs([m.row.person_id for m in result.members])
        refs = [by_person[m.row.person_id] for m in result.members]
        if self.on_decision is not None:
            self.on_decision(purpose_id, True, len(refs))
            self.on_decision(purpose_id, False, sum(result.denied.values()))
        summary: dict[str, Any] = {
            **extra,
            "scanned": result.scanned,
            "members": len(refs),
            # A hex digest: typed as a reference (checked by its shape, not as free text).
            "members_digest": AuditRef(_refs_digest(refs)),
            **{f"denied_{reason}": n for reason, n in sorted(result.denied.items())},
        }
        drafts = [
            AuditDraft(
                _actor(caller),
                action.value,
                purpose_id,
                None,
                "allow" if refs else "deny",
                "page",
                summary,
            )
        ]
        for start in range(0, len(refs), MAX_DETAIL_LIST):
            drafts.append(
                AuditDraft(
                    _actor(caller),
                    action.value,
                    purpose_id,
                    None,
                    "allow",
                    "members",
                    # One typed list per entry, checked by shape once (the references are
                    # plain strings: no object of a Python class per member).
                    {**extra, "refs": AuditRefs(refs[start : start + MAX_DETAIL_LIST])},
                )
            )
        self._audit.append(drafts)

    def _audience_scan(self, audience: Audience, now: datetime) -> MemberScan:
        return MemberScan(
            event_rules=tuple(
                EventCountRule(r.event, now - timedelta(days=r.within_days), r.min_count)
                for r in audience.rules.events
            ),
            attribute_names=audience.rules.attribute_names,
            consent_purposes=(audience.purpose,),
            consent_filter=self._policy.consent_filter(audience.purpose),
        )

    def audience_members(
        self, caller: Caller, audience_id: str, cursor: str | None, limit: int
    ) -> MemberPage:
        """One page of the members of an audience that pass the policy."""
        _check_limit(limit)
        audience = self._owned_audience(caller, audience_id)
        self.admit(caller, audience.purpose, ReadAction.AUDIENCE)
        scope = CursorScope(
            "audience_members", caller.key_id, caller.consumer, audience.purpose, audience_id
        )
        after = self._open_cursor(scope, cursor)
        scan = self._audience_scan(audience, self._clock())
        result = self._scan(caller, audience.purpose, scan, audience.rules, after, limit)
        self._audit_page(
            caller,
            ReadAction.AUDIENCE,
            audience.purpose,
            result,
            {"audience": AuditRef(audience_id)},
        )
        return MemberPage(
            audience_id,
            audience.purpose,
            tuple(m.row.person_id for m in result.members),
            self._seal_cursor(scope, result),
            result.scanned,
        )

    def export_audience(
        self, caller: Caller, audience_id: str, chunk: int = MAX_PAGE
    ) -> Iterator[ActivationRow]:
        """Every member's activation identifiers as SHA-256 of the normalized value.

        Admission and validation happen now (errors raise before anything streams); the rows
        come from the returned iterator, one audited chunk of members at a time.
        """
        _check_limit(chunk)
        audience = self._owned_audience(caller, audience_id)
        purpose = self.admit(caller, audience.purpose, ReadAction.EXPORT)
        if not purpose.activation:
            raise NothingToReadError(
                "no_activation",
                f"purpose {audience.purpose!r} activates no identifier type (activation in "
                "purposes.yaml), so its audiences cannot be exported",
                "#/purpose",
            )
        return self._export_chunks(caller, audience, chunk)

    def _export_chunks(
        self, caller: Caller, audience: Audience, chunk: int
    ) -> Iterator[ActivationRow]:
        after = ""
        while True:
            scan = self._audience_scan(audience, self._clock())
            result = self._scan(caller, audience.purpose, scan, audience.rules, after, chunk)
            rows = self._activation_rows(caller, audience.purpose, result)
            types = Counter(r.identifier_type for r in rows)
            self._audit_page(
                caller,
                ReadAction.EXPORT,
                audience.purpose,
                result,
                {
                    "audience": AuditRef(audience.audience_id),
                    **{f"identifiers_{t}": n for t, n in sorted(types.items())},
                },
            )
            yield from rows
            if result.exhausted:
                return
            after = result.last

    def _activation_rows(
        self, caller: Caller, purpose_id: str, result: _ScanResult
    ) -> list[ActivationRow]:
        """The activation rows of ``result``'s members; a member whose identifiers cannot be
        decrypted (data keys shredded) is dropped from ``result.members`` and counted in
        ``result.denied`` before the page is audited."""
        if not result.members:
            return []
        person_ids = [m.row.person_id for m in result.members]

        def load(tx: GraphTransaction) -> list[list[Fact]]:
            return [
                tx.person_facts(pid, (FactKind.RAW_IDENTIFIER,), FactStatus.ACTIVE)
                for pid in person_ids
            ]

        now = self._clock()
        loaded = self._store.read(load)
        # The same consent snapshot the member was admitted with (its records or the grant they
        # reduce to), now for the identifiers: one engine pass for the chunk.
        decisions = self._policy.decide_many(
            caller,
            [
                (
                    member.row.person_id,
                    member.row.consents if member.row.grant is None else member.row.grant,
                    [
                        FieldRef(f.seal_field, IDENTIFIER_CATEGORY, f.at, identifier_type=f.name)
                        for f in raws
                    ],
                )
                for member, raws in zip(result.members, loaded, strict=True)
            ],
            purpose_id,
            now,
        )
        per_member = [_allowed(raws, d) for raws, d in zip(loaded, decisions, strict=True)]
        plain = self._vault.decrypt_readable(
            [(f.node_id, f.seal_field, f.sealed) for allowed in per_member for f in allowed]
        )
        # The vault holds the normalized value (lower-case email, E.164 phone): exactly what ad
        # platforms expect to be hashed. The raw value never leaves this function.
        rows: list[ActivationRow] = []
        kept: list[_Member] = []
        at = 0
        for member, allowed in zip(result.members, per_member, strict=True):
            texts = plain[at : at + len(allowed)]
            at += len(allowed)
            if None in texts:
                # Data keys shredded while the graph still names the person (see profile): the
                # member is withheld whole, not exported, not listed as released in the audit,
                # and counted by reason; the rest of the chunk is exported.
                result.denied[ReadDenied.DATA_KEYS_DESTROYED.value] += 1
                continue
            kept.append(member)
            rows.extend(
                ActivationRow(f.name, hashlib.sha256(text).hexdigest())
                for f, text in zip(allowed, texts, strict=True)
                if text is not None
            )
        result.members = kept
        return rows

    # -- feature tables -------------------------------------------------------------------

    def features(
        self, caller: Caller, purpose_id: str, cursor: str | None, limit: int
    ) -> FeaturePage:
        """One page of the purpose's feature table, keyed by per-consumer pseudonyms.

        Persons the purpose may read with at least one readable feature value; a feature past
        retention (or never stored) is ``None``.
        """
        _check_limit(limit)
        purpose = self.admit(caller, purpose_id, ReadAction.FEATURES)
        if not purpose.features:
            raise NothingToReadError(
                "no_features",
                f"purpose {purpose_id!r} lists no features in purposes.yaml",
                "#/query/purpose",
            )
        scope = CursorScope("features", caller.key_id, caller.consumer, purpose_id)
        after = self._open_cursor(scope, cursor)
        scan = MemberScan(
            attribute_names=purpose.features,
            consent_purposes=(purpose_id,),
            consent_filter=self._policy.consent_filter(purpose_id),
        )
        result = self._scan(caller, purpose_id, scan, None, after, limit)
        empty = [m for m in result.members if not m.values]
        if empty:
            result.denied["no_feature_values"] += len(empty)
            result.members = [m for m in result.members if m.values]
        self._audit_page(
            caller,
            ReadAction.FEATURES,
            purpose_id,
            result,
            # A key id, not free text: typed so the phone heuristic never judges its digits.
            {"pseudonym_key": AuditRef(self._pseudonyms.key_id)},
        )
        rows = tuple(
            FeatureRow(
                self._pseudonyms.pseudonym(caller.consumer, m.row.person_id),
                {name: m.values.get(name) for name in purpose.features},
            )
            for m in result.members
        )
        return FeaturePage(
            purpose_id,
            purpose.features,
            rows,
            self._seal_cursor(scope, result),
            self._pseudonyms.key_id,
        )

    # -- cursors --------------------------------------------------------------------------

    def _open_cursor(self, scope: CursorScope, cursor: str | None) -> str:
        # Authenticated (privacy.access.cursors), so the position is one this service chose; the
        # pattern check is defence in depth before it reaches a store query.
        after = self._cursors.open(scope, cursor)
        if after and not _PERSON_ID.fullmatch(after):
            raise InvalidCursorError
        return after

    def _seal_cursor(self, scope: CursorScope, result: _ScanResult) -> str | None:
        # Sealed, never encoded: the position is a person id, and a feature table is keyed by
        # pseudonyms precisely so that its consumer never learns person ids.
        position = result.next_position
        return None if position is None else self._cursors.seal(scope, position)


def _allowed_members(
    rows: Sequence[MemberRow], refusals: Sequence[str | None], denied: Counter[str]
) -> list[_Member]:
    """The members of a page when nothing was loaded and nothing is left to match (an
    event-only audience): the persons the engine allowed (``refusals``: ``None``), the others
    counted by reason, without the candidate list and the decrypt pass of the general path
    (~25k members a cold 1M audience)."""
    members: list[_Member] = []
    for row, refused in zip(rows, refusals, strict=True):
        if refused is None:
            members.append(_Member(row, {}))
        else:
            denied[refused] += 1
    return members


def _next_chunk(limit: int, members: int, scanned: int, max_scan: int) -> int:
    """How many persons the next ``member_page`` of a scan reads.

    The first read asks for ``limit`` persons. Later reads ask for what the pass rate seen so far
    (members per person scanned) says is still needed, plus 1 %: the second read completes the
    page or a third, small one does. Asking for ``limit - members`` each time instead (the rate
    ignored) took log-many reads per page at a 50 % pass rate, each a transaction and a query
    plan of its own, twice the ``member_page`` calls of a plain scan of the same persons.
    Over-reading is not free: members past ``limit`` are dropped and their persons examined
    again (read, decoded, decided) by the next page. With 5 % more and later reads of at least
    ``_MIN_CHUNK`` too, a cold 1M audience read 61.4k persons for 58.6k (55 reads); with 1 % and
    later reads of at least ``_MIN_LATER_CHUNK``, 59.6k (63 reads), ~30 ms less CPU. The first
    read never asks for fewer than ``_MIN_CHUNK``; no read goes past ``max_scan``.
    """
    wanted = limit - members
    least = _MIN_CHUNK
    if scanned and members:
        wanted = -(-wanted * scanned * 101 // (members * 100))  # ceil(wanted / rate * 1.01)
        least = _MIN_LATER_CHUNK
    elif scanned:
        wanted = max(wanted, 2 * scanned)  # nothing passed yet: read further, faster
    return max(min(max(wanted, least), max_scan - scanned), 1)


def _member_page(scan: MemberScan, after: str, limit: int, tx: GraphTransaction) -> MemberScanPage:
    return tx.member_page(scan, after, limit)


def _actor(caller: Caller) -> str:
    """The audit actor of a read: the operator for console reads, else ``key_<key id>``."""
    return caller.actor or api_key_actor(caller.key_id)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidFieldError(
            "invalid_limit", f"limit must be between 1 and {MAX_PAGE}", "#/query/limit"
        )
