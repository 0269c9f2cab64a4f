"""Data-subject requests (DSR): the domain types and errors (deadlines: ``deadlines.py``).

A request arrives in an OpenDSR-like shape (request id chosen by the client, type, subject
identities, submitted time, optional regulation, callback URLs), is stored by
:class:`~privacy.dsr.store.SqliteDsrStore` and processed by
:class:`~privacy.dsr.service.DsrService`.

What a stored request holds about the subject: the identifier *types* and their keyed hashes
(never a raw value), and, while the request is open, the normalized identities sealed by the vault
under a key of the request's own (crypto-shredded when the request reaches a terminal state).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from identity.errors import IdGraphError


class DsrType(StrEnum):
    """What the subject asks for (GDPR articles in brackets)."""

    ERASURE = "erasure"  # Art. 17
    ACCESS = "access"  # Art. 15
    PORTABILITY = "portability"  # Art. 20
    RESTRICTION = "restriction"  # Art. 18
    OBJECTION = "objection"  # Art. 21
    # Art. 16, with Art. 19: the correction is made through ingest (scanned like any input); this
    # request records which data was corrected and tells every recipient of it.
    RECTIFICATION = "rectification"


class DsrAction(StrEnum):
    """For restriction and objection: apply it, or lift (withdraw) it."""

    APPLY = "apply"
    LIFT = "lift"


class DsrStatus(StrEnum):
    """Where a request is in its lifecycle."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether nothing more will happen to the request."""
        return self in (DsrStatus.COMPLETED, DsrStatus.FAILED, DsrStatus.CANCELLED)


class DeliveryState(StrEnum):
    """Where one outbound webhook is."""

    PENDING = "pending"  # waiting for its (next) attempt
    HELD = "held"  # a recipient notice waiting for its erasure to complete
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # gave up after the last attempt


# Client-chosen ids: printable tokens only, so they can appear in URLs, logs and the audit log.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
EXPORT_TYPES = frozenset({DsrType.ACCESS, DsrType.PORTABILITY})


class DsrError(IdGraphError):
    """Root of the DSR errors."""

    code = "dsr-error"


class DsrNotFoundError(DsrError):
    """No request with that id (404)."""

    code = "dsr-not-found"

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"no data-subject request {request_id!r}")


class DsrConflictError(DsrError):
    """The request id is already used by a different request (409)."""

    code = "dsr-conflict"


class DsrStateError(DsrError):
    """The request is not in a state that allows the operation (409)."""

    code = "dsr-state-conflict"


class MultiplePersonsError(DsrError):
    """The subject identities resolve to several persons and the caller did not confirm (409).

    Two persons may be two people (a shared family email and someone else's phone): acting on
    both silently could hand one person's data to another, or erase a stranger.
    """

    code = "dsr-multiple-persons"

    def __init__(self, persons: int) -> None:
        self.persons = persons
        super().__init__(
            f"the subject identities resolve to {persons} different persons; check that they "
            "belong to the same data subject and resubmit with confirm_multiple_persons: true"
        )


class ExportNotReadyError(DsrError):
    """The export of an access request is not available (yet, or for this type) (409)."""

    code = "dsr-export-not-ready"


class ExportExpiredError(DsrError):
    """The export existed but its download window has passed and it was destroyed (410)."""

    code = "dsr-export-expired"


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubjectHash:
    """One subject identity as the request keeps it: type, hash key id and keyed digest (hex)."""

    type: str
    key_id: str
    digest: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbound webhook for a request (a downstream destination or a callback URL)."""

    delivery_id: int
    request_id: str
    destination: str  # the configured destination's name, or "callback:<n>"
    webhook_id: str
    event: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None  # the receiver's HTTP status of the last attempt
    last_error: str | None  # a short code when there was no HTTP answer
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """Whether an access export exists and until when it can be downloaded."""

    created_at: datetime
    expires_at: datetime
    destroyed_at: datetime | None
    size_bytes: int


@dataclass(frozen=True, slots=True)
class DsrRequest:
    """A stored data-subject request. No raw identifier: subject identities as keyed hashes."""

    request_id: str
    type: DsrType
    action: DsrAction
    purposes: tuple[str, ...]
    regulation: str
    status: DsrStatus
    submitted_at: datetime
    received_at: datetime
    due_at: datetime
    extended: bool
    subject_types: tuple[str, ...]
    subject_hashes: tuple[SubjectHash, ...]  # empty once the request is terminal
    requester: str  # the API key id (or "cli") that submitted it
    callback_urls: tuple[str, ...]
    owner: str = ""  # who may see it besides operators: the submitting key's consumer
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    export: ExportInfo | None = None
    deliveries: tuple[Delivery, ...] = ()
    rectified: tuple[str, ...] = ()  # rectification: names of the corrected data


@dataclass(frozen=True, slots=True)
class DsrCaller:
    """Who acts on requests: the audit actor, the owner of what they create, and whether they
    see every owner's requests.

    Requests belong to their owner (an API key's consumer): another owner's request is answered
    as if it did not exist (404, never 403: a 403 would confirm that the id is taken, and ids are
    often guessable). Operators (the ``admin`` scope, the CLI) see all.
    """

    actor: str  # the audit actor: ``key_<id>`` or ``cli``
    owner: str  # the owner recorded on new requests
    sees_all: bool = False

    def may_see(self, owner: str) -> bool:
        """Whether a request of ``owner`` is visible to this caller."""
        return self.sees_all or owner == self.owner


@dataclass(frozen=True, slots=True)
class DsrSubmission:
    """A request as the caller sent it (API body, CLI options): validated in one pass by
    :meth:`privacy.dsr.service.DsrService.submit`, which reports every problem in one 422.

    ``subject_identities`` are raw ``(type, value)`` pairs; ``regulation`` and ``submitted_at``
    default to the configured regulation and the time of receipt.
    """

    request_id: str
    type: DsrType
    subject_identities: Sequence[tuple[str, str]] = field(repr=False)
    action: DsrAction = DsrAction.APPLY
    submitted_at: datetime | None = None
    regulation: str | None = None
    purposes: Sequence[str] = ()
    rectified: Sequence[str] = ()  # rectification: names of the corrected data, never values
    callback_urls: Sequence[str] = ()
    # The caller checked that identities resolving to several persons are one data subject.
    confirm_multiple_persons: bool = False


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A validated request about to be stored (subject identities already normalized)."""

    request_id: str
    type: DsrType
    action: DsrAction
    purposes: tuple[str, ...]
    regulation: str
    submitted_at: datetime
    callback_urls: tuple[str, ...]
    rectified: tuple[str, ...] = ()
