"""Data-subject requests (scope `dsr`): submit, track, cancel, extend, download exports."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.auth import ApiKey, Scope
from api.bootstrap import Container
from api.deps import AppSettings, get_container, require
from api.problems import JSON_BODY_PROBLEMS, PROBLEM_JSON
from api.schemas import IdentifierIn
from api.settings import Settings
from identity.errors import BatchValidationError, InvalidFieldError
from identity.intake import normalize_all
from privacy.audit import api_key_actor
from privacy.dsr.delivery import check_url
from privacy.dsr.export import to_csv
from privacy.dsr.model import DsrAction, DsrRequest, DsrStatus, DsrType, NewRequest
from privacy.dsr.service import DsrService

router = APIRouter(prefix="/v1/dsr", tags=["data-subject requests"])

DsrKey = Annotated[ApiKey, Depends(require(Scope.DSR))]

PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {PROBLEM_JSON: {}}}
    for status, text in {
        401: "Missing or unknown API key",
        403: "API key lacks the `dsr` scope",
        404: "No such request",
        409: "Request id reused with different content, or the request's state forbids it",
        410: "The export expired and was destroyed",
        422: "Invalid input; nothing was written",
        503: "Store unavailable",
    }.items()
}


def get_dsr(container: Annotated[Container, Depends(get_container)]) -> DsrService:
    """The DSR service of the container."""
    return container.dsr


Dsr = Annotated[DsrService, Depends(get_dsr)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DsrCreate(_Strict):
    """An OpenDSR-like request. Identity verification is the caller's job."""

    request_id: Annotated[str, Field(min_length=1, max_length=128, examples=["dsr-2026-0001"])]
    type: DsrType
    action: DsrAction = Field(
        default=DsrAction.APPLY,
        description="restriction/objection only: `lift` withdraws an earlier one.",
    )
    subject_identities: Annotated[list[IdentifierIn], Field(min_length=1, max_length=20)]
    submitted_time: AwareDatetime | None = Field(
        default=None, description="When the subject made the request (the legal clock starts)."
    )
    regulation: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")] | None = Field(
        default=None, examples=["gdpr", "ccpa"]
    )
    purposes: Annotated[
        list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]], Field(max_length=50)
    ] = Field(default_factory=list, description="objection only: the purposes objected to.")
    callback_urls: Annotated[list[Annotated[str, Field(max_length=2048)]], Field(max_length=5)] = (
        Field(default_factory=list)
    )


class ExtendRequest(_Strict):
    """Why the deadline is extended (kept in the audit log: no personal data)."""

    reason: Annotated[str, Field(max_length=200)] = ""


class ExportOut(_Strict):
    """The export of an access/portability request."""

    expires_at: datetime
    expired: bool
    size_bytes: int
    downloads: dict[str, str]


class DeliveryOut(_Strict):
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


class DsrOut(_Strict):
    """A request's status. Subject identities are never returned, only their types."""

    request_id: str
    type: str
    action: str
    purposes: list[str]
    regulation: str
    status: str
    submitted_time: datetime
    received_at: datetime
    due_at: datetime
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


class DsrList(_Strict):
    """A page of requests; pass ``next_after`` as ``after`` for the next page (an opaque,
    sealed cursor: 400 if altered, expired or used by another API key)."""

    requests: list[DsrOut]
    next_after: str | None


class ExportFormat(StrEnum):
    """Download formats."""

    JSON = "json"
    CSV = "csv"


def dsr_out(request: DsrRequest, now: datetime) -> DsrOut:
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
        regulation=request.regulation,
        status=request.status.value,
        submitted_time=request.submitted_at,
        received_at=request.received_at,
        due_at=request.due_at,
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
                last_error=d.last_error,
                next_attempt_at=d.next_attempt_at,
                delivered_at=d.delivered_at,
            )
            for d in request.deliveries
        ],
    )


