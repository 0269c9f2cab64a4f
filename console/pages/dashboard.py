"""The dashboard."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from console.render import page
from console.security import Needs, Services
from privacy.access.operators import Session

router = APIRouter()


@router.get("/", name="dashboard")
def dashboard(
    request: Request, services: Services, session: Annotated[Session, Depends(Needs(None))]
) -> Response:
    """Ingest, refusals, requests due this week, the consent mix."""
    return page(request, "dashboard.html", {"d": services.dashboard.build()})
