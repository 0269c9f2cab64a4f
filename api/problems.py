"""RFC 9457 problem details: the one table that maps errors to HTTP statuses.

Every error response is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and ``instance`` (``urn:idgraph:request:<request id>``), plus ``errors`` (a list of
``{pointer, detail}``) for validation failures. No body ever echoes a submitted value.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.ratelimit import RateLimitedError
from identity.errors import (
    BatchValidationError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    IdentifierNotFoundError,
    IdGraphError,
    InputLimitError,
    InvalidFieldError,
    NotLinkedError,
    PolicyFileError,
    StoreIntegrityError,
    StoreUnavailableError,
)
from identity.strict_json import MalformedJsonError
from privacy.access.api_keys import AuthenticationError, ForbiddenError
from privacy.access.cursors import InvalidCursorError
from privacy.access.reads import AudienceNotFoundError, NotReadableError, PurposeNotInScopeError
from privacy.consent.recording import ConsentAuditError
from privacy.dsr.model import (
    DsrConflictError,
    DsrNotFoundError,
    DsrStateError,
    ExportExpiredError,
    ExportNotReadyError,
    MultiplePersonsError,
)
from privacy.transport.webhooks import WebhookVerificationError
from services.async_ingest import IngestJobNotFoundError
from services.inputs import pointer_from_location, withheld_member
from services.metrics import IngestApplierNotStartedError, IngestApplierRestartingError
from storage.journal import JournalFullError

log = structlog.get_logger("idgraph.api")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "urn:idgraph:problem:"
# The OpenAPI ``responses`` every route with a JSON body adds: the body can fail before any
# schema is applied (api.edge answers the 415; FastAPI's decoder the 400).
JSON_BODY_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "Malformed JSON: not UTF-8 JSON, or nested too deeply",
        "content": {PROBLEM_JSON: {}},
    },
    415: {
        "description": "Content-Type is not `application/json` (or `application/*+json`)",
        "content": {PROBLEM_JSON: {}},
    },
}

# error class -> (status, title). The most specific class listed wins.
STATUS_TABLE: list[tuple[type[IdGraphError], int, str]] = [
    (AuthenticationError, 401, "Authentication required"),
    (WebhookVerificationError, 401, "Webhook refused"),
    (ForbiddenError, 403, "Forbidden"),
    (PurposeNotInScopeError, 403, "Purpose not allowed for this key"),
    (NotReadableError, 404, "Not found"),
    (AudienceNotFoundError, 404, "Audience not found"),
    (RateLimitedError, 429, "Too many requests"),
    (InvalidCursorError, 400, "Invalid cursor"),
    (MalformedJsonError, 400, "Malformed JSON"),
    (BatchValidationError, 422, "Invalid input"),
    (InvalidFieldError, 422, "Invalid input"),
    (InputLimitError, 422, "Input limit exceeded"),
    (IdentifierNotFoundError, 404, "Identifier not found"),
    (NotLinkedError, 409, "Not linked"),
    (DsrNotFoundError, 404, "Data-subject request not found"),
    (DsrConflictError, 409, "Request id already used"),
    (DsrStateError, 409, "Request state does not allow this"),
    (MultiplePersonsError, 409, "Identities resolve to several persons"),
    (ExportNotReadyError, 409, "Export not available"),
    (ExportExpiredError, 410, "Export expired"),
    (IngestJobNotFoundError, 404, "Ingest job not found"),
    (JournalFullError, 503, "Ingest journal full"),
    (ConsentAuditError, 503, "Consent recorded, audit entry not written"),
    (CommitOutcomeUnknownError, 503, "Commit outcome unknown"),
    (StoreUnavailableError, 503, "Store unavailable"),
    (IngestApplierRestartingError, 503, "Not ready"),
    (IngestApplierNotStartedError, 503, "Not ready"),
    (StoreIntegrityError, 500, "Store integrity error"),
    (PolicyFileError, 500, "Policy file invalid"),
    (ConfigurationError, 500, "Configuration invalid"),
]


def problem(
    request: Request,
    status: int,
    title: str,
    detail: str,
    slug: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Build a problem+json response."""
    request_id = getattr(request.state, "request_id", None)
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request_id:
        body["instance"] = f"urn:idgraph:request:{request_id}"
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _lookup(exc: IdGraphError) -> tuple[int, str]:
    for cls, status, title in STATUS_TABLE:
        if isinstance(exc, cls):
            return status, title
    return 500, "Internal error"


