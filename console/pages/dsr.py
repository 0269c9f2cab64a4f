"""Data-subject requests: queue, detail, submit, cancel, extend, export download."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from console.render import base_path, page
from console.security import Action, Needs, Posted, Services
from identity.errors import BatchValidationError, InvalidFieldError
from privacy.access.operators import ConsoleScope, Operator, Session
from privacy.dsr.model import DsrAction, DsrCaller, DsrStatus, DsrSubmission, DsrType
from services.operations import days_left

router = APIRouter(prefix="/dsr")
Viewer = Annotated[Session, Depends(Needs(ConsoleScope.DSR))]
Change = Annotated[Posted, Depends(Action(ConsoleScope.DSR))]
MAX_SUBJECTS = 5


E = TypeVar("E", DsrStatus, DsrType)


def _enum(kind: type[E], value: str | None) -> E | None:
    try:
        return kind(value) if value else None
    except ValueError:
        return None


@router.get("", name="dsr_queue")
def queue(
    request: Request,
    services: Services,
    _: Viewer,
    status: str | None = None,
    type: str | None = None,  # noqa: A002 - the query parameter's public name
    overdue: bool = False,
) -> Response:
    """The queue: status, type, due date with days left (overdue highlighted), filters."""
    wanted_status = _enum(DsrStatus, status)
    wanted_type = _enum(DsrType, type)
    rows = services.dashboard.queue(wanted_status, wanted_type, overdue)
    return page(
        request,
        "dsr_queue.html",
        {
            "rows": rows,
            "statuses": list(DsrStatus),
            "types": list(DsrType),
            "status": wanted_status.value if wanted_status else "",
            "type": wanted_type.value if wanted_type else "",
            "overdue": overdue,
        },
    )


def _form_page(
    request: Request, services: Services, errors: list[str], values: dict[str, object], code: int
) -> Response:
    return page(
        request,
        "dsr_new.html",
        {
            "types": list(DsrType),
            "actions": list(DsrAction),
            "regulations": services.regulations,
            "purposes": services.purposes,
            "identifier_types": services.lookup.identifier_types,
            "errors": errors,
            "values": values,
            "subject_rows": range(MAX_SUBJECTS),
        },
        code,
    )


@router.get("/new", name="dsr_new")
def new_form(request: Request, services: Services, _: Viewer) -> Response:
    """The submission form."""
    suggested = f"dsr-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"
    return _form_page(request, services, [], {"request_id": suggested}, 200)


@router.post("", name="dsr_submit")
def submit(request: Request, services: Services, posted: Change) -> Response:
    """Submit a request with the operator as requester; the DSR service validates every field
    in one pass (the same submission path as the API and the CLI)."""
    values: dict[str, object] = {
        "request_id": posted.text("request_id", 128),
        "type": posted.text("type", 32),
        "action": posted.text("action", 16) or DsrAction.APPLY.value,
        "regulation": posted.text("regulation", 32),
        "purposes": posted.texts("purposes", 64),
        "rectified": posted.text("rectified", 1_000),
    }
    pairs = [
        (t, v)
        for t, v in zip(
            posted.texts("subject_type", 32), posted.texts("subject_value", 320), strict=False
        )
        if v
    ][:MAX_SUBJECTS]
    request_type = _enum(DsrType, str(values["type"]))
    action_value = str(values["action"])
    action = DsrAction(action_value) if action_value in set(DsrAction) else None
    errors: list[InvalidFieldError] = []
    if request_type is None:
        errors.append(InvalidFieldError("required", "choose a request type", "#/type"))
    if action is None:
        errors.append(InvalidFieldError("invalid", "choose apply or lift", "#/action"))
    if request_type is not None and action is not None:
        submission = DsrSubmission(
            request_id=str(values["request_id"]),
            type=request_type,
            subject_identities=pairs,
            action=action,
            regulation=str(values["regulation"]) or None,
            purposes=posted.texts("purposes", 64),
            # Names only, comma separated; the DSR service validates each (never a value).
            rectified=_names(str(values["rectified"])),
        )
        try:
            submitted = services.dsr.submit(submission, _caller(posted.session.operator))
        except BatchValidationError as exc:
            errors.extend(exc.errors)
        else:
            target = f"{base_path(request)}/dsr/{submitted.request.request_id}"
            return RedirectResponse(target, status_code=303)
    messages = [f"{e.field.removeprefix('#/')}: {e}" for e in errors]
    return _form_page(request, services, messages, values, 422)


def _names(text: str) -> tuple[str, ...]:
    """The comma-separated names of a form field (blank entries dropped)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _caller(operator: Operator) -> DsrCaller:
    """Console operators work the whole DSR queue, as the CLI does (``sees_all``): answering
    every subject's request is their job. Requests they submit are owned by the operator."""
    return DsrCaller(operator.actor, operator.actor, sees_all=True)


@router.get("/{request_id}", name="dsr_detail")
def detail(request: Request, request_id: str, services: Services, viewer: Viewer) -> Response:
    """One request: timeline, result, downstream deliveries, cancel/extend."""
    found = services.dsr.get(request_id, _caller(viewer.operator))
    now = services.dsr.clock()
    events = [("Submitted by the subject", found.submitted_at), ("Received", found.received_at)]
    if found.started_at:
        events.append(("Processing started", found.started_at))
    if found.finished_at:
        events.append((f"Finished: {found.status.value}", found.finished_at))
    events.extend(
        (f"Delivered {d.event} to {d.destination}", d.delivered_at)
        for d in found.deliveries
        if d.delivered_at
    )
    events.sort(key=lambda e: e[1])
    return page(
        request,
        "dsr_detail.html",
        {
            "r": found,
            "days_left": days_left(found.due_at, now),
            "overdue": not found.status.terminal and found.due_at < now,
            "events": events,
            "export_ready": found.export is not None
            and found.export.destroyed_at is None
            and found.export.expires_at > now,
        },
    )


@router.post("/{request_id}/cancel", name="dsr_cancel")
def cancel(request: Request, request_id: str, services: Services, posted: Change) -> Response:
    """Cancel a pending request, with a reason (kept in the audit log)."""
    reason = posted.text("reason", 200)
    if not reason:
        raise InvalidFieldError("required", "say why the request is cancelled", "#/reason")
    services.dsr.cancel(request_id, _caller(posted.session.operator), reason)
    return RedirectResponse(f"{base_path(request)}/dsr/{request_id}", status_code=303)


@router.post("/{request_id}/extend", name="dsr_extend")
def extend(request: Request, request_id: str, services: Services, posted: Change) -> Response:
    """Extend the deadline once, with a reason (kept in the audit log)."""
    reason = posted.text("reason", 200)
    if not reason:
        raise InvalidFieldError("required", "say why the deadline is extended", "#/reason")
    services.dsr.extend(request_id, _caller(posted.session.operator), reason)
    return RedirectResponse(f"{base_path(request)}/dsr/{request_id}", status_code=303)


@router.post("/{request_id}/download", name="dsr_download")
def download(request_id: str, services: Services, posted: Change) -> Response:
    """The access/portability export as a JSON file (the download is audited)."""
    document = services.dsr.download(request_id, _caller(posted.session.operator))
    return Response(
        json.dumps(document, indent=2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="dsr-{request_id}.json"'},
    )
