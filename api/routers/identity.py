"""Identify, batch ingest and resolve."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from api.consent import GpcHeader, audit_consents, gpc_requested, with_gpc
from api.deps import (
    AppContainer,
    AppMetrics,
    AppSettings,
    Engine,
    Facts,
    IngestKey,
    RawBody,
    ResolveKey,
)
from api.metrics import StoreOperation
from api.problems import JSON_BODY_PROBLEMS, PROBLEM_JSON
from api.schemas import (
    ConsentsOut,
    FactsOut,
    IdentifyRequest,
    IdentifyResponse,
    IngestRequest,
    IngestResponse,
    IngestResult,
    RefusalOut,
    ResolveRequest,
    ResolveResponse,
)
from api.settings import Settings
from identity.errors import (
    BatchValidationError,
    IdentifierNotFoundError,
    InputLimitError,
    InvalidFieldError,
)
from identity.identifiers import NormalizedIdentifier
from identity.intake import normalize_all
from identity.model import EventOutcome, FactInput, IdentityEvent
from identity.resolution import ResolutionEngine
from privacy.audit import api_key_actor
from privacy.facts import EventInput, FactIntake

router = APIRouter(prefix="/v1", tags=["identity"])

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


def build_identity_event(
    request: IdentifyRequest,
    engine: ResolutionEngine,
    facts: FactIntake,
    region: str | None,
    max_identifiers: int,
    pointer: str = "#",
) -> IdentityEvent:
    """Validate, normalize and PII-scan one request; every problem in one BatchValidationError.

    Shared by the API and the bulk file ingest so both accept exactly the same input.
    """
    if len(request.identifiers) > max_identifiers:
        raise InputLimitError(
            f"{pointer}/identifiers",
            f"at most {max_identifiers} identifiers per event (IDGRAPH_MAX_IDENTIFIERS_PER_EVENT)",
        )
    at = request.timestamp or datetime.now(UTC)
    errors: list[InvalidFieldError] = []
    identifiers: tuple[NormalizedIdentifier, ...] = ()
    fact_inputs: tuple[FactInput, ...] = ()
    try:
        identifiers = normalize_all(
            ((i.type, i.value) for i in request.identifiers),
            engine.policy,
            region,
            f"{pointer}/identifiers",
        )
    except BatchValidationError as exc:
        errors.extend(exc.errors)
    try:
        fact_inputs = facts.prepare(
            request.traits,
            [EventInput(e.name, e.timestamp or at, e.properties) for e in request.events],
            at,
            pointer,
        )
    except BatchValidationError as exc:
        errors.extend(exc.errors)
    if errors:
        raise BatchValidationError(errors)
    return IdentityEvent(identifiers, request.source, at, fact_inputs)


def _event(
    request: IdentifyRequest,
    engine: ResolutionEngine,
    facts: FactIntake,
    settings: Settings,
    pointer: str,
) -> IdentityEvent:
    return build_identity_event(
        request, engine, facts, settings.default_region, settings.max_identifiers_per_event, pointer
    )


def _facts(outcome: EventOutcome) -> FactsOut:
    return FactsOut(
        stored=outcome.facts_stored,
        quarantined=outcome.facts_quarantined,
        dropped=outcome.facts_dropped,
    )


def _refusals(outcome: EventOutcome, pointer: str) -> list[RefusalOut]:
    return [
        RefusalOut(
            pointer=f"{pointer}/identifiers/{r.position}",
            type=r.hashed.type,
            reason=r.reason.value,
            detail=r.detail,
        )
        for r in outcome.refusals
    ]


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
    engine: Engine,
    facts: Facts,
    settings: AppSettings,
    metrics: AppMetrics,
    raw: RawBody,
    container: AppContainer,
    key: IngestKey,
    sec_gpc: GpcHeader = None,
) -> IdentifyResponse:
    """Link identifiers seen together in one event, with traits and events (scope `ingest`).

    With `Sec-GPC: 1`, GPC opt-outs are recorded for the person in the same transaction.
    """
    event = _event(body, engine, facts, settings, "#")
    gpc = gpc_requested(sec_gpc)
    if gpc:
        event = with_gpc(event, container.consent_signals, raw)
    with metrics.time_store(StoreOperation.INGEST):
        (outcome,) = engine.ingest([event])
    metrics.record_ingest([outcome])
    if gpc:
        audit_consents(container, api_key_actor(key.key_id), [event], [outcome])
    return IdentifyResponse(
        outcome=outcome.outcome.value,
        new_identifiers=outcome.new_identifiers,
        refused=_refusals(outcome, "#"),
        facts=_facts(outcome),
        consents=_consents(outcome) if gpc else None,
    )


@router.post(
    "/ingest", response_model=IngestResponse, response_model_exclude_none=True, responses=PROBLEMS
)
def ingest(
    body: IngestRequest,
    engine: Engine,
    facts: Facts,
    settings: AppSettings,
    metrics: AppMetrics,
    raw: RawBody,
    container: AppContainer,
    key: IngestKey,
    sec_gpc: GpcHeader = None,
) -> IngestResponse:
    """Resolve a batch of events in one transaction (scope `ingest`).

    If any event is invalid the whole batch is refused with every error located; nothing is
    written. Bulk files with per-row error reporting go through `idgraph ingest FILE`. With
    `Sec-GPC: 1`, GPC opt-outs are recorded for every event's person in the same transaction.
    """
    if len(body.events) > settings.max_batch_events:
        raise InputLimitError(
            "#/events",
            f"at most {settings.max_batch_events} events per batch (IDGRAPH_MAX_BATCH_EVENTS)",
        )
    events = []
    errors = []
    for index, item in enumerate(body.events):
        try:
            events.append(_event(item, engine, facts, settings, f"#/events/{index}"))
        except BatchValidationError as exc:
            errors.extend(exc.errors)
    if errors:
        raise BatchValidationError(errors)
    gpc = gpc_requested(sec_gpc)
    if gpc:
        events = [with_gpc(event, container.consent_signals, raw) for event in events]
    with metrics.time_store(StoreOperation.INGEST):
        outcomes = engine.ingest(events)
    metrics.record_ingest(outcomes)
    if gpc:
        audit_consents(container, api_key_actor(key.key_id), events, outcomes)
    results = [
        IngestResult(
            index=index,
            outcome=o.outcome.value,
            new_identifiers=o.new_identifiers,
            refused=_refusals(o, f"#/events/{index}"),
            facts=_facts(o),
            consents=_consents(o) if gpc else None,
        )
        for index, o in enumerate(outcomes)
    ]
    return IngestResponse(
        events=len(outcomes),
        outcomes=dict(Counter(o.outcome.value for o in outcomes)),
        refused_identifiers=sum(len(o.refusals) for o in outcomes),
        results=results,
    )


@router.post(
    "/resolve",
    response_model=ResolveResponse,
    responses=PROBLEMS
    | {404: {"description": "Identifier not in the graph", "content": {PROBLEM_JSON: {}}}},
)
def resolve(
    body: ResolveRequest,
    engine: Engine,
    settings: AppSettings,
    metrics: AppMetrics,
    _: ResolveKey,
) -> ResolveResponse:
    """The opaque person id an identifier resolves to (scope `resolve`). No data."""
    (identifier,) = normalize_all(
        [(body.identifier.type, body.identifier.value)],
        engine.policy,
        settings.default_region,
        "#/identifier",
    )
    with metrics.time_store(StoreOperation.RESOLVE):
        person_id = engine.resolve(identifier)
    if person_id is None:
        raise IdentifierNotFoundError("#/identifier")
    return ResolveResponse(person_id=person_id)
