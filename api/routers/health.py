"""Liveness and readiness (no API key: probes must work without secrets)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AppApplierStart, AppContainer
from api.schemas import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, operation_id="healthz")
@router.get("/livez", response_model=HealthResponse, operation_id="livez")
def healthz() -> HealthResponse:
    """The process is up (whether or not the store is connected yet: see ``/readyz``)."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    response_model=HealthResponse,
    responses={
        503: {"description": "Store unavailable, or the ingest applier process has not started yet"}
    },
)
def readyz(container: AppContainer, applier: AppApplierStart) -> HealthResponse:
    """The store answers and, under ``idgraph serve`` with its applier process (the default on
    the SQLite store), that process has looked at the ingest journal (503 problem+json
    otherwise, saying why: e.g. Neo4j not reachable yet while ``idgraph serve`` keeps retrying
    it at start-up, or ``the ingest applier has not started yet`` for the seconds the child
    takes to start, during which an asynchronous batch would only wait)."""
    container.store.ping()
    if applier is not None:
        applier.check()
    return HealthResponse(status="ready")
