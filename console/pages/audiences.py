"""Audiences: definitions, a consent-filtered member count, exports."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from console.render import page
from console.security import Action, Needs, Posted, Services, reader
from privacy.access.operators import ConsoleScope, Session

router = APIRouter(prefix="/audiences")
Viewer = Annotated[Session, Depends(Needs(ConsoleScope.READ))]
Reader = Annotated[Posted, Depends(Action(ConsoleScope.READ))]


def _listing(request: Request, services: Services, session: Session, **extra: object) -> Response:
    return page(
        request,
        "audiences.html",
        {"audiences": services.reads.audiences(reader(session)), "preview": None, **extra},
    )


@router.get("", name="audiences")
def listing(request: Request, services: Services, session: Viewer) -> Response:
    """The definitions of the operator's purposes."""
    return _listing(request, services, session)


@router.post("/{audience_id}/preview", name="audience_preview")
def preview(request: Request, audience_id: str, services: Services, posted: Reader) -> Response:
    """How many persons are members now, after consent (each page audited)."""
    result = services.reads.preview_audience(reader(posted.session), audience_id)
    return _listing(request, services, posted.session, preview=result)


@router.post("/{audience_id}/export", name="audience_export")
def export(audience_id: str, services: Services, posted: Reader) -> Response:
    """The activation export (SHA-256 of normalized identifiers) as CSV, audited per chunk."""
    rows = services.reads.export_audience(reader(posted.session), audience_id)

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["identifier_type", "sha256"])
        for row in rows:
            writer.writerow([row.identifier_type, row.sha256])
            if buffer.tell() > 64_000:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{audience_id}.csv"'},
    )
