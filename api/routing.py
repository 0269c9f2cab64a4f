"""Routes whose JSON body is decoded once.

:class:`api.middleware.ApiMiddleware` decodes every JSON body with the strict reader
(:func:`identity.strict_json.loads_strict`) before any route runs, to refuse duplicate keys and
hostile nesting. FastAPI then decoded the same bytes again (``Request.json``) to validate them
against the route's model: two decodes of every body, 5 % of the server's CPU for a 50-event
``/v1/ingest`` batch. The middleware keeps the document it decoded in the request's state, and
the routes of :class:`DecodedJsonRoute` (FastAPI's documented custom ``route_class``) read it
from there. A body the middleware did not decode (not JSON by its ``Content-Type``, or not valid
JSON: FastAPI answers that one) is decoded by FastAPI as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

# The key of the decoded document in ``scope["state"]`` (request.state); set only by the
# middleware, for the exact bytes it hands on to the app.
DECODED_JSON = "idgraph_decoded_json"

# A route's fast path: the response for a request it can answer by itself, or ``None`` to hand
# the request to FastAPI's own handler (see :func:`fast_path`).
FastPath = Callable[[Request], Awaitable[Response | None]]
_FAST_PATH = "__idgraph_fast_path__"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def fast_path(handler: FastPath) -> Callable[[Endpoint], Endpoint]:
    """Give a :class:`DecodedJsonRoute` endpoint a fast path, tried before FastAPI's handler.

    For a route whose requests are nearly all in one plain shape (``POST /v1/ingest``), FastAPI's
    per-request machinery (dependency solving with its exit stacks and sub-dependency cache, body
    validation through the route's model field, the content type parsed again by the ``email``
    package) is a measurable share of the server's CPU. ``handler`` answers the requests it can
    certify itself and returns ``None`` for every other one *before it does anything with an
    effect*: FastAPI then handles that request as if there were no fast path, so a refused
    request gets FastAPI's own answer, word for word. A handler must answer exactly as the
    endpoint would (``tests/api/test_ingest_fast_path.py`` compares the two over HTTP). With
    dependency overrides set on the app (tests), FastAPI's handler answers every request.
    Apply it below the router's decorator, so the route sees the attribute when it is built.
    """

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _FAST_PATH, handler)
        return endpoint

    return mark


def decoded_json(request: Request) -> Any | None:
    """The document the middleware decoded from this request's body, or ``None``."""
    state = request.scope.get("state") or {}
    return state.get(DECODED_JSON)


def forget_decoded_json(request: Request) -> None:
    """Drop the decoded document from the request's state (a handler that turned it into its
    own values no longer needs it: freed now, not when the response has gone out)."""
    state = request.scope.get("state") or {}
    state.pop(DECODED_JSON, None)


class DecodedJsonRequest(Request):
    """A request whose :meth:`json` is the document the middleware decoded, if it did."""

    async def json(self) -> Any:
        """The body's JSON document (decoded once per request)."""
        state = self.scope.get("state") or {}
        if DECODED_JSON in state:
            return state[DECODED_JSON]
        return await super().json()


class DecodedJsonRoute(APIRoute):
    """An API route that validates the document the middleware already decoded (and tries its
    endpoint's :func:`fast_path` first, if it has one)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a :class:`DecodedJsonRequest`."""
        handler = super().get_route_handler()
        fast: FastPath | None = getattr(self.endpoint, _FAST_PATH, None)

        if fast is None:

            async def decoded_json_handler(request: Request) -> Response:
                return await handler(DecodedJsonRequest(request.scope, request.receive))

            return decoded_json_handler

        async def fast_path_handler(request: Request) -> Response:
            decoded = DecodedJsonRequest(request.scope, request.receive)
            # Dependency overrides (a test's) apply to FastAPI's handler only: not around them.
            if not getattr(request.scope.get("app"), "dependency_overrides", None):
                response = await fast(decoded)
                if response is not None:
                    return response
            return await handler(decoded)

        return fast_path_handler
