"""The DSR service: accept requests, process the queue, deliver webhooks, expire exports.

Lifecycle of a request: ``pending`` (accepted and stored; its legal clock runs from the submitted
time) → ``in_progress`` (claimed by a worker: :meth:`DsrService.process_pending`, called by the
CLI ``idgraph dsr process`` or the in-process background worker) → ``completed`` or ``failed``;
``cancelled`` while still pending. A worker that dies mid-request leaves it ``in_progress``; after
``stale_after`` another worker claims it again (every request type is idempotent: erasing an erased
subject erases nothing, a repeated restriction record at the same time changes no state). A store
outage puts the request back to ``pending``; after ``max_attempts`` attempts it fails.

Request ids are the client's and idempotent: a replay with the same content returns the stored
request; different content under the same id is a conflict. "Same content" is decided by a
fingerprint: an HMAC (under the identifier hash key) over the request's canonical form including
the normalized subject identities. Keyed, because an unkeyed digest over identifiers could be
reversed by guessing, and the fingerprint outlives the request's subject hashes.

How each type is processed:

* **erasure**: :class:`privacy.dsr.erasure.ErasureService` (persons, facts, consents, links, vault
  keys, suppression), then one signed webhook per registered downstream destination.
* **access / portability**: the export (:mod:`privacy.dsr.export`), sealed by the vault under a
  key of its own and downloadable until ``export_ttl`` has passed; then the blob is deleted and the
  key shredded (:meth:`DsrService.sweep_exports`).
* **restriction / objection**: consent records (signal ``restriction``, purpose ``"*"``; signal
  ``objection`` per purpose) anchored through the resolution engine to one existing identifier of
  each person the subject resolves to: the policy engine then denies reads
  (:mod:`privacy.consent.state`), like any other consent change. Identifiers that are not in the
  graph get nothing: a DSR never creates a person. ``action: lift`` records the withdrawal.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import structlog

from identity.errors import (
    BatchValidationError,
    IdGraphError,
    InvalidFieldError,
    StoreUnavailableError,
)
from identity.hashing import HashedIdentifier, Keyring
from identity.identifiers import NormalizedIdentifier
from identity.intake import normalize_all
from identity.model import (
    RESTRICTION_PURPOSE,
    ConsentInput,
    ConsentSignal,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    IdentityEvent,
)
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore, GraphTransaction
from privacy.access.cursors import CursorCodec, CursorScope
from privacy.access.pseudonyms import FeaturePseudonymizer
from privacy.access.purposes import PurposesPolicy
from privacy.auditing.log import AuditDraft, AuditLog, AuditRef, audit_ref_or_text, is_audit_ref
from privacy.dsr import export as exports
from privacy.dsr.deadlines import Deadline
from privacy.dsr.delivery import (
    Destination,
    WebhookSender,
    backoff,
)
from privacy.dsr.delivery import payload as webhook_payload
from privacy.dsr.erasure import HELD_GRACE, ErasureNotifier, HeldNotices
from privacy.dsr.model import (
    EXPORT_TYPES,
    REQUEST_ID,
    DeliveryState,
    DsrAction,
    DsrCaller,
    DsrConflictError,
    DsrNotFoundError,
    DsrRequest,
    DsrStateError,
    DsrStatus,
    DsrSubmission,
    DsrType,
    ExportExpiredError,
    ExportNotReadyError,
    MultiplePersonsError,
    NewRequest,
    SubjectHash,
)
from privacy.dsr.recipients import (
    RECIPIENT_PREFIX,
    NoticeKeys,
    Received,
    hashed_identifier,
    notice_body,
    received,
)
from privacy.dsr.store import Claimed, DsrStore
from privacy.keys.vault import ShredIncompleteError, Vault, VaultError
from privacy.scanning.redaction import redact_text
from privacy.transport.outbound import DestinationRefusedError, OutboundPolicy, PinnedWebhookSender
from privacy.transport.webhooks import new_webhook_id, sign_headers

log = structlog.get_logger("idgraph.dsr")

SUBJECTS_FIELD = "dsr:subjects"
EXPORT_FIELD = "dsr:export"
NOTICE_FIELD = "dsr:notice"
# Request types whose recipients are told (Art. 17(2) and 19; objections too, so that a
# recipient processing for an objected purpose stops).
NOTIFIED_TYPES = frozenset(
    {DsrType.ERASURE, DsrType.RESTRICTION, DsrType.OBJECTION, DsrType.RECTIFICATION}
)
# What a rectification names as corrected: an attribute, event or identifier type name.
RECTIFIED_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
Outgoing = tuple[str, str, str, str, bytes]  # (destination, url, webhook id, event, payload)
MAX_FUTURE_SKEW = timedelta(hours=24)
MIN_YEAR = 1000
SOURCE = "dsr"  # the source of consent records a DSR writes


def _is_audit_ref_or_text(request_id: str) -> bool:
    """Whether a request id may be recorded: a reference shape, or a short digit run.

    Ids with a letter and date-stamped ids (``2026-1202-355274``) are :class:`AuditRef` shapes;
    a digit run is admitted only while it is too short to be a phone number (``0042``).
    """
    return is_audit_ref(request_id) or redact_text(request_id) == request_id


def subjects_owner(request_id: str) -> str:
    """The vault owner whose data key seals a request's subject identities."""
    return f"dsr:{request_id}"


def export_owner(request_id: str) -> str:
    """The vault owner whose data key seals a request's access export."""
    return f"dsr-export:{request_id}"


def notice_owner(webhook_id: str) -> str:
    """The vault owner whose data key seals one recipient notice in the outbox."""
    return f"dsr-notice:{webhook_id}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Eraser(Protocol):
    """What erasure requests need (:class:`privacy.dsr.erasure.ErasureService`)."""

    def erase(
        self, identifiers: Sequence[NormalizedIdentifier], request_id: str, actor: str
    ) -> object:
        """Erase the persons ``identifiers`` resolve to; returns a result with int counts."""
        ...

    def recover(self) -> int:
        """Finish erasures interrupted after their graph commit; returns how many."""
        ...

    def attach_notifier(self, notifier: ErasureNotifier) -> None:
        """Have every erasure tell the recipients of the persons it erases."""
        ...


def _unreadable_count(unreadable: int) -> dict[str, int]:
    """``recipient_keys_unreadable`` for a request's result, only when some were: the result of
    a request whose recipients got every key they hold keeps its usual shape."""
    return {"recipient_keys_unreadable": unreadable} if unreadable else {}


def result_counts(result: object) -> dict[str, int]:
    """The integer fields of an erasure result (a dataclass), as the request's result summary."""
    names = [f.name for f in fields(result)] if hasattr(result, "__dataclass_fields__") else []  # type: ignore[arg-type]
    return {
        name: value
        for name in names
        if isinstance(value := getattr(result, name), int) and not isinstance(value, bool)
    }


@dataclass(frozen=True, slots=True)
class DsrConfig:
    """How the service behaves; built from settings by the wiring code."""

    deadlines: Mapping[str, Deadline]
    default_regulation: str
    export_ttl: timedelta
    destinations: Mapping[str, Destination]
    # Recipient notice endpoints by API key consumer (IDGRAPH_DSR_RECIPIENTS).
    recipients: Mapping[str, Destination] = field(default_factory=dict)
    callback_secrets: tuple[str, ...] = ()
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    max_attempts: int = 3
    stale_after: timedelta = timedelta(minutes=10)
    webhook_max_attempts: int = 8
    webhook_backoff: timedelta = timedelta(seconds=30)
    webhook_backoff_cap: timedelta = timedelta(hours=1)
    webhook_timeout_seconds: float = 10.0
    default_region: str | None = None  # for phone numbers without a country code
    unread_retention_days: int = 30  # retention of categories no purpose reads (exports say it)