async def handle_idgraph_error(request: Request, exc: Exception) -> JSONResponse:
    """Map an :class:`IdGraphError` to its status via :data:`STATUS_TABLE`."""
    assert isinstance(exc, IdGraphError)  # noqa: S101 - registered for IdGraphError only
    status, title = _lookup(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, RateLimitedError):
        headers = {
            "Retry-After": str(exc.retry_after),  # RFC 9110: integer seconds
            # draft-ietf-httpapi-ratelimit-headers: the bucket, what is left, when it refills.
            "RateLimit-Limit": str(exc.limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(exc.retry_after),
            "RateLimit-Policy": f"{exc.limit};w={exc.window_s}",
        }
    if isinstance(exc, JournalFullError):
        headers = {"Retry-After": str(exc.retry_after_s)}  # RFC 9110: integer seconds
    extensions: dict[str, Any] = {}
    if isinstance(exc, WebhookVerificationError):
        # Webhooks authenticate by signature, not bearer key. The reason is safe to return: it
        # is the same for an unknown source as for a wrong secret (no_valid_signature).
        headers = {"WWW-Authenticate": 'StandardWebhooks realm="idgraph"'}
        extensions["reason"] = exc.reason
    if isinstance(exc, MultiplePersonsError):
        extensions["persons"] = exc.persons
    detail = str(exc)
    if isinstance(exc, BatchValidationError):
        extensions["errors"] = [
            {"pointer": e.field, "detail": e.message, "reason": e.reason} for e in exc.errors
        ]
    elif isinstance(exc, InvalidFieldError):
        extensions["errors"] = [{"pointer": exc.field, "detail": exc.message, "reason": exc.reason}]
    elif isinstance(exc, MalformedJsonError):
        extensions["errors"] = [{"pointer": exc.pointer, "reason": exc.reason}]
    elif isinstance(exc, InputLimitError):
        extensions["errors"] = [{"pointer": exc.field, "detail": exc.message}]
    if isinstance(exc, IngestApplierNotStartedError):
        # Not a fault: a server starting up says so to its readiness probe every poll, for the
        # seconds its applier child takes to start. An error line per poll would only be noise.
        log.info("request_not_ready", error=type(exc).__name__, message=str(exc))
    elif status >= 500:
        # Server-side faults are logged with their class; the body stays generic.
        log.error("request_failed", error=type(exc).__name__, message=str(exc))
        if status == 500:
            detail = "the server could not complete the request; see the log for the request id"
    return problem(request, status, title, detail, exc.code, headers, **extensions)


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Request-shape errors: 400 for unparseable JSON, 422 for schema violations.

    Only pydantic's ``msg`` and location are used: its ``input`` and ``ctx`` can hold the value.
    """
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem(
            request, 400, "Malformed JSON", "the request body is not valid JSON", "malformed-json"
        )
    items = [
        {
            "pointer": pointer_from_location(e.get("loc", ())),
            "detail": (
                "a member of this object is not allowed (its name is not repeated: names can be "
                "values): " + str(e.get("msg", "invalid"))
            )
            if withheld_member(e.get("loc", ()))
            else str(e.get("msg", "invalid")),
        }
        for e in errors[:50]
    ]
    return problem(
        request,
        422,
        "Invalid request",
        f"{len(errors)} field(s) failed validation; nothing was written",
        "invalid-request",
        errors=items,
    )


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Framework HTTP errors (unknown route, wrong method) as problem+json."""
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    if exc.status_code == 400:
        # FastAPI raises a bare 400 when the body cannot be decoded (e.g. invalid UTF-8), and
        # when the JSON decoder gives up on nesting (RecursionError): that body may be valid.
        detail = (
            "the request body nests too deeply to be parsed"
            if isinstance(exc.__cause__, RecursionError)
            else "the request body is not valid UTF-8 JSON"
        )
        return problem(request, 400, "Malformed JSON", detail, "malformed-json")
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    headers = dict(exc.headers) if exc.headers else None
    return problem(request, exc.status_code, detail, detail, slug, headers=headers)


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Anything unforeseen: a 500 with no detail in the body; the class goes to the log."""
    log.error("unhandled_exception", error=type(exc).__name__, exc_info=exc)
    return problem(
        request,
        500,
        "Internal error",
        "the server could not complete the request; see the log for the request id",
        "internal-error",
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(IdGraphError, handle_idgraph_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected)
