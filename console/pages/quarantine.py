"""Quarantine review: list, reveal (audited), release, drop."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from console.render import base_path, page
from console.security import Action, Needs, Posted, Services
from privacy.access.operators import ConsoleScope, Session

router = APIRouter(prefix="/quarantine")
Viewer = Annotated[Session, Depends(Needs(ConsoleScope.QUARANTINE))]
Change = Annotated[Posted, Depends(Action(ConsoleScope.QUARANTINE))]


def _list_page(request: Request, services: Services, **extra: object) -> Response:
    return page(
        request,
        "quarantine.html",
        {"facts": services.quarantine.pending(200), "revealed": None, "done": "", **extra},
    )


@router.get("", name="quarantine")
def listing(request: Request, services: Services, _: Viewer, done: str = "") -> Response:
    """Quarantined values: id, field, category, entity types found; never the value."""
    message = {"released": "Released.", "dropped": "Dropped."}.get(done, "")
    return _list_page(request, services, done=message)


@router.post("/reveal", name="quarantine_reveal")
def reveal(request: Request, services: Services, posted: Change) -> Response:
    """Show one value, after recording the reveal in the audit log."""
    revealed = services.quarantine.reveal(posted.session.operator.actor, posted.text("fact_id", 64))
    return _list_page(request, services, revealed=revealed)


@router.post("/release", name="quarantine_release")
def release(request: Request, services: Services, posted: Change) -> Response:
    """Make values visible to reads."""
    services.quarantine.release(posted.session.operator.actor, posted.texts("fact_id", 64))
    return RedirectResponse(f"{base_path(request)}/quarantine?done=released", status_code=303)


@router.post("/drop", name="quarantine_drop")
def drop(request: Request, services: Services, posted: Change) -> Response:
    """Delete values."""
    services.quarantine.drop(posted.session.operator.actor, posted.texts("fact_id", 64))
    return RedirectResponse(f"{base_path(request)}/quarantine?done=dropped", status_code=303)
