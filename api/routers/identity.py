"""Identify, batch ingest and resolve."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter

from api.consent import GpcHeader, gpc_requested
from api.deps import BatchArrival, Ingest, IngestKey, Links, RawBody, ResolveKey
from api.problems import JSON_BODY_PROBLEMS, PROBLEM_JSON
from api.responses import ModelResponse
from api.routing import DecodedJsonRoute
from api.schemas import (
    ConsentsOut,
    FactsOut,
    IdentifyRequest,
    IdentifyResponse,
    IngestBatch,
    IngestResponse,
    ResolveRequest,
    ResolveResponse,
    refusals_out,
)
from identity.errors import IdentifierNotFoundError
from identity.model import EventOutcome, Outcome
from privacy.auditing.log import api_key_actor

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


@router.post(
    "/identify",
    response_model=IdentifyResponse,
    response_model_exclude_none=True,
    responses=PROBLEMS,
)
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
    gpc = gpc_requested(sec_gpc)
    outcome = service.identify(
        body, actor=api_key_actor(key.key_id), gpc_proof=raw if gpc else None
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


@router.post(
    "/ingest", response_model=IngestResponse, response_model_exclude_none=True, responses=PROBLEMS
)
def ingest(
    body: IngestBatch,
    service: Ingest,
    raw: RawBody,
    key: IngestKey,
    arrival: BatchArrival,
    sec_gpc: GpcHeader = None,
) -> ModelResponse:
    """Resolve a batch of events in one transaction (scope `ingest`).

    If any event is invalid the whole batch is refused with every error located; nothing is
    written. Bulk files with per-row error reporting go through `idgraph ingest FILE`. With
    `Sec-GPC: 1`, GPC opt-outs are recorded for every event's person in the same transaction.
    """
    gpc = gpc_requested(sec_gpc)
    outcomes = service.ingest(
        body.events,
        actor=api_key_actor(key.key_id),
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
