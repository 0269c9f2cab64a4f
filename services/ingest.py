"""The ingest use case: every path that writes identifiers, facts or consent comes through here.

``POST /v1/identify``, ``POST /v1/ingest``, ``POST /v1/consent``, the consent webhooks, bulk
files (:mod:`services.bulk`) and any future ingest path (a stream consumer) call one
:class:`IngestService`, so they accept exactly the same input and write it the same way:

1. validate and normalize every identifier, PII-scan traits and events (all problems of a
   request in one :class:`~identity.errors.BatchValidationError`: one 422, nothing written);
2. add GPC opt-outs or translate consent signals (TCF, GPP, direct decisions);
3. ingest every event in **one** store transaction; an event with a ``message_id`` applied
   within the message window is answered ``duplicate`` and changes nothing (the engine's keyed
   message-id dedup, the same one the stream consumer relies on, in that same transaction);
4. append one ``consent.recorded`` audit entry per stored consent record, after the commit (see
   :mod:`privacy.consent.recording` for why in that order, and what a failed append means).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from identity.errors import (
    BatchValidationError,
    InputLimitError,
    InvalidFieldError,
    InvalidIdentifierError,
    StoreUnavailableError,
)
from identity.group_commit import Arrival, GroupCommitter
from identity.identifiers import NormalizedIdentifier
from identity.intake import normalize_all
from identity.model import EventOutcome, IdentityEvent
from identity.resolution import PreparedEvents, ResolutionEngine
from identity.store.port import GraphTransaction
from privacy.auditing.log import AuditDraft, AuditLog
from privacy.consent.mappers import MappedIdentifier, MappedPayload
from privacy.consent.recording import ConsentAuditError, consent_audit_drafts, webhook_actor
from privacy.consent.signals import (
    ConsentSignals,
    ConsentSignalTranslator,
    Translation,
    signal_digest,
)
from privacy.consent.webhook_intake import ConsentWebhooks
from privacy.scanning.facts import FactIntake
from services.event_validation import EventValidation, IngestLimits
from services.inputs import ConsentRequest, IdentifyInput, IdentifyRequest
from services.metrics import NoMetrics, StoreOperation, UseCaseMetrics

log = structlog.get_logger("idgraph.consent")


# Concurrent batches written in one transaction at most (each at most IDGRAPH_MAX_BATCH_EVENTS).
_MAX_BATCHES_PER_GROUP = 8
# How long a batch writer waits, at most, for batches already being validated by other callers
# (see IngestService.ingest). A 50-event batch takes a few ms of CPU to validate and prepare;
# with several callers sharing the GIL that is tens of ms of wall time.
_BATCH_LINGER_S = 0.05
# How long an identify writer waits, at most, for identify calls already being validated and
# prepared by other callers (see IngestService.identify): one call takes ~0.3-0.5 ms of CPU
# before it queues, a few ms of wall time with 16 callers sharing the GIL.
_IDENTIFY_LINGER_S = 0.004


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ConsentSubmission:
    """Consent signals as a caller sent them, for the person the identifiers resolve to.

    ``identifiers`` are raw ``(type, value)`` pairs; ``proof`` is the exact bytes that carried
    the signals (their digest is the proof of direct decisions and GPC).
    """

    identifiers: Sequence[tuple[str, str]]
    source: str
    proof: bytes = field(repr=False)
    at: datetime | None = None
    decisions: Mapping[str, bool] = field(default_factory=dict)
    tc_string: str | None = None
    gpp_string: str | None = None
    gpc: bool = False
    # The sender's message id (a stream record's): a redelivery of it is a no-op.
    message_id: str | None = None

    @classmethod
    def from_request(
        cls, body: ConsentRequest, proof: bytes, *, gpc: bool = False, message_id: str | None = None
    ) -> ConsentSubmission:
        """The submission of a validated ``POST /v1/consent`` body (or a stream record of that
        shape); ``proof`` is the exact bytes that carried it."""
        return cls(
            identifiers=[(i.type, i.value) for i in body.identifiers],
            source=body.source,
            proof=proof,
            at=body.timestamp,
            decisions=body.decisions,
            tc_string=body.tcf,
            gpp_string=body.gpp,
            gpc=gpc,
            # A stream record's id wins; an HTTP body names its own.
            message_id=message_id if message_id is not None else body.message_id,
        )


@dataclass(frozen=True, slots=True)
class ConsentResult:
    """What recording consent did: the event's outcome and what the signals translated to."""

    outcome: EventOutcome
    translation: Translation


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """A consent webhook that was accepted: its id, what its payload said, what was written.

    ``outcome`` and ``translation`` are ``None`` when the payload carried no consent
    (``payload.ignored`` says why): the id is used up and nothing else is written.
    """

    webhook_id: str
    payload: MappedPayload
    outcome: EventOutcome | None = None
    translation: Translation | None = None


