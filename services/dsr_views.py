"""A data-subject request as callers send it and see it, shared by every entrypoint (API, CLI,
console, stream).

Subject identities are never part of it, only their types.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from privacy.dsr.model import DsrAction, DsrRequest, DsrSubmission, DsrType
from services.inputs import IdentifierIn, StrictModel, Timestamp


class DsrCreate(StrictModel):
    """An OpenDSR-like request. Identity verification is the caller's job."""

    request_id: Annotated[str, Field(min_length=1, max_length=128, examples=["dsr-2026-0001"])]
    type: DsrType
    action: DsrAction = Field(
        default=DsrAction.APPLY,
        description="restriction/objection only: `lift` withdraws an earlier one.",
    )
    subject_identities: Annotated[list[IdentifierIn], Field(min_length=1, max_length=20)]
    submitted_time: Timestamp | None = Field(
        default=None, description="When the subject made the request (the legal clock starts)."
    )
    regulation: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")] | None = Field(
        default=None, examples=["gdpr", "ccpa"]
    )
    purposes: Annotated[
        list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]], Field(max_length=50)
    ] = Field(default_factory=list, description="objection only: the purposes objected to.")
    rectified: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=50)] = Field(
        default_factory=list,
        description="rectification only: names of the corrected data (attribute, event or "
        "identifier type names, never values; the corrections go through ingest). Every "
        "recipient of the subject's data is told (Art. 19).",
    )
    callback_urls: Annotated[list[Annotated[str, Field(max_length=2048)]], Field(max_length=5)] = (
        Field(default_factory=list)
    )
    confirm_multiple_persons: bool = Field(
        default=False,
        description="The identities resolve to several persons and the caller checked that they "
        "are one data subject (otherwise 409 with the number of persons).",
    )

    def submission(self) -> DsrSubmission:
        """The request as the DSR service takes it (validated there, in one pass)."""
        return DsrSubmission(
            request_id=self.request_id,
            type=self.type,
            action=self.action,
            subject_identities=[(i.type, i.value) for i in self.subject_identities],
            submitted_at=self.submitted_time,
            regulation=self.regulation,
            purposes=self.purposes,
            rectified=self.rectified,
            callback_urls=self.callback_urls,
            confirm_multiple_persons=self.confirm_multiple_persons,
        )


class ExportOut(StrictModel):
    """The export of an access/portability request."""

    expires_at: datetime
    expired: bool
    size_bytes: int
    downloads: dict[str, str]


class DeliveryOut(StrictModel):
    """One outbound webhook and how its delivery went."""

    destination: str
    event: str
    webhook_id: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class DsrOut(StrictModel):
    """A request's status. Subject identities are never returned, only their types."""

    request_id: str
    type: str
    action: str
    purposes: list[str]
    rectified: list[str]
    regulation: str
    status: str
    submitted_time: datetime
    received_at: datetime
    due_at: datetime
    overdue: bool  # still open at or after its due date (also when received already late)
    extended: bool
    subject_types: list[str]
    requester: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, int]
    error: str | None
    export: ExportOut | None
    deliveries: list[DeliveryOut]


class ExportFormat(StrEnum):
    """Download formats."""

    JSON = "json"
    CSV = "csv"


def _shown_error(destination: str, error: str | None) -> str | None:
    """A callback's failure without an HTTP answer, as one code: "connection failed", "timeout"
    and "refused" would tell the caller who chose the URL whether a host or port answers (a
    scanner of the service's network). Operators' destinations keep the detail; the log has it
    for every delivery."""
    if error is None or not destination.startswith("callback:"):
        return error
    return "undeliverable"


def dsr_out(request: DsrRequest, now: datetime) -> DsrOut:
    """The view of ``request`` at ``now`` (an expired export offers no downloads)."""
    export = None
    if request.export is not None:
        expired = request.export.destroyed_at is not None or request.export.expires_at <= now
        base = f"/v1/dsr/{request.request_id}/download?format="
        export = ExportOut(
            expires_at=request.export.expires_at,
            expired=expired,
            size_bytes=request.export.size_bytes,
            downloads={} if expired else {f.value: base + f.value for f in ExportFormat},
        )
    return DsrOut(
        request_id=request.request_id,
        type=request.type.value,
        action=request.action.value,
        purposes=list(request.purposes),
        rectified=list(request.rectified),
        regulation=request.regulation,
        status=request.status.value,
        submitted_time=request.submitted_at,
        received_at=request.received_at,
        due_at=request.due_at,
        overdue=not request.status.terminal and request.due_at <= now,
        extended=request.extended,
        subject_types=list(request.subject_types),
        requester=request.requester,
        attempts=request.attempts,
        started_at=request.started_at,
        finished_at=request.finished_at,
        result=dict(request.result),
        error=request.error,
        export=export,
        deliveries=[
            DeliveryOut(
                destination=d.destination,
                event=d.event,
                webhook_id=d.webhook_id,
                state=d.state.value,
                attempts=d.attempts,
                last_status=d.last_status,
                last_error=_shown_error(d.destination, d.last_error),
                next_attempt_at=d.next_attempt_at,
                delivered_at=d.delivered_at,
            )
            for d in request.deliveries
        ],
    )
