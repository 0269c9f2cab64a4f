"""The public view of a data-subject request, shared by every entrypoint (API, CLI, console).

Subject identities are never part of it, only their types.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from privacy.dsr.model import DsrRequest
from services.inputs import StrictModel


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
