"""Data-subject requests (DSR): the domain types, legal deadlines and errors.

A request arrives in an OpenDSR-like shape (request id chosen by the client, type, subject
identities, submitted time, optional regulation, callback URLs), is stored by
:class:`~privacy.dsr.store.SqliteDsrStore` and processed by
:class:`~privacy.dsr.service.DsrService`.

What a stored request holds about the subject: the identifier *types* and their keyed hashes
(never a raw value), and, while the request is open, the normalized identities sealed by the vault
under a key of the request's own (crypto-shredded when the request reaches a terminal state).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from identity.errors import IdGraphError


class DsrType(StrEnum):
    """What the subject asks for (GDPR articles in brackets)."""

    ERASURE = "erasure"  # Art. 17
    ACCESS = "access"  # Art. 15
    PORTABILITY = "portability"  # Art. 20
    RESTRICTION = "restriction"  # Art. 18
    OBJECTION = "objection"  # Art. 21


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


# -- deadlines --------------------------------------------------------------------------------

_PERIOD = re.compile(r"P(?:(\d{1,3})M)?(?:(\d{1,4})D)?")
_BUSINESS = re.compile(r"P(\d{1,3})BD")


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar period of whole months and days (ISO 8601 ``PnM``, ``PnD``, ``PnMnD``), or of
    business days (``PnBD``: Monday to Friday, as the CCPA regulations count opt-outs)."""

    months: int = 0
    days: int = 0
    business_days: int = 0

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse ``P1M``, ``P45D``, ``P1M15D`` or ``P15BD``; raises :class:`ValueError` on
        anything else."""
        business = _BUSINESS.fullmatch(text.strip().upper())
        if business is not None and int(business.group(1)) > 0:
            return cls(business_days=int(business.group(1)))
        match = _PERIOD.fullmatch(text.strip().upper())
        if match is None or not any(match.groups()):
            raise ValueError(f"period {text!r} must look like P1M, P45D, P1M15D or P15BD")
        return cls(int(match.group(1) or 0), int(match.group(2) or 0))

    def after(self, start: datetime) -> datetime:
        """``start`` plus this period, months first (calendar months; the day is clamped).

        GDPR Art. 12(3) counts "one month" as a calendar month (Regulation 1182/71): a request of
        31 January is due on 28 (or 29) February, not on 2 March. Business days skip Saturdays
        and Sundays (public holidays are not modelled: the due date errs early, never late).
        """
        if self.business_days:
            at, left = start, self.business_days
            while left:
                at += timedelta(days=1)
                left -= at.weekday() < 5
            return at
        month_index = start.month - 1 + self.months
        year = start.year + month_index // 12
        month = month_index % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day) + timedelta(days=self.days)

    def __str__(self) -> str:
        if self.business_days:
            return f"P{self.business_days}BD"
        return (
            "P"
            + (f"{self.months}M" if self.months else "")
            + (f"{self.days}D" if self.days else "")
        )


@dataclass(frozen=True, slots=True)
class Deadline:
    """How long a regulation gives to answer, and by how much the answer may be extended once.

    ``per_type`` overrides the initial period for some request types; those are not extendable
    (the CCPA regulations give opt-outs of sale/sharing 15 business days, with no extension).
    """

    initial: Period
    extension: Period
    per_type: Mapping[str, Period] = field(default_factory=dict)

    def period(self, request_type: str) -> Period:
        """The initial period for ``request_type``."""
        return self.per_type.get(request_type, self.initial)

    def extendable(self, request_type: str) -> bool:
        """Whether a request of ``request_type`` may be extended at all."""
        return request_type not in self.per_type


DEFAULT_DEADLINES: Mapping[str, Mapping[str, str]] = {
    # GDPR Art. 12(3): one month, extendable by two further months.
    "gdpr": {"initial": "P1M", "extension": "P2M"},
    # CCPA (Cal. Civ. Code 1798.130(a)(2)): 45 days, extendable once by another 45; requests to
    # opt out of sale/sharing (objection here) within 15 business days, no extension
    # (CCPA regulations, 11 CCR 7026(f)); so is a request to limit (restriction, 7027(g)).
    "ccpa": {
        "initial": "P45D",
        "extension": "P45D",
        "objection": "P15BD",
        "restriction": "P15BD",
    },
}


def parse_deadlines(raw: Mapping[str, Mapping[str, str]]) -> dict[str, Deadline]:
    """Deadlines per regulation from settings; raises :class:`ValueError` naming the entry."""
    parsed: dict[str, Deadline] = {}
    for regulation, spec in raw.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", regulation):
            raise ValueError(f"regulation name {regulation!r} must be a lower-case token")
        unknown = set(spec) - {"initial", "extension"} - {t.value for t in DsrType}
        if unknown:
            raise ValueError(
                f"deadline of {regulation!r}: unknown keys {sorted(unknown)}; use initial, "
                "extension or a request type"
            )
        try:
            parsed[regulation] = Deadline(
                Period.parse(spec["initial"]),
                Period.parse(spec["extension"]),
                {t.value: Period.parse(spec[t.value]) for t in DsrType if t.value in spec},
            )
        except KeyError as exc:
            raise ValueError(f"deadline of {regulation!r} lacks {exc.args[0]!r}") from None
        except ValueError as exc:
            raise ValueError(f"deadline of {regulation!r}: {exc}") from None
    if not parsed:
        raise ValueError("at least one regulation deadline is required")
    return parsed


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
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    export: ExportInfo | None = None
    deliveries: tuple[Delivery, ...] = ()


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
