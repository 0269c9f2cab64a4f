"""Data-subject requests (scope `dsr`): submit, track, cancel, extend, download exports."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import Field

from api.deps import get_container, require
from api.problems import JSON_BODY_PROBLEMS, PROBLEM_JSON
from api.schemas import IdentifierIn
from bootstrap.container import Container
from privacy.access.api_keys import ApiKey, Scope
from privacy.auditing.log import api_key_actor
from privacy.dsr.export import to_csv
from privacy.dsr.model import DsrCaller, DsrStatus
from privacy.dsr.service import DsrService
from services.dsr_views import DsrCreate, DsrOut, ExportFormat, dsr_out
from services.inputs import StrictModel

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


async def get_dsr(container: Annotated[Container, Depends(get_container)]) -> DsrService:
    """The DSR service of the container."""
    return container.dsr


Dsr = Annotated[DsrService, Depends(get_dsr)]


def dsr_caller(key: DsrKey) -> DsrCaller:
    """The key as a DSR caller: its requests belong to its consumer; ``admin`` sees all."""
    return DsrCaller(api_key_actor(key.key_id), key.consumer or key.key_id, key.allows_admin)


Caller = Annotated[DsrCaller, Depends(dsr_caller)]


class ExtendRequest(StrictModel):
    """Why the deadline is extended (kept in the audit log: no personal data)."""

    reason: Annotated[str, Field(max_length=200)] = ""


class CompellingGroundsIn(StrictModel):
    """An operator's decision that compelling legitimate grounds override an objection."""

    subject_identities: Annotated[list[IdentifierIn], Field(min_length=1, max_length=20)]
    purposes: Annotated[
        list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]],
        Field(min_length=1, max_length=50),
    ]
    reason: Annotated[str, Field(max_length=500)]


class CompellingGroundsOut(StrictModel):
    """What the decision reached."""

    persons: int
    consent_records: int
    subjects_not_found: int


class DsrList(StrictModel):
    """A page of requests; pass ``next_after`` as ``after`` for the next page (an opaque,
    sealed cursor: 400 if altered, expired or used by another API key)."""

    requests: list[DsrOut]
    next_after: str | None


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
def submit(body: DsrCreate, service: Dsr, caller: Caller) -> Response:
    """Accept a data-subject request (202); a replay of the same request id and content
    answers 200 with the stored request, different content under the same id 409."""
    submitted = service.submit(body.submission(), caller)
    out = dsr_out(submitted.request, service.clock())
    return JSONResponse(out.model_dump(mode="json"), status_code=202 if submitted.created else 200)


@router.post(
    "/compelling-grounds",
    response_model=CompellingGroundsOut,
    responses={**PROBLEMS, **JSON_BODY_PROBLEMS},
)
def compelling_grounds(
    body: CompellingGroundsIn,
    service: Dsr,
    key: Annotated[ApiKey, Depends(require(Scope.DSR_OVERRIDE))],
) -> CompellingGroundsOut:
    """Record that compelling legitimate grounds override the subject's objection (scope
    `dsr_override`; Art. 21(1)); audited with the reason."""
    counts = service.record_compelling_grounds(
        [(i.type, i.value) for i in body.subject_identities],
        body.purposes,
        body.reason,
        api_key_actor(key.key_id),
    )
    return CompellingGroundsOut(**counts)


@router.get("", response_model=DsrList, responses=PROBLEMS)
def list_requests(
    service: Dsr,
    caller: Caller,
    status: DsrStatus | None = None,
    after: Annotated[str, Query(max_length=400)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DsrList:
    """Requests by request id, optionally of one status."""
    found, next_after = service.list_page(caller, status, after or None, limit)
    now = service.clock()
    return DsrList(requests=[dsr_out(r, now) for r in found], next_after=next_after)


@router.get("/{request_id}", response_model=DsrOut, responses=PROBLEMS)
def status(request_id: str, service: Dsr, caller: Caller) -> DsrOut:
    """A request's status, due date, result, export link and webhook deliveries."""
    return dsr_out(service.get(request_id, caller), service.clock())


@router.post("/{request_id}/cancel", response_model=DsrOut, responses=PROBLEMS)
def cancel(request_id: str, service: Dsr, caller: Caller) -> DsrOut:
    """Cancel a pending request (409 once processing started)."""
    return dsr_out(service.cancel(request_id, caller), service.clock())


@router.post(
    "/{request_id}/extend", response_model=DsrOut, responses={**PROBLEMS, **JSON_BODY_PROBLEMS}
)
def extend(
    request_id: str, service: Dsr, caller: Caller, body: ExtendRequest | None = None
) -> DsrOut:
    """Extend the due date once by the regulation's extension (GDPR: two months)."""
    reason = body.reason if body is not None else ""
    return dsr_out(service.extend(request_id, caller, reason), service.clock())


@router.get(
    "/{request_id}/download",
    responses={**PROBLEMS, 200: {"content": {"application/json": {}, "text/csv": {}}}},
)
def download(
    request_id: str,
    service: Dsr,
    caller: Caller,
    format: ExportFormat = ExportFormat.JSON,  # noqa: A002 - the query parameter's public name
) -> Response:
    """The access/portability export (JSON or CSV) until it expires (410 afterwards)."""
    document = service.download(request_id, caller)
    filename = f"dsr-{request_id}.{format.value}"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    }
    if format is ExportFormat.CSV:
        return PlainTextResponse(to_csv(document), media_type="text/csv", headers=headers)
    return JSONResponse(document, headers=headers)
