"""The audit log: browse with filters, verify the chain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from console.render import page
from console.security import Action, Needs, Posted, Services
from privacy.access.operators import ConsoleScope, Session
from privacy.auditing.log import AuditEntry, AuditVerification

router = APIRouter(prefix="/audit")
Viewer = Annotated[Session, Depends(Needs(ConsoleScope.AUDIT))]
Verifier = Annotated[Posted, Depends(Action(ConsoleScope.AUDIT))]
PAGE = 50
SCAN = 5_000  # entries looked at per page when filtering (newest first)


def _browse(
    services: Services, actor: str, action: str, person: str, before: int
) -> tuple[list[AuditEntry], int | None]:
    """Newest first: up to ``PAGE`` entries matching the filters with ``seq < before``.

    Looks at most ``SCAN`` entries per page; the second value is the ``before`` of the next
    (older) page, ``None`` at the start of the log.
    """
    head = services.audit.head().seq
    low = min(before - 1, head) if before > 0 else head
    found: list[AuditEntry] = []
    scanned = 0
    while low > 0 and scanned < SCAN:
        start = max(low - 500, 0)
        batch = [e for e in services.audit.entries(after_seq=start, limit=500) if e.seq <= low]
        scanned += len(batch)
        for entry in reversed(batch):
            matches = (
                entry.actor.startswith(actor)
                and entry.action.startswith(action)
                and (not person or entry.person_id == person)
            )
            if matches:
                found.append(entry)
                if len(found) == PAGE:
                    return found, entry.seq
        low = start
    return found, (low + 1 if low > 0 else None)


def _page(
    request: Request,
    services: Services,
    actor: str,
    action: str,
    person: str,
    before: int,
    verification: AuditVerification | None = None,
) -> Response:
    entries, older = _browse(services, actor, action, person, before)
    return page(
        request,
        "audit.html",
        {
            "entries": entries,
            "older": older,
            "actor": actor,
            "action": action,
            "person": person,
            "head": services.audit.head(),
            "verification": verification,
        },
    )


@router.get("", name="audit")
def browse(
    request: Request,
    services: Services,
    _: Viewer,
    actor: Annotated[str, Query(max_length=128)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    person: Annotated[str, Query(max_length=64)] = "",
    before: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """Entries newest first, filtered by actor, action prefix and person reference."""
    return _page(request, services, actor, action, person, before)


@router.post("/verify", name="audit_verify")
def verify(request: Request, services: Services, posted: Verifier) -> Response:
    """Recompute the whole hash chain and say whether it holds (and where it breaks)."""
    result = services.audit.verify()
    return _page(request, services, "", "", "", 0, result)
