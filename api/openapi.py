"""The OpenAPI document as a contract: every answer a route can give is declared.

FastAPI declares the 200 and a 422 (with its own ``HTTPValidationError`` body, which this app
never sends). The routers name the statuses their use cases answer with; this module adds the
ones that come from the layers around every route, decided from the route itself (the same facts
:mod:`api.edge` guards on), and gives every 4xx/5xx the one ``Problem`` schema:

- every operation: 400 (an invalid ``Content-Length``, a bad paging cursor) and 500 (a fault;
  the body is generic);
- a route that needs an API key: 401 (no/unknown key), 403 (scope or purpose), 429 (rate limit,
  with ``Retry-After``);
- a route with parameters or a body: 422 (request shape);
- a route that takes a JSON body: 413 (body limit), 415 (not JSON), and its 400 also for
  malformed JSON;
- every ``/v1`` route and ``/readyz``: 503 (a store, the vault or the audit log is unavailable).

``tests/api/test_api_fuzz.py`` checks with schemathesis that every status the app answers is
declared
and every body fits its schema; ``tests/api/test_openapi_contract.py`` validates the document.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from api.edge import guarded_routes
from api.problems import PROBLEM_JSON

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. No member ever echoes a submitted value.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {
            "type": "string",
            "description": "`urn:idgraph:problem:<name>`; the names are listed in the README.",
            "examples": ["urn:idgraph:problem:invalid-request"],
        },
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {
            "type": "string",
            "description": "`urn:idgraph:request:<request id>`, as in the server log.",
        },
        "errors": {
            "type": "array",
            "description": "One entry per field that failed (validation problems).",
            "items": {"$ref": "#/components/schemas/ProblemFieldError"},
        },
        "reason": {
            "type": "string",
            "description": "Why a signed webhook was refused (`no_valid_signature`, ...).",
        },
        "persons": {
            "type": "integer",
            "description": "How many persons a DSR's identities resolve to.",
        },
    },
}
FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ProblemFieldError",
    "type": "object",
    "required": ["pointer"],
    "properties": {
        "pointer": {"type": "string", "description": "RFC 6901 JSON pointer into the request."},
        "detail": {"type": "string"},
        "reason": {"type": "string"},
    },
}

# status -> description of the answers that come from around the route, not from its use case.
COMMON = {
    400: "Malformed request: invalid JSON (not UTF-8, a duplicate key, nested too deeply), an "
    "altered or expired paging cursor, or an invalid Content-Length",
    401: "Missing, unknown or revoked API key",
    403: "The API key lacks the scope or the purpose",
    413: "Body larger than IDGRAPH_MAX_BODY_BYTES",
    415: "Content-Type is not `application/json` (or `application/*+json`)",
    422: "The request does not fit the schema; nothing was written",
    429: "The key is over its request rate; wait `Retry-After` seconds",
    500: "Server-side fault; the body is generic, the log has the request id",
    503: "A store, the vault or the audit log is unavailable; retry",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


_EMAIL = {"type": "email", "value": "ann@shop.example.de"}
_COOKIE = {"type": "cookie_id", "value": "c-81f2"}
_IDENTIFY = {
    "identifiers": [_EMAIL, _COOKIE],
    "source": "web",
    "traits": {"city": "Lisbon"},
    "events": [{"name": "purchase", "properties": {"order_id": "o-1", "amount": 42.5}}],
    "message_id": "evt-2026-03-01-0001",
}
# operationId -> one example request body (Swagger UI fills it in; schemathesis sends it).
REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "identify": _IDENTIFY,
    "ingest": {"events": [_IDENTIFY, {"identifiers": [_COOKIE], "source": "app"}]},
    "resolve": {"identifier": _EMAIL},
    "explain": {"a": _EMAIL, "b": _COOKIE},
    "unlink": {"a": _EMAIL, "b": _COOKIE},
    "recordConsent": {
        "identifiers": [_EMAIL],
        "source": "preference_center",
        "decisions": {"marketing_email": True, "ad_targeting": False},
    },
    "consentWebhook": {
        "identifiers": [_EMAIL],
        "decisions": {"marketing_email": True},
        "timestamp": "2026-03-01T09:00:00Z",
    },
    "defineAudience": {
        "name": "lisbon buyers",
        "purpose": "ad_targeting",
        "rules": {
            "attributes": [{"attribute": "city", "op": "eq", "value": "Lisbon"}],
            "events": [{"event": "purchase", "within_days": 30, "min_count": 1}],
        },
    },
    "submit": {
        "request_id": "dsr-2026-0001",
        "type": "access",
        "subject_identities": [_EMAIL],
        "regulation": "gdpr",
    },
    "extend": {"reason": "complex request: many systems to search"},
    "compellingGrounds": {
        "subject_identities": [_EMAIL],
        "purposes": ["analytics"],
        "reason": "fraud investigation under legal hold",
    },
}


def operation_id(route: APIRoute) -> str:
    """``camelCase`` of the handler's name: ``record_consent`` -> ``recordConsent``.

    A handler serving two paths sets its ids in its decorators (``/healthz`` and ``/livez``).
    """
    head, *rest = route.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _common_statuses(path: str, needs_key: bool, json_body: bool, has_input: bool) -> set[int]:
    # 400 on every route: an invalid Content-Length header (api.middleware), an altered paging
    # cursor, malformed JSON where there is a body.
    statuses = {400, 500}
    if needs_key:
        statuses |= {401, 403, 429}
    if has_input:
        statuses.add(422)
    if json_body:
        statuses |= {400, 413, 415, 422}
    if path.startswith("/v1/") or path == "/readyz":
        statuses.add(503)
    return statuses


def _as_problem(response: dict[str, Any], status: int) -> None:
    response.setdefault("description", COMMON.get(status, "Problem"))
    content = response.setdefault("content", {})
    content.pop("application/json", None)  # FastAPI's HTTPValidationError: never sent
    content[PROBLEM_JSON] = {"schema": PROBLEM_REF}
    if status == 429:
        response["headers"] = RETRY_AFTER


def contract_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with every answer declared (see the module docstring)."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
        servers=app.servers,
        separate_input_output_schemas=app.separate_input_output_schemas,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["ProblemFieldError"] = FIELD_ERROR_SCHEMA
    for guarded in guarded_routes(app):
        route = guarded.route
        path = re.sub(r":[a-z]+}", "}", route.path_format)
        for method in sorted(route.methods or ()):
            operation = document["paths"].get(path, {}).get(method.lower())
            if operation is None:
                continue
            has_input = bool(operation.get("parameters")) or "requestBody" in operation
            example = REQUEST_EXAMPLES.get(operation.get("operationId", ""))
            for media in operation.get("requestBody", {}).get("content", {}).values():
                if example is not None:
                    media["example"] = example
            responses = operation.setdefault("responses", {})
            for status in _common_statuses(path, guarded.needs_key, guarded.json_body, has_input):
                responses.setdefault(str(status), {"description": COMMON[status]})
            for status_text, response in responses.items():
                if status_text.isdigit() and int(status_text) >= 400:
                    _as_problem(response, int(status_text))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def install(app: FastAPI) -> None:
    """Serve :func:`contract_document` as ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
