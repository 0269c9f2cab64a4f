"""Identify, batch ingest and resolve."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.collector import BATCHES
from api.consent import GPC_HEADER, GpcHeader, gpc_requested
from api.deps import (
    AsyncIngestJobs,
    BatchArrival,
    Ingest,
    IngestKey,
    Links,
    RawBody,
    ResolveKey,
)
from api.problems import JSON_BODY_PROBLEMS, PROBLEM_JSON
from api.responses import ModelResponse
from api.routing import DecodedJsonRoute, decoded_json, fast_path, forget_decoded_json
from api.schemas import (
    ConsentsOut,
    FactsOut,
    IdentifyRequest,
    IdentifyResponse,
    IngestAccepted,
    IngestBatch,
    IngestJob,
    IngestResponse,
    ResolveRequest,
    ResolveResponse,
    refusals_out,
)
from identity.errors import IdentifierNotFoundError
from identity.group_commit import Arrival
from identity.model import EventOutcome, Outcome
from privacy.access.api_keys import ApiKey
from privacy.auditing.log import api_key_actor
from services import inputs
from services.async_ingest import AsyncIngest, IngestJobNotFoundError
from services.ingest import IngestService
from services.inputs import IdentifyInput

router = APIRouter(prefix="/v1", tags=["identity"], route_class=DecodedJsonRoute)

# Every route using these takes a JSON body, hence JSON_BODY_PROBLEMS (its 400 and 415).
PROBLEMS: dict[int | str, dict[str, Any]] = {
    **{
        status: {"description": text, "content": {PROBLEM_JSON: {}}}
        for status, text in {
            401: "Missing or unknown API key",
            403: "API key lacks the scope",
            413: "Body too large",
            422: "Invalid input; nothing was written",
            503: "Store unavailable",
        }.items()
    },
    **JSON_BODY_PROBLEMS,
}


def _facts(outcome: EventOutcome) -> FactsOut:
    return FactsOut(
        stored=outcome.facts_stored,
        quarantined=outcome.facts_quarantined,
        dropped=outcome.facts_dropped,
    )


def _deduplicated(outcome: EventOutcome) -> bool | None:
    # Only said when true, so a response without a message id is unchanged.
    return True if outcome.outcome is Outcome.DUPLICATE else None


def _consents(outcome: EventOutcome) -> ConsentsOut:
    return ConsentsOut(recorded=outcome.consents_recorded, dropped=outcome.consents_dropped)


def _identify(
    service: IngestService,
    body: IdentifyRequest | IdentifyInput,
    raw: bytes,
    key_id: str,
    sec_gpc: str | None,
    arrival: Arrival | None = None,
) -> ModelResponse:
    """The endpoint's work, on a worker thread: one call of the use case, then the response."""
    gpc = gpc_requested(sec_gpc)
    outcome = service.identify(
        body, actor=api_key_actor(key_id), gpc_proof=raw if gpc else None, arrival=arrival
    )
    response = IdentifyResponse(
        outcome=outcome.outcome.value,
        new_identifiers=outcome.new_identifiers,
        refused=refusals_out(outcome, "#"),
        facts=_facts(outcome),
        consents=_consents(outcome) if gpc else None,
        deduplicated=_deduplicated(outcome),
    )
    # Built and checked here: serialized once, without FastAPI's second pass (api.responses).
    return ModelResponse(response, exclude_none=True)


def _certified_identify(request: Request) -> IdentifyInput | None:
    """The event of a ``POST /v1/identify`` body in the plain shape, certified without the
    model (:func:`services.inputs.identify_input`, as a bulk row and an ingest batch's events
    are), or ``None``: FastAPI's handler then answers with the model's own errors and pointers.

    Why: one identify is one small event, so FastAPI's per-request machinery (dependency solving,
    body validation through the route's model field) is a large share of its server CPU (py-spy
    at 16 connections: ~8 % of the GIL's samples). Certified before anything else happens (no
    key check), as the ingest route's fast path (:func:`api.routing.fast_path`).
    """
    document = decoded_json(request)
    event = inputs.identify_input(document) if type(document) is dict else None
    if event is not None:
        forget_decoded_json(request)  # its values are in ``event`` now
    return event


async def _certified_identify_answer(
    request: Request, event: IdentifyInput, values: Mapping[str, Any]
) -> ModelResponse:
    """What :func:`identify` answers, for a certified ``event``: ``values`` are the route's own
    dependencies (key checked, raw bytes read), run by :func:`api.routing.fast_path` in
    FastAPI's order; then the ``Sec-GPC`` header, as FastAPI reads header parameters after the
    dependencies; the endpoint's work on a worker thread (it waits for a durable commit)."""
    key: ApiKey = values["key"]
    sec_gpc = request.headers.get(GPC_HEADER)
    service: IngestService = values["service"]
    # Announced on the event loop, before the hand-over to a worker thread: a writer that takes
    # its group meanwhile waits for this call (briefly), as for an ingest batch's arrival.
    arrival = service.announce_identify()
    try:
        return await run_in_threadpool(
            _identify, service, event, values["raw"], key.key_id, sec_gpc, arrival
        )
    finally:
        arrival.withdraw()  # idempotent: a no-op once submitted


