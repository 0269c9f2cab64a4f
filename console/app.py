"""The console app (mounted under ``/console`` by the app wiring)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

from console.pages import ROUTERS
from console.render import base_path, page
from console.security import (
    CsrfError,
    NotSignedInError,
    PageForbiddenError,
    SecurityHeadersMiddleware,
)
from console.wiring import ConsoleConfig, ConsoleServices
from identity.errors import (
    BatchValidationError,
    IdGraphError,
    InvalidFieldError,
    StoreUnavailableError,
)
from privacy.access.reads import AudienceNotFoundError, PurposeNotInScopeError
from privacy.dsr.model import DsrConflictError, DsrNotFoundError, DsrStateError, ExportExpiredError
from services.quarantine import QuarantinedFactNotFoundError, QuarantinedValueUnreadableError

# One table: which core error is which HTTP status on a console page.
STATUS: tuple[tuple[type[IdGraphError], int], ...] = (
    (BatchValidationError, 422),
    (InvalidFieldError, 422),
    (DsrNotFoundError, 404),
    (AudienceNotFoundError, 404),
    (QuarantinedFactNotFoundError, 404),
    (PurposeNotInScopeError, 403),
    (DsrConflictError, 409),
    (DsrStateError, 409),
    (ExportExpiredError, 410),
    (QuarantinedValueUnreadableError, 410),
    (StoreUnavailableError, 503),
)


def error_messages(exc: IdGraphError) -> list[str]:
    """What to tell the operator (field errors one by one; never a value)."""
    if isinstance(exc, BatchValidationError):
        return [f"{e.field.removeprefix('#/')}: {e}" for e in exc.errors]
    return [str(exc)]


def create_console(services: ConsoleServices, config: ConsoleConfig) -> FastAPI:
    """The console as an ASGI app of its own (no OpenAPI: these are pages, not an API)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    app.state.config = config
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    for router in ROUTERS:
        app.include_router(router)

    @app.exception_handler(NotSignedInError)
    async def not_signed_in(request: Request, _: NotSignedInError) -> Response:
        if request.method == "GET":
            wanted = request.url.path.removeprefix(base_path(request)) or "/"
            target = f"{base_path(request)}/login?next={quote(wanted, safe='/')}"
            return RedirectResponse(target, status_code=303)
        return page(
            request,
            "error.html",
            {"heading": "Signed out", "messages": ["Your session ended; sign in again."]},
            401,
        )

    @app.exception_handler(PageForbiddenError)
    async def forbidden(request: Request, exc: PageForbiddenError) -> Response:
        return page(
            request,
            "error.html",
            {"heading": "Not allowed", "messages": [f"{exc}. Ask an administrator."]},
            403,
        )

    @app.exception_handler(CsrfError)
    async def csrf(request: Request, _: CsrfError) -> Response:
        return page(
            request,
            "error.html",
            {
                "heading": "Form expired",
                "messages": ["The form was not sent from this console; reload the page."],
            },
            403,
        )

    @app.exception_handler(IdGraphError)
    async def core_error(request: Request, exc: IdGraphError) -> Response:
        status = next((s for cls, s in STATUS if isinstance(exc, cls)), 400)
        return page(
            request,
            "error.html",
            {"heading": "That did not work", "messages": error_messages(exc)},
            status,
        )

    app.add_middleware(SecurityHeadersMiddleware)
    return app