@dataclass(frozen=True, slots=True)
class _Part:
    """One caller's prepared events in a group commit, with the metrics of the service copy
    that submitted them (copies made by :meth:`IngestService.with_metrics` share the groups,
    and every registry whose events a transaction carried observes that transaction)."""

    prepared: PreparedEvents
    metrics: UseCaseMetrics


class IngestService:
    """Validate, normalize, PII-scan, add consent, write in one transaction, audit."""

    def __init__(
        self,
        engine: ResolutionEngine,
        facts: FactIntake,
        signals: ConsentSignalTranslator,
        webhooks: ConsentWebhooks,
        audit: AuditLog,
        limits: IngestLimits,
        metrics: UseCaseMetrics | None = None,
        clock: Callable[[], datetime] = _utcnow,
        validation_builder: Callable[[], EventValidation] | None = None,
    ) -> None:
        self._engine = engine
        self._facts = facts
        self._signals = signals
        self._webhooks = webhooks
        self._audit = audit
        self._limits = limits
        self._metrics: UseCaseMetrics = metrics or NoMetrics()
        self._clock = clock
        self._validation = EventValidation(engine.policy, facts, limits, clock)
        # How another process builds the same validation from the settings (no store, no
        # keys): a bulk file is then read and validated there (services.bulk_reader). A
        # picklable callable (the bootstrap's), or None: files are read in this process.
        self.validation_builder = validation_builder
        # Concurrent identify calls share one engine batch: one transaction, one vault key
        # commit and one graph commit for all of them (see identity.group_commit).
        # Each caller prepares its events (hashing, key reservation) before it queues, so the
        # writer's turn is the transaction alone (see ResolutionEngine.prepare). Each call is
        # announced while it validates and prepares (see identify), and a writer waits for
        # announced calls (up to _IDENTIFY_LINGER_S) before it takes its group: a transaction
        # costs CPU per commit, not only an fsync (its pages go to the WAL, ~80 KiB for a lone
        # identify), so bigger groups cost less per call. A writer with nobody announced behind
        # it writes at once: a lone caller is never delayed.
        self._identify_group: GroupCommitter[_Part, EventOutcome] = GroupCommitter(
            self._ingest_group, max_group=limits.max_batch_events, linger_s=_IDENTIFY_LINGER_S
        )
        # Concurrent batches (POST /v1/ingest, consent, webhooks) share one transaction the
        # same way: a batch that arrives while another commits waits for that commit only, not
        # for one fsync per batch queued before it. A bulk file's batches come one at a time
        # and are written at once, alone. Bounded, so a group stays a few thousand events.
        #
        # Batches of POST /v1/ingest are announced while they are validated (see ingest), and
        # a writer waits for announced batches (up to _BATCH_LINGER_S) before it takes its
        # group: a small commit costs more CPU per event than a large one, not only an fsync
        # (its pages are written to the WAL at random positions, one per row or so), and four
        # callers otherwise shared a transaction two at a time. A writer with no announced
        # batch behind it writes at once, so a lone caller is never delayed.
        self._batch_group: GroupCommitter[_Part, list[EventOutcome]] = GroupCommitter(
            self._ingest_batches, max_group=_MAX_BATCHES_PER_GROUP, linger_s=_BATCH_LINGER_S
        )

    def with_metrics(self, metrics: UseCaseMetrics) -> IngestService:
        """The same service reporting to ``metrics`` (each app has its own registry).

        The copy shares this service's group committers: a batch submitted through either
        shares transactions with the other's, and a writer lingers for arrivals announced to
        either (an app's ``app.state.ingest`` and its container's ``ingest`` are two copies;
        with committers of their own, their concurrent batches were never written together).
        """
        clone = copy.copy(self)
        clone._metrics = metrics
        return clone

    @property
    def metrics(self) -> UseCaseMetrics:
        """Where this copy reports (:meth:`with_metrics`; nowhere by default)."""
        return self._metrics

    @property
    def identifier_types(self) -> tuple[str, ...]:
        """The identifier types the identity policy declares (bulk CSV columns)."""
        return self._validation.identifier_types

    @property
    def validation(self) -> EventValidation:
        """What :meth:`events` runs: validation alone (no store)."""
        return self._validation

    # -- identify / ingest ---------------------------------------------------------------------

    def event(self, request: IdentifyRequest | IdentifyInput, pointer: str = "#") -> IdentityEvent:
        """Validate, normalize and PII-scan one request; every problem in one
        :class:`BatchValidationError` located under ``pointer``. Writes nothing."""
        (result,) = self.events([request], [pointer])
        if isinstance(result, InputLimitError | BatchValidationError):
            raise result
        return result

    def events(
        self,
        requests: Sequence[IdentifyRequest | IdentifyInput],
        pointers: Sequence[str] | None = None,
    ) -> list[IdentityEvent | InputLimitError | BatchValidationError]:
        """:meth:`event` for several requests (:meth:`EventValidation.events`). Writes
        nothing."""
        return self._validation.events(requests, pointers)

    def identify(
        self,
        request: IdentifyRequest | IdentifyInput,
        *,
        actor: str,
        gpc_proof: bytes | None = None,
        arrival: Arrival | None = None,
    ) -> EventOutcome:
        """Link the identifiers of one event, with its traits and events.

        With ``gpc_proof`` (the bytes of a request that carried ``Sec-GPC: 1``), GPC opt-outs
        are recorded for the person in the same transaction and audited as ``actor``.
        ``arrival``: the call's :meth:`announce_identify` handle, if the caller took one (it is
        ended here, whatever the outcome).
        """
        if arrival is not None:
            try:
                return self._identify(request, actor, gpc_proof, arrival)
            finally:
                arrival.withdraw()  # a no-op once submitted; a refused call leaves the queue
        # Announced from here until submitted (or refused): a writer that takes its group
        # meanwhile waits for this call (briefly), so concurrent calls share transactions.
        with self._identify_group.coming():
            return self._identify(request, actor, gpc_proof, None)

    def announce_identify(self) -> Arrival:
        """Announce an identify call that :meth:`identify` will be given (pass it as
        ``arrival``), from where the caller first knows of it: a server, once the request is
        authenticated, before it hands the call to a worker thread. An identify writer waits for
        announced calls (up to ``_IDENTIFY_LINGER_S``), so concurrent calls share transactions.
        ``identify`` ends the announcement; a caller that does not call it ends it with
        ``withdraw()``."""
        return self._identify_group.announce()

    def _identify(
        self,
        request: IdentifyRequest | IdentifyInput,
        actor: str,
        gpc_proof: bytes | None,
        arrival: Arrival | None,
    ) -> EventOutcome:
        event = self.event(request)
        if gpc_proof is not None:
            event = self._with_gpc(event, gpc_proof)
        # Group commit: resolved in one engine batch with the identify calls that arrive while
        # the previous batch commits (in arrival order, each seeing the ones before it, as if
        # committed one after another). Returns once the batch holding this event committed.
        part = _Part(self._engine.prepare([event]), self._metrics)
        outcome = self._identify_group.submit(part, arrival)
        self._metrics.record_ingest([outcome])
        self._audit_consents(actor, [event], [outcome])
        return outcome

    def _ingest_group(self, parts: Sequence[_Part]) -> list[EventOutcome]:
        """One transaction for the parts of a group, timed once for each distinct metrics sink
        among them (uses no per-copy state: the committers are shared, see with_metrics)."""
        with ExitStack() as timed:
            for metrics in {id(part.metrics): part.metrics for part in parts}.values():
                timed.enter_context(metrics.time_store(StoreOperation.INGEST))
            return self._engine.ingest_prepared([part.prepared for part in parts])

    def _ingest_batches(self, batches: Sequence[_Part]) -> list[list[EventOutcome]]:
        """Several callers' batches in one engine batch (in order: each sees the ones before
        it, as if committed one after another); the outcomes split back per batch."""
        outcomes = self._ingest_group(batches)
        split: list[list[EventOutcome]] = []
        start = 0
        for batch in batches:
            split.append(outcomes[start : start + len(batch.prepared.events)])
            start += len(batch.prepared.events)
        return split

    def announce_batch(self) -> Arrival:
        """Announce a batch that :meth:`ingest` will be given (pass it as ``arrival``), from
        where the caller first knows of it: a server, when the request arrives, before it
        decodes and validates the body. A batch writer waits for announced batches (up to
        ``_BATCH_LINGER_S``), so concurrent batches share bigger transactions. ``ingest``
        ends the announcement; a caller that does not call it ends it with ``withdraw()``."""
        return self._batch_group.announce()

    def ingest(
        self,
        requests: Sequence[IdentifyRequest | IdentifyInput],
        *,
        actor: str,
        gpc_proof: bytes | None = None,
        arrival: Arrival | None = None,
    ) -> list[EventOutcome]:
        """Resolve a batch of events in one transaction; all or nothing on invalid input.

        Errors are located at ``#/events/{index}/...``. With ``gpc_proof``, as :meth:`identify`.
        ``arrival``: the batch's :meth:`announce_batch` handle, if the caller took one (it is
        ended here, whatever the outcome).
        """
        if arrival is not None:
            try:
                self._check_batch_size(requests)
                return self._ingest(requests, actor, gpc_proof, arrival)
            finally:
                arrival.withdraw()  # a no-op once submitted; a refused batch leaves the queue
        self._check_batch_size(requests)
        # Announced from here until submitted (or refused): a writer that takes its group
        # meanwhile waits for this batch, so concurrent batches share bigger transactions.
        with self._batch_group.coming():
            return self._ingest(requests, actor, gpc_proof, None)

    def _check_batch_size(self, requests: Sequence[object]) -> None:
        if len(requests) > self._limits.max_batch_events:
            raise InputLimitError(
                "#/events",
                f"at most {self._limits.max_batch_events} events per batch "
                "(IDGRAPH_MAX_BATCH_EVENTS)",
            )

    def _ingest(
        self,
        requests: Sequence[IdentifyRequest | IdentifyInput],
        actor: str,
        gpc_proof: bytes | None,
        arrival: Arrival | None,
    ) -> list[EventOutcome]:
        events = self._validated(requests, gpc_proof)
        return self._commit_batch(self.prepare(events), actor, arrival)

    def validate_batch(
        self, requests: Sequence[IdentifyRequest | IdentifyInput], *, gpc_proof: bytes | None
    ) -> list[IdentityEvent]:
        """The validation of :meth:`ingest`, alone: the batch's events validated, normalized,
        PII-scanned (and with GPC opt-outs for ``gpc_proof``), or the same
        :class:`InputLimitError` / :class:`BatchValidationError` (every error, located at
        ``#/events/{index}/...``). Writes nothing: for a caller that applies them later
        (asynchronous ingest, :mod:`services.async_ingest`)."""
        self._check_batch_size(requests)
        return self._validated(requests, gpc_proof)

    def apply_validated(
        self,
        batches: Sequence[tuple[str, Sequence[IdentityEvent]]],
        then: Callable[[GraphTransaction, list[list[EventOutcome]]], None],
        on_audit_failure: Callable[[int, ConsentAuditError], None] | None = None,
        ahead: Sequence[PreparedEvents] = (),
    ) -> list[list[EventOutcome]]:
        """Write ``(actor, events)`` batches of :meth:`validate_batch` in **one** transaction
        (in order, each seeing the ones before it), as :meth:`ingest` writes one: the same
        resolution, message-id dedup, metrics and ``consent.recorded`` audit entries (after the
        commit, per batch under its actor). ``then(tx, outcomes per batch)`` runs last inside the
        transaction. Returns the outcomes per batch.

        A failed audit append (:class:`ConsentAuditError`) is logged (``consent_audit_missing``
        holds the entries) and does not undo what was committed; ``on_audit_failure(batch
        index, error)`` is told (the error carries the entries, for
        :meth:`retry_consent_audit`).

        ``ahead``: parts holding the first events of ``batches`` in order, prepared already by
        :meth:`prepare` while an earlier write committed (each used once; the rest are
        prepared here)."""
        # Prepared as one part, as a bulk batch is: one key reservation for the whole
        # transaction instead of one per queued batch (the events keep their order).
        sizes = [len(events) for _, events in batches]
        events_in_order = [event for _, events in batches for event in events]
        parts = list(ahead)
        leading = [event for part in parts for event in part.events]
        if any(a is not b for a, b in zip(leading, events_in_order, strict=False)):
            raise ValueError("the events prepared ahead are not the first events of the batches")
        rest = events_in_order[len(leading) :]
        if rest or not parts:
            parts.append(self.prepare(rest))

        def split(outcomes: list[EventOutcome]) -> list[list[EventOutcome]]:
            out: list[list[EventOutcome]] = []
            start = 0
            for size in sizes:
                out.append(outcomes[start : start + size])
                start += size
            return out

        with self._metrics.time_store(StoreOperation.INGEST):
            outcomes = self._engine.ingest_prepared(
                parts, then=lambda tx, done: then(tx, split(done))
            )
        per_batch = split(outcomes)
        for index, ((actor, events), done) in enumerate(zip(batches, per_batch, strict=True)):
            self._metrics.record_ingest(done)
            try:
                self._audit_consents(actor, events, done)
            except ConsentAuditError as exc:  # logged; the batch itself is committed
                if on_audit_failure is not None:
                    on_audit_failure(index, exc)
        return per_batch

    def _validated(
        self, requests: Sequence[IdentifyRequest | IdentifyInput], gpc_proof: bytes | None
    ) -> list[IdentityEvent]:
        events: list[IdentityEvent] = []
        errors: list[InvalidFieldError] = []
        pointers = [f"#/events/{index}" for index in range(len(requests))]
        for result in self.events(requests, pointers):
            if isinstance(result, InputLimitError):
                raise result
            if isinstance(result, BatchValidationError):
                errors.extend(result.errors)
            else:
                events.append(result)
        if errors:
            raise BatchValidationError(errors)
        if gpc_proof is not None:
            events = [self._with_gpc(event, gpc_proof) for event in events]
        return events

    def commit(self, events: Sequence[IdentityEvent], actor: str) -> list[EventOutcome]:
        """Ingest validated ``events`` in one transaction, then audit the consent records they
        stored (none for events without consent inputs).

        Group commit: the transaction may also hold batches other callers committed at the same
        moment (see ``_batch_group``); it returns once it committed. If the shared transaction
        fails, each batch is written again alone, so this batch is still all or nothing.
        """
        # Prepared here, by the caller, while the writer may be committing another group.
        return self.commit_prepared(self.prepare(events), actor)

    def prepare(self, events: Sequence[IdentityEvent]) -> PreparedEvents:
        """The part of :meth:`commit` that needs no transaction (hashing, message digests,
        ids with stored keys: :meth:`ResolutionEngine.prepare`). Writes no graph. For a caller
        that prepares one batch while its previous one commits (bulk files)."""
        return self._engine.prepare(events)

    def commit_prepared(self, prepared: PreparedEvents, actor: str) -> list[EventOutcome]:
        """:meth:`commit` of a batch :meth:`prepare` made (once: its reserved ids are used by
        this write)."""
        return self._commit_batch(prepared, actor, None)

    def _commit_batch(
        self, prepared: PreparedEvents, actor: str, arrival: Arrival | None
    ) -> list[EventOutcome]:
        outcomes = (
            self._batch_group.submit(_Part(prepared, self._metrics), arrival)
            if prepared.events
            else []
        )
        self._metrics.record_ingest(outcomes)
        self._audit_consents(actor, prepared.events, outcomes)
        return outcomes

    def retry_consent_audit(self, error: ConsentAuditError) -> None:
        """Append the entries a :class:`ConsentAuditError` says are missing (raises
        :class:`StoreUnavailableError` while the audit log stays unavailable).

        For callers that can hold their input back until the entries exist (the stream worker
        keeps its offsets uncommitted): a redelivery would be a message-id duplicate and would
        not write them again.
        """
        self._audit.append(list(error.drafts))

    def _with_gpc(self, event: IdentityEvent, body: bytes) -> IdentityEvent:
        # The proof is the digest of the request body that carried the header (the header
        # itself is the same bytes for everyone, so it proves nothing on its own).
        gpc = self._signals.gpc(event.occurred_at, signal_digest(body))
        return dataclasses.replace(event, consents=(*event.consents, *gpc))

    # -- consent -------------------------------------------------------------------------------

    def record_consent(self, submission: ConsentSubmission, *, actor: str) -> ConsentResult:
        """Record consent signals (decisions, TCF, GPP, GPC) for the person the identifiers
        resolve to: the identifiers are linked as by :meth:`identify` and the records stored
        with them in one transaction, then audited. All problems in one 422."""
        now = self._clock()
        limit = self._limits.max_identifiers_per_event
        if len(submission.identifiers) > limit:
            raise InputLimitError(
                "#/identifiers",
                f"at most {limit} identifiers per event (IDGRAPH_MAX_IDENTIFIERS_PER_EVENT)",
            )
        errors: list[InvalidFieldError] = []
        identifiers: tuple[NormalizedIdentifier, ...] = ()
        translation = Translation(())
        try:
            identifiers = normalize_all(
                submission.identifiers,
                self._engine.policy,
                self._limits.default_region,
                "#/identifiers",
            )
        except BatchValidationError as exc:
            errors.extend(exc.errors)
        at = submission.at or now
        signals = ConsentSignals(
            at=at,
            body_digest=signal_digest(submission.proof),
            decisions=submission.decisions,
            tc_string=submission.tc_string,
            gpp_string=submission.gpp_string,
            gpc=submission.gpc,
        )
        try:
            translation = self._signals.translate(signals, now)
        except (BatchValidationError, InvalidFieldError) as exc:
            errors.extend(exc.errors if isinstance(exc, BatchValidationError) else [exc])
        if errors:
            raise BatchValidationError(errors)
        event = IdentityEvent(
            identifiers,
            submission.source,
            at,
            consents=translation.consents,
            message_id=submission.message_id,
        )
        (outcome,) = self.commit([event], actor)
        return ConsentResult(outcome, translation)

    def consent_webhook(
        self, source: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResult:
        """Apply a consent change a CMP posted, authenticated by its Standard Webhooks signature.

        Audited as the source's webhook actor (``webhook:<source>``).

        The ``webhook-id`` is the idempotency key: a second delivery of an accepted id is
        refused (``replayed``) and writes nothing.
        """
        webhooks = self._webhooks
        # 1. Signature first: nothing about the body is looked at before it is authenticated.
        verified = webhooks.verify(source, headers, body)
        # 2. Map and validate before the id is used up: a payload that cannot be applied is
        #    refused with 422 and the sender's retry gets the same answer (not "replayed").
        mapped = webhooks.mapper(source).map(body)
        if mapped.signals is None:
            webhooks.claim(source, verified)
            return WebhookResult(verified.webhook_id, mapped)
        errors: list[InvalidFieldError] = []
        identifiers: tuple[NormalizedIdentifier, ...] = ()
        translation = Translation(())
        try:
            identifiers = self._normalize_mapped(mapped.identifiers)
        except BatchValidationError as exc:
            errors.extend(exc.errors)
        try:
            translation = self._signals.translate(mapped.signals, self._clock())
        except (BatchValidationError, InvalidFieldError) as exc:
            errors.extend(exc.errors if isinstance(exc, BatchValidationError) else [exc])
        if errors:
            raise BatchValidationError(errors)
        event = IdentityEvent(
            identifiers, f"cmp:{source}", mapped.signals.at, consents=translation.consents
        )
        # 3. Claim the id (401 "replayed" if taken), 4. write; on any failure give the id back
        #    so the sender's retry is applied: a retry records the same decisions at the same
        #    time.
        webhooks.claim(source, verified)
        try:
            (outcome,) = self.commit([event], webhook_actor(source))
        except BaseException:
            webhooks.release(source, verified)
            raise
        return WebhookResult(verified.webhook_id, mapped, outcome, translation)

    def _normalize_mapped(
        self, identifiers: Sequence[MappedIdentifier]
    ) -> tuple[NormalizedIdentifier, ...]:
        """Normalize identifiers a webhook payload named; errors at their own pointers."""
        normalized: list[NormalizedIdentifier] = []
        errors = []
        for item in identifiers:
            try:
                normalized.append(
                    self._engine.policy.normalize(
                        item.type, item.value, self._limits.default_region
                    )
                )
            except InvalidIdentifierError as exc:
                errors.append(exc.at(item.pointer))
        if errors:
            raise BatchValidationError(list(errors))
        return tuple(normalized)

    def _audit_consents(
        self, actor: str, events: Sequence[IdentityEvent], outcomes: Sequence[EventOutcome]
    ) -> None:
        """Append one ``consent.recorded`` entry per stored consent record (after the commit).

        Raises :class:`ConsentAuditError` (503) when the append fails; the error log line
        ``consent_audit_missing`` then holds what the entries would have held (no personal
        data).
        """
        drafts: list[AuditDraft] = []
        recorded = [
            (event, outcome.person_id)
            for event, outcome in zip(events, outcomes, strict=True)
            if outcome.consents_recorded and outcome.person_id is not None
        ]
        # One reference-key lookup for the whole batch, not one per event.
        refs = self._audit.person_refs([p for _, p in recorded]) if recorded else {}
        for event, person_id in recorded:
            drafts += consent_audit_drafts(actor, refs[person_id], event.source, event.consents)
        if not drafts:
            return
        try:
            self._audit.append(drafts)
        except StoreUnavailableError as exc:
            log.exception(
                "consent_audit_missing",
                error=type(exc).__name__,
                actor=actor,
                entries=[
                    {
                        "purpose": d.purpose,
                        "person_ref": d.person_id,
                        "decision": d.decision,
                        "details": dict(d.details),
                    }
                    for d in drafts
                ],
            )
            raise ConsentAuditError(len(drafts), drafts, outcomes) from exc