@router.post(
    "/identify",
    response_model=IdentifyResponse,
    response_model_exclude_none=True,
    responses=PROBLEMS,
)
@fast_path(_certified_identify, _certified_identify_answer)
def identify(
    body: IdentifyRequest,
    service: Ingest,
    raw: RawBody,
    key: IngestKey,
    sec_gpc: GpcHeader = None,
) -> ModelResponse:
    """Link identifiers seen together in one event, with traits and events (scope `ingest`).

    With `Sec-GPC: 1`, GPC opt-outs are recorded for the person in the same transaction.
    """
    return _identify(service, body, raw, key.key_id, sec_gpc)


def _ingest(
    service: IngestService,
    events: Sequence[IdentifyInput],
    raw: bytes,
    key_id: str,
    arrival: Arrival,
    sec_gpc: str | None,
) -> ModelResponse:
    """The endpoint's work, on a worker thread: one call of the use case, then the response
    (the cyclic collector's young threshold raised meanwhile: :mod:`api.collector`)."""
    with BATCHES.handling():
        return _ingest_batch(service, events, raw, key_id, arrival, sec_gpc)


def _ingest_batch(
    service: IngestService,
    events: Sequence[IdentifyInput],
    raw: bytes,
    key_id: str,
    arrival: Arrival,
    sec_gpc: str | None,
) -> ModelResponse:
    gpc = gpc_requested(sec_gpc)
    outcomes = service.ingest(
        events,
        actor=api_key_actor(key_id),
        gpc_proof=raw if gpc else None,
        arrival=arrival,
    )
    # Validated in one call from plain values (pydantic's Rust validator walks the whole
    # tree), not one model __init__ per event and per nested object: for a 50-event batch
    # that was ~1 ms of the worker thread, 1.6x this way (bench/README.md).
    response = IngestResponse.model_validate(
        {
            "events": len(outcomes),
            "outcomes": dict(Counter(o.outcome.value for o in outcomes)),
            # Distinct identifiers per event; ``results[].refused`` lists every position.
            "refused_identifiers": sum(len(o.refused_identifiers) for o in outcomes),
            "results": [
                {
                    "index": index,
                    "outcome": o.outcome.value,
                    "new_identifiers": o.new_identifiers,
                    "refused": refusals_out(o, f"#/events/{index}") if o.refusals else [],
                    "facts": {
                        "stored": o.facts_stored,
                        "quarantined": o.facts_quarantined,
                        "dropped": o.facts_dropped,
                    },
                    "consents": (
                        {"recorded": o.consents_recorded, "dropped": o.consents_dropped}
                        if gpc
                        else None
                    ),
                    "deduplicated": _deduplicated(o),
                }
                for index, o in enumerate(outcomes)
            ],
        }
    )
    return ModelResponse(response, exclude_none=True)


PREFER_HEADER = "Prefer"
PreferHeader = Annotated[
    str | None,
    Header(
        alias=PREFER_HEADER,
        description="`respond-async` (RFC 7240): answer 202 once the batch is durably queued; "
        "read its outcome at `Location` (SQLite store; ignored on Neo4j).",
    ),
]