@dataclass(frozen=True, slots=True)
class Submitted:
    """The stored request and whether this call created it (``False``: an idempotent replay)."""

    request: DsrRequest
    created: bool


@dataclass(frozen=True, slots=True)
class WorkReport:
    """What one worker pass did."""

    processed: int = 0
    completed: int = 0
    failed: int = 0
    requeued: int = 0
    deliveries_sent: int = 0
    deliveries_failed: int = 0
    exports_destroyed: int = 0
    erasures_recovered: int = 0


class DsrService:
    """Data-subject requests end to end; see the module docstring."""

    def __init__(
        self,
        store: DsrStore,
        graph: GraphStore,
        engine: ResolutionEngine,
        vault: Vault,
        keyring: Keyring,
        identity_policy: IdentityPolicy,
        purposes: PurposesPolicy,
        audit: AuditLog,
        eraser: Eraser,
        config: DsrConfig,
        sender: WebhookSender | None = None,
        recipient_name: Callable[[str], str] = str,
        clock: Callable[[], datetime] = _utcnow,
        consumer_of: Callable[[str], str | None] = lambda _actor: None,
    ) -> None:
        if config.default_regulation not in config.deadlines:
            raise ValueError("the default regulation needs a deadline")
        self.store = store
        self._graph = graph
        self._engine = engine
        self._vault = vault
        self._keyring = keyring
        self._cursors = CursorCodec(keyring)
        self._identity_policy = identity_policy
        self._purposes = purposes
        self._audit = audit
        self._eraser = eraser
        self.config = config
        self._sender: WebhookSender = sender or PinnedWebhookSender(config.outbound)
        self._recipient_name = recipient_name
        self._consumer_of = consumer_of
        self._pseudonyms = FeaturePseudonymizer(keyring)
        self.clock = clock
        # Called with (depth, oldest age in seconds) whenever the queue is looked at (metrics).
        # Called with (depth, oldest age in seconds, overdue requests) (metrics).
        self.on_queue: Callable[[int, float, int], None] | None = None
        # A shred whose WAL truncation was blocked by a reader; True at start so the first
        # worker pass also finishes one a previous process left pending.
        self.truncation_pending = True
        # The erasure request being run, by request id, for its recipients' notices (hold()).
        self._erasing: dict[str, DsrRequest] = {}
        # Every erasure path (requests, the persons they follow through refusals, retention)
        # tells the recipients through this service's outbox.
        eraser.attach_notifier(self)

    @property
    def identity_policy(self) -> IdentityPolicy:
        """The identity policy subject identities are normalized with."""
        return self._identity_policy

    # -- submission ------------------------------------------------------------------------

    def submit(self, submission: DsrSubmission, caller: DsrCaller) -> Submitted:
        """Accept a request (idempotent by request id); raises 422/409 errors, writes nothing
        on a 4xx. Every problem of ``submission`` (subject identities, callback URLs, type,
        purposes, regulation, times) is reported in one :class:`BatchValidationError`.

        The request belongs to ``caller.owner``. A request id already used by another owner is
        a 409 like any other reuse (the id space is shared), with the same message, so the
        answer does not tell whether the other request is someone else's."""
        requester = caller.actor
        now = self.clock()
        new, subjects = self._validate(submission, now)
        existing = self.store.get(new.request_id)
        if existing is not None:
            return Submitted(self._replayed(existing, submission, subjects, caller), created=False)
        persons = len({node.person_id for _, node in self._find(subjects)})
        if persons > 1 and not submission.confirm_multiple_persons:
            raise MultiplePersonsError(persons)
        key_id = self._keyring.primary_key_id
        fingerprint = self._fingerprint(submission, subjects, key_id)
        unique = {(s.type, s.value): s for s in subjects}
        hashes = [self._keyring.hash(s) for s in unique.values()]
        sealed = self._vault.encrypt(
            subjects_owner(new.request_id),
            SUBJECTS_FIELD,
            json.dumps([[s.type, s.value] for s in unique.values()]).encode(),
        )
        stored = self.store.insert(
            new,
            received_at=now,
            due_at=self.due_date(new, now),
            subject_types=sorted({s.type for s in unique.values()}),
            subject_hashes=[SubjectHash(h.type, h.key_id, h.digest.hex()) for h in hashes],
            requester=requester,
            owner=caller.owner,
            fingerprint=fingerprint,
            fingerprint_key=key_id,
            sealed_subjects=sealed,
        )
        if stored is None:  # another submission of the same id won the race
            raced = self.store.get(new.request_id)
            if raced is None:  # pragma: no cover - rows are never deleted
                raise DsrNotFoundError(new.request_id)
            return Submitted(self._replayed(raced, submission, subjects, caller), created=False)
        self._audit_append(
            AuditDraft(
                actor=requester,
                action="dsr.received",
                reason=f"{new.type.value} request received",
                details={
                    "request_id": audit_ref_or_text(new.request_id),
                    "type": new.type,
                    "action": new.action,
                    "regulation": new.regulation,
                    "subject_types": sorted({s.type for s in subjects}),
                    "due_at": _iso(stored.request.due_at),
                    "overdue_at_intake": stored.request.due_at <= now,
                },
            )
        )
        log.info(
            "dsr_received",
            request_id=new.request_id,
            type=new.type.value,
            requester=requester,
            subjects=len(unique),
        )
        self.publish_queue()
        return Submitted(stored.request, created=True)

    def due_date(self, new: NewRequest, received_at: datetime) -> datetime:
        """When the answer is due: the regulation's period for the type, counted from the
        earlier of receipt and the submitted time, in UTC.

        The earlier one: a subject's request made on 1 March and forwarded on 10 March is due a
        month after 1 March (Art. 12(3) runs from receipt by the controller, of which a DSR tool
        is a part), and a ``submitted_time`` in the future cannot start the clock late. In UTC:
        the same instant written with two offsets must give one due date (calendar arithmetic on
        a local wall-clock time would land 24 h apart across a midnight).
        """
        start = min(new.submitted_at, received_at).astimezone(UTC)
        return self.config.deadlines[new.regulation].period(new.type.value).after(start)

    def _validate(
        self, submission: DsrSubmission, now: datetime
    ) -> tuple[NewRequest, tuple[NormalizedIdentifier, ...]]:
        """The request to store and its normalized subjects, or every problem in one 422."""
        errors: list[InvalidFieldError] = []

        def bad(pointer: str, reason: str, message: str) -> None:
            errors.append(InvalidFieldError(reason, message, pointer))

        subjects = self._submitted_subjects(submission, errors)
        new = NewRequest(
            request_id=submission.request_id,
            type=submission.type,
            action=submission.action,
            purposes=tuple(submission.purposes),
            regulation=submission.regulation or self.config.default_regulation,
            submitted_at=submission.submitted_at or now,
            callback_urls=tuple(submission.callback_urls),
            rectified=tuple(dict.fromkeys(submission.rectified)),
        )
        # A request id is a reference, not free text: checked by the audit reference shape (it
        # goes into the audit log as an AuditRef), never by the free-text phone heuristic, which
        # refused date-stamped ticket ids such as 2026-1202-355274.
        if not REQUEST_ID.fullmatch(new.request_id) or not _is_audit_ref_or_text(new.request_id):
            bad(
                "#/request_id",
                "invalid_request_id",
                "request_id must be 1-128 of A-Z a-z 0-9 _ . : - and must not look like an "
                "email address or phone number (a long bare digit run could be one)",
            )
        if not submission.subject_identities:
            bad("#/subject_identities", "required", "at least one subject identity is required")
        if new.regulation not in self.config.deadlines:
            bad(
                "#/regulation",
                "unknown_regulation",
                "regulation must be one of: " + ", ".join(sorted(self.config.deadlines)),
            )
        errors.extend(_submitted_time_problems(new.submitted_at, now))
        if new.type is DsrType.OBJECTION:
            errors.extend(self._objection_problems(new.purposes))
        elif new.purposes:
            bad("#/purposes", "not_allowed", "only objection requests name purposes")
        errors.extend(_rectified_problems(new.type, submission.rectified))
        if new.action is DsrAction.LIFT and new.type not in (
            DsrType.RESTRICTION,
            DsrType.OBJECTION,
        ):
            bad("#/action", "not_allowed", "only restriction and objection can be lifted")
        if new.callback_urls and not self.config.callback_secrets:
            bad(
                "#/callback_urls",
                "not_configured",
                "callbacks need a signing secret: set IDGRAPH_DSR_CALLBACK_SECRET",
            )
        if errors:
            raise BatchValidationError(errors)
        return new, subjects

    def _objection_problems(self, purposes: Sequence[str]) -> list[InvalidFieldError]:
        """What is wrong with the purposes of an objection (none named, unknown, or processed
        on a basis Art. 21 does not cover)."""
        if not purposes:
            return [
                InvalidFieldError(
                    "required", "an objection names the purposes objected to", "#/purposes"
                )
            ]
        problems = []
        for index, purpose_id in enumerate(purposes):
            purpose = self._purposes.get(purpose_id)
            if purpose is None:
                problems.append(
                    InvalidFieldError(
                        "unknown_purpose",
                        "unknown purpose; declared: " + ", ".join(self._purposes.ids),
                        f"#/purposes/{index}",
                    )
                )
            elif not purpose.consent_applies:
                # Art. 21 covers processing on legitimate interest (and direct marketing);
                # "completing" an objection to a contract or legal-obligation purpose would
                # tell the subject something that changes nothing.
                problems.append(
                    InvalidFieldError(
                        "objection_not_applicable",
                        f"{purpose_id!r} is processed on {purpose.lawful_basis.value}; Art. 21 "
                        "objections apply to legitimate-interest and consent purposes only",
                        f"#/purposes/{index}",
                    )
                )
        return problems

    def _submitted_subjects(
        self, submission: DsrSubmission, errors: list[InvalidFieldError]
    ) -> tuple[NormalizedIdentifier, ...]:
        """The normalized subject identities; their problems and the callback URLs' go into
        ``errors`` (so that one 422 names every field)."""
        subjects: tuple[NormalizedIdentifier, ...] = ()
        try:
            subjects = normalize_all(
                submission.subject_identities,
                self._identity_policy,
                self.config.default_region,
                "#/subject_identities",
            )
        except BatchValidationError as exc:
            errors.extend(exc.errors)
        for index, url in enumerate(submission.callback_urls):
            try:
                self.config.outbound.check_url(url, "callback URL")
            except ValueError as exc:
                errors.append(
                    InvalidFieldError("invalid_url", str(exc), f"#/callback_urls/{index}")
                )
        return subjects

    def _fingerprint(
        self,
        submission: DsrSubmission,
        subjects: Sequence[NormalizedIdentifier],
        key_id: str,
    ) -> str:
        # Over what the caller sent, never over defaults filled in at receipt: a resend of a
        # body without submitted_time must fingerprint the same, not with a later "now".
        submitted = submission.submitted_at
        new = submission
        canonical = json.dumps(
            {
                "type": new.type.value,
                "action": new.action.value,
                "purposes": sorted(set(new.purposes)),
                "regulation": new.regulation,
                "submitted_at": None if submitted is None else _iso(submitted),
                "callback_urls": list(new.callback_urls),
                "rectified": list(new.rectified),
                "subjects": sorted({f"{s.type}:{s.value}" for s in subjects}),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        # The keyring's HMAC under a type no identifier can have ("dsr-fingerprint" contains a
        # hyphen, identifier types are [a-z0-9_]): a separate domain, the same secret key.
        marker = NormalizedIdentifier("dsr-fingerprint", canonical)
        return self._keyring.hash(marker, key_id).digest.hex()

    def _replayed(
        self,
        existing: Any,
        new: DsrSubmission,
        subjects: Sequence[NormalizedIdentifier],
        caller: DsrCaller,
    ) -> DsrRequest:
        if (
            not caller.may_see(existing.request.owner)
            or existing.fingerprint_key not in self._keyring.key_ids
        ) or (self._fingerprint(new, subjects, existing.fingerprint_key) != existing.fingerprint):
            raise DsrConflictError(
                f"request id {new.request_id!r} is already used by a request with different "
                "content; choose a new request id"
            )
        request: DsrRequest = existing.request
        return request

    # -- reading and managing --------------------------------------------------------------

    def get(self, request_id: str, caller: DsrCaller) -> DsrRequest:
        """The request, or :class:`DsrNotFoundError` (also when it is another owner's)."""
        stored = self.store.get(request_id)
        if stored is None or not caller.may_see(stored.request.owner):
            raise DsrNotFoundError(request_id)
        return stored.request

    def _get(self, request_id: str) -> DsrRequest:
        stored = self.store.get(request_id)
        if stored is None:  # pragma: no cover - rows are never deleted
            raise DsrNotFoundError(request_id)
        return stored.request

    def list_requests(
        self, status: DsrStatus | None = None, after: str = "", limit: int = 100
    ) -> list[DsrRequest]:
        """Every owner's requests by id, optionally of one status (operators: CLI, tests)."""
        return self.store.list_requests(status, after, limit)

    def list_page(
        self, caller: DsrCaller, status: DsrStatus | None, cursor: str | None, limit: int
    ) -> tuple[list[DsrRequest], str | None]:
        """One page of the requests ``caller`` may see, by id, and the sealed cursor of the
        next (``None``: the end).

        The cursor is sealed like every paging cursor (:mod:`privacy.access.cursors`): bound to the
        caller and the status filter, expiring, 400 when forged or borrowed.
        """
        scope = CursorScope(
            "dsr_requests", caller.actor, caller.owner, status.value if status else ""
        )
        owner = None if caller.sees_all else caller.owner
        found = self.store.list_requests(status, self._cursors.open(scope, cursor), limit, owner)
        more = len(found) == limit
        return found, self._cursors.seal(scope, found[-1].request_id) if more else None

    def cancel(self, request_id: str, caller: DsrCaller, reason: str = "") -> DsrRequest:
        """Cancel a pending request (409 once a worker has started it); ``reason`` goes to the
        audit log (no personal data: :class:`AuditDraft` refuses what looks like some)."""
        actor = caller.actor
        request = self.get(request_id, caller)
        now = self.clock()
        deliveries = self._callbacks(request, DsrStatus.CANCELLED, {}, now)
        if not self.store.finish(
            request_id,
            DsrStatus.CANCELLED,
            now,
            from_statuses=[DsrStatus.PENDING],
            deliveries=deliveries,
        ):
            raise DsrStateError(
                f"request {request_id!r} is {self._get(request_id).status.value}; only pending "
                "requests can be cancelled"
            )
        self._shred([subjects_owner(request_id)])
        self._audit_append(
            AuditDraft(
                actor=actor,
                action="dsr.cancelled",
                reason=reason or "request cancelled while pending",
                details={"request_id": audit_ref_or_text(request_id), "type": request.type},
            )
        )
        self.publish_queue()
        return self._get(request_id)

    def extend(self, request_id: str, caller: DsrCaller, reason: str = "") -> DsrRequest:
        """Extend the due date once by the regulation's extension.

        GDPR Art. 12(3): the subject must be told of an extension, with the reasons, within the
        first month; so an extension needs a reason (422 without one), is refused once the
        original due date has passed (409), and is sent to the request's callback URLs (the
        subject's side) as a signed ``dsr.<type>.extended`` webhook with the new due date and the
        reason, in the same transaction as the new due date. Types with their own period (CCPA
        opt-outs) cannot be extended (409).
        """
        actor = caller.actor
        request = self.get(request_id, caller)
        text = reason.strip()
        if len(text) < 10 or redact_text(text) != text:
            raise BatchValidationError(
                [
                    InvalidFieldError(
                        "invalid_reason",
                        "an extension needs its reasons (at least 10 characters, no email "
                        "address or phone number): they are sent to the subject",
                        "#/reason",
                    )
                ]
            )
        deadline = self.config.deadlines.get(request.regulation)
        if deadline is None:
            raise DsrStateError(f"regulation {request.regulation!r} has no configured deadline")
        if not deadline.extendable(request.type.value):
            raise DsrStateError(
                f"{request.regulation} {request.type.value} requests cannot be extended"
            )
        now = self.clock()
        if now >= request.due_at:
            raise DsrStateError(
                f"request {request_id!r} was due at {_iso(request.due_at)}; an extension must be "
                "decided and told to the subject before the original due date"
            )
        due = deadline.extension.after(request.due_at.astimezone(UTC))
        event = f"dsr.{request.type.value}.extended"
        body = json.dumps(
            {
                "type": event,
                "timestamp": _iso(now),
                "data": {
                    "request_id": request.request_id,
                    "request_type": request.type.value,
                    "status": request.status.value,
                    "regulation": request.regulation,
                    "original_due_at": _iso(request.due_at),
                    "due_at": _iso(due),
                    "reason": text,
                },
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        deliveries = [
            (f"callback:{index}", url, new_webhook_id(), event, body)
            for index, url in enumerate(request.callback_urls)
        ]
        if not self.store.extend(request_id, due, now=now, deliveries=deliveries):
            raise DsrStateError(
                f"request {request_id!r} cannot be extended: already extended, or no longer open"
            )
        self._audit_append(
            AuditDraft(
                actor=actor,
                action="dsr.extended",
                reason=text,
                details={
                    "request_id": audit_ref_or_text(request_id),
                    "due_at": _iso(due),
                    "subject_notified": len(deliveries),
                },
            )
        )
        return self._get(request_id)

    def download(self, request_id: str, caller: DsrCaller) -> dict[str, Any]:
        """The decrypted export document of an access/portability request.

        :class:`DsrNotFoundError` (404) for another owner's request,
        :class:`ExportNotReadyError` (409) before it is ready or for other types,
        :class:`ExportExpiredError` (410) after its expiry (destroyed, or due for destruction).
        """
        actor = caller.actor
        request = self.get(request_id, caller)
        if request.type not in EXPORT_TYPES:
            raise ExportNotReadyError(f"a {request.type.value} request has no export")
        found = self.store.export_blob(request_id)
        if found is None:
            raise ExportNotReadyError(f"request {request_id!r} is {request.status.value}")
        blob, info = found
        if blob is None or info.expires_at <= self.clock():
            raise ExportExpiredError(
                f"the export of request {request_id!r} expired at {_iso(info.expires_at)} and "
                "was destroyed; submit a new access request"
            )
        try:
            plain = self._vault.decrypt(export_owner(request_id), EXPORT_FIELD, blob)
        except VaultError as exc:
            raise ExportExpiredError(
                f"the export of request {request_id!r} is no longer readable"
            ) from exc
        self._audit_append(
            AuditDraft(
                actor=actor,
                action="dsr.export.downloaded",
                reason="access export downloaded",
                details={"request_id": audit_ref_or_text(request_id)},
            )
        )
        document: dict[str, Any] = json.loads(plain)
        return document

    # -- the worker ------------------------------------------------------------------------

    def run_once(self, limit: int = 10) -> WorkReport:
        """One worker pass: finish interrupted erasures, process up to ``limit`` requests, send
        due webhooks, expire exports.

        Interrupted erasures (graph committed, keys not yet shredded) are retried on every pass,
        not only at start-up: their data keys must not outlive the erasure by more than a tick.
        """
        try:
            recovered = self._eraser.recover()
        except Exception:  # logged and retried next pass: it must not stop the worker
            log.exception("erasure_recovery_failed")
            recovered = 0
        try:
            self.drop_orphaned_notices()
        except Exception:  # logged and retried next pass
            log.exception("dsr_orphaned_notices_failed")
        processed = self.process_pending(limit)
        sent, failed = self.deliver_due()
        destroyed = self.sweep_exports()
        try:
            self.finish_truncation()
        except Exception:  # logged and retried next pass
            log.exception("dsr_shred_checkpoint_failed")
        return WorkReport(
            processed=processed.processed,
            completed=processed.completed,
            failed=processed.failed,
            requeued=processed.requeued,
            deliveries_sent=sent,
            deliveries_failed=failed,
            exports_destroyed=destroyed,
            erasures_recovered=recovered,
        )

    def publish_queue(self) -> tuple[int, float]:
        """The queue's depth and oldest age (seconds); also given to the metrics hook."""
        depth, oldest = self.store.queue()
        overdue = self.store.overdue(self.clock())
        age = max((self.clock() - oldest).total_seconds(), 0.0) if oldest else 0.0
        if self.on_queue is not None:
            self.on_queue(depth, age, overdue)
        return depth, age

    def process_pending(self, limit: int = 10) -> WorkReport:
        """Claim and process up to ``limit`` requests, oldest first."""
        processed = completed = failed = requeued = 0
        for _ in range(max(limit, 0)):
            now = self.clock()
            claimed = self.store.claim(now, now - self.config.stale_after)
            if claimed is None:
                break
            processed += 1
            outcome = self._process(claimed)
            completed += outcome is DsrStatus.COMPLETED
            failed += outcome is DsrStatus.FAILED
            requeued += outcome is DsrStatus.PENDING
        self.publish_queue()
        return WorkReport(processed, completed, failed, requeued)

    def _process(self, claimed: Claimed) -> DsrStatus:
        request = claimed.request
        rid = request.request_id
        started = time.perf_counter()
        try:
            subjects = self._subjects(claimed)
            result, export, exported, notices = self._run(request, subjects)
        except StoreUnavailableError as exc:
            if request.attempts < self.config.max_attempts:
                log.warning("dsr_requeued", request_id=rid, error=type(exc).__name__)
                self.store.requeue(rid)
                return DsrStatus.PENDING
            return self._fail(request, exc)
        except Exception as exc:  # noqa: BLE001 - any failure ends the request as failed, logged
            return self._fail(request, exc)
        now = self.clock()
        deliveries = self._callbacks(request, DsrStatus.COMPLETED, result, now)
        if request.type is DsrType.ERASURE:
            deliveries += self._destinations(request, result, now)
        deliveries += notices
        sealed_export = None
        if export is not None:
            sealed_export = (
                self._vault.encrypt(export_owner(rid), EXPORT_FIELD, export),
                now + self.config.export_ttl,
            )
        finished = self.store.finish(
            rid,
            DsrStatus.COMPLETED,
            now,
            from_statuses=[DsrStatus.IN_PROGRESS],
            result=result,
            export=sealed_export,
            export_persons=[self._audit.person_ref(p) for p in exported],
            deliveries=deliveries,
        )
        self._shred([subjects_owner(rid)])
        if not finished:
            return self._finished_elsewhere(rid, notices)
        notified: list[AuditDraft] = []
        if notices:
            # Queued with the terminal status, in its transaction: now the audit may say so.
            queued = [(destination, url) for destination, url, *_ in notices]
            notified.append(self._notified_draft(request.type, rid, queued))
        self._audit_append(
            *notified,
            AuditDraft(
                actor="dsr-worker",
                action="dsr.completed",
                reason=f"{request.type.value} request completed",
                details={"request_id": audit_ref_or_text(rid), "type": request.type, **result},
            ),
        )
        log.info(
            "dsr_completed",
            request_id=rid,
            type=request.type.value,
            seconds=round(time.perf_counter() - started, 4),
            **result,
        )
        return DsrStatus.COMPLETED

    def _finished_elsewhere(self, rid: str, notices: Sequence[Outgoing]) -> DsrStatus:
        """Another worker finished the request first (a stale claim taken over).

        Nothing of this run was stored: its notices' sealing keys go, and the audit gets no
        second ``dsr.completed``/``dsr.failed`` entry (the finishing worker wrote the one that
        holds). The status answered is the one stored.
        """
        if notices:
            log.warning("dsr_notices_not_queued", request_id=rid, notices=len(notices))
            self._shred([notice_owner(webhook_id) for _, _, webhook_id, _, _ in notices])
        log.warning("dsr_finished_elsewhere", request_id=rid)
        stored = self.store.get(rid)
        return stored.request.status if stored is not None else DsrStatus.FAILED

    def _subjects(self, claimed: Claimed) -> list[NormalizedIdentifier]:
        rid = claimed.request.request_id
        if claimed.sealed_subjects is None:
            raise DsrStateError("the subject identities of this request are gone")
        opened = self._vault.decrypt(subjects_owner(rid), SUBJECTS_FIELD, claimed.sealed_subjects)
        return [NormalizedIdentifier(t, v) for t, v in json.loads(opened)]

    def _fail(self, request: DsrRequest, exc: Exception) -> DsrStatus:
        code = exc.code if isinstance(exc, IdGraphError) else "internal-error"
        # The class only: messages of foreign exceptions are not known to be free of values.
        log.error("dsr_failed", request_id=request.request_id, error=type(exc).__name__)
        now = self.clock()
        finished = self.store.finish(
            request.request_id,
            DsrStatus.FAILED,
            now,
            from_statuses=[DsrStatus.IN_PROGRESS],
            error=code,
            deliveries=self._callbacks(request, DsrStatus.FAILED, {}, now),
        )
        self._shred([subjects_owner(request.request_id)])
        if not finished:
            return self._finished_elsewhere(request.request_id, ())
        self._audit_append(
            AuditDraft(
                actor="dsr-worker",
                action="dsr.failed",
                reason=f"{request.type.value} request failed",
                details={"request_id": audit_ref_or_text(request.request_id), "error": code},
            )
        )
        return DsrStatus.FAILED

    def _run(
        self, request: DsrRequest, subjects: Sequence[NormalizedIdentifier]
    ) -> tuple[dict[str, int], bytes | None, list[str], list[Outgoing]]:
        """The result counts, the export (access/portability), the persons it holds and the
        recipient notices to enqueue with the terminal status."""
        nodes = self._find(subjects)
        persons = sorted({node.person_id for _, node in nodes})
        if request.type is DsrType.ERASURE:
            # Before the erasure: afterwards the audit references, the identifiers and the
            # person id that tell who received what (and what key it holds) are gone. Exports
            # first too, while the subjects still resolve to their persons: if the graph
            # erasure fails after its commit (recover() completes it), a retry of this request
            # finds no person any more, and so would never find their exports.
            # The recipients' notices are made by the erasure itself (hold()), for the persons
            # it finds and those it follows through refusals, and sent once it completes.
            destroyed = self.destroy_person_exports(persons)
            self._erasing[request.request_id] = request
            try:
                erased = self._eraser.erase(subjects, request.request_id, "dsr-worker")
            finally:
                self._erasing.pop(request.request_id, None)
            counts = result_counts(erased)
            counts["exports_destroyed"] = destroyed
            return counts, None, [], []
        if request.type in EXPORT_TYPES:
            counts, document = self._export(request, nodes, [s.type for s in subjects])
            return counts, document, persons, []
        if request.type is DsrType.RECTIFICATION:
            # Nothing to change here: the corrected values came through ingest. Record that
            # the recipients were told (Art. 19).
            notices, unreadable = self._notices(request, persons)
            counts = {
                "persons": len(persons),
                "subjects_not_found": len(subjects) - len(nodes),
                "recipients_notified": len(notices),
            }
            return counts | _unreadable_count(unreadable), None, [], notices
        counts = self._record_consents(request, subjects, nodes)
        notices, unreadable = self._notices(request, persons)
        counts["recipients_notified"] = len(notices)
        return counts | _unreadable_count(unreadable), None, [], notices

    # -- recipients (Art. 17(2), 19) -------------------------------------------------------

    def recipients(self, person_id: str) -> dict[str, Received]:
        """Who received ``person_id``'s data, by consumer (:mod:`privacy.dsr.recipients`)."""
        cache: dict[str, str | None] = {}

        def consumer_of(actor: str) -> str | None:
            if actor not in cache:
                cache[actor] = self._consumer_of(actor)
            return cache[actor]

        return received(self._audit, person_id, consumer_of)

    # -- the erasure notifier (privacy.dsr.erasure.ErasureNotifier) -------------------------

    def hold(
        self,
        erasure_id: str,
        request_id: str,
        person_ids: Sequence[str],
        *,
        tx: GraphTransaction | None = None,
    ) -> HeldNotices:
        """Store, held until the erasure completes, one sealed notice per recipient of any of
        ``person_ids``; returns how many, and how many keys held by those recipients could not
        be listed (their kept value's data key is shredded). Called by every erasure before its
        graph transaction, or inside it (``tx``) on its last attempt (the recipients and their
        keys are readable only while the persons exist): a request's own erasure, the persons it
        follows through refusals, and retention."""
        request = self._erasing.get(request_id)
        if request is None:
            # Not a data-subject request: the retention sweep (storage limitation) erased them.
            request = _retention_request(request_id, self.config.default_regulation, self.clock())
        notices, unreadable = self._notices(request, person_ids, tx)
        if notices:
            self.store.hold(request_id, erasure_id, self.clock(), notices)
        return HeldNotices(len(notices), unreadable)

    def release(self, erasure_id: str) -> int:
        """Let the held notices of a completed erasure go out (idempotent), and audit that the
        recipients are being told (``dsr.recipients.notified``).

        The audit entry is written first, then the notices are made due: both after the
        erasure's keys are shredded and its own entry written, when nothing can stop them any
        more (a crash in between: ``recover()`` runs this again, so the entry is written at
        least once, like ``dsr.erasure``, and both copies name the erasure id). Notices that
        were dropped (a rolled-back erasure) never get an entry."""
        held = self.store.held_notices(erasure_id)
        if held:
            self._audit_append(
                self._notified_draft(
                    DsrType.ERASURE,
                    held[0].request_id,
                    [(n.destination, n.url) for n in held],
                    erasure_id,
                )
            )
        return self.store.release(erasure_id, self.clock())

    def drop(self, erasure_id: str) -> None:
        """Delete the held notices of an erasure that did not commit, shredding their keys."""
        dropped = self.store.drop_held(erasure_id)
        if dropped:
            self._shred([notice_owner(webhook_id) for webhook_id in dropped])

    def drop_orphaned_notices(self) -> int:
        """Drop notices held for an erasure that never committed (its transaction failed and
        the process died before dropping them): held for longer than any erasure runs, and not
        of a pending erasure (a completed one released its notices before completing).
        Run by every worker pass; returns how many erasures' notices were dropped."""
        stale = self.store.held_erasures(self.clock() - HELD_GRACE)
        if not stale:
            return 0
        live = {e.erasure_id for e in self._graph.read(lambda tx: tx.pending_erasures())}
        orphans = [erasure_id for erasure_id in stale if erasure_id not in live]
        for erasure_id in orphans:
            self.drop(erasure_id)
        return len(orphans)

    def _notices(
        self,
        request: DsrRequest,
        person_ids: Sequence[str],
        tx: GraphTransaction | None = None,
    ) -> tuple[list[Outgoing], int]:
        """One sealed notice per recipient of any of ``person_ids``, carrying, per person, only
        the keys that recipient holds, and how many of those keys could not be listed (a kept
        value whose data key is shredded: counted, logged, never a failed request).
        Objections go to recipients of the objected purposes."""
        if request.type not in NOTIFIED_TYPES:
            return [], 0
        keys: dict[str, list[NoticeKeys]] = {}
        for person_id in person_ids:
            for consumer, got in self.recipients(person_id).items():
                if request.type is DsrType.OBJECTION and not set(got.purposes) & set(
                    request.purposes
                ):
                    continue
                keys.setdefault(consumer, []).append(self._keys_held(person_id, got, tx))
        if not keys:
            return [], 0
        unreadable = sum(k.unreadable for persons in keys.values() for k in persons)
        if unreadable:
            log.warning(
                "dsr_notice_keys_unreadable", request_id=request.request_id, keys=unreadable
            )
        now = self.clock()
        event = f"recipient.{request.type.value}"
        outgoing: list[Outgoing] = []
        for consumer, persons in sorted(keys.items()):
            webhook_id = new_webhook_id()
            body = notice_body(
                event,
                now,
                request.request_id,
                request.regulation,
                request.action.value,
                request.purposes,
                persons,
                request.rectified,
                reason=RETENTION_REASON if request.requester == RETENTION_REQUESTER else None,
            )
            # Sealed: the body holds person ids or SHA-256 digests of identifiers, which must not
            # sit readable in the outbox (nor outlive the erasure): shredded once sent.
            sealed = self._vault.encrypt(notice_owner(webhook_id), NOTICE_FIELD, body)
            endpoint = self.config.recipients.get(consumer)
            url = endpoint.url if endpoint is not None else ""
            outgoing.append((RECIPIENT_PREFIX + consumer, url, webhook_id, event, sealed))
        return outgoing, unreadable

    @staticmethod
    def _notified_draft(
        request_type: DsrType,
        request_id: str,
        queued: Sequence[tuple[str, str]],
        erasure_id: str | None = None,
    ) -> AuditDraft:
        """``dsr.recipients.notified``: the notices ``queued`` (``(destination, url)``) are in
        the outbox, due for delivery (signed, with retries; each delivery's outcome is in the
        request's status). Written only once they are, never when they are made: a notice
        made for an erasure that rolls back, or for a request another worker finished, is
        never sent. A recipient without a configured endpoint (empty url) is named apart: its
        delivery fails ``destination_not_configured`` and an operator has to tell it."""
        recipients = sorted({d.removeprefix(RECIPIENT_PREFIX) for d, _ in queued})
        unconfigured = sorted({d.removeprefix(RECIPIENT_PREFIX) for d, url in queued if not url})
        sending = len(recipients) - len(unconfigured)
        details: dict[str, Any] = {
            "request_id": audit_ref_or_text(request_id),
            "recipients": _refs(recipients),
            "queued": sending,
            "unconfigured": len(unconfigured),
            "unconfigured_recipients": _refs(unconfigured),
        }
        if erasure_id is not None:
            details["erasure_id"] = AuditRef(erasure_id)
        return AuditDraft(
            actor="dsr-worker",
            action="dsr.recipients.notified",
            reason=f"{request_type.value} notices queued for delivery to {sending} recipient(s); "
            f"{len(unconfigured)} without a configured endpoint, to be told by an operator",
            details=details,
        )

    def _keys_held(
        self, person_id: str, got: Received, tx: GraphTransaction | None = None
    ) -> NoticeKeys:
        """The keys ``got.consumer`` holds for ``person_id``: never more than it was given.
        Read through ``tx`` when the caller's graph transaction is open (a second one on the
        same store would wait for it, or fail)."""
        pseudonym = None
        if got.pseudonym:
            pseudonym = (
                self._pseudonyms.key_id,
                self._pseudonyms.pseudonym(got.consumer, person_id),
            )
        types: set[str] = set()
        for purpose_id in got.export_purposes:
            purpose = self._purposes.get(purpose_id)
            types.update(purpose.activation if purpose is not None else ())
        hashed: list[dict[str, str]] = []
        unreadable = 0
        if types:

            def raw(graph_tx: GraphTransaction) -> list[Fact]:
                return graph_tx.person_facts(
                    person_id, (FactKind.RAW_IDENTIFIER,), FactStatus.ACTIVE
                )

            facts = raw(tx) if tx is not None else self._graph.read(raw)
            wanted = [f for f in facts if f.name in types]
            # decrypt_readable: a value whose data key was shredded while the person still
            # exists (an operator's shred, an interrupted erasure) cannot give its hash. The
            # notice still goes with every key that is readable and the rest is counted (the
            # request's result and audit entry): one lost key must not stop the recipients
            # from being told, nor an erasure from completing. Tampering still raises.
            plain = self._vault.decrypt_readable(
                [(f.node_id, f.seal_field, f.sealed) for f in wanted]
            )
            hashed = [
                hashed_identifier(f.name, text)
                for f, text in zip(wanted, plain, strict=True)
                if text is not None
            ]
            unreadable = len(wanted) - len(hashed)
        return NoticeKeys(
            person_id=person_id if got.person_id else None,
            pseudonym=pseudonym,
            hashed_identifiers=tuple(hashed),
            unreadable=unreadable,
        )

    def destroy_person_exports(self, person_ids: Sequence[str]) -> int:
        """Destroy every access/portability export that holds any of ``person_ids`` (blob
        deleted, its key shredded): an export must not outlive the erasure of its subject.

        Returns how many were destroyed (part of the erasure's result and audit entry)."""
        return self._destroy_exports(list(self._audit.person_refs(person_ids).values()))

    def _destroy_exports(self, refs: Sequence[str]) -> int:
        found = self.store.exports_of(refs)
        if not found:
            return 0
        destroyed = self.store.destroy_exports(found, self.clock())
        self._shred([export_owner(rid) for rid in found])
        return destroyed

    def _find(self, subjects: Sequence[NormalizedIdentifier]) -> list[tuple[int, IdentifierNode]]:
        """(subject index, node) for each subject identity that is in the graph."""
        candidates = {i: self._keyring.candidates(s) for i, s in enumerate(subjects)}
        wanted: list[HashedIdentifier] = [c for cs in candidates.values() for c in cs]
        found = {n.hashed: n for n in self._graph.read(lambda tx: tx.find_identifiers(wanted))}
        out: list[tuple[int, IdentifierNode]] = []
        for index, cs in candidates.items():
            node = next((found[c] for c in cs if c in found), None)
            if node is not None:
                out.append((index, node))
        return out

    def _export(
        self,
        request: DsrRequest,
        nodes: Iterable[tuple[int, IdentifierNode]],
        subject_types: Sequence[str],
    ) -> tuple[dict[str, int], bytes]:
        found = list(nodes)
        person_ids = sorted({node.person_id for _, node in found})
        purposes = [*self._purposes.ids, RESTRICTION_PURPOSE]
        portability = request.type is DsrType.PORTABILITY
        persons = exports.collect(
            self._graph,
            self._vault,
            self._audit,
            self._identity_policy,
            purposes,
            person_ids,
            self._recipient_name,
            exports.ExportPolicy(self._purposes, self.config.unread_retention_days, portability),
        )
        by_index = {index: node.person_id for index, node in found}
        identities = [
            {"index": index, "type": subject_type, "person_id": by_index.get(index)}
            for index, subject_type in enumerate(subject_types)
        ]
        document = exports.export_document(
            request.request_id, self.clock(), persons, identities, portability
        )
        tampered = [p for p in persons if p["integrity"]["tampered_values"]]
        if tampered:
            # Altered ciphertext or wrapped keys: an integrity incident, not a shredded key.
            log.error(
                "dsr_export_tampering_detected",
                request_id=request.request_id,
                persons=len(tampered),
                values=sum(p["integrity"]["tampered_values"] for p in tampered),
            )
            self._audit_append(
                *(
                    AuditDraft(
                        actor="dsr-worker",
                        action="dsr.access.tampering_detected",
                        person_id=self._audit.person_ref(p["person_id"]),
                        decision="deny",
                        reason="stored values failed authentication (altered at rest)",
                        details={
                            "request_id": audit_ref_or_text(request.request_id),
                            "tampered_values": p["integrity"]["tampered_values"],
                        },
                    )
                    for p in tampered
                )
            )
        self._audit_append(
            *(
                AuditDraft(
                    actor="dsr-worker",
                    action="dsr.access.exported",
                    person_id=self._audit.person_ref(p["person_id"]),
                    reason=f"{request.type.value} export prepared",
                    details={"request_id": audit_ref_or_text(request.request_id)},
                )
                for p in persons
            )
        )
        return exports.counts(persons), json.dumps(document, sort_keys=True).encode()

    def _record_consents(
        self,
        request: DsrRequest,
        subjects: Sequence[NormalizedIdentifier],
        nodes: Sequence[tuple[int, IdentifierNode]],
    ) -> dict[str, int]:
        # One anchor per person: the consent state is computed over all of a person's records,
        # and one event per identifier (never several identifiers in one event) so a DSR links
        # nothing and creates no person.
        anchors: dict[str, NormalizedIdentifier] = {}
        for index, node in nodes:
            anchors.setdefault(node.person_id, subjects[index])
        consents = self._consent_inputs(request)
        events = [
            IdentityEvent((identifier,), SOURCE, request.submitted_at, consents=consents)
            for identifier in anchors.values()
        ]
        outcomes = self._engine.ingest(events)
        recorded = sum(o.consents_recorded for o in outcomes)
        verb = "lifted" if request.action is DsrAction.LIFT else "applied"
        action = f"dsr.{request.type.value}.{verb}"
        self._audit_append(
            *(
                AuditDraft(
                    actor="dsr-worker",
                    action=action,
                    purpose=None if request.type is DsrType.RESTRICTION else consent.purpose,
                    person_id=self._audit.person_ref(outcome.person_id),
                    decision="allow" if consent.granted else "deny",
                    reason=f"{request.type.value} {request.action.value} by request",
                    details={
                        "request_id": audit_ref_or_text(request.request_id),
                        "proof": AuditRef(consent.proof),
                    },
                )
                for outcome in outcomes
                if outcome.person_id is not None
                for consent in consents
            )
        )
        return {
            "persons": sum(1 for o in outcomes if o.person_id is not None),
            "consent_records": recorded,
            "subjects_not_found": len(subjects) - len(nodes),
        }

    def _consent_inputs(self, request: DsrRequest) -> tuple[ConsentInput, ...]:
        granted = request.action is DsrAction.LIFT  # a lift is a "grant" of processing again
        proof = request_proof(request)
        if request.type is DsrType.RESTRICTION:
            return (
                ConsentInput(
                    RESTRICTION_PURPOSE,
                    granted,
                    request.submitted_at,
                    ConsentSignal.RESTRICTION,
                    "legal_obligation",
                    proof,
                ),
            )
        inputs = []
        for purpose_id in request.purposes:
            purpose = self._purposes.get(purpose_id)
            basis = purpose.lawful_basis.value if purpose is not None else "consent"
            inputs.append(
                ConsentInput(
                    purpose_id, granted, request.submitted_at, ConsentSignal.OBJECTION, basis, proof
                )
            )
        return tuple(inputs)

    # -- compelling legitimate grounds (Art. 21(1)) ------------------------------------------

    def record_compelling_grounds(
        self,
        subject_identities: Sequence[tuple[str, str]],
        purposes: Sequence[str],
        reason: str,
        actor: str,
    ) -> dict[str, int]:
        """Record an operator's decision that compelling legitimate grounds override the
        subject's objection to ``purposes`` (legitimate-interest, not direct marketing).

        The only way besides the subject lifting it that an objection to a legitimate-interest
        purpose stops denying reads (:mod:`privacy.consent.state`, rule 4); a consent signal never
        does. The decision is a consent record (signal ``compelling_grounds``) on one identifier
        of each person, and an audit entry carrying the reason. The caller needs the dedicated
        ``dsr_override`` scope. Every problem is reported in one 422; nothing is written then.
        """
        errors: list[InvalidFieldError] = []
        subjects: tuple[NormalizedIdentifier, ...] = ()
        try:
            subjects = normalize_all(
                subject_identities,
                self._identity_policy,
                self.config.default_region,
                "#/subject_identities",
            )
        except BatchValidationError as exc:
            errors.extend(exc.errors)
        if not subject_identities:
            errors.append(
                InvalidFieldError(
                    "required", "at least one subject identity is required", "#/subject_identities"
                )
            )
        if not purposes:
            errors.append(InvalidFieldError("required", "name the purposes", "#/purposes"))
        for index, purpose_id in enumerate(purposes):
            purpose = self._purposes.get(purpose_id)
            if (
                purpose is None
                or purpose.direct_marketing
                or (purpose.lawful_basis.value != "legitimate_interest")
            ):
                errors.append(
                    InvalidFieldError(
                        "not_overridable",
                        "compelling grounds override objections to legitimate-interest purposes "
                        "only (never direct marketing, Art. 21(3))",
                        f"#/purposes/{index}",
                    )
                )
        text = reason.strip()
        if len(text) < 10 or redact_text(text) != text:
            errors.append(
                InvalidFieldError(
                    "invalid_reason",
                    "state the grounds (at least 10 characters, no email address or phone "
                    "number: the reason is kept in the audit log)",
                    "#/reason",
                )
            )
        if errors:
            raise BatchValidationError(errors)
        now = self.clock()
        proof = hashlib.sha256(
            json.dumps(
                {"actor": actor, "at": _iso(now), "purposes": sorted(purposes), "reason": text},
                sort_keys=True,
            ).encode()
        ).hexdigest()
        consents = tuple(
            ConsentInput(
                p, True, now, ConsentSignal.COMPELLING_GROUNDS, "legitimate_interest", proof
            )
            for p in dict.fromkeys(purposes)
        )
        nodes = self._find(subjects)
        anchors: dict[str, NormalizedIdentifier] = {}
        for index, node in nodes:
            anchors.setdefault(node.person_id, subjects[index])
        outcomes = self._engine.ingest(
            [IdentityEvent((i,), SOURCE, now, consents=consents) for i in anchors.values()]
        )
        self._audit_append(
            *(
                AuditDraft(
                    actor=actor,
                    action="dsr.objection.compelling_grounds",
                    purpose=consent.purpose,
                    person_id=self._audit.person_ref(outcome.person_id),
                    decision="allow",
                    reason=text,
                    details={"proof": proof},
                )
                for outcome in outcomes
                if outcome.person_id is not None
                for consent in consents
            )
        )
        return {
            "persons": sum(1 for o in outcomes if o.person_id is not None),
            "consent_records": sum(o.consents_recorded for o in outcomes),
            "subjects_not_found": len(subjects) - len(nodes),
        }

    # -- webhooks --------------------------------------------------------------------------

    def _callbacks(
        self, request: DsrRequest, status: DsrStatus, result: Mapping[str, int], now: datetime
    ) -> list[tuple[str, str, str, str, bytes]]:
        event = f"dsr.{request.type.value}.{status.value}"
        body = webhook_payload(
            event,
            now,
            request.request_id,
            request.type.value,
            status.value,
            request.regulation,
            result,
        )
        return [
            (f"callback:{index}", url, new_webhook_id(), event, body)
            for index, url in enumerate(request.callback_urls)
        ]

    def _destinations(
        self, request: DsrRequest, result: Mapping[str, int], now: datetime
    ) -> list[tuple[str, str, str, str, bytes]]:
        event = "dsr.erasure.completed"
        body = webhook_payload(
            event,
            now,
            request.request_id,
            request.type.value,
            "completed",
            request.regulation,
            result,
        )
        return [
            (name, destination.url, new_webhook_id(), event, body)
            for name, destination in sorted(self.config.destinations.items())
        ]

    def _secrets(self, destination: str) -> tuple[str, ...]:
        if destination.startswith("callback:"):
            return self.config.callback_secrets
        if destination.startswith(RECIPIENT_PREFIX):
            recipient = self.config.recipients.get(destination.removeprefix(RECIPIENT_PREFIX))
            return recipient.secrets if recipient is not None else ()
        configured = self.config.destinations.get(destination)
        return configured.secrets if configured is not None else ()

    def deliver_due(self, limit: int = 100) -> tuple[int, int]:
        """Send the webhooks that are due; returns (delivered, given up)."""
        delivered = given_up = 0
        for item in self.store.due_deliveries(self.clock(), limit):
            now = self.clock()
            secrets = self._secrets(item.destination)
            status: int | None = None
            error: str | None = None
            sealed = item.destination.startswith(RECIPIENT_PREFIX)
            body = item.payload
            if sealed and secrets:
                try:
                    body = self._vault.decrypt(
                        notice_owner(item.webhook_id), NOTICE_FIELD, item.payload
                    )
                except VaultError:
                    error = "notice_destroyed"
            if not secrets:
                error = "destination_not_configured"
            elif error is None:
                headers = {
                    **sign_headers(secrets, item.webhook_id, int(now.timestamp()), body),
                    "content-type": "application/json",
                    "user-agent": "idgraph-dsr",
                }
                try:
                    status = self._sender(
                        item.url, headers, body, self.config.webhook_timeout_seconds
                    )
                except DestinationRefusedError:
                    # Resolved to an address we may not reach (or off the allowlist): final,
                    # and recorded as such only here; callers see "undeliverable" (dsr_views).
                    error = "destination_refused"
                except OSError as exc:
                    error = "connection_failed" if not isinstance(exc, TimeoutError) else "timeout"
            attempts = item.attempts + 1
            if status is not None and 200 <= status < 300:
                state, next_at = DeliveryState.DELIVERED, None
                delivered += 1
            elif (
                error in ("destination_not_configured", "destination_refused", "notice_destroyed")
                or attempts >= self.config.webhook_max_attempts
            ):
                state, next_at = DeliveryState.FAILED, None
                given_up += 1
            else:
                state = DeliveryState.PENDING
                next_at = now + backoff(
                    attempts, self.config.webhook_backoff, self.config.webhook_backoff_cap
                )
            self.store.record_attempt(
                item.delivery_id,
                state=state,
                status=status,
                error=error,
                next_attempt_at=next_at,
                now=now,
            )
            if sealed and state is not DeliveryState.PENDING:
                # Sent or given up: the notice's key is shredded and the ciphertext dropped, so
                # no copy of the outbox can ever be opened to learn whom it was about.
                self.store.clear_payload(item.delivery_id)
                self._shred([notice_owner(item.webhook_id)])
            log.info(
                "dsr_webhook_attempt",
                request_id=item.request_id,
                destination=item.destination,
                attempt=attempts,
                status=status,
                error=error,
                state=state.value,
            )
        return delivered, given_up

    # -- exports ---------------------------------------------------------------------------

    def sweep_exports(self, now: datetime | None = None) -> int:
        """Destroy exports past their expiry: delete the blob and shred its key."""
        at = now or self.clock()
        destroyed = 0
        while expired := self.store.expired_exports(at):
            destroyed += self.store.destroy_exports(expired, at)
            self._shred([export_owner(rid) for rid in expired])
        if destroyed:
            self.store.checkpoint()
            self._audit_append(
                AuditDraft(
                    actor="dsr-worker",
                    action="dsr.export.expired",
                    reason="expired access exports destroyed",
                    details={"exports": destroyed},
                )
            )
        return destroyed

    # -- helpers ---------------------------------------------------------------------------

    def _shred(self, owners: Sequence[str]) -> None:
        try:
            self._vault.shred(owners)
        except ShredIncompleteError:
            # The keys are destroyed; only the WAL truncation waits for a reader to finish.
            # Until it runs, old page images with the wrapped keys sit in the -wal file: the
            # worker retries on every pass (finish_truncation) until it succeeds.
            self.truncation_pending = True
            log.warning("dsr_shred_checkpoint_pending", owners=len(owners))
        if not self.store.checkpoint():
            self.truncation_pending = True

    def finish_truncation(self) -> bool:
        """Retry the WAL truncation a shred could not finish (a reader held the file); ``True``
        when nothing is pending any more. Run by every worker pass."""
        if not self.truncation_pending:
            return True
        if self._vault.checkpoint() and self.store.checkpoint():
            self.truncation_pending = False
            log.info("dsr_shred_checkpoint_done")
        return not self.truncation_pending

    def _audit_append(self, *drafts: AuditDraft) -> None:
        if drafts:
            self._audit.append(drafts)


def _refs(consumers: Sequence[str]) -> list[AuditRef]:
    """Consumer names as audit references; a name without that shape is left out (counted by
    the caller's totals): the entry is written after an erasure committed, and must not fail."""
    refs: list[AuditRef] = []
    for consumer in consumers:
        try:
            refs.append(AuditRef(consumer))
        except ValueError:
            log.warning("dsr_recipient_name_not_audited")
    return refs


RETENTION_REQUESTER: Final = "retention"
RETENTION_REASON: Final = "retention"


def _retention_request(request_id: str, regulation: str, now: datetime) -> DsrRequest:
    """What a notice of a retention erasure says: an erasure nobody asked for, made because
    the person was inactive past the retention limit (storage limitation, Art. 5(1)(e))."""
    return DsrRequest(
        request_id=request_id,
        type=DsrType.ERASURE,
        action=DsrAction.APPLY,
        purposes=(),
        regulation=regulation,
        status=DsrStatus.IN_PROGRESS,
        submitted_at=now,
        received_at=now,
        due_at=now,
        extended=False,
        subject_types=(),
        subject_hashes=(),
        requester=RETENTION_REQUESTER,
        callback_urls=(),
    )


def _rectified_problems(request_type: DsrType, names: Sequence[str]) -> list[InvalidFieldError]:
    """What is wrong with a request's ``rectified`` names (required for a rectification, names
    only, never values; not allowed on other types)."""
    if request_type is not DsrType.RECTIFICATION:
        if not names:
            return []
        return [
            InvalidFieldError(
                "not_allowed", "only rectification requests name rectified data", "#/rectified"
            )
        ]
    if not names:
        return [
            InvalidFieldError(
                "required",
                "a rectification names what was corrected (attribute, event or identifier type "
                "names; the corrected values go through ingest)",
                "#/rectified",
            )
        ]
    return [
        InvalidFieldError(
            "invalid_name",
            "a name of 1-64 of a-z 0-9 _ starting with a letter (never a value)",
            f"#/rectified/{index}",
        )
        for index, name in enumerate(names)
        if not RECTIFIED_NAME.fullmatch(name)
    ]


def _submitted_time_problems(at: datetime, now: datetime) -> list[InvalidFieldError]:
    """A submitted time before year 1000 (stored times are four-digit years; such a time is a
    typo or a probe) or more than a day ahead."""
    if at.year < MIN_YEAR or at.astimezone(UTC).year < MIN_YEAR:
        return [
            InvalidFieldError(
                "out_of_range", f"submitted_time is before year {MIN_YEAR}", "#/submitted_time"
            )
        ]
    if at > now + MAX_FUTURE_SKEW:
        return [
            InvalidFieldError(
                "in_future", "submitted_time is more than 24 hours ahead", "#/submitted_time"
            )
        ]
    return []


def request_proof(request: DsrRequest) -> str:
    """The proof digest of the consent records a request writes: SHA-256 over the request's
    id, type, action, purposes and submitted time (nothing about the subject)."""
    canonical = json.dumps(
        {
            "request_id": request.request_id,
            "type": request.type.value,
            "action": request.action.value,
            "purposes": list(request.purposes),
            "submitted_at": _iso(request.submitted_at),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