def new_request(
    body: DsrCreate, service: DsrService, settings: Settings
) -> tuple[NewRequest, list[Any]]:
    """Normalize the subject identities and check the callback URLs; 422 names each field."""
    errors: list[InvalidFieldError] = []
    subjects: list[Any] = []
    try:
        subjects = list(
            normalize_all(
                ((i.type, i.value) for i in body.subject_identities),
                service.identity_policy,
                settings.default_region,
                "#/subject_identities",
            )
        )
    except BatchValidationError as exc:
        errors.extend(exc.errors)
    for index, url in enumerate(body.callback_urls):
        try:
            check_url(url, allow_http=service.config.allow_http_callbacks, what="callback URL")
        except ValueError as exc:
            errors.append(InvalidFieldError("invalid_url", str(exc), f"#/callback_urls/{index}"))
    if errors:
        raise BatchValidationError(errors)
    new = NewRequest(
        request_id=body.request_id,
        type=body.type,
        action=body.action,
        purposes=tuple(body.purposes),
        regulation=body.regulation or service.config.default_regulation,
        submitted_at=body.submitted_time or service.clock(),
        callback_urls=tuple(body.callback_urls),
    )
    return new, subjects


@router.post(
    "",
    response_model=DsrOut,
    status_code=202,
    responses={
        **PROBLEMS,
        **JSON_BODY_PROBLEMS,
        200: {"description": "A replay of an accepted request"},
    },
)
def submit(body: DsrCreate, service: Dsr, settings: AppSettings, key: DsrKey) -> Response:
    """Accept a data-subject request (202); a replay of the same request id and content
    answers 200 with the stored request, different content under the same id 409."""
    new, subjects = new_request(body, service, settings)
    submitted = service.submit(new, subjects, api_key_actor(key.key_id))
    out = dsr_out(submitted.request, service.clock())
    return JSONResponse(out.model_dump(mode="json"), status_code=202 if submitted.created else 200)


@router.get("", response_model=DsrList, responses=PROBLEMS)
def list_requests(
    service: Dsr,
    key: DsrKey,
    status: DsrStatus | None = None,
    after: Annotated[str, Query(max_length=400)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DsrList:
    """Requests by request id, optionally of one status."""
    found, next_after = service.list_page(key.key_id, status, after or None, limit)
    now = service.clock()
    return DsrList(requests=[dsr_out(r, now) for r in found], next_after=next_after)


@router.get("/{request_id}", response_model=DsrOut, responses=PROBLEMS)
def status(request_id: str, service: Dsr, _: DsrKey) -> DsrOut:
    """A request's status, due date, result, export link and webhook deliveries."""
    return dsr_out(service.get(request_id), service.clock())


@router.post("/{request_id}/cancel", response_model=DsrOut, responses=PROBLEMS)
def cancel(request_id: str, service: Dsr, key: DsrKey) -> DsrOut:
    """Cancel a pending request (409 once processing started)."""
    return dsr_out(service.cancel(request_id, api_key_actor(key.key_id)), service.clock())


@router.post(
    "/{request_id}/extend", response_model=DsrOut, responses={**PROBLEMS, **JSON_BODY_PROBLEMS}
)
def extend(request_id: str, service: Dsr, key: DsrKey, body: ExtendRequest | None = None) -> DsrOut:
    """Extend the due date once by the regulation's extension (GDPR: two months)."""
    reason = body.reason if body is not None else ""
    return dsr_out(service.extend(request_id, api_key_actor(key.key_id), reason), service.clock())


@router.get(
    "/{request_id}/download",
    responses={**PROBLEMS, 200: {"content": {"application/json": {}, "text/csv": {}}}},
)
def download(
    request_id: str,
    service: Dsr,
    key: DsrKey,
    format: ExportFormat = ExportFormat.JSON,  # noqa: A002 - the query parameter's public name
) -> Response:
    """The access/portability export (JSON or CSV) until it expires (410 afterwards)."""
    document = service.download(request_id, api_key_actor(key.key_id))
    filename = f"dsr-{request_id}.{format.value}"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    }
    if format is ExportFormat.CSV:
        return PlainTextResponse(to_csv(document), media_type="text/csv", headers=headers)
    return JSONResponse(document, headers=headers)
