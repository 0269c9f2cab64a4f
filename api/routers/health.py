"""Liveness and readiness (no API key: probes must work without secrets)."""

from __future__ import annotations

from typing import Annotated

from bootstrap.container import Container
from fastapi import APIRouter, Depends

from api.deps import get_container
from api.schemas import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse)
def healthz() -> HealthResponse:
    """The process is up."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz", response_model=HealthResponse, responses={503: {"description": "Store unavailable"}}
)
def readyz(container: Annotated[Container, Depends(get_container)]) -> HealthResponse:
    """The store answers (503 problem+json otherwise)."""
    container.store.ping()
    return HealthResponse(status="ready")
