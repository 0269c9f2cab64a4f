"""Purpose-bound reads: profiles, audiences (definition, members, export) and feature tables.

Thin: each route turns the API key into a :class:`~privacy.access.policy_engine.Caller` and calls
:class:`~privacy.access.reads.ReadService`, which admits the purpose, decides through the policy
engine, decrypts only allowed fields and audits. Every route needs the ``read`` scope *and* a
purpose the key lists (403 ``purpose-forbidden`` otherwise).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import get_container, require
from api.problems import JSON_BODY_PROBLEMS, PROBLEM_JSON
from api.read_schemas import (
    AudienceCreate,
    AudienceOut,
    FeatureRowOut,
    FeaturesOut,
    MembersOut,
    ProfileOut,
)
from bootstrap.container import Container
from identity.group_commit import Arrival
from privacy.access.api_keys import ApiKey, Scope
from privacy.access.policy_engine import Caller
from privacy.access.reads import MAX_PAGE, ActivationRow, ReadService

router = APIRouter(prefix="/v1", tags=["reads"])

ReadKey = Annotated[ApiKey, Depends(require(Scope.READ))]
PurposeQuery = Annotated[
    str, Query(max_length=64, description="Why the data is read (policies/purposes.yaml).")
]
CursorQuery = Annotated[
    str | None, Query(max_length=400, description="`next_cursor` of the previous page.")
]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Members per page (at most).")]

PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {PROBLEM_JSON: {}}}
    for status, text in {
        401: "Missing or unknown API key",
        403: "API key lacks the read scope or the purpose",
        400: "Cursor not issued to this key for this read, altered or expired",
        422: "Unknown purpose, invalid rule or limit",
        503: "Store unavailable",
    }.items()
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "Not found (or not readable)", "content": {PROBLEM_JSON: {}}}
}


async def get_reads(container: Annotated[Container, Depends(get_container)]) -> ReadService:
    """The read service."""
    return container.reads


Reads = Annotated[ReadService, Depends(get_reads)]


def _caller(key: ApiKey) -> Caller:
    return Caller(key.key_id, key.purposes, key.consumer or key.key_id, sees_all=key.allows_admin)


@router.get(
    "/profiles/{person_id}",
    response_model=ProfileOut,
    responses={**PROBLEMS, **NOT_FOUND},
    summary="What a purpose may see of one person",
)
async def get_profile(
    person_id: str, purpose: PurposeQuery, key: ReadKey, reads: Reads
) -> JSONResponse:
    """Attributes (latest value per name) and events the purpose may read, within retention,
    if the person's consent or lawful basis allows it. An unknown person and a denied read get
    the same 404."""
    # Announced on the event loop as the request arrives, before the hand-over to a worker
    # thread (where the read runs, as a sync route's body would, and waits for its durable
    # audit entry): an audit writer taking its group meanwhile waits for this read (briefly).
    arrival = reads.announce_profile()
    try:
        return await run_in_threadpool(
            _profile_answer, reads, _caller(key), person_id, purpose, arrival
        )
    finally:
        arrival.withdraw()  # idempotent: a no-op once submitted (profile() ends it anyway)


def _profile_answer(
    reads: ReadService, caller: Caller, person_id: str, purpose: str, arrival: Arrival
) -> JSONResponse:
    """The profile route's work on its worker thread: the read (answered once its audit entry
    is durable) and the response."""
    out = ProfileOut.of(reads.profile(caller, person_id, purpose, arrival))
    # The same bytes FastAPI renders for a returned ProfileOut (response_model stays for the
    # OpenAPI schema), without its round trip: for a sync route it dumps the model, validates
    # the dump again and serializes it on another worker-thread hop (~0.27 ms a profile of 16
    # fields, measured; one model_dump here ~0.04 ms). Pinned by tests/api/test_reads_api.py.
    return JSONResponse(out.model_dump(mode="json"))


@router.post(
    "/audiences",
    response_model=AudienceOut,
    status_code=201,
    responses={**PROBLEMS, **JSON_BODY_PROBLEMS},
    summary="Define an audience (rule segment) for one purpose",
)
def define_audience(body: AudienceCreate, key: ReadKey, reads: Reads) -> AudienceOut:
    """Rules over attributes and events; each must be readable by the purpose."""
    audience = reads.define_audience(_caller(key), body.name, body.purpose, body.rules.to_domain())
    return AudienceOut.of(audience)


@router.get(
    "/audiences/{audience_id}",
    response_model=AudienceOut,
    responses={**PROBLEMS, **NOT_FOUND},
    summary="An audience definition",
)
def get_audience(audience_id: str, key: ReadKey, reads: Reads) -> AudienceOut:
    """The stored rules (no members)."""
    return AudienceOut.of(reads.audience(_caller(key), audience_id))


@router.get(
    "/audiences/{audience_id}/members",
    response_model=MembersOut,
    responses={**PROBLEMS, **NOT_FOUND},
    summary="One page of the audience's members who pass the policy",
)
def audience_members(
    audience_id: str,
    key: ReadKey,
    reads: Reads,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> MembersOut:
    """Person ids in id order. A page may be short (the scan per request is bounded); keep
    following ``next_cursor`` until it is ``null``."""
    page = reads.audience_members(_caller(key), audience_id, cursor, limit)
    return MembersOut(
        audience_id=page.audience_id,
        purpose=page.purpose,
        members=list(page.person_ids),
        next_cursor=page.next_cursor,
        scanned=page.scanned,
    )


def _csv_lines(rows: Iterator[ActivationRow]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("identifier_type", "sha256"))
    for row in rows:
        writer.writerow((row.identifier_type, row.sha256))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _jsonl_lines(rows: Iterator[ActivationRow]) -> Iterator[str]:
    for row in rows:
        yield json.dumps({"identifier_type": row.identifier_type, "sha256": row.sha256}) + "\n"


@router.get(
    "/audiences/{audience_id}/export",
    responses={
        **PROBLEMS,
        **NOT_FOUND,
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}},
    },
    response_class=StreamingResponse,
    summary="Stream the audience's activation identifiers (SHA-256 of normalized values)",
)
def export_audience(
    audience_id: str,
    key: ReadKey,
    reads: Reads,
    export_format: Annotated[Literal["csv", "jsonl"], Query(alias="format")] = "csv",
) -> StreamingResponse:
    """One row per identifier the purpose may activate (``activation`` in purposes.yaml):
    ``identifier_type`` and the SHA-256 (hex) of its normalized value, as ad platforms expect.
    Never the raw value, never the person id."""
    rows = reads.export_audience(_caller(key), audience_id)
    if export_format == "csv":
        return StreamingResponse(
            _csv_lines(rows),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{audience_id}.csv"'},
        )
    return StreamingResponse(
        _jsonl_lines(rows),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{audience_id}.jsonl"'},
    )


@router.get(
    "/features",
    response_model=FeaturesOut,
    responses=PROBLEMS,
    summary="A page of the purpose's feature table, keyed by per-consumer pseudonyms",
)
def features(
    purpose: PurposeQuery,
    key: ReadKey,
    reads: Reads,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> FeaturesOut:
    """The ``features`` attributes of the purpose for persons it may read; a feature that is
    missing or past retention is ``null``. Pseudonyms are stable for one consumer (the API
    key's) and differ across consumers."""
    page = reads.features(_caller(key), purpose, cursor, limit)
    return FeaturesOut(
        purpose=page.purpose,
        columns=list(page.columns),
        rows=[FeatureRowOut(pseudonym=r.pseudonym, features=dict(r.values)) for r in page.rows],
        next_cursor=page.next_cursor,
        pseudonym_key_id=page.pseudonym_key_id,
    )
