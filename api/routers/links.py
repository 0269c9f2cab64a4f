"""Explain and unlink (scope `admin`)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminKey, AppMetrics, AppSettings, Engine
from api.metrics import StoreOperation
from api.routers.identity import PROBLEMS
from api.schemas import ExplainResponse, HopOut, PairRequest, UnlinkResponse
from api.settings import Settings
from identity.errors import BatchValidationError, InvalidFieldError
from identity.identifiers import NormalizedIdentifier
from identity.intake import normalize_all
from identity.resolution import ResolutionEngine

router = APIRouter(prefix="/v1/links", tags=["links"])


def _pair(
    body: PairRequest, engine: ResolutionEngine, settings: Settings
) -> tuple[NormalizedIdentifier, NormalizedIdentifier]:
    errors: list[InvalidFieldError] = []
    found: list[NormalizedIdentifier] = []
    for name, item in (("a", body.a), ("b", body.b)):
        try:
            found.extend(
                normalize_all(
                    [(item.type, item.value)], engine.policy, settings.default_region, "#"
                )
            )
        except BatchValidationError as exc:
            # normalize_all locates errors at #/0/...; re-locate them at #/a or #/b.
            errors.extend(e.at(e.field.replace("#/0", f"#/{name}", 1)) for e in exc.errors)
    if errors:
        raise BatchValidationError(errors)
    return found[0], found[1]


@router.post("/explain", response_model=ExplainResponse, responses=PROBLEMS)
def explain(
    body: PairRequest, engine: Engine, settings: AppSettings, metrics: AppMetrics, _: AdminKey
) -> ExplainResponse:
    """The chain of links (source, first and last time) that joins two identifiers."""
    a, b = _pair(body, engine, settings)
    with metrics.time_store(StoreOperation.EXPLAIN):
        result = engine.explain(a, b)
    return ExplainResponse(
        linked=result.linked,
        person_id=result.person_id,
        hops=[
            HopOut(
                from_node=h.from_node,
                from_type=h.from_type,
                to_node=h.to_node,
                to_type=h.to_type,
                sources=list(h.sources),
                first_linked_at=h.first_linked_at,
                last_linked_at=h.last_linked_at,
            )
            for h in result.hops
        ],
    )


@router.post("/unlink", response_model=UnlinkResponse, responses=PROBLEMS)
def unlink(
    body: PairRequest, engine: Engine, settings: AppSettings, metrics: AppMetrics, _: AdminKey
) -> UnlinkResponse:
    """Remove the direct link between two identifiers; split the person if it falls apart."""
    a, b = _pair(body, engine, settings)
    with metrics.time_store(StoreOperation.UNLINK):
        result = engine.unlink(a, b)
    return UnlinkResponse(
        removed_links=result.removed_links,
        split=result.split,
        person_id_a=result.person_id_a,
        person_id_b=result.person_id_b,
    )
