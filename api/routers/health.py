"""Liveness and readiness (no API key: probes must work without secrets)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from api.deps import get_container
from api.schemas import HealthResponse
from bootstrap.container import Container

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, operation_id="healthz")
@router.get("/livez", response_model=HealthResponse, operation_id="livez")
def healthz() -> HealthResponse:
    """The process is up (whether or not the store is connected yet: see ``/readyz``)."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz", response_model=HealthResponse, responses={503: {"description": "Store unavailable"}}
)
def readyz(container: Annotated[Container, Depends(get_container)]) -> HealthResponse:
    """The store answers (503 problem+json otherwise, saying why: e.g. Neo4j not reachable yet
    while ``idgraph serve`` keeps retrying it at start-up)."""
    container.store.ping()
    return HealthResponse(status="ready")