def respond_async(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header (RFC 7240) asks for ``respond-async``: preferences are
    comma-separated, each a token (case-insensitive) with an optional value and parameters."""
    if not prefer:
        return False
    for preference in prefer.split(","):
        name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if name == "respond-async":
            return True
    return False


def _submit(
    jobs: AsyncIngest,
    events: Sequence[IdentifyInput],
    raw: bytes,
    key_id: str,
    sec_gpc: str | None,
) -> ModelResponse:
    """Validate and queue the batch (on a worker thread: it waits for the journal's fsync)."""
    gpc = gpc_requested(sec_gpc)
    with BATCHES.handling():
        accepted = jobs.submit(events, key_id=key_id, gpc_proof=raw if gpc else None)
    return ModelResponse(
        IngestAccepted(job_id=accepted.job_id, status="queued", events=accepted.events),
        status_code=202,
        headers={
            "Preference-Applied": "respond-async",
            "Location": f"/v1/ingest/jobs/{accepted.job_id}",
        },
    )


def _certified_events(request: Request) -> Sequence[IdentifyInput] | None:
    """The events of a ``POST /v1/ingest`` body in the plain shape, certified without the
    model, or ``None``: FastAPI's handler then answers with the model's own errors and pointers.

    Only a body the middleware decoded and :func:`services.inputs.ingest_inputs` certifies takes
    the route's fast path, and it is certified before anything else happens (no key check, no
    announcement). Per 50-event batch the fast path skips FastAPI's dependency machinery and
    body validation wrapper (py-spy: ~5 % of the server's CPU in `bench/load.py`'s ingest
    phase; bench/README.md).
    """
    document = decoded_json(request)
    events = inputs.ingest_inputs(document) if document is not None else None
    if events is not None:
        forget_decoded_json(request)  # its values are in ``events`` now: freed before the commit
    return events


async def _certified_ingest(
    request: Request, events: Sequence[IdentifyInput], values: Mapping[str, Any]
) -> ModelResponse:
    """What :func:`ingest` answers, for certified ``events``: ``values`` are the route's own
    dependencies (key checked, batch announced, raw bytes read), run by
    :func:`api.routing.fast_path` in FastAPI's order; then the ``Sec-GPC`` header, as FastAPI
    reads header parameters after the dependencies; the endpoint's work on a worker thread."""
    key: ApiKey = values["key"]
    sec_gpc = request.headers.get(GPC_HEADER)
    jobs: AsyncIngest | None = values["jobs"]
    if jobs is not None and respond_async(request.headers.get(PREFER_HEADER)):
        values["arrival"].withdraw()  # written by the applier: no sync writer waits for it
        return await run_in_threadpool(_submit, jobs, events, values["raw"], key.key_id, sec_gpc)
    return await run_in_threadpool(
        _ingest, values["service"], events, values["raw"], key.key_id, values["arrival"], sec_gpc
    )


@router.post(
    "/ingest",
    response_model=IngestResponse,
    response_model_exclude_none=True,
    responses=PROBLEMS
    | {
        202: {
            "description": "With `Prefer: respond-async`: validated and durably queued; "
            "`Location` names the job",
            "model": IngestAccepted,
        },
        503: {
            "description": "Store unavailable, or the ingest journal is full (`Retry-After`)",
            "content": {PROBLEM_JSON: {}},
        },
    },
)
@fast_path(_certified_events, _certified_ingest)
def ingest(
    body: IngestBatch,
    service: Ingest,
    raw: RawBody,
    key: IngestKey,
    arrival: BatchArrival,
    jobs: AsyncIngestJobs,
    sec_gpc: GpcHeader = None,
    prefer: PreferHeader = None,
) -> ModelResponse:
    """Resolve a batch of events in one transaction (scope `ingest`).

    If any event is invalid the whole batch is refused with every error located; nothing is
    written. Bulk files with per-row error reporting go through `idgraph ingest FILE`. With
    `Sec-GPC: 1`, GPC opt-outs are recorded for every event's person in the same transaction.

    With `Prefer: respond-async` (SQLite store): validated the same way, then sealed into a
    durable journal and answered **202** (`Preference-Applied: respond-async`, `Location:
    /v1/ingest/jobs/{job_id}`); a background applier writes queued batches in large
    transactions. A full journal answers 503 with `Retry-After`.
    """
    if jobs is not None and respond_async(prefer):
        arrival.withdraw()
        return _submit(jobs, body.events, raw, key.key_id, sec_gpc)
    return _ingest(service, body.events, raw, key.key_id, arrival, sec_gpc)


@router.get(
    "/ingest/jobs/{job_id}",
    response_model=IngestJob,
    response_model_exclude_none=True,
    responses={
        401: {"description": "Missing or unknown API key", "content": {PROBLEM_JSON: {}}},
        403: {"description": "API key lacks the scope", "content": {PROBLEM_JSON: {}}},
        404: {
            "description": "No such job for this key (unknown, another key's, or expired)",
            "content": {PROBLEM_JSON: {}},
        },
    },
)
def ingest_job(job_id: str, jobs: AsyncIngestJobs, key: IngestKey) -> ModelResponse:
    """An asynchronous ingest job (scope `ingest`, the key that submitted it): `queued`, then
    `applied` with per-event results as the synchronous answer gives them, or `failed`."""
    if jobs is None:
        raise IngestJobNotFoundError(job_id)
    job = jobs.job(job_id, key_id=key.key_id)
    payload: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status,
        "events": job.events,
        "queued_at": job.queued_at,
        "finished_at": job.finished_at,
        "expires_at": job.expires_at,
        "error": job.error,
    }
    if job.results is not None:
        payload["results"] = job.results
        payload["outcomes"] = dict(Counter(r["outcome"] for r in job.results))
        payload["refused_identifiers"] = job.refused_identifiers
    return ModelResponse(IngestJob.model_validate(payload), exclude_none=True)


@router.post(
    "/resolve",
    response_model=ResolveResponse,
    responses=PROBLEMS
    | {404: {"description": "Identifier not in the graph", "content": {PROBLEM_JSON: {}}}},
)
def resolve(body: ResolveRequest, service: Links, _: ResolveKey) -> ModelResponse:
    """The opaque person id an identifier resolves to (scope `resolve`). No data."""
    person_id = service.resolve((body.identifier.type, body.identifier.value))
    if person_id is None:
        raise IdentifierNotFoundError("#/identifier")
    return ModelResponse(ResolveResponse(person_id=person_id))
